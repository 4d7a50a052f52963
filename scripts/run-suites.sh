#!/usr/bin/env bash
# Runs test suites (just recipes) one after another, keeps going after a failure, and
# ends with one summary line counting the individual tests every suite reported
# ("test result: ok. N passed; M failed; K ignored" from cargo, "N passed, M failed[, K
# skipped]" from scripts): "tests: N passed, M failed, K skipped". A suite that exits
# non-zero, or reports no check at all (nothing ran, so nothing was proven), is FAILED.
#
#   scripts/run-suites.sh SUITE...
#
# RUN_SUITES_EXCLUDE="SUITE..." leaves suites out, said at the start and in the summary
# (GitHub's ci.yml leaves out test-cluster, which its kind workflow runs instead).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT
passed=0 failed=0 skipped=0 failed_suites=() excluded=()
# Incremental compilation caches only help repeated local builds; in CI they are gigabytes
# of disk for nothing.
if [[ -n "${CI:-}" ]]; then export CARGO_INCREMENTAL=0; fi
free_space() { df -Ph "$ROOT" | awk 'NR == 2 { print $4 " free on " $6 }'; }
printf 'disk: %s\n' "$(free_space)"
for suite in "$@"; do
    if [[ " ${RUN_SUITES_EXCLUDE:-} " == *" $suite "* ]]; then
        printf '\n==> %s: excluded by RUN_SUITES_EXCLUDE\n' "$suite"
        excluded+=("$suite")
        continue
    fi
    printf '\n==> %s\n' "$suite"
    started=$(date +%s)
    "$ROOT/just" "$suite" 2>&1 | tee "$LOGS/$suite.log"
    status=${PIPESTATUS[0]}
    read -r p f s < <(awk '
        /test result: (ok|FAILED)\. [0-9]+ passed; [0-9]+ failed/ {
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^passed;/) p += $(i-1); if ($i ~ /^failed;/) f += $(i-1); if ($i ~ /^ignored;/) s += $(i-1)
            }
        }
        /^[A-Za-z-]*:? ?[0-9]+ passed, [0-9]+ failed/ {
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^passed,/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^skipped/) s += $(i-1)
            }
        }
        END { print p + 0, f + 0, s + 0 }' "$LOGS/$suite.log")
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    why=""
    if [[ $status -ne 0 ]]; then
        why="exit status $status"
        [[ $f -eq 0 ]] && failed=$((failed + 1))   # a suite that died still counts as a failure
    elif [[ $((p + f)) -eq 0 ]]; then
        why="it reported no check (no \"N passed, M failed\" or cargo \"test result\" line): nothing was proven"
        failed=$((failed + 1))
    fi
    [[ -z "$why" ]] || failed_suites+=("$suite")
    printf '<== %s: exit %s, %s passed, %s failed, %s skipped, %ss (disk: %s)\n' "$suite" "$status" "$p" "$f" "$s" "$(( $(date +%s) - started ))" "$(free_space)"
    [[ -z "$why" ]] || printf '<== %s: FAILED: %s\n' "$suite" "$why"
done
echo
if [[ ${#failed_suites[@]} -gt 0 ]]; then
    echo "failed suites: ${failed_suites[*]}"
fi
if [[ ${#excluded[@]} -gt 0 ]]; then
    echo "excluded suites (RUN_SUITES_EXCLUDE): ${excluded[*]}"
fi
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
[[ ${#failed_suites[@]} -eq 0 && $failed -eq 0 ]]
