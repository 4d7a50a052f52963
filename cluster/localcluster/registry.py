"""The OCI registry on this machine and the release path through it.

What a release does on GHCR (``.github/workflows/image.yml``) happens here against a
registry the suite starts itself, so the cluster pulls by digest exactly as from GHCR:

- :class:`Registry`: ``crane registry serve`` (go-containerregistry's registry) as a
  process listening on an address the caller chooses (loopback in tests, the host side
  of the node's veth for the cluster). Blobs are stored on disk under
  ``paths.STATE / "registry"``; manifests and tags live in the process (crane's
  registry keeps them in memory), so a restarted registry is empty and the release is
  pushed again.
- :func:`publish_service_image`: tasks-server for linux/amd64 and linux/arm64 (a
  static musl binary for each, the arm64 one cross-compiled, see
  docs/adr/0012-multi-arch-image-cross-compiled.md) in one OCI image index, pushed and
  returned by digest. The image is assembled here as an OCI layout (two layers and the
  config that docker/Dockerfile's ``host`` target declares: labels, user, ports,
  entrypoint, command) and pushed with ``crane push``; no Docker daemon is involved.
- :func:`generate_key_pair`, :func:`sign`, :func:`verify`: cosign with a key pair
  made per run, offline (no transparency log, no Fulcio).
- :func:`attest_sbom`, :func:`verify_sbom`: a CycloneDX SBOM per platform (from Cargo
  metadata with cargo-cyclonedx, for exactly the target the binary was built for)
  attached as a signed in-toto attestation and read back.
- :func:`publish_chart`: ``helm package`` + ``helm push`` to ``oci://<registry>/charts``
  with any Helm binary (3 or 4).
- :func:`release`: all of the above in order, with every verification done.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import paths, tools

#: Platforms of the service image, with the Rust target that builds each binary.
PLATFORMS: dict[str, str] = {
    "amd64": "x86_64-unknown-linux-musl",
    "arm64": "aarch64-unknown-linux-musl",
}

#: The C cross compiler (for ring) and linker of the arm64 binary: Debian's GNU cross
#: toolchain drives the link, Rust's self-contained musl CRT objects and libc are used.
ARM64_CC = "aarch64-linux-gnu-gcc"

#: cargo-cyclonedx, installed from crates.io once per machine (paths.CACHE/cargo).
CARGO_CYCLONEDX_VERSION = "0.5.9"

REPOSITORY = "tasks-server"
CHART_REPOSITORY = "charts"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

#: What docker/Dockerfile's ``base`` stage declares (test_registry.py checks the two
#: agree, so they cannot drift apart).
IMAGE_USER = "10001:10001"
IMAGE_PORTS = ("8080/tcp", "9090/tcp")
IMAGE_ENTRYPOINT = ["/tasks-server"]
IMAGE_CMD = ["serve"]
IMAGE_SOURCE = "https://github.com/tasks-platform/tasks"
#: Docker (both builders) gives an image built FROM scratch the default PATH.
IMAGE_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 600.0
#: A release build with fat LTO on 2 busy cores: generous, still bounded.
CARGO_TIMEOUT_S = 3600.0


class RegistryError(RuntimeError):
    """Something on the release path failed; the message carries the relevant output."""


class VerificationError(RegistryError):
    """A signature or attestation did not verify."""


def log(message: str) -> None:
    print(f"registry: {message}", file=sys.stderr, flush=True)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _run(args: list[str], *, what: str, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = COMMAND_TIMEOUT_S, error: type[RegistryError] = RegistryError,
         with_stderr: bool = False) -> str:
    """Run a command, return its stdout (and stderr after it when ``with_stderr``); on
    failure raise ``error`` with its output."""
    try:
        result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise error(f"{what}: no result after {timeout:.0f}s\n{_tail(out + err)}") from None
    if result.returncode != 0:
        raise error(f"{what} failed (exit {result.returncode}): {' '.join(map(str, args))}\n"
                    f"{_tail(result.stdout + result.stderr)}")
    return result.stdout + (result.stderr if with_stderr else "")


# ---------------------------------------------------------------------------------------
# The registry process.


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for tests on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Registry:
    """``crane registry serve`` on ``address`` (``host:port``), blobs under ``storage``.

    ``start()`` returns once ``GET /v2/`` answers (bounded by ``READY_TIMEOUT_S``);
    ``stop()`` ends the process and waits for it. Also a context manager.
    """

    def __init__(self, address: str, storage: Path | None = None):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or int(port) == 0:
            raise ValueError(f"registry address must be host:port with a fixed port, not {address!r}")
        self.address = address
        self.storage = Path(storage) if storage is not None else paths.STATE / "registry"
        self.log_path = self.storage / "registry.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Registry({self.address!r}, running={self.running})"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def url(self, path: str = "/v2/") -> str:
        return f"http://{self.address}{path}"

    def start(self) -> "Registry":
        if self.running:
            return self
        crane = tools.ensure(tools.CRANE)
        blobs = self.storage / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        log(f"starting crane registry serve on {self.address} (blobs in {blobs}, log {self.log_path})")
        with open(self.log_path, "ab") as out:
            self._process = subprocess.Popen(
                [str(crane), "registry", "serve", "--address", self.address, "--disk", str(blobs)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise RegistryError(f"crane registry exited with {code} before answering on {self.address}\n"
                                    f"{self.logs()}")
            try:
                with urllib.request.urlopen(self.url(), timeout=2) as response:
                    if response.status == 200:
                        log(f"registry answers on {self.address}")
                        return self
                    last = f"HTTP {response.status}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.1)
        self.stop()
        raise RegistryError(f"registry on {self.address} not ready within {READY_TIMEOUT_S:.0f}s ({last})\n{self.logs()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log(f"registry pid {process.pid} ignored SIGTERM for {STOP_TIMEOUT_S:.0f}s; killing it")
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)

    def logs(self, lines: int = 40) -> str:
        try:
            return f"--- {self.log_path} (last {lines} lines) ---\n" + _tail(self.log_path.read_text(errors="replace"), lines)
        except FileNotFoundError:
            return f"--- {self.log_path}: no log ---"

    def __enter__(self) -> "Registry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def crane(self, *args: str, what: str = "crane") -> str:
        """Run crane against this registry (plain HTTP), return stdout."""
        return _run([str(tools.ensure(tools.CRANE)), *args, "--insecure"], what=what)


# ---------------------------------------------------------------------------------------
# Building the binaries.


def _git(*args: str) -> str:
    return _run(["git", *args], what="git", cwd=paths.REPO).strip()


def base_version() -> str:
    """The workspace version (Cargo.toml ``[workspace.package] version``), as image.sh reads it."""
    match = re.search(r'^version = "([^"]+)"', (paths.REPO / "Cargo.toml").read_text(), re.MULTILINE)
    if not match:
        raise RegistryError("no version in Cargo.toml")
    return match.group(1)


_SUFFIX = re.compile(r"^[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*$")


def service_version(version_suffix: str | None = None) -> str:
    """The version string the binary reports: ``0.1.0``, or ``0.1.0-<suffix>`` (SemVer pre-release)."""
    if version_suffix is None:
        return base_version()
    if not _SUFFIX.match(version_suffix):
        raise ValueError(f"version suffix must be SemVer pre-release identifiers (like rc.2), not {version_suffix!r}")
    return f"{base_version()}-{version_suffix}"


def ensure_cross_toolchain() -> None:
    """The Rust musl targets for both platforms and the C compilers ring needs for them."""
    installed = _run(["rustup", "target", "list", "--installed"], what="rustup").split()
    missing = [t for t in PLATFORMS.values() if t not in installed]
    if missing:
        log(f"rustup target add {' '.join(missing)}")
        _run(["rustup", "target", "add", *missing], what="rustup target add")
    if shutil.which("x86_64-linux-musl-gcc") is None or shutil.which(ARM64_CC) is None:
        # libc6-dev-arm64-cross is only a Recommends of the cross gcc (and debian_install
        # skips those): ring's C files include <string.h>, <stdlib.h> and, through gcc's
        # own <stdint.h>, libc's.
        tools.debian_install("musl-tools", "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross")


def _workspace_files() -> list[str]:
    out = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], what="git ls-files", cwd=paths.REPO)
    return [name for name in out.split("\0") if name and (paths.REPO / name).is_file()]


def _sync_copy(copy: Path) -> None:
    """Make ``copy`` hold the checkout's files (tracked and untracked, not ignored).

    Unchanged files keep their modification time, so Cargo's fingerprints stay fresh
    and a second build of the same copy is a no-op."""
    wanted = set(_workspace_files())
    for name in wanted:
        source, target = paths.REPO / name, copy / name
        if target.is_file() and target.stat().st_size == source.stat().st_size and target.read_bytes() == source.read_bytes():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    if copy.exists():
        for path in copy.rglob("*"):
            if path.is_file() and str(path.relative_to(copy)) not in wanted and not path.name.startswith("sbom-"):
                path.unlink()


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _source_for(version: str, version_suffix: str | None, extra_files: dict[str, str] | None = None) -> Path:
    """The workspace to build: the checkout, or a copy with tasks-server's version set
    and ``extra_files`` (path relative to the checkout -> content) added."""
    if version_suffix is None:
        if extra_files:
            raise RegistryError("extra files need a version suffix: a different build is a different version")
        return paths.REPO
    copy = paths.STATE / "build" / f"src-{version}"
    _sync_copy(copy)
    # Only the binary's package changes version: the library crates keep theirs (their
    # requirements in [workspace.dependencies] would not match a pre-release).
    manifest = copy / "bin" / "tasks-server" / "Cargo.toml"
    original = (paths.REPO / "bin" / "tasks-server" / "Cargo.toml").read_text()
    if "version.workspace = true" not in original:
        raise RegistryError(f"{manifest}: expected 'version.workspace = true' to replace")
    _write_if_changed(manifest, original.replace("version.workspace = true", f'version = "{version}"', 1))
    lock = (paths.REPO / "Cargo.lock").read_text()
    old = f'name = "tasks-server"\nversion = "{base_version()}"\n'
    if old not in lock:
        raise RegistryError("Cargo.lock: no tasks-server entry at the workspace version")
    _write_if_changed(copy / "Cargo.lock", lock.replace(old, f'name = "tasks-server"\nversion = "{version}"\n', 1))
    for relative, content in (extra_files or {}).items():
        (copy / relative).parent.mkdir(parents=True, exist_ok=True)
        _write_if_changed(copy / relative, content)
    return copy


def target_dir(platform: str) -> Path:
    """Where a platform's release binary is built.

    amd64 builds where scripts/image.sh builds it (``CARGO_TARGET_DIR`` or ``target/``),
    so the image test's binary of the same checkout is reused, not rebuilt; the copies
    of release N+1 share its dependencies. arm64 builds in a directory of its own
    (``cross/`` under it): nothing there is shared with amd64 anyway, and ``prefetch``
    can build it beside the other suites without holding their cargo lock."""
    configured = os.environ.get("CARGO_TARGET_DIR")
    base = Path(configured) if configured else paths.REPO / "target"
    return base if platform == "amd64" else base / "cross"


def build_binaries(version_suffix: str | None = None, extra_files: dict[str, str] | None = None,
                   platforms: tuple[str, ...] = tuple(PLATFORMS)) -> dict[str, Path]:
    """Static tasks-server binaries per platform (release profile, as scripts/image.sh builds them)."""
    ensure_cross_toolchain()
    version = service_version(version_suffix)
    source = _source_for(version, version_suffix, extra_files)
    binaries: dict[str, Path] = {}
    for platform in platforms:
        target = PLATFORMS[platform]
        directory = target_dir(platform)
        env = dict(os.environ, CARGO_TARGET_DIR=str(directory))
        env[f"CC_{PLATFORMS['arm64'].replace('-', '_')}"] = ARM64_CC
        env[f"CARGO_TARGET_{PLATFORMS['arm64'].replace('-', '_').upper()}_LINKER"] = ARM64_CC
        if version_suffix is not None:
            # The copy has no .git: build.rs takes the revision from here (what git would say).
            env["GIT_REVISION"] = _git("rev-parse", "--short=12", "HEAD")
        built = directory / "tasks-cluster-builds" / build_key(source, version, platform, env, extra_files) / "tasks-server"
        if built.is_file():
            log(f"tasks-server {version} for linux/{platform}: built before from the same sources ({built.parent.name[:12]})")
        else:
            log(f"cargo build --release --target {target} -p tasks-server (version {version}, target dir {directory})")
            started = time.monotonic()
            _run(["cargo", "build", "--release", "--locked", "--target", target, "-p", "tasks-server"],
                 what=f"building tasks-server for {target}", env=env, cwd=source, timeout=CARGO_TIMEOUT_S)
            log(f"built tasks-server for linux/{platform} in {time.monotonic() - started:.0f}s")
            built.parent.mkdir(parents=True, exist_ok=True)
            staged = built.with_name(f".tasks-server.{os.getpid()}.partial")
            shutil.copy2(directory / target / "release" / "tasks-server", staged)
            staged.replace(built)
        # Copies and the checkout share the target directory: keep each version's binary.
        keep = paths.STATE / "build" / f"tasks-server-{version}-{platform}"
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, keep)
        check_binary(keep, platform, version)
        binaries[platform] = keep
    return binaries


#: What else decides the binary besides the sources: the profile and flags Cargo reads
#: from the environment (the fresh-machine step, for one, builds with a cheaper profile).
_BUILD_ENV_PREFIXES = ("CARGO_PROFILE_", "CARGO_BUILD_RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "RUSTC",
                       "CARGO_TARGET_", "CC_", "CFLAGS", "GIT_REVISION")


def build_key(source: Path, version: str, platform: str, env: dict[str, str],
              extra_files: dict[str, str] | None = None) -> str:
    """A name for one release build: the sources ``source`` holds (the checkout's files,
    tracked and untracked, which a copy mirrors, plus its extra files), the version,
    the revision, the platform, the toolchain and the build environment.

    Two builds with the same key make the same binary, so the second is skipped. This
    matters because a copy of release N+1 lives under the cluster's state, which ``down``
    removes: rebuilt from scratch, every workspace crate's fingerprint is new and the
    binary is relinked (a fat-LTO link, minutes on two cores) although nothing changed."""
    digest = hashlib.sha256()

    def part(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    part("version", version.encode())
    part("platform", PLATFORMS[platform].encode())
    part("revision", _git("rev-parse", "HEAD").encode())
    part("rustc", _run(["rustc", "-vV"], what="rustc -vV", cwd=source).encode())
    for name in sorted(env):
        if name.startswith(_BUILD_ENV_PREFIXES):
            part(f"env {name}", env[name].encode())
    for name in sorted(set(_workspace_files()) | set(extra_files or ())):
        path = source / name
        if path.is_file():
            part(f"file {name}", path.read_bytes())
    return digest.hexdigest()


_ELF_MACHINE = {"amd64": 62, "arm64": 183}


def check_binary(binary: Path, platform: str, version: str) -> None:
    """The binary is a static ELF executable for ``platform`` that carries ``version``."""
    data = binary.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise RegistryError(f"{binary}: not a 64-bit little-endian ELF file")
    machine = int.from_bytes(data[18:20], "little")
    if machine != _ELF_MACHINE[platform]:
        raise RegistryError(f"{binary}: ELF machine {machine}, expected {_ELF_MACHINE[platform]} for {platform}")
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    for i in range(phnum):
        p_type = int.from_bytes(data[phoff + i * phentsize: phoff + i * phentsize + 4], "little")
        if p_type == 3:  # PT_INTERP: dynamically linked
            raise RegistryError(f"{binary}: dynamically linked (has an interpreter); the image is FROM scratch")
    if f"{version} (".encode() not in data:
        raise RegistryError(f"{binary}: does not carry the version string '{version} (<revision>)'")


# ---------------------------------------------------------------------------------------
# Assembling the image (an OCI layout) the way docker/Dockerfile's host target does.


@dataclasses.dataclass(frozen=True)
class _Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


def _layer(files: list[tuple[str, bytes, int]], mtime: int) -> tuple[_Blob, str]:
    """A gzipped tar layer of ``(path, content, mode)`` with parent directories as
    Docker's COPY writes them (root-owned, 0755); returns it and its diff_id."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        seen: set[str] = set()
        for name, content, mode in files:
            parts = name.split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth]) + "/"
                if directory not in seen:
                    seen.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, mtime
            tar.addfile(info, io.BytesIO(content))
    uncompressed = raw.getvalue()
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0) as gz:
        gz.write(uncompressed)
    return _Blob(OCI_LAYER, compressed.getvalue()), "sha256:" + hashlib.sha256(uncompressed).hexdigest()


def image_labels(version: str, revision: str, created: str) -> dict[str, str]:
    """The OCI labels of docker/Dockerfile's base stage, with image.sh's build arguments."""
    return {
        "org.opencontainers.image.title": "tasks-server",
        "org.opencontainers.image.description": "Task tracking API backed by PostgreSQL",
        "org.opencontainers.image.source": IMAGE_SOURCE,
        "org.opencontainers.image.url": IMAGE_SOURCE,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.licenses": "MIT OR Apache-2.0",
    }


def image_config(platform: str, labels: dict[str, str], created: str, diff_ids: list[str]) -> dict[str, object]:
    return {
        "architecture": platform,
        "os": "linux",
        "created": created,
        "config": {
            "User": IMAGE_USER,
            "ExposedPorts": {port: {} for port in IMAGE_PORTS},
            "Env": IMAGE_ENV,
            "Entrypoint": IMAGE_ENTRYPOINT,
            "Cmd": IMAGE_CMD,
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": created, "created_by": "LABEL " + " ".join(f'{k}="{v}"' for k, v in labels.items()), "empty_layer": True},
            {"created": created, "created_by": f"USER {IMAGE_USER}", "empty_layer": True},
            {"created": created, "created_by": "EXPOSE " + " ".join(p.split("/")[0] for p in IMAGE_PORTS), "empty_layer": True},
            {"created": created, "created_by": f"ENTRYPOINT {json.dumps(IMAGE_ENTRYPOINT)}", "empty_layer": True},
            {"created": created, "created_by": f"CMD {json.dumps(IMAGE_CMD)}", "empty_layer": True},
            {"created": created, "created_by": "COPY target/docker/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt"},
            {"created": created, "created_by": "COPY target/docker/tasks-server /tasks-server"},
        ],
    }


