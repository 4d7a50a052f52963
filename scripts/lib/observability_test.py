"""Alerts and dashboard against promtool and a real Prometheus scraping the real service
(called by scripts/test-observability.sh, which installs the tools and builds the binary).

Usage: python observability_test.py --helm H --promtool P --prometheus P --pg-sh S \\
           --server BIN --chart DIR --values FILE --rules-test FILE

1. Render the chart (release tasks, namespace tasks, --values, prometheusRule and
   grafanaDashboard enabled) and take its rule groups and dashboard JSON from the render:
   what is tested is exactly what the chart ships.
2. `promtool check rules`; every alert has a promtool case that fires and one that does
   not (an empty exp_alerts) in --rules-test; `promtool test rules` passes.
3. The dashboard is well formed: unique panel ids and refIds, every variable it uses
   defined, the Prometheus data source variable everywhere. Every alert's runbook_url
   names a section of docs/runbooks/alerts.md; the backup alerts select the CronJob the
   chart renders (backup.enabled) and the Jobs it creates.
4. Live: a throwaway PostgreSQL (scripts/pg.sh), the tasks-server binary on loopback
   ports, a kube-state-metrics fixture (static series for the release's pods, Jobs and
   CronJob: the service cannot export them, and no cluster runs here) and a real Prometheus
   scraping both every second with the rendered rules loaded. A short bounded load
   (a few hundred requests of every kind) runs against the API, then through the HTTP API:
   - every rule is loaded and evaluates without error, every recording rule has data;
   - every dashboard query and variable query parses and returns data;
   - every alert expression parses; its threshold comparisons rightly return nothing on a
     healthy service, so each is split at its top-level `or`, `and`/`unless` and
     comparison operators, constants are dropped, and every remaining operand (the
     ratio or metric the alert compares) must return data;
   - every metric any query names is exported by the service, recorded by the chart's
     rules, `up`, or one of the declared kube-state-metrics series; a canary query
     naming a metric the service does not export must be caught.
Prints PASS/FAIL per check and ends with "N passed, M failed". Everything started is
stopped; every wait polls with a deadline.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

RELEASE, NAMESPACE = "tasks", "tasks"
JOB = "tasks-admin"  # the ServiceMonitor's job label: the admin Service's name
POD = "tasks-7d4b9c8f6d-x2x4q"  # a Deployment pod name, as the rules' pod patterns expect
OVERALL_DEADLINE_S = 420
LOAD_ROUNDS, LOAD_PER_ROUND = 8, 40  # 320 requests, one round per second or so
# kube-state-metrics series the rules use (the only metrics not from the service).
KSM_METRICS = {
    "kube_pod_status_ready", "kube_pod_container_status_restarts_total", "kube_job_status_failed",
    "kube_job_status_succeeded", "kube_job_status_active", "kube_job_status_start_time",
    "kube_cronjob_status_last_successful_time",
}
# Dashboard variables as a user of this release would pick them.
VARIABLES = {"namespace": NAMESPACE, "job": JOB, "pod": ".*", "latency_threshold": "0.25",
             "__rate_interval": "1m"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
            "group_right", "inf", "nan", "atan2"}

results = {"passed": 0, "failed": 0}


def check(name, problems):
    if problems:
        results["failed"] += 1
        print(f"FAIL  {name}", flush=True)
        for p in problems[:20]:
            print(f"      | {p}", flush=True)
    else:
        results["passed"] += 1
        print(f"PASS  {name}", flush=True)


# ---------------------------------------------------------------------------------------
# PromQL: metric names and top-level operands, from the text (no parser needed)
# ---------------------------------------------------------------------------------------
def _mask(expr):
    """expr with everything inside strings, {}, [] and () replaced by spaces (same length)."""
    out, depth, quote, i = [], 0, None, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            out.append(" ")
            if c == "\\":
                out.append(" ")
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
            out.append(" ")
        elif c in "([{":
            depth += 1
            out.append(" " if depth > 1 else c)
        elif c in ")]}":
            depth -= 1
            out.append(" " if depth > 0 else c)
        else:
            out.append(c if depth == 0 else " ")
        i += 1
    return "".join(out)


def metric_names(expr):
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", text)
    names = set()
    for m in re.finditer(r"(?<![0-9A-Za-z_:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def _strip_parens(expr):
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")"):
        depth = 0
        for i, c in enumerate(_mask_strings_only(expr)):
            depth += c == "("
            depth -= c == ")"
            if depth == 0 and i < len(expr) - 1:
                return expr
        expr = expr[1:-1].strip()
    return expr


def _mask_strings_only(expr):
    return re.sub(r'"(?:\\.|[^"\\])*"', lambda m: " " * len(m.group(0)), expr)


MODIFIERS = re.compile(r"^\s*(bool\s+)?((on|ignoring)\s*\([^)]*\)\s*)?((group_left|group_right)\s*(\([^)]*\))?\s*)?")
LEVELS = [r"\bor\b", r"\b(and|unless)\b", r"==|!=|>=|<=|>|<"]


def operands(expr):
    """The non-constant operands an expression compares or combines (recursively)."""
    expr = _strip_parens(expr)
    masked = _mask(expr)
    for level in LEVELS:
        cuts = [(m.start(), m.end()) for m in re.finditer(level, masked)]
        if not cuts:
            continue
        parts, start = [], 0
        for s, e in cuts:
            parts.append(expr[start:s])
            start = e
        parts.append(expr[start:])
        found = []
        for p in parts:
            p = MODIFIERS.sub("", p, count=1)
            found += operands(p)
        return found
    if re.fullmatch(r"[\d.\s()+\-*/%^eE]+", expr):
        return []
    return [expr]


def substitute(expr):
    for k, v in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + k + "}", v).replace("$" + k, v)
    return expr


# ---------------------------------------------------------------------------------------
# Rendering, promtool, dashboard structure
# ---------------------------------------------------------------------------------------
def render(a):
    cmd = [a.helm, "template", RELEASE, a.chart, "--namespace", NAMESPACE, "-f", a.values,
           "--set", "prometheusRule.enabled=true", "--set", "grafanaDashboard.enabled=true"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    boards = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    if len(rules) != 1 or len(boards) != 1:
        raise RuntimeError(f"want one PrometheusRule and one dashboard ConfigMap, got {len(rules)} and {len(boards)}")
    return rules[0]["spec"]["groups"], json.loads(boards[0]["data"]["tasks.json"]), boards[0]


def runbook_checks(a):
    """With prometheusRule.runbookBaseURL set, every alert links a section of alerts.md that exists."""
    cmd = [a.helm, "template", RELEASE, a.chart, "--namespace", NAMESPACE, "-f", a.values,
           "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.runbookBaseURL=https://runbooks.example/docs/runbooks/",
           "--show-only", "templates/prometheusrule.yaml"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        check("runbook links render", [out.stderr.strip()])
        return
    doc = yaml.safe_load(out.stdout)
    runbooks = os.path.join(os.path.dirname(os.path.abspath(a.rules_test)), "..", "..", "..", "docs", "runbooks", "alerts.md")
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.*)$", open(runbooks).read(), re.M)}
    problems = []
    for g in doc["spec"]["groups"]:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            url = r.get("annotations", {}).get("runbook_url", "")
            if not url.startswith("https://runbooks.example/docs/runbooks/alerts.md#"):
                problems.append(f"{r['alert']}: runbook_url {url!r}")
            elif url.split("#", 1)[1] not in anchors:
                problems.append(f"{r['alert']}: docs/runbooks/alerts.md has no section #{url.split('#', 1)[1]}")
    check("every alert's runbook_url names a section of docs/runbooks/alerts.md", problems)


def backup_name_checks(a):
    """The backup alerts key on the backup CronJob's name: render it and match them up."""
    cmd = [a.helm, "template", RELEASE, a.chart, "--namespace", NAMESPACE, "-f", a.values,
           "--set", "prometheusRule.enabled=true", "--set", "backup.enabled=true"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        check("the backup CronJob renders with the alerts", [out.stderr.strip()])
        return
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    cronjobs = [d["metadata"]["name"] for d in docs if d["kind"] == "CronJob"]
    rules = {r["alert"]: r["expr"] for d in docs if d["kind"] == "PrometheusRule"
             for g in d["spec"]["groups"] for r in g["rules"] if "alert" in r}
    problems = [] if len(cronjobs) == 1 else [f"CronJobs rendered: {cronjobs}"]
    for cj in cronjobs[:1]:
        job = f"{cj}-29400000"  # a Job the CronJob controller creates: <cronjob>-<scheduled minute>
        patterns = re.findall(r'job_name=~"([^"]+)"', rules.get("TasksBackupFailed", ""))
        if not patterns or not all(re.fullmatch(p, job) for p in patterns):
            problems.append(f"TasksBackupFailed's job_name patterns {patterns} miss {job}")
        if f'cronjob="{cj}"' not in rules.get("TasksBackupTooOld", ""):
            problems.append(f'TasksBackupTooOld does not select cronjob="{cj}"')
    check(f"the backup alerts select the rendered CronJob {cronjobs[:1]} and its Jobs", problems)


def promtool_checks(a, groups, work):
    rules_file = os.path.join(work, "rules.yaml")
    with open(rules_file, "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    out = subprocess.run([a.promtool, "check", "rules", rules_file], capture_output=True, text=True, timeout=60)
    check("promtool check rules: the rendered rule groups are valid",
          [] if out.returncode == 0 else (out.stdout + out.stderr).strip().splitlines())
    alerts = [r["alert"] for g in groups for r in g["rules"] if "alert" in r]
    spec = yaml.safe_load(open(a.rules_test))
    fires, quiet = set(), set()
    for t in spec.get("tests", []):
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    for alert in alerts:
        missing = [w for w, s in (("a case where it fires", fires), ("a case where it does not", quiet)) if alert not in s]
        check(f"promtool cases for {alert}: fires and does not fire", [f"no {m}" for m in missing])
    unknown = sorted((fires | quiet) - set(alerts))
    check("promtool cases name only alerts the chart renders", [f"unknown alert {u}" for u in unknown])
    test_file = os.path.join(work, "alerts.test.yaml")
    shutil.copy(a.rules_test, test_file)
    started = time.monotonic()
    out = subprocess.run([a.promtool, "test", "rules", test_file], capture_output=True, text=True, timeout=300, cwd=work)
    check(f"promtool test rules: {sum(len(t.get('alert_rule_test', [])) for t in spec['tests'])} cases "
          f"({time.monotonic() - started:.1f}s)", [] if out.returncode == 0 else (out.stdout + out.stderr).strip().splitlines())
    return alerts


def dashboard_queries(board):
    """(title, expr) of every panel target, and (name, label, metric selector) of every query variable."""
    panels = []
    for p in board.get("panels", []):
        panels.append(p)
        panels += p.get("panels", [])
    targets = [(f"{p['title']} [{t['refId']}]", t["expr"]) for p in panels for t in p.get("targets", [])]
    variables = []
    for v in board.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)\s*", q)
            variables.append((v["name"], m.group(2) if m else None, m.group(1) if m else q))
    return panels, targets, variables


def dashboard_checks(board, configmap):
    problems = []
    labels = configmap["metadata"].get("labels", {})
    if labels.get("grafana_dashboard") != "1":
        problems.append(f"ConfigMap labels {labels} lack grafana_dashboard: \"1\"")
    panels, targets, variables = dashboard_queries(board)
    ids = [p["id"] for p in panels]
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate panel ids: {ids}")
    defined = {v["name"] for v in board["templating"]["list"]} | {"__rate_interval", "__interval", "__range"}
    for p in panels:
        if p["type"] == "row":
            continue
        refs = [t["refId"] for t in p.get("targets", [])]
        if not refs or len(refs) != len(set(refs)):
            problems.append(f"panel {p['title']!r}: refIds {refs}")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {p['title']!r} does not use the ${{datasource}} variable")
        g = p.get("gridPos", {})
        if g.get("x", 0) + g.get("w", 0) > 24:
            problems.append(f"panel {p['title']!r} is wider than the grid")
    for name, expr in targets + [(n, q) for n, _, q in variables]:
        for used in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expr):
            if used not in defined:
                problems.append(f"{name}: variable ${used} is not defined")
    for name, label, _ in variables:
        if label is None:
            problems.append(f"variable {name} is not a label_values() query")
    check(f"dashboard is well formed ({len(panels)} panels, {len(targets)} queries, {len(variables)} variable queries)",
          problems)


