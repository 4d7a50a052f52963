"""A node: containerd, the kubelet and kube-proxy inside the node's network namespace.

containerd and runc are Debian's (1.6 and 1.1): they install from the package
registry this machine reaches in seconds, speak CRI v1, and run containers under
cgroup v1, which is what this machine's kernel gives; building containerd 2 from the
module proxy would add minutes to every fresh run for no behaviour the scenarios use.
CNI is Debian's plugins: a bridge per node with host-local addresses from the node's
pod range.

Every path a node writes is under ``<state>/<node>``; its sockets are under
``/run/tasks-cluster/<id>`` because a unix socket path is limited to 108 bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import control_plane, loopback, network, paths, process, tools

CONTAINERD = "/usr/bin/containerd"
RUNC = "/usr/sbin/runc"
CNI_BIN = "/usr/lib/cni"
DEBIAN_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "conntrack")


def state_dir(node: network.Node) -> Path:
    path = paths.STATE / node.name
    path.mkdir(parents=True, exist_ok=True)
    return path


#: Where the nodes' sockets are (one directory per state directory and node).
RUN_ROOT = Path("/run/tasks-cluster")


def run_dir(node: network.Node) -> Path:
    key = hashlib.sha256(str(paths.STATE).encode()).hexdigest()[:10]
    path = RUN_ROOT / key / node.name
    path.mkdir(parents=True, exist_ok=True)
    return path


def containerd_socket(node: network.Node) -> Path:
    return run_dir(node) / "containerd.sock"


def _containerd_config(node: network.Node, *, registry: str, pause_image: str,
                       loopback_name: str | None = loopback.ADDRESS) -> Path:
    base = state_dir(node)
    # The local registry speaks plain HTTP on an address the suite assigned. Its loopback
    # name on the host (``loopback.ADDRESS``, where Docker Engine pushes) means the same
    # registry here: a node's own 127.0.0.1 is the node's, so the name is mapped to the
    # bridge address, as kind maps localhost:5001 to its registry container.
    for name in (registry, loopback_name):
        if name:
            hosts = base / "certs.d" / name
            hosts.mkdir(parents=True, exist_ok=True)
            (hosts / "hosts.toml").write_text(loopback.hosts_toml(registry))
    cni_conf = base / "cni" / "net.d"
    cni_conf.mkdir(parents=True, exist_ok=True)
    (cni_conf / "10-tasks.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "tasks",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": "cni0",
                        "isGateway": True,
                        "ipMasq": True,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": str(node.pod_network)}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(base / "cni" / "ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            },
            indent=2,
        )
    )
    config = base / "containerd.toml"
    config.write_text(
        f"""version = 2
root = "{base / 'containerd'}"
state = "{run_dir(node) / 'containerd'}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{containerd_socket(node)}"

[ttrpc]
  address = "{containerd_socket(node)}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  enable_unprivileged_ports = false
  # This machine's root lacks CAP_SYS_RESOURCE, so a process may not lower its OOM
  # score; the kubelet asks -998 for the pause container. Cap requests at our own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{base / 'certs.d'}"
"""
    )
    return config


def _cgroup_root(node: network.Node) -> str:
    """Each node's pods live under their own cgroup, so two kubelets never share one."""
    root = f"/tasks-{node.name}"
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if hierarchy.is_dir() and not hierarchy.is_symlink() and (hierarchy / "cgroup.procs").exists():
            (hierarchy / root.lstrip("/")).mkdir(exist_ok=True)
    return root


def _kubelet_config(node: network.Node) -> Path:
    base = state_dir(node)
    resolv = base / "resolv.conf"
    resolv.write_text("# pods resolve through the cluster DNS only\n")
    config = base / "kubelet.yaml"
    ca = control_plane.authority().pair.cert
    config.write_text(
        f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {node.address}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
cgroupDriver: cgroupfs
cgroupRoot: {_cgroup_root(node)}
failCgroupV1: false
containerRuntimeEndpoint: unix://{containerd_socket(node)}
clusterDNS: [{network.DNS_ADDRESS}]
clusterDomain: cluster.local
resolvConf: {resolv}
failSwapOn: false
serializeImagePulls: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
podPidsLimit: 4096
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
"""
    )
    return config


def _proxy_config(node: network.Node, kubeconfig: Path) -> Path:
    config = state_dir(node) / "kube-proxy.yaml"
    config.write_text(
        f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: {network.POD_NETWORK}
hostnameOverride: {node.name}
bindAddress: {node.address}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection:
  kubeconfig: {kubeconfig}
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"""
    )
    return config


