#!/usr/bin/env bash
# `just bench`: release build of tasks-server and the bench-only baselines, then
# bench/driver.py (real PostgreSQL seeded with 10,000 tasks, wrk at fixed concurrency
# and duration, pgbench with the same prepared query, alternating rounds). Not part of
# CI's pass/fail. Prints a Markdown table; writes target/bench/results.json and
# target/bench/chart.svg.
#
# Environment (all optional): BENCH_DURATION_SECS (10), BENCH_CONNECTIONS (32),
# BENCH_ROUNDS (2), BENCH_WORKERS (2), BENCH_WRK_THREADS (2), BENCH_PIPELINE_CLIENTS (2),
# BENCH_OURS_ENV ("KEY=VALUE ..." extra settings for tasks-server, e.g.
# "TASKS_DATABASE__POOL_MAX_SIZE=4"), BENCH_SCENARIOS (post,list,mixed: the scenarios
# besides GET by id), BENCH_RESULTS_NAME (results: file names of an experiment),
# BENCH_IMAGE=1 (also build the static musl binary and the runtime image with Docker to
# report its size; otherwise an image is measured only when both are already at hand).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

log() { printf 'bench: %s\n' "$*" >&2; }

# Bound the whole run: rounds x (6 GET targets/pgbench + 3 scenarios) x duration, plus
# start-up and seeding.
duration="${BENCH_DURATION_SECS:-10}"
rounds="${BENCH_ROUNDS:-2}"
budget=$(( rounds * 9 * (duration + 5) + 300 ))

scripts/ensure-tools.sh wrk postgres
# pgbench and psql of the server scripts/pg.sh runs (the one place that finds it).
PG_BIN="$(scripts/pg.sh bindir)"
export PATH="${PATH}:${PG_BIN}"
for tool in pgbench psql python3; do
    command -v "${tool}" >/dev/null 2>&1 || { log "${tool} is missing (Debian postgresql, postgresql-client, python3)"; exit 1; }
done

log "release build (lto=fat, codegen-units=1: slow the first time)"
cargo build --release --locked -p tasks-server -p tasks-bench-baseline

# The image: FROM scratch + the static binary + CA bundle (docker/Dockerfile --target host).
unset BENCH_IMAGE_REF
export BENCH_IMAGE_NOTE="Docker not available"
MUSL_BIN="target/x86_64-unknown-linux-musl/release/tasks-server"
if [[ "${BENCH_IMAGE:-}" == 1 ]]; then
    scripts/ensure-tools.sh musl
    cargo build --release --locked --target x86_64-unknown-linux-musl -p tasks-server
fi
if command -v docker >/dev/null 2>&1 && [[ -x "${MUSL_BIN}" ]]; then
    if DOCKER_HOST="$(scripts/docker-engine.sh ensure 2>/dev/null)"; then
        export DOCKER_HOST
        ctx="target/bench/image"
        rm -rf "${ctx}" && mkdir -p "${ctx}"
        cp "${MUSL_BIN}" "${ctx}/tasks-server"
        cp /etc/ssl/certs/ca-certificates.crt "${ctx}/ca-certificates.crt"
        # Same Dockerfile, its own context holding only the two files.
        sed -e 's#^ARG BINARY=.*#ARG BINARY=tasks-server#' -e 's#^ARG CA_BUNDLE=.*#ARG CA_BUNDLE=ca-certificates.crt#' \
            docker/Dockerfile > "${ctx}/Dockerfile"
        if DOCKER_BUILDKIT=0 timeout 300 docker build -q --target host -t tasks-server:bench "${ctx}" >/dev/null 2>&1; then
            export BENCH_IMAGE_REF=tasks-server:bench
        else
            BENCH_IMAGE_NOTE="docker build failed"
        fi
    else
        BENCH_IMAGE_NOTE="no Docker daemon"
    fi
elif command -v docker >/dev/null 2>&1; then
    BENCH_IMAGE_NOTE="static binary not built: BENCH_IMAGE=1 builds it"
fi

exec timeout --signal=TERM --kill-after=30 "${budget}" python3 bench/driver.py
