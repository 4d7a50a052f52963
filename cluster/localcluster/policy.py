"""The chart's NetworkPolicies, enforced: only on a CNI that enforces them.

The local cluster's bridge plugin enforces nothing (ADR 0014), so this runs only when
``localcluster test --expect-network-policy`` asks for it: the kind workflow's Calico
job (``.github/workflows/cluster.yml``).

What the chart promises (``deploy/helm/tasks/templates/networkpolicy*.yaml``):

- the API port accepts ``networkPolicy.ingressFrom`` (plus the release's own test pod);
  **when that list is empty it accepts every source**, so the chart itself names no
  client label: an install that wants "only labelled clients" sets ``ingressFrom``;
- PostgreSQL accepts only the release's app pods (``app.kubernetes.io/component:
  backend`` with the release's name and instance labels).

:func:`run_network_policy` checks a release already installed in a namespace, reading the
client labels from the live NetworkPolicies (so it checks what the chart rendered, not
what this module assumes): a pod with the API's client labels reaches the API; a pod
without them cannot reach the API nor the database (the TCP connection is never
established); a pod with the labels the database admits reaches it (the control that
makes the negative result mean "policy", not "wrong address").
:func:`install_and_check` is the scenario ``scenarios.run_all`` runs: an install of
release N with :data:`CLIENT_LABELS` as ``ingressFrom``, the checks, uninstall.

Every probe is a short-lived pod running an image the release already runs (the
service image's ``probe`` subcommand, the PostgreSQL image's ``pg_isready``), with
bounded timeouts; every wait polls with a deadline.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import uuid

from . import scenarios

#: The label the scenario's install admits on the API port (``networkPolicy.ingressFrom``).
CLIENT_LABELS = {"tasks-api-client": "true"}
#: A label every probe pod carries, so a failed run's pods can be found and deleted; it
#: is selected by none of the chart's policies.
PROBE_LABEL = "tasks-network-policy-probe"
NAMESPACE = "tasks-netpol"

#: Seconds one connection attempt may take (``probe --timeout-secs``, ``pg_isready -t``).
CONNECT_TIMEOUT_S = 5
#: A new pod's labels reach the enforcing CNI's rules shortly after it starts; allowed
#: paths are retried (a fresh pod per attempt) until this deadline.
ALLOWED_WITHIN_S = 120
#: Denied paths: every one of this many attempts must fail to connect.
DENIED_ATTEMPTS = 2
#: One probe pod, from creation to its container's exit.
POD_TIMEOUT_S = 90

COMPONENT = "app.kubernetes.io/component"


def client_values() -> dict:
    """Chart values that admit only pods with :data:`CLIENT_LABELS` on the API port."""
    return {"networkPolicy": {"enabled": True, "ingressFrom": [{"podSelector": {"matchLabels": dict(CLIENT_LABELS)}}]}}


# -- reading what the release rendered ----------------------------------------------------


def _by_component(items: list[dict], component: str) -> list[dict]:
    return [i for i in items if (i["metadata"].get("labels") or {}).get(COMPONENT) == component]


def _rule_for_port(policy: dict, port_names: set) -> dict | None:
    for rule in policy["spec"].get("ingress") or []:
        if any(p.get("port") in port_names for p in rule.get("ports") or []):
            return rule
    return None


def _pod_peer_labels(rule: dict | None, exclude_component: str | None = None) -> dict | None:
    """matchLabels of the first same-namespace pod peer of ``rule`` (not ``exclude_component``);
    None when the rule admits every source or names no such peer."""
    if rule is None:
        return None
    for peer in rule.get("from") or []:
        labels = (peer.get("podSelector") or {}).get("matchLabels") or {}
        if labels and "namespaceSelector" not in peer and "ipBlock" not in peer and labels.get(COMPONENT) != exclude_component:
            return dict(labels)
    return None


def _pod_template(kube: scenarios.Kube, kind: str, component: str, container: str | None = None) -> tuple[str, int]:
    """Image and UID of the release's workload of ``component``."""
    items = _by_component(kube.json(kind)["items"], component)
    if not items:
        raise RuntimeError(f"no {kind} with {COMPONENT}={component} in namespace {kube.namespace}")
    spec = items[0]["spec"]["template"]["spec"]
    containers = spec["containers"]
    chosen = next((c for c in containers if c["name"] == container), containers[0]) if container else containers[0]
    uid = (spec.get("securityContext") or {}).get("runAsUser") or (chosen.get("securityContext") or {}).get("runAsUser") or 65532
    return chosen["image"], int(uid)


