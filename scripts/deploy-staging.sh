#!/usr/bin/env bash
# Staging deployment (the `just deploy-staging` / `just rollback-staging` recipes).
#
#   scripts/deploy-staging.sh deploy            build and push ${REGISTRY}/<owner>/tasks-server:<git-sha>,
#                                               deploy it BY DIGEST with values/staging.yaml
#                                               (and EXTRA_VALUES; wait, roll back on failure),
#                                               then helm test
#   scripts/deploy-staging.sh rollback [REV]    helm rollback to REV (default: the previous revision)
#
# Required, always explicit (the current kubectl context is never used by accident):
#   KUBE_CONTEXT      kubeconfig context of the staging cluster
#   REGISTRY_OWNER    owner (user or organisation; on GHCR the GitHub one) the image is
#                     pushed under
# Optional:
#   REGISTRY          registry host[:port] the image is pushed to and the nodes pull from
#                     (default ghcr.io); a plain-HTTP registry must be on loopback for
#                     Docker Engine to push to it without daemon configuration (e.g. the
#                     repository's own cluster: 127.0.0.1:5001, cluster/README.md)
#   IMAGE_TARGET      Dockerfile target, as for `just image` and deploy-local: runtime
#                     (default, compiles in Docker; pulls rust:) or host (a static musl
#                     binary built on this machine, musl-tools from scripts/ensure-tools.sh)
#   EXTRA_VALUES      a values file applied after values/staging.yaml: the platform's
#                     specifics (a mirrored PostgreSQL image, a smaller volume, ...); the
#                     recipe's own --set-string values (image, Secrets) still win. Relative
#                     paths are taken from the directory the script starts in (the
#                     checkout's root under just); a file inside the checkout must be
#                     committed (the tree must be clean)
#   NAMESPACE         namespace of the release (default tasks-staging; must exist)
#   DB_SECRET         existing Secret with the database passwords, keys password and
#                     postgres-password (default tasks-staging-db,
#                     as values/staging.yaml names it)
#   API_TOKENS_SECRET existing Secret with the API-token lines, key api_tokens (default
#                     tasks-staging-api-tokens, as values/staging.yaml names it)
#   TEST_TOKEN_SECRET existing Secret with the Helm test's plain API token, key token
#                     (default tasks-staging-helm-test-token)
#   PULL_SECRET       existing docker-registry Secret for a private package
#   HELM_TIMEOUT      helm --timeout (default 10m)
#   DRY_RUN=1         print the commands without running them; the digest of the image
#                     that would be pushed is shown as DRY_RUN_DIGEST (default all zeros)
#
# Docker Engine is started when none answers (scripts/docker-engine.sh, as `just image`
# does); helm and kubectl missing from PATH are installed into .tools/bin.
# Credentials never appear on a command line: `docker push` uses the login you made
# beforehand (`docker login ghcr.io`, or the CI's GITHUB_TOKEN), and the cluster reads the
# database password and the API tokens from existing Secrets (docs/runbooks/deploy-workflows.md).
set -euo pipefail
DEPLOY_NAME="deploy-staging"
# shellcheck source=scripts/deploy-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/deploy-lib.sh"
# EXTRA_VALUES is named from where the script was started (before the cd below).
STARTED_IN="$PWD"
cd "$DEPLOY_ROOT"

NAMESPACE="${NAMESPACE:-tasks-staging}"
DB_SECRET="${DB_SECRET:-tasks-staging-db}"
API_TOKENS_SECRET="${API_TOKENS_SECRET:-tasks-staging-api-tokens}"
TEST_TOKEN_SECRET="${TEST_TOKEN_SECRET:-tasks-staging-helm-test-token}"
HELM_TIMEOUT="${HELM_TIMEOUT:-10m}"
REGISTRY="${REGISTRY:-ghcr.io}"
EXTRA_VALUES="${EXTRA_VALUES:-}"

