"""Load and observation clients for the scenarios, all bounded in count and time.

- ``Wrk``: Debian's wrk against a Service address: 80 % list, 20 % create, with the
  API token; its summary counts every socket error and every non-2xx answer.
- ``Writer``: creates one task every ``interval`` seconds and remembers those the
  service acknowledged (201 with an id), so a scenario can read every one back.
- ``Watcher``: asks one address every 100 ms on a fresh connection and records
  failures with their times.
- ``EndpointRemoval``: when pods' addresses leave a node's Service rules (kube-proxy's
  DNAT targets), to measure endpoint propagation against the drain delay.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

_WRK_SCRIPT = r"""
local counter = 0
local limit = tonumber(os.getenv("LOAD_MAX_REQUESTS")) or 100000
local auth = "Bearer " .. (os.getenv("LOAD_TOKEN") or "")
request = function()
  counter = counter + 1
  if counter % 5 == 0 then
    return wrk.format("POST", "/v1/tasks", {["Content-Type"] = "application/json", ["Authorization"] = auth},
      '{"title":"load ' .. counter .. '"}')
  end
  return wrk.format("GET", "/v1/tasks?limit=5", {["Authorization"] = auth})
end
-- The first error statuses a thread saw, so a failed check says which answers failed.
error_statuses = ""
local threads = {}
setup = function(thread) table.insert(threads, thread) end
response = function(status, headers, body)
  if status >= 400 and #error_statuses < 120 then error_statuses = error_statuses .. status .. " " end
  if counter >= limit then wrk.thread:stop() end
end
done = function(summary, latency, requests)
  local statuses = ""
  for _, thread in ipairs(threads) do statuses = statuses .. (thread:get("error_statuses") or "") end
  io.write(string.format(
    'LOAD_SUMMARY {"requests":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_ms":%.2f,"p99_ms":%.2f,"secs":%.2f,"error_statuses":"%s"}\n',
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.duration / 1e6, statuses))
end
"""


class Wrk:
    """wrk in the background for at most ``seconds`` and ``max_requests``."""

    def __init__(self, base_url: str, token: str, *, seconds: int = 300, connections: int = 8, max_requests: int = 400_000):
        wrk = shutil.which("wrk")
        if wrk is None:
            raise RuntimeError("wrk: not found (scripts/ensure-tools.sh wrk installs Debian's wrk)")
        self._script = Path(tempfile.mkstemp(suffix=".lua")[1])
        self._script.write_text(_WRK_SCRIPT)
        self.started = time.monotonic()
        self._process = subprocess.Popen(
            [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(self._script), base_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={"LOAD_TOKEN": token, "LOAD_MAX_REQUESTS": str(max_requests), "PATH": "/usr/bin:/bin"},
        )

    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> dict:
        """Stop the load; its summary with ``failed`` = every kind of error added up."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
        output, _ = self._process.communicate(timeout=30)
        self._script.unlink(missing_ok=True)
        match = re.search(r"LOAD_SUMMARY (\{.*\})", output)
        if not match:
            raise RuntimeError(f"wrk printed no summary:\n{output}")
        summary = json.loads(match.group(1))
        summary["failed"] = sum(summary[k] for k in ("connect", "read", "write", "status", "timeout"))
        summary["ended"] = time.monotonic()
        summary["started"] = self.started
        return summary


def request(host: str, port: int, method: str, path: str, token: str, body: dict | None = None, timeout: float = 5) -> tuple[int, dict | None]:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        try:
            document = json.loads(raw) if raw else None
        except ValueError:
            document = None
        return response.status, document
    finally:
        connection.close()


class _Loop(threading.Thread):
    def __init__(self, interval: float, limit_seconds: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.deadline = time.monotonic() + limit_seconds
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)

    def run(self) -> None:
        while not self._stop_event.is_set() and time.monotonic() < self.deadline:
            began = time.monotonic()
            self.tick()
            self._stop_event.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def tick(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class Writer(_Loop):
    """Creates tasks through ``host:port``; ``acknowledged`` maps id -> title."""

    def __init__(self, host: str, port: int, token: str, *, interval: float = 0.05, limit_seconds: float = 600):
        super().__init__(interval, limit_seconds)
        self.host, self.port, self.token = host, port, token
        self.acknowledged: dict[str, str] = {}
        self.refused = 0

    def tick(self) -> None:
        title = f"acked {uuid.uuid4()}"
        try:
            status, document = request(self.host, self.port, "POST", "/v1/tasks", self.token, {"title": title}, timeout=3)
        except OSError:
            self.refused += 1
            return
        if status == 201 and document and "id" in document:
            self.acknowledged[str(document["id"])] = title
        else:
            self.refused += 1

    def read_back(self) -> tuple[int, list[str]]:
        """Read every acknowledged task; returns (found, ids missing or changed)."""
        missing = []
        for task_id, title in self.acknowledged.items():
            status, document = request(self.host, self.port, "GET", f"/v1/tasks/{task_id}", self.token)
            if status != 200 or not document or document.get("title") != title:
                missing.append(task_id)
        return len(self.acknowledged) - len(missing), missing


class Watcher(_Loop):
    """GET ``path`` every 100 ms on a fresh connection; ``failures`` holds their times."""

    def __init__(self, host: str, port: int, token: str, *, path: str = "/v1/tasks?limit=1", limit_seconds: float = 600):
        super().__init__(0.1, limit_seconds)
        self.host, self.port, self.token, self.path = host, port, token, path
        self.answered = 0
        self.failures: list[tuple[float, str]] = []

    def tick(self) -> None:
        try:
            status, _ = request(self.host, self.port, "GET", self.path, self.token, timeout=2)
        except OSError as error:
            self.failures.append((time.monotonic(), type(error).__name__))
            return
        if status == 200:
            self.answered += 1
        else:
            self.failures.append((time.monotonic(), f"HTTP {status}"))


class EndpointRemoval(_Loop):
    """Reads a node's NAT rules every 200 ms; ``left`` maps each of ``pod_ips`` to the
    wall-clock time it was first seen gone from kube-proxy's DNAT targets. ``rules``
    returns the rules as ``iptables-save`` prints them."""

    def __init__(self, pod_ips, rules, *, limit_seconds: float = 600):
        super().__init__(0.2, limit_seconds)
        self.rules = rules
        self.present = set(pod_ips)
        self.left: dict[str, float] = {}

    def tick(self) -> None:
        try:
            text = self.rules()
        except (OSError, subprocess.SubprocessError, RuntimeError):
            return
        now = time.time()
        targets = set(re.findall(r"--to-destination (\d+\.\d+\.\d+\.\d+):", text))
        for ip in sorted(self.present - targets):
            self.present.discard(ip)
            self.left[ip] = now
