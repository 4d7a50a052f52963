#!/usr/bin/env bash
# `just rehearse`: install what the lifecycle rehearsal needs, build tasks-server, run it.
#   helm (scripts/ensure-tools.sh), PyYAML in .tools/venv, Debian wrk, PostgreSQL server
#   binaries (scripts/pg.sh installs Debian postgresql under CI=true).
# REHEARSAL_BINARY=path skips the cargo build and uses that binary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/ensure-tools.sh" helm >/dev/null
PY="$ROOT/.tools/venv/bin/python"
if ! "$PY" -c 'import yaml' 2>/dev/null; then
    echo "rehearse: installing PyYAML into .tools/venv" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check 'PyYAML>=6,<7'
fi
if ! command -v wrk >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "rehearse: installing Debian wrk" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >&2 \
            || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >&2; }
    else
        echo "rehearse: wrk not found: install it (Debian/Ubuntu: apt-get install wrk)" >&2
        echo "rehearse: 0 passed, 1 failed"
        exit 1
    fi
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null && [[ -z "${PG_BINDIR:-}" ]]; then
    if [[ "${CI:-}" != true ]]; then
        echo "rehearse: no PostgreSQL server binaries: install Debian 'postgresql' (or set PG_BINDIR)" >&2
        echo "rehearse: 0 passed, 1 failed"
        exit 1
    fi
    # scripts/pg.sh installs it under CI=true.
fi
if [[ -z "${REHEARSAL_BINARY:-}" ]]; then
    cargo build --locked -p tasks-server
    export REHEARSAL_BINARY="$ROOT/target/debug/tasks-server"
    [[ -z "${CARGO_TARGET_DIR:-}" ]] || REHEARSAL_BINARY="$CARGO_TARGET_DIR/debug/tasks-server"
fi
exec "$PY" "$ROOT/rehearsal/rehearse.py"
