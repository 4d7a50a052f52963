#!/usr/bin/env bash
# `just lint`: every static check, each run even when an earlier one failed, ending with
# "lint: N passed, M failed" (the count scripts/run-suites.sh adds up; a suite that
# reports no check fails there). Exits non-zero when any check failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

passed=0 failed=0 failures=()
check() { # check NAME COMMAND...: run one check and count it
  local name="$1"; shift
  printf '==> %s\n' "$name"
  if "$@"; then
    passed=$((passed + 1)); printf 'PASS  %s\n' "$name"
  else
    failed=$((failed + 1)); failures+=("$name"); printf 'FAIL  %s\n' "$name"
  fi
}

check "no references to documents outside the repository" scripts/check-no-outside-refs.sh
check "cargo fmt --check" cargo fmt --all -- --check
check "clippy, warnings denied" cargo clippy --workspace --all-targets --locked -- -D warnings
check "rustdoc, warnings denied" env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
if scripts/ensure-tools.sh hadolint; then
  check "hadolint docker/Dockerfile" .tools/venv/bin/hadolint docker/Dockerfile
else
  failed=$((failed + 1)); failures+=("hadolint (could not be installed)")
fi

[[ ${#failures[@]} -eq 0 ]] || printf 'failed: %s\n' "${failures[@]}"
echo "lint: ${passed} passed, ${failed} failed"
[[ $failed -eq 0 ]]
