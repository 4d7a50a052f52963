"""Bringing the whole cluster up and down: network, registry, control plane, nodes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from . import control_plane, loopback, network, node, paths, process, tools

REGISTRY_PORT = 5000
#: The registry listens on the bridge address: the nodes' containerd pulls from there.
REGISTRY_ADDRESS = f"{network.HOST_ADDRESS}:{REGISTRY_PORT}"
#: The same registry under a loopback name, where Docker Engine pushes over plain HTTP
#: without daemon configuration; the nodes map the name back to REGISTRY_ADDRESS
#: (``localcluster.loopback``, as kind's local registry on localhost:5001).
REGISTRY_LOOPBACK = loopback.ADDRESS


def info_file() -> Path:
    return paths.STATE / "cluster.json"


def deploy_values_file() -> Path:
    """The values ``LOCAL_CLUSTER=tasks just deploy-local`` adds to the local overlay:
    the images this cluster has that the chart would otherwise pull from outside."""
    return paths.STATE / "deploy-local-values.yaml"


def deploy_values(postgres_reference: str, postgres_tag: str) -> str:
    """The text of ``deploy_values_file()``: PostgreSQL from the cluster's registry by
    digest (``postgres_reference`` is ``host:port/name@sha256:...``)."""
    registry, rest = postgres_reference.split("/", 1)
    repository, digest = rest.split("@", 1)
    return (
        "# Written by `scripts/cluster.sh up`: what the repository's own cluster serves in place of\n"
        "# registries it cannot reach (scripts/deploy-local.sh adds it with LOCAL_CLUSTER=tasks).\n"
        "postgresql:\n"
        "  image:\n"
        f'    registry: "{registry}"\n'
        f"    repository: {repository}\n"
        f'    tag: "{postgres_tag}"\n'
        f'    digest: "{digest}"\n'
    )


def nodes(count: int = 1) -> list[network.Node]:
    return [network.Node(index) for index in range(1, count + 1)]


def push_content(registry, content) -> str:
    """Push a single-layer image (``images.ImageContent``); returns ``host/name@digest``."""
    layout = paths.STATE / "build" / f"oci-{content.name}"
    shutil.rmtree(layout, ignore_errors=True)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    os.link(content.layer, blobs / content.digest.split(":", 1)[1])
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": content.digest,
             "size": content.layer.stat().st_size}
    config = put(json.dumps(content.image_config()).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": config, "layers": [layer]}).encode(),
                   "application/vnd.oci.image.manifest.v1+json")
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    registry.crane("push", str(layout), f"{registry.address}/{content.reference}", what=f"crane push {content.reference}")
    return f"{registry.address}/{content.name}@{manifest['digest']}"


def _refuse_if_taken(address: str) -> None:
    """A registry left by another run would answer in place of ours: refuse to start."""
    import socket

    host, port = address.rsplit(":", 1)
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex((host, int(port))) == 0:
            raise process.ClusterError(
                f"{address} is already taken by another process (a registry of an earlier run?); "
                "stop it (scripts/cluster.sh down) before starting the cluster"
            )


class NodeControl:
    """Fails and recovers this checkout's nodes by name, for the node-failure scenario."""

    def __init__(self, node_count: int, pause_image: str):
        self._nodes = {member.name: member for member in nodes(node_count)}
        self._pause_image = pause_image
        self._routing = self.first()

    def fail(self, name: str) -> None:
        node.fail(self._nodes[name])

    def recover(self, name: str) -> None:
        node.recover(self._nodes[name], registry=REGISTRY_ADDRESS, pause_image=self._pause_image)

    def route_services(self, name: str) -> None:
        """The host's Service traffic through ``name``: every node's kube-proxy programs
        every Service, so any live node will do, and the node about to fail must not."""
        network.route_services(self._nodes[name])
        self._routing = name

    def service_rules(self) -> str:
        """The NAT rules kube-proxy programmed on the node the host's Service traffic
        goes through (``iptables-save -t nat`` in its network namespace)."""
        return network.run("iptables-save", "-t", "nat", netns=self._nodes[self._routing].netns).stdout

    def names(self) -> list[str]:
        return list(self._nodes)

    def first(self) -> str:
        """The node the host routes Services through after ``up``."""
        return next(iter(self._nodes))


