"""The cluster's registry under a loopback name, so Docker Engine can push to it.

Docker Engine pushes over plain HTTP without any daemon configuration only to registries
on loopback (127.0.0.0/8 is its built-in insecure range); the cluster's registry listens
on the bridge address (``cluster.REGISTRY_ADDRESS``, 10.201.0.1:5000), the one the nodes
reach from their network namespaces. Configuring the daemon (``insecure-registries``)
would mean editing and restarting a Docker Engine the user owns. kind's documented
local-registry setup solves the same problem this way, and so does this module:

- the registry is reachable from the host on ``ADDRESS`` (127.0.0.1:5001): kind
  publishes the registry container's port there (docker-proxy forwards it); here a small
  TCP forwarder (:func:`serve`) does, started by ``cluster.up`` as a daemon like the
  others (``process.start``, log in ``<state>/logs/registry-loopback.log``, stopped by
  ``cluster.down``). It listens on loopback only (refused otherwise) and connects only to
  the bridge address: nothing is exposed beyond the machine;
- every node's containerd maps that name back to the bridge address with a
  ``hosts.toml`` (:func:`hosts_toml`, written by ``node._containerd_config``), as kind
  writes ``/etc/containerd/certs.d/localhost:5001/hosts.toml``.

So one image reference, ``127.0.0.1:5001/<owner>/tasks-server@sha256:...``, works for
``docker push`` on the host and for the kubelet's pulls on every node, which is what
``REGISTRY=127.0.0.1:5001 just deploy-staging`` needs (the fresh-machine step runs it).

Run as a daemon: ``python3 -m localcluster.loopback LISTEN UPSTREAM``.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import socket
import sys

from . import paths, process

#: The registry's name on the host (kind uses localhost:5001; an address, not a name, so
#: nothing depends on how ``localhost`` resolves, and it is in Docker's insecure range).
ADDRESS = "127.0.0.1:5001"
#: The daemon's name in ``<state>/pids`` and ``<state>/logs``.
DAEMON = "registry-loopback"
#: Bytes copied per read; a push moves layers of tens of MB.
CHUNK = 256 * 1024
#: Bound on connecting to the registry for one client connection.
CONNECT_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 30.0


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` -> (host, port), for IPv4 addresses and names."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


def loopback_listen_address(address: str) -> tuple[str, int]:
    """The address to listen on, which must be a loopback IP: this forwarder must never
    make the registry reachable from outside the machine."""
    host, port = split_address(address)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{address!r}: listen on a loopback IP address (e.g. {ADDRESS}), not a name") from None
    if not ip.is_loopback:
        raise ValueError(f"{address!r} is not a loopback address: the registry must not be reachable beyond this machine")
    return host, port


def hosts_toml(upstream: str) -> str:
    """containerd's ``certs.d/<name>/hosts.toml``: pull and resolve images named ``<name>/...``
    from the plain-HTTP registry at ``upstream`` (``host:port``)."""
    return (f'server = "http://{upstream}"\n\n'
            f'[host."http://{upstream}"]\n'
            '  capabilities = ["pull", "resolve"]\n')


# ---------------------------------------------------------------------------------------
# The forwarder.


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close the other side (a client that has sent
    its request and shut down writing still gets the answer)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _connection(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                      upstream: tuple[str, int]) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(*upstream), CONNECT_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError) as error:
        # The client sees the connection closed, as it would with the registry down.
        print(f"registry-loopback: cannot reach {upstream[0]}:{upstream[1]}: {error}", file=sys.stderr, flush=True)
        client_writer.close()
        return
    try:
        await asyncio.gather(_copy(client_reader, upstream_writer), _copy(upstream_reader, client_writer))
    finally:
        for writer in (upstream_writer, client_writer):
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass


async def serve(listen: str, upstream: str, *, started: asyncio.Event | None = None) -> None:
    """Forward every TCP connection to ``listen`` (a loopback address) to ``upstream``."""
    listen_host, listen_port = loopback_listen_address(listen)
    target = split_address(upstream)
    server = await asyncio.start_server(lambda r, w: _connection(r, w, target), listen_host, listen_port,
                                        reuse_address=True)
    print(f"registry-loopback: forwarding {listen} to {upstream}", file=sys.stderr, flush=True)
    if started is not None:
        started.set()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python3 -m localcluster.loopback LISTEN UPSTREAM (host:port each; LISTEN on loopback)", file=sys.stderr)
        return 2
    try:
        loopback_listen_address(args[0])
        split_address(args[1])
    except ValueError as error:
        print(f"registry-loopback: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args[0], args[1]))
    except KeyboardInterrupt:
        pass
    return 0


# ---------------------------------------------------------------------------------------
# As one of the cluster's daemons.


def answers(address: str, timeout: float = 5.0) -> bool:
    """Whether a registry answers ``GET /v2/`` with 200 at ``address`` (directly: no
    HTTP proxy of the environment is involved)."""
    host, port = split_address(address)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/v2/")
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _taken(address: str) -> bool:
    host, port = split_address(address)
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


def start(upstream: str, listen: str = ADDRESS) -> float:
    """Start the forwarder daemon (unless this cluster's is running) and wait until the
    registry answers through it; returns the seconds it took."""
    if process.running(DAEMON):
        return 0.0
    loopback_listen_address(listen)
    if _taken(listen):
        raise process.ClusterError(
            f"{listen} is already taken by another process (the registry-loopback of an earlier run?); "
            "stop it (scripts/cluster.sh down) before starting the cluster")
    process.start(DAEMON, [sys.executable, "-u", "-m", "localcluster.loopback", listen, upstream],
                  env={"PYTHONPATH": str(paths.REPO / "cluster")})
    return process.wait_for(f"the registry at {listen} (forwarded to {upstream})", lambda: answers(listen),
                            timeout=READY_TIMEOUT_S, watch=[DAEMON])


def stop() -> None:
    process.stop(DAEMON)


if __name__ == "__main__":
    sys.exit(main())
