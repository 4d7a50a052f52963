#!/usr/bin/env python3
"""Lifecycle rehearsal: play what Kubernetes would do with the rendered production chart,
using real processes on loopback addresses.

  rehearsal/rehearse.py            (normally through `just rehearse`)

What stands for what (see rehearsal/README.md):
  * `helm template` with the production overlay      -> the manifests the cluster receives
  * scripts/pg.sh on a data directory                  -> the PostgreSQL StatefulSet pod + its PVC
  * the real tasks-server binary per replica           -> app pods (rendered args, env, secret files,
    bound to its own 127.0.0.N address                    probes, grace period, security context UID)
  * an asyncio kubelet per pod                          -> startup/liveness/readiness probes at the
                                                           rendered periods/thresholds, restarts
  * an asyncio Deployment controller                    -> rolling update by maxSurge/maxUnavailable/
                                                           minReadySeconds
  * an L4 proxy on 127.0.0.1:<service port>            -> Service + kube-proxy: new connections go
                                                           only to ready endpoints; removals propagate
                                                           after ENDPOINT_DELAY seconds
  * wrk                                                 -> continuous client load

Every loop is bounded in count and time; only loopback addresses are used.
Ends with "N passed, M failed" and exits non-zero when a promise breaks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pod_environment import container_environment  # next to this file

try:
    import yaml  # PyYAML, installed into .tools/venv by `just rehearse`
except ImportError:  # pragma: no cover
    sys.exit("rehearse: PyYAML is missing: run through `just rehearse` (it installs it into .tools/venv)")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy/helm/tasks"
OVERLAY = ROOT / "deploy/helm/values/production.yaml"
MIGRATIONS = ROOT / "crates/storage/migrations"
RELEASE = "tasks"
NAMESPACE = "tasks"
# The image's ENTRYPOINT (docker/Dockerfile): the rendered container sets only args.
IMAGE_ENTRYPOINT = "/tasks-server"
# The binary's default secrets directory (TASKS_SECRETS_DIR).
DEFAULT_SECRETS_DIR = "/var/run/secrets/tasks"

ENDPOINT_DELAY = float(os.environ.get("REHEARSAL_ENDPOINT_DELAY_SECS", "1.0"))
FIRST_START_REPLICAS = int(os.environ.get("REHEARSAL_FIRST_START_REPLICAS", "8"))
LOAD_CONNECTIONS = int(os.environ.get("REHEARSAL_LOAD_CONNECTIONS", "8"))
LOAD_MAX_REQUESTS = int(os.environ.get("REHEARSAL_LOAD_MAX_REQUESTS", "400000"))  # per wrk thread
LOAD_MAX_SECS = int(os.environ.get("REHEARSAL_LOAD_MAX_SECS", "240"))
SCENARIO_TIMEOUT = float(os.environ.get("REHEARSAL_SCENARIO_TIMEOUT_SECS", "180"))
KEEP = os.environ.get("REHEARSAL_KEEP") == "1"

T0 = time.monotonic()
# The clients' bearer token (minted in main with the binary's `mint-token`); its line is
# in the API-token Secret the rehearsal provides, like every other client's.
API_TOKEN = ""


def now() -> float:
    return time.monotonic()


def log(msg: str) -> None:
    print(f"[{now() - T0:7.2f}s] {msg}", flush=True)


def free_port() -> int:
    """A TCP port free on every address (binding 0.0.0.0 proves it)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------
# Results


@dataclass
class Results:
    checks: list = field(default_factory=list)
    figures: list = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append((name, bool(ok), detail))
        print(f"{'PASS' if ok else 'FAIL'} {name}{' (' + detail + ')' if detail else ''}", flush=True)
        return bool(ok)

    def figure(self, scenario: str, name: str, value) -> None:
        self.figures.append((scenario, name, value))


R = Results()


# --------------------------------------------------------------------------------------
# Rendering and parsing the chart


def helm_bin() -> str:
    for cand in (ROOT / ".tools/bin/helm", shutil.which("helm")):
        if cand and Path(cand).exists():
            return str(cand)
    sys.exit("rehearse: helm not found (scripts/ensure-tools.sh helm)")


def render(sets: dict) -> list:
    args = [helm_bin(), "template", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(OVERLAY)]
    for k, v in sets.items():
        args += ["--set-string" if isinstance(v, str) else "--set", f"{k}={v}"]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs, kind, pred=lambda d: True):
    return [d for d in docs if d.get("kind") == kind and pred(d)]


def resolve_int_or_percent(v, total: int, round_up: bool) -> int:
    if isinstance(v, str) and v.endswith("%"):
        x = total * int(v[:-1]) / 100
        return math.ceil(x) if round_up else math.floor(x)
    return int(v)


@dataclass
class Probe:
    path: str
    port: int
    period: float
    timeout: float
    failure_threshold: int
    success_threshold: int
    initial_delay: float


@dataclass
class PodTemplate:
    hash: str
    argv_tail: list        # args after the entrypoint
    env: dict              # resolved env (ConfigMap envFrom + env), before pod-local mapping
    files: dict            # container path -> (bytes, mode) from secret/configMap volumes
    mounts: list           # container mount paths
    ports: dict            # name -> containerPort
    startup: Probe | None
    liveness: Probe | None
    readiness: Probe | None
    grace: int
    run_as_user: int | None
    run_as_group: int | None
    fs_group: int | None


@dataclass
class Manifests:
    template: PodTemplate
    replicas: int
    max_surge: int
    max_unavailable: int
    min_ready: int
    progress_deadline: int
    service_port: int
    service_target: str
    db_service: str
    db_port: int
    pg_grace: int
    pg_prestop: list
    pgdata_rel: str
    raw: dict


