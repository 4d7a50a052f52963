#!/usr/bin/env bash
# Static verification of the Helm chart deploy/helm/tasks (no cluster needed):
#   - helm lint --strict, Helm 4 and Helm 3, for every overlay and CI values file
#   - helm template for the same, with both Helm versions; both must render the same
#   - strict schema validation of every rendered manifest for Kubernetes 1.34-1.37
#     (kubernetes-validate --strict; the CRD kinds ServiceMonitor and HTTPRoute have no
#     bundled schema and are checked against a strict schema of the fields we render)
#   - checkov over every rendered values file: zero failures, skips only from
#     deploy/helm/checkov-skips.yaml
#   - negative tests: every deploy/helm/ci/bad-*.yaml must fail to render with an
#     error matching its `# expect:` regex (Helm 4 and Helm 3)
#   - the chart README's parameter tables match values.yaml (readme-generator)
#   - yamllint over the values files
#   - NOTES (helm install --dry-run=client): the warning with auth.enabled=false, the
#     bearer-token instructions otherwise
#   - the database tier (scripts/lib/chart_db_checks.py): consecutive releases leave the
#     PostgreSQL pod template and every immutable field alone; the rendered role scripts
#     converge a real PostgreSQL initialised the old way and a fresh one; the rendered
#     backup command's dump is restored by the restore runbook's commands, row for row;
#     the TLS reloader sidecar makes a real server serve a replaced certificate
#   - the examples of deploy/examples (CloudNativePG, managed PostgreSQL) render and
#     validate like the overlays; CloudNativePG's manifests against a strict CRD schema
#   - cluster compatibility: every networkPolicy.dns preset admits exactly its DNS peers
#     and ports (scripts/lib/chart_policy_test.py); postgresql.volumePermissions renders
#     least privilege and its script, run for real, needs exactly CHOWN + DAC_OVERRIDE
#     (scripts/lib/volume_permissions_test.py)
# Prints PASS/FAIL per check and ends with "N passed, M failed". Under CI=true a
# missing tool is a failure, never a skip.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CHART=deploy/helm/tasks
OVERLAY_DIR=deploy/helm/values
CI_DIR=deploy/helm/ci
SKIPS_FILE=deploy/helm/checkov-skips.yaml
K8S_VERSIONS=(1.34.0 1.35.0 1.36.0 1.37.0)
RELEASE=tasks
NAMESPACE=tasks
export PATH="$ROOT/.tools/bin:$PATH"
# checkov: no calls home (the machines reach no such service).
export BC_SKIP_MAPPING=TRUE CHECKOV_SKIP_DOWNLOAD=TRUE
IN_CI=false
[[ "${CI:-}" == "true" ]] && IN_CI=true

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

passed=0 failed=0 skipped=0
FAILED_NAMES=()
pass() { passed=$((passed + 1)); printf 'PASS  %s\n' "$1"; }
fail() { failed=$((failed + 1)); FAILED_NAMES+=("$1"); printf 'FAIL  %s\n' "$1"; }
skip() { skipped=$((skipped + 1)); printf 'SKIP  %s (%s)\n' "$1" "$2"; }

# run NAME CMD...: run a check, PASS on exit 0, else FAIL with the tail of its output.
run() {
  local name="$1"; shift
  local log="$WORK/log.$$.$RANDOM"
  if "$@" >"$log" 2>&1; then
    pass "$name"
    [[ -n "${SHOW_ON_PASS:-}" ]] && sed 's/^/      -> /' "$log" | tail -n 1
  else
    fail "$name"
    sed 's/^/      | /' "$log" | tail -n 40
  fi
}

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------
declare -A HAVE=()
for tool in helm helm3 kubernetes-validate checkov readme-generator yamllint postgres; do
  if scripts/ensure-tools.sh "$tool" >"$WORK/tool-$tool.log" 2>&1; then
    HAVE[$tool]=1
    pass "tool available: $tool"
  elif $IN_CI; then
    fail "tool available: $tool (CI=true: a missing tool is a failure)"
    sed 's/^/      | /' "$WORK/tool-$tool.log" | tail -n 20
  else
    skip "tool available: $tool" "install failed; checks needing it are skipped outside CI"
    sed 's/^/      | /' "$WORK/tool-$tool.log" | tail -n 5
  fi