def _json_blob(media_type: str, value: object) -> _Blob:
    return _Blob(media_type, json.dumps(value, separators=(",", ":"), sort_keys=False).encode())


def write_layout(layout: Path, binaries: dict[str, Path], version: str) -> str:
    """Write the multi-platform image as an OCI layout; return the index digest."""
    revision = _git("rev-parse", "HEAD")
    created = _git("log", "-1", "--format=%cI")
    mtime = int(_git("log", "-1", "--format=%ct"))
    labels = image_labels(version, revision, created)
    ca_bundle = CA_BUNDLE.read_bytes()
    if layout.exists():
        shutil.rmtree(layout)
    (layout / "blobs" / "sha256").mkdir(parents=True)

    def put(blob: _Blob) -> _Blob:
        (layout / "blobs" / "sha256" / blob.digest.split(":", 1)[1]).write_bytes(blob.data)
        return blob

    # The CA layer is the same for both platforms (one blob, shared).
    ca_layer, ca_diff = _layer([("etc/ssl/certs/ca-certificates.crt", ca_bundle, 0o644)], mtime)
    put(ca_layer)
    manifests = []
    for platform, binary in binaries.items():
        bin_layer, bin_diff = _layer([("tasks-server", binary.read_bytes(), 0o755)], mtime)
        put(bin_layer)
        config = put(_json_blob(OCI_CONFIG, image_config(platform, labels, created, [ca_diff, bin_diff])))
        manifest = put(_json_blob(OCI_MANIFEST, {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [ca_layer.descriptor(), bin_layer.descriptor()],
        }))
        manifests.append(manifest.descriptor(platform={"architecture": platform, "os": "linux"}))
    index = put(_json_blob(OCI_INDEX, {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
        "annotations": {"org.opencontainers.image.version": version,
                        "org.opencontainers.image.revision": revision,
                        "org.opencontainers.image.created": created,
                        "org.opencontainers.image.source": IMAGE_SOURCE},
    }))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                   "manifests": [index.descriptor()]}))
    return index.digest


