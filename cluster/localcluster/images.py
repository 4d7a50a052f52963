"""The images the cluster needs beside the service's own: PostgreSQL and pause.

No image registry outside this machine is reachable, so both are built here from
Debian packages (docs/adr/0011-cluster-postgresql-and-pause-images.md):

- ``postgres()``: Debian trixie's ``postgresql-17`` on a ``debootstrap --variant=minbase``
  root filesystem, trimmed of what a server image does not use, with our own entrypoint
  (``cluster/images/postgres/entrypoint.sh``) implementing the interface of the official
  image that the chart relies on.
- ``pause()``: Debian's static ``catatonit`` in pause mode (``catatonit -P``), alone in
  its layer: the pod sandbox image containerd starts for every pod.

Each returns an ``ImageContent``: one gzipped tar layer whose paths are relative to ``/``
and the ``config`` object of an OCI image configuration (Entrypoint, Cmd, Env, User,
WorkingDir, ExposedPorts, Labels, StopSignal). ``image_config()`` wraps it into the
whole OCI image configuration (architecture, os, rootfs.diff_ids) that a registry or
``docker load`` takes.

Builds are cached under ``paths.CACHE / "images" / <name>-<key>``, the key hashing the
Debian package version and everything of ours that goes into the image (the entrypoint,
this recipe's version); a second call returns the cached build. The package version
comes from a private apt index of trixie (``paths.CACHE / "images" / "apt-trixie"``),
refreshed once per process; when the mirror cannot be reached, the last index is used.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from . import paths, tools

MIRROR = "http://deb.debian.org/debian"
SUITE = "trixie"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

POSTGRES_MAJOR = "17"
POSTGRES_PACKAGE = f"postgresql-{POSTGRES_MAJOR}"
#: uid and gid of ``postgres``, as in the official image (the chart's podSecurityContext).
POSTGRES_UID = 999
ENTRYPOINT = paths.REPO / "cluster" / "images" / "postgres" / "entrypoint.sh"
PAUSE_PACKAGE = "catatonit"
#: The pause image's user: nobody-like, as the upstream pause image (65535).
PAUSE_UID = 65535

#: Bumped whenever a recipe below changes what goes into its image (part of the key).
POSTGRES_RECIPE = "3"
PAUSE_RECIPE = "1"


class ImageError(RuntimeError):
    """An image could not be built; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class ImageContent:
    """What a registry needs to serve one image: a single layer and its config."""

    name: str
    tag: str
    #: A gzipped tar of the whole root filesystem, member names relative to ``/``.
    layer: Path
    #: The ``config`` object of an OCI image configuration.
    config: dict

    @property
    def _meta(self) -> dict:
        return json.loads((self.layer.parent / "meta.json").read_text())

    @property
    def diff_id(self) -> str:
        """``sha256:`` digest of the uncompressed layer (``rootfs.diff_ids``)."""
        return self._meta["diff_id"]

    @property
    def digest(self) -> str:
        """``sha256:`` digest of the gzipped layer (the layer descriptor's digest)."""
        return self._meta["digest"]

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"

    def image_config(self) -> dict:
        """The whole OCI image configuration (application/vnd.oci.image.config.v1+json)."""
        meta = self._meta
        return {
            "created": meta["created"],
            "architecture": "amd64",
            "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": [meta["diff_id"]]},
            "history": [{"created": meta["created"], "created_by": meta["created_by"]}],
        }


# ---- Debian's trixie index, private to this module -----------------------------------

_APT_ROOT = paths.CACHE / "images" / "apt-trixie"
_index_refreshed = False


def _apt_options() -> list[str]:
    root = _APT_ROOT
    return [
        "-o", f"Dir::State={root / 'state'}",
        "-o", f"Dir::State::status={root / 'state' / 'status'}",
        "-o", f"Dir::Cache={root / 'cache'}",
        # The host may turn apt's binary caches off (Docker's base images do); ours keeps
        # them, so a look-up does not parse the whole index again.
        "-o", "Dir::Cache::pkgcache=pkgcache.bin",
        "-o", "Dir::Cache::srcpkgcache=srcpkgcache.bin",
        "-o", f"Dir::Etc::SourceList={root / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", "Dir::Etc::Preferences=/nonexistent",
        "-o", "Dir::Etc::PreferencesParts=/nonexistent",
        "-o", "APT::Architecture=amd64",
        "-o", "APT::Architectures::=amd64",
        "-o", "APT::Sandbox::User=root",
        "-o", "Acquire::Languages=none",
    ]


