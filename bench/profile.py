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
  included) while wrk runs at 32 connections for PROFILE_PERF_SECS (10), folded and drawn
  by inferno (`cargo install inferno`).

Usage: python3 bench/profile.py [callgrind|perf|all] [ours|raw|both]
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import driver  # noqa: E402  (the bench's own helpers: PostgreSQL, seed, wrk)

ROOT = driver.ROOT
RELEASE = driver.RELEASE  # honours CARGO_TARGET_DIR, as cargo does
PROFILE_OUT = Path(os.environ.get("PROFILE_OUT", ROOT / "target" / "bench" / "profile"))
SECS = int(os.environ.get("PROFILE_SECS", "20"))
PERF_SECS = int(os.environ.get("PROFILE_PERF_SECS", "10"))


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
    import json
    return driver.seed(pg_port, json.loads(body)["id"])


def start(target: str, pg_port: int, wrapper: list[str], workers: int) -> tuple[driver.Proc, str, str]:
    """Starts a target (optionally under `wrapper`); returns it, its base URL, a ready URL."""
    port = driver.free_port()
    if target == "ours":
        admin = driver.free_port()
        env = dict(ours_env(pg_port), TASKS_HTTP__PORT=str(port), TASKS_ADMIN__PORT=str(admin),
                   TASKS_HTTP__WORKERS=str(workers))
        p = driver.Proc(f"profile-{target}", wrapper + [str(RELEASE / "tasks-server")], env)
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
    res = driver.wrk(url, "get.lua", ids, connections=32, duration=PERF_SECS)
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


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "all"
    which = sys.argv[2] if len(sys.argv) > 2 else "both"
    targets = ["ours", "raw"] if which == "both" else [which]
    PROFILE_OUT.mkdir(parents=True, exist_ok=True)
    driver.OUT.mkdir(parents=True, exist_ok=True)
    ours_bin = RELEASE / "tasks-server"
    pg_dir = driver.OUT / "pg-profile"
    pg_port = driver.free_port()
    if pg_dir.exists():
        subprocess.run([str(ROOT / "scripts/pg.sh"), "stop", str(pg_dir)], timeout=120)
        shutil.rmtree(pg_dir)
    pg_env = dict(os.environ, PGPASSWORD_TASKS=driver.PG_PASSWORD, PG_EXTRA_OPTS="-c max_connections=300")
    subprocess.run([str(ROOT / "scripts/pg.sh"), "start", str(pg_dir), str(pg_port)], env=pg_env, check=True, timeout=180)
    try:
        ids = prepare(pg_port, ours_bin)
        for target in targets:
            if mode in ("callgrind", "all"):
                callgrind(target, pg_port, ids)
            if mode in ("perf", "all"):
                perf(target, pg_port, ids)
    finally:
        subprocess.run([str(ROOT / "scripts/pg.sh"), "stop", str(pg_dir)], timeout=120)


if __name__ == "__main__":
    main()
