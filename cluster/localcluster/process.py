"""Starting, watching and stopping the cluster's daemons.

Every daemon runs as a child process in its own session with stdout and stderr in
``<state>/logs/<name>.log``; its pid is recorded in ``<state>/pids/<name>`` so that
``down`` (or a later run after a crash) stops what an earlier run started. Waits poll a
condition with a deadline and, on failure, raise an error carrying the end of the logs
of the daemons involved.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

from . import paths


class ClusterError(RuntimeError):
    """Something in the cluster did not come up or behave; the message says what."""


def logs_dir() -> Path:
    path = paths.STATE / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pids_dir() -> Path:
    path = paths.STATE / "pids"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tail(name: str, lines: int = 40) -> str:
    """The last ``lines`` lines of a daemon's log."""
    log = logs_dir() / f"{name}.log"
    if not log.exists():
        return f"--- {name}: no log"
    content = log.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {name} ({log}):\n" + "\n".join(content)


def start(name: str, argv: list[str], *, netns: str | None = None, env: dict[str, str] | None = None) -> int:
    """Start daemon ``name``; inside network namespace ``netns`` when given."""
    if netns:
        # nsenter switches only the network namespace: `ip netns exec` would also give
        # the daemon a private mount namespace, and the kubelet's volume mounts would
        # then be invisible to containerd.
        argv = ["nsenter", f"--net=/var/run/netns/{netns}", "--", *argv]
    log = (logs_dir() / f"{name}.log").open("ab")
    process = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    (pids_dir() / name).write_text(str(process.pid))
    return process.pid


def pid(name: str) -> int | None:
    """The pid of a running daemon, or None."""
    record = pids_dir() / name
    if not record.exists():
        return None
    try:
        value = int(record.read_text())
        os.kill(value, 0)
    except (ValueError, ProcessLookupError):
        return None
    return value


def running(name: str) -> bool:
    value = pid(name)
    if value is None:
        return False
    # A zombie child still answers kill(0); read its state.
    try:
        state = Path(f"/proc/{value}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def stop(name: str, *, timeout: float = 20.0) -> None:
    """SIGTERM the daemon's process group, SIGKILL it after ``timeout``."""
    value = pid(name)
    record = pids_dir() / name
    if value is not None:
        try:
            os.killpg(value, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(value):
            _reap(value)
            time.sleep(0.1)
        if _group_alive(value):
            try:
                os.killpg(value, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(value)
    record.unlink(missing_ok=True)


def kill(name: str) -> None:
    """SIGKILL the daemon's process group at once (a crash, not a stop)."""
    value = pid(name)
    if value is not None:
        try:
            os.killpg(value, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(value)
    (pids_dir() / name).unlink(missing_ok=True)


def _group_alive(group: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().split(") ", 1)[1].split()
        except (FileNotFoundError, IndexError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[3]) == group:
            return True
    return False


def _reap(value: int) -> None:
    try:
        os.waitpid(value, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_for(
    what: str,
    condition: Callable[[], bool],
    *,
    timeout: float,
    logs: Iterable[str] = (),
    interval: float = 0.5,
    watch: Iterable[str] = (),
) -> float:
    """Poll ``condition`` until true; return the seconds it took.

    Raises ``ClusterError`` naming ``what`` with the logs of ``logs`` after
    ``timeout`` seconds, or as soon as a daemon in ``watch`` has exited.
    """
    started = time.monotonic()
    deadline = started + timeout
    watched = list(watch)
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except Exception as error:  # a condition may fail while a daemon comes up
            last_error = error
        else:
            last_error = None
        dead = [name for name in watched if not running(name)]
        if dead or time.monotonic() > deadline:
            reason = f"{', '.join(dead)} exited" if dead else f"not within {timeout:.0f}s"
            detail = f" (last error: {last_error})" if last_error else ""
            raise ClusterError(
                f"{what}: {reason}{detail}\n" + "\n".join(tail(name) for name in [*watched, *logs])
            )
        time.sleep(interval)
