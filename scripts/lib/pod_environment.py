#!/usr/bin/env python3
"""The environment a rendered pod gives one of its containers, computed as the kubelet
would: variables (`envFrom`, then `env`, later wins, `$(VAR)` references expanded) and
the files of its Secret, ConfigMap and projected volumes.

Used by the chart contract test (`bin/tasks-server/tests/it/chart_contract.rs`), which
asks it what the chart's Deployment gives the app container and checks that against the
binary:

    python3 scripts/lib/pod_environment.py < request.json > environment.json

The request is a JSON object:
  docs              the rendered manifests (a list of objects, as `helm template` renders them)
  kind, name        the workload whose pod template to read (`Deployment`, `StatefulSet`,
                    `Pod`); name null: the only one of that kind
  container         the container's name; null: the first container
  existing_secrets  optional {name: {key: value}}: Secrets the platform provides

The answer (also what `container_environment` returns):
  env           {name: value}; a fieldRef is "$FIELD:<fieldPath>", a resourceFieldRef
                "$RESOURCE:<resource>", an unresolvable reference is left out
  sources       {name: where the final value came from}: "value", "envFrom configMap N",
                "envFrom secret N", "configMapKeyRef N", "secretKeyRef N", "fieldRef P",
                "resourceFieldRef R"
  env_from      [{"kind": "configMap"|"secret", "name": N, "prefix": P}]
  env_problems  [text]: references to ConfigMaps, Secrets or keys that are not there
  mounts        [{"path", "volume", "kind" (secret, configMap, projected, emptyDir, ...),
                  "sub_path" (or null), "read_only", "problems": [text]}]
  files         {container path: {"data": text or null when unknown, "mode": int,
                  "source": "secret N"|"configMap N", "key": K}}

Only the standard library: the contract test passes JSON, needing no PyYAML.
"""

from __future__ import annotations

import base64
import json
import re
import sys

_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def scalar(value) -> str:
    """A manifest scalar as the string the container sees (`8080`, `true`, text as is)."""
    return value if isinstance(value, str) else json.dumps(value)


def _data(doc: dict, secret: bool) -> dict:
    data = {}
    for key, value in (doc.get("data") or {}).items():
        data[key] = base64.b64decode(value).decode("utf-8", errors="replace") if secret else scalar(value)
    if secret:
        data.update({k: scalar(v) for k, v in (doc.get("stringData") or {}).items()})
    return data


def _by_name(docs, kind: str) -> dict:
    return {d["metadata"]["name"]: d for d in docs if isinstance(d, dict) and d.get("kind") == kind}


