#!/usr/bin/env bash
# Local deployment on minikube or the repository's own cluster (the `just deploy-local` family).
#
#   scripts/deploy-local.sh deploy         check prerequisites, build the image, load it into
#                                          the cluster's nodes, helm upgrade --install (wait,
#                                          roll back on failure), helm test, print how to reach
#                                          the API
#   scripts/deploy-local.sh undeploy       helm uninstall, then delete the namespace (PVCs too)
#   scripts/deploy-local.sh logs           app logs of the release (follows; LOGS_FOLLOW=0: don't)
#   scripts/deploy-local.sh port-forward   API on 127.0.0.1:8080, admin on 127.0.0.1:9090
#   scripts/deploy-local.sh status         helm status + the release's workloads, pods, PVCs
#
# helm and kubectl missing from PATH are installed into .tools/bin (scripts/ensure-tools.sh).
#
# Environment:
#   LOCAL_CLUSTER     minikube (default) or tasks: the repository's own cluster
#                     (scripts/cluster.sh up, or `just cluster-up`), reached with its
#                     kubeconfig (${CLUSTER_STATE_DIR:-.cluster}/kubeconfig, context tasks);
#                     the image is imported into every node's containerd
#                     (scripts/cluster.sh load-image, root) and PostgreSQL comes from the
#                     cluster's registry (the values file `up` writes next to the kubeconfig)
#   CLUSTER_STATE_DIR LOCAL_CLUSTER=tasks: the state directory of the checkout that started
#                     the cluster (default .cluster)
#   MINIKUBE_PROFILE  minikube profile, also the kube context used (default minikube); the
#                     recipes never use whatever context happens to be current
#   NAMESPACE         namespace of the release (default tasks-local)
#   IMAGE_TARGET      Dockerfile target: runtime (default, compiles in Docker; needs to
#                     pull rust:) or host (packages a static binary compiled on this machine)
#   HELM_TIMEOUT      helm --timeout (default 5m)
#   DRY_RUN=1         print the commands without running them
#   KUBE_CONTEXT      logs/status/port-forward only: another context (e.g. staging), with
#                     NAMESPACE
set -euo pipefail
DEPLOY_NAME="deploy-local"
# shellcheck source=scripts/deploy-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/deploy-lib.sh"
cd "$DEPLOY_ROOT"

PROFILE="${MINIKUBE_PROFILE:-minikube}"
NAMESPACE="${NAMESPACE:-tasks-local}"
LOCAL_CLUSTER="${LOCAL_CLUSTER:-minikube}"
# HELM_KUBE / KUBECTL_KUBE: how every helm and kubectl command names its cluster.
case "$LOCAL_CLUSTER" in
    minikube)
        CONTEXT="${KUBE_CONTEXT:-$PROFILE}"
        HELM_KUBE=(--kube-context "$CONTEXT")
        KUBECTL_KUBE=(--context "$CONTEXT")
        ;;
    tasks)
        CLUSTER_STATE="${CLUSTER_STATE_DIR:-.cluster}"
        KUBECONFIG_FILE="${CLUSTER_STATE}/kubeconfig"
        CLUSTER_VALUES="${CLUSTER_STATE}/deploy-local-values.yaml"
        CONTEXT="${KUBE_CONTEXT:-tasks}"
        HELM_KUBE=(--kubeconfig "$KUBECONFIG_FILE" --kube-context "$CONTEXT")
        KUBECTL_KUBE=(--kubeconfig "$KUBECONFIG_FILE" --context "$CONTEXT")
        ;;
    *) die "LOCAL_CLUSTER=${LOCAL_CLUSTER}: expected minikube or tasks" ;;
esac
IMAGE_REPO="tasks-server"
HELM_TIMEOUT="${HELM_TIMEOUT:-5m}"
API_PORT="${LOCAL_API_PORT:-8080}"
ADMIN_PORT="${LOCAL_ADMIN_PORT:-9090}"

check_minikube_running() {
    local host
    host="$(minikube -p "$PROFILE" status --format '{{.Host}}' 2>/dev/null || true)"
    [[ "$host" == Running ]] \
        || MISSING+=("minikube profile '$PROFILE' is not running (status: ${host:-none}); start it: minikube start -p $PROFILE")
}

# The repository's own cluster: its kubeconfig and values file exist and its API server
# answers (a read-only query).
check_tasks_cluster_running() {
    local start="start it as root: ./just cluster-up (scripts/cluster.sh up --nodes 2), or set CLUSTER_STATE_DIR to the .cluster of the checkout that started it"
    if [[ ! -f "$KUBECONFIG_FILE" || ! -f "$CLUSTER_VALUES" ]]; then
        MISSING+=("the repository's cluster: no ${KUBECONFIG_FILE} and ${CLUSTER_VALUES}; ${start}")
    elif ! kubectl "${KUBECTL_KUBE[@]}" get --raw /readyz >/dev/null 2>&1; then
        MISSING+=("the repository's cluster (${KUBECONFIG_FILE}) does not answer; ${start}")
    fi
}

check_docker_daemon() {
    docker info >/dev/null 2>&1 \
        || MISSING+=("docker: the Docker daemon is not reachable; start Docker Engine (or Docker Desktop)")
}

# The tag of this build: the commit, marked dirty (with a timestamp) for uncommitted
# changes, so every build of a changed tree is a new tag and the pods roll.
local_tag() {
    local sha
    sha="$(git rev-parse --short=12 HEAD 2>/dev/null || echo nogit)"
    if git_dirty 2>/dev/null; then
        printf 'dev-%s-dirty-%s\n' "$sha" "$(date -u +%Y%m%d%H%M%S)"
    else
        printf 'dev-%s\n' "$sha"
    fi
}