def _apt(tool: str, *args: str, cwd: Path | None = None) -> str:
    result = subprocess.run([tool, *_apt_options(), *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageError(f"{tool} {' '.join(args)} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


#: Seconds the private index is trusted before ``apt-get update`` refreshes it; a build
#: keyed by an older package version is still used until then.
INDEX_MAX_AGE = float(os.environ.get("CLUSTER_IMAGES_INDEX_MAX_AGE", 6 * 3600))


def _refresh_index() -> None:
    """``apt-get update`` of the private trixie index when older than INDEX_MAX_AGE."""
    global _index_refreshed
    if _index_refreshed:
        return
    stamp = _APT_ROOT / "updated"
    if stamp.exists() and time.time() - stamp.stat().st_mtime < INDEX_MAX_AGE:
        _index_refreshed = True
        return
    for sub in ("state/lists/partial", "cache/archives/partial"):
        (_APT_ROOT / sub).mkdir(parents=True, exist_ok=True)
    (_APT_ROOT / "state" / "status").touch()
    (_APT_ROOT / "sources.list").write_text(f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main\n")
    try:
        _apt("apt-get", "update", "-qq")
        stamp.touch()
    except ImageError as error:
        if not any((_APT_ROOT / "state" / "lists").glob("*_Packages*")):
            raise
        tools.log(f"images: the {SUITE} index could not be refreshed, using the last one ({str(error).splitlines()[0]})")
    _index_refreshed = True


def debian_version(package: str) -> str:
    """The version of ``package`` in Debian trixie (main) on the mirror."""
    _refresh_index()
    for line in _apt("apt-cache", "show", "--no-all-versions", package).splitlines():
        if line.startswith("Version: "):
            return line.split(": ", 1)[1].strip()
    raise ImageError(f"{package}: no version in the {SUITE} index")


def upstream_version(debian: str) -> str:
    """``17.12-0+deb13u1`` -> ``17.12``."""
    return debian.split(":", 1)[-1].rsplit("-", 1)[0]


# ---- Cache -------------------------------------------------------------------------

def _key(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _cached(directory: Path, name: str, tag: str) -> ImageContent | None:
    config = directory / "config.json"
    layer = directory / "layer.tar.gz"
    if not (config.is_file() and layer.is_file() and (directory / "meta.json").is_file()):
        return None
    return ImageContent(name=name, tag=tag, layer=layer, config=json.loads(config.read_text()))


def _store(directory: Path, name: str, tag: str, config: dict, fill) -> ImageContent:
    """Build into a temporary sibling of ``directory``, then rename it into place."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-", dir=directory.parent))
    try:
        meta = fill(partial)
        (partial / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (partial / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.rename(partial, directory)
    except BaseException:
        _remove_tree(partial)
        raise
    return ImageContent(name=name, tag=tag, layer=directory / "layer.tar.gz", config=config)


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    mounted = _mounts_under(path)
    if mounted:
        raise ImageError(f"refusing to remove {path}: still mounted: {', '.join(mounted)}")
    shutil.rmtree(path)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def _unmount_under(path: Path) -> None:
    # Deepest first; debootstrap unmounts its /proc and /sys itself unless interrupted.
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


# ---- Layers -------------------------------------------------------------------------

class _HashingWriter:
    """A file-like sink that hashes what passes through it."""

    def __init__(self, sink):
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


def _gzip_stream(source, target: Path) -> dict:
    """Gzip the tar stream ``source`` into ``target``; return both digests and sizes."""
    with open(target, "wb") as raw:
        compressed = _HashingWriter(raw)
        uncompressed = hashlib.sha256()
        size = 0
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=6, mtime=0) as zipped:
            while chunk := source.read(1 << 20):
                uncompressed.update(chunk)
                size += len(chunk)
                zipped.write(chunk)
    return {
        "diff_id": f"sha256:{uncompressed.hexdigest()}",
        "digest": f"sha256:{compressed.hash.hexdigest()}",
        "size": compressed.size,
        "uncompressed_size": size,
    }


def _tar_rootfs(rootfs: Path, target: Path) -> dict:
    """The whole of ``rootfs`` as one layer, names relative to / (``usr/bin/...``)."""
    members = sorted(p.name for p in rootfs.iterdir())
    tar = subprocess.Popen(
        ["tar", "--create", "--file=-", f"--directory={rootfs}", "--numeric-owner", "--sort=name",
         "--format=posix", "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
         "--", *members],
        stdout=subprocess.PIPE,
    )
    assert tar.stdout is not None
    try:
        meta = _gzip_stream(tar.stdout, target)
    finally:
        tar.stdout.close()
        code = tar.wait()
    if code != 0:
        raise ImageError(f"tar of {rootfs} failed (exit {code})")
    return meta


# ---- PostgreSQL ---------------------------------------------------------------------

#: What a server image does not use: documentation (the copyright files stay),
#: manuals, translations, apt's downloads and lists, logs of the build, and the
#: cluster and snakeoil key that the packages' scripts made at install time.
_POSTGRES_TRIM = (
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/linda",
    "usr/share/locale",
    "usr/share/i18n",
    "usr/share/bug",
    "usr/share/postgresql/17/man",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf/templates.dat-old",
    "var/cache/debconf/config.dat-old",
    "var/lib/postgresql/17",
    "etc/postgresql/17",
    "var/log/postgresql",
    "etc/ssl/private/ssl-cert-snakeoil.key",
    "etc/ssl/certs/ssl-cert-snakeoil.pem",
)

_POSTGRES_BIN = f"/usr/lib/postgresql/{POSTGRES_MAJOR}/bin"
POSTGRES_PGDATA = "/var/lib/postgresql/data"


def _postgres_config(debian: str) -> dict:
    version = upstream_version(debian)
    return {
        "Entrypoint": ["/usr/local/bin/docker-entrypoint.sh"],
        "Cmd": ["postgres"],
        "Env": [
            # The server's own binaries first: psql, pg_dump... are the 17 ones directly,
            # not Debian's version-picking wrappers in /usr/bin.
            f"PATH=/usr/local/sbin:/usr/local/bin:{_POSTGRES_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
            f"PG_MAJOR={POSTGRES_MAJOR}",
            f"PG_VERSION={debian}",
            f"PGDATA={POSTGRES_PGDATA}",
            "LANG=C.UTF-8",
        ],
        "User": f"{POSTGRES_UID}:{POSTGRES_UID}",
        "WorkingDir": "/",
        "ExposedPorts": {"5432/tcp": {}},
        "Volumes": {POSTGRES_PGDATA: {}},
        "StopSignal": "SIGINT",
        "Labels": {
            "org.opencontainers.image.title": "postgres",
            "org.opencontainers.image.description": f"PostgreSQL {version} from Debian {SUITE}'s {POSTGRES_PACKAGE} {debian}, with the tasks project's entrypoint (cluster/images/postgres)",
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.base.name": f"debian:{SUITE}",
            "org.opencontainers.image.licenses": "PostgreSQL",
            "io.debian.package": f"{POSTGRES_PACKAGE}={debian}",
        },
    }


def postgres() -> ImageContent:
    """The PostgreSQL 17 image, built once per package version and entrypoint."""
    debian = debian_version(POSTGRES_PACKAGE)
    version = upstream_version(debian)
    key = _key("postgres", POSTGRES_RECIPE, debian, ENTRYPOINT.read_bytes(), repr(_POSTGRES_TRIM))
    directory = paths.CACHE / "images" / f"postgres-{key}"
    config = _postgres_config(debian)
    with paths.cache_lock("image-postgres"):
        cached = _cached(directory, "postgres", version)
        if cached is not None:
            return cached
        tools.log(f"images: building postgres {version} ({POSTGRES_PACKAGE} {debian} on Debian {SUITE}); cached as {directory}")
        started = time.monotonic()
        content = _store(directory, "postgres", version, config, lambda out: _build_postgres(out, debian, started))
        tools.log(f"images: built postgres in {time.monotonic() - started:.0f}s, layer {content.layer.stat().st_size / 1e6:.1f} MB")
        return content


def _debootstrap(rootfs: Path, include: tuple[str, ...]) -> None:
    """A ``debootstrap --variant=minbase`` root filesystem of Debian SUITE with
    ``include``; the downloaded packages are kept in a per-machine cache."""
    tools.debian_install("debootstrap")
    cache = paths.CACHE / "images" / "debootstrap-cache"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        _run(["debootstrap", "--variant=minbase", f"--keyring={KEYRING}", f"--cache-dir={cache}",
              f"--include={','.join(include)}", SUITE, str(rootfs), MIRROR], "debootstrap")
    finally:
        _unmount_under(rootfs)


def _build_postgres(out: Path, debian: str, started: float) -> dict:
    rootfs = out / "rootfs"
    _debootstrap(rootfs, (POSTGRES_PACKAGE,))
    installed = _installed_version(rootfs, POSTGRES_PACKAGE)
    if installed != debian:
        raise ImageError(f"debootstrap installed {POSTGRES_PACKAGE} {installed}, the index said {debian}: the mirror changed during the build; run again")
    _postgres_user(rootfs)
    _drop_jit(rootfs)
    for relative in _POSTGRES_TRIM:
        target = rootfs / relative
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    _trim_docs(rootfs)
    _clean_runtime_dirs(rootfs)
    _listen_on_all_addresses(rootfs)
    # The directories of the interface: PGDATA's parent volume, the socket directory
    # (world-writable and sticky, as the official image), the init scripts.
    _mkdir(rootfs / "var/lib/postgresql/data", 0o1777, POSTGRES_UID)
    _mkdir(rootfs / "run/postgresql", 0o3777, POSTGRES_UID)
    _mkdir(rootfs / "docker-entrypoint-initdb.d", 0o755, 0)
    entrypoint = rootfs / "usr/local/bin/docker-entrypoint.sh"
    shutil.copyfile(ENTRYPOINT, entrypoint)
    os.chmod(entrypoint, 0o755)
    # Where the official image has it too.
    (rootfs / "docker-entrypoint.sh").symlink_to("usr/local/bin/docker-entrypoint.sh")
    meta = _tar_rootfs(rootfs, out / "layer.tar.gz")
    rootfs_bytes = meta["uncompressed_size"]
    _remove_tree(rootfs)
    meta.update(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        created_by=f"debootstrap --variant=minbase --include={POSTGRES_PACKAGE} {SUITE} ({POSTGRES_PACKAGE} {debian}) + cluster/images/postgres/entrypoint.sh (localcluster.images, recipe {POSTGRES_RECIPE})",
        build_seconds=round(time.monotonic() - started, 1),
        rootfs_bytes=rootfs_bytes,
    )
    return meta


def _run(args: list[str], what: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise ImageError(f"{what} failed (exit {result.returncode}):\n{tail}")


def _installed_version(rootfs: Path, package: str) -> str:
    status = (rootfs / "var/lib/dpkg/status").read_text()
    for stanza in status.split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", stanza, re.M):
            match = re.search(r"^Version: (.+)$", stanza, re.M)
            if match:
                return match.group(1)
    raise ImageError(f"{package} is not installed in {rootfs}")


def _postgres_user(rootfs: Path) -> None:
    """Give ``postgres`` uid and gid 999 (the packages' scripts chose a dynamic one)."""
    passwd = {line.split(":")[0]: line.split(":") for line in (rootfs / "etc/passwd").read_text().splitlines()}
    group = {line.split(":")[0]: line.split(":") for line in (rootfs / "etc/group").read_text().splitlines()}
    if "postgres" not in passwd or "postgres" not in group:
        raise ImageError("the postgres user or group was not created by the packages")
    old_uid, old_gid = int(passwd["postgres"][2]), int(group["postgres"][2])
    if old_uid != POSTGRES_UID and any(int(e[2]) == POSTGRES_UID for e in passwd.values()):
        raise ImageError(f"uid {POSTGRES_UID} is taken in the root filesystem")
    if old_gid != POSTGRES_UID and any(int(e[2]) == POSTGRES_UID for e in group.values()):
        raise ImageError(f"gid {POSTGRES_UID} is taken in the root filesystem")
    _run(["chroot", str(rootfs), "groupmod", "-g", str(POSTGRES_UID), "postgres"], "groupmod")
    _run(["chroot", str(rootfs), "usermod", "-u", str(POSTGRES_UID), "-g", str(POSTGRES_UID), "-s", "/bin/sh", "postgres"], "usermod")
    for directory, dirnames, filenames in os.walk(rootfs):
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            uid = POSTGRES_UID if st.st_uid == old_uid else st.st_uid
            gid = POSTGRES_UID if st.st_gid == old_gid else st.st_gid
            if (uid, gid) != (st.st_uid, st.st_gid):
                os.lchown(path, uid, gid)


def _listen_on_all_addresses(rootfs: Path) -> None:
    """initdb's postgresql.conf listens on every address, as the official image's does.

    PostgreSQL's own default is ``localhost``; the chart sets no ``listen_addresses`` and
    relies on the image, so without this the Service would reach nothing.
    """
    sample = rootfs / f"usr/share/postgresql/{POSTGRES_MAJOR}/postgresql.conf.sample"
    text = sample.read_text()
    changed, count = re.subn(r"^#?listen_addresses\s*=\s*\S+", "listen_addresses = '*'", text, count=1, flags=re.M)
    if count != 1:
        raise ImageError(f"{sample}: no listen_addresses line to change")
    sample.write_text(changed)


def _drop_jit(rootfs: Path) -> None:
    """Remove PostgreSQL's LLVM JIT provider and LLVM (about 180 MB of the image).

    Without its provider PostgreSQL does not compile queries (``jit`` stays on but has
    no effect, which ``SELECT pg_jit_available()`` reports): the chart's OLTP queries
    stay far below ``jit_above_cost``. dpkg forgets the packages, so the image's package
    list tells the truth.
    """
    status = (rootfs / "var/lib/dpkg/status").read_text()
    llvm = sorted(set(re.findall(r"^Package: (libllvm\d+|libz3-\d+)$", status, re.M)))
    if llvm:
        _run(["chroot", str(rootfs), "dpkg", "--purge", "--force-depends", *llvm], "dpkg --purge " + " ".join(llvm))
    lib = rootfs / f"usr/lib/postgresql/{POSTGRES_MAJOR}/lib"
    for name in ("llvmjit.so", "llvmjit_types.bc"):
        (lib / name).unlink(missing_ok=True)
    if (lib / "bitcode").is_dir():
        shutil.rmtree(lib / "bitcode")


def _trim_docs(rootfs: Path) -> None:
    """Documentation goes, except each package's copyright file."""
    doc = rootfs / "usr/share/doc"
    if not doc.is_dir():
        return
    for package in doc.iterdir():
        if package.is_dir() and not package.is_symlink():
            for entry in package.iterdir():
                if entry.name == "copyright":
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


def _clean_runtime_dirs(rootfs: Path) -> None:
    """Empty what the container runtime provides (/dev, /proc, /sys) or owns (/tmp)."""
    if _mounts_under(rootfs):
        raise ImageError(f"{rootfs} still has mounts: {_mounts_under(rootfs)}")
    for relative in ("dev", "proc", "sys", "tmp", "var/tmp", "var/log/apt"):
        directory = rootfs / relative
        if directory.is_dir():
            for entry in directory.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    for log in (rootfs / "var/log").glob("*.log"):
        log.unlink()
    # The runtime mounts its own; the build host's must not leak into the image.
    for relative in ("etc/hostname", "etc/resolv.conf"):
        target = rootfs / relative
        if target.exists() or target.is_symlink():
            target.unlink()
        target.write_text("")


def _mkdir(path: Path, mode: int, owner: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, owner, owner)
    os.chmod(path, mode)


# ---- pause ----------------------------------------------------------------------------

def _pause_config(debian: str) -> dict:
    version = upstream_version(debian)
    return {
        "Entrypoint": ["/usr/bin/catatonit", "-P"],
        "Cmd": [],
        "Env": ["PATH=/usr/bin"],
        "User": f"{PAUSE_UID}:{PAUSE_UID}",
        "WorkingDir": "/",
        "ExposedPorts": {},
        "StopSignal": "SIGTERM",
        "Labels": {
            "org.opencontainers.image.title": "pause",
            "org.opencontainers.image.description": f"Pod sandbox: Debian {SUITE}'s static catatonit {debian} in pause mode (-P)",
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.licenses": "GPL-3.0-or-later",
            "io.debian.package": f"{PAUSE_PACKAGE}={debian}",
        },
    }


def pause() -> ImageContent:
    """The pod sandbox image: a static catatonit, nothing else but its copyright."""
    debian = debian_version(PAUSE_PACKAGE)
    version = upstream_version(debian)
    key = _key("pause", PAUSE_RECIPE, debian)
    directory = paths.CACHE / "images" / f"pause-{key}"
    config = _pause_config(debian)
    with paths.cache_lock("image-pause"):
        cached = _cached(directory, "pause", version)
        if cached is not None:
            return cached
        started = time.monotonic()
        content = _store(directory, "pause", version, config, lambda out: _build_pause(out, debian, started))
        tools.log(f"images: built pause ({PAUSE_PACKAGE} {debian}) in {time.monotonic() - started:.1f}s")
        return content


def _build_pause(out: Path, debian: str, started: float) -> dict:
    download = out / "download"
    download.mkdir()
    _apt("apt-get", "download", "-qq", f"{PAUSE_PACKAGE}={debian}", cwd=download)
    (deb,) = download.glob(f"{PAUSE_PACKAGE}_*.deb")
    extracted = out / "extracted"
    _run(["dpkg-deb", "-x", str(deb), str(extracted)], "dpkg-deb -x")
    binary = extracted / "usr/bin/catatonit"
    interpreter = _elf_interpreter(binary)
    if interpreter is not None:
        raise ImageError(f"{binary.name} of {PAUSE_PACKAGE} {debian} is dynamically linked ({interpreter}); the pause layer holds no libraries")
    copyright_file = extracted / f"usr/share/doc/{PAUSE_PACKAGE}/copyright"
    buffer = out / "layer.tar"
    with tarfile.open(buffer, "w", format=tarfile.PAX_FORMAT) as tar:
        def add_dir(name: str) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)

        def add_file(name: str, source: Path, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = source.stat().st_size, mode
            with open(source, "rb") as data:
                tar.addfile(info, data)

        for name in ("dev", "etc", "proc", "sys", "usr", "usr/bin", "usr/share", "usr/share/doc", f"usr/share/doc/{PAUSE_PACKAGE}"):
            add_dir(name)
        # Users the runtime may look up; 65535 is the image's.
        passwd = out / "passwd"
        passwd.write_text(f"root:x:0:0:root:/:/nonexistent\nnobody:x:{PAUSE_UID}:{PAUSE_UID}:pause:/:/nonexistent\n")
        group = out / "group"
        group.write_text(f"root:x:0:\nnobody:x:{PAUSE_UID}:\n")
        add_file("etc/passwd", passwd, 0o644)
        add_file("etc/group", group, 0o644)
        add_file("usr/bin/catatonit", binary, 0o755)
        add_file(f"usr/share/doc/{PAUSE_PACKAGE}/copyright", copyright_file, 0o644)
    with open(buffer, "rb") as source:
        meta = _gzip_stream(source, out / "layer.tar.gz")
    for leftover in (buffer, passwd, group):
        leftover.unlink()
    shutil.rmtree(download)
    shutil.rmtree(extracted)
    meta.update(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        created_by=f"{PAUSE_PACKAGE} {debian} from Debian {SUITE} (localcluster.images, recipe {PAUSE_RECIPE})",
        build_seconds=round(time.monotonic() - started, 1),
        rootfs_bytes=meta["uncompressed_size"],
    )
    return meta


def _elf_interpreter(path: Path) -> str | None:
    """The PT_INTERP of a 64-bit little-endian ELF file, or None when it is static."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ImageError(f"{path} is not a 64-bit little-endian ELF file")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for index in range(phnum):
        header = phoff + index * phentsize
        p_type, = struct.unpack_from("<I", data, header)
        if p_type == 3:  # PT_INTERP
            offset, = struct.unpack_from("<Q", data, header + 8)
            size, = struct.unpack_from("<Q", data, header + 32)
            return data[offset:offset + size].rstrip(b"\0").decode()
    return None


# ---- A fresh machine ------------------------------------------------------------------

#: What the README assumes of a machine for the image and deploy recipes, and nothing
#: else: a Rust toolchain (mounted from the host by ``localcluster.fresh``; rustc links
#: with the system C compiler, hence gcc and libc6-dev), Python 3 with pip, git, and the
#: CA certificates any machine has. Not musl-tools, docker, helm, kubectl, containerd:
#: the recipes must install those themselves.
FRESH_MACHINE_PACKAGES = ("ca-certificates", "git", "python3", "python3-pip", "gcc", "libc6-dev")
FRESH_MACHINE_RECIPE = "1"


def fresh_machine() -> ImageContent:
    """A minimal Debian SUITE root filesystem with FRESH_MACHINE_PACKAGES only, as the
    single layer of an image (``docker import`` takes the layer as it is). Built once per
    machine and recipe; the packages' versions are not part of the key (a fresh machine
    need not have the newest ones; apt refreshes its lists when a recipe installs)."""
    key = _key("fresh-machine", FRESH_MACHINE_RECIPE, SUITE, repr(FRESH_MACHINE_PACKAGES))
    directory = paths.CACHE / "images" / f"fresh-machine-{key}"
    config = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
              "Cmd": ["sleep", "infinity"], "WorkingDir": "/root"}
    with paths.cache_lock("image-fresh-machine"):
        cached = _cached(directory, "fresh-machine", key)
        if cached is not None:
            return cached
        tools.log(f"images: building the fresh-machine root filesystem (Debian {SUITE} minbase + {', '.join(FRESH_MACHINE_PACKAGES)}); cached as {directory}")
        started = time.monotonic()
        content = _store(directory, "fresh-machine", key, config, lambda out: _build_fresh_machine(out, started))
        tools.log(f"images: built the fresh-machine root filesystem in {time.monotonic() - started:.0f}s, layer {content.layer.stat().st_size / 1e6:.1f} MB")
        return content


def _build_fresh_machine(out: Path, started: float) -> dict:
    rootfs = out / "rootfs"
    _debootstrap(rootfs, FRESH_MACHINE_PACKAGES)
    # As after an install: no package lists yet (a recipe's apt-get refreshes them), no
    # downloads kept.
    for relative in ("var/lib/apt/lists", "var/cache/apt/archives"):
        target = rootfs / relative
        for entry in target.glob("*"):
            if entry.is_file():
                entry.unlink()
    _clean_runtime_dirs(rootfs)
    meta = _tar_rootfs(rootfs, out / "layer.tar.gz")
    rootfs_bytes = meta["uncompressed_size"]
    _remove_tree(rootfs)
    meta.update(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        created_by=f"debootstrap --variant=minbase --include={','.join(FRESH_MACHINE_PACKAGES)} {SUITE} (localcluster.images, recipe {FRESH_MACHINE_RECIPE})",
        build_seconds=round(time.monotonic() - started, 1),
        rootfs_bytes=rootfs_bytes,
    )
    return meta


def all_images() -> list[ImageContent]:
    return [pause(), postgres()]
