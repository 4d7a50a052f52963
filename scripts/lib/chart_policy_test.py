"""DNS egress presets of the chart's NetworkPolicies (called by scripts/test-chart.sh).

Usage: python chart_policy_test.py HELM CHART BASE_VALUES [KUBERNETES_VALIDATE]

Renders the chart once per networkPolicy.dns preset (and for custom peers) on top of
BASE_VALUES and checks, for the app's and the Helm test pod's NetworkPolicy, that the
pods may reach exactly the intended DNS peers on exactly the intended ports:

  - exactly one egress rule names a DNS port (53, or 5353 for openshift-dns); its peers
    and ports equal the expected ones (order ignored);
  - no other egress rule admits a DNS port (a rule without ports admits every port);
  - every non-DNS egress rule is the same as with the default preset (a preset changes
    DNS and nothing else);
  - with KUBERNETES_VALIDATE, each case's NetworkPolicies pass strict validation.

Prints PASS/FAIL per check and ends with "N passed, M failed"; exit 1 on a failure.
"""

import json
import os
import subprocess
import sys
import tempfile

import yaml

DNS_PORTS = {53, 5353}
KUBE_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
OPENSHIFT_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}},
    "podSelector": {"matchLabels": {"dns.operator.openshift.io/daemonset-dns": "default"}},
}


def ip(cidr):
    return {"ipBlock": {"cidr": cidr}}


def ports(*numbers):
    return {(n, proto) for n in numbers for proto in ("UDP", "TCP")}


# name -> (--set arguments, expected peers, expected (port, protocol) pairs)
CASES = {
    "kube-dns (default; EKS, AKS, kubeadm, minikube, GKE kube-dns)": ([], [KUBE_DNS], ports(53)),
    "node-local-dns": (["networkPolicy.dns.preset=node-local-dns"], [ip("169.254.20.10/32"), KUBE_DNS], ports(53)),
    "node-local-dns with the kube-dns Service IP": (
        ["networkPolicy.dns.preset=node-local-dns", "networkPolicy.dns.serviceIP=10.96.0.10"],
        [ip("169.254.20.10/32"), KUBE_DNS, ip("10.96.0.10/32")], ports(53)),
    "node-local-dns on an IPv6 address": (
        ["networkPolicy.dns.preset=node-local-dns", "networkPolicy.dns.nodeLocalAddress=fd00::a"],
        [ip("fd00::a/128"), KUBE_DNS], ports(53)),
    "gke-cloud-dns": (["networkPolicy.dns.preset=gke-cloud-dns"], [ip("169.254.169.254/32")], ports(53)),
    "openshift-dns": (["networkPolicy.dns.preset=openshift-dns"], [OPENSHIFT_DNS], ports(5353)),
    "custom peers replace the preset": (
        ["networkPolicy.dns.preset=gke-cloud-dns", "networkPolicy.dns.peers[0].ipBlock.cidr=10.0.0.10/32",
         "networkPolicy.dns.peers[1].namespaceSelector.matchLabels.dns=coredns"],
        [ip("10.0.0.10/32"), {"namespaceSelector": {"matchLabels": {"dns": "coredns"}}}], ports(53)),
}
POLICIES = ("tasks", "tasks-test")  # the app's and the Helm test pod's NetworkPolicy

results = {"passed": 0, "failed": 0}


def check(name, problems):
    if problems:
        results["failed"] += 1
        print(f"FAIL  {name}")
        for p in problems:
            print(f"      | {p}")
    else:
        results["passed"] += 1
        print(f"PASS  {name}")


def canon(obj):
    return json.dumps(obj, sort_keys=True)


def render(helm, chart, base, sets):
    cmd = [helm, "template", "tasks", chart, "--namespace", "tasks", "-f", base]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def rule_ports(rule):
    """(port, protocol) pairs a rule admits; None means every port."""
    if not rule.get("ports"):
        return None
    return {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}


def admits_dns(rule):
    rp = rule_ports(rule)
    return rp is None or any(port in DNS_PORTS for port, _ in rp)