def parse(docs, existing_secrets: dict) -> Manifests:
    deps = find(docs, "Deployment", lambda d: d["metadata"]["labels"].get("app.kubernetes.io/component") == "backend")
    assert len(deps) == 1, "expected one backend Deployment"
    dep = deps[0]
    spec = dep["spec"]
    tmpl = spec["template"]
    pod = tmpl["spec"]
    c = pod["containers"][0]
    # What the kubelet gives the container: the one computation shared with the chart
    # contract test (pod_environment.py).
    given = container_environment(docs, pod, c, existing_secrets)
    problems = given["env_problems"] + [p for m in given["mounts"] for p in m["problems"]]
    problems += [f"the content of {path} is unknown" for path, f in given["files"].items() if f["data"] is None]
    if problems:
        raise SystemExit("rehearse: the rendered pod cannot start: " + "; ".join(problems))
    env = given["env"]
    files = {path: (f["data"].encode(), f["mode"]) for path, f in given["files"].items()}
    mounts = [m["path"] for m in given["mounts"]]

    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}

    def probe(name):
        p = c.get(name)
        if not p:
            return None
        hg = p["httpGet"]
        port = hg["port"]
        port = ports[port] if isinstance(port, str) else int(port)
        return Probe(hg.get("path", "/"), port, p.get("periodSeconds", 10), p.get("timeoutSeconds", 1),
                     p.get("failureThreshold", 3), p.get("successThreshold", 1), p.get("initialDelaySeconds", 0))

    argv_tail = list(c.get("args", []))
    if c.get("command"):
        if c["command"][0] != IMAGE_ENTRYPOINT:
            raise SystemExit(f"rehearse: unexpected container command {c['command']}")
        argv_tail = c["command"][1:] + argv_tail

    psc = pod.get("securityContext", {})
    csc = c.get("securityContext", {})
    template = PodTemplate(
        hash=hashlib.sha256(json.dumps(tmpl, sort_keys=True).encode()).hexdigest()[:10],
        argv_tail=argv_tail, env=env, files=files, mounts=mounts, ports=ports,
        startup=probe("startupProbe"), liveness=probe("livenessProbe"), readiness=probe("readinessProbe"),
        grace=int(pod.get("terminationGracePeriodSeconds", 30)),
        run_as_user=csc.get("runAsUser", psc.get("runAsUser")),
        run_as_group=csc.get("runAsGroup", psc.get("runAsGroup")),
        fs_group=psc.get("fsGroup"),
    )

    replicas = spec.get("replicas")
    if replicas is None:  # autoscaling: the HPA holds the minimum at rest
        hpa = find(docs, "HorizontalPodAutoscaler", lambda d: d["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"])
        replicas = hpa[0]["spec"]["minReplicas"] if hpa else 1
    ru = spec.get("strategy", {}).get("rollingUpdate", {})
    svc = [s for s in find(docs, "Service") if s["spec"].get("selector") == spec["selector"]["matchLabels"]]
    http_svc = next(p for s in svc for p in s["spec"]["ports"] if p["name"] == "http")
    db_host = env["TASKS_DATABASE__HOST"]
    db_svc = [s for s in find(docs, "Service") if s["metadata"]["name"] == db_host.split(".")[0] and s["spec"].get("clusterIP") != "None"]
    sts = find(docs, "StatefulSet")
    if not db_svc or not sts:
        raise SystemExit("rehearse: the rendered release has no in-chart PostgreSQL Service/StatefulSet")
    pgc = sts[0]["spec"]["template"]["spec"]["containers"][0]
    pgenv = {e["name"]: e.get("value") for e in pgc.get("env", [])}
    data_mount = next(m["mountPath"] for m in pgc["volumeMounts"]
                      if m["name"] in {t["metadata"]["name"] for t in sts[0]["spec"].get("volumeClaimTemplates", [])})
    pgdata = pgenv.get("PGDATA", data_mount)
    return Manifests(
        template=template, replicas=int(replicas),
        max_surge=resolve_int_or_percent(ru.get("maxSurge", "25%"), int(replicas), True),
        max_unavailable=resolve_int_or_percent(ru.get("maxUnavailable", "25%"), int(replicas), False),
        min_ready=int(spec.get("minReadySeconds", 0)),
        progress_deadline=int(spec.get("progressDeadlineSeconds", 600)),
        service_port=int(http_svc["port"]), service_target=str(http_svc["targetPort"]),
        db_service=db_svc[0]["metadata"]["name"], db_port=int(db_svc[0]["spec"]["ports"][0]["port"]),
        pg_grace=int(sts[0]["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)),
        pg_prestop=pgc.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", []),
        pgdata_rel=os.path.relpath(pgdata, data_mount),
        raw={"deployment": dep},
    )


# --------------------------------------------------------------------------------------
# PostgreSQL "StatefulSet pod" (scripts/pg.sh; its data directory is the PVC)


class Postgres:
    def __init__(self, root: Path, port: int, password: str, pgdata_rel: str, grace: int):
        self.pvc = root / "pvc" / "data-tasks-postgresql-0"
        self.datadir = self.pvc / pgdata_rel
        self.port = port
        self.password = password
        self.grace = grace
        self.pvc.mkdir(parents=True, exist_ok=True)

    def _pg(self, *args, timeout=None):
        env = dict(os.environ, PGPASSWORD_TASKS=self.password, PG_WAIT_SECS=str(min(self.grace, 120)),
                   PG_EXTRA_OPTS="-c max_connections=200")
        return subprocess.run([str(ROOT / "scripts/pg.sh"), *args], env=env, timeout=timeout or 180,
                              capture_output=True, text=True)

    def start(self):
        r = self._pg("start", str(self.datadir), str(self.port))
        if r.returncode != 0:
            raise SystemExit(f"rehearse: PostgreSQL did not start:\n{r.stderr}")

    def stop(self):
        return self._pg("stop", str(self.datadir)).returncode == 0

    def psql(self, sql: str) -> str:
        # rehearsal/run.sh sets PG_BINDIR from scripts/pg.sh bindir.
        psql = str(Path(os.environ["PG_BINDIR"]) / "psql") if os.environ.get("PG_BINDIR") else "psql"
        r = subprocess.run([psql, "-X", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U", "tasks", "-d", "tasks", "-c", sql],
                           env=dict(os.environ, PGPASSWORD=self.password, PGCONNECT_TIMEOUT="5"),
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip())
        return r.stdout


# --------------------------------------------------------------------------------------
# HTTP helpers (one request per connection, like a probe)


async def http_request(host, port, method, path, body=None, timeout=2.0, authenticate=True):
    """Returns (status, headers-dict, body-bytes) or raises. API paths (/v1/...) carry the
    clients' bearer token unless authenticate=False; probes never do."""
    async def go():
        r, w = await asyncio.open_connection(host, port)
        try:
            head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/rehearsal\r\nAccept: */*\r\nConnection: close\r\n"
            if authenticate and API_TOKEN and path.startswith("/v1/"):
                head += f"Authorization: Bearer {API_TOKEN}\r\n"
            data = b""
            if body is not None:
                data = json.dumps(body).encode()
                head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            w.write(head.encode() + b"\r\n" + data)
            await w.drain()
            raw = await r.read(-1)
        finally:
            w.close()
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        return status, headers, rest
    return await asyncio.wait_for(go(), timeout)


# --------------------------------------------------------------------------------------
# Pods and the kubelet


class Cluster:
    def __init__(self, root: Path, binary: Path, m: Manifests, db_host_ip: str):
        self.root = root
        self.binary = binary
        self.m = m
        self.db_host_ip = db_host_ip
        self.pods: list[Pod] = []
        self.next_ip = 2
        self.seq = 0
        self.events: list = []

    def new_pod(self, template: PodTemplate) -> "Pod":
        if self.next_ip > 250:
            raise RuntimeError("out of loopback addresses")
        self.seq += 1
        ip = f"127.0.0.{self.next_ip}"
        self.next_ip += 1
        pod = Pod(self, f"{RELEASE}-{template.hash}-{self.seq:02d}", ip, template)
        self.pods.append(pod)
        pod.task = asyncio.create_task(pod.kubelet())
        return pod

    def live(self):
        return [p for p in self.pods if not p.terminating]

    def endpoints(self):
        return [p for p in self.pods if p.in_endpoints]

    async def endpoints_controller(self):
        """EndpointSlice controller + kube-proxy: a pod is an endpoint while it is Ready and
        not terminating; every change reaches the proxy ENDPOINT_DELAY seconds later."""
        while True:
            t = now()
            for p in self.pods:
                want = p.ready and not p.terminating and p.running
                if want != p.ep_target:
                    p.ep_target, p.ep_change_at = want, t + ENDPOINT_DELAY
                if p.in_endpoints != p.ep_target and t >= p.ep_change_at:
                    p.in_endpoints = p.ep_target
                    log(f"endpoints: {'+' if p.in_endpoints else '-'} {p.name} ({p.ip}) -> {len(self.endpoints())} endpoint(s)")
            await asyncio.sleep(0.05)


class Pod:
    def __init__(self, cluster: Cluster, name: str, ip: str, t: PodTemplate):
        self.c, self.name, self.ip, self.t = cluster, name, ip, t
        self.created = now()
        self.proc = None
        self.running = False
        self.started = False
        self.ready = False
        self.ready_since = None
        self.terminating = False
        self.deleted_at = None
        self.gone = False
        self.restarts = 0
        self.exit_codes: list = []
        self.term_secs = None
        self.in_endpoints = False
        self.ep_target = False
        self.ep_change_at = 0.0
        self.readiness_log: list = []   # (time, status or None)
        self.first_ready_at = None
        self.kill_requested = asyncio.Event()
        self.logs: list[Path] = []
        self.root = cluster.root / "pods" / name
        self.task = None
        self._prepare()

    # container file system: secret/configMap volumes written under the pod's root
    def host_path(self, container_path: str) -> str:
        return str(self.root) + container_path

    def _prepare(self):
        self.root.mkdir(parents=True)
        os.chmod(self.root, 0o755)
        for mp in self.t.mounts:
            Path(self.host_path(mp)).mkdir(parents=True, exist_ok=True)
        for path, (data, mode) in self.t.files.items():
            hp = Path(self.host_path(path))
            hp.parent.mkdir(parents=True, exist_ok=True)
            hp.write_bytes(data)
            if os.geteuid() == 0 and self.t.fs_group is not None:
                os.chown(hp, 0, self.t.fs_group)  # kubelet: fsGroup owns volume files
            os.chmod(hp, mode)
        for d in (self.root / "var", self.root / "var/run", self.root / "var/run/secrets"):
            if d.exists():
                os.chmod(d, 0o755)

    def env(self) -> dict:
        env = {"PATH": "/usr/bin:/bin", "HOSTNAME": self.name}
        for k, v in self.t.env.items():
            if v.startswith("$FIELD:"):
                v = {"status.podIP": self.ip, "metadata.name": self.name, "metadata.namespace": NAMESPACE}[v[7:]]
            # any path inside a volume mount points into the pod's root
            if any(v == mp or v.startswith(mp.rstrip("/") + "/") for mp in self.t.mounts):
                v = self.host_path(v)
            env[k] = v
        # The pod network: 0.0.0.0 inside the pod's own network namespace is its pod IP.
        for key in ("TASKS_HTTP__HOST", "TASKS_ADMIN__HOST"):
            if env.get(key, "0.0.0.0") in ("0.0.0.0", "::"):
                env[key] = self.ip
        # Cluster DNS: the database Service name resolves to the PostgreSQL pod.
        if env.get("TASKS_DATABASE__HOST", "").split(".")[0] == self.c.m.db_service:
            env["TASKS_DATABASE__HOST"] = self.c.db_host_ip
        # The secret volume: the binary reads its default directory unless told otherwise.
        if "TASKS_SECRETS_DIR" not in env:
            env["TASKS_SECRETS_DIR"] = self.host_path(DEFAULT_SECRETS_DIR)
        return env

    async def _spawn(self):
        n = len(self.logs)
        logf = self.c.root / "logs" / f"{self.name}.{n}.log"
        self.logs.append(logf)
        fh = open(logf, "wb")
        kwargs = {}
        if os.geteuid() == 0 and self.t.run_as_user is not None:
            kwargs = dict(user=self.t.run_as_user, group=self.t.run_as_group,
                          extra_groups=[self.t.fs_group] if self.t.fs_group is not None else [])
        self.proc = await asyncio.create_subprocess_exec(
            str(self.c.binary), *self.t.argv_tail, env=self.env(), stdout=fh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
        fh.close()
        self.running = True
        self.started = False

    async def _probe(self, p: Probe):
        try:
            status, _, _ = await http_request(self.ip, p.port, "GET", p.path, timeout=p.timeout)
            return 200 <= status < 400, status
        except Exception:
            return False, None

    async def _probes(self):
        """Returns the reason the container must be restarted (startup/liveness failure)."""
        t = self.t
        if t.startup:
            await asyncio.sleep(t.startup.initial_delay)
            fails = 0
            while True:
                t1 = now()
                ok, _ = await self._probe(t.startup)
                if ok:
                    break
                fails += 1
                if fails >= t.startup.failure_threshold:
                    return "startup probe failed"
                await asyncio.sleep(max(0.0, t.startup.period - (now() - t1)))
        self.started = True

        async def liveness():
            if not t.liveness:
                await asyncio.Event().wait()
            await asyncio.sleep(t.liveness.initial_delay)
            fails = 0
            while True:
                t1 = now()
                ok, _ = await self._probe(t.liveness)
                fails = 0 if ok else fails + 1
                if fails >= t.liveness.failure_threshold:
                    return "liveness probe failed"
                await asyncio.sleep(max(0.0, t.liveness.period - (now() - t1)))

        async def readiness():
            if not t.readiness:
                self._set_ready(True)
                await asyncio.Event().wait()
            await asyncio.sleep(t.readiness.initial_delay)
            succ = fails = 0
            while True:
                t1 = now()
                ok, status = await self._probe(t.readiness)
                self.readiness_log.append((now(), status))
                if ok:
                    succ, fails = succ + 1, 0
                    if succ >= t.readiness.success_threshold:
                        self._set_ready(True)
                else:
                    succ, fails = 0, fails + 1
                    if fails >= t.readiness.failure_threshold:
                        self._set_ready(False)
                await asyncio.sleep(max(0.0, t.readiness.period - (now() - t1)))

        tasks = [asyncio.create_task(liveness()), asyncio.create_task(readiness())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            return next(iter(done)).result()
        finally:
            for x in tasks:
                x.cancel()

    def _set_ready(self, v: bool):
        if v and not self.ready:
            self.ready, self.ready_since = True, now()
            if self.first_ready_at is None:
                self.first_ready_at = now()
            log(f"kubelet: {self.name} Ready")
        elif not v and self.ready:
            self.ready, self.ready_since = False, None
            log(f"kubelet: {self.name} NotReady")

    def available(self, min_ready: int) -> bool:
        return self.ready and not self.terminating and self.ready_since is not None and now() - self.ready_since >= min_ready

    async def _stop_container(self, grace: float) -> float:
        """SIGTERM, then SIGKILL after the grace period; returns seconds to exit."""
        t1 = now()
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except asyncio.TimeoutError:
                log(f"kubelet: {self.name} did not exit within {grace}s: SIGKILL")
                self.proc.kill()
                await self.proc.wait()
        return now() - t1

    async def kubelet(self):
        """restartPolicy: Always, with the kubelet's back-off (0 s, then 10 s doubling, max 300 s)."""
        backoff = 0.0
        for _attempt in range(50):
            if self.terminating:
                break
            await self._spawn()
            probes = asyncio.create_task(self._probes())
            waiter = asyncio.create_task(self.proc.wait())
            killer = asyncio.create_task(self.kill_requested.wait())
            done, _ = await asyncio.wait({probes, waiter, killer}, return_when=asyncio.FIRST_COMPLETED)
            if probes in done and not self.terminating:
                log(f"kubelet: {self.name}: {probes.result()}: restarting the container")
                await self._stop_container(self.t.grace)
            if killer in done:
                await self.proc.wait()
            probes.cancel()
            killer.cancel()
            await self.proc.wait()
            self.running = False
            self._set_ready(False)
            self.exit_codes.append(self.proc.returncode)
            if self.terminating:
                break
            self.restarts += 1
            log(f"kubelet: {self.name} container exited ({self.proc.returncode}); restart #{self.restarts} in {backoff:.0f}s")
            await asyncio.sleep(backoff)
            backoff = 10.0 if backoff == 0 else min(backoff * 2, 300.0)
        self.gone = True

    async def delete(self):
        """Pod deletion: endpoints drop it (after the propagation delay) while the kubelet
        sends SIGTERM at once and SIGKILL after terminationGracePeriodSeconds."""
        if self.terminating:
            return
        self.terminating, self.deleted_at = True, now()
        log(f"delete pod {self.name}: SIGTERM, grace {self.t.grace}s")
        self.term_secs = await self._stop_container(self.t.grace)
        self.kill_requested.set()
        await asyncio.wait_for(self.task, 30)
        self.c.pods.remove(self)
        log(f"pod {self.name} gone: exit {self.exit_codes[-1] if self.exit_codes else None} after {self.term_secs:.1f}s")

    def sigkill(self):
        if self.proc and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())


# --------------------------------------------------------------------------------------
# Service: an L4 proxy like kube-proxy (one backend per client connection)


class ServiceProxy:
    def __init__(self, cluster: Cluster, port: int, target_port: int):
        self.c, self.port, self.target_port = cluster, port, target_port
        self.rr = 0
        self.events: list = []   # (time, kind, pod)
        self.connections = 0
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port, backlog=1024)

    async def handle(self, cr, cw):
        self.connections += 1
        eps = self.c.endpoints()
        if not eps:
            self.events.append((now(), "no-endpoints", None))
            self._reset(cw)
            return
        pod = eps[self.rr % len(eps)]
        self.rr += 1
        try:
            br, bw = await asyncio.wait_for(asyncio.open_connection(pod.ip, self.target_port), 5)
        except (OSError, asyncio.TimeoutError):
            self.events.append((now(), "connect-failed", pod.name))
            self._reset(cw)
            return
        state = {"pending": False, "client_gone": False}

        async def pump(src, dst, upstream):
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    state["pending"] = upstream
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                if not upstream and state["pending"] and not state["client_gone"]:
                    self.events.append((now(), "reset-in-flight", pod.name))
                    state["pending"] = False
            finally:
                if upstream:
                    state["client_gone"] = True   # the client hung up: nothing of its is in flight
                elif state["pending"] and not state["client_gone"]:
                    self.events.append((now(), "closed-in-flight", pod.name))
                    state["pending"] = False
                elif not state["client_gone"]:
                    # The pod closed an idle keep-alive connection (it died, or drained):
                    # the client's next request on it fails, as it would against the pod.
                    self.events.append((now(), "closed-idle", pod.name))
                try:
                    dst.close()
                except Exception:
                    pass

        await asyncio.gather(pump(cr, bw, True), pump(br, cw, False), return_exceptions=True)

    @staticmethod
    def _reset(w):
        try:
            w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except Exception:
            pass
        w.close()


# --------------------------------------------------------------------------------------
# Load: wrk (real load generator), bounded by duration and request count


WRK_LUA = r"""
local counter = 0
local limit = tonumber(os.getenv("REHEARSAL_MAX_REQUESTS")) or 100000
local auth = "Bearer " .. (os.getenv("REHEARSAL_TOKEN") or "")
request = function()
  counter = counter + 1
  if counter % 5 == 0 then
    return wrk.format("POST", "/v1/tasks", {["Content-Type"] = "application/json", ["Authorization"] = auth},
      '{"title":"load ' .. counter .. '"}')
  end
  return wrk.format("GET", "/v1/tasks?limit=5", {["Authorization"] = auth})
end
response = function(status, headers, body)
  if counter >= limit then wrk.thread:stop() end
end
done = function(summary, latency, requests)
  io.write(string.format(
    'REHEARSAL_WRK {"requests":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_ms":%.2f,"p99_ms":%.2f,"secs":%.2f}\n',
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.duration / 1e6))
end
"""


class Load:
    def __init__(self, root: Path, port: int):
        self.script = root / "load.lua"
        self.script.write_text(WRK_LUA)
        self.port = port
        self.proc = None

    async def start(self):
        wrk = shutil.which("wrk")
        self.proc = await asyncio.create_subprocess_exec(
            wrk, "-t2", f"-c{LOAD_CONNECTIONS}", f"-d{LOAD_MAX_SECS}s", "--timeout", "10s", "-s", str(self.script),
            f"http://127.0.0.1:{self.port}/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=dict(os.environ, REHEARSAL_MAX_REQUESTS=str(LOAD_MAX_REQUESTS), REHEARSAL_TOKEN=API_TOKEN))

    async def stop(self) -> dict:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(self.proc.communicate(), 30)
        text = out.decode(errors="replace")
        m = re.search(r"REHEARSAL_WRK (\{.*\})", text)
        if not m:
            raise RuntimeError(f"wrk printed no summary:\n{text}")
        res = json.loads(m.group(1))
        res["failed"] = res["connect"] + res["read"] + res["write"] + res["status"] + res["timeout"]
        return res


class Watcher:
    """A client asking the Service every 100 ms on a fresh connection: longest gap without
    an answer, as a user would notice it."""

    def __init__(self, port):
        self.port = port
        self.ok = self.failed = 0
        self.last_ok = None
        self.max_gap = 0.0
        self.task = None

    async def run(self):
        for _ in range(int(SCENARIO_TIMEOUT * 10)):
            t = now()
            try:
                status, _, _ = await http_request("127.0.0.1", self.port, "GET", "/v1/tasks?limit=1", timeout=2)
                good = status == 200
            except Exception:
                good = False
            if good:
                self.ok += 1
                if self.last_ok is not None:
                    self.max_gap = max(self.max_gap, now() - self.last_ok)
                self.last_ok = now()
            else:
                self.failed += 1
            await asyncio.sleep(max(0.0, 0.1 - (now() - t)))

    def start(self):
        self.last_ok = now()
        self.task = asyncio.create_task(self.run())

    def stop(self):
        self.task.cancel()
        if self.last_ok is not None:
            self.max_gap = max(self.max_gap, now() - self.last_ok)


async def wait_until(pred, timeout: float, step: float = 0.1) -> bool:
    deadline = now() + timeout
    while now() < deadline:
        if pred():
            return True
        await asyncio.sleep(step)
    return pred()


# --------------------------------------------------------------------------------------
# Deployment controller


async def rollout(cluster: Cluster, template: PodTemplate, m: Manifests, sample: dict) -> bool:
    """Roll the Deployment to `template` like the Deployment controller does."""
    max_total = m.replicas + m.max_surge
    min_avail = m.replicas - m.max_unavailable
    deadline = now() + min(m.progress_deadline, SCENARIO_TIMEOUT)
    deleting: set = set()
    sample.update(max_pods=0, min_available=10**6)
    while now() < deadline:
        live = cluster.live()
        new = [p for p in live if p.t.hash == template.hash]
        old = [p for p in live if p.t.hash != template.hash]
        avail = sum(p.available(m.min_ready) for p in live)
        sample["max_pods"] = max(sample["max_pods"], len(live))
        sample["min_available"] = min(sample["min_available"], avail)
        if len(new) == m.replicas and not old and all(p.available(m.min_ready) for p in new):
            break
        # scale the new ReplicaSet up within maxSurge
        room = min(max_total - len(live), m.replicas - len(new))
        for _ in range(max(0, room)):
            p = cluster.new_pod(template)
            log(f"deployment: scale up new ReplicaSet {template.hash}: {p.name} ({p.ip})")
        # scale old ReplicaSets down while availability stays >= replicas - maxUnavailable
        can_remove = avail - min_avail
        for p in sorted(old, key=lambda p: (p.available(m.min_ready), -p.created)):
            if p.available(m.min_ready):
                if can_remove <= 0:
                    break
                can_remove -= 1
            log(f"deployment: scale down old ReplicaSet {p.t.hash}: {p.name}")
            deleting.add(asyncio.create_task(p.delete()))
        await asyncio.sleep(0.1)
    ok = len([p for p in cluster.live() if p.t.hash == template.hash and p.available(m.min_ready)]) == m.replicas
    if deleting:
        await asyncio.wait(deleting, timeout=m.template.grace + 10)
    return ok


# --------------------------------------------------------------------------------------
# Scenarios


def in_window(events, start, end, pods):
    inside = [e for e in events if start <= e[0] <= end and e[2] in pods]
    outside = [e for e in events if e[0] >= start and e not in inside]
    return inside, outside


def mint_token(binary: Path, principal: str) -> tuple[str, str]:
    """`tasks-server mint-token PRINCIPAL --scope tasks:read tasks:write`: (token, line)."""
    out = subprocess.run([str(binary), "mint-token", principal, "--scope", "tasks:read", "tasks:write"],
                         capture_output=True, text=True, timeout=60)
    token = re.search(r"tkn_[A-Za-z0-9_-]+", out.stdout)
    line = re.search(r"(?m)^[^ #]+ sha256:[0-9a-fA-F]{64} \S+$", out.stdout)
    if out.returncode != 0 or not token or not line:
        sys.exit(f"rehearse: tasks-server mint-token {principal} failed: {out.stdout}{out.stderr}")
    return token.group(0), line.group(0)


async def helm_test(docs: list, binary: Path, svc_port: int, pg: "Postgres", root: Path, existing: dict) -> None:
    """Runs the commands of the rendered `helm test` pod (its main containers: the
    readiness init container needs the admin port, which the proxy does not carry) with
    the real binary, the Service's name resolved to the proxy standing in for it and the
    files of its volumes (the token of `round-trip --token-file`) under a root of its own."""
    tests = find(docs, "Pod", lambda d: (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test")
    R.check("helm test: the chart renders a test pod", len(tests) == 1, f"{len(tests)} pods")
    services = {d["metadata"]["name"] for d in find(docs, "Service")}
    before = pg.psql("SELECT count(*) FROM tasks").strip()
    for container in (tests[0]["spec"]["containers"] if tests else []):
        args = [str(a) for a in container.get("args", [])]
        match = re.match(r"http://([^:/]+):(\d+)", args[1]) if len(args) > 1 else None
        target_ok = bool(match) and match.group(1) in services and int(match.group(2)) == svc_port
        R.check(f"helm test: {container['name']} targets the app Service's API port", target_ok, " ".join(args))
        if not target_ok:
            continue
        files = container_environment(docs, tests[0]["spec"], container, existing)["files"]
        test_root = root / "helm-test"
        for path, f in files.items():
            if f["data"] is not None:
                (test_root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                (test_root / path.lstrip("/")).write_text(f["data"])
        rest = [str(test_root / a.lstrip("/")) if a in files else a for a in args[2:]]
        if "--token-file" in args:
            i = args.index("--token-file") + 1
            R.check("helm test: round-trip reads its token from a file of its Secret volume",
                    i < len(args) and args[i] in files and files[args[i]]["data"] is not None,
                    f"{args[i] if i < len(args) else '?'}; files {sorted(files)}")
        argv = [str(binary), args[0], args[1].replace(match.group(0), f"http://127.0.0.1:{svc_port}", 1), *rest]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        R.check(f"helm test: `tasks-server {args[0]}` passes through the Service", proc.returncode == 0,
                out.decode(errors="replace").strip()[:200])
    after = pg.psql("SELECT count(*) FROM tasks").strip()
    R.check("helm test: leaves no data behind", before == after, f"tasks {before} -> {after}")


async def main() -> int:
    binary = Path(os.environ.get("REHEARSAL_BINARY") or ROOT / "target/debug/tasks-server").resolve()
    if not binary.exists():
        sys.exit(f"rehearse: no tasks-server binary at {binary} (cargo build --locked -p tasks-server)")
    if not shutil.which("wrk"):
        sys.exit("rehearse: wrk not found (Debian: apt-get install wrk)")

    root = Path(tempfile.mkdtemp(prefix="tasks-rehearsal-"))
    os.chmod(root, 0o755)
    (root / "logs").mkdir()
    # the pods run as the rendered UID: give them their own copy of the binary
    (root / "bin").mkdir()
    shutil.copy2(binary, root / "bin/tasks-server")
    os.chmod(root / "bin/tasks-server", 0o755)
    binary = root / "bin/tasks-server"

    pg_port, http_port, admin_port, svc_port = free_port(), free_port(), free_port(), free_port()
    password = base64.urlsafe_b64encode(os.urandom(18)).decode()
    # API tokens minted as an operator would: one for the clients, one for the Helm test.
    global API_TOKEN
    API_TOKEN, clients_line = mint_token(binary, "rehearsal-clients")
    helm_test_token, helm_test_line = mint_token(binary, "helm-test")
    # The production overlay names existing Secrets (External Secrets in a real cluster):
    # the rehearsal plays the platform and provides them, under the names and keys the
    # overlay gives (the chart's defaults for keys it leaves out).
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    overlay = yaml.safe_load(OVERLAY.read_text())
    api_tokens = {**chart_values["auth"]["apiTokens"], **overlay.get("auth", {}).get("apiTokens", {})}
    test_token = {**chart_values["tests"]["apiToken"], **overlay.get("tests", {}).get("apiToken", {})}
    existing = {"tasks-production-db": {"password": password},
                api_tokens["existingSecret"]: {api_tokens["key"]: f"# rehearsal\n{clients_line}\n{helm_test_line}\n"},
                test_token["existingSecret"]: {test_token["key"]: helm_test_token + "\n"}}
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    base_sets = {
        "config.http.port": http_port, "config.admin.port": admin_port,
        "service.port": svc_port, "postgresql.service.port": pg_port,
        "otel.endpoint": "",   # no collector here
        "auth.issuer": "",     # no identity provider here: API tokens only
        # Modelled: no cert-manager issues the database certificate here, and the rehearsal's
        # PostgreSQL is a plain scripts/pg.sh server. TLS to the database is proven against a
        # real TLS server in crates/postgres/tests/tls.rs and by test-chart's reload check.
        "postgresql.tls.enabled": False,
    }
    log(f"substitutions: otel.endpoint and auth.issuer empty (no collector, no IdP), postgresql.tls off (no cert-manager); API tokens for "
        f"principals rehearsal-clients and helm-test in Secret {api_tokens['existingSecret']}")
    docs1 = render({**base_sets, "image.digest": f"sha256:{digest}"})
    m = parse(docs1, existing)
    # release 2: a new image digest (what the release pipeline sets); same binary here
    digest2 = hashlib.sha256(digest.encode() + b"release-2").hexdigest()
    m2 = parse(render({**base_sets, "image.digest": f"sha256:{digest2}"}), existing)
    t = m.template
    log(f"rendered production overlay: replicas {m.replicas}, maxSurge {m.max_surge}, maxUnavailable {m.max_unavailable}, "
        f"minReadySeconds {m.min_ready}, grace {t.grace}s, args {t.argv_tail}, UID {t.run_as_user}")
    log(f"probes: startup {t.startup}, liveness {t.liveness}, readiness {t.readiness}")
    log(f"secret files: {sorted(t.files)}; database Service {m.db_service}:{m.db_port}; PGDATA subdir {m.pgdata_rel!r}")
    R.check("rendered: probes on the admin port", all(p and p.port == t.ports.get("admin") for p in (t.startup, t.liveness, t.readiness)))
    R.check("rendered: database password mounted as a file, not in env",
            any(p.endswith("/database.password") for p in t.files) and "TASKS_DATABASE__PASSWORD" not in t.env)
    R.check("rendered: API-token file mounted in the secrets directory (auth.api_tokens), not in env",
            any(p.endswith("/auth.api_tokens") for p in t.files) and t.env.get("TASKS_AUTH__ENABLED") == "true")
    R.check("rendered: grace period covers drain + shutdown timeout",
            t.grace > int(t.env["TASKS_SHUTDOWN__DRAIN_DELAY_SECS"]) + int(t.env["TASKS_SHUTDOWN__TIMEOUT_SECS"]))
    R.check("rendered: PostgreSQL has no preStop (the image's STOPSIGNAL SIGINT is the fast shutdown)",
            not m.pg_prestop, " ".join(m.pg_prestop) or "none")
    R.check("rendered: release 2 changes the pod template", m2.template.hash != t.hash)

    pg = Postgres(root, pg_port, password, m.pgdata_rel, m.pg_grace)
    cluster = Cluster(root, binary, m, "127.0.0.1")
    proxy = ServiceProxy(cluster, svc_port, t.ports[m.service_target] if m.service_target in t.ports else int(m.service_target))
    ctl = None
    try:
        pg.start()
        log(f"PostgreSQL pod up on 127.0.0.1:{pg_port}, PVC {pg.pvc}")
        await proxy.start()
        ctl = asyncio.create_task(cluster.endpoints_controller())

        # ---- 1. first start of many --------------------------------------------------
        n = FIRST_START_REPLICAS
        log(f"== first start: {n} replicas at once against an empty database")
        t1 = now()
        pods = [cluster.new_pod(t) for _ in range(n)]
        startup_budget = (t.startup.period * t.startup.failure_threshold if t.startup else 0) + 30
        all_ready = await wait_until(lambda: all(p.ready for p in pods), min(startup_budget, SCENARIO_TIMEOUT))
        ready_secs = max((p.first_ready_at or now()) - t1 for p in pods)
        hist = pg.psql("SELECT version || ':' || name FROM refinery_schema_history ORDER BY version").split()
        files = sorted(p.name for p in MIGRATIONS.glob("V*__*.sql"))
        applied_lines = sum(p.log_text().count('"applying migration: ') for p in pods)
        current_lines = sum('"schema is current"' in p.log_text() for p in pods)
        restarts = sum(p.restarts for p in pods)
        R.check(f"first start: all {n} replicas ready", all_ready, f"{ready_secs:.1f}s")
        R.check("first start: each migration recorded once in refinery_schema_history",
                len(hist) == len(files) == len(set(hist)), f"{len(hist)} rows, {len(files)} files")
        R.check("first start: migrations applied exactly once across all logs",
                applied_lines == len(files), f"{applied_lines} 'applying migration' lines")
        R.check(f"first start: every replica reached 'schema is current'", current_lines == n, f"{current_lines}/{n}")
        R.check("first start: no container restarts", restarts == 0, f"{restarts}")
        R.figure("first start", "replicas started at once", n)
        R.figure("first start", "seconds until all ready", f"{ready_secs:.1f}")
        R.figure("first start", "migrations applied (history rows / log lines)", f"{len(hist)} / {applied_lines}")
        # scale down to the Deployment's size (HPA minimum)
        extra = pods[m.replicas:]
        await asyncio.gather(*(p.delete() for p in extra))
        codes = [p.exit_codes[-1] for p in extra]
        R.check("scale down: SIGTERM'd replicas exit 0 within the grace period",
                all(c == 0 for c in codes) and all(p.term_secs < t.grace for p in extra),
                f"exit codes {codes}, max {max(p.term_secs for p in extra):.1f}s")
        await wait_until(lambda: len(cluster.endpoints()) == m.replicas, 10)

        # ---- helm test: the rendered test pod's commands, through the Service ----------
        await helm_test(docs1, binary, svc_port, pg, root, existing)
        status, headers, _ = await http_request("127.0.0.1", svc_port, "GET", "/v1/tasks?limit=1", timeout=5, authenticate=False)
        R.check("authentication: the Service answers 401 with a Bearer challenge without a token",
                status == 401 and headers.get("www-authenticate", "").startswith("Bearer"),
                f"{status} {headers.get('www-authenticate', '')}")

        # ---- 2. rolling update under load ------------------------------------------
        log(f"== rolling update to release 2 under load ({LOAD_CONNECTIONS} connections)")
        load, watcher = Load(root, svc_port), Watcher(svc_port)
        await load.start()
        watcher.start()
        await asyncio.sleep(3)
        old = list(cluster.live())
        sample: dict = {}
        t1 = now()
        rolled = await rollout(cluster, m2.template, m, sample)
        roll_secs = now() - t1
        await asyncio.sleep(2)
        res = await load.stop()
        watcher.stop()
        codes = [p.exit_codes[-1] if p.exit_codes else None for p in old]
        R.check("rolling update: completed", rolled, f"{roll_secs:.1f}s")
        R.check("rolling update: ZERO failed requests", res["failed"] == 0 and res["requests"] > 0,
                f"{res['requests']} requests, {res['failed']} failed")
        R.check("rolling update: pods never above replicas + maxSurge", sample["max_pods"] <= m.replicas + m.max_surge,
                f"max {sample['max_pods']}")
        R.check("rolling update: available never below replicas - maxUnavailable",
                sample["min_available"] >= m.replicas - m.max_unavailable, f"min {sample['min_available']}")
        R.check("rolling update: old pods exit 0 within the grace period",
                all(c == 0 for c in codes) and all((p.term_secs or 1e9) < t.grace for p in old),
                f"exit codes {codes}")
        R.figure("rolling update", "requests / failed", f"{res['requests']} / {res['failed']}")
        R.figure("rolling update", "duration s / p50 ms / p99 ms", f"{roll_secs:.1f} / {res['p50_ms']:.1f} / {res['p99_ms']:.1f}")
        R.figure("rolling update", "max pods / min available", f"{sample['max_pods']} / {sample['min_available']}")
        R.figure("rolling update", "old pods' time to exit after SIGTERM s", f"{max(p.term_secs or 0 for p in old):.1f}")

        # ---- 3. pod crash ----------------------------------------------------------
        log("== pod crash: SIGKILL one replica under load")
        load, watcher = Load(root, svc_port), Watcher(svc_port)
        await load.start()
        watcher.start()
        await asyncio.sleep(3)
        victim = cluster.live()[0]
        restarts_before = victim.restarts
        ev_before = len(proxy.events)
        t_kill = now()
        log(f"SIGKILL {victim.name}")
        victim.sigkill()
        back = await wait_until(lambda: victim.restarts > restarts_before and victim.ready, SCENARIO_TIMEOUT)
        ready_after = now() - t_kill
        back = back and await wait_until(lambda: victim.in_endpoints, ENDPOINT_DELAY + 5)
        endpoint_after = now() - t_kill
        await asyncio.sleep(3)
        res = await load.stop()
        watcher.stop()
        evs = proxy.events[ev_before:]
        window_end = t_kill + ENDPOINT_DELAY + 0.5
        # An idle connection closed by a healthy pod is normal (a `Connection: close`
        # answer); only the victim's closes inside the kill window explain client errors.
        stray = [e for e in evs if e[1] != "closed-idle" and (e[2] != victim.name or e[0] > window_end)]
        victim_breaks = [e for e in evs if e[2] == victim.name and t_kill <= e[0] <= window_end]
        for e in stray:
            log(f"broken connection outside the kill window: {e[1]} on {e[2]} at +{e[0] - t_kill:.2f}s")
        R.check("pod crash: the killed container is restarted and ready again", back,
                f"restarts {victim.restarts}, {ready_after:.1f}s")
        R.check("pod crash: the service kept answering (no gap > 2 s)", watcher.max_gap <= 2.0 and res["requests"] > 0,
                f"longest gap {watcher.max_gap:.2f}s")
        # Every answer must be a success (a non-2xx or a timeout would be a healthy replica
        # failing), and socket errors are allowed only when the proxy saw connections to the
        # victim break inside the kill window. wrk may count one broken connection more than
        # once (the failed read, then the write of the retry on the same socket), so the
        # socket-error count is not compared one to one with the broken connections.
        socket_errors = res["connect"] + res["read"] + res["write"]
        R.check("pod crash: failures only on the killed replica, before its endpoint was removed",
                not stray and res["status"] == 0 and res["timeout"] == 0 and (socket_errors == 0 or victim_breaks),
                f"{res['failed']} failed requests ({socket_errors} socket errors, {res['status']} bad statuses, "
                f"{res['timeout']} timeouts), {len(victim_breaks)} connections of the victim broken, {len(stray)} elsewhere")
        R.figure("pod crash", "requests / failed", f"{res['requests']} / {res['failed']}")
        R.figure("pod crash", "broken connections (in flight / refused before endpoint removal)",
                 f"{sum(e[1] in ('reset-in-flight', 'closed-in-flight') for e in evs)} / {sum(e[1] == 'connect-failed' for e in evs)}")
        R.figure("pod crash", "seconds from SIGKILL to ready / back in endpoints", f"{ready_after:.1f} / {endpoint_after:.1f}")
        R.figure("pod crash", "longest gap seen by a client s", f"{watcher.max_gap:.2f}")

        # ---- 4. database pod restart -----------------------------------------------
        outage = float(os.environ.get("REHEARSAL_DB_OUTAGE_SECS",
                                      str((t.readiness.period * (t.readiness.failure_threshold + 1) + 1) if t.readiness else 5)))
        log(f"== database restart: fast shutdown, {outage:.0f}s down, start on the same data directory")
        load = Load(root, svc_port)
        await load.start()
        acked: list = []
        stop_writer = asyncio.Event()

        async def writer():
            i = 0
            while not stop_writer.is_set() and i < 100000:
                i += 1
                title = f"ack-{i}-{os.urandom(4).hex()}"
                try:
                    status, headers, body = await http_request("127.0.0.1", svc_port, "POST", "/v1/tasks", {"title": title}, timeout=10)
                    if status == 201:
                        acked.append((json.loads(body)["id"], title, now()))
                except Exception:
                    pass
                await asyncio.sleep(0.02)

        wtask = asyncio.create_task(writer())
        await asyncio.sleep(3)
        pods = list(cluster.live())
        restarts_before = {p.name: p.restarts for p in pods}
        t_stop = now()
        stopped = pg.stop()
        log(f"PostgreSQL stopped (fast): {stopped}")
        acked_before_stop = len([a for a in acked if a[2] <= t_stop])
        await asyncio.sleep(outage)
        saw_503 = {p.name: any(s is not None and s >= 500 and ts >= t_stop for ts, s in p.readiness_log) for p in pods}
        went_unready = {p.name: not p.ready for p in pods}
        pg.start()
        t_start = now()
        log("PostgreSQL started on the same data directory")
        recovered = await wait_until(lambda: all(p.ready and p.in_endpoints for p in pods), SCENARIO_TIMEOUT)
        recovery = now() - t_start
        first_write = next((a[2] - t_start for a in acked if a[2] > t_start), None)
        await asyncio.sleep(2)
        stop_writer.set()
        await asyncio.wait_for(wtask, 20)
        res = await load.stop()
        lost = []
        for tid, title, _ in acked:
            try:
                status, _, body = await http_request("127.0.0.1", svc_port, "GET", f"/v1/tasks/{tid}", timeout=5)
                if status != 200 or json.loads(body)["title"] != title:
                    lost.append(tid)
            except Exception:
                lost.append(tid)
        restarted = {p.name: p.restarts - restarts_before[p.name] for p in pods}
        R.check("database restart: every acknowledged write read back", not lost and len(acked) > 0,
                f"{len(acked)} acknowledged ({acked_before_stop} before the stop), {len(lost)} lost")
        R.check("database restart: app containers not restarted (liveness held)",
                all(v == 0 for v in restarted.values()), f"{restarted}")
        R.check("database restart: readiness went 503 on every replica", all(saw_503.values()), f"{saw_503}")
        R.check("database restart: replicas left the endpoints while the database was down", all(went_unready.values()),
                f"{went_unready}")
        R.check("database restart: readiness recovered without intervention", recovered, f"{recovery:.1f}s")
        R.figure("database restart", "acknowledged writes / lost", f"{len(acked)} / {len(lost)}")
        R.figure("database restart", "outage s / all ready again after start s",
                 f"{outage:.0f} / {recovery:.1f}")
        R.figure("database restart", "first acknowledged write after start s",
                 f"{first_write:.1f}" if first_write is not None else "none")
        R.figure("database restart", "load requests / failed (expected while down)", f"{res['requests']} / {res['failed']}")
        R.figure("database restart", "app container restarts", sum(restarted.values()))
    finally:
        log("== teardown")
        live = list(cluster.pods)
        await asyncio.gather(*(p.delete() for p in live), return_exceptions=True)
        if ctl:
            ctl.cancel()
        if proxy.server:
            proxy.server.close()
        pg.stop()
        if KEEP:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print("Lifecycle rehearsal figures (production overlay)")
    w1 = max(len(s) for s, _, _ in R.figures)
    w2 = max(len(n) for _, n, _ in R.figures)
    print(f"  {'scenario':<{w1}}  {'figure':<{w2}}  value")
    print(f"  {'-' * w1}  {'-' * w2}  -----")
    for s, n_, v in R.figures:
        print(f"  {s:<{w1}}  {n_:<{w2}}  {v}")
    print()
    passed = sum(ok for _, ok, _ in R.checks)
    failed = len(R.checks) - passed
    for name, ok, detail in R.checks:
        if not ok:
            print(f"FAILED: {name} ({detail})")
    print(f"rehearse: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