cmd_deploy() {
    check_image_target
    project_tools helm kubectl
    need git "$HINT_GIT"
    need docker "$HINT_DOCKER"
    [[ "$LOCAL_CLUSTER" != minikube ]] || need minikube "$HINT_MINIKUBE"
    need kubectl "$HINT_KUBECTL"
    need helm "$HINT_HELM"
    fail_missing
    check_docker_daemon
    if [[ "$LOCAL_CLUSTER" == minikube ]]; then check_minikube_running; else check_tasks_cluster_running; fi
    fail_missing

    local tag image sha
    tag="$(local_tag)"
    image="${IMAGE_REPO}:${tag}"
    sha="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
    say "image ${image} (target ${IMAGE_TARGET}), release ${RELEASE} in namespace ${NAMESPACE}, context ${CONTEXT}"

    # The same build as `just image` (deploy-lib's build_image), IMAGE_TARGET included.
    build_image "$image" "$sha"
    local values=(-f "$VALUES_DIR/local.yaml")
    if [[ "$LOCAL_CLUSTER" == minikube ]]; then
        run minikube -p "$PROFILE" image load "$image"
    else
        # Into every node's containerd, as `kind load docker-image` does (cluster/localcluster).
        run scripts/cluster.sh load-image "$image"
        values+=(-f "$CLUSTER_VALUES")
    fi

    local flags=()
    mapfile -t flags < <(wait_flags)
    run helm upgrade --install "$RELEASE" "$CHART" \
        "${HELM_KUBE[@]}" --namespace "$NAMESPACE" --create-namespace \
        "${values[@]}" \
        --set-string image.tag="$tag" \
        "${flags[@]}" --timeout "$HELM_TIMEOUT"
    run helm test "$RELEASE" "${HELM_KUBE[@]}" --namespace "$NAMESPACE" --logs --timeout "$HELM_TIMEOUT"

    # The API needs a bearer token: the local overlay's explicit development token.
    local token
    token="$(sed -n 's/^ *developmentToken: *//p' "$VALUES_DIR/local.yaml" | head -n 1)"
    cat <<EOF

tasks-server ${tag} is running in namespace ${NAMESPACE} (context ${CONTEXT}).
Reach the API:
  just port-forward        # = kubectl ${KUBECTL_KUBE[*]} -n ${NAMESPACE} port-forward deployment/${APP_FULLNAME} ${API_PORT}:http ${ADMIN_PORT}:admin
  curl -H "Authorization: Bearer ${token}" http://127.0.0.1:${API_PORT}/v1/tasks
  curl -H "Authorization: Bearer ${token}" -X POST -H 'Content-Type: application/json' -d '{"title":"hello"}' http://127.0.0.1:${API_PORT}/v1/tasks
  curl http://127.0.0.1:${ADMIN_PORT}/readyz
Logs: just logs    Status: just status    Remove: just undeploy-local
EOF
}

cmd_undeploy() {
    project_tools helm kubectl
    need kubectl "$HINT_KUBECTL"
    need helm "$HINT_HELM"
    fail_missing
    run helm uninstall "$RELEASE" "${HELM_KUBE[@]}" --namespace "$NAMESPACE" --ignore-not-found --wait --timeout "$HELM_TIMEOUT"
    # The PostgreSQL PVC outlives the release on purpose (retention policy Retain); the
    # namespace is the local sandbox, so deleting it removes the data too.
    run kubectl "${KUBECTL_KUBE[@]}" delete namespace "$NAMESPACE" --ignore-not-found --wait=true --timeout=120s
}

cmd_logs() {
    project_tools kubectl
    need kubectl "$HINT_KUBECTL"
    fail_missing
    local follow=(--follow)
    [[ "${LOGS_FOLLOW:-1}" == 1 ]] || follow=()
    run kubectl "${KUBECTL_KUBE[@]}" --namespace "$NAMESPACE" logs \
        --selector "app.kubernetes.io/instance=${RELEASE},app.kubernetes.io/component=backend" \
        --all-containers --prefix --timestamps --tail=200 --max-log-requests=20 "${follow[@]}"
}

cmd_port_forward() {
    project_tools kubectl
    need kubectl "$HINT_KUBECTL"
    fail_missing
    say "API http://127.0.0.1:${API_PORT}/v1/tasks, admin http://127.0.0.1:${ADMIN_PORT}/readyz (Ctrl-C stops)"
    run kubectl "${KUBECTL_KUBE[@]}" --namespace "$NAMESPACE" port-forward "deployment/${APP_FULLNAME}" \
        "${API_PORT}:http" "${ADMIN_PORT}:admin"
}

cmd_status() {
    project_tools helm kubectl
    need kubectl "$HINT_KUBECTL"
    need helm "$HINT_HELM"
    fail_missing
    run helm status "$RELEASE" "${HELM_KUBE[@]}" --namespace "$NAMESPACE"
    run kubectl "${KUBECTL_KUBE[@]}" --namespace "$NAMESPACE" get deployments,statefulsets,pods,services,pvc \
        --selector "app.kubernetes.io/instance=${RELEASE}" -o wide
}

case "${1:-}" in
    deploy) cmd_deploy ;;
    undeploy) cmd_undeploy ;;
    logs) cmd_logs ;;
    port-forward) cmd_port_forward ;;
    status) cmd_status ;;
    *) echo "usage: $0 deploy|undeploy|logs|port-forward|status" >&2; exit 2 ;;
esac