# ---------------------------------------------------------------------------------------
# Live: PostgreSQL, tasks-server, kube-state-metrics fixture, Prometheus, load
# ---------------------------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, condition, timeout, interval=0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception as e:  # noqa: BLE001 - a failed poll is retried until the deadline
            last = e
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout}s (last error: {last})")


def http(method, url, body=None, headers=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    headers = dict(headers or {})
    if data is not None:
        headers.setdefault("content-type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def ksm_fixture_text():
    now = int(time.time())
    ns = NAMESPACE
    lines = [
        f'kube_pod_status_ready{{namespace="{ns}",pod="{POD}",condition="true"}} 1',
        f'kube_pod_status_ready{{namespace="{ns}",pod="{POD}",condition="false"}} 0',
        f'kube_pod_status_ready{{namespace="{ns}",pod="{RELEASE}-postgresql-0",condition="true"}} 1',
        f'kube_pod_container_status_restarts_total{{namespace="{ns}",pod="{POD}",container="tasks-server"}} 0',
        f'kube_pod_container_status_restarts_total{{namespace="{ns}",pod="{RELEASE}-postgresql-0",container="postgresql"}} 0',
        f'kube_cronjob_status_last_successful_time{{namespace="{ns}",cronjob="{RELEASE}-backup"}} {now - 3600}',
    ]
    for job, start, failed, ok in ((f"{RELEASE}-backup-29000000", now - 90000, 0, 1), (f"{RELEASE}-backup-29001440", now - 3600, 0, 1)):
        lines += [
            f'kube_job_status_start_time{{namespace="{ns}",job_name="{job}"}} {start}',
            f'kube_job_status_failed{{namespace="{ns}",job_name="{job}"}} {failed}',
            f'kube_job_status_succeeded{{namespace="{ns}",job_name="{job}"}} {ok}',
            f'kube_job_status_active{{namespace="{ns}",job_name="{job}"}} 0',
        ]
    return "\n".join(lines) + "\n"


class Fixture(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 - the http.server API
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def load(api, token):
    """A bounded mix of every kind of request (and some without a token); returns {status: count}."""
    statuses = {}
    auth = {"authorization": f"Bearer {token}"}

    def http(method, url, body=None, headers=None):  # noqa: F811 - the authenticated caller
        return globals()["http"](method, url, body, dict(auth, **(headers or {})))

    def note(status):
        statuses[status] = statuses.get(status, 0) + 1

    deadline = time.monotonic() + 120
    for _ in range(LOAD_ROUNDS):
        started = time.monotonic()
        for i in range(LOAD_PER_ROUND // 8):
            s, body, headers = http("POST", f"{api}/v1/tasks", {"title": f"observability {i}", "description": "load"})
            note(s)
            task = json.loads(body) if s == 201 else None
            note(http("GET", f"{api}/v1/tasks?limit=5")[0])
            if task:
                note(http("GET", f"{api}/v1/tasks/{task['id']}")[0])
                s, _, h = http("PATCH", f"{api}/v1/tasks/{task['id']}", {"status": "done"},
                               {"content-type": "application/merge-patch+json"})
                note(s)
                note(http("DELETE", f"{api}/v1/tasks/{task['id']}")[0])
            note(http("GET", f"{api}/v1/tasks/0190d6c4-0000-7000-8000-000000000000")[0])
            note(http("POST", f"{api}/v1/tasks", {"title": ""})[0])
            note(http("GET", f"{api}/no/such/route")[0])
            note(globals()["http"]("GET", f"{api}/v1/tasks")[0])  # no token: 401
        if time.monotonic() > deadline:
            break
        time.sleep(max(0.0, 1.1 - (time.monotonic() - started)))
    return statuses


class Live:
    def __init__(self, a, work):
        self.a, self.work, self.procs = a, work, []
        self.pg_dir = os.path.join(work, "pg")
        self.pg_started = False
        self.fixture = None

    def start(self, name, cmd, env=None, log=None):
        logf = open(os.path.join(self.work, f"{name}.log"), "w")
        p = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, p, logf))
        return p

    def log_tail(self, name, n=15):
        try:
            return open(os.path.join(self.work, f"{name}.log")).read().splitlines()[-n:]
        except OSError:
            return []

    def stop(self):
        for name, p, logf in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
            logf.close()
        self.procs = []
        if self.fixture:
            self.fixture.shutdown()
            self.fixture.server_close()
            self.fixture = None
        if self.pg_started:
            subprocess.run([self.a.pg_sh, "stop", self.pg_dir], capture_output=True, timeout=60)
            self.pg_started = False


def prom_query(prom, query):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, body, _ = http("GET", url, timeout=30)
    data = json.loads(body)
    if data.get("status") != "success":
        return None, f"{data.get('errorType')}: {data.get('error')}"
    return data["data"]["result"], None


def evaluate(name, prom, expr, exported, recorded, must_return=True):
    """Problems of one query: parse/eval errors, unknown metric names, no data."""
    problems = []
    for metric in sorted(metric_names(expr)):
        if metric not in exported and metric not in recorded and metric not in KSM_METRICS and metric != "up":
            problems.append(f"names {metric}, which the service does not export (nor the rules record)")
    result, err = prom_query(prom, expr)
    if err:
        problems.append(f"query failed: {err}")
    elif must_return and not result:
        problems.append("returned no data")
    return problems


def live_checks(a, groups, board, work):
    live = Live(a, work)
    try:
        pg_port, api_port, admin_port, ksm_port, prom_port = (free_port() for _ in range(5))
        password = "observability-test"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKS_", "OTEL_"))}
        pg_env = dict(env, PGPASSWORD_TASKS=password, PG_DURABLE="0")
        out = subprocess.run([a.pg_sh, "start", live.pg_dir, str(pg_port)], env=pg_env,
                             capture_output=True, text=True, timeout=180)
        live.pg_started = True
        if out.returncode != 0:
            check("throwaway PostgreSQL starts (scripts/pg.sh)", out.stderr.strip().splitlines()[-10:])
            return
        secrets = os.path.join(work, "secrets")
        os.makedirs(secrets, exist_ok=True)
        # Every /v1/* request needs a bearer token: an API token minted by the binary, its
        # hashed line in the secrets directory (the file name is the key auth.api_tokens).
        out = subprocess.run([a.server, "mint-token", "observability", "--scope", "tasks:read", "tasks:write"],
                             env=env, capture_output=True, text=True, timeout=60)
        token = re.search(r"\b(tkn_[A-Za-z0-9_-]+)", out.stdout)
        line = re.search(r"^observability sha256:[0-9a-f]{64} \S+$", out.stdout, re.M)
        if out.returncode != 0 or not token or not line:
            check("tasks-server mint-token gives an API token and its line", [out.stdout, out.stderr])
            return
        with open(os.path.join(secrets, "auth.api_tokens"), "w") as f:
            f.write(line.group(0) + "\n")
        server_env = dict(env, TASKS_DATABASE__HOST="127.0.0.1", TASKS_DATABASE__PORT=str(pg_port),
                          TASKS_DATABASE__PASSWORD=password, TASKS_DATABASE__SSLMODE="disable",
                          TASKS_HTTP__HOST="127.0.0.1", TASKS_HTTP__PORT=str(api_port),
                          TASKS_ADMIN__HOST="127.0.0.1", TASKS_ADMIN__PORT=str(admin_port),
                          TASKS_SECRETS_DIR=secrets, TASKS_LOG__FORMAT="json", TASKS_LOG__LEVEL="warn",
                          TASKS_SHUTDOWN__DRAIN_DELAY_SECS="0", TASKS_SHUTDOWN__TIMEOUT_SECS="5")
        server = live.start("tasks-server", [a.server], env=server_env)
        admin, api = f"http://127.0.0.1:{admin_port}", f"http://127.0.0.1:{api_port}"
        try:
            wait_for("tasks-server ready", lambda: server.poll() is None and http("GET", f"{admin}/readyz", timeout=2)[0] == 200, 90)
            check(f"tasks-server (debug build) ready on 127.0.0.1:{api_port}/{admin_port} against PostgreSQL on {pg_port}", [])
        except TimeoutError as e:
            check("tasks-server starts and becomes ready", [str(e)] + live.log_tail("tasks-server"))
            return

        Fixture.body = ksm_fixture_text().encode()
        live.fixture = ThreadingHTTPServer(("127.0.0.1", ksm_port), Fixture)
        threading.Thread(target=live.fixture.serve_forever, daemon=True).start()

        rules_file = os.path.join(work, "live-rules.yaml")
        with open(rules_file, "w") as f:
            yaml.safe_dump({"groups": groups}, f, sort_keys=False)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules_file],
            "scrape_configs": [
                # The labels the chart's ServiceMonitor gives the admin Service's targets.
                {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{admin_port}"], "labels": {
                    "namespace": NAMESPACE, "pod": POD, "service": JOB, "container": "tasks-server", "endpoint": "admin"}}]},
                {"job_name": "kube-state-metrics", "honor_labels": True,
                 "static_configs": [{"targets": [f"127.0.0.1:{ksm_port}"]}]},
            ],
        }
        config_file = os.path.join(work, "prometheus.yml")
        with open(config_file, "w") as f:
            yaml.safe_dump(config, f)
        prom = f"http://127.0.0.1:{prom_port}"
        prometheus = live.start("prometheus", [a.prometheus, f"--config.file={config_file}",
                                               f"--storage.tsdb.path={os.path.join(work, 'tsdb')}",
                                               f"--web.listen-address=127.0.0.1:{prom_port}",
                                               "--storage.tsdb.retention.time=1h"])
        try:
            wait_for("Prometheus ready", lambda: prometheus.poll() is None and http("GET", f"{prom}/-/ready", timeout=2)[0] == 200, 60)
            wait_for("both targets up", lambda: len((prom_query(prom, "up == 1")[0] or [])) == 2, 30)
        except TimeoutError as e:
            check("Prometheus starts and scrapes tasks-server and the fixture", [str(e)] + live.log_tail("prometheus"))
            return
        check("real Prometheus scrapes tasks-server and the kube-state-metrics fixture every second", [])

        started = time.monotonic()
        statuses = load(api, token.group(1))
        total = sum(statuses.values())
        unexpected = {s: n for s, n in statuses.items() if s >= 500}
        check(f"bounded load: {total} requests in {time.monotonic() - started:.1f}s, statuses {dict(sorted(statuses.items()))}",
              [f"5xx answers: {unexpected}"] if unexpected else ([] if total >= 200 else ["fewer than 200 requests"]))
        # Two more scrapes and rule evaluations after the load, then every query sees it.
        loaded_at = time.time()

        def rules_evaluated():
            _, body, _ = http("GET", f"{prom}/api/v1/rules", timeout=5)
            rs = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
            return rs and all(r.get("lastEvaluation", "").startswith("2") and
                              _ts(r["lastEvaluation"]) > loaded_at + 2 for r in rs)
        try:
            wait_for("every rule evaluated after the load", rules_evaluated, 30)
        except TimeoutError as e:
            check("rules evaluated after the load", [str(e)])
            return
        _, body, _ = http("GET", f"{prom}/api/v1/rules", timeout=5)
        rule_state = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
        bad = [f"{r.get('name')}: {r.get('health')} {r.get('lastError', '')}" for r in rule_state if r.get("health") != "ok"]
        want = sum(len(g["rules"]) for g in groups)
        check(f"Prometheus loaded all {want} rules and each evaluates without error",
              bad + ([] if len(rule_state) == want else [f"{len(rule_state)} rules loaded, {want} rendered"]))

        exported_result, _ = prom_query(prom, f'count by (__name__) ({{job="{JOB}"}})')
        # Prometheus adds up and scrape_* to every target: they are not the service's.
        synthetic = re.compile(r"^(up|scrape_.*)$")
        exported = {r["metric"]["__name__"] for r in exported_result or []} - {"up"}
        exported = {n for n in exported if not synthetic.match(n)}
        ksm_result, _ = prom_query(prom, 'count by (__name__) ({job="kube-state-metrics"})')
        served = {r["metric"]["__name__"] for r in ksm_result or []}
        served = {n for n in served if not synthetic.match(n)}
        check(f"the service exports {len(exported)} metric names; the fixture serves exactly the "
              f"{len(KSM_METRICS)} declared kube-state-metrics names",
              [] if served == KSM_METRICS else [f"fixture serves {sorted(served)}, declared {sorted(KSM_METRICS)}"])
        recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
        release = f'{NAMESPACE}/{RELEASE}'
        for g in groups:
            for r in g["rules"]:
                if "record" in r:
                    check(f"recording rule {r['record']} has data (and names only exported metrics)",
                          evaluate(r["record"], prom, r["expr"], exported, recorded) +
                          evaluate(r["record"], prom, f'{r["record"]}{{tasks_release="{release}"}}', exported, recorded))
        for g in groups:
            for r in g["rules"]:
                if "alert" not in r:
                    continue
                problems = evaluate(r["alert"], prom, r["expr"], exported, recorded, must_return=False)
                ops = operands(r["expr"])
                if not ops:
                    problems.append("no operand found to evaluate")
                for op in ops:
                    problems += [f"operand `{' '.join(op.split())[:110]}`: {p}" for p in
                                 evaluate(r["alert"], prom, op, exported, recorded)]
                check(f"alert {r['alert']}: parses; its {len(ops)} compared operand(s) return data", problems)
        panels, targets, variables = dashboard_queries(board)
        for title, expr in targets:
            check(f"dashboard query {title}: returns data", evaluate(title, prom, substitute(expr), exported, recorded))
        for name, label, selector in variables:
            q = f"count by ({label}) ({substitute(selector)})"
            check(f"dashboard variable ${name}: label_values returns values", evaluate(name, prom, q, exported, recorded))
        canary = "sum(rate(http_server_requests_total[1m]))"
        caught = evaluate("canary", prom, canary, exported, recorded)
        check("canary: a query naming a metric the service does not export fails the check",
              [] if caught else [f"{canary} was accepted"])
    finally:
        live.stop()