def publish_service_image(registry: Registry, *, version_suffix: str | None = None,
                          repository: str = REPOSITORY, extra_files: dict[str, str] | None = None,
                          platforms: tuple[str, ...] = tuple(PLATFORMS)) -> str:
    """Build tasks-server for both platforms, push one image index; return ``host/repo@sha256:…``.

    The tag is the version (``0.1.0`` or ``0.1.0-<suffix>``); the returned reference
    pins the index by digest. ``version_suffix`` builds "release N+1": tasks-server's
    own version becomes ``<workspace version>-<suffix>`` in a copy of the checkout
    (``--version``, ``build_info`` and the image labels all say so).
    """
    version = service_version(version_suffix)
    binaries = build_binaries(version_suffix, extra_files, platforms)
    layout = paths.STATE / "build" / f"oci-{version}"
    digest = write_layout(layout, binaries, version)
    tag_ref = f"{registry.address}/{repository}:{version}"
    pushed = registry.crane("push", str(layout), tag_ref, what=f"crane push {tag_ref}").strip()
    expected = f"{registry.address}/{repository}@{digest}"
    if pushed != expected:
        raise RegistryError(f"crane pushed {pushed!r}, expected {expected!r}")
    # Read back: the tag resolves to the index, and the index lists both platforms.
    remote = registry.crane("digest", tag_ref, what="crane digest").strip()
    if remote != digest:
        raise RegistryError(f"{tag_ref} resolves to {remote}, pushed {digest}")
    index = json.loads(registry.crane("manifest", expected, what="crane manifest"))
    pushed_platforms = sorted(m["platform"]["architecture"] for m in index["manifests"])
    if pushed_platforms != sorted(binaries):
        raise RegistryError(f"{expected}: platforms {pushed_platforms}, expected {sorted(binaries)}")
    log(f"pushed {expected} (tag {version}; linux/{', linux/'.join(pushed_platforms)})")
    return expected


