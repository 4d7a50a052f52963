"""Python checks of scripts/test-chart.sh over rendered Helm manifests.

Usage: python chart_checks.py COMMAND ARGS...
  split-docs RENDERED OUTDIR
      one file per rendered resource in OUTDIR, named <kind>-<name>.yaml; the files of
      kinds without a bundled Kubernetes schema (CRDs) are listed in OUTDIR/crds.list
  validate-crds DIR
      the CRD kinds listed in DIR/crds.list against a strict schema of exactly the
      fields the chart renders (names as in the upstream CRDs); exit 1 on any error
  annotate-skips OVERLAY SRCDIR DSTDIR SKIPS_FILE
      copy SRCDIR's resources to DSTDIR, adding a checkov skip annotation for each entry
      of SKIPS_FILE whose filters (overlays, kinds, components) match the resource
  checkov-summary REPORT_JSON
      print checkov's figures and every failed or skipped check; exit 1 when a check
      failed, a file did not parse, or nothing passed
  check-schema SCHEMA_JSON
      exit 1 unless the file is a valid draft-07 JSON schema

Needs PyYAML (and jsonschema for validate-crds and check-schema), as installed in
.tools/venv by scripts/ensure-tools.sh.
"""

import argparse
import json
import os
import sys

CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
        ("cert-manager.io/v1", "Certificate"),
        ("postgresql.cnpg.io/v1", "Cluster"), ("postgresql.cnpg.io/v1", "Pooler")}


def split_docs(src, out):
    import yaml

    os.makedirs(out, exist_ok=True)
    crds = []
    with open(src) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for d in docs:
        name = f"{d['kind'].lower()}-{d['metadata']['name']}.yaml"
        with open(os.path.join(out, name), "w") as f:
            yaml.safe_dump(d, f, sort_keys=False)
        if (d["apiVersion"], d["kind"]) in CRDS:
            crds.append(name)
    with open(os.path.join(out, "crds.list"), "w") as f:
        f.write("".join(c + "\n" for c in crds))
    return 0


def crd_schemas():
    """Strict schemas of the CRD fields the chart renders."""
    s = lambda **k: {"type": "string", **k}  # noqa: E731

    def o(props, req=(), extra=False):
        return {"type": "object", "properties": props, "required": list(req), "additionalProperties": extra}

    meta = o({"name": s(), "namespace": s(), "labels": {"type": "object"}, "annotations": {"type": "object"}}, ["name", "namespace"])
    port = {"type": "integer", "minimum": 1, "maximum": 65535}
    return {
      "ServiceMonitor": o({"apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"}, "metadata": meta,
        "spec": o({
          "selector": o({"matchLabels": {"type": "object", "additionalProperties": s()}}, ["matchLabels"]),
          "namespaceSelector": o({"matchNames": {"type": "array", "items": s()}}),
          "endpoints": {"type": "array", "minItems": 1, "items": o({
              "port": s(), "path": s(pattern="^/"), "scheme": {"enum": ["http", "https"]},
              "interval": s(pattern="^[0-9]+(ms|s|m|h)$"), "scrapeTimeout": s(pattern="^[0-9]+(ms|s|m|h)$")}, ["port"])},
        }, ["selector", "endpoints"])}, ["apiVersion", "kind", "metadata", "spec"]),
      "PrometheusRule": o({"apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"}, "metadata": meta,
        "spec": o({
          "groups": {"type": "array", "minItems": 1, "items": o({
              "name": s(minLength=1), "interval": s(pattern="^[0-9]+(ms|s|m|h)$"),
              "rules": {"type": "array", "minItems": 1, "items": {"oneOf": [
                  o({"record": s(pattern="^[a-zA-Z_:][a-zA-Z0-9_:]*$"), "expr": s(minLength=1),
                     "labels": {"type": "object", "additionalProperties": s()}}, ["record", "expr"]),
                  o({"alert": s(pattern="^[a-zA-Z_][a-zA-Z0-9_]*$"), "expr": s(minLength=1),
                     "for": s(pattern="^[0-9]+(ms|s|m|h|d)$"),
                     "labels": {"type": "object", "additionalProperties": s()},
                     "annotations": {"type": "object", "additionalProperties": s()}}, ["alert", "expr"])]}},
          }, ["name", "rules"])},
        }, ["groups"])}, ["apiVersion", "kind", "metadata", "spec"]),
      "HTTPRoute": o({"apiVersion": {"const": "gateway.networking.k8s.io/v1"}, "kind": {"const": "HTTPRoute"}, "metadata": meta,
        "spec": o({
          "parentRefs": {"type": "array", "minItems": 1, "items": o({"group": s(), "kind": s(), "name": s(minLength=1),
              "namespace": s(), "sectionName": s(), "port": port}, ["name"])},
          "hostnames": {"type": "array", "items": s()},
          "rules": {"type": "array", "minItems": 1, "items": o({
              "matches": {"type": "array", "items": o({"path": o({"type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]}, "value": s(pattern="^/")}, ["type", "value"])})},
              "backendRefs": {"type": "array", "minItems": 1, "items": o({"name": s(minLength=1), "port": port}, ["name", "port"])}})},
        }, ["parentRefs", "rules"])}, ["apiVersion", "kind", "metadata", "spec"]),
      "Certificate": o({"apiVersion": {"const": "cert-manager.io/v1"}, "kind": {"const": "Certificate"}, "metadata": meta,
        "spec": o({
          "secretName": s(minLength=1),
          "issuerRef": o({"name": s(minLength=1), "kind": s(), "group": s()}, ["name"]),
          "duration": s(pattern="^([0-9]+(h|m|s))+$"), "renewBefore": s(pattern="^([0-9]+(h|m|s))+$"),
          "commonName": s(), "dnsNames": {"type": "array", "minItems": 1, "items": s(minLength=1)},
          "privateKey": o({"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"},
                           "rotationPolicy": {"enum": ["Never", "Always"]}, "encoding": {"enum": ["PKCS1", "PKCS8"]}}),
          "usages": {"type": "array", "items": {"enum": ["server auth", "client auth", "digital signature", "key encipherment"]}},
        }, ["secretName", "issuerRef"])}, ["apiVersion", "kind", "metadata", "spec"]),
      # CloudNativePG (deploy/examples/cloudnativepg): the fields the example uses.
      "Cluster": o({"apiVersion": {"const": "postgresql.cnpg.io/v1"}, "kind": {"const": "Cluster"}, "metadata": meta,
        "spec": o({
          "instances": {"type": "integer", "minimum": 1}, "imageName": s(), "primaryUpdateStrategy": {"enum": ["unsupervised", "supervised"]},
          "storage": o({"size": s(), "storageClass": s()}, ["size"]),
          "walStorage": o({"size": s(), "storageClass": s()}, ["size"]),
          "postgresql": o({"parameters": {"type": "object", "additionalProperties": s()}}),
          "bootstrap": o({"initdb": o({"database": s(), "owner": s(), "encoding": s(), "localeCollate": s(), "localeCType": s()}, ["database", "owner"])}),
          "certificates": o({"serverAltDNSNames": {"type": "array", "items": s()}}),
          "resources": {"type": "object"}, "affinity": {"type": "object"},
          "enableSuperuserAccess": {"type": "boolean"},
          "monitoring": o({"enablePodMonitor": {"type": "boolean"}}),
          "backup": {"type": "object"},
        }, ["instances", "storage"])}, ["apiVersion", "kind", "metadata", "spec"]),
      "Pooler": o({"apiVersion": {"const": "postgresql.cnpg.io/v1"}, "kind": {"const": "Pooler"}, "metadata": meta,
        "spec": o({
          "cluster": o({"name": s(minLength=1)}, ["name"]), "instances": {"type": "integer", "minimum": 1},
          "type": {"enum": ["rw", "ro", "r"]},
          "pgbouncer": o({"poolMode": {"enum": ["session", "transaction"]}, "parameters": {"type": "object", "additionalProperties": s()}}, ["poolMode"]),
          "template": {"type": "object"},
        }, ["cluster", "pgbouncer"])}, ["apiVersion", "kind", "metadata", "spec"]),
    }


def validate_crds(d):
    import jsonschema
    import yaml

    schemas = crd_schemas()
    bad = 0
    for name in open(os.path.join(d, "crds.list")).read().split():
        doc = yaml.safe_load(open(os.path.join(d, name)))
        errs = list(jsonschema.Draft7Validator(schemas[doc["kind"]]).iter_errors(doc))
        for e in errs:
            print(f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
        bad += len(errs)
        if not errs:
            print(f"{name}: {doc['kind']} {doc['apiVersion']} matches the strict CRD-field schema")
    return 1 if bad else 0


def annotate_skips(name, src, dst, skips_file):
    import yaml

    skips = yaml.safe_load(open(skips_file))["skips"]
    for s in skips:
        assert s.get("check") and s.get("reason", "").strip(), f"skip without check id or reason: {s}"
    os.makedirs(dst, exist_ok=True)
    applied = 0
    for fn in sorted(os.listdir(src)):
        if not fn.endswith(".yaml"):
            continue
        doc = yaml.safe_load(open(os.path.join(src, fn)))
        comp = doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        n = 0
        for s in skips:
            if "overlays" in s and name not in s["overlays"]: continue  # noqa: E701
            if "kinds" in s and doc["kind"] not in s["kinds"]: continue  # noqa: E701
            if "components" in s and comp not in s["components"]: continue  # noqa: E701
            n += 1
            reason = " ".join(s["reason"].split()).replace("=", ":")
            doc["metadata"].setdefault("annotations", {})[f"checkov.io/skip{n}"] = f"{s['check']}={reason}"
            print(f"skip {s['check']} on {doc['kind']}/{doc['metadata']['name']}")
            applied += 1
        with open(os.path.join(dst, fn), "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
    print(f"{applied} skip annotations applied")
    return 0


def checkov_summary(report):
    data = json.load(open(report))
    reports = data if isinstance(data, list) else [data]
    failed = 0
    for r in reports:
        s = r.get("summary", {})
        print(f"checkov: passed={s.get('passed')} failed={s.get('failed')} skipped={s.get('skipped')} "
              f"parsing_errors={s.get('parsing_errors')} resources={s.get('resource_count')}")
        res = r.get("results", {})
        for c in res.get("failed_checks", []):
            print(f"  FAILED {c['check_id']} {c['check_name']} :: {c['resource']}")
        for c in res.get("skipped_checks", []):
            print(f"  skipped {c['check_id']} :: {c['resource']}")
        failed += s.get("failed", 0) + s.get("parsing_errors", 0)
        if not s.get("passed"):
            failed += 1
    return 1 if failed else 0


def check_schema(path):
    import jsonschema

    jsonschema.Draft7Validator.check_schema(json.load(open(path)))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("split-docs")
    c.add_argument("rendered")
    c.add_argument("outdir")
    c = commands.add_parser("validate-crds")
    c.add_argument("dir")
    c = commands.add_parser("annotate-skips")
    c.add_argument("overlay")
    c.add_argument("srcdir")
    c.add_argument("dstdir")
    c.add_argument("skips_file")
    c = commands.add_parser("checkov-summary")
    c.add_argument("report")
    c = commands.add_parser("check-schema")
    c.add_argument("schema")
    a = parser.parse_args()
    if a.command == "split-docs":
        return split_docs(a.rendered, a.outdir)
    if a.command == "validate-crds":
        return validate_crds(a.dir)
    if a.command == "annotate-skips":
        return annotate_skips(a.overlay, a.srcdir, a.dstdir, a.skips_file)
    if a.command == "checkov-summary":
        return checkov_summary(a.report)
    return check_schema(a.schema)


if __name__ == "__main__":
    sys.exit(main())
