"""Command line: ``python3 -m localcluster up|down|status|build-tools``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from . import cluster, paths, process, tools


def run_test(nodes: int, *, keep: bool, only: set[str] | None = None) -> int:
    """The suite: ``cluster: N passed, M failed`` is its last line."""
    from . import network, registry as registries, scenarios

    results = None
    registry = registries.Registry(cluster.REGISTRY_ADDRESS)
    try:
        network.check_free()
        network.up_host()
        cluster._refuse_if_taken(cluster.REGISTRY_ADDRESS)
        registry.start()
        # Recorded like every daemon, so `down` stops it even if this process dies.
        (process.pids_dir() / "registry").write_text(str(registry._process.pid))
        info = cluster.up(nodes, registry=registry)
        print(json.dumps(info["timings"]), flush=True)
        artefacts = publish(registry)
        # A node can fail only where another one keeps PostgreSQL (its volume is local to node1).
        node_control = cluster.NodeControl(nodes, info["pause_image"]) if nodes > 1 else None
        after = fresh_machine_step() if only is None or "fresh" in only else None
        results = scenarios.run_all(info, artefacts, nodes=node_control, after=after, only=only)
    finally:
        if not keep:
            registry.stop()
            cluster.down()
    return 0 if results is not None and not results.failed else 1


def fresh_machine_step():
    """The fresh-machine recipes (``localcluster.fresh``) after the lifecycles, unless
    CLUSTER_FRESH_MACHINE=0."""
    if os.environ.get("CLUSTER_FRESH_MACHINE", "1") == "0":
        print("NOTE the fresh-machine recipes are skipped (CLUSTER_FRESH_MACHINE=0)", flush=True)
        return None
    from . import fresh

    return lambda results: fresh.run(results, json.loads(cluster.info_file().read_text()))


def run_on_existing(kubeconfig: str, registry_address: str | None, *, expect_network_policy: bool = False) -> int:
    """The same scenarios on a cluster someone else started (kind in the GitHub workflow)."""
    from . import registry as registries, scenarios

    if not registry_address:
        print("cluster: --existing-cluster needs --registry HOST:PORT", file=sys.stderr)
        return 2
    registry = registries.Registry(registry_address)
    nodes = json.loads(subprocess.run(
        [str(paths.REPO / ".tools" / "bin" / "kubectl"), "--kubeconfig", kubeconfig, "get", "nodes", "-o", "json"],
        check=True, capture_output=True, text=True).stdout)["items"]
    info = {"kubeconfig": kubeconfig, "registry": registry_address, "nodes": [n["metadata"]["name"] for n in nodes]}
    results = scenarios.run_all(info, publish(registry), expect_network_policy=expect_network_policy)
    return 0 if not results.failed else 1


def publish(registry) -> dict:
    """Release N (signed, SBOMs attested and verified), release N+1, PostgreSQL, the chart."""
    from . import images, registry as registries, scenarios

    helms = {"4": str(paths.REPO / ".tools" / "bin" / "helm"), "3": str(paths.REPO / ".tools" / "bin" / "helm3")}
    release_n = registries.release(registry)
    # Release N+1 only has to run on this machine's node: one platform (a fat-LTO link
    # less on two cores); release N is the published multi-arch image.
    next_image = registries.publish_service_image(registry, version_suffix="next", extra_files=scenarios.NEXT_RELEASE_FILES,
                                                  platforms=("amd64",))
    charts = {}
    for major, helm in helms.items():
        reference = registries.publish_chart(registry, scenarios.CHART, helm, repository=f"charts/helm{major}")
        chart, _, version = reference.rpartition(":")
        charts[major] = (chart, version)
    return {
        "release_n": scenarios.Release(release_n.image, release_n.version),
        "release_next": scenarios.Release(next_image, registries.service_version("next")),
        "postgres_image": cluster.push_content(registry, images.postgres()),
        "charts": charts,
        "helms": helms,
    }


def unit_tests() -> int:
    """The package's own tests (cluster/tests, pytest), one PASS/FAIL line per test and
    ``cluster-unit: N passed, M failed, K skipped`` for the suite runner."""
    import tempfile
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as work:
        report = f"{work}/junit.xml"
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                                 str(paths.REPO / "cluster" / "tests")], cwd=paths.REPO)
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        try:
            cases = list(ET.parse(report).getroot().iter("testcase"))
        except (OSError, ET.ParseError):
            cases = []
        for case in cases:
            verdicts = {child.tag for child in case}
            # Its time too: the suite's budget is shared, the slow ones should be visible.
            name = f"{case.get('classname')}::{case.get('name')} ({float(case.get('time') or 0):.1f}s)"
            if verdicts & {"failure", "error"}:
                counts["failed"] += 1
                print(f"FAIL {name}")
            elif "skipped" in verdicts:
                counts["skipped"] += 1
                print(f"SKIP {name}")
            else:
                counts["passed"] += 1
                print(f"PASS {name}")
    if result.returncode != 0 and counts["failed"] == 0:
        counts["failed"] = 1  # pytest itself failed (collection, usage): a failure with no test to name
    print(f"cluster-unit: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped", flush=True)
    return 0 if counts["failed"] == 0 else 1


def prefetch() -> None:
    """Everything the suite builds that no other suite builds: the node's Debian
    packages, the cross toolchain, the Go tools, cargo-cyclonedx, the PostgreSQL and
    pause images, and release N for arm64. Each is cached per machine (the binary in its
    own target directory) and built under a lock, so
    ``./just test`` runs this in the background (niced) while the other suites run and
    ``test-cluster`` waits for whatever is still being built."""
    from . import images, node, registry as registries

    started = time.monotonic()
    tools.debian_install(*node.DEBIAN_PACKAGES)
    registries.ensure_cross_toolchain()
    for tool in (tools.KUBE, tools.COSIGN, tools.COREDNS, tools.CRANE):
        tools.ensure(tool)
    registries.ensure_cargo_cyclonedx()
    images.pause()
    images.postgres()
    # Release N for arm64 (its own target directory): the one release build that no
    # other suite makes and no other suite's cargo lock guards.
    registries.build_binaries(platforms=("arm64",))
    print(f"cluster: prefetch done in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localcluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the cluster (network, registry, control plane, nodes)")
    up.add_argument("--nodes", type=int, default=1)
    commands.add_parser("down", help="stop everything the cluster started and remove its state")
    commands.add_parser("status", help="what runs, nodes and pods")
    test = commands.add_parser("test", help="up, publish the release through the registry, run every scenario, down")
    test.add_argument("--nodes", type=int, default=2,
                      help="nodes to start (default 2: the node-failure scenario needs one besides PostgreSQL's)")
    test.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    test.add_argument("--only", metavar="NAMES", type=lambda text: set(filter(None, text.split(","))),
                      help="for work on a scenario: run the install and only these Helm 4 scenarios (comma-separated "
                           "method names of scenarios.Lifecycle; 'helm3' adds the Helm 3 lifecycle, 'fresh' the "
                           "fresh-machine recipes); the suite runs everything")
    test.add_argument("--existing-cluster", metavar="KUBECONFIG",
                      help="run the scenarios on this cluster instead of starting one (kind in CI)")
    test.add_argument("--registry", default=None,
                      help="with --existing-cluster: host:port of a plain-HTTP registry that this machine pushes to "
                           "and the cluster's nodes pull from under the same name")
    test.add_argument("--expect-network-policy", action="store_true",
                      help="the cluster's CNI enforces NetworkPolicies (Calico in the kind workflow): also check that "
                           "pods without the client label reach neither the API nor PostgreSQL")
    load_image = commands.add_parser("load-image", help="import a Docker Engine image into every node's containerd (as kind load docker-image)")
    load_image.add_argument("image", help="the image as Docker names it, e.g. tasks-server:dev-0123abcd")
    commands.add_parser("fresh-machine", help="the README's image and deploy recipes in a fresh container, against the running cluster")
    commands.add_parser("unit-tests", help="the package's own tests (cluster/tests) with a summary line")
    commands.add_parser("prefetch", help="build (or find cached) everything the suite needs that no other suite builds")
    build = commands.add_parser("build-tools", help="build (or find cached) the tools; prints their paths")
    build.add_argument("names", nargs="*", default=sorted(tools.TOOLS))
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            print(json.dumps(cluster.up(args.nodes), indent=2))
        elif args.command == "down":
            cluster.down()
        elif args.command == "test":
            if args.existing_cluster:
                return run_on_existing(args.existing_cluster, args.registry, expect_network_policy=args.expect_network_policy)
            if args.expect_network_policy:
                print("cluster: --expect-network-policy needs --existing-cluster (this cluster's bridge CNI enforces no NetworkPolicy)",
                      file=sys.stderr)
                return 2
            if args.only is not None:
                from . import scenarios

                unknown = sorted(args.only - set(scenarios.SCENARIOS) - {"helm3", "fresh"})
                if unknown:
                    print(f"cluster: --only: no scenario named {', '.join(unknown)} (known: "
                          f"{', '.join(scenarios.SCENARIOS)}, helm3, fresh)", file=sys.stderr)
                    return 2
            return run_test(args.nodes, keep=args.keep, only=args.only)
        elif args.command == "status":
            print(cluster.status())
        elif args.command == "load-image":
            print(json.dumps(cluster.load_image(args.image)))
        elif args.command == "fresh-machine":
            from . import fresh

            return fresh.run_on_running_cluster()
        elif args.command == "unit-tests":
            return unit_tests()
        elif args.command == "prefetch":
            prefetch()
        elif args.command == "build-tools":
            for name in args.names:
                print(tools.ensure(tools.TOOLS[name]))
    except (process.ClusterError, tools.ToolError, RuntimeError) as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
