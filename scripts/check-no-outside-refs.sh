#!/usr/bin/env bash
# Fails when a file of the repository points at design documents kept outside it.
#
# The design contract lives in docs/architecture.md (decisions in docs/adr/). A comment
# or document that cites a file a reader of the repository cannot open (a DESIGN.md,
# ENVIRONMENT.md, a "../shared" directory, "design §3" of some other document) goes
# stale silently, so it is an error. Checks tracked files and new, not-ignored ones, and
# prints each hit as file:line: text.
#
#   scripts/check-no-outside-refs.sh        (part of `just lint`)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

patterns=(
    -e 'design\.md'
    -e 'environment\.md'
    -e '\.\./shared\b'
    -e '\bshared/seed\b'
    -e 'seed/[0-9]+_'
    -e 'design doc(ument)?s?\b'
    -e 'original design'
    -e 'design §'
)

# This script names the patterns it looks for; nothing else may.
if hits=$(git grep --untracked -nIiE "${patterns[@]}" -- . ':!scripts/check-no-outside-refs.sh'); then
    echo "References to documents outside the repository (point them at docs/architecture.md,"
    echo "an ADR in docs/adr/, or reword so the text stands alone):"
    printf '%s\n' "$hits" | sed 's/^/  /'
    exit 1
fi
echo "no references to documents outside the repository"
