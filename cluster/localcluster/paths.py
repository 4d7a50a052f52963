"""Where things live: the cluster's state under the checkout, tool caches per machine."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path
from typing import Iterator

#: The repository checkout this package belongs to.
REPO = Path(__file__).resolve().parents[2]

#: Everything a running cluster writes (certificates, etcd data, containerd root,
#: logs). Removed by ``down``; git-ignored.
STATE = Path(os.environ.get("CLUSTER_STATE_DIR", REPO / ".cluster"))

#: Built tools and downloads, shared by every clone on this machine so a second run
#: (or a fresh clone) does not rebuild. Keyed by what was built, never mutated in place.
CACHE = Path(
    os.environ.get("CLUSTER_CACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tasks-cluster"
)

#: Sources of the Go wrapper modules (one directory per tool).
GO_TOOLS = REPO / "cluster" / "tools"


def bin_dir() -> Path:
    """The directory the cluster's tool binaries are linked into."""
    path = STATE / "bin"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """One build of ``name`` at a time on this machine: a second process (a parallel
    test, or ``./just test`` prefetching tools while a suite asks for them) waits for
    the first one's result instead of building it again."""
    lock_dir = CACHE / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"cluster: waiting for another process building {name} (./just test prefetches the tools)",
                  file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield
