"""A real single-node Kubernetes on this machine, and the release scenarios run on it.

One module per concern:

- ``paths``: where the cluster keeps its state (``.cluster/`` of the checkout) and the
  caches shared by clones on the same machine (``$XDG_CACHE_HOME/tasks-cluster``).
- ``tools``: building the third-party tools from the Go module proxy (cached) and
  installing Debian packages.
- ``images``: the root filesystems of the images the cluster needs beside the
  service's own (PostgreSQL, pause).
- ``registry``: the OCI registry on loopback, pushing images and the chart, signing,
  SBOMs.
- ``pki``, ``node``, ``control_plane``: certificates, the node's network namespace,
  containerd, kubelet, kube-proxy, etcd and the control plane.
- ``scenarios``: the lifecycle scenarios (install, upgrade, rolling update, crashes,
  rollback) with their figures.

Entry point: ``python3 -m localcluster --help`` (``scripts/cluster.sh`` sets PYTHONPATH).
"""
