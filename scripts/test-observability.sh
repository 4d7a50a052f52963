#!/usr/bin/env bash
# Alerts and dashboard proven against promtool and a real Prometheus scraping the real
# service (just test-observability). The checks are in scripts/lib/observability_test.py;
# this installs what they need and builds the binary:
#   - helm (the chart is rendered: the rules and dashboard tested are the chart's own)
#   - prometheus and promtool (Debian's prometheus; installed under CI=true as root)
#   - PostgreSQL server binaries (scripts/pg.sh starts a throwaway server)
#   - a debug build of tasks-server (cargo build -p tasks-server)
# Prints PASS/FAIL per check and ends with "N passed, M failed". Under CI=true a missing
# tool is a failure, never a skip. Binds only 127.0.0.1; everything started is stopped.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.tools/bin:$PATH"
started=$(date +%s)

setup_passed=0 setup_failed=0
for tool in helm prometheus postgres; do
  log="$(mktemp)"
  if scripts/ensure-tools.sh "$tool" >"$log" 2>&1; then
    printf 'PASS  tool available: %s\n' "$tool"; setup_passed=$((setup_passed + 1))
  else
    printf 'FAIL  tool available: %s\n' "$tool"; setup_failed=$((setup_failed + 1))
    sed 's/^/      | /' "$log" | tail -n 10
  fi
  rm -f "$log"
done

log="$(mktemp)"
build_started=$(date +%s)
if cargo build --locked -p tasks-server >"$log" 2>&1; then
  printf 'PASS  cargo build -p tasks-server (debug, %ss)\n' "$(( $(date +%s) - build_started ))"
  setup_passed=$((setup_passed + 1))
else
  printf 'FAIL  cargo build -p tasks-server (debug)\n'; setup_failed=$((setup_failed + 1))
  sed 's/^/      | /' "$log" | tail -n 30
fi
rm -f "$log"
target_dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
server="${target_dir:-$ROOT/target}/debug/tasks-server"

p=0 f=0 status=0
if [[ $setup_failed -eq 0 ]]; then
  PY="$ROOT/.tools/venv/bin/python"
  [[ -x "$PY" ]] || PY=python3
  out="$(mktemp)"
  "$PY" scripts/lib/observability_test.py \
    --helm helm --promtool promtool --prometheus prometheus --pg-sh "$ROOT/scripts/pg.sh" \
    --server "$server" --chart deploy/helm/tasks --values deploy/helm/values/staging.yaml \
    --rules-test deploy/helm/prometheus/alerts.test.yaml >"$out" 2>&1
  status=$?
  # Its own summary line is folded into the suite's one below.
  grep -vE '^[0-9]+ passed, [0-9]+ failed$' "$out"
  read -r p f < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$out" | tail -n 1)
  rm -f "$out"
  if [[ -z "${p:-}" ]]; then p=0 f=1; echo "FAIL  observability_test.py ended without a summary (exit $status)"; fi
  if [[ $status -ne 0 && $f -eq 0 ]]; then f=1; fi
fi
echo
echo "test-observability: $(( $(date +%s) - started ))s"
echo "$((setup_passed + p)) passed, $((setup_failed + f)) failed"
[[ $setup_failed -eq 0 && $f -eq 0 && $status -eq 0 ]]
