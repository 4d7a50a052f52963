"""The cluster's network: a bridge on the host, one network namespace per node joined
to it by a veth pair, and the routes that let the host reach pods and services.

Addresses are chosen so that no network of a usual machine overlaps them, and ``up``
refuses to start when one does. Nothing here adds a default route: traffic stays on
the host, its bridge and the namespaces this module made.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil
import subprocess
from pathlib import Path

BRIDGE = "tasksbr0"
NODE_NETWORK = ipaddress.ip_network("10.201.0.0/24")
HOST_ADDRESS = "10.201.0.1"
POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")
SERVICE_NETWORK = ipaddress.ip_network("10.97.0.0/16")
#: The ``kubernetes`` Service's address: the first of the service network.
API_SERVICE_ADDRESS = "10.97.0.1"
#: Cluster DNS listens on the host's bridge address, so it outlives any node.
DNS_ADDRESS = HOST_ADDRESS


@dataclasses.dataclass(frozen=True)
class Node:
    """A node's names and addresses; ``index`` starts at 1."""

    index: int

    @property
    def name(self) -> str:
        return f"node{self.index}"

    @property
    def netns(self) -> str:
        return f"tasks-{self.name}"

    @property
    def address(self) -> str:
        return str(NODE_NETWORK.network_address + 1 + self.index)

    @property
    def pod_network(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"10.244.{self.index}.0/24")

    @property
    def veth_host(self) -> str:
        return f"tasks{self.index}h"

    @property
    def veth_node(self) -> str:
        return f"tasks{self.index}n"


def run(*argv: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    if netns:
        argv = ("ip", "netns", "exec", netns, *argv)
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def _host_routes() -> list[ipaddress.IPv4Network]:
    networks = []
    for line in run("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
        destination = line.split()[0]
        if destination in {"default", "broadcast", "local", "unreachable"}:
            destination = line.split()[1] if line.split()[0] in {"broadcast", "local"} else ""
        try:
            networks.append(ipaddress.ip_network(destination, strict=False))
        except ValueError:
            continue
    return networks


def check_free() -> None:
    """Refuse to start when a network of this machine overlaps the cluster's ranges."""
    ours = (NODE_NETWORK, POD_NETWORK, SERVICE_NETWORK)
    for route in _host_routes():
        if route.prefixlen == 32 or route.is_loopback:
            continue
        for network in ours:
            if route.overlaps(network) and not _is_ours(route):
                raise RuntimeError(
                    f"network {route} of this machine overlaps the cluster's {network}: "
                    "the cluster cannot start without taking traffic that is not its own"
                )


def _is_ours(route: ipaddress.IPv4Network) -> bool:
    present = run("ip", "-4", "route", "show", str(route), check=False).stdout
    return BRIDGE in present or "tasks" in present


def _exists(kind: str, name: str) -> bool:
    if kind == "netns":
        return name in run("ip", "netns", "list").stdout.split()
    return run("ip", "link", "show", name, check=False).returncode == 0


def up_host() -> None:
    """The bridge on the host, with the host's address on it."""
    if not _exists("link", BRIDGE):
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{HOST_ADDRESS}/{NODE_NETWORK.prefixlen}", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")


def up_node(node: Node) -> None:
    """The node's namespace, its veth into the bridge, forwarding, and host routes."""
    if not _exists("netns", node.netns):
        run("ip", "netns", "add", node.netns)
    if not _exists("link", node.veth_host):
        run("ip", "link", "add", node.veth_host, "type", "veth", "peer", "name", node.veth_node)
        run("ip", "link", "set", node.veth_node, "netns", node.netns)
        run("ip", "link", "set", node.veth_host, "master", BRIDGE)
        run("ip", "link", "set", node.veth_host, "up")
        run("ip", "addr", "add", f"{node.address}/{NODE_NETWORK.prefixlen}", "dev", node.veth_node, netns=node.netns)
    run("ip", "link", "set", "lo", "up", netns=node.netns)
    run("ip", "link", "set", node.veth_node, "up", netns=node.netns)
    run("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=node.netns)
    # Service traffic between two pods on the node's bridge must pass iptables (kube-proxy).
    if not Path("/proc/sys/net/bridge").exists() and shutil.which("modprobe"):
        run("modprobe", "br_netfilter", check=False)
    run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", netns=node.netns, check=False)
    run("ip", "route", "replace", str(node.pod_network), "via", node.address)


def route_pods_between(nodes: list[Node]) -> None:
    """Each node reaches the other nodes' pods through their address on the bridge.

    Pods leave their node masqueraded (the CNI bridge's ``ipMasq``), so answers come
    back to the node's own address and need no route of their own."""
    for node in nodes:
        for other in nodes:
            if other != node:
                run("ip", "route", "replace", str(other.pod_network), "via", other.address, netns=node.netns)
    if len(nodes) > 1:
        _allow_bridged_forwarding()


#: Marks the one host firewall rule the cluster adds, so ``down_host`` finds it.
_RULE = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-m", "comment", "--comment", "tasks-cluster", "-j", "ACCEPT"]


def _allow_bridged_forwarding() -> None:
    """Node-to-node frames cross the host's bridge. Where the host filters bridged
    traffic (br_netfilter with ``bridge-nf-call-iptables = 1``, as Docker Engine sets
    it, with a FORWARD policy of DROP) they pass the host's FORWARD chain: accept what
    stays on the cluster's bridge, nothing else."""
    if shutil.which("iptables") is None:
        return
    if run("iptables", "-C", *_RULE, check=False).returncode != 0:
        run("iptables", "-I", *_RULE)


def partition(node: Node) -> None:
    """Cut ``node`` off the bridge, as a failed machine or a broken link would be."""
    run("ip", "link", "set", node.veth_host, "down")


def heal(node: Node) -> None:
    run("ip", "link", "set", node.veth_host, "up")


def route_services(via: Node) -> None:
    """Send the host's traffic for Service addresses through ``via``, where kube-proxy's rules are."""
    run("ip", "route", "replace", str(SERVICE_NETWORK), "via", via.address)


def down_node(node: Node) -> None:
    run("ip", "route", "del", str(node.pod_network), check=False)
    run("ip", "link", "del", node.veth_host, check=False)
    if _exists("netns", node.netns):
        run("ip", "netns", "del", node.netns, check=False)


def down_host() -> None:
    run("ip", "route", "del", str(SERVICE_NETWORK), check=False)
    if shutil.which("iptables"):
        while run("iptables", "-C", *_RULE, check=False).returncode == 0:
            run("iptables", "-D", *_RULE, check=False)
    run("ip", "link", "del", BRIDGE, check=False)
