"""The release's lifecycle on the real cluster, with Helm 3 and Helm 4.

Each scenario prints its figures and records checks that can fail; the last line is
``cluster: N passed, M failed`` for the suite runner. The scenarios take the cluster
as they find it (``cluster.json``: kubeconfig and registry), so the same code runs on
the cluster ``localcluster up`` starts and on any other (a kind cluster in CI) given a
kubeconfig and a registry its nodes pull from.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from . import load, paths

RELEASE = "tasks"
CHART = paths.REPO / "deploy" / "helm" / "tasks"
LOCAL_VALUES = paths.REPO / "deploy" / "helm" / "values" / "local.yaml"
#: The development token of the local overlay (its hash is in local.yaml).
TOKEN = "tkn_KpjZknNw_u0cKrrnbc6HVe8hc4yv8r7vVR2e6JM1378"
APP_SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=backend"
PG_POD = f"{RELEASE}-postgresql-0"
#: Every scenario after the install, in the order they run (each leaves the release
#: installed and serving; the last reinstalls it on the kept PVC). Only the Helm 4
#: lifecycle disrupts, and only a cluster this suite started can fail its nodes.
SCENARIOS = ("upgrade_under_load", "app_crash", "database_pod_deleted", "database_killed", "database_down_beyond_liveness",
             "node_failure", "database_node_failure", "rollback_and_uninstall")
DISRUPTIVE = {"app_crash", "database_pod_deleted", "database_killed", "database_down_beyond_liveness", "node_failure",
              "database_node_failure"}
NEEDS_NODES = {"node_failure", "database_node_failure"}
#: The taint an operator sets on a node that is shut down for good or for a while
#: (non-graceful node shutdown): its pods are force-deleted and their volumes released.
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
#: How long the scenario watches a Terminating StatefulSet pod on a dead node not being
#: replaced: one and a half pod garbage-collection periods (kube-controller-manager: 20 s).
STATEFULSET_HOLD_SECONDS = 30
#: Release N+1 is the checkout plus one migration of the expand kind (a nullable
#: column old code never names), as a real next release would add.
NEXT_RELEASE_FILES = {
    "crates/storage/migrations/V9000__next_release_probe.sql":
        "-- Added only to the scenarios' release N+1: an expand migration.\n"
        "ALTER TABLE tasks ADD COLUMN next_release_probe text;\n",
}


class Results:
    """Checks and figures; prints each as it is recorded."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        print(f"{'PASS' if ok else 'FAIL'} {name}{f' ({detail})' if detail else ''}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        return ok

    def figure(self, scenario: str, **figures) -> None:
        print(f"FIGURES {scenario}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)

    def summary(self) -> str:
        return f"cluster: {self.passed} passed, {len(self.failed)} failed"


@dataclasses.dataclass
class Release:
    """What one chart release runs: the app image by digest, and its version string."""

    image: str  # registry/repository@sha256:...
    version: str

    def sets(self) -> list[str]:
        registry, rest = self.image.split("/", 1)
        repository, digest = rest.split("@", 1)
        return [f"image.registry={registry}", f"image.repository={repository}", f"image.digest={digest}", "image.pullPolicy=IfNotPresent"]


class Kube:
    def __init__(self, kubeconfig: str, namespace: str):
        self.kubeconfig, self.namespace = kubeconfig, namespace
        self.kubectl_bin = str(paths.REPO / ".tools" / "bin" / "kubectl")

    def run(self, *args: str, check: bool = True, timeout: float = 120, namespaced: bool = True) -> subprocess.CompletedProcess:
        argv = [self.kubectl_bin, "--kubeconfig", self.kubeconfig, *(["-n", self.namespace] if namespaced else []), *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def json(self, *args: str) -> dict:
        return json.loads(self.run("get", *args, "-o", "json").stdout)

    def pods(self, selector: str) -> list[dict]:
        return [p for p in self.json("pods", "-l", selector)["items"] if not p["metadata"].get("deletionTimestamp")]

    def psql(self, sql: str) -> str:
        return self.run("exec", PG_POD, "-c", "postgresql", "--", "psql", "-U", "postgres", "-d", "tasks", "-tAc", sql).stdout.strip()

    def service_address(self, name: str, port_name: str = "http") -> tuple[str, int]:
        service = self.json("service", name)
        port = next(p["port"] for p in service["spec"]["ports"] if p.get("name") == port_name)
        return service["spec"]["clusterIP"], port


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def restarts(pod: dict) -> int:
    return sum(s.get("restartCount", 0) for s in pod.get("status", {}).get("containerStatuses", []))


def _largest(seconds: dict | None) -> float | str:
    """The largest of measured seconds; "n/a" where nothing was measured."""
    measured = [value for value in (seconds or {}).values() if value is not None]
    return max(measured) if measured else "n/a"


def poll(what: str, condition, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as error:  # the API or a pod may be on its way
            last, value = error, None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s{f' (last error: {last})' if last else ''}")


class Helm:
    def __init__(self, binary: str, kubeconfig: str, namespace: str):
        self.binary, self.kubeconfig, self.namespace = binary, kubeconfig, namespace
        self.version = subprocess.run([binary, "version", "--short"], capture_output=True, text=True).stdout.strip()
        self.major = self.version.lstrip("v").split(".")[0]

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        argv = [self.binary, "--kubeconfig", self.kubeconfig, "-n", self.namespace, *args]
        print(f"$ helm {' '.join(args)}", flush=True)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def container_pids(pod_uid: str, command: str) -> list[int]:
    """Host pids of the processes named ``command`` in the pod's cgroup (cgroupfs driver)."""
    found = []
    # cgroupfs names the pod's cgroup pod<uid>; the systemd driver (kind) pod<uid with _>.
    markers = (f"pod{pod_uid}", f"pod{pod_uid.replace('-', '_')}")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != command:
                continue
            cgroups = (entry / "cgroup").read_text()
            if any(marker in cgroups for marker in markers):
                found.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def main_process(pids: list[int]) -> int | None:
    """The one whose parent is not in the list (the container's first process)."""
    for pid in pids:
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[1])
        except (FileNotFoundError, IndexError):
            continue
        if parent not in pids:
            return pid
    return None


class Lifecycle:
    """Install, test, upgrade, disruptions, rollback and uninstall of one release,
    driven by one Helm binary in a namespace of its own."""

    def __init__(self, results: Results, helm_binary: str, kubeconfig: str, chart_ref: str, chart_version: str,
                 postgres_sets: list[str], releases: tuple[Release, Release], *, disruptions: bool, nodes=None,
                 only: set[str] | None = None):
        self.r = results
        self.namespace = f"tasks-helm{Helm(helm_binary, kubeconfig, 'default').major}"
        self.helm = Helm(helm_binary, kubeconfig, self.namespace)
        self.kube = Kube(kubeconfig, self.namespace)
        self.chart_ref, self.chart_version = chart_ref, chart_version
        self.postgres_sets = postgres_sets
        self.release_n, self.release_next = releases
        self.disruptions = disruptions
        #: Fails and recovers nodes (``cluster.NodeControl``) where this suite started the
        #: cluster itself and it has a node besides PostgreSQL's; None elsewhere.
        self.nodes = nodes
        #: Names of the scenarios to run after the install (``test --only``); None: all.
        self.only = only
        self.tag = f"helm {self.helm.version}"

    def scenarios(self) -> list:
        """The scenarios this lifecycle runs after the install, in order."""
        return [getattr(self, name) for name in SCENARIOS
                if (self.disruptions or name not in DISRUPTIVE) and (self.nodes is not None or name not in NEEDS_NODES)]

    # -- helpers ------------------------------------------------------------------

    def _values(self, release: Release) -> list[str]:
        args = ["-f", str(LOCAL_VALUES)]
        for item in [*release.sets(), *self.postgres_sets, "replicaCount=2", "config.log.format=json", "config.log.level=info"]:
            args += ["--set", item]
        return args

    def _deploy(self, verb: str, release: Release, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
        started = time.monotonic()
        result = self.helm.run(verb, RELEASE, self.chart_ref, "--version", self.chart_version, "--plain-http",
                               *self._values(release), "--wait", "--timeout", "5m", *extra)
        return result, time.monotonic() - started

    def _pg(self) -> dict:
        return self.kube.json("pod", PG_POD)

    def _app_pods(self) -> list[dict]:
        return self.kube.pods(APP_SELECTOR)

    def _api(self) -> tuple[str, int]:
        return self.kube.service_address(RELEASE)

    def _wait_service_answers(self, path: str = "/v1/tasks?limit=1", timeout: float = 30) -> float | None:
        """Seconds until the release's Service answers ``GET path`` from the host; None
        after ``timeout``. The answer (or the last error) is kept in ``_last_answer``.

        A freshly installed Service has a new ClusterIP, and ``helm install --wait`` does
        not wait for kube-proxy to program it. Until it does, node1 forwards the packet
        like any other and, having no default route, answers ICMP net-unreachable: a
        client sees ENETUNREACH (one CI run met it right after a reinstall)."""
        self._last_answer: dict = {}
        answer = self._last_answer

        def answers() -> bool:
            try:
                host, port = self._api()
                answer["reply"] = load.request(host, port, "GET", path, TOKEN)
                return True
            except OSError as error:
                answer["error"] = error
                return False

        started = time.monotonic()
        try:
            poll("the Service answers from the host", answers, timeout, 0.5)
        except TimeoutError:
            return None
        return time.monotonic() - started

    def _all_apps_on(self, release: Release) -> bool:
        pods = self._app_pods()
        digest = release.image.split("@", 1)[1]
        return len(pods) == 2 and all(ready(p) and p["spec"]["containers"][0]["image"].endswith(digest) for p in pods)

    def _converged_on(self, release: Release, timeout: float = 60) -> float | None:
        """Seconds until only ``release``'s pods run, all ready; None after ``timeout``.

        Helm 3's ``--wait`` returns once the new ReplicaSet is ready, possibly before
        the Deployment controller has scaled the old one down; Helm 4 waits for the
        rollout to finish. Either way the state must converge, and soon."""
        started = time.monotonic()
        try:
            poll(f"every app pod runs {release.version}", lambda: self._all_apps_on(release), timeout, 0.2)
        except TimeoutError:
            return None
        return time.monotonic() - started

    def _fail_logs(self) -> None:
        print(self.kube.run("get", "pods,pvc,events", "-o", "wide", check=False).stdout[-4000:])

    # -- scenarios -------------------------------------------------------------------

    def run(self) -> None:
        print(f"\n=== lifecycle with {self.tag} in namespace {self.namespace}", flush=True)
        self.kube.run("create", "namespace", self.namespace, namespaced=False, check=False)
        try:
            self.install()
            for scenario in self.scenarios():
                if self.only is None or scenario.__name__ in self.only:
                    scenario()
        except (TimeoutError, RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            self.r.check(f"[{self.tag}] lifecycle ran to the end", False, str(error)[:2000])
            self._fail_logs()
        finally:
            self.helm.run("uninstall", RELEASE, "--wait", "--timeout", "2m")
            self.kube.run("delete", "pvc", "--all", "--wait=true", check=False)
            self.kube.run("delete", "namespace", self.namespace, "--wait=true", namespaced=False, check=False, timeout=300)

    def install(self) -> None:
        result, seconds = self._deploy("install", self.release_n)
        if not self.r.check(f"[{self.tag}] install of the local overlay from {self.chart_ref}", result.returncode == 0, result.stderr.strip()[-1500:]):
            raise RuntimeError("install failed")
        service_seconds = self._wait_service_answers()
        if not self.r.check(f"[{self.tag}] the Service answers from the host", service_seconds is not None,
                            f"{service_seconds:.1f}s after helm returned" if service_seconds is not None
                            else f"no answer in 30s: {self._last_answer.get('error')}"):
            raise RuntimeError("the Service never answered")
        self.pg_uid = self._pg()["metadata"]["uid"]
        before = self.kube.psql("SELECT count(*) FROM tasks")
        started = time.monotonic()
        test = self.helm.run("test", RELEASE, "--logs", "--timeout", "3m")
        test_seconds = time.monotonic() - started
        self.r.check(f"[{self.tag}] helm test --logs passes", test.returncode == 0, (test.stdout + test.stderr).strip()[-1500:])
        after = self.kube.psql("SELECT count(*) FROM tasks")
        self.r.check(f"[{self.tag}] helm test leaves no data behind", before == after, f"tasks before {before}, after {after}")
        self.r.figure("install", helm=self.helm.version, ready_s=round(seconds, 1), service_answers_s=round(service_seconds, 1),
                      test_s=round(test_seconds, 1),
                      postgres_pod_uid=self.pg_uid)

    def _rollout_under_load(self, what: str, helm_args: list[str], during=None) -> tuple[int, str, dict, float]:
        """Run ``helm <helm_args>`` while wrk loads the Service; check 0 failed requests and
        that the load covered the rollout from before it began until after it ended.
        ``during`` runs while Helm waits (the rollout is in progress)."""
        host, port = self._api()
        old_pods = {p["metadata"]["name"]: p["status"].get("podIP") for p in self._app_pods()}
        removal = None
        if self.nodes is not None:
            removal = load.EndpointRemoval([ip for ip in old_pods.values() if ip], self.nodes.service_rules)
            removal.start()
        wrk = load.Wrk(f"http://{host}:{port}", TOKEN, seconds=300)
        poll("load is being served", lambda: wrk.running(), 10)
        time.sleep(1)  # let the load establish its connections before the rollout starts
        rollout_started = time.monotonic()
        process = subprocess.Popen([self.helm.binary, "--kubeconfig", self.helm.kubeconfig, "-n", self.namespace, *helm_args],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            if during is not None:
                during()
        finally:
            output, _ = process.communicate(timeout=400)
        rollout_ended = time.monotonic()
        # wrk stops by itself at its request or time limit: still running now means it
        # sent load from before the rollout began until after it ended.
        load_outlived_rollout = wrk.running()
        summary = wrk.stop()
        if removal is not None:
            removal.stop()
            summary["endpoint_removal_s"] = self._endpoint_removal(old_pods, removal.left)
        self.r.check(f"[{self.tag}] {what} under load: 0 failed requests", summary["failed"] == 0 and summary["requests"] > 0,
                     f"{summary['requests']} requests, {summary['failed']} failed"
                     + ("" if summary["failed"] == 0 else " (" + ", ".join(
                         f"{kind} {summary[kind]}" for kind in ("connect", "read", "write", "status", "timeout") if summary[kind])
                         + (f"; statuses {summary['error_statuses'].strip()}" if summary.get("error_statuses") else "")
                         + (f"; endpoint removal after SIGTERM {summary['endpoint_removal_s']}, drain delay {self._drain_delay()}s"
                            if "endpoint_removal_s" in summary else "") + ")"))
        if summary["failed"]:
            self._fail_logs()
        self.r.check(f"[{self.tag}] {what}: the load spanned the whole rollout",
                     summary["started"] < rollout_started and load_outlived_rollout,
                     f"load started {rollout_started - summary['started']:.1f}s before the rollout, "
                     f"{'still running' if load_outlived_rollout else 'had stopped'} when it ended "
                     f"({rollout_ended - rollout_started:.1f}s)")
        return process.returncode, output, summary, rollout_ended - rollout_started

    def _endpoint_removal(self, old_pods: dict[str, str | None], left: dict[str, float]) -> dict[str, float | None]:
        """Seconds from each old pod's SIGTERM (its kubelet's Killing event, whole
        seconds, so up to 1 s too long) until its address left the Service rules of the
        node the load goes through; None where either was not seen. The drain delay
        must cover it: until then new connections still reach the pod."""
        killed: dict[str, float] = {}
        for event in self.kube.json("events").get("items", []):
            pod = event.get("involvedObject", {}).get("name")
            stamp = event.get("firstTimestamp") or event.get("eventTime")
            if event.get("reason") == "Killing" and pod in old_pods and stamp:
                moment = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
                killed[pod] = min(killed.get(pod, moment), moment)
        return {pod: round(left[ip] - killed[pod], 1) if pod in killed and ip in left else None
                for pod, ip in old_pods.items()}

    def _drain_delay(self) -> str:
        data = self.kube.json("configmap", RELEASE).get("data", {})
        return data.get("TASKS_SHUTDOWN__DRAIN_DELAY_SECS", "?")

    def upgrade_under_load(self) -> None:
        pg_before = self._pg()
        old_pods = self._app_pods()
        old_answers = []

        def ask_old_pods_against_the_new_schema() -> None:
            # While old pods still serve, the new release's migration lands: ask an old
            # pod directly, against the new schema.
            poll("the new release's migration is applied", lambda: self.kube.psql(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'tasks' AND column_name = 'next_release_probe'") == "1", 240)
            for pod in old_pods:
                ip = pod["status"].get("podIP")
                try:
                    status_get, _ = load.request(ip, 8080, "GET", "/v1/tasks?limit=1", TOKEN)
                    status_post, created = load.request(ip, 8080, "POST", "/v1/tasks", TOKEN, {"title": "old pod, new schema"})
                    old_answers.append((pod["metadata"]["name"], status_get, status_post))
                except OSError as error:
                    old_answers.append((pod["metadata"]["name"], type(error).__name__, ""))

        returncode, output, summary, rollout_seconds = self._rollout_under_load(
            "upgrade to the next release", ["upgrade", RELEASE, self.chart_ref, "--version", self.chart_version, "--plain-http",
                                            *self._values(self.release_next), "--wait", "--timeout", "5m"],
            during=ask_old_pods_against_the_new_schema)
        self.r.check(f"[{self.tag}] upgrade to the next release (new version, expand migration)", returncode == 0, output.strip()[-1500:])
        answered = [a for a in old_answers if a[1] == 200 and a[2] == 201]
        self.r.check(f"[{self.tag}] old pods answered against the new schema during the upgrade", len(answered) >= 1,
                     f"{old_answers}")
        converged = self._converged_on(self.release_next)
        self.r.check(f"[{self.tag}] every app pod runs the next release", converged is not None,
                     f"{converged:.1f}s after helm returned" if converged is not None else "not within 60s")
        pg_after = self._pg()
        self.r.check(f"[{self.tag}] the PostgreSQL pod is the same pod after the upgrade (UID, no restart)",
                     pg_after["metadata"]["uid"] == pg_before["metadata"]["uid"] and restarts(pg_after) == restarts(pg_before),
                     f"uid {pg_before['metadata']['uid']} -> {pg_after['metadata']['uid']}, restarts {restarts(pg_before)} -> {restarts(pg_after)}")
        self.r.figure("upgrade", helm=self.helm.version, requests=summary["requests"], failed=summary["failed"],
                      p99_ms=summary["p99_ms"], rollout_s=round(rollout_seconds, 1),
                      endpoint_removal_max_s=_largest(summary.get("endpoint_removal_s")),
                      postgres_uid_before=pg_before["metadata"]["uid"], postgres_uid_after=pg_after["metadata"]["uid"])

    def app_crash(self) -> None:
        pods = sorted(self._app_pods(), key=lambda p: p["metadata"]["name"])
        victim, survivor = pods[0], pods[1]
        watcher = load.Watcher(survivor["status"]["podIP"], 8080, TOKEN, limit_seconds=120)
        watcher.start()
        pid = main_process(container_pids(victim["metadata"]["uid"], "tasks-server"))
        if not self.r.check(f"[{self.tag}] app crash: found the container's process", pid is not None):
            watcher.stop()
            return
        before = restarts(victim)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        name = victim["metadata"]["name"]
        back = poll("the crashed app container is restarted and ready", lambda: (
            (p := self.kube.json("pod", name)) and restarts(p) > before and ready(p)), 120)
        recovered = time.monotonic() - killed
        watcher.stop()
        self.r.check(f"[{self.tag}] app crash: the container was restarted", bool(back), f"restarts {before} -> {restarts(self.kube.json('pod', name))}")
        self.r.check(f"[{self.tag}] app crash: the other pod kept answering", not watcher.failures and watcher.answered > 0,
                     f"{watcher.answered} answered, {len(watcher.failures)} failed")
        self.r.figure("app-crash", helm=self.helm.version, restart_to_ready_s=round(recovered, 1), survivor_answers=watcher.answered)

    def _database_outage(self, label: str, disrupt) -> None:
        host, port = self._api()
        apps_before = {p["metadata"]["name"]: restarts(p) for p in self._app_pods()}
        writer = load.Writer(host, port, TOKEN, limit_seconds=300)
        writer.start()
        poll("writes are acknowledged before the outage", lambda: len(writer.acknowledged) >= 20, 60)
        acked_before = len(writer.acknowledged)
        pg_before = self._pg()
        started = time.monotonic()
        disrupt(pg_before)
        poll(f"PostgreSQL is ready again after {label}", lambda: (
            (p := self._pg()) and ready(p) and (p["metadata"]["uid"] != pg_before["metadata"]["uid"] or restarts(p) > restarts(pg_before))), 300)
        outage = time.monotonic() - started
        # The app's readiness follows the database; writes are acknowledged again.
        count = len(writer.acknowledged)
        poll("writes are acknowledged again", lambda: len(writer.acknowledged) > count + 5, 120)
        writer.stop()
        found, missing = writer.read_back()
        self.r.check(f"[{self.tag}] {label}: writes were acknowledged before it", acked_before >= 20, f"{acked_before}")
        self.r.check(f"[{self.tag}] {label}: every acknowledged write is read back", not missing,
                     f"{found} of {len(writer.acknowledged)} read back; missing {missing[:5]}")
        apps_after = {p["metadata"]["name"]: restarts(p) for p in self._app_pods()}
        self.r.check(f"[{self.tag}] {label}: no app pod restarted (liveness does not depend on the database)",
                     apps_after == apps_before, f"{apps_before} -> {apps_after}")
        self.r.figure(label.replace(" ", "-"), helm=self.helm.version, acknowledged=len(writer.acknowledged),
                      refused_during_outage=writer.refused, database_back_s=round(outage, 1))

    def database_pod_deleted(self) -> None:
        self._database_outage("database pod deleted", lambda pod: self.kube.run("delete", "pod", PG_POD, "--wait=false"))

    def database_killed(self) -> None:
        def kill(pod: dict) -> None:
            pid = main_process(container_pids(pod["metadata"]["uid"], "postgres"))
            if pid is None:
                raise RuntimeError("the PostgreSQL server's process was not found")
            os.kill(pid, signal.SIGKILL)

        self._database_outage("database server SIGKILLed", kill)

    def database_down_beyond_liveness(self) -> None:
        """PostgreSQL gone for longer than the app's liveness window: the app pods turn
        unready (readiness follows the database) but are never restarted."""
        probe = self._app_pods()[0]["spec"]["containers"][0]["livenessProbe"]
        window = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3) + probe.get("timeoutSeconds", 1)
        statefulset = PG_POD.rsplit("-", 1)[0]
        observed = {}

        def outage(pod: dict) -> None:
            self.kube.run("scale", "statefulset", statefulset, "--replicas=0")
            poll("the PostgreSQL pod is gone", lambda: self.kube.run("get", "pod", PG_POD, check=False).returncode != 0, 120)
            down_since = time.monotonic()
            before = {p["metadata"]["name"]: restarts(p) for p in self._app_pods()}
            unready_seen = False
            # Watch the app pods for the whole window plus one probe period (a restart
            # ends the watch early; the check after the outage reports it).
            while time.monotonic() < down_since + window + probe.get("periodSeconds", 10):
                pods = self._app_pods()
                unready_seen = unready_seen or (bool(pods) and not any(ready(p) for p in pods))
                if {p["metadata"]["name"]: restarts(p) for p in pods} != before:
                    break
                time.sleep(1)
            observed.update(down_s=time.monotonic() - down_since, unready=unready_seen)
            self.kube.run("scale", "statefulset", statefulset, "--replicas=1")

        self._database_outage("database down longer than the liveness window", outage)
        self.r.check(f"[{self.tag}] the outage outlasted the liveness window", observed.get("down_s", 0) > window,
                     f"down {observed.get('down_s', 0):.1f}s, liveness window {window}s")
        self.r.check(f"[{self.tag}] every app pod turned unready while the database was down (readiness follows it)",
                     observed.get("unready", False))

    def _node_ready(self, name: str) -> str:
        conditions = self.kube.json("node", name)["status"].get("conditions", [])
        return next((c["status"] for c in conditions if c["type"] == "Ready"), "Unknown")

    def node_failure(self) -> None:
        """A node running an app pod (not PostgreSQL's) dies: the control plane notices,
        the app pods are rescheduled on the remaining node, PostgreSQL is untouched and
        no acknowledged write is lost. Then the node returns and its old pods go away."""
        pg = self._pg()
        pg_node = pg["spec"]["nodeName"]
        pods = self._app_pods()
        victims = [p for p in pods if p["spec"].get("nodeName") not in (None, pg_node)]
        placement = [(p["metadata"]["name"], p["spec"].get("nodeName")) for p in pods]
        if not self.r.check(f"[{self.tag}] node failure: an app pod runs on a node without PostgreSQL", bool(victims), f"{placement}"):
            return
        failed = victims[0]["spec"]["nodeName"]
        lost = {p["metadata"]["name"] for p in pods if p["spec"].get("nodeName") == failed}
        host, port = self._api()
        writer = load.Writer(host, port, TOKEN, limit_seconds=600)
        writer.start()
        try:
            poll("writes are acknowledged before the node fails", lambda: len(writer.acknowledged) >= 10, 60)
            started = time.monotonic()
            self.nodes.fail(failed)
            poll(f"{failed} is NotReady", lambda: self._node_ready(failed) != "True", 120, 1)
            not_ready = time.monotonic() - started

            def replaced() -> bool:
                current = [p for p in self._app_pods() if p["metadata"]["name"] not in lost]
                return sum(1 for p in current if ready(p) and p["spec"].get("nodeName") != failed) >= len(pods)

            try:
                poll("replacement app pods ready on the remaining node", replaced, 300, 1)
                rescheduled = time.monotonic() - started
            except TimeoutError:
                rescheduled = None
            count = len(writer.acknowledged)
            poll("writes are acknowledged after the node failed", lambda: len(writer.acknowledged) > count + 5, 120)
        finally:
            writer.stop()
        found, missing = writer.read_back()
        self.r.check(f"[{self.tag}] node failure: the app pods were rescheduled on the remaining node", rescheduled is not None,
                     f"{failed} NotReady after {not_ready:.1f}s, replacements ready after "
                     + (f"{rescheduled:.1f}s" if rescheduled is not None else "more than 300s: "
                        + str([(p["metadata"]["name"], p["spec"].get("nodeName"), ready(p)) for p in self._app_pods()])))
        self.r.check(f"[{self.tag}] node failure: every acknowledged write is read back", not missing,
                     f"{found} of {len(writer.acknowledged)} read back; missing {missing[:5]}")
        pg_after = self._pg()
        self.r.check(f"[{self.tag}] node failure: the PostgreSQL pod on the other node is untouched (UID, no restart)",
                     pg_after["metadata"]["uid"] == pg["metadata"]["uid"] and restarts(pg_after) == restarts(pg),
                     f"uid {pg['metadata']['uid']} -> {pg_after['metadata']['uid']}")
        recovered_at = time.monotonic()
        self.nodes.recover(failed)
        poll(f"{failed} is Ready again", lambda: self._node_ready(failed) == "True", 120, 1)
        # The returning kubelet finds its pods deleted and finishes their deletion.
        try:
            poll("the failed node's old pods are gone", lambda: not lost & {p["metadata"]["name"] for p in self._app_pods()}, 180, 1)
            gone = True
        except TimeoutError:
            gone = False
        self.r.check(f"[{self.tag}] node failure: the lost pods are gone once the node returns", gone,
                     f"{sorted(lost & {p['metadata']['name'] for p in self._app_pods()})}")
        self.r.figure("node-failure", helm=self.helm.version, node=failed, lost_pods=len(lost), not_ready_s=round(not_ready, 1),
                      rescheduled_s=round(rescheduled, 1) if rescheduled is not None else None, acknowledged=len(writer.acknowledged), refused=writer.refused,
                      back_s=round(time.monotonic() - recovered_at, 1))

    def _taint_out_of_service(self, node_name: str, on: bool) -> None:
        taint = f"{OUT_OF_SERVICE}=nodeshutdown:NoExecute" if on else f"{OUT_OF_SERVICE}-"
        self.kube.run("taint", "nodes", node_name, taint, namespaced=False)

    def database_node_failure(self) -> None:
        """PostgreSQL's node dies, and the runbook (docs/runbooks/node-failure.md) is
        followed: the StatefulSet does not replace its pod while the node's fate is
        unknown (two servers on one volume would corrupt it); the operator's
        out-of-service taint has the pod force-deleted and recreated; the new pod waits
        for its node-local volume; once the node is back and the taint removed,
        PostgreSQL recovers from its WAL, no acknowledged write is lost and no app pod is
        restarted (they wait, unready, for the database)."""
        pg = self._pg()
        failed = pg["spec"]["nodeName"]
        survivors = [name for name in self.nodes.names() if name != failed]
        if not self.r.check(f"[{self.tag}] database node failure: a node besides PostgreSQL's keeps serving", bool(survivors),
                            f"PostgreSQL on {failed}, nodes {self.nodes.names()}"):
            return
        # The host reaches Services through one node's kube-proxy: not the one that dies.
        self.nodes.route_services(survivors[0])
        host, port = self._api()
        writer = load.Writer(host, port, TOKEN, limit_seconds=900)
        figures: dict = {}
        tainted = False
        try:
            writer.start()
            poll("writes are acknowledged before PostgreSQL's node fails", lambda: len(writer.acknowledged) >= 10, 60)
            acked_before = len(writer.acknowledged)
            started = time.monotonic()
            self.nodes.fail(failed)
            poll(f"{failed} is NotReady", lambda: self._node_ready(failed) != "True", 120, 1)
            figures["not_ready_s"] = time.monotonic() - started
            # After the unreachable toleration the pod is marked for deletion, but no
            # kubelet confirms it: it stays Terminating, and the StatefulSet waits.
            poll("the PostgreSQL pod is marked for deletion", lambda: self._pg().get("metadata", {}).get("deletionTimestamp"), 180, 1)
            figures["marked_s"] = time.monotonic() - started
            # What is observed is an absence over a span of time: watch the whole span.
            held, hold_until = self._pg(), time.monotonic() + STATEFULSET_HOLD_SECONDS
            while held["metadata"]["uid"] == pg["metadata"]["uid"] and time.monotonic() < hold_until:
                time.sleep(1)
                held = self._pg()
            self.r.check(f"[{self.tag}] database node failure: the StatefulSet does not replace its pod while the node may be alive",
                         held["metadata"]["uid"] == pg["metadata"]["uid"],
                         f"{STATEFULSET_HOLD_SECONDS}s after the pod was marked for deletion: uid {pg['metadata']['uid']} -> {held['metadata']['uid']}")
            # Runbook step 2, the node may return: the out-of-service taint.
            self._taint_out_of_service(failed, True)
            tainted = True
            taint_at = time.monotonic()
            try:
                poll("the StatefulSet recreates its pod", lambda: (p := self._pg()) and p["metadata"]["uid"] != pg["metadata"]["uid"], 120, 1)
                replaced = self._pg()
                figures["replaced_after_taint_s"] = time.monotonic() - taint_at
            except TimeoutError:
                replaced = None
            self.r.check(f"[{self.tag}] database node failure: the out-of-service taint has the pod force-deleted and recreated",
                         replaced is not None, f"uid {self._pg()['metadata'].get('uid')}, still {pg['metadata']['uid']}" if replaced is None else "")
            if replaced is not None:
                self.r.check(f"[{self.tag}] database node failure: the new pod waits for its node-local volume (Pending, on no node)",
                             replaced["status"].get("phase") == "Pending" and not replaced["spec"].get("nodeName"),
                             f"phase {replaced['status'].get('phase')}, node {replaced['spec'].get('nodeName')}")
            apps_during = self._app_pods()
            # The node returns; once it is healthy the taint goes (runbook, step 2).
            self.nodes.recover(failed)
            poll(f"{failed} is Ready again", lambda: self._node_ready(failed) == "True", 180, 1)
            self._taint_out_of_service(failed, False)
            tainted = False
            poll("PostgreSQL is ready again on its node", lambda: (p := self._pg()) and ready(p) and p["metadata"]["uid"] != pg["metadata"]["uid"], 300, 1)
            figures["database_back_s"] = time.monotonic() - started
            count = len(writer.acknowledged)
            poll("writes are acknowledged again", lambda: len(writer.acknowledged) > count + 5, 180)
        finally:
            writer.stop()
            if tainted:
                self._taint_out_of_service(failed, False)
            self.nodes.route_services(self.nodes.first())
        found, missing = writer.read_back()
        self.r.check(f"[{self.tag}] database node failure: writes were acknowledged before it", acked_before >= 10, f"{acked_before}")
        self.r.check(f"[{self.tag}] database node failure: every acknowledged write is read back (WAL recovery)", not missing,
                     f"{found} of {len(writer.acknowledged)} read back; missing {missing[:5]}")
        # Pods that lived through the outage (those on the failed node were replaced by
        # the Deployment like any lost pod): none was restarted by its liveness probe.
        survivors_restarts = {p["metadata"]["name"]: restarts(p) for p in self._app_pods()
                              if p["metadata"]["name"] in {a["metadata"]["name"] for a in apps_during}}
        self.r.check(f"[{self.tag}] database node failure: no app pod restarted while the database was away",
                     bool(survivors_restarts) and not any(survivors_restarts.values()), f"{survivors_restarts}")
        self.r.figure("database-node-failure", helm=self.helm.version, node=failed,
                      **{key: round(value, 1) for key, value in figures.items()},
                      acknowledged=len(writer.acknowledged), refused=writer.refused)

    def _settled(self) -> bool:
        """Every live pod of the namespace (finished ones, such as the kept Helm test pod,
        aside) running and ready, none on its way in or out, and the app on the release
        the scenarios left it on (N+1)."""
        pods = [p for p in self.kube.json("pods").get("items", [])
                if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
        return bool(pods) and all(ready(p) and not p["metadata"].get("deletionTimestamp") for p in pods) \
            and self._all_apps_on(self.release_next)

    def rollback_and_uninstall(self) -> None:
        # The disruptions before it (a node and the database gone and back) may still be
        # settling; a rollout measured under load starts from a healthy release.
        started = time.monotonic()
        try:
            poll("the release settles before the rollback", self._settled, 180, 1)
        except TimeoutError:
            self.r.check(f"[{self.tag}] the release is settled before the rollback", False,
                         "not every pod ready on release N+1 within 180s")
            self._fail_logs()
            raise
        settled_seconds = time.monotonic() - started
        host, port = self._api()
        status, created = load.request(host, port, "POST", "/v1/tasks", TOKEN, {"title": "survives rollback and uninstall"})
        self.r.check(f"[{self.tag}] a task written before the rollback", status == 201, f"HTTP {status}")
        task_id = (created or {}).get("id")
        started = time.monotonic()
        pg_before = self._pg()
        # The rollback is a rolling update of the image (N+1 -> N, same chart): under load too.
        returncode, output, summary, rollout_seconds = self._rollout_under_load(
            "rollback to release N", ["rollback", RELEASE, "1", "--wait", "--timeout", "5m"])
        converged = self._converged_on(self.release_n) if returncode == 0 else None
        self.r.check(f"[{self.tag}] helm rollback to release N", converged is not None,
                     f"every app pod on N {converged:.1f}s after helm returned" if converged is not None
                     else output.strip()[-1500:])
        pg_after = self._pg()
        self.r.check(f"[{self.tag}] the PostgreSQL pod is the same pod after the rollback (UID, no restart)",
                     pg_after["metadata"]["uid"] == pg_before["metadata"]["uid"] and restarts(pg_after) == restarts(pg_before),
                     f"uid {pg_before['metadata']['uid']} -> {pg_after['metadata']['uid']}, restarts {restarts(pg_before)} -> {restarts(pg_after)}")
        status, _ = load.request(host, port, "GET", f"/v1/tasks/{task_id}", TOKEN)
        self.r.check(f"[{self.tag}] release N reads the data after the rollback (schema of N+1 kept)", status == 200, f"HTTP {status}")
        rollback_seconds = time.monotonic() - started
        uninstall = self.helm.run("uninstall", RELEASE, "--wait", "--timeout", "3m")
        self.r.check(f"[{self.tag}] helm uninstall", uninstall.returncode == 0, uninstall.stderr.strip()[-800:])
        pvcs = [p["metadata"]["name"] for p in self.kube.json("pvc")["items"]]
        self.r.check(f"[{self.tag}] the database PVC survives uninstall", any("postgresql" in name for name in pvcs), f"{pvcs}")
        result, _ = self._deploy("install", self.release_n)
        self.r.check(f"[{self.tag}] reinstall on the kept PVC", result.returncode == 0, result.stderr.strip()[-800:])
        self._wait_service_answers(f"/v1/tasks/{task_id}")
        answer = self._last_answer
        status, document = answer.get("reply", (f"no answer: {answer.get('error')}", None))
        self.r.check(f"[{self.tag}] the data survived uninstall", status == 200 and (document or {}).get("title") == "survives rollback and uninstall",
                     f"HTTP {status}")
        self.r.figure("rollback-uninstall", helm=self.helm.version, rollback_s=round(rollback_seconds, 1),
                      rollback_requests=summary["requests"], rollback_failed=summary["failed"], rollback_p99_ms=summary["p99_ms"],
                      settled_s=round(settled_seconds, 1), rollout_s=round(rollout_seconds, 1),
                      endpoint_removal_max_s=_largest(summary.get("endpoint_removal_s")),
                      kept_pvcs=len(pvcs))


def storage_fixtures(kube: Kube, node_names: list[str], count: int = 6) -> None:
    """A default StorageClass and static local volumes on the first node.

    The cluster has no dynamic provisioner (none can be fetched here); the chart's claims
    name no class, so they bind to these through the default class, exactly as they
    would to a provisioner's volumes (WaitForFirstConsumer: bound when the pod is placed).
    """
    manifests = [{
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Retain",
    }]
    for index in range(count):
        directory = paths.STATE / node_names[0] / "volumes" / f"pv{index}"
        directory.mkdir(parents=True, exist_ok=True)
        manifests.append({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"local-pv{index}"},
            "spec": {
                "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "local",
                "local": {"path": str(directory)},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node_names[0]]}]}]}},
            },
        })
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
    result = subprocess.run([kube.kubectl_bin, "--kubeconfig", kube.kubeconfig, "apply", "-f", "-"],
                            input=document, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"storage fixtures: {result.stderr}")


