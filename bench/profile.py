#!/usr/bin/env python3
"""Where GET /v1/tasks/{id} spends its time: instructions per request under callgrind and
a flamegraph from perf samples, for tasks-server and the raw-actix-http reference.

Uses the binaries `just bench` built (target/release, or $CARGO_TARGET_DIR/release; build
them with symbols kept: CARGO_PROFILE_RELEASE_STRIP=none ./just bench), the same PostgreSQL
set-up, seed and wrk scripts as bench/driver.py. Not part of `just test`; nothing here is
timed against a budget. Outputs go to PROFILE_OUT (target/bench/profile):

* `callgrind.<target>.out` and `callgrind.<target>.txt` (callgrind_annotate, inclusive):
  the server runs under valgrind with one worker, is zeroed after a warm-up, serves
  wrk for PROFILE_SECS (20) at 8 connections, then dumps: instructions / requests served
  is the figure reported, repeatable on a busy machine because it counts instructions
  (user space only: system calls are not in it);
* `<target>.svg`: perf (cpu-clock samples at 249 Hz with DWARF call stacks, kernel
  included) while wrk runs at PROFILE_PERF_CONNECTIONS (32) connections for PROFILE_PERF_SECS (10), folded and drawn
  by inferno (`cargo install inferno`);
* `stat` (not part of `all`): what callgrind does not count, from software counters and
  tracepoints (no hardware counter needed). Each target runs as `just bench` runs it
  (2 workers), alternating over PROFILE_STAT_ROUNDS (2) rounds of wrk at
  PROFILE_STAT_CONNECTIONS (32) connections for PROFILE_STAT_SECS (10); during each,
  `perf stat` counts the server's task-clock (user + kernel CPU time), context
  switches (split into voluntary and involuntary from /proc), CPU migrations and system
  calls per thread, which CPU each busy thread is on halfway through (logged per round),
  and PostgreSQL's task-clock; then `perf trace -s` names the system calls (a shorter run,
  PROFILE_TRACE_SECS, 5) and `perf record` splits the server's samples between user and
  kernel space. Per request figures go to `stat.txt` and `stat.json`.

Usage: python3 bench/profile.py [callgrind|perf|stat|all] [ours|raw|both|alt|a,b,...]
`alt` is another tasks-server binary, PROFILE_ALT_BIN (an A/B comparison of a change, e.g.
`stat ours,alt,raw`), or ours' binary with PROFILE_ALT_ENV's extra settings (space-separated
`KEY=VALUE`, e.g. `RUST_LOG=warn` to take one feature out: an ablation); PROFILE_OURS_BIN
replaces ours' binary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import driver  # noqa: E402  (the bench's own helpers: PostgreSQL, seed, wrk)

ROOT = driver.ROOT
RELEASE = driver.RELEASE  # honours CARGO_TARGET_DIR, as cargo does
PROFILE_OUT = Path(os.environ.get("PROFILE_OUT", ROOT / "target" / "bench" / "profile"))
SECS = int(os.environ.get("PROFILE_SECS", "20"))
PERF_SECS = int(os.environ.get("PROFILE_PERF_SECS", "10"))
STAT_SECS = int(os.environ.get("PROFILE_STAT_SECS", "10"))
PERF_CONNECTIONS = int(os.environ.get("PROFILE_PERF_CONNECTIONS", "32"))
STAT_ROUNDS = int(os.environ.get("PROFILE_STAT_ROUNDS", "2"))
STAT_CONNECTIONS = int(os.environ.get("PROFILE_STAT_CONNECTIONS", "32"))
TRACE_SECS = int(os.environ.get("PROFILE_TRACE_SECS", "5"))
OURS_BIN = Path(os.environ.get("PROFILE_OURS_BIN") or RELEASE / "tasks-server")
ALT_ENV = dict(kv.split("=", 1) for kv in os.environ.get("PROFILE_ALT_ENV", "").split())
ALT_BIN = (Path(os.environ["PROFILE_ALT_BIN"]) if os.environ.get("PROFILE_ALT_BIN")
           else OURS_BIN if ALT_ENV else None)
SYSCALLS = ["recvfrom", "sendto", "epoll_wait", "futex", "write", "writev", "read", "clock_nanosleep"]
STAT_EVENTS = ",".join(["task-clock", "context-switches", "cpu-migrations", "raw_syscalls:sys_enter"]
                       + [f"syscalls:sys_enter_{name}" for name in SYSCALLS])


def ours_env(pg_port: int) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TASKS_", "OTEL_", "BENCH_"))}
    return dict(base, TASKS_HTTP__HOST="127.0.0.1", TASKS_ADMIN__HOST="127.0.0.1",
                TASKS_DATABASE__HOST="127.0.0.1", TASKS_DATABASE__PORT=str(pg_port),
                TASKS_DATABASE__NAME="tasks", TASKS_DATABASE__USER="tasks",
                TASKS_DATABASE__PASSWORD=driver.PG_PASSWORD, TASKS_DATABASE__SSLMODE="disable",
                TASKS_SHUTDOWN__DRAIN_DELAY_SECS="0", TASKS_SECRETS_DIR=str(driver.OUT / "secrets"))


def prepare(pg_port: int, ours_bin: Path) -> Path:
    """Migrations, the bench token, one model task through the API, the seed."""
    env = ours_env(pg_port)
    driver.TOKEN, line = driver.mint_token(ours_bin, "bench")
    secrets = driver.OUT / "secrets"
    shutil.rmtree(secrets, ignore_errors=True)
    secrets.mkdir(parents=True, mode=0o700)
    (secrets / "auth.api_tokens").write_text(f"# bench/profile.py\n{line}\n")
    subprocess.run([str(ours_bin), "migrate"], env=env, check=True, timeout=120, stdout=subprocess.DEVNULL)
    port, admin = driver.free_port(), driver.free_port()
    p = driver.Proc("profile-seed", [str(ours_bin)], dict(env, TASKS_HTTP__PORT=str(port), TASKS_ADMIN__PORT=str(admin)))
    p.wait_http(f"http://127.0.0.1:{admin}/readyz")
    status, body = driver.http_request(f"http://127.0.0.1:{port}/v1/tasks", "POST", b'{"title":"bench model"}')
    p.stop()
    if status != 201:
        sys.exit(f"profile: POST answered {status}: {body[:200]!r}")
    return driver.seed(pg_port, json.loads(body)["id"])


def start(target: str, pg_port: int, wrapper: list[str], workers: int) -> tuple[driver.Proc, str, str]:
    """Starts a target (optionally under `wrapper`); returns it, its base URL, a ready URL."""
    port = driver.free_port()
    if target in ("ours", "alt"):
        admin = driver.free_port()
        env = dict(ours_env(pg_port), TASKS_HTTP__PORT=str(port), TASKS_ADMIN__PORT=str(admin),
                   TASKS_HTTP__WORKERS=str(workers))
        binary = OURS_BIN if target == "ours" else ALT_BIN
        if binary is None:
            sys.exit("profile: target alt needs PROFILE_ALT_BIN or PROFILE_ALT_ENV")
        if target == "alt":
            env.update(ALT_ENV)
        p = driver.Proc(f"profile-{target}", wrapper + [str(binary)], env)
        ready = f"http://127.0.0.1:{admin}/readyz"
    else:
        db = f"host=127.0.0.1 port={pg_port} user=tasks password={driver.PG_PASSWORD} dbname=tasks"
        env = dict(os.environ, BENCH_LISTEN=f"127.0.0.1:{port}", BENCH_DATABASE=db, BENCH_WORKERS=str(workers))
        p = driver.Proc(f"profile-{target}", wrapper + [str(RELEASE / "raw-actix-http")], env)
        ready = f"http://127.0.0.1:{port}/v1/tasks/{driver.ID_PREFIX}{1:012x}"
    p.wait_http(ready, timeout=180)
    return p, f"http://127.0.0.1:{port}", ready


def without_machine_paths(text: str) -> str:
    """The listing as it can be committed: this machine's directories (the checkout, the
    target directory, the home directory) replaced by what they stand for."""
    text = text.replace(f"{RELEASE}/", "target/release/").replace(f"{ROOT}/", "")
    return text.replace(f"{Path.home()}/", "~/")


def callgrind(target: str, pg_port: int, ids: Path) -> None:
    out = PROFILE_OUT / f"callgrind.{target}.out"
    out.unlink(missing_ok=True)
    p, url, _ = start(target, pg_port, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"], 1)
    driver.wrk(url, "get.lua", ids, connections=4, duration=5)  # warm-up: caches, statements
    subprocess.run(["callgrind_control", "-z", str(p.proc.pid)], check=True, capture_output=True, timeout=60)
    res = driver.wrk(url, "get.lua", ids, connections=8, duration=SECS)
    subprocess.run(["callgrind_control", "-d", str(p.proc.pid)], check=True, capture_output=True, timeout=120)
    time.sleep(2)
    p.proc.send_signal(signal.SIGINT)
    try:
        p.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.proc.kill()
    dumps = sorted(PROFILE_OUT.glob(f"callgrind.{target}.out*"), key=lambda f: f.stat().st_mtime)
    # The explicit dump (…out.1) holds exactly the measured window.
    measured = next((d for d in dumps if d.name.endswith(".1")), None)
    if measured is None:
        sys.exit(f"profile: no callgrind dump for {target}: {[d.name for d in dumps]}")
    total = 0
    for line in measured.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            total = int(line.split()[1])
            break
    per_request = total / max(res["requests"], 1)
    report = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=99", str(measured)],
                            capture_output=True, text=True, timeout=300).stdout
    (PROFILE_OUT / f"callgrind.{target}.txt").write_text(
        f"# {target}: {res['requests']} requests, {total} instructions, {per_request:.0f} per request "
        f"({res['errors']} errors)\n" + without_machine_paths(report))
    print(f"{target}: {res['requests']} requests ({res['errors']} errors), "
          f"{total:,} instructions, {per_request:,.0f} instructions per request", flush=True)


def perf(target: str, pg_port: int, ids: Path) -> None:
    p, url, _ = start(target, pg_port, [], 2)
    data = PROFILE_OUT / f"perf.{target}.data"
    rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "249", "--call-graph", "dwarf,16384",
                            "-o", str(data), "-p", str(p.proc.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    res = driver.wrk(url, "get.lua", ids, connections=PERF_CONNECTIONS, duration=PERF_SECS)
    rec.send_signal(signal.SIGINT)
    rec.wait(timeout=120)
    p.stop()
    script = subprocess.run(["perf", "script", "-i", str(data)], capture_output=True, timeout=900).stdout
    folded = subprocess.run(["inferno-collapse-perf"], input=script, capture_output=True, timeout=300).stdout
    (PROFILE_OUT / f"{target}.folded").write_bytes(folded)
    svg = subprocess.run(["inferno-flamegraph", "--title", f"GET /v1/tasks/{{id}}: {target} ({res['rps']:.0f} req/s while sampled)"],
                         input=folded, capture_output=True, timeout=300).stdout
    (PROFILE_OUT / f"{target}.svg").write_bytes(svg)
    print(f"{target}: flamegraph {PROFILE_OUT / (target + '.svg')} ({res['rps']:.0f} req/s while sampled)", flush=True)


def postgres_pids(pg_dir: Path) -> list[int]:
    """The postmaster and its children (backends, checkpointer, walwriter, ...)."""
    postmaster = int((pg_dir / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
    return [postmaster] + [int(c) for c in children]


def counted(path: Path) -> dict[str, dict[str, float]]:
    """`perf stat -x, --per-thread` output: {thread name: {event: value}} (tids folded
    into their names, `tokio-runtime-w-123` and `-124` become one entry)."""
    threads: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        parts = line.split(",")
        if line.startswith("#") or len(parts) < 4:
            continue
        if parts[0].replace(".", "", 1).isdigit() or parts[0].startswith("<"):
            thread, value, event = "all", parts[0], parts[2]  # not per thread
        else:
            thread, value, event = re.sub(r"-\d+$", "", parts[0]), parts[1], parts[3]
        try:
            number = float(value)
        except ValueError:
            continue
        entry = threads.setdefault(thread, {})
        entry[event] = entry.get(event, 0.0) + number
    return threads


def syscall_summary(path: Path) -> dict[str, int]:
    """`perf trace -s` output: calls per system call name, over all threads."""
    calls: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"\s+([a-z_0-9]+)\s+(\d+)\s+\d+\s+[\d.]+", line)
        if m:
            calls[m.group(1)] = calls.get(m.group(1), 0) + int(m.group(2))
    return calls


def kernel_share(data: Path) -> float:
    """Share of `perf record` samples taken in the kernel."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "-g", "none",
                          "--sort", "dso", "--percent-limit", "0"],
                         capture_output=True, text=True, timeout=300).stdout
    kernel = 0.0
    for line in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)", line)
        if m and m.group(2).startswith("[kernel"):
            kernel += float(m.group(1))
    return kernel / 100