done
has() { [[ -n "${HAVE[$1]:-}" ]]; }
# need TOOL CHECK-NAME: true when TOOL is there; otherwise records SKIP (FAIL under CI).
need() {
  has "$1" && return 0
  if $IN_CI; then fail "$2 (missing tool $1)"; else skip "$2" "missing tool $1"; fi
  return 1
}
PY="$ROOT/.tools/venv/bin/python"
[[ -x "$PY" ]] || PY=python3
# The Python parts of the checks (splitting renders, CRD schemas, checkov skips and figures).
CHART_CHECKS="$ROOT/scripts/lib/chart_checks.py"

# Values files that must render: the overlays, and the CI files that are not bad-*.
declare -A VALUES=()
for f in "$OVERLAY_DIR"/*.yaml; do VALUES[$(basename "$f" .yaml)]="$f"; done
for f in "$CI_DIR"/*.yaml; do
  n="$(basename "$f" .yaml)"
  [[ "$n" == bad-* ]] && continue
  VALUES[$n]="$f"
done
# The examples: each values file on top of the production overlay, as documented.
EXAMPLES_DIR=deploy/examples
for f in "$EXAMPLES_DIR"/*/values.yaml; do
  VALUES[example-$(basename "$(dirname "$f")")]="$f"
done
NAMES=($(printf '%s\n' "${!VALUES[@]}" | sort))
# What a release adds: production deploys by digest only (image.requireDigest), so every
# production render gets a digest, as the release pipeline passes one.
RELEASE_DIGEST="sha256:$(printf '5%.0s' {1..64})"
vargs() { # vargs NAME: the values arguments of render NAME, in VARGS
  VARGS=(-f "${VALUES[$1]}")
  if [[ "$1" == example-* ]]; then VARGS=(-f "$OVERLAY_DIR/production.yaml" -f "${VALUES[$1]}"); fi
  if [[ "$1" == production || "$1" == example-* ]]; then VARGS+=(--set "image.digest=$RELEASE_DIGEST"); fi
}
for required in local staging production; do
  [[ -n "${VALUES[$required]:-}" ]] || fail "overlay $OVERLAY_DIR/$required.yaml exists"
done

# ---------------------------------------------------------------------------
# helm lint --strict (Helm 4 and Helm 3)
# ---------------------------------------------------------------------------
for h in helm helm3; do
  for n in "${NAMES[@]}"; do
    need "$h" "$h lint --strict ($n)" || continue
    vargs "$n"
    run "$h lint --strict ($n)" "$h" lint --strict "$CHART" "${VARGS[@]}" --namespace "$NAMESPACE"
  done
done

# ---------------------------------------------------------------------------
# helm template (Helm 4 and Helm 3): both render, and render the same
# ---------------------------------------------------------------------------
render() { # render HELM NAME KUBEVERSION OUT
  vargs "$2"
  "$1" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "${VARGS[@]}" --kube-version "$3" >"$4"
}
for n in "${NAMES[@]}"; do
  for h in helm helm3; do
    need "$h" "$h template ($n)" || continue
    run "$h template ($n)" render "$h" "$n" "${K8S_VERSIONS[0]}" "$WORK/$h-$n.yaml"
  done
  if has helm && has helm3 && [[ -s "$WORK/helm-$n.yaml" && -s "$WORK/helm3-$n.yaml" ]]; then
    run "Helm 4 and Helm 3 render identical manifests ($n)" diff -u "$WORK/helm3-$n.yaml" "$WORK/helm-$n.yaml"
  fi
done

