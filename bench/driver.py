#!/usr/bin/env python3
"""`just bench`: tasks-server measured side by side with baselines.

The reference is `raw-actix-http`, a bench-only server with the shape of the fastest actix
entries of the TechEmpower single-query test (raw actix-http, one pipelined connection
per worker, statement prepared at start, row serialised straight into a reused buffer);
the minimal actix-web handlers price the framework; pgbench is the database's ceiling.

Started by scripts/bench.sh after the release build. Standard library only.

Authenticated like any client: tasks-server gets the line of an API token minted with its
own `mint-token` in its secrets directory, and every request (wrk's and the driver's)
carries `Authorization: Bearer <token>`; the baselines ignore the header. The seeded
rows belong to the token's principal, so ours serves them.

One real PostgreSQL (scripts/pg.sh) seeded with 10,000 tasks; tasks-server and the
baselines all running against it; `wrk` at a fixed concurrency and duration; `pgbench`
with the same prepared query. GET by id is measured in alternating rounds
(ours, minimal-pooled, minimal-pipelined, ..., pgbench, then again), so drift on a
shared machine hits every target alike. Writes a Markdown table to stdout,
target/bench/results.json and target/bench/chart.svg.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "bench"
# Where cargo put the release binaries: CARGO_TARGET_DIR when set (as cargo reads it,
# relative to the working directory, which scripts/bench.sh makes the root), else target/.
RELEASE = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target").resolve() / "release"
LUA = ROOT / "bench" / "wrk"

SEED_TASKS = 10_000
ID_PREFIX = "0190a000-0000-7000-8000-"  # seeded ids: UUIDv7 layout, n in the last 12 hex digits


def env_int(name: str, default: int) -> int:
    value = int(os.environ.get(name, default))
    if value <= 0:
        sys.exit(f"bench: {name} must be positive")
    return value


DURATION = env_int("BENCH_DURATION_SECS", 10)
CONNECTIONS = env_int("BENCH_CONNECTIONS", 32)
ROUNDS = env_int("BENCH_ROUNDS", 2)
WRK_THREADS = env_int("BENCH_WRK_THREADS", 2)
WORKERS = env_int("BENCH_WORKERS", 2)
PIPELINE_CLIENTS = env_int("BENCH_PIPELINE_CLIENTS", 2)
POOL_SIZE = (WORKERS * 4) if WORKERS * 4 >= 4 else 4  # tasks-server's default: workers*4 in [4, 32]
POOL_SIZE = min(POOL_SIZE, 32)
PG_PASSWORD = "bench-only-password"
# Which tasks-server scenarios besides GET by id (comma list; default all), and the
# name of the result files (experiments keep the default results apart).
# The concurrency sweep: GET by id at each of these connection counts, ours and the
# TechEmpower-shaped reference side by side (BENCH_SWEEP="" skips it).
SWEEP = [int(x) for x in os.environ.get("BENCH_SWEEP", "8,32,128,512").split(",") if x]
SWEEP_SECS = env_int("BENCH_SWEEP_SECS", 5)
SCENARIOS = [x for x in os.environ.get("BENCH_SCENARIOS", "post,list,mixed").split(",") if x]
RESULTS_NAME = os.environ.get("BENCH_RESULTS_NAME", "results")
# The API token of the bench's principal (set in run(); sent by wrk and http_get).
TOKEN = ""
# Columns of the tasks table the seed sets itself; any other (e.g. the owner) is copied
# from a task created through the API with the token, so seeded rows look like its own.
SEEDED_COLUMNS = {"id", "title", "description", "status", "due_at", "created_at", "updated_at", "version"}


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def http_request(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
    """An API request with the bench's bearer token (the baselines ignore it)."""
    headers = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_get(url: str) -> tuple[int, bytes]:
    return http_request(url)


def mint_token(binary: Path, principal: str) -> tuple[str, str]:
    """`tasks-server mint-token PRINCIPAL --scope tasks:read tasks:write`: (token, line)."""
    res = subprocess.run([str(binary), "mint-token", principal, "--scope", "tasks:read", "tasks:write"],
                         capture_output=True, text=True, timeout=60)
    token = next((w for w in res.stdout.split() if w.startswith("tkn_")), None)
    line = next((ln for ln in res.stdout.splitlines()
                 if len(ln.split()) == 3 and ln.split()[1].startswith("sha256:")), None)
    if res.returncode != 0 or not token or not line:
        sys.exit(f"bench: {binary.name} mint-token failed: {res.stdout}{res.stderr}")
    return token, line


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class Proc:
    """A server process with its log in OUT/logs."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        self.name = name
        (OUT / "logs").mkdir(parents=True, exist_ok=True)
        self.log_path = OUT / "logs" / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def wait_http(self, url: str, timeout: float = 30.0, interval: float = 0.002) -> float:
        """Seconds from spawn until `url` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"bench: {self.name} exited early; log {self.log_path}:\n"
                         + self.log_path.read_text(errors="replace")[-2000:])
            if http_status(url, timeout=0.5) == 200:
                return time.monotonic() - self.started
            time.sleep(interval)
        sys.exit(f"bench: {self.name} not ready within {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class RssSampler:
    """Peak VmRSS of a process while a load runs (sampled every 50 ms)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = 0

    def sample(self) -> None:
        try:
            self.peak = max(self.peak, rss_kib(self.pid)["VmRSS"])
        except (OSError, KeyError):
            pass


def run_bounded(argv: list[str], env: dict[str, str], timeout: float, on_tick=None) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            sys.exit(f"bench: {argv[0]} exceeded {timeout}s: {err}")
        if on_tick:
            on_tick()
        time.sleep(0.05)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def wrk(base_url: str, script: str, ids_file: Path, sampler: RssSampler | None = None,
        connections: int | None = None, duration: int | None = None) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / "wrk-last.json"
    out.unlink(missing_ok=True)
    env = dict(os.environ, BENCH_IDS=str(ids_file), BENCH_OUT=str(out), BENCH_LUA_DIR=str(LUA), BENCH_TOKEN=TOKEN)
    connections = connections or CONNECTIONS
    duration = duration or DURATION
    argv = ["wrk", "-t", str(min(WRK_THREADS, connections)), "-c", str(connections), "-d", f"{duration}s",
            "--timeout", "5s", "-s", str(LUA / script), base_url]
    res = run_bounded(argv, env, duration + 30, sampler.sample if sampler else None)
    if res.returncode != 0 or not out.exists():
        sys.exit(f"bench: wrk failed ({res.returncode}): {res.stderr}\n{res.stdout}")
    raw = json.loads(out.read_text())
    errors = sum(raw["errors"].values())
    secs = raw["duration_us"] / 1e6
    return {
        "rps": raw["requests"] / secs,
        "requests": raw["requests"],
        "errors": errors,
        "error_detail": raw["errors"],
        "p50_ms": raw["latency_us"]["p50"] / 1000,
        "p90_ms": raw["latency_us"]["p90"] / 1000,
        "p99_ms": raw["latency_us"]["p99"] / 1000,
        "max_ms": raw["latency_us"]["max"] / 1000,
    }


def pgbench(pg_port: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="pgbench-", dir=OUT))
    script = work / "get.sql"
    # The statement of GET /v1/tasks/{id}; the id is computed from a random n because
    # pgbench variables are numbers (same single-row primary-key lookup).
    script.write_text(
        "\\set n random(1, %d)\n"
        "SELECT id, title, description, status, due_at, created_at, updated_at, version "
        "FROM tasks WHERE id = ('%s' || lpad(to_hex(CAST(:n AS bigint)), 12, '0'))::uuid;\n" % (SEED_TASKS, ID_PREFIX))
    env = dict(os.environ, PGPASSWORD=PG_PASSWORD)
    # pgbench writes its per-transaction logs into the working directory.
    argv = ["pgbench", "-n", "-M", "prepared", "-f", str(script), "-c", str(CONNECTIONS),
            "-j", str(WRK_THREADS), "-T", str(DURATION), "-l", "--log-prefix", str(work / "tx"),
            "-h", "127.0.0.1", "-p", str(pg_port), "-U", "tasks", "tasks"]
    res = run_bounded(argv, env, DURATION + 30)
    if res.returncode != 0:
        sys.exit(f"bench: pgbench failed: {res.stderr}")
    lat = []
    for f in work.glob("tx*"):
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]))
    shutil.rmtree(work, ignore_errors=True)
    failed = 0
    for line in res.stdout.splitlines():
        if line.startswith("number of failed transactions"):
            failed = int(line.split(":")[1].split()[0])
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(len(lat) * p / 100))] / 1000 if lat else 0.0

    tps = 0.0
    for line in res.stdout.splitlines():
        if line.startswith("tps ="):
            tps = float(line.split()[2])
    return {"rps": tps, "requests": len(lat), "errors": failed, "p50_ms": pct(50),
            "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": lat[-1] / 1000 if lat else 0.0}


def psql(pg_port: int, sql: str) -> str:
    env = dict(os.environ, PGPASSWORD=PG_PASSWORD)
    res = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                          "-p", str(pg_port), "-U", "tasks", "tasks", "-c", sql],
                         env=env, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        sys.exit(f"bench: psql failed: {res.stderr}")
    return res.stdout


def seed(pg_port: int, like_id: str | None = None) -> Path:
    """SEED_TASKS rows; columns beyond SEEDED_COLUMNS are copied from the task `like_id`
    (created through the API with the token), which is then removed."""
    extra = sorted(set(psql(pg_port, "SELECT column_name FROM information_schema.columns "
                                     "WHERE table_schema = current_schema() AND table_name = 'tasks'").split())
                   - SEEDED_COLUMNS)
    if extra and not like_id:
        sys.exit(f"bench: tasks has columns {extra} the seed cannot fill without a task created through the API")
    columns = "".join(f", {c}" for c in extra)
    values = "".join(f", model.{c}" for c in extra)
    model = f", (SELECT * FROM tasks WHERE id = '{like_id}') AS model" if extra else ""
    psql(pg_port, f"""
        INSERT INTO tasks (id, title, description, status, due_at, created_at, updated_at, version{columns})
        SELECT ('{ID_PREFIX}' || lpad(to_hex(n), 12, '0'))::uuid,
               'seeded task ' || n,
               CASE WHEN n % 3 = 0 THEN NULL ELSE 'description of task ' || n END,
               (ARRAY['todo', 'in_progress', 'done'])[1 + n % 3],
               CASE WHEN n % 2 = 0 THEN now() + n * interval '1 minute' END,
               now() - (({SEED_TASKS} - n) * interval '1 second'),
               now() - (({SEED_TASKS} - n) * interval '1 second'),
               1{values}
        FROM generate_series(1, {SEED_TASKS}) AS n{model};
        DELETE FROM tasks WHERE id::text NOT LIKE '{ID_PREFIX}%';
        ANALYZE tasks;""")
    log(f"seeded {SEED_TASKS} tasks" + (f" ({', '.join(extra)} as the bench principal's)" if extra else ""))
    count = int(psql(pg_port, "SELECT count(*) FROM tasks").strip())
    if count != SEED_TASKS:
        sys.exit(f"bench: seeded {count} tasks, expected {SEED_TASKS}")
    ids = OUT / "ids.txt"
    ids.write_text("".join(f"{ID_PREFIX}{n:012x}\n" for n in range(1, SEED_TASKS + 1)))
    return ids


def image_size() -> dict:
    """Size of the runtime image, when one was built by scripts/bench.sh (BENCH_IMAGE_REF)."""
    ref = os.environ.get("BENCH_IMAGE_REF")
    if not ref:
        return {"bytes": None, "note": os.environ.get("BENCH_IMAGE_NOTE", "Docker not available")}
    res = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", ref],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        return {"bytes": None, "note": f"docker image inspect failed: {res.stderr.strip()}"}
    return {"bytes": int(res.stdout.strip()), "note": f"{ref} (FROM scratch, static musl binary)"}


# --------------------------------------------------------------------------------------
# Output


def fmt_ms(v: float) -> str:
    return f"{v:.2f}"


def summarize(runs: list[dict]) -> dict:
    return {
        "rps": statistics.mean(r["rps"] for r in runs),
        "rps_rounds": [round(r["rps"], 1) for r in runs],
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p90_ms": statistics.median(r["p90_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
    }


def svg_chart(results: dict, path: Path) -> None:
    """Grouped bars: throughput (left) and p50/p99 latency (right) per scenario/target."""
    rows = [(f"{s['scenario']}: {s['target']}", s) for s in results["summary"]]
    colors = {"tasks-server": "#1f77b4", "raw-actix-http": "#d62728", "minimal-pooled": "#ff7f0e",
              "minimal-pipelined": "#2ca02c", "minimal-pipelined-per-worker": "#17becf",
              "pgbench": "#7f7f7f"}
    bar_h, gap, top, label_w, panel_w = 18, 8, 60, 300, 320
    height = top + len(rows) * (bar_h + gap) + 50
    width = label_w + panel_w * 2 + 120
    max_rps = max(s["rps"] for _, s in rows) or 1
    max_ms = max(s["p99_ms"] for _, s in rows) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="20" font-size="15" font-weight="bold">tasks-server vs baselines '
           f'({results["config"]["connections"]} connections, {results["config"]["duration_secs"]}s x '
           f'{results["config"]["rounds"]} rounds)</text>',
           f'<text x="{label_w}" y="{top - 12}" font-weight="bold">throughput (req/s)</text>',
           f'<text x="{label_w + panel_w + 60}" y="{top - 12}" font-weight="bold">latency p50 (solid) / '
           f'p99 (light), ms</text>']
    for i, (label, s) in enumerate(rows):
        y = top + i * (bar_h + gap)
        color = colors.get(s["target"], "#9467bd")
        w = panel_w * s["rps"] / max_rps
        out.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{label}</text>')
        out.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        out.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{s["rps"]:.0f}</text>')
        x0 = label_w + panel_w + 60
        w99 = panel_w * s["p99_ms"] / max_ms
        w50 = panel_w * s["p50_ms"] / max_ms
        out.append(f'<rect x="{x0}" y="{y}" width="{w99:.1f}" height="{bar_h}" fill="{color}" '
                   f'fill-opacity="0.35"/>')
        out.append(f'<rect x="{x0}" y="{y + 4}" width="{w50:.1f}" height="{bar_h - 8}" fill="{color}"/>')
        out.append(f'<text x="{x0 + w99 + 4:.1f}" y="{y + 13}">{s["p50_ms"]:.2f} / {s["p99_ms"]:.2f}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def markdown(results: dict) -> str:
    lines = [f"## just bench — {results['config']['connections']} connections, "
             f"{results['config']['duration_secs']} s per run, {results['config']['rounds']} alternating rounds, "
             f"{results['config']['workers']} workers, pool {results['config']['pool_size']}",
             "",
             "| scenario | target | req/s (mean) | rounds | p50 ms | p90 ms | p99 ms | errors |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for s in results["summary"]:
        lines.append(f"| {s['scenario']} | {s['target']} | {s['rps']:.0f} | "
                     f"{' / '.join(f'{r:.0f}' for r in s['rps_rounds'])} | {fmt_ms(s['p50_ms'])} | "
                     f"{fmt_ms(s['p90_ms'])} | {fmt_ms(s['p99_ms'])} | {s['errors']} |")
    lines += ["", "| ratio (GET by id throughput) | value | budget |", "|---|---:|---|"]
    for r in results["ratios"]:
        lines.append(f"| {r['name']} | {r['value'] * 100:.1f}% | {r['budget']} |")
    if results.get("sweep"):
        lines += ["", "| sweep: GET by id, connections | target | req/s | p50 ms | p99 ms | errors | RSS peak MiB |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for point in results["sweep"]:
            lines.append(f"| {point['connections']} | {point['target']} | {point['rps']:.0f} | "
                         f"{fmt_ms(point['p50_ms'])} | {fmt_ms(point['p99_ms'])} | {point['errors']} | "
                         f"{point['rss_peak_kib'] / 1024:.1f} |")
    p = results["process"]
    img = results["image"]
    lines += ["", "| process | value | budget |", "|---|---:|---|",
              f"| start → /readyz 200 (median of {len(p['start_to_ready_ms'])}) | "
              f"{statistics.median(p['start_to_ready_ms']):.0f} ms | ≤ 300 ms |",
              f"| RSS idle | {p['rss_idle_kib'] / 1024:.1f} MiB | ≤ 20 MiB |",
              f"| RSS under load (peak sampled / VmHWM) | {p['rss_load_peak_kib'] / 1024:.1f} / "
              f"{p['rss_hwm_kib'] / 1024:.1f} MiB | ≤ 64 MiB |",
              f"| release binary (glibc, stripped) | {p['binary_bytes'] / 1e6:.2f} MB | — |",
              "| image | " + (f"{img['bytes'] / 1e6:.2f} MB" if img["bytes"] else "n/a") +
              f" | ≤ 25 MB ({img['note']}) |"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------


def main() -> None:
    for tool in ("wrk", "pgbench", "psql"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found")
    ours_bin = RELEASE / "tasks-server"
    pooled_bin = RELEASE / "minimal-pooled"
    pipelined_bin = RELEASE / "minimal-pipelined"
    raw_bin = RELEASE / "raw-actix-http"
    for b in (ours_bin, pooled_bin, pipelined_bin, raw_bin):
        if not b.exists():
            sys.exit(f"bench: {b.name} not built (scripts/bench.sh builds it)")
    OUT.mkdir(parents=True, exist_ok=True)

    pg_dir = OUT / "pg"
    pg_port = free_port()
    if pg_dir.exists():
        subprocess.run([str(ROOT / "scripts/pg.sh"), "stop", str(pg_dir)], timeout=120)
        shutil.rmtree(pg_dir)
    pg_env = dict(os.environ, PGPASSWORD_TASKS=PG_PASSWORD,
                  PG_EXTRA_OPTS="-c max_connections=300")
    subprocess.run([str(ROOT / "scripts/pg.sh"), "start", str(pg_dir), str(pg_port)],
                   env=pg_env, check=True, timeout=180)
    procs: list[Proc] = []
    try:
        run(pg_port, ours_bin, {"raw-actix-http": raw_bin, "minimal-pooled": pooled_bin,
                                "minimal-pipelined": pipelined_bin}, procs)
    finally:
        for p in procs:
            p.stop()
        subprocess.run([str(ROOT / "scripts/pg.sh"), "stop", str(pg_dir)], timeout=120)


def run(pg_port: int, ours_bin: Path, baselines: dict[str, Path], procs: list[Proc]) -> None:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKS_", "OTEL_", "BENCH_"))}
    ours_env = dict(base_env, TASKS_HTTP__HOST="127.0.0.1", TASKS_ADMIN__HOST="127.0.0.1",
                    TASKS_DATABASE__HOST="127.0.0.1", TASKS_DATABASE__PORT=str(pg_port),
                    TASKS_DATABASE__NAME="tasks", TASKS_DATABASE__USER="tasks",
                    TASKS_DATABASE__PASSWORD=PG_PASSWORD, TASKS_DATABASE__SSLMODE="disable",
                    TASKS_HTTP__WORKERS=str(WORKERS), TASKS_SHUTDOWN__DRAIN_DELAY_SECS="0",
                    TASKS_SECRETS_DIR=str(OUT / "secrets"))
    # Any extra production settings for ours (e.g. OTEL_*) come in through BENCH_OURS_ENV.
    for item in os.environ.get("BENCH_OURS_ENV", "").split():
        k, _, v = item.partition("=")
        ours_env[k] = v
    # ours authenticates the bench like any client: the line of a freshly minted token in
    # its secrets directory (auth.api_tokens), the token in every request.
    global TOKEN
    TOKEN, line = mint_token(ours_bin, "bench")
    secrets = OUT / "secrets"
    shutil.rmtree(secrets, ignore_errors=True)
    secrets.mkdir(parents=True, mode=0o700)
    (secrets / "auth.api_tokens").write_text(f"# just bench\n{line}\n")
    log("applying migrations")
    subprocess.run([str(ours_bin), "migrate"], env=ours_env, check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    # One task created through the API: the model of the seeded rows' other columns (owner).
    port, admin = free_port(), free_port()
    p = Proc("tasks-server-seed", [str(ours_bin)],
             dict(ours_env, TASKS_HTTP__PORT=str(port), TASKS_ADMIN__PORT=str(admin)))
    p.wait_http(f"http://127.0.0.1:{admin}/readyz")
    status, body = http_request(f"http://127.0.0.1:{port}/v1/tasks", "POST", b'{"title":"bench model"}')
    p.stop()
    if status != 201:
        sys.exit(f"bench: POST /v1/tasks with the bench token answered {status}: {body[:200]!r}")
    log(f"seeding {SEED_TASKS} tasks")
    ids = seed(pg_port, json.loads(body)["id"])

    # Start to ready: three cold starts of the release binary (database up, schema current).
    starts = []
    for i in range(3):
        port, admin = free_port(), free_port()
        p = Proc(f"tasks-server-start-{i}", [str(ours_bin)],
                 dict(ours_env, TASKS_HTTP__PORT=str(port), TASKS_ADMIN__PORT=str(admin)))
        starts.append(round(p.wait_http(f"http://127.0.0.1:{admin}/readyz") * 1000, 1))
        p.stop()
    log(f"start to ready: {starts} ms")

    port, admin = free_port(), free_port()
    ours = Proc("tasks-server", [str(ours_bin)],
                dict(ours_env, TASKS_HTTP__PORT=str(port), TASKS_ADMIN__PORT=str(admin)))
    procs.append(ours)
    ours.wait_http(f"http://127.0.0.1:{admin}/readyz")
    ours_url = f"http://127.0.0.1:{port}"

    db = f"host=127.0.0.1 port={pg_port} user=tasks password={PG_PASSWORD} dbname=tasks"
    targets = {"tasks-server": ours_url}
    for name, binary, extra in (
            ("raw-actix-http", baselines["raw-actix-http"], {}),
            ("minimal-pooled", baselines["minimal-pooled"], {"BENCH_POOL_SIZE": str(POOL_SIZE)}),
            ("minimal-pipelined", baselines["minimal-pipelined"], {"BENCH_CLIENTS": str(PIPELINE_CLIENTS),
                                                                   "BENCH_PIPELINE_MODE": "shared"}),
            ("minimal-pipelined-per-worker", baselines["minimal-pipelined"],
             {"BENCH_CLIENTS": "1", "BENCH_PIPELINE_MODE": "per-worker"})):
        bport = free_port()
        p = Proc(name, [str(binary)], dict(base_env, BENCH_LISTEN=f"127.0.0.1:{bport}", BENCH_DATABASE=db,
                                           BENCH_WORKERS=str(WORKERS), **extra))
        procs.append(p)
        url = f"http://127.0.0.1:{bport}"
        p.wait_http(f"{url}/v1/tasks/{ID_PREFIX}{1:012x}")
        targets[name] = url

    # Same row, same JSON from every target.
    probe_id = f"{ID_PREFIX}{4242:012x}"
    bodies = {n: http_get(f"{u}/v1/tasks/{probe_id}") for n, u in targets.items()}
    reference = json.loads(bodies["tasks-server"][1])
    for n, (status, body) in bodies.items():
        if status != 200 or json.loads(body) != reference:
            sys.exit(f"bench: {n} answers {status} {body[:200]!r}, not {reference}")

    time.sleep(1)
    idle = rss_kib(ours.proc.pid)["VmRSS"]
    log(f"tasks-server idle RSS {idle} KiB")

    sampler = RssSampler(ours.proc.pid)
    raw: dict[tuple[str, str], list[dict]] = {}

    def record(scenario: str, target: str, result: dict) -> None:
        raw.setdefault((scenario, target), []).append(result)
        log(f"  {scenario:12} {target:30} {result['rps']:9.0f} req/s  p50 {result['p50_ms']:.2f} ms  "
            f"p99 {result['p99_ms']:.2f} ms  errors {result['errors']}")

    baseline_rss: dict[str, int] = {}
    for rnd in range(1, ROUNDS + 1):
        log(f"round {rnd}/{ROUNDS}")
        order = list(targets) if rnd % 2 else list(reversed(targets))
        for name in order:
            s = sampler if name == "tasks-server" else None
            record("GET by id", name, wrk(targets[name], "get.lua", ids, s))
        record("GET by id", "pgbench", pgbench(pg_port))
        for scenario, script in (("POST create", "post.lua"), ("GET list", "list.lua"),
                                 ("mixed 80/20", "mixed.lua")):
            if script.removesuffix(".lua") not in SCENARIOS:
                continue
            record(scenario, "tasks-server", wrk(ours_url, script, ids, sampler))
    sweep = []
    for connections in SWEEP:
        for name in ("tasks-server", "raw-actix-http"):
            point_sampler = RssSampler(procs_by_name(procs, name).proc.pid)
            result = wrk(targets[name], "get.lua", ids, point_sampler, connections, SWEEP_SECS)
            sweep.append({"connections": connections, "target": name, "rps": result["rps"],
                          "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
                          "errors": result["errors"], "rss_peak_kib": point_sampler.peak})
            log(f"  sweep c={connections:<4} {name:16} {result['rps']:9.0f} req/s  "
                f"p99 {result['p99_ms']:.2f} ms  errors {result['errors']}  RSS {point_sampler.peak / 1024:.1f} MiB")
    for p in procs:
        if p.name != "tasks-server":
            baseline_rss[p.name] = rss_kib(p.proc.pid)["VmHWM"]
    hwm = rss_kib(ours.proc.pid)["VmHWM"]

    order_targets = list(targets) + ["pgbench"]
    summary = []
    for scenario in ("GET by id", "POST create", "GET list", "mixed 80/20"):
        for target in order_targets:
            if (scenario, target) in raw:
                summary.append({"scenario": scenario, "target": target, **summarize(raw[(scenario, target)])})
    get = {s["target"]: s["rps"] for s in summary if s["scenario"] == "GET by id"}
    ratios = [
        {"name": "ours / raw-actix-http (TechEmpower-shaped)", "value": get["tasks-server"] / get["raw-actix-http"],
         "budget": "≥ 80% (goal)"},
        {"name": "ours / minimal-pooled", "value": get["tasks-server"] / get["minimal-pooled"],
         "budget": "≥ 85% (floor)"},
        {"name": "ours / minimal-pipelined", "value": get["tasks-server"] / get["minimal-pipelined"],
         "budget": "≥ 80% (goal)"},
        {"name": "ours / minimal-pipelined-per-worker",
         "value": get["tasks-server"] / get["minimal-pipelined-per-worker"], "budget": "(reference)"},
        {"name": "ours / pgbench", "value": get["tasks-server"] / get["pgbench"], "budget": "(reference)"},
        {"name": "minimal-pooled / minimal-pipelined",
         "value": get["minimal-pooled"] / get["minimal-pipelined"], "budget": "(machine: ~50% expected)"},
    ]
    results = {
        "config": {"ours_env": os.environ.get("BENCH_OURS_ENV", ""), "connections": CONNECTIONS, "duration_secs": DURATION, "rounds": ROUNDS,
                   "wrk_threads": WRK_THREADS, "workers": WORKERS, "pool_size": POOL_SIZE,
                   "pipeline_clients": PIPELINE_CLIENTS, "seed_tasks": SEED_TASKS,
                   "cpus": os.cpu_count(), "git_revision": git_revision()},
        "summary": summary,
        "runs": [{"scenario": k[0], "target": k[1], "runs": v} for k, v in raw.items()],
        "ratios": ratios,
        "sweep": sweep,
        "process": {"start_to_ready_ms": starts, "rss_idle_kib": idle,
                    "rss_load_peak_kib": sampler.peak, "rss_hwm_kib": hwm,
                    "baseline_rss_hwm_kib": baseline_rss,
                    "binary_bytes": ours_bin.stat().st_size},
        "image": image_size(),
    }
    (OUT / f"{RESULTS_NAME}.json").write_text(json.dumps(results, indent=2) + "\n")
    chart = "chart" if RESULTS_NAME == "results" else f"{RESULTS_NAME}-chart"
    svg_chart(results, OUT / f"{chart}.svg")
    sys.stdout.write(markdown(results))
    sys.stdout.write(f"\nJSON: target/bench/{RESULTS_NAME}.json, chart: target/bench/{chart}.svg\n")
    failing = [p for p in sweep if p["target"] == "tasks-server" and p["errors"]]
    if failing:
        sys.exit("bench: tasks-server had errors in the sweep at "
                 + ", ".join(f"{p['connections']} connections ({p['errors']})" for p in failing))


def procs_by_name(procs: list[Proc], name: str) -> Proc:
    return next(p for p in procs if p.name == name)


def git_revision() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
