#!/usr/bin/env bash
# Packages the reusable crates exactly as crates.io would receive them and checks each:
#   - `cargo package` builds the .crate and verifies it: the crate is unpacked and compiled
#     on its own, against registry versions of its dependencies (all four at once, so a
#     crate depending on another workspace crate is resolved against that one's package);
#   - the packaged manifest carries the metadata crates.io and docs.rs show (description,
#     license, repository, homepage, readme, keywords, categories, rust-version) and the
#     README is inside the package;
#   - no normal dependency (on this platform, as locked) needs a newer Rust than the
#     crate's rust-version, and none is a workspace crate outside the packaged set.
# Prints PASS/FAIL per crate and ends with "package: N passed, M failed".
#
#   scripts/test-package.sh [CRATE...]     (default: the six reusable crates)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CRATES=("$@")
[[ ${#CRATES[@]} -eq 0 ]] && CRATES=(tasks-config tasks-health tasks-telemetry tasks-postgres tasks-runtime tasks-auth)

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

args=()
for crate in "${CRATES[@]}"; do args+=(-p "$crate"); done
# Verification compiles each package in the shared target directory, so with a warm
# `cargo test` it costs well under a minute; --locked keeps the workspace lock untouched;
# --allow-dirty because `just test` runs before a commit as well as in CI.
touch "$WORK/started"
cargo package --locked --allow-dirty "${args[@]}" 2>&1 | tee "$WORK/package.log"
cargo_status=${PIPESTATUS[0]}
cargo metadata --locked --format-version 1 \
    --filter-platform "$(rustc -vV | sed -n 's/^host: //p')" >"$WORK/metadata.json" ||
    cargo_status=1

python3 scripts/lib/package_checks.py "$WORK/package.log" "$WORK/metadata.json" "$cargo_status" "${CRATES[@]}"