# ---------------------------------------------------------------------------
# Strict validation against Kubernetes 1.34-1.37
# ---------------------------------------------------------------------------
# split_docs IN OUTDIR: one file per rendered resource, named kind-name.yaml; prints
# the kinds with no bundled schema (CRDs) to OUTDIR/crds.list.
split_docs() {
  "$PY" "$CHART_CHECKS" split-docs "$1" "$2"
}

# CRD kinds: no schema ships with kubernetes-validate, so they are checked against a
# strict schema of exactly the fields the chart renders (names as in the upstream CRDs).
validate_crds() { # validate_crds DIR
  "$PY" "$CHART_CHECKS" validate-crds "$1"
}

# validate_k8s DIR VERSION: every non-CRD resource, strictly.
validate_k8s() {
  local dir="$1" v="$2" files=()
  local f
  for f in "$dir"/*.yaml; do
    grep -qxF "$(basename "$f")" "$dir/crds.list" && continue
    files+=("$f")
  done
  local out
  out="$(kubernetes-validate --strict --kubernetes-version "$v" "${files[@]}" 2>&1)"
  local rc=$?
  echo "$out"
  # Anything but a pass (an unknown kind, a warning) is a failure here.
  [[ $rc -eq 0 ]] && ! grep -qvE '^INFO .* passed for resource ' <<<"$out"
}

if need kubernetes-validate "kubernetes-validate works offline"; then
  # Canary: the validator must reject an unknown field, or a green run means nothing.
  mkdir -p "$WORK/canary"
  cat >"$WORK/canary/bad.yaml" <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: canary}
spec:
  ports: [{port: 80}]
  selectr: {app: x}
EOF
  run "kubernetes-validate --strict rejects an unknown field (canary)" \
    bash -c '! kubernetes-validate --strict --kubernetes-version 1.34.0 "$1"' _ "$WORK/canary/bad.yaml"
  for n in "${NAMES[@]}"; do
    has helm || break
    for v in "${K8S_VERSIONS[@]}"; do
      dir="$WORK/split-$n-$v"
      if ! render helm "$n" "$v" "$WORK/render-$n-$v.yaml" 2>"$WORK/render.err"; then
        fail "kubernetes $v strict validation ($n): render failed"; sed 's/^/      | /' "$WORK/render.err"; continue
      fi
      split_docs "$WORK/render-$n-$v.yaml" "$dir"
      count=$(( $(ls "$dir"/*.yaml | wc -l) - $(wc -l <"$dir/crds.list") ))
      run "kubernetes $v strict validation ($n: $count resources)" validate_k8s "$dir" "$v"
    done
    dir="$WORK/split-$n-${K8S_VERSIONS[0]}"
    if [[ -s "$dir/crds.list" ]]; then
      run "CRD kinds without bundled schema checked strictly ($n: $(paste -sd, "$dir/crds.list"))" validate_crds "$dir"
    fi
  done
fi

# ---------------------------------------------------------------------------
# checkov: zero failures; skips only from the skip file, applied per resource
# ---------------------------------------------------------------------------
# annotate_skips NAME SRCDIR DSTDIR: copy the rendered files, adding checkov skip
# annotations to the resources the skip file's filters match.
annotate_skips() {
  "$PY" "$CHART_CHECKS" annotate-skips "$1" "$2" "$3" "$SKIPS_FILE"
}

# checkov_scan NAME DIR: run checkov, print its figures, fail on any failed check.
checkov_scan() {
  local n="$1" dir="$2"
  checkov -d "$dir" --framework kubernetes --quiet --compact --skip-download -o json \
    >"$WORK/checkov-$n.json" 2>"$WORK/checkov-$n.err"
  "$PY" "$CHART_CHECKS" checkov-summary "$WORK/checkov-$n.json"
}

for n in "${NAMES[@]}"; do
  need checkov "checkov ($n)" || continue
  dir="$WORK/split-$n-${K8S_VERSIONS[0]}"
  if [[ ! -d "$dir" ]]; then
    has helm && render helm "$n" "${K8S_VERSIONS[0]}" "$WORK/ck-$n.yaml" 2>/dev/null && split_docs "$WORK/ck-$n.yaml" "$dir"
  fi
  [[ -d "$dir" ]] || { fail "checkov ($n): nothing rendered"; continue; }
  annotate_skips "$n" "$dir" "$WORK/checkov-in-$n" >"$WORK/skips-$n.log" 2>&1 \
    || { fail "checkov ($n): skip file unusable"; sed 's/^/      | /' "$WORK/skips-$n.log"; continue; }
  if checkov_scan "$n" "$WORK/checkov-in-$n" >"$WORK/checkov-$n.log" 2>&1; then
    pass "checkov ($n): $(head -n1 "$WORK/checkov-$n.log")"
  else
    fail "checkov ($n): $(head -n1 "$WORK/checkov-$n.log")"
    sed 's/^/      | /' "$WORK/checkov-$n.log" | tail -n 40
    tail -n 5 "$WORK/checkov-$n.err" | sed 's/^/      | /'
  fi
done

# ---------------------------------------------------------------------------
# Negative tests: every bad-*.yaml must fail, naming the problem
# ---------------------------------------------------------------------------
# Each file states its base overlay (`# base: local|staging|production|none`) and a
# regex (`# expect: ...`, case-insensitive) the error message must match.
negative() { # negative HELM FILE
  local h="$1" f="$2" base expect args=() out
  base="$(sed -n 's/^# base: *//p' "$f" | head -n1)"
  expect="$(sed -n 's/^# expect: *//p' "$f" | head -n1)"
  [[ -n "$expect" ]] || { echo "no '# expect:' line in $f"; return 1; }
  case "$base" in
    none) ;;
    local|staging) args+=(-f "$OVERLAY_DIR/$base.yaml") ;;
    production) args+=(-f "$OVERLAY_DIR/$base.yaml" --set "image.digest=$RELEASE_DIGEST") ;;
    *) echo "bad '# base:' line in $f: '$base'"; return 1 ;;
  esac
  if out="$("$h" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "${args[@]}" -f "$f" 2>&1)"; then
    echo "rendered without error (expected: /$expect/)"; return 1
  fi
  if grep -qiE -- "$expect" <<<"$out"; then
    echo "failed as expected: $(grep -iE -- "$expect" <<<"$out" | head -n1)"
  else
    echo "failed, but the error does not match /$expect/:"; echo "$out" | head -n 10; return 1
  fi
}
for f in "$CI_DIR"/bad-*.yaml; do
  for h in helm helm3; do
    need "$h" "negative $(basename "$f" .yaml) ($h)" || continue
    SHOW_ON_PASS=1 run "negative $(basename "$f" .yaml) ($h)" negative "$h" "$f"
  done