def run_all(info: dict, artefacts: dict, *, expect_network_policy: bool = False, nodes=None, after=None,
            only: set[str] | None = None) -> Results:
    """Every scenario with Helm 4 and the install/upgrade/rollback path with Helm 3.

    ``artefacts``: ``release_n``/``release_next`` (Release), ``postgres_image``
    (registry/repository@digest), ``charts`` (helm major -> (oci ref, version)),
    ``helms`` (major -> binary path). ``nodes``: a ``cluster.NodeControl`` where the
    suite may fail and recover nodes (the cluster it started, with two nodes or more).
    ``after``: more checks on the same cluster, called with the results before the summary
    (the fresh-machine recipes, ``localcluster.fresh``). ``only``: for working on a
    scenario, the names of the Helm 4 scenarios to run after the install (``helm3``
    adds the Helm 3 lifecycle); None runs everything, as the suite does.
    """
    results = Results()
    kube = Kube(info["kubeconfig"], "default")
    classes = kube.json("storageclass")["items"]
    if not any((c["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class") == "true" for c in classes):
        storage_fixtures(kube, info["nodes"])
    registry, rest = artefacts["postgres_image"].split("/", 1)
    repository, digest = rest.split("@", 1)
    postgres_sets = [f"postgresql.image.registry={registry}", f"postgresql.image.repository={repository}",
                     "postgresql.image.tag=17.12", f"postgresql.image.digest={digest}"]
    releases = (artefacts["release_n"], artefacts["release_next"])
    for major, disruptions in (("4", True), ("3", False)):
        if only is not None and major == "3" and "helm3" not in only:
            continue
        chart_ref, chart_version = artefacts["charts"][major]
        Lifecycle(results, artefacts["helms"][major], info["kubeconfig"], chart_ref, chart_version, postgres_sets,
                  releases, disruptions=disruptions, nodes=nodes, only=only).run()
    if expect_network_policy:  # a CNI that enforces NetworkPolicies (the kind workflow's Calico job)
        from . import policy
        policy.install_and_check(results, info["kubeconfig"], artefacts["helms"]["4"], artefacts["charts"]["4"], releases[0], postgres_sets)
    if after is not None:
        after(results)
    print(results.summary(), flush=True)
    return results
