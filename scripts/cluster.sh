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
# The package's one module from outside the standard library: cryptography (pki.py, the
# cluster's certificates). Debian's python3-cryptography when missing, or a message.
if ! python3 -c 'import cryptography' 2>/dev/null; then
    # shellcheck source=scripts/lib/debian.sh
    source "$ROOT/scripts/lib/debian.sh"
    debian_install python3-cryptography || true
    python3 -c 'import cryptography' 2>/dev/null || {
        echo "cluster: the Python module cryptography is missing for $(command -v python3): install Debian's python3-cryptography (or pip install cryptography)" >&2
        exit 1
    }
fi
PYTHONPATH="$ROOT/cluster${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m localcluster "$@"