def _ts(rfc3339):
    from datetime import datetime
    text = re.sub(r"(\.\d{6})\d*", r"\1", rfc3339.replace("Z", "+00:00"))
    return datetime.fromisoformat(text).timestamp()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("helm", "promtool", "prometheus", "pg-sh", "server", "chart", "values", "rules-test"):
        p.add_argument(f"--{flag}", required=True)
    p.add_argument("--skip-live", action="store_true", help="render, promtool and dashboard checks only")
    a = p.parse_args()

    def on_alarm(*_):
        raise TimeoutError(f"the observability test exceeded {OVERALL_DEADLINE_S}s")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(OVERALL_DEADLINE_S)
    with tempfile.TemporaryDirectory(prefix="tasks-observability-") as work:
        os.chmod(work, 0o755)  # pg.sh runs the server as an unprivileged user under root
        try:
            groups, board, configmap = render(a)
        except RuntimeError as e:
            check("the chart renders the PrometheusRule and the dashboard ConfigMap", [str(e)])
            groups = None
        if groups is not None:
            check(f"the chart renders the PrometheusRule ({sum(len(g['rules']) for g in groups)} rules) "
                  f"and the dashboard ConfigMap", [])
            promtool_checks(a, groups, work)
            runbook_checks(a)
            backup_name_checks(a)
            dashboard_checks(board, configmap)
            if not a.skip_live:
                try:
                    live_checks(a, groups, board, work)
                except TimeoutError as e:
                    check("live checks finish in time", [str(e)])
    signal.alarm(0)
    print(f"{results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
