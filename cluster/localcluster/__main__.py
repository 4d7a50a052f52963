"""Command line: ``python3 -m localcluster up|down|status|build-tools``."""

from __future__ import annotations

import argparse
import json
import sys

from . import cluster, paths, process, tools


def run_test(nodes: int, *, keep: bool) -> int:
    """The suite: ``cluster: N passed, M failed`` is its last line."""
    from . import network, registry as registries, scenarios

    results = None
    registry = registries.Registry(cluster.REGISTRY_ADDRESS)
    try:
        network.check_free()
        network.up_host()
        cluster._refuse_if_taken(cluster.REGISTRY_ADDRESS)
        registry.start()
        info = cluster.up(nodes, registry=registry)
        print(json.dumps(info["timings"]), flush=True)
        artefacts = publish(registry)
        results = scenarios.run_all(info, artefacts)
    finally:
        if not keep:
            registry.stop()
            cluster.down()
    return 0 if results is not None and not results.failed else 1


def publish(registry) -> dict:
    """Release N (signed, SBOMs attested and verified), release N+1, PostgreSQL, the chart."""
    from . import images, registry as registries, scenarios

    helms = {"4": str(paths.REPO / ".tools" / "bin" / "helm"), "3": str(paths.REPO / ".tools" / "bin" / "helm3")}
    release_n = registries.release(registry)
    next_image = registries.publish_service_image(registry, version_suffix="next", extra_files=scenarios.NEXT_RELEASE_FILES)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localcluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the cluster (network, registry, control plane, nodes)")
    up.add_argument("--nodes", type=int, default=1)
    commands.add_parser("down", help="stop everything the cluster started and remove its state")
    commands.add_parser("status", help="what runs, nodes and pods")
    test = commands.add_parser("test", help="up, publish the release through the registry, run every scenario, down")
    test.add_argument("--nodes", type=int, default=1)
    test.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    build = commands.add_parser("build-tools", help="build (or find cached) the tools; prints their paths")
    build.add_argument("names", nargs="*", default=sorted(tools.TOOLS))
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            print(json.dumps(cluster.up(args.nodes), indent=2))
        elif args.command == "down":
            cluster.down()
        elif args.command == "test":
            return run_test(args.nodes, keep=args.keep)
        elif args.command == "status":
            print(cluster.status())
        elif args.command == "build-tools":
            for name in args.names:
                print(tools.ensure(tools.TOOLS[name]))
    except (process.ClusterError, tools.ToolError, RuntimeError) as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