def names(node: network.Node) -> tuple[str, str, str]:
    return (f"{node.name}-containerd", f"{node.name}-kubelet", f"{node.name}-kube-proxy")


def up(node: network.Node, *, registry: str, pause_image: str) -> dict[str, float]:
    """Start the node's daemons and wait until it is Ready; seconds per step."""
    tools.debian_install(*DEBIAN_PACKAGES)
    kube = str(tools.ensure(tools.KUBE))
    network.up_node(node)
    containerd_name, kubelet_name, proxy_name = names(node)
    timings: dict[str, float] = {}

    if not process.running(containerd_name):
        # A containerd that died (a node failure) leaves its socket behind: without this,
        # the wait below would pass at once and the kubelet meet a dead socket.
        containerd_socket(node).unlink(missing_ok=True)
        process.start(containerd_name, [CONTAINERD, "--config", str(_containerd_config(node, registry=registry, pause_image=pause_image))], netns=node.netns)
    timings["containerd"] = process.wait_for(
        f"{containerd_name} socket", lambda: containerd_socket(node).exists(), timeout=30, watch=[containerd_name]
    )

    ca = control_plane.authority()
    kubelet_pair = ca.issue(f"{node.name}-kubelet", common_name=f"system:node:{node.name}", organization="system:nodes")
    from . import pki

    kubelet_kubeconfig = pki.kubeconfig(
        state_dir(node) / "kubelet.kubeconfig", server=control_plane.API_SERVER, ca=ca.pair.cert, client=kubelet_pair, user=node.name
    )
    if not process.running(kubelet_name):
        process.start(
            kubelet_name,
            [
                kube, "kubelet",
                f"--config={_kubelet_config(node)}",
                f"--kubeconfig={kubelet_kubeconfig}",
                f"--root-dir={state_dir(node) / 'kubelet'}",
                f"--hostname-override={node.name}",
                f"--node-ip={node.address}",
                f"--cert-dir={state_dir(node) / 'kubelet-pki'}",
                "--v=1",
            ],
            netns=node.netns,
        )
    proxy_kubeconfig = control_plane.component_kubeconfig(f"{node.name}-kube-proxy", common_name="system:kube-proxy")
    if not process.running(proxy_name):
        process.start(proxy_name, [kube, "kube-proxy", f"--config={_proxy_config(node, proxy_kubeconfig)}", "--v=1"], netns=node.netns)
    timings["node-ready"] = process.wait_for(
        f"{node.name} Ready",
        lambda: _ready(node),
        timeout=120,
        watch=[containerd_name, kubelet_name, proxy_name],
    )
    if node.index == 1:
        network.route_services(node)
    return timings


def fail(node: network.Node) -> None:
    """The node dies as a machine would: its daemons and every container SIGKILLed at
    once, and its link to the bridge cut. Nothing is told to anyone; the control plane
    finds out by the missing heartbeats."""
    network.partition(node)
    for name in names(node):
        process.kill(name)
    _kill_containers(node)


def recover(node: network.Node, *, registry: str, pause_image: str) -> dict[str, float]:
    """The failed node back: its link, then its daemons on the state they left."""
    network.heal(node)
    return up(node, registry=registry, pause_image=pause_image)


def _ready(node: network.Node) -> bool:
    result = control_plane.kubectl(
        "get", "node", node.name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False
    )
    return result.stdout.strip() == "True"


def down(node: network.Node) -> None:
    """Stop the node's daemons, then every container they left, then its network."""
    containerd_name, kubelet_name, proxy_name = names(node)
    process.stop(kubelet_name)
    process.stop(proxy_name)
    _kill_containers(node)
    process.stop(containerd_name)
    _unmount_under(state_dir(node))
    _unmount_under(run_dir(node))
    network.down_node(node)


def _kill_containers(node: network.Node) -> None:
    """containerd-shim processes outlive containerd by design: kill them and their containers."""
    marker = str(run_dir(node)).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if b"containerd-shim" in cmdline and marker in cmdline:
            _kill_tree(int(entry.name))


def _kill_tree(root: int) -> None:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().split(") ", 1)[1].split()[1])
            except (FileNotFoundError, IndexError, ProcessLookupError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    stack, victims = [root], []
    while stack:
        current = stack.pop()
        victims.append(current)
        stack.extend(children.get(current, []))
    for victim in victims:
        try:
            os.kill(victim, 9)
        except ProcessLookupError:
            pass


def _unmount_under(directory: Path) -> None:
    prefix = str(directory.resolve())
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        network.run("umount", "-l", mount, check=False)