def platform_digests(registry: Registry, ref: str) -> dict[str, str]:
    """``{architecture: host/repo@sha256:…}`` of the index ``ref``'s manifests."""
    index = json.loads(registry.crane("manifest", ref, what="crane manifest"))
    repo = ref.split("@", 1)[0]
    return {m["platform"]["architecture"]: f"{repo}@{m['digest']}" for m in index["manifests"]}


# ---------------------------------------------------------------------------------------
# Signing (cosign, offline key pair) and the SBOM attestation.


@dataclasses.dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


def _cosign_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, COSIGN_PASSWORD="", COSIGN_YES="true", HOME=str(home),
               TUF_ROOT=str(home / "sigstore"), SIGSTORE_NO_CACHE="true")
    env.pop("DOCKER_CONFIG", None)
    return env


def _cosign(*args: str, what: str, error: type[RegistryError] = RegistryError, cwd: Path | None = None) -> str:
    home = paths.STATE / "cosign-home"
    home.mkdir(parents=True, exist_ok=True)
    return _run([str(tools.ensure(tools.COSIGN)), *args], what=what, env=_cosign_env(home), cwd=cwd, error=error)


def generate_key_pair(directory: Path, name: str = "cosign") -> KeyPair:
    """A fresh cosign key pair (empty password) in ``directory``: ``name.key``, ``name.pub``."""
    directory.mkdir(parents=True, exist_ok=True)
    prefix = directory / name
    for suffix in (".key", ".pub"):
        prefix.with_suffix(suffix).unlink(missing_ok=True)
    _cosign("generate-key-pair", "--output-key-prefix", str(prefix), what="cosign generate-key-pair")
    return KeyPair(prefix.with_suffix(".key"), prefix.with_suffix(".pub"))


