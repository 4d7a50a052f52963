#!/usr/bin/env bash
# `just rehearse`: install what the lifecycle rehearsal needs, build tasks-server, run it.
#   helm, Debian wrk and PostgreSQL server binaries (scripts/ensure-tools.sh; Debian's
#   postgresql is installed under CI=true), PyYAML in .tools/venv.
# REHEARSAL_BINARY=path skips the cargo build and uses that binary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! "$ROOT/scripts/ensure-tools.sh" helm wrk postgres >/dev/null; then
    echo "rehearse: a prerequisite is missing (see above)" >&2
    echo "rehearse: 0 passed, 1 failed"
    exit 1
fi
# The one place that finds the server binaries; rehearse.py runs psql from there.
PG_BINDIR="$("$ROOT/scripts/pg.sh" bindir)"
export PG_BINDIR
PY="$ROOT/.tools/venv/bin/python"
if ! "$PY" -c 'import yaml' 2>/dev/null; then
    echo "rehearse: installing PyYAML into .tools/venv" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check 'PyYAML>=6,<7'
fi
if [[ -z "${REHEARSAL_BINARY:-}" ]]; then
    cargo build --locked -p tasks-server
    export REHEARSAL_BINARY="$ROOT/target/debug/tasks-server"
    [[ -z "${CARGO_TARGET_DIR:-}" ]] || REHEARSAL_BINARY="$CARGO_TARGET_DIR/debug/tasks-server"
fi
exec "$PY" "$ROOT/rehearsal/rehearse.py"