def up(node_count: int = 1, registry=None) -> dict:
    """Start everything; returns what scenarios need (kubeconfig, registry, timings).

    ``registry``: a started ``registry.Registry`` on ``REGISTRY_ADDRESS``; without one,
    one is started and left running for ``down`` to stop."""
    from . import images
    from . import registry as registries

    started = time.monotonic()
    paths.STATE.mkdir(parents=True, exist_ok=True)
    network.check_free()
    network.up_host()
    timings: dict[str, float] = {}
    if registry is None:
        registry = registries.Registry(REGISTRY_ADDRESS)
        if not process.running("registry"):
            _refuse_if_taken(REGISTRY_ADDRESS)
            registry.start()
            (process.pids_dir() / "registry").write_text(str(registry._process.pid))
    timings["registry-loopback"] = loopback.start(REGISTRY_ADDRESS, REGISTRY_LOOPBACK)
    pause = push_content(registry, images.pause())
    timings.update(control_plane.up())
    for member in nodes(node_count):
        for step, seconds in node.up(member, registry=REGISTRY_ADDRESS, pause_image=pause).items():
            timings[f"{member.name}/{step}"] = seconds
    network.route_pods_between(nodes(node_count))
    # The host reaches Services through the first node: the one a node-failure scenario keeps.
    network.route_services(nodes(node_count)[0])
    # What `LOCAL_CLUSTER=tasks just deploy-local` needs beside the cluster: PostgreSQL in
    # the registry (the chart's default is on Docker Hub) and volumes for its claim.
    step = time.monotonic()
    postgres = images.postgres()
    deploy_values_file().write_text(deploy_values(push_content(registry, postgres), postgres.tag))
    from . import scenarios

    kube = scenarios.Kube(str(control_plane.admin_kubeconfig()), "default")
    classes = kube.json("storageclass")["items"]
    if not any((c["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class") == "true" for c in classes):
        scenarios.storage_fixtures(kube, [member.name for member in nodes(node_count)])
    timings["deploy-local-fixtures"] = time.monotonic() - step
    timings["total"] = time.monotonic() - started
    info = {
        "kubeconfig": str(control_plane.admin_kubeconfig()),
        "registry": REGISTRY_ADDRESS,
        "registry_loopback": REGISTRY_LOOPBACK,
        "nodes": [member.name for member in nodes(node_count)],
        "api_server": control_plane.API_SERVER,
        "pause_image": pause,
        "timings": {name: round(value, 1) for name, value in timings.items()},
    }
    info_file().write_text(json.dumps(info, indent=2))
    return info


def normalized_reference(image: str) -> str:
    """The name containerd gives an image that Docker calls ``image``
    (``tasks-server:dev`` -> ``docker.io/library/tasks-server:dev``); the kubelet
    normalizes a pod's image the same way, so this is the name the pod finds."""
    name, tag = image, ""
    if "@" not in image and ":" in image.rsplit("/", 1)[-1]:
        name, tag = image.rsplit(":", 1)
        tag = f":{tag}"
    elif "@" not in image:
        tag = ":latest"
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return name + tag


def load_image(image: str) -> dict[str, float]:
    """Import ``image`` from Docker Engine into every node's containerd (namespace
    ``k8s.io``, the kubelet's), as ``kind load docker-image`` does: ``docker save`` once,
    then ``ctr images import`` against each node's containerd socket. Returns seconds
    per step. A pod then runs it with ``imagePullPolicy: Never`` (the local overlay's)."""
    if not info_file().exists():
        raise process.ClusterError(
            f"no cluster is running from {paths.STATE} (no cluster.json): start one with scripts/cluster.sh up "
            "(or set CLUSTER_STATE_DIR to the state directory of the checkout that started it)")
    members = [network.Node(int(name.removeprefix("node"))) for name in json.loads(info_file().read_text())["nodes"]]
    # ctr: the client of the nodes' containerd, from the same Debian package.
    tools.debian_install("containerd")
    ctr = shutil.which("ctr") or "/usr/bin/ctr"
    reference = normalized_reference(image)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tasks-load-image-") as work:
        archive = Path(work) / "image.tar"
        started = time.monotonic()
        _checked(["docker", "save", "--output", str(archive), image], f"docker save {image}", timeout=300)
        timings["docker-save"] = round(time.monotonic() - started, 1)
        for member in members:
            socket = node.containerd_socket(member)
            if not socket.exists():
                raise process.ClusterError(f"{member.name}: no containerd socket at {socket}; is the node up? (scripts/cluster.sh status)")
            started = time.monotonic()
            base = [ctr, "--address", str(socket), "--namespace", "k8s.io"]
            _checked([*base, "images", "import", str(archive)], f"ctr images import into {member.name}", timeout=300)
            listed = _checked([*base, "images", "list", "--quiet"], f"ctr images list on {member.name}", timeout=60).split()
            if reference not in listed:
                raise process.ClusterError(f"{member.name}: {reference} is not among its images after the import: {' '.join(listed)}")
            timings[member.name] = round(time.monotonic() - started, 1)
            tools.log(f"load-image: {reference} in {member.name}'s containerd ({timings[member.name]}s)")
    return timings


def _checked(argv: list[str], what: str, *, timeout: float) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as error:
        raise process.ClusterError(f"{what}: {error.filename} not found") from None
    except subprocess.TimeoutExpired:
        raise process.ClusterError(f"{what}: no result within {timeout:.0f}s") from None
    if result.returncode != 0:
        raise process.ClusterError(f"{what} failed (exit {result.returncode}): {(result.stdout + result.stderr).strip()[-2000:]}")
    return result.stdout


def down() -> None:
    """Stop everything this checkout's cluster started and remove its state."""
    count = 9
    for index in range(count, 0, -1):
        member = network.Node(index)
        if any(process.pid(name) for name in node.names(member)) or (paths.STATE / member.name).exists():
            node.down(member)
        else:
            network.down_node(member)
    control_plane.down()
    loopback.stop()
    process.stop("registry")
    _remove_stale_pod_namespaces()
    network.down_host()
    run_root = node.run_dir(network.Node(1)).parent
    shutil.rmtree(run_root, ignore_errors=True)
    if paths.STATE.exists():
        logs = paths.STATE / "logs"
        keep = paths.REPO / "target" / "cluster-logs"
        if logs.exists():
            shutil.rmtree(keep, ignore_errors=True)
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(logs, keep)
        shutil.rmtree(paths.STATE, ignore_errors=True)


def _remove_stale_pod_namespaces() -> None:
    """Pod network namespaces no process uses any more (their containerd is gone)."""
    in_use = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                in_use.add((entry / "ns" / "net").stat().st_ino)
            except (FileNotFoundError, PermissionError, ProcessLookupError):
                continue
    netns_dir = Path("/var/run/netns")
    if not netns_dir.exists():
        return
    for entry in netns_dir.glob("cni-*"):
        try:
            inode = entry.stat().st_ino
        except OSError:
            inode = None
        if inode not in in_use:
            network.run("umount", str(entry), check=False)
            entry.unlink(missing_ok=True)


def status() -> str:
    lines = []
    for name in sorted(p.name for p in process.pids_dir().iterdir()) if process.pids_dir().exists() else []:
        lines.append(f"{name:32} {'running' if process.running(name) else 'stopped'}")
    if process.running("kube-apiserver"):
        lines.append(control_plane.kubectl("get", "nodes,pods", "-A", "-o", "wide", check=False).stdout)
    return "\n".join(lines) or "no cluster"