def _expand(value: str, env: dict) -> str:
    """Kubernetes' `$(VAR)` expansion: defined variables are substituted, undefined ones
    stay as written, `$$` is a literal `$`."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _REFERENCE.sub(sub, value)


def container_environment(docs, pod: dict, container: dict, existing_secrets: dict | None = None) -> dict:
    """What the kubelet gives `container` of the pod spec `pod` in the release `docs`."""
    configmaps = {n: _data(d, False) for n, d in _by_name(docs, "ConfigMap").items()}
    secrets = {n: _data(d, True) for n, d in _by_name(docs, "Secret").items()}
    for name, data in (existing_secrets or {}).items():
        secrets.setdefault(name, dict(data))
    stores = {"configMap": configmaps, "secret": secrets}
    names = {"configMap": "ConfigMap", "secret": "Secret"}

    env, sources, env_from, env_problems = {}, {}, [], []
    for entry in container.get("envFrom") or []:
        prefix = entry.get("prefix", "")
        for kind in ("configMap", "secret"):
            ref = entry.get(kind + "Ref")
            if ref is None:
                continue
            env_from.append({"kind": kind, "name": ref["name"], "prefix": prefix})
            data = stores[kind].get(ref["name"])
            if data is None:
                if not ref.get("optional"):
                    env_problems.append(f"envFrom names {names[kind]} {ref['name']}, which is not rendered")
                continue
            for key, value in data.items():
                env[prefix + key] = value
                sources[prefix + key] = f"envFrom {kind} {ref['name']}"
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = _expand(scalar(var["value"]), env)
            sources[name] = "value"
            continue
        value_from = var.get("valueFrom") or {}
        for kind in ("configMap", "secret"):
            ref = value_from.get(kind + "KeyRef")
            if ref is None:
                continue
            data = stores[kind].get(ref["name"])
            if data is not None and ref["key"] in data:
                env[name] = data[ref["key"]]
                sources[name] = f"{kind}KeyRef {ref['name']}"
            elif not ref.get("optional"):
                env_problems.append(f"{name} refers to key {ref['key']} of {names[kind]} {ref['name']}, which is not rendered")
        if "fieldRef" in value_from:
            path = value_from["fieldRef"]["fieldPath"]
            env[name] = "$FIELD:" + path
            sources[name] = "fieldRef " + path
        if "resourceFieldRef" in value_from:
            resource = value_from["resourceFieldRef"]["resource"]
            env[name] = "$RESOURCE:" + resource
            sources[name] = "resourceFieldRef " + resource
        if not value_from:
            env[name] = ""
            sources[name] = "value"

    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts, files = [], {}
    for m in container.get("volumeMounts") or []:
        path = m["mountPath"]
        volume = volumes.get(m["name"])
        problems: list = []
        mount = {"path": path, "volume": m["name"], "kind": None, "sub_path": m.get("subPath"),
                 "read_only": bool(m.get("readOnly")), "problems": problems}
        mounts.append(mount)
        if volume is None:
            problems.append(f"the mount at {path} names volume {m['name']}, which the pod does not have")
            continue
        kinds = [k for k in volume if k != "name"]
        mount["kind"] = kinds[0] if kinds else None
        # (kind, name, items, optional) of every source of files.
        projections, default_mode = [], 0o644
        if "secret" in volume:
            src = volume["secret"]
            default_mode = src.get("defaultMode", default_mode)
            projections.append(("secret", src.get("secretName", ""), src.get("items"), src.get("optional")))
        elif "configMap" in volume:
            src = volume["configMap"]
            default_mode = src.get("defaultMode", default_mode)
            projections.append(("configMap", src.get("name", ""), src.get("items"), src.get("optional")))
        elif "projected" in volume:
            default_mode = volume["projected"].get("defaultMode", default_mode)
            for source in volume["projected"].get("sources") or []:
                for kind in ("secret", "configMap"):
                    if kind in source:
                        src = source[kind]
                        projections.append((kind, src.get("name", ""), src.get("items"), src.get("optional")))
        volume_files = {}
        for kind, name, items, optional in projections:
            data = stores[kind].get(name)
            if items:
                for item in items:
                    key = item["key"]
                    if data is not None and key not in data and not optional:
                        problems.append(f"volume item key {key} is not in the rendered {names[kind]} {name}")
                        continue
                    volume_files[item.get("path", key)] = {
                        "data": None if data is None else data.get(key), "mode": item.get("mode", default_mode),
                        "source": f"{kind} {name}", "key": key}
            elif data is None:
                if not optional:
                    problems.append(f"{names[kind]} {name} is not rendered and its volume lists no items: file names unknown")
            else:
                for key, value in data.items():
                    volume_files[key] = {"data": value, "mode": default_mode, "source": f"{kind} {name}", "key": key}
        if mount["sub_path"] is not None:
            # One file of the volume, at the mount path itself.
            chosen = volume_files.get(mount["sub_path"])
            if chosen is not None:
                files[path] = chosen
        else:
            for rel, entry in volume_files.items():
                files[f"{path.rstrip('/')}/{rel}"] = entry
    return {"env": env, "sources": sources, "env_from": env_from, "env_problems": env_problems,
            "mounts": mounts, "files": files}


def pod_spec(doc: dict) -> dict:
    """The pod spec of a workload (its template) or of a bare Pod."""
    if doc.get("kind") == "Pod":
        return doc.get("spec") or {}
    return doc["spec"]["template"]["spec"]


def select(docs, kind: str, name: str | None, container: str | None):
    """(pod spec, container) of the named workload and container."""
    workloads = [d for d in docs if isinstance(d, dict) and d.get("kind") == kind
                 and (name is None or d["metadata"]["name"] == name)]
    if len(workloads) != 1:
        raise ValueError(f"expected one {kind}{' ' + name if name else ''}, found {len(workloads)}")
    pod = pod_spec(workloads[0])
    containers = pod.get("containers") or []
    chosen = [c for c in containers if container is None or c.get("name") == container][:1]
    if not chosen:
        raise ValueError(f"{kind} {workloads[0]['metadata']['name']} has no container {container}")
    return pod, chosen[0]


def main() -> int:
    request = json.load(sys.stdin)
    try:
        pod, container = select(request["docs"], request.get("kind", "Deployment"), request.get("name"),
                                request.get("container"))
    except ValueError as e:
        print(f"pod_environment: {e}", file=sys.stderr)
        return 2
    json.dump(container_environment(request["docs"], pod, container, request.get("existing_secrets")), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