def policy_problems(pol, want_peers, want_ports, baseline_rest):
    """What is wrong with one NetworkPolicy's DNS egress, and its non-DNS egress rules."""
    problems = []
    egress = pol["spec"].get("egress", [])
    named = [r for r in egress if r.get("ports") and any(p["port"] in DNS_PORTS for p in r["ports"])]
    if len(named) != 1:
        problems.append(f"{len(named)} egress rules name a DNS port, want exactly 1")
    else:
        rule = named[0]
        got_peers = sorted(canon(p) for p in rule.get("to", []))
        if not rule.get("to"):
            problems.append("the DNS rule has no peers: it admits every destination")
        if got_peers != sorted(canon(p) for p in want_peers):
            problems.append(f"DNS peers {got_peers}, want {sorted(canon(p) for p in want_peers)}")
        if rule_ports(rule) != want_ports:
            problems.append(f"DNS ports {sorted(rule_ports(rule))}, want {sorted(want_ports)}")
    rest = [r for r in egress if r not in named]
    for r in rest:
        if admits_dns(r):
            problems.append(f"another egress rule also admits a DNS port: {canon(r)}")
    rest = sorted(canon(r) for r in rest)
    if baseline_rest is not None and rest != baseline_rest:
        problems.append("the non-DNS egress rules differ from the default preset's")
    return problems, rest


def check_case(name, docs, want_peers, want_ports, baseline):
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    other_rules = {}
    for pname in POLICIES:
        pol = policies.get(pname)
        if pol is None:
            check(f"{name}: NetworkPolicy {pname} rendered", [f"no NetworkPolicy {pname}"])
            continue
        problems, other_rules[pname] = policy_problems(
            pol, want_peers, want_ports, None if baseline is None else baseline.get(pname))
        check(f"{name}: {pname} admits exactly {len(want_peers)} DNS peer(s) on {sorted(want_ports)}", problems)
    return other_rules


def canaries():
    """The checker itself must reject what it is there to catch."""
    good = {"to": [KUBE_DNS], "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    bad = {
        "an extra rule without ports (every port, so DNS anywhere)": [good, {"to": [ip("10.0.0.0/8")]}],
        "a DNS rule without peers": [{"ports": good["ports"]}],
        "a DNS rule with one peer too many": [{**good, "to": [KUBE_DNS, ip("0.0.0.0/0")]}],
        "a DNS rule missing TCP": [{**good, "ports": good["ports"][:1]}],
    }
    for what, egress in bad.items():
        problems, _ = policy_problems({"spec": {"egress": egress}}, [KUBE_DNS], ports(53), None)
        check(f"checker rejects {what} (canary)", [] if problems else ["not detected"])


def validate(kv, name, docs, workdir):
    files = []
    for i, d in enumerate(d for d in docs if d["kind"] == "NetworkPolicy"):
        path = os.path.join(workdir, f"np-{i}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(d, f)
        files.append(path)
    out = subprocess.run([kv, "--strict", "--kubernetes-version", "1.34.0", *files],
                         capture_output=True, text=True, timeout=300)
    bad = [line for line in (out.stdout + out.stderr).splitlines() if line and "passed for resource" not in line]
    check(f"{name}: NetworkPolicies valid (kubernetes-validate --strict, 1.34)",
          bad if out.returncode or bad else [])


def main():
    if len(sys.argv) not in (4, 5):
        print(__doc__)
        return 2
    helm, chart, base = sys.argv[1:4]
    kv = sys.argv[4] if len(sys.argv) == 5 else None
    canaries()
    baseline = None
    with tempfile.TemporaryDirectory() as workdir:
        for name, (sets, want_peers, want_ports) in CASES.items():
            try:
                docs = render(helm, chart, base, sets)
            except RuntimeError as e:
                check(f"{name}: renders", [str(e)])
                continue
            rules = check_case(name, docs, want_peers, want_ports, baseline)
            if baseline is None:
                baseline = rules
            if kv:
                validate(kv, name, docs, workdir)
    print(f"{results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