done

# ---------------------------------------------------------------------------
# README parameter tables in sync with values.yaml
# ---------------------------------------------------------------------------
readme_in_sync() {
  local tmp="$WORK/readme"
  mkdir -p "$tmp"
  cp "$CHART/values.yaml" "$CHART/README.md" "$tmp/"
  readme-generator --values "$tmp/values.yaml" --readme "$tmp/README.md" >"$tmp/gen.log" 2>&1 \
    || { cat "$tmp/gen.log"; return 1; }
  diff -u "$CHART/README.md" "$tmp/README.md" \
    || { echo "README.md is stale: run readme-generator --values $CHART/values.yaml --readme $CHART/README.md"; return 1; }
}
if need readme-generator "chart README parameters match values.yaml"; then
  run "chart README parameters match values.yaml (readme-generator)" readme_in_sync
fi

# ---------------------------------------------------------------------------
# yamllint over the values files (templates are not plain YAML)
# ---------------------------------------------------------------------------
if need yamllint "yamllint values files"; then
  run "yamllint values.yaml, overlays, CI files and skip file" yamllint -s -d \
    '{extends: default, rules: {line-length: {max: 160}, document-start: disable, comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}' \
    "$CHART/values.yaml" "$CHART/Chart.yaml" "$OVERLAY_DIR" "$CI_DIR" "$SKIPS_FILE" "$EXAMPLES_DIR"