_REGISTRY_FLAGS = ("--allow-http-registry", "--allow-insecure-registry")


def sign(ref: str, key: KeyPair) -> None:
    """Sign ``ref`` (by digest) with ``key``; the signature is stored beside it in the registry."""
    _require_digest(ref)
    _cosign("sign", "--key", str(key.private), "--tlog-upload=false", *_REGISTRY_FLAGS, ref, what=f"cosign sign {ref}")
    log(f"signed {ref}")


def verify(ref: str, public_key: Path) -> list[dict[str, object]]:
    """Verify ``ref``'s signature against ``public_key``; return cosign's payloads.

    Raises VerificationError when no signature verifies (another key, no signature,
    a signature over another digest)."""
    _require_digest(ref)
    out = _cosign("verify", "--key", str(public_key), "--insecure-ignore-tlog=true", *_REGISTRY_FLAGS, ref,
                  what=f"cosign verify {ref}", error=VerificationError)
    payloads = json.loads(out)
    digest = ref.split("@", 1)[1]
    if not payloads or any(p["critical"]["image"]["docker-manifest-digest"] != digest for p in payloads):
        raise VerificationError(f"cosign verify {ref}: payloads do not name {digest}: {out[:500]}")
    return payloads


def ensure_cargo_cyclonedx() -> Path:
    """cargo-cyclonedx from crates.io, installed once per machine (keyed by version).

    Built with the dev profile (``--debug``): it reads ``cargo metadata`` once per SBOM,
    so optimisation buys nothing at run time and the optimised build costs several
    CPU-minutes of a first run on two cores."""
    root = paths.CACHE / "cargo" / f"cargo-cyclonedx-{CARGO_CYCLONEDX_VERSION}"
    binary = root / "bin" / "cargo-cyclonedx"
    if binary.exists():
        return binary
    with paths.cache_lock("cargo-cyclonedx"):
        if binary.exists():
            return binary
        partial = root.with_name(root.name + f".partial-{os.getpid()}")
        target = paths.CACHE / "cargo" / f"target-cargo-cyclonedx-{os.getpid()}"
        env = dict(os.environ, CARGO_TARGET_DIR=str(target))
        log(f"cargo install --debug cargo-cyclonedx {CARGO_CYCLONEDX_VERSION}; cached in {root}")
        started = time.monotonic()
        _run(["cargo", "install", "--debug", "cargo-cyclonedx", "--version", CARGO_CYCLONEDX_VERSION, "--locked",
              "--root", str(partial)], what="cargo install cargo-cyclonedx", env=env, timeout=CARGO_TIMEOUT_S)
        partial.rename(root)
        shutil.rmtree(target, ignore_errors=True)
        log(f"built cargo-cyclonedx in {time.monotonic() - started:.0f}s")
    return binary


