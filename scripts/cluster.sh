#!/usr/bin/env bash
# Thin entry to the cluster package (cluster/localcluster, Python): a real single-node
# Kubernetes built from the Go module proxy, a registry on the cluster's bridge, and the
# release scenarios run on them.
#
#   scripts/cluster.sh up|down|status|test|prefetch|build-tools|load-image IMAGE|fresh-machine|unit-tests
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "$(id -u)" != 0 ]]; then
    echo "cluster: a node needs root (network namespaces, mounts, cgroups); run as root" >&2
    exit 1
fi
# prefetch runs beside other suites (./just test): it needs none of these, and
# ensure-tools is not meant to run twice at once; load-image needs only docker and ctr.
if [[ "${1:-}" != prefetch && "${1:-}" != load-image ]]; then
    "$ROOT/scripts/ensure-tools.sh" helm helm3 kubectl wrk >&2
fi
export PATH="$ROOT/.tools/bin:$PATH"
PYTHONPATH="$ROOT/cluster${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m localcluster "$@"
