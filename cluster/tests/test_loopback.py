"""The registry's loopback name (``localcluster.loopback``): the forwarder Docker Engine
pushes through, and the containerd mapping that lets the nodes pull the same name.

The forwarder runs for real here (its daemon entry point, on loopback ports), against a
stand-in upstream; no cluster, no root."""

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from localcluster import cluster, loopback, network, node, paths, process

CLUSTER_DIR = str(Path(__file__).resolve().parents[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Upstream(http.server.ThreadingHTTPServer):
    """A registry stand-in: ``GET /v2/`` answers 200, ``PUT`` answers the sha256 of the body."""

    daemon_threads = True

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = b"{}" if self.path == "/v2/" else b"not found"
                self.send_response(200 if self.path == "/v2/" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self):
                digest = hashlib.sha256(self.rfile.read(int(self.headers["Content-Length"]))).hexdigest().encode()
                self.send_response(201)
                self.send_header("Content-Length", str(len(digest)))
                self.end_headers()
                self.wfile.write(digest)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def close(self):
        self.shutdown()
        self.server_close()


class HashUntilEof:
    """A raw TCP upstream that reads until the client half-closes, then answers the
    sha256 of everything it read and closes."""

    def __init__(self, port: int = 0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            with connection:
                digest = hashlib.sha256()
                while data := connection.recv(65536):
                    digest.update(data)
                connection.sendall(digest.hexdigest().encode())

    def close(self):
        self.sock.close()


@pytest.fixture
def forwarder():
    """Start ``python3 -m localcluster.loopback`` (the daemon's own entry point) on a free
    loopback port towards the given upstream; stopped afterwards."""
    started = []

    def start(upstream: str) -> str:
        listen = f"127.0.0.1:{free_port()}"
        child = subprocess.Popen([sys.executable, "-m", "localcluster.loopback", listen, upstream],
                                 env={**os.environ, "PYTHONPATH": CLUSTER_DIR}, stderr=subprocess.PIPE, text=True)
        started.append(child)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert child.poll() is None, child.stderr.read()
            with socket.socket() as probe:
                if probe.connect_ex(loopback.split_address(listen)) == 0:
                    return listen
            time.sleep(0.05)
        raise AssertionError(f"the forwarder did not listen on {listen}")

    yield start
    for child in started:
        child.terminate()
        child.wait(timeout=10)


def request(address: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    import http.client

    host, port = loopback.split_address(address)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_requests_and_a_large_upload_pass_through_unchanged(forwarder):
    upstream = Upstream()
    try:
        listen = forwarder(upstream.address)
        assert request(listen, "GET", "/v2/") == (200, b"{}")
        assert request(listen, "GET", "/v2/nothing")[0] == 404
        # A layer-sized body: every byte arrives, in order.
        layer = os.urandom(8 * 1024 * 1024 + 17)
        assert request(listen, "PUT", "/v2/x/blobs/uploads/1", layer) == (201, hashlib.sha256(layer).hexdigest().encode())
        assert loopback.answers(listen)
    finally:
        upstream.close()


def test_concurrent_connections_each_get_their_own_answer(forwarder):
    upstream = Upstream()
    try:
        listen = forwarder(upstream.address)
        bodies = [os.urandom(300_000 + index) for index in range(8)]
        answers: dict[int, tuple[int, bytes]] = {}

        def put(index: int) -> None:
            answers[index] = request(listen, "PUT", f"/v2/x/blobs/uploads/{index}", bodies[index])

        threads = [threading.Thread(target=put, args=(index,)) for index in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert answers == {index: (201, hashlib.sha256(body).hexdigest().encode()) for index, body in enumerate(bodies)}
    finally:
        upstream.close()


def test_a_half_closed_client_still_gets_the_answer(forwarder):
    upstream = HashUntilEof()
    try:
        listen = forwarder(upstream.address)
        payload = os.urandom(1_000_000)
        with socket.create_connection(loopback.split_address(listen), timeout=10) as client:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)  # the upstream sees end of stream only if it is passed on
            answer = b""
            while data := client.recv(65536):
                answer += data
        assert answer == hashlib.sha256(payload).hexdigest().encode()
    finally:
        upstream.close()


def test_an_unreachable_registry_closes_the_client_and_the_forwarder_keeps_serving(forwarder):
    port = free_port()  # nothing listens there yet
    listen = forwarder(f"127.0.0.1:{port}")
    with socket.create_connection(loopback.split_address(listen), timeout=10) as client:
        client.settimeout(10)
        assert client.recv(10) == b""  # closed, not left hanging
    assert not loopback.answers(listen, timeout=5)
    upstream = HashUntilEof(port)  # the registry comes up: the same forwarder now reaches it
    try:
        with socket.create_connection(loopback.split_address(listen), timeout=10) as client:
            client.sendall(b"x")
            client.shutdown(socket.SHUT_WR)
            assert client.recv(100) == hashlib.sha256(b"x").hexdigest().encode()
    finally:
        upstream.close()


@pytest.mark.parametrize("address", ["0.0.0.0:5001", "10.201.0.1:5001", "localhost:5001", "192.168.1.1:5001"])
def test_the_forwarder_refuses_to_listen_beyond_loopback(address):
    with pytest.raises(ValueError):
        loopback.loopback_listen_address(address)
    result = subprocess.run([sys.executable, "-m", "localcluster.loopback", address, "10.201.0.1:5000"],
                            env={**os.environ, "PYTHONPATH": CLUSTER_DIR}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "registry-loopback:" in result.stderr


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", ":5001", "127.0.0.1:x"])
def test_addresses_need_a_host_and_a_port(address):
    with pytest.raises(ValueError):
        loopback.split_address(address)


def test_the_cluster_names_its_registry_on_loopback_in_dockers_insecure_range():
    import ipaddress

    host, port = loopback.split_address(cluster.REGISTRY_LOOPBACK)
    assert ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
    # Not the bridge registry's port on another address: a different name for the same registry.
    assert cluster.REGISTRY_LOOPBACK != cluster.REGISTRY_ADDRESS


def test_every_node_maps_the_loopback_name_to_the_bridge_registry(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "STATE", tmp_path / "state")
    monkeypatch.setattr(node, "RUN_ROOT", tmp_path / "run")
    for index in (1, 2):
        member = network.Node(index)
        config = node._containerd_config(member, registry=cluster.REGISTRY_ADDRESS, pause_image="pause@sha256:0")
        certs = paths.STATE / member.name / "certs.d"
        assert f'config_path = "{certs}"' in config.read_text()
        for name in (cluster.REGISTRY_LOOPBACK, cluster.REGISTRY_ADDRESS):
            hosts = tomllib.loads((certs / name / "hosts.toml").read_text())
            # Both names resolve to the registry on the bridge, over plain HTTP, pull only.
            assert hosts["server"] == f"http://{cluster.REGISTRY_ADDRESS}"
            assert hosts["host"] == {f"http://{cluster.REGISTRY_ADDRESS}": {"capabilities": ["pull", "resolve"]}}
        assert sorted(p.name for p in certs.iterdir()) == sorted([cluster.REGISTRY_ADDRESS, cluster.REGISTRY_LOOPBACK])


def test_the_daemon_is_started_waited_for_and_stopped_like_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "STATE", tmp_path / "state")
    upstream = Upstream()
    listen = f"127.0.0.1:{free_port()}"
    try:
        seconds = loopback.start(upstream.address, listen)
        assert seconds >= 0 and process.running(loopback.DAEMON)
        assert request(listen, "GET", "/v2/") == (200, b"{}")
        assert "forwarding" in (paths.STATE / "logs" / f"{loopback.DAEMON}.log").read_text()
        assert loopback.start(upstream.address, listen) == 0.0  # already running: reused
        loopback.stop()
        assert not process.running(loopback.DAEMON)
        with socket.socket() as probe:
            assert probe.connect_ex(loopback.split_address(listen)) != 0
    finally:
        loopback.stop()
        upstream.close()


def test_a_taken_loopback_address_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "STATE", tmp_path / "state")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        listen = f"127.0.0.1:{squatter.getsockname()[1]}"
        with pytest.raises(process.ClusterError, match="already taken"):
            loopback.start("127.0.0.1:1", listen)
    assert not process.running(loopback.DAEMON)