def make_sbom(platform: str, version_suffix: str | None = None) -> dict[str, object]:
    """The CycloneDX SBOM (JSON) of tasks-server as built for ``platform``: the crates
    compiled into the binary for that target (no dev or build-only dependencies)."""
    cyclonedx = ensure_cargo_cyclonedx()
    version = service_version(version_suffix)
    # cargo-cyclonedx writes its file beside the package's Cargo.toml: it runs in a copy
    # (the one of the release build, or one for the checkout) so the checkout stays untouched.
    if version_suffix is None:
        source = paths.STATE / "build" / "src-sbom"
        _sync_copy(source)
    else:
        source = _source_for(version, version_suffix)
    env = dict(os.environ, PATH=f"{cyclonedx.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    name = f"sbom-{platform}"
    output = source / "bin" / "tasks-server" / f"{name}.json"
    output.unlink(missing_ok=True)
    _run(["cargo", "cyclonedx", "--manifest-path", str(source / "bin" / "tasks-server" / "Cargo.toml"),
          "--format", "json", "--target", PLATFORMS[platform], "--no-build-deps", "--override-filename", name],
         what="cargo cyclonedx", env=env, cwd=source)
    sbom = json.loads(output.read_text())
    output.unlink()
    return sbom


def attest_sbom(ref: str, key: KeyPair, sbom: dict[str, object]) -> None:
    """Attach ``sbom`` to ``ref`` as a signed CycloneDX in-toto attestation."""
    _require_digest(ref)
    with tempfile.NamedTemporaryFile("w", suffix=".cdx.json", dir=paths.STATE, delete=False) as f:
        json.dump(sbom, f)
    try:
        _cosign("attest", "--key", str(key.private), "--type", "cyclonedx", "--predicate", f.name,
                "--tlog-upload=false", *_REGISTRY_FLAGS, ref, what=f"cosign attest {ref}")
    finally:
        os.unlink(f.name)
    log(f"attested the SBOM of {ref}")


def verify_sbom(ref: str, public_key: Path) -> dict[str, object]:
    """Verify the CycloneDX attestation of ``ref`` against ``public_key``; return the SBOM."""
    _require_digest(ref)
    out = _cosign("verify-attestation", "--key", str(public_key), "--type", "cyclonedx",
                  "--insecure-ignore-tlog=true", *_REGISTRY_FLAGS, ref,
                  what=f"cosign verify-attestation {ref}", error=VerificationError)
    for line in filter(None, out.splitlines()):
        envelope = json.loads(line)
        statement = json.loads(base64.b64decode(envelope["payload"]))
        digest = ref.split("@", 1)[1].split(":", 1)[1]
        if any(s.get("digest", {}).get("sha256") == digest for s in statement.get("subject", [])):
            return statement["predicate"]
    raise VerificationError(f"no CycloneDX attestation for {ref} among {out[:500]}")


def _require_digest(ref: str) -> None:
    if not re.search(r"@sha256:[0-9a-f]{64}$", ref):
        raise ValueError(f"sign and verify by digest, not {ref!r}")


# ---------------------------------------------------------------------------------------
# The chart as an OCI artifact.


def _helm_env(home: Path) -> dict[str, str]:
    return dict(os.environ, HELM_CONFIG_HOME=str(home / "config"), HELM_CACHE_HOME=str(home / "cache"),
                HELM_DATA_HOME=str(home / "data"), HELM_REGISTRY_CONFIG=str(home / "config" / "registry.json"))


def publish_chart(registry: Registry, chart_dir: Path, helm_binary: Path,
                  repository: str = CHART_REPOSITORY) -> str:
    """``helm package`` + ``helm push`` the chart; return ``oci://host/charts/<name>:<version>``.

    Checked: ``helm show chart`` of that reference answers with the chart's name and
    version."""
    helm = str(helm_binary)
    major = _run([helm, "version", "--template", "{{.Version}}"], what="helm version").strip()
    home = paths.STATE / f"helm-{Path(helm).name}"
    env = _helm_env(home)
    with tempfile.TemporaryDirectory(prefix="chart-", dir=paths.STATE) as out:
        package_out = _run([helm, "package", str(chart_dir), "--destination", out], what="helm package", env=env)
        packages = list(Path(out).glob("*.tgz"))
        if len(packages) != 1:
            raise RegistryError(f"helm package wrote {packages}: {package_out}")
        package = packages[0]
        push_out = _run([helm, "push", str(package), f"oci://{registry.address}/{repository}", "--plain-http"],
                        what=f"helm ({major}) push", env=env, with_stderr=True)
    name, _, version = package.name[: -len(".tgz")].rpartition("-")
    digest = re.search(r"Digest: (sha256:[0-9a-f]{64})", push_out)
    reference = f"oci://{registry.address}/{repository}/{name}:{version}"
    if digest is None:
        raise RegistryError(f"helm push printed no digest:\n{push_out}")
    remote = registry.crane("digest", reference.removeprefix("oci://"), what="crane digest").strip()
    if remote != digest.group(1):
        raise RegistryError(f"{reference} resolves to {remote}, helm pushed {digest.group(1)}")
    shown = _run([helm, "show", "chart", reference, "--plain-http"], what=f"helm ({major}) show chart {reference}", env=env)
    if not re.search(rf"^name: {re.escape(name)}$", shown, re.MULTILINE) or not re.search(
            rf"^version: {re.escape(version)}$", shown, re.MULTILINE):
        raise RegistryError(f"helm show chart {reference} does not show {name} {version}:\n{shown}")
    log(f"helm {major} pushed {reference} ({digest.group(1)})")
    return reference


# ---------------------------------------------------------------------------------------
# Everything, in the order a release does it.


@dataclasses.dataclass(frozen=True)
class Release:
    image: str  # host/repo@sha256:… of the index
    version: str
    key: KeyPair
    platforms: dict[str, str]  # architecture -> host/repo@sha256:… of its manifest
    sbom_components: dict[str, int]  # architecture -> components in its verified SBOM


def release(registry: Registry, *, version_suffix: str | None = None, keys: Path | None = None) -> Release:
    """Publish the image, sign the index, attest each platform's SBOM, verify all of it."""
    image = publish_service_image(registry, version_suffix=version_suffix)
    key = generate_key_pair(keys or paths.STATE / "keys")
    sign(image, key)
    verify(image, key.public)
    platforms = platform_digests(registry, image)
    components: dict[str, int] = {}
    for platform, ref in platforms.items():
        attest_sbom(ref, key, make_sbom(platform, version_suffix))
        components[platform] = len(verify_sbom(ref, key.public).get("components", []))
    return Release(image, service_version(version_suffix), key, platforms, components)


@contextlib.contextmanager
def running(address: str, storage: Path | None = None):
    """``with running("127.0.0.1:5000") as registry:`` — same as ``with Registry(...)``."""
    with Registry(address, storage) as registry:
        yield registry
