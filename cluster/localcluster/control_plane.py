"""etcd, the API server, the controller manager, the scheduler and cluster DNS.

They run on the host (in its network namespace): etcd on loopback only, the API server
and DNS on the bridge address the nodes reach. Components authenticate with client
certificates from ``pki``; the controller manager and scheduler are limited to their
built-in RBAC roles.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import network, paths, pki, process, tools

ETCD_CLIENT = "http://127.0.0.1:23790"
ETCD_PEER = "http://127.0.0.1:23800"
API_PORT = 6443
API_SERVER = f"https://{network.HOST_ADDRESS}:{API_PORT}"
#: Pods on a failed node are evicted after this many seconds (the default is 300).
EVICTION_SECONDS = 30


def pki_dir() -> Path:
    return paths.STATE / "pki"


def authority() -> pki.Authority:
    return pki.Authority(pki_dir())


def admin_kubeconfig() -> Path:
    return paths.STATE / "kubeconfig"


def component_kubeconfig(name: str, *, common_name: str, organization: str | None = None) -> Path:
    ca = authority()
    pair = ca.issue(name, common_name=common_name, organization=organization)
    return pki.kubeconfig(paths.STATE / f"{name}.kubeconfig", server=API_SERVER, ca=ca.pair.cert, client=pair, user=name)


def kubectl(*args: str, check: bool = True, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the project's kubectl against the cluster as its admin."""
    kubectl_bin = paths.REPO / ".tools" / "bin" / "kubectl"
    result = subprocess.run(
        [str(kubectl_bin), "--kubeconfig", str(admin_kubeconfig()), *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise process.ClusterError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result


def up() -> dict[str, float]:
    """Start every control-plane component; returns seconds to ready per component."""
    kube = str(tools.ensure(tools.KUBE))
    ca = authority()
    serving = ca.issue(
        "apiserver",
        common_name="kube-apiserver",
        server_names=(
            network.HOST_ADDRESS,
            network.API_SERVICE_ADDRESS,
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        client=False,
    )
    kubelet_client = ca.issue("apiserver-kubelet-client", common_name="kube-apiserver-kubelet-client", organization="system:masters")
    service_accounts = ca.service_account_key()
    admin = ca.issue("admin", common_name="tasks-admin", organization="system:masters")
    pki.kubeconfig(admin_kubeconfig(), server=API_SERVER, ca=ca.pair.cert, client=admin, user="admin")
    timings: dict[str, float] = {}

    if not process.running("etcd"):
        process.start(
            "etcd",
            [
                kube, "etcd",
                "--name=tasks",
                f"--data-dir={paths.STATE / 'etcd'}",
                f"--listen-client-urls={ETCD_CLIENT}",
                f"--advertise-client-urls={ETCD_CLIENT}",
                f"--listen-peer-urls={ETCD_PEER}",
                f"--initial-advertise-peer-urls={ETCD_PEER}",
                f"--initial-cluster=tasks={ETCD_PEER}",
                "--log-level=warn",
            ],
        )
    timings["etcd"] = process.wait_for("etcd healthy", _etcd_healthy, timeout=60, watch=["etcd"])

    if not process.running("kube-apiserver"):
        process.start(
            "kube-apiserver",
            [
                kube, "kube-apiserver",
                f"--etcd-servers={ETCD_CLIENT}",
                f"--bind-address={network.HOST_ADDRESS}",
                f"--advertise-address={network.HOST_ADDRESS}",
                f"--secure-port={API_PORT}",
                f"--service-cluster-ip-range={network.SERVICE_NETWORK}",
                f"--client-ca-file={ca.pair.cert}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                # Node names are not in any DNS; the kubelets are reached at their addresses.
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-account-key-file={service_accounts.cert}",
                f"--service-account-signing-key-file={service_accounts.key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                f"--default-not-ready-toleration-seconds={EVICTION_SECONDS}",
                f"--default-unreachable-toleration-seconds={EVICTION_SECONDS}",
                f"--cert-dir={pki_dir()}",
                "--profiling=false",
                "--v=1",
            ],
        )
    timings["kube-apiserver"] = process.wait_for(
        "kube-apiserver ready",
        lambda: kubectl("get", "--raw", "/readyz", check=False, timeout=10).stdout.strip() == "ok",
        timeout=120,
        watch=["kube-apiserver", "etcd"],
    )

    controller_manager = component_kubeconfig("kube-controller-manager", common_name="system:kube-controller-manager")
    if not process.running("kube-controller-manager"):
        process.start(
            "kube-controller-manager",
            [
                kube, "kube-controller-manager",
                f"--kubeconfig={controller_manager}",
                f"--authentication-kubeconfig={controller_manager}",
                f"--authorization-kubeconfig={controller_manager}",
                "--secure-port=0",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={service_accounts.key}",
                f"--root-ca-file={ca.pair.cert}",
                f"--cluster-signing-cert-file={ca.pair.cert}",
                f"--cluster-signing-key-file={ca.pair.key}",
                f"--cluster-cidr={network.POD_NETWORK}",
                "--allocate-node-cidrs=false",
                "--node-monitor-grace-period=20s",
                "--v=1",
            ],
        )
    scheduler = component_kubeconfig("kube-scheduler", common_name="system:kube-scheduler")
    if not process.running("kube-scheduler"):
        process.start(
            "kube-scheduler",
            [
                kube, "kube-scheduler",
                f"--kubeconfig={scheduler}",
                f"--authentication-kubeconfig={scheduler}",
                f"--authorization-kubeconfig={scheduler}",
                "--secure-port=0",
                "--leader-elect=false",
                "--v=1",
            ],
        )
    # The controller manager is working once it has made the default namespace's
    # service account (the token controller and the service-account controller run).
    timings["kube-controller-manager"] = process.wait_for(
        "kube-controller-manager made the default service account",
        lambda: kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
        timeout=120,
        watch=["kube-controller-manager", "kube-scheduler", "kube-apiserver"],
    )
    timings["coredns"] = _dns_up()
    return timings


def _etcd_healthy() -> bool:
    import urllib.request

    with urllib.request.urlopen(f"{ETCD_CLIENT}/health", timeout=2) as response:
        return b'"health":"true"' in response.read()


_DNS_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: tasks-cluster:coredns
rules:
- apiGroups: [""]
  resources: [services, namespaces, pods]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: tasks-cluster:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: tasks-cluster:coredns
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: tasks-cluster:coredns
"""

DNS_HEALTH = f"http://{network.DNS_ADDRESS}:18181/ready"


def _dns_up() -> float:
    coredns = str(tools.ensure(tools.COREDNS))
    kubeconfig = component_kubeconfig("coredns", common_name="tasks-cluster:coredns")
    kubectl("apply", "-f", "-", input=_DNS_RBAC)
    corefile = paths.STATE / "Corefile"
    corefile.write_text(
        f"""cluster.local:53 in-addr.arpa:53 {{
    bind {network.DNS_ADDRESS}
    errors
    health {network.DNS_ADDRESS}:18080
    ready {network.DNS_ADDRESS}:18181
    kubernetes cluster.local in-addr.arpa {{
        kubeconfig {kubeconfig} tasks
        pods insecure
        ttl 5
    }}
    cache 5
    loadbalance
}}
"""
    )
    if not process.running("coredns"):
        process.start("coredns", [coredns, "-conf", str(corefile)])

    def ready() -> bool:
        import urllib.request

        with urllib.request.urlopen(DNS_HEALTH, timeout=2) as response:
            return response.status == 200

    return process.wait_for("coredns ready", ready, timeout=60, watch=["coredns"])


COMPONENTS = ("coredns", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


def down() -> None:
    for name in COMPONENTS:
        process.stop(name)