# check_registry: REGISTRY is the first component of an image reference, so it must read
# as a registry host the way docker and containerd read it (a dot or a port, or
# localhost); anything else would silently become a Docker Hub path (docker.io/REGISTRY/...).
check_registry() {
    local r="$REGISTRY" port
    [[ "$r" != *://* ]] || die "REGISTRY '$r' has a scheme: give host[:port] only (e.g. ghcr.io, 127.0.0.1:5001); docker chooses HTTPS, or plain HTTP for a loopback registry, itself"
    [[ "$r" != */* ]] || die "REGISTRY '$r' has a path: give host[:port] only; the image is \${REGISTRY}/<REGISTRY_OWNER>/tasks-server"
    [[ "$r" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:([0-9]{1,5}))?$ ]] \
        || die "REGISTRY '$r' is not a registry host[:port] (letters, digits, dots and hyphens, an optional :port)"
    port="${BASH_REMATCH[3]}"
    [[ -z "$port" ]] || (( 10#$port >= 1 && 10#$port <= 65535 )) || die "REGISTRY '$r': port $port is not a TCP port"
    [[ "$r" == *.* || "$r" == *:* || "$r" == localhost ]] \
        || die "REGISTRY '$r' is not a registry host: without a dot or a port (or localhost), docker reads it as a Docker Hub namespace (docker.io/$r/...)"
}

# extra_values_file: the absolute path of EXTRA_VALUES, which must be a readable file.
extra_values_file() {
    local file="$EXTRA_VALUES"
    [[ "$file" == /* ]] || file="${STARTED_IN}/${file}"
    [[ -f "$file" && -r "$file" ]] \
        || die "EXTRA_VALUES '$EXTRA_VALUES' does not exist or is not a readable file$([[ "$EXTRA_VALUES" == /* ]] || printf ' (looked for %s)' "$file")"
    printf '%s\n' "$file"
}

require_context() {
    [[ -n "${KUBE_CONTEXT:-}" ]] \
        || die "KUBE_CONTEXT is not set: name the staging cluster's kube context explicitly (kubectl config get-contexts); the current context is never used"
    project_tools helm kubectl
    need kubectl "$HINT_KUBECTL"
    need helm "$HINT_HELM"
    fail_missing
    local contexts
    contexts="$(kubectl config get-contexts -o name 2>/dev/null || true)"
    grep -qxF -- "$KUBE_CONTEXT" <<<"$contexts" \
        || die "kube context '$KUBE_CONTEXT' is not in your kubeconfig (kubectl config get-contexts -o name)"
}

cmd_deploy() {
    check_registry
    [[ -n "${REGISTRY_OWNER:-}" ]] \
        || die "REGISTRY_OWNER is not set: the owner to push to (${REGISTRY}/<owner>/tasks-server; on GHCR your GitHub user or organisation)"
    [[ "$REGISTRY_OWNER" =~ ^[A-Za-z0-9][A-Za-z0-9-]*$ ]] \
        || die "REGISTRY_OWNER '$REGISTRY_OWNER' is not a user or organisation name (letters, digits and hyphens, as GitHub allows)"
    check_image_target
    local extra=() extra_file
    if [[ -n "$EXTRA_VALUES" ]]; then
        extra_file="$(extra_values_file)" || exit 1
        extra=(-f "$extra_file")
    fi
    need git "$HINT_GIT"
    fail_missing
    git rev-parse --git-dir >/dev/null 2>&1 || die "not a git checkout: staging images are named by their commit"
    if git_dirty; then
        git status --short >&2
        die "the work tree has uncommitted changes or untracked files: commit or stash them; staging deploys only a commit, so the image tag names exactly what runs"
    fi
    require_context

    local owner sha repo image digest
    owner="$(printf '%s' "$REGISTRY_OWNER" | tr '[:upper:]' '[:lower:]')"   # repository names are lower-case
    sha="$(git_sha)"
    repo="${REGISTRY}/${owner}/tasks-server"
    image="${repo}:${sha}"
    say "commit ${sha}, image ${image}, release ${RELEASE} in ${KUBE_CONTEXT}/${NAMESPACE}"

    # The namespace and the database Secret are set up once by the platform; never create
    # credentials here.
    kubectl --context "$KUBE_CONTEXT" get namespace "$NAMESPACE" >/dev/null 2>&1 \
        || die "namespace '$NAMESPACE' does not exist in '$KUBE_CONTEXT' (create it with its Secret first; see docs/runbooks/)"
    kubectl --context "$KUBE_CONTEXT" --namespace "$NAMESPACE" get secret "$DB_SECRET" >/dev/null 2>&1 \
        || die "Secret '$DB_SECRET' (keys 'password' for the application role and 'postgres-password' for the bootstrap superuser) is missing in $KUBE_CONTEXT/$NAMESPACE: create it from files or your secret manager, e.g. kubectl -n $NAMESPACE create secret generic $DB_SECRET --from-file=password=./password --from-file=postgres-password=./postgres-password"
    kubectl --context "$KUBE_CONTEXT" --namespace "$NAMESPACE" get secret "$API_TOKENS_SECRET" >/dev/null 2>&1 \
        || die "Secret '$API_TOKENS_SECRET' (key 'api_tokens': API-token lines, hashes only) is missing in $KUBE_CONTEXT/$NAMESPACE: mint tokens with tasks-server mint-token and create it, e.g. kubectl -n $NAMESPACE create secret generic $API_TOKENS_SECRET --from-file=api_tokens=./api_tokens (docs/runbooks/deploy-workflows.md)"
    kubectl --context "$KUBE_CONTEXT" --namespace "$NAMESPACE" get secret "$TEST_TOKEN_SECRET" >/dev/null 2>&1 \
        || die "Secret '$TEST_TOKEN_SECRET' (key 'token': the Helm test's API token) is missing in $KUBE_CONTEXT/$NAMESPACE: e.g. kubectl -n $NAMESPACE create secret generic $TEST_TOKEN_SECRET --from-file=token=./helm-test.token, its line in $API_TOKENS_SECRET (docs/runbooks/deploy-workflows.md)"

    # The same build as `just image` and deploy-local (deploy-lib's build_image): musl-tools
    # for IMAGE_TARGET=host, Docker Engine when none answers, then docker build.
    build_image "$image" "$sha"
    run docker push "$image"
    if is_dry_run; then
        digest="${DRY_RUN_DIGEST:-sha256:0000000000000000000000000000000000000000000000000000000000000000}"
        say "dry run: the digest of the pushed image would be used; shown as ${digest}"
    else
        # The digest the registry gave the push, read back as Docker recorded it for this
        # repository (a literal prefix match: REGISTRY may hold dots and a port).
        local entry
        digest=""
        while IFS= read -r entry; do
            if [[ "$entry" == "${repo}@sha256:"* ]]; then digest="${entry#"${repo}@"}"; break; fi
        done < <(docker inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$image")
        [[ -n "$digest" ]] || die "no registry digest for ${image} after the push"
    fi
    [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || die "bad digest '${digest}'"
    say "deploying ${repo}@${digest}"

    local flags=() pull=()
    mapfile -t flags < <(wait_flags)
    [[ -z "${PULL_SECRET:-}" ]] || pull=(--set-string "imagePullSecrets[0].name=${PULL_SECRET}")
    run helm upgrade --install "$RELEASE" "$CHART" \
        --kube-context "$KUBE_CONTEXT" --namespace "$NAMESPACE" \
        -f "$VALUES_DIR/staging.yaml" "${extra[@]}" \
        --set-string image.registry="$REGISTRY" \
        --set-string image.repository="${owner}/tasks-server" \
        --set-string image.tag="$sha" \
        --set-string image.digest="$digest" \
        --set-string postgresql.auth.existingSecret="$DB_SECRET" \
        --set-string auth.apiTokens.existingSecret="$API_TOKENS_SECRET" \
        --set-string tests.apiToken.existingSecret="$TEST_TOKEN_SECRET" \
        "${pull[@]}" \
        "${flags[@]}" --timeout "$HELM_TIMEOUT"
    run helm test "$RELEASE" --kube-context "$KUBE_CONTEXT" --namespace "$NAMESPACE" --logs --timeout "$HELM_TIMEOUT"
    run helm history "$RELEASE" --kube-context "$KUBE_CONTEXT" --namespace "$NAMESPACE" --max 5
    say "done: roll back with: KUBE_CONTEXT=${KUBE_CONTEXT} just rollback-staging [REVISION]"
}

cmd_rollback() {
    local revision="${1:-}"
    [[ -z "$revision" || "$revision" =~ ^[1-9][0-9]*$ ]] || die "REVISION must be a release revision number (helm history), got '$revision'"
    require_context
    local wait=()
    if [[ "$(helm_major)" == 4 ]]; then wait=(--wait=watcher); else wait=(--wait); fi
    local rev=()
    [[ -z "$revision" ]] || rev=("$revision")
    run helm rollback "$RELEASE" "${rev[@]}" --kube-context "$KUBE_CONTEXT" --namespace "$NAMESPACE" \
        "${wait[@]}" --timeout "$HELM_TIMEOUT"
    run helm test "$RELEASE" --kube-context "$KUBE_CONTEXT" --namespace "$NAMESPACE" --logs --timeout "$HELM_TIMEOUT"
    run helm history "$RELEASE" --kube-context "$KUBE_CONTEXT" --namespace "$NAMESPACE" --max 5
}

case "${1:-}" in
    deploy) cmd_deploy ;;
    rollback) shift; [[ $# -le 1 ]] || die "usage: $0 rollback [REVISION]"; cmd_rollback "${1:-}" ;;
    *) echo "usage: $0 deploy | rollback [REVISION]" >&2; exit 2 ;;
esac