fi

# NOTES (Helm 4 renders them offline with install --dry-run=client): with authentication
# off they open with the warning; with it on they show the bearer header and how to mint
# a token (API-token Secret) or use the development token (local).
notes_of() { # notes_of VALUES-ARGS...: the rendered NOTES
  helm install "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" --dry-run=client 2>&1 | sed -n '/^NOTES:/,$p'
}
auth_notes() {
  local off local_ staging
  off="$(notes_of -f "$CI_DIR/auth-disabled.yaml")"
  local_="$(notes_of -f "$OVERLAY_DIR/local.yaml")"
  staging="$(notes_of -f "$OVERLAY_DIR/staging.yaml")"
  grep -q 'WARNING: AUTHENTICATION IS OFF (auth.enabled=false)' <<<"$off" || { echo "auth-disabled: no warning in NOTES"; echo "$off" | head; return 1; }
  ! grep -q 'Authorization: Bearer' <<<"$off" || { echo "auth-disabled: NOTES still show a bearer header"; return 1; }
  grep -q 'curl -H "Authorization: Bearer $TOKEN"' <<<"$local_" && grep -q '^ *TOKEN=tkn_' <<<"$local_" \
    || { echo "local: NOTES lack the bearer header or the development token"; echo "$local_"; return 1; }
  grep -q 'WARNING' <<<"$local_$staging" && { echo "NOTES warn although authentication is on"; return 1; }
  grep -q 'mint-token' <<<"$staging" && grep -q 'Secret tasks-staging-api-tokens' <<<"$staging" \
    || { echo "staging: NOTES do not say how to mint a token and where its line goes"; echo "$staging"; return 1; }
  echo "NOTES: warning with auth off; bearer header, development token (local), mint-token and Secret (staging)"
}
if need helm "NOTES say how to authenticate"; then
  SHOW_ON_PASS=1 run "NOTES: loud warning with auth.enabled=false, bearer token instructions otherwise" auth_notes
fi

# The Helm test pod outlives its success (deleted before the next run): `helm test --logs`,
# which the deploy recipes pass, reads its logs after the test; a hook-succeeded policy
# deletes the pod first and makes a passing test exit 1 on Helm 3 and early Helm 4.
test_pod_kept() {
  local policy
  policy="$(helm template "$RELEASE" "$CHART" -f "$OVERLAY_DIR/local.yaml" --show-only templates/tests/pod-test.yaml \
    | sed -n 's/.*helm.sh\/hook-delete-policy: *//p' | tr -d '"')"
  [[ -n "$policy" && "$policy" != *hook-succeeded* ]] || { echo "test pod delete policy: '$policy'"; return 1; }
  echo "test pod delete policy: $policy"
}
if need helm "Helm test pod kept for --logs"; then
  run "Helm test pod is kept after success so helm test --logs works" test_pod_kept
fi

# Chart.yaml's kubeVersion gate: clusters older than 1.29 are refused.
kube_gate() {
  local out
  if out="$(helm template "$RELEASE" "$CHART" -f "$OVERLAY_DIR/local.yaml" --kube-version 1.28.9 2>&1)"; then
    echo "rendered for Kubernetes 1.28"; return 1
  fi
  grep -i "kubeVersion" <<<"$out"
}
if need helm "kubeVersion gate"; then
  run "kubeVersion >=1.29 gate refuses Kubernetes 1.28" kube_gate
fi

