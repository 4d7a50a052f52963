"""Building the third-party tools the cluster suite runs, from the Go module proxy.

Every tool is built once per machine and kept in ``paths.CACHE/bin/<name>-<key>``,
where the key hashes everything that decides the binary (module, version, wrapper
sources, flags, Go version). ``GOCACHE`` and the module cache are Go's own defaults, so
a changed key still rebuilds only what changed. A build that fails names the tool and
shows the end of Go's output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import paths


class ToolError(RuntimeError):
    """A tool could not be built or installed; the message names it."""


@dataclasses.dataclass(frozen=True)
class GoTool:
    """A binary built with the Go toolchain.

    ``wrapper`` is a directory under ``cluster/tools`` holding a module of ours (for
    tools whose own go.mod has replace lines, or several commands linked into one
    binary); otherwise ``package@version`` is built with ``go install`` semantics.
    """

    name: str
    package: str = ""
    version: str = ""
    wrapper: str = ""
    ldflags: tuple[str, ...] = ()
    cgo: bool = False
    env: tuple[tuple[str, str], ...] = ()

    def key(self) -> str:
        digest = hashlib.sha256()
        for part in (self.name, self.package, self.version, " ".join(self.ldflags), str(self.cgo), repr(self.env), _go_version()):
            digest.update(part.encode())
            digest.update(b"\0")
        if self.wrapper:
            root = paths.GO_TOOLS / self.wrapper
            for source in sorted(root.rglob("*")):
                if source.is_file() and source.suffix in {".go", ".mod", ".sum"}:
                    digest.update(str(source.relative_to(root)).encode())
                    digest.update(source.read_bytes())
        return digest.hexdigest()[:16]


KUBERNETES_VERSION = "v1.34.4"

_VERSION_PKG = "k8s.io/component-base/version"

#: Every control-plane and node component of Kubernetes plus etcd, one binary
#: (``kube <component> [flags]``); see cluster/tools/kube/main.go.
KUBE = GoTool(
    name="kube",
    wrapper="kube",
    ldflags=(
        f"-X {_VERSION_PKG}.gitVersion={KUBERNETES_VERSION}",
        f"-X {_VERSION_PKG}.gitMajor=1",
        f"-X {_VERSION_PKG}.gitMinor={KUBERNETES_VERSION.split('.')[1]}",
        f"-X {_VERSION_PKG}.gitTreeState=clean",
    ),
)

#: crane: the OCI registry on loopback (``crane registry serve``) and image assembly
#: (append, mutate, index append) for the service's multi-arch image; see registry.py.
CRANE_VERSION = "v0.22.1"
CRANE = GoTool(
    name="crane",
    package="github.com/google/go-containerregistry/cmd/crane",
    version=CRANE_VERSION,
    ldflags=(f"-X github.com/google/go-containerregistry/cmd/crane/cmd.Version={CRANE_VERSION}",),
)

#: cosign: signs the pushed image index with a per-run key pair (offline, no
#: transparency log) and attaches the SBOM attestation; see docs/adr/ (signing).
COSIGN_VERSION = "v2.6.5"
COSIGN = GoTool(
    name="cosign",
    package="github.com/sigstore/cosign/v2/cmd/cosign",
    version=COSIGN_VERSION,
    ldflags=(f"-X sigs.k8s.io/release-utils/version.gitVersion={COSIGN_VERSION}",),
)

#: CoreDNS with the plugins a cluster's DNS needs; see cluster/tools/coredns/main.go.
COREDNS = GoTool(name="coredns", wrapper="coredns")

#: Tools by name, for ``python3 -m localcluster build-tools NAME...``.
TOOLS: dict[str, GoTool] = {
    KUBE.name: KUBE,
    CRANE.name: CRANE,
    COSIGN.name: COSIGN,
    COREDNS.name: COREDNS,
}


def _go_version() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolError("go: not found on PATH (the machines ship Go 1.26; install Go to build the cluster's tools)")
    return subprocess.run([go, "env", "GOVERSION"], check=True, capture_output=True, text=True).stdout.strip()


def log(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


def ensure(tool: GoTool) -> Path:
    """Return the path of ``tool``'s binary, building it first when not cached."""
    target = paths.CACHE / "bin" / f"{tool.name}-{tool.key()}"
    if not target.exists():
        with paths.cache_lock(f"tool-{tool.name}"):
            if not target.exists():
                _build(tool, target)
    link = paths.bin_dir() / tool.name
    if not (link.is_symlink() and os.readlink(link) == str(target)):
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    return link


def _build(tool: GoTool, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    env = dict(os.environ, CGO_ENABLED="1" if tool.cgo else "0", GOFLAGS="-mod=mod", **dict(tool.env))
    args = ["go", "build", "-trimpath", "-ldflags", " ".join(("-s", "-w") + tool.ldflags), "-o", str(partial)]
    if tool.wrapper:
        cwd = paths.GO_TOOLS / tool.wrapper
        args.append(".")
    else:
        # A throwaway module requiring package@version builds it exactly as
        # `go install package@version` would, with the output path under our control.
        cwd = paths.CACHE / "modules" / f"{tool.name}-{tool.key()}"
        cwd.mkdir(parents=True, exist_ok=True)
        (cwd / "go.mod").write_text("module tasks.local/cluster-tools/install\n\ngo 1.24\n")
        (cwd / "tools.go").write_text(f'//go:build tools\n\npackage tools\n\nimport _ "{tool.package}"\n')
        subprocess.run(["go", "get", f"{tool.package}@{tool.version}"], cwd=cwd, env=env, check=False, capture_output=True)
        args.append(tool.package)
    log(f"building {tool.name} ({tool.package or 'cluster/tools/' + tool.wrapper}{'@' + tool.version if tool.version else ''}); cached as {target}")
    started = time.monotonic()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise ToolError(f"building {tool.name} failed (exit {result.returncode}):\n{tail}")
    partial.rename(target)
    log(f"built {tool.name} in {time.monotonic() - started:.0f}s")


def debian_install(*packages: str) -> None:
    """Install Debian packages through the project's one apt-get wrapper."""
    missing = [p for p in packages if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout != "install ok installed"]
    if not missing:
        return
    script = f'source "{paths.REPO}/scripts/lib/debian.sh" && debian_install "$@"'
    result = subprocess.run(["bash", "-c", script, "debian", *missing])
    if result.returncode != 0:
        raise ToolError(f"Debian packages {' '.join(missing)} could not be installed (see above)")