def switches(pid: int) -> dict[str, int]:
    """Voluntary (blocked: nothing to do) and involuntary (preempted) context switches of
    every thread of a process so far, from /proc."""
    total = {"voluntary": 0, "involuntary": 0}
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue  # a thread that ended meanwhile
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total["voluntary"] += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                total["involuntary"] += int(line.split()[1])
    return total


def cpu_placement() -> str:
    """Which CPU each busy thread (the server's workers, PostgreSQL's backends, wrk) was
    last on, with its CPU share: the scheduler's placement during a measured run."""
    out = subprocess.run(["ps", "-eLo", "psr=,pcpu=,comm="], capture_output=True, text=True, timeout=10).stdout
    busy = []
    for line in out.splitlines():
        cpu, share, comm = line.split(None, 2)
        if float(share) >= 5 and comm.startswith(("actix", "postgres", "wrk", "raw-actix")):
            busy.append(f"{comm.strip()}@{cpu}")
    return " ".join(sorted(busy))


def stat_once(target: str, pg_port: int, pg_dir: Path, ids: Path, round_no: int) -> dict:
    p, url, _ = start(target, pg_port, [], driver.WORKERS)
    try:
        driver.wrk(url, "get.lua", ids, connections=STAT_CONNECTIONS, duration=2)  # warm-up
        server_out = PROFILE_OUT / f"stat.{target}.{round_no}.server.txt"
        pg_out = PROFILE_OUT / f"stat.{target}.{round_no}.pg.txt"
        pids = ",".join(str(x) for x in postgres_pids(pg_dir))
        stats = [subprocess.Popen(["perf", "stat", "-x,", "--per-thread", "-e", STAT_EVENTS, "-o", str(server_out),
                                   "-p", str(p.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                 subprocess.Popen(["perf", "stat", "-x,", "-e", "task-clock,context-switches", "-o", str(pg_out),
                                   "-p", pids], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        try:
            time.sleep(0.5)
            before = switches(p.proc.pid)
            placement: list[str] = []
            sampler = threading.Timer(STAT_SECS / 2, lambda: placement.append(cpu_placement()))
            sampler.start()
            res = driver.wrk(url, "get.lua", ids, connections=STAT_CONNECTIONS, duration=STAT_SECS)
            after = switches(p.proc.pid)
        finally:
            for s in stats:
                s.send_signal(signal.SIGINT)
                s.wait(timeout=60)
        threads = counted(server_out)
        pg = counted(pg_out).get("all", {})
        result = {"target": target, "round": round_no, "requests": res["requests"], "rps": res["rps"],
                  "errors": res["errors"], "threads": threads, "postgres": pg,
                  "switches": {kind: after[kind] - before[kind] for kind in after},
                  "placement": placement[0] if placement else ""}
        driver.log(f"{target} round {round_no}: {res['rps']:,.0f} req/s; CPU of each busy thread: {result['placement']}")
        if round_no == 0:
            # The system calls by name, and the user/kernel split, once per target.
            trace_out = PROFILE_OUT / f"stat.{target}.trace.txt"
            trace = subprocess.Popen(["perf", "trace", "-s", "-o", str(trace_out), "-p", str(p.proc.pid)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
            traced = driver.wrk(url, "get.lua", ids, connections=STAT_CONNECTIONS, duration=TRACE_SECS)
            trace.send_signal(signal.SIGINT)
            trace.wait(timeout=120)
            result["traced_requests"] = traced["requests"]
            result["syscalls"] = syscall_summary(trace_out)
            data = PROFILE_OUT / f"stat.{target}.perf.data"
            rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-o", str(data),
                                    "-p", str(p.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            driver.wrk(url, "get.lua", ids, connections=STAT_CONNECTIONS, duration=TRACE_SECS)
            rec.send_signal(signal.SIGINT)
            rec.wait(timeout=120)
            result["kernel_share"] = kernel_share(data)
        return result
    finally:
        p.stop()


def per_request(results: list[dict]) -> str:
    """The table of stat.txt: per request, summed over the rounds of each target."""
    lines = ["| per request | " + " | ".join(t for t in dict.fromkeys(r["target"] for r in results)) + " |",
             "|---|" + "---:|" * len(dict.fromkeys(r["target"] for r in results))]
    rows: dict[str, dict[str, str]] = {}
    by_target: dict[str, list[dict]] = {}
    for r in results:
        by_target.setdefault(r["target"], []).append(r)
    thread_rows: dict[str, dict[str, str]] = {}
    for target, runs in by_target.items():
        requests = sum(r["requests"] for r in runs)
        total: dict[str, float] = {}
        for r in runs:
            for name, events in r["threads"].items():
                for event, value in events.items():
                    total[event] = total.get(event, 0.0) + value
                    key = f"{name} CPU µs"
                    if event == "task-clock":
                        thread_rows.setdefault(key, {})
                        thread_rows[key][target] = thread_rows[key].get(target, 0.0) + value
        pg = {}
        for r in runs:
            for event, value in r["postgres"].items():
                pg[event] = pg.get(event, 0.0) + value
        rps = [f"{r['rps']:,.0f}" for r in runs]
        rows.setdefault("req/s (rounds)", {})[target] = " / ".join(rps)
        rows.setdefault("server CPU µs (task-clock)", {})[target] = f"{total.get('task-clock', 0) * 1000 / requests:.1f}"
        rows.setdefault("server context switches", {})[target] = f"{total.get('context-switches', 0) / requests:.3f}"
        for kind in ("voluntary", "involuntary"):
            count = sum(r.get("switches", {}).get(kind, 0) for r in runs)
            rows.setdefault(f"… {kind} (/proc)", {})[target] = f"{count / requests:.3f}"
        rows.setdefault("server CPU migrations", {})[target] = f"{total.get('cpu-migrations', 0) / requests:.4f}"
        rows.setdefault("server system calls", {})[target] = f"{total.get('raw_syscalls:sys_enter', 0) / requests:.2f}"
        for name in SYSCALLS:
            count = total.get(f"syscalls:sys_enter_{name}", 0)
            rows.setdefault(f"… `{name}`", {})[target] = f"{count / requests:.3f}"
        rows.setdefault("PostgreSQL CPU µs", {})[target] = f"{pg.get('task-clock', 0) * 1000 / requests:.1f}"
        rows.setdefault("PostgreSQL context switches", {})[target] = f"{pg.get('context-switches', 0) / requests:.3f}"
        first = runs[0]
        if "kernel_share" in first:
            cpu = total.get("task-clock", 0) * 1000 / requests
            rows.setdefault("server samples in the kernel", {})[target] = f"{first['kernel_share']:.1%}"
            rows.setdefault("… server CPU µs in user space (task-clock × samples)", {})[target] = \
                f"{cpu * (1 - first['kernel_share']):.1f}"
            rows.setdefault("… server CPU µs in the kernel", {})[target] = f"{cpu * first['kernel_share']:.1f}"
        for name, calls in sorted(first.get("syscalls", {}).items(), key=lambda kv: -kv[1]):
            if calls / max(first["traced_requests"], 1) >= 0.001:
                rows.setdefault(f"`{name}` (perf trace)", {})[target] = f"{calls / first['traced_requests']:.3f}"
        for key in thread_rows:
            if target in thread_rows[key]:
                thread_rows[key][target] = f"{thread_rows[key][target] * 1000 / requests:.2f}"
    targets = list(by_target)
    for name, values in list(rows.items()) + sorted(thread_rows.items()):
        lines.append(f"| {name} | " + " | ".join(str(values.get(t, "–")) for t in targets) + " |")
    return "\n".join(lines) + "\n"


def stat(targets: list[str], pg_port: int, pg_dir: Path, ids: Path) -> None:
    results = []
    for round_no in range(STAT_ROUNDS):
        order = targets if round_no % 2 == 0 else list(reversed(targets))
        for target in order:
            r = stat_once(target, pg_port, pg_dir, ids, round_no)
            print(f"stat {target} round {round_no + 1}: {r['requests']} requests, {r['rps']:,.0f} req/s, "
                  f"{r['errors']} errors", flush=True)
            results.append(r)
    (PROFILE_OUT / "stat.json").write_text(json.dumps(results, indent=1))
    table = per_request(results)
    load = Path("/proc/loadavg").read_text().split()[:3]
    (PROFILE_OUT / "stat.txt").write_text(f"{STAT_CONNECTIONS} connections; load average at the end: {' '.join(load)}\n\n{table}")
    print(table, flush=True)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "all"
    which = sys.argv[2] if len(sys.argv) > 2 else "both"
    targets = ["ours", "raw"] if which == "both" else which.split(",")
    PROFILE_OUT.mkdir(parents=True, exist_ok=True)
    driver.OUT.mkdir(parents=True, exist_ok=True)
    ours_bin = OURS_BIN
    pg_dir = driver.OUT / "pg-profile"
    pg_port = driver.free_port()
    if pg_dir.exists():
        subprocess.run([str(ROOT / "scripts/pg.sh"), "stop", str(pg_dir)], timeout=120)
        shutil.rmtree(pg_dir)
    pg_env = dict(os.environ, PGPASSWORD_TASKS=driver.PG_PASSWORD, PG_EXTRA_OPTS="-c max_connections=300")
    subprocess.run([str(ROOT / "scripts/pg.sh"), "start", str(pg_dir), str(pg_port)], env=pg_env, check=True, timeout=180)
    try:
        ids = prepare(pg_port, ours_bin)
        if mode == "stat":
            stat(targets, pg_port, pg_dir, ids)
            return
        for target in targets:
            if mode in ("callgrind", "all"):
                callgrind(target, pg_port, ids)
            if mode in ("perf", "all"):
                perf(target, pg_port, ids)
    finally:
        subprocess.run([str(ROOT / "scripts/pg.sh"), "stop", str(pg_dir)], timeout=120)


if __name__ == "__main__":
    main()
