"""Command line: ``python3 -m localcluster up|down|status|build-tools``."""

from __future__ import annotations

import argparse
import json
import sys

from . import cluster, process, tools


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localcluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the cluster (network, registry, control plane, nodes)")
    up.add_argument("--nodes", type=int, default=1)
    commands.add_parser("down", help="stop everything the cluster started and remove its state")
    commands.add_parser("status", help="what runs, nodes and pods")
    build = commands.add_parser("build-tools", help="build (or find cached) the tools; prints their paths")
    build.add_argument("names", nargs="*", default=sorted(tools.TOOLS))
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            print(json.dumps(cluster.up(args.nodes), indent=2))
        elif args.command == "down":
            cluster.down()
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