# ---------------------------------------------------------------------------
# Database tier: release stability, role convergence, backup and restore
# ---------------------------------------------------------------------------
DB_CHECKS="$ROOT/scripts/lib/chart_db_checks.py"
if need helm "releases leave PostgreSQL alone"; then
  run "consecutive releases: PostgreSQL pod template byte-identical, selectors and StatefulSet immutable fields unchanged" \
    "$PY" "$DB_CHECKS" release-stability --helm helm --chart "$CHART" --set-digest "$RELEASE_DIGEST" \
    --values "$OVERLAY_DIR/local.yaml" "$OVERLAY_DIR/staging.yaml" "$OVERLAY_DIR/production.yaml" "$CI_DIR/all-features.yaml"
fi
if need helm "role convergence on a real PostgreSQL" && need postgres "role convergence on a real PostgreSQL"; then
  run "rendered role scripts converge a real PostgreSQL initialised the old way, and a fresh one (least privilege)" \
    "$PY" "$DB_CHECKS" roles --helm helm --chart "$CHART" --pg-sh "$ROOT/scripts/pg.sh"
fi
if need helm "backup and restore on a real PostgreSQL" && need postgres "backup and restore on a real PostgreSQL"; then
  run "rendered backup command + restore runbook commands: every row restored" \
    "$PY" "$DB_CHECKS" backup-restore --helm helm --chart "$CHART" --pg-sh "$ROOT/scripts/pg.sh" \
    --runbook docs/runbooks/restore-from-dump.md
fi
if need helm "TLS renewal reaches a real PostgreSQL" && need postgres "TLS renewal reaches a real PostgreSQL"; then
  run "rendered tls-reloader sidecar: a replaced certificate is served without a restart" \
    "$PY" "$DB_CHECKS" tls-reload --helm helm --chart "$CHART" --pg-sh "$ROOT/scripts/pg.sh"
fi
# CloudNativePG's own manifests of the example: strict schemas of the fields used.
cnpg_manifests() {
  split_docs "$EXAMPLES_DIR/cloudnativepg/cluster.yaml" "$WORK/cnpg" && validate_crds "$WORK/cnpg"
}
run "CloudNativePG example manifests (Cluster, Pooler) checked strictly" cnpg_manifests

# ---------------------------------------------------------------------------
# Cluster compatibility: DNS egress presets, volume permissions (Python, one line each)
# ---------------------------------------------------------------------------
# py_checks NAME CMD...: run a Python check file printing PASS/FAIL/SKIP lines and its own
# "N passed, M failed[, K skipped]"; its lines count here, its summary line is not repeated.
py_checks() {
  local name="$1"; shift
  local out="$WORK/py.$RANDOM" rc p f s
  "$@" >"$out" 2>&1; rc=$?
  grep -vE '^[0-9]+ passed, [0-9]+ failed' "$out"
  read -r p f s < <(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed\(, \([0-9]*\) skipped\)\{0,1\}$/\1 \2 \4/p' "$out" | tail -n 1)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
  while IFS= read -r line; do FAILED_NAMES+=("${line#FAIL  }"); done < <(grep '^FAIL  ' "$out")
  if [[ -z "${p:-}" || ( $rc -ne 0 && ${f:-0} -eq 0 ) ]]; then fail "$name (exit $rc, no summary)"; fi
}
if need helm "DNS egress presets"; then
  kv=(); has kubernetes-validate && kv=("$(command -v kubernetes-validate)")
  py_checks "DNS egress presets" "$PY" scripts/lib/chart_policy_test.py helm "$CHART" "$OVERLAY_DIR/staging.yaml" "${kv[@]}"
  py_checks "volume permissions" "$PY" scripts/lib/volume_permissions_test.py helm "$CHART" "$OVERLAY_DIR/staging.yaml"
fi

# The JSON schema itself must be valid JSON Schema (draft-07).
run "values.schema.json is a valid draft-07 JSON schema" "$PY" "$CHART_CHECKS" check-schema "$CHART/values.schema.json"

echo
if [[ $failed -gt 0 ]]; then
  echo "failed checks:"; printf '  - %s\n' "${FAILED_NAMES[@]}"
fi
if [[ $skipped -gt 0 ]]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[[ $failed -eq 0 ]]
