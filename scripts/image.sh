#!/usr/bin/env bash
# Build or push the container image.
#
#   scripts/image.sh build   build tasks-server:<version>-<short sha>[-dirty] and print the tag
#   scripts/image.sh push    tag and push <registry>/<owner>/tasks-server:<that tag>
#
# IMAGE_TARGET=runtime (default) builds from source in docker/Dockerfile (needs registry
# access for the Rust base image); IMAGE_TARGET=host packages a static binary compiled on
# this machine (no pull needed; the musl target and musl-tools come from
# scripts/ensure-tools.sh musl, Docker Engine from scripts/docker-engine.sh). The build is
# deploy-lib's build_image, the same one deploy-local and deploy-staging run. Push needs
# REGISTRY_OWNER; REGISTRY defaults to ghcr.io and `docker login` must already be done
# (credentials never pass through this script).
set -euo pipefail
DEPLOY_NAME="image"
# This script always builds for real: dry runs belong to the deploy recipes that share
# its build (a DRY_RUN=1 left in the environment must not fake a tag).
unset DRY_RUN
# shellcheck source=scripts/deploy-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/deploy-lib.sh"
cd "$DEPLOY_ROOT"

REPOSITORY="${IMAGE_REPOSITORY:-tasks-server}"

version="$(chart_version)"
sha="$(git rev-parse --short=12 HEAD)"
tag="${version}-${sha}"
if [[ -n "$(git status --porcelain)" ]]; then
    tag="${tag}-dirty"
fi
image="${REPOSITORY}:${tag}"

build() {
    build_image "$image" "$(git rev-parse HEAD)"
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
    # Not `build && push`: on the left of && a failed step inside build would not stop
    # the script (set -e is off there), and push would tag whatever image had the name.
    push) build >/dev/null; push ;;
    *) echo "usage: $0 build|push" >&2; exit 2 ;;
esac