# -- probe pods ---------------------------------------------------------------------------


def _probe_owner(kube: scenarios.Kube) -> dict:
    """A ConfigMap that owns (as controller) every probe pod; deleting it deletes them."""
    name = "netpol-probes"
    kube.run("create", "configmap", name, check=False)
    uid = kube.json("configmap", name)["metadata"]["uid"]
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid, "controller": True}



class Probe:
    """One pod that runs one connection attempt and exits; returns (exit code, logs)."""

    def __init__(self, kube: scenarios.Kube, owner: dict, image: str, uid: int, *, command: list[str] | None = None,
                 args: list[str] | None = None, never_ready: bool = False):
        self.kube, self.owner, self.image, self.uid = kube, owner, image, uid
        self.command, self.args, self.never_ready = command, args, never_ready

    def run(self, name: str, labels: dict) -> tuple[int | None, str]:
        pod_name = f"netpol-{name}-{uuid.uuid4().hex[:6]}"
        container = {
            "name": "probe", "image": self.image, "imagePullPolicy": "IfNotPresent",
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
        }
        if self.command:
            container["command"] = self.command
        if self.args:
            container["args"] = self.args
        if self.never_ready:
            # It carries a workload's labels: keep it out of that workload's Service endpoints.
            container["readinessProbe"] = {"exec": {"command": ["false"]}, "periodSeconds": 30}
        manifest = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": self.kube.namespace, "labels": {**labels, PROBE_LABEL: name},
                         # A controller reference of its own: a pod with the app's labels is
                         # otherwise adopted (and scaled away) by the app's ReplicaSet.
                         "ownerReferences": [self.owner]},
            "spec": {
                "restartPolicy": "Never", "activeDeadlineSeconds": POD_TIMEOUT_S,
                "automountServiceAccountToken": False, "enableServiceLinks": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": self.uid, "runAsGroup": self.uid,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
            },
        }
        created = subprocess.run([self.kube.kubectl_bin, "--kubeconfig", self.kube.kubeconfig, "create", "-f", "-"],
                                 input=json.dumps(manifest), capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            raise RuntimeError(f"probe pod {pod_name}: {created.stderr.strip()}")
        try:
            pod = scenarios.poll(f"probe pod {pod_name} ran", lambda: (
                (p := self.kube.json("pod", pod_name)) and p.get("status", {}).get("phase") in ("Succeeded", "Failed") and p), POD_TIMEOUT_S + 30, 1)
            terminated = next((s.get("state", {}).get("terminated") for s in pod["status"].get("containerStatuses", [])), None)
            code = terminated.get("exitCode") if terminated else None
            logs = self.kube.run("logs", pod_name, check=False).stdout.strip()
            return code, logs or (pod["status"].get("message") or pod["status"].get("reason") or "")
        finally:
            self.kube.run("delete", "pod", pod_name, "--wait=false", "--ignore-not-found", check=False)


def _until_allowed(probe: Probe, name: str, labels: dict, ok) -> tuple[bool, int, str]:
    """Attempts (a fresh pod each) until ``ok(code, logs)`` or :data:`ALLOWED_WITHIN_S`."""
    deadline = time.monotonic() + ALLOWED_WITHIN_S
    attempts, last = 0, ""
    while True:
        attempts += 1
        code, logs = probe.run(name, labels)
        last = f"exit {code}: {logs[-300:]}"
        if ok(code, logs):
            return True, attempts, last
        if time.monotonic() > deadline:
            return False, attempts, last
        time.sleep(3)


def _always_denied(probe: Probe, name: str, labels: dict, denied) -> tuple[bool, str]:
    outcomes = []
    for _ in range(DENIED_ATTEMPTS):
        code, logs = probe.run(name, labels)
        outcomes.append((code, logs[-200:]))
        if not denied(code, logs):
            return False, f"attempt {len(outcomes)}: exit {code}: {logs[-300:]}"
    return True, "; ".join(f"exit {c}: {l}" for c, l in outcomes)


def _http_reached(code, logs: str) -> bool:
    return code == 0


def _http_not_connected(code, logs: str) -> bool:
    # `tasks-server probe`: "probe failed: cannot connect to <addr>: ..." when the TCP
    # connection is never established (dropped: timed out; rejected: refused). Any other
    # failure (a name that does not resolve, an HTTP error) is not the policy's doing.
    return code not in (0, None) and "cannot connect to" in logs


def _pg_accepting(code, logs: str) -> bool:
    return code == 0  # pg_isready: 0 = accepting connections


def _pg_no_response(code, logs: str) -> bool:
    return code == 2  # pg_isready: 2 = no response (1 would mean the server answered)


# -- the scenario -------------------------------------------------------------------------


def run_network_policy(results: scenarios.Results, kube: scenarios.Kube, namespace: str) -> None:
    """Check the release installed in ``namespace`` against its own NetworkPolicies.

    ``kube`` gives the kubeconfig (its namespace does not matter). Needs the API port
    restricted to labelled clients (``networkPolicy.ingressFrom`` with a pod selector, as
    :func:`client_values`); fails, saying so, when the install admits every source.
    """
    tag = "[network policy]"
    k = scenarios.Kube(kube.kubeconfig, namespace)
    policies = k.json("networkpolicy")["items"]
    app_policy, db_policy = _by_component(policies, "backend"), _by_component(policies, "database")
    if not results.check(f"{tag} the release's NetworkPolicies exist (app, database)", bool(app_policy and db_policy),
                         f"{[p['metadata']['name'] for p in policies]}"):
        return
    services = k.json("service")["items"]
    api = next((s for s in _by_component(services, "backend") if any(p.get("name") == "http" for p in s["spec"]["ports"])), None)
    db = next((s for s in _by_component(services, "database") if s["spec"].get("clusterIP") not in (None, "None")), None)
    if not results.check(f"{tag} the API and PostgreSQL Services exist", api is not None and db is not None):
        return
    api_port = next(p for p in api["spec"]["ports"] if p.get("name") == "http")
    db_port = next(p for p in db["spec"]["ports"] if p.get("name") == "postgresql")
    # The Service's own DNS name, as a client would call it.
    api_url = f"http://{api['metadata']['name']}.{namespace}.svc:{api_port['port']}/openapi.json"
    # pg_isready reports a name that does not resolve as "no response" too: the address.
    db_host, db_port_number = db["spec"]["clusterIP"], str(db_port["port"])

    api_rule = _rule_for_port(app_policy[0], {"http", api_port.get("targetPort"), api_port["port"]})
    client = _pod_peer_labels(api_rule, exclude_component="test")
    if client is None:
        detail = ("the API rule admits every source: networkPolicy.ingressFrom is empty (the chart's default); "
                  f"install with {json.dumps(client_values())}")
    else:
        detail = f"client labels {client}"
    if not results.check(f"{tag} the API port admits only selected client pods (networkPolicy.ingressFrom)", client is not None, detail):
        return
    database_clients = _pod_peer_labels(_rule_for_port(db_policy[0], {"postgresql", db_port["port"]}))
    if not results.check(f"{tag} PostgreSQL admits only the app pods", database_clients is not None and database_clients.get(COMPONENT) == "backend",
                         f"admitted {database_clients}"):
        return

    owner = _probe_owner(k)
    app_image, app_uid = _pod_template(k, "deployment", "backend")
    pg_image, pg_uid = _pod_template(k, "statefulset", "database", container="postgresql")
    http = Probe(k, owner, app_image, app_uid, args=["probe", api_url, "--timeout-secs", str(CONNECT_TIMEOUT_S)])
    pg_command = ["pg_isready", "-h", db_host, "-p", db_port_number, "-t", str(CONNECT_TIMEOUT_S)]
    pg = Probe(k, owner, pg_image, pg_uid, command=pg_command)
    # Carries the app's labels: selected by the app's own policy (egress to the database
    # allowed), kept out of the API Service by a readiness probe that never passes.
    pg_as_app = Probe(k, owner, pg_image, pg_uid, command=pg_command, never_ready=True)

    started = time.monotonic()
    ok, attempts, detail = _until_allowed(http, "client-api", client, _http_reached)
    results.check(f"{tag} a pod with the client labels {client} reaches the API ({api_url})", ok, f"{attempts} attempt(s), last {detail}")
    api_attempts = attempts
    ok, detail = _always_denied(http, "unlabelled-api", {}, _http_not_connected)
    results.check(f"{tag} a pod without the client labels cannot reach the API (no TCP connection, {DENIED_ATTEMPTS} attempts)", ok, detail)
    ok, attempts, detail = _until_allowed(pg_as_app, "app-db", database_clients, _pg_accepting)
    results.check(f"{tag} a pod with the app's labels reaches PostgreSQL ({db_host}:{db_port_number}, the control)", ok,
                  f"{attempts} attempt(s), last {detail}")
    db_attempts = attempts
    ok, detail = _always_denied(pg, "unlabelled-db", {}, _pg_no_response)
    results.check(f"{tag} a pod without labels cannot reach PostgreSQL (pg_isready: no response, {DENIED_ATTEMPTS} attempts)", ok, detail)
    ok, detail = _always_denied(pg, "client-db", client, _pg_no_response)
    results.check(f"{tag} an API client pod cannot reach PostgreSQL either", ok, detail)
    results.figure("network-policy", namespace=namespace, client_labels=json.dumps(client, sort_keys=True),
                   api_allowed_after_attempts=api_attempts, database_allowed_after_attempts=db_attempts,
                   denied_attempts_each=DENIED_ATTEMPTS, seconds=round(time.monotonic() - started, 1))


def install_and_check(results: scenarios.Results, kubeconfig: str, helm_binary: str, chart: tuple[str, str],
                      release: scenarios.Release, postgres_sets: list[str]) -> None:
    """Install release N with :func:`client_values` in :data:`NAMESPACE`, run
    :func:`run_network_policy`, uninstall and delete the namespace."""
    chart_ref, chart_version = chart
    helm = scenarios.Helm(helm_binary, kubeconfig, NAMESPACE)
    kube = scenarios.Kube(kubeconfig, NAMESPACE)
    tag = f"[network policy, helm {helm.version}]"
    print(f"\n=== network policy with {helm.version} in namespace {NAMESPACE}", flush=True)
    kube.run("create", "namespace", NAMESPACE, namespaced=False, check=False)
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="netpol-values-") as values:
            json.dump(client_values(), values)
            values.flush()
            args = ["install", scenarios.RELEASE, chart_ref, "--version", chart_version, "-f", str(scenarios.LOCAL_VALUES), "-f", values.name]
            for item in [*release.sets(), *postgres_sets, "replicaCount=1"]:
                args += ["--set", item]
            # The chart comes from the suite's plain-HTTP registry (Helm has no localhost exception).
            installed = helm.run(*args, "--plain-http", "--wait", "--timeout", "5m")
        if results.check(f"{tag} install with networkPolicy.ingressFrom = pods labelled {CLIENT_LABELS}",
                         installed.returncode == 0, installed.stderr.strip()[-1500:]):
            run_network_policy(results, kube, NAMESPACE)
    except (TimeoutError, RuntimeError, subprocess.TimeoutExpired) as error:
        results.check(f"{tag} scenario ran to the end", False, str(error)[:2000])
        print(kube.run("get", "pods,networkpolicies,events", "-o", "wide", check=False).stdout[-4000:])
    finally:
        helm.run("uninstall", scenarios.RELEASE, "--wait", "--timeout", "2m")
        kube.run("delete", "pod", "-l", PROBE_LABEL, "--ignore-not-found", check=False)
        kube.run("delete", "configmap", "netpol-probes", "--ignore-not-found", check=False)
        kube.run("delete", "pvc", "--all", "--wait=true", check=False)
        kube.run("delete", "namespace", NAMESPACE, "--wait=true", namespaced=False, check=False, timeout=300)
