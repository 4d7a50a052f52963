#!/usr/bin/env bash
# Build or push the container image.
#
#   scripts/image.sh build   build tasks-server:<version>-<short sha>[-dirty] and print the tag
#   scripts/image.sh push    tag and push <registry>/<owner>/tasks-server:<that tag>
#
# IMAGE_TARGET=runtime (default) builds from source in docker/Dockerfile (needs registry
# access for the Rust base image); IMAGE_TARGET=host packages a static binary compiled on
# this machine (no pull needed; the musl target and musl-tools come from
# scripts/ensure-tools.sh musl, Docker Engine from scripts/docker-engine.sh). Push needs REGISTRY_OWNER; REGISTRY defaults to ghcr.io
# and `docker login` must already be done (credentials never pass through this script).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

IMAGE_TARGET="${IMAGE_TARGET:-runtime}"
REPOSITORY="${IMAGE_REPOSITORY:-tasks-server}"
say() { printf '+ %s\n' "$*" >&2; }
run() { say "$*"; "$@"; }

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
sha="$(git rev-parse --short=12 HEAD)"
tag="${version}-${sha}"
if [[ -n "$(git status --porcelain)" ]]; then
    tag="${tag}-dirty"
fi
image="${REPOSITORY}:${tag}"

build() {
    # Every prerequisite before the build: the Rust musl target and Debian's musl-tools,
    # then Docker Engine (each installed when missing, or a message naming it).
    if [[ "$IMAGE_TARGET" == host ]]; then
        scripts/ensure-tools.sh musl
    fi
    if ! docker info >/dev/null 2>&1; then
        DOCKER_HOST="$(scripts/docker-engine.sh ensure)"
        export DOCKER_HOST
    fi
    if [[ "$IMAGE_TARGET" == host ]]; then
        run cargo build --release --locked --target x86_64-unknown-linux-musl -p tasks-server
        run mkdir -p target/docker
        run cp "${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/release/tasks-server" target/docker/tasks-server
        run cp /etc/ssl/certs/ca-certificates.crt target/docker/ca-certificates.crt
    fi
    run docker build -f docker/Dockerfile --target "$IMAGE_TARGET" \
        --build-arg "VERSION=${version}" \
        --build-arg "REVISION=$(git rev-parse HEAD)" \
        --build-arg "CREATED=$(git log -1 --format=%cI)" \
        -t "$image" .
    echo "$image"
}

push() {
    : "${REGISTRY_OWNER:?set REGISTRY_OWNER (the GHCR user or organisation)}"
    local registry="${REGISTRY:-ghcr.io}" owner
    owner="$(tr '[:upper:]' '[:lower:]' <<<"$REGISTRY_OWNER")"
    if [[ "$tag" == *-dirty ]]; then
        echo "image.sh: refusing to push an image of a dirty tree ($tag); commit first" >&2
        exit 1
    fi
    local remote="${registry}/${owner}/${REPOSITORY}:${tag}"
    run docker tag "$image" "$remote"
    run docker push "$remote"
    echo "$remote"
}

case "${1:-}" in
    build) build ;;
    push) build >/dev/null && push ;;
    *) echo "usage: $0 build|push" >&2; exit 2 ;;
esac
