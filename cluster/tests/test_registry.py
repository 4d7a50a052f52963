"""The registry and the release path, on the real registry with the real tools (no mocks).

The slow parts (the two release builds, cosign, cargo-cyclonedx) are built once per
machine and cached; a second run only assembles, pushes, signs and verifies.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localcluster import paths, registry as reg, scenarios  # noqa: E402

DOCKERFILE = paths.REPO / "docker" / "Dockerfile"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    storage = tmp_path_factory.mktemp("registry")
    with reg.Registry(f"127.0.0.1:{reg.free_port()}", storage) as running:
        yield running
    assert not running.running


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return reg.generate_key_pair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def image(registry):
    return reg.publish_service_image(registry)


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def _export(registry: reg.Registry, ref: str, platform: str, out: Path) -> tarfile.TarFile:
    """The flattened root filesystem of ``ref`` for ``platform`` (crane export)."""
    registry.crane("export", "--platform", f"linux/{platform}", ref, str(out), what="crane export")
    return tarfile.open(out)


# ---------------------------------------------------------------------------------------
# The registry process.


def test_registry_answers_and_stop_leaves_nothing_running(tmp_path):
    address = f"127.0.0.1:{reg.free_port()}"
    with reg.Registry(address, tmp_path) as registry:
        pid = registry._process.pid
        with urllib.request.urlopen(registry.url(), timeout=5) as response:
            assert response.status == 200
        assert (tmp_path / "blobs").is_dir()
    assert not registry.running
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not _port_open(address)


def test_registry_on_a_busy_port_fails_and_shows_its_log(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        registry = reg.Registry(address, tmp_path)
        with pytest.raises(reg.RegistryError) as failure:
            registry.start()
    assert "registry.log" in str(failure.value)
    assert "address already in use" in str(failure.value)
    assert not registry.running


def test_registry_address_needs_a_fixed_port():
    with pytest.raises(ValueError):
        reg.Registry("127.0.0.1:0")


# ---------------------------------------------------------------------------------------
# The image assembled here declares what docker/Dockerfile declares.


def _dockerfile_stage(name: str) -> list[str]:
    """The instructions of one stage of docker/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines, current = [], None
    for line in text.splitlines():
        line = line.strip()
        match = re.match(r"FROM \S+ AS (\S+)", line)
        if match:
            current = match.group(1)
            continue
        if current == name and line and not line.startswith("#"):
            lines.append(line)
    return lines


def test_image_config_is_what_the_dockerfile_declares():
    base = _dockerfile_stage("base")
    labels = dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', next(l for l in base if l.startswith("LABEL "))))
    ours = reg.image_labels("${VERSION}", "${REVISION}", "${CREATED}")
    ours = {k: v.replace(reg.IMAGE_SOURCE, "${SOURCE}") for k, v in ours.items()}
    assert labels == ours
    assert f"USER {reg.IMAGE_USER}" in base
    assert "EXPOSE " + " ".join(p.split("/")[0] for p in reg.IMAGE_PORTS) in base
    assert f"ENTRYPOINT {json.dumps(reg.IMAGE_ENTRYPOINT)}" in base
    assert f"CMD {json.dumps(reg.IMAGE_CMD)}" in base
    assert "ARG SOURCE=" + reg.IMAGE_SOURCE in base
    host = _dockerfile_stage("host")
    assert "COPY ${CA_BUNDLE} /etc/ssl/certs/ca-certificates.crt" in host
    assert "COPY ${BINARY} /tasks-server" in host


def test_layout_is_reproducible(tmp_path):
    fake = {"amd64": Path("/bin/true"), "arm64": Path("/bin/false")}
    first = reg.write_layout(tmp_path / "a", fake, "9.9.9")
    second = reg.write_layout(tmp_path / "b", fake, "9.9.9")
    other = reg.write_layout(tmp_path / "c", fake, "9.9.10")
    assert first == second != other
    index = json.loads((tmp_path / "a" / "blobs" / "sha256" / first.split(":")[1]).read_bytes())
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux"}]


def test_binary_check_rejects_a_dynamic_or_foreign_binary(tmp_path):
    with pytest.raises(reg.RegistryError, match="dynamically linked"):
        reg.check_binary(Path("/bin/true"), "amd64", "0")
    with pytest.raises(reg.RegistryError, match="ELF machine 62"):
        reg.check_binary(Path("/bin/true"), "arm64", "0")


# ---------------------------------------------------------------------------------------
# The release: multi-arch index, signature, SBOMs.


def test_image_is_one_index_for_amd64_and_arm64_with_the_same_version(registry, image, tmp_path):
    assert re.fullmatch(rf"{re.escape(registry.address)}/tasks-server@sha256:[0-9a-f]{{64}}", image)
    version = reg.service_version()
    manifest = json.loads(registry.crane("manifest", image))
    assert manifest["mediaType"] == reg.OCI_INDEX
    assert sorted(m["platform"]["architecture"] for m in manifest["manifests"]) == ["amd64", "arm64"]
    assert registry.crane("digest", f"{registry.address}/tasks-server:{version}").strip() == image.split("@")[1]
    for platform in ("amd64", "arm64"):
        config = json.loads(registry.crane("config", "--platform", f"linux/{platform}", image))
        assert config["architecture"] == platform and config["os"] == "linux"
        assert config["config"]["User"] == "10001:10001"
        assert config["config"]["Entrypoint"] == ["/tasks-server"] and config["config"]["Cmd"] == ["serve"]
        assert config["config"]["Labels"]["org.opencontainers.image.version"] == version
        rootfs = _export(registry, image, platform, tmp_path / f"{platform}.tar")
        names = sorted(rootfs.getnames())
        assert names == ["etc", "etc/ssl", "etc/ssl/certs", "etc/ssl/certs/ca-certificates.crt", "tasks-server"], names
        member = rootfs.getmember("tasks-server")
        assert member.mode == 0o755 and member.uid == 0
        binary = tmp_path / f"tasks-server-{platform}"
        binary.write_bytes(rootfs.extractfile(member).read())
        reg.check_binary(binary, platform, version)  # right ELF machine, static, same version
    binary = tmp_path / "tasks-server-amd64"
    binary.chmod(0o755)
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and f"{version} (" in out.stdout, out


def test_signature_verifies_with_its_key_and_fails_with_another(registry, image, keys, tmp_path):
    reg.sign(image, keys)
    payloads = reg.verify(image, keys.public)
    assert payloads[0]["critical"]["image"]["docker-manifest-digest"] == image.split("@")[1]
    other = reg.generate_key_pair(tmp_path / "other")
    with pytest.raises(reg.VerificationError):
        reg.verify(image, other.public)
    # A manifest nobody signed does not verify either.
    unsigned = reg.platform_digests(registry, image)["arm64"]
    with pytest.raises(reg.VerificationError):
        reg.verify(unsigned, keys.public)


def test_sbom_attestation_per_platform_is_retrievable_and_verified(registry, image, keys, tmp_path):
    for platform, ref in reg.platform_digests(registry, image).items():
        sbom = reg.make_sbom(platform)
        reg.attest_sbom(ref, keys, sbom)
        got = reg.verify_sbom(ref, keys.public)
        assert got["bomFormat"] == "CycloneDX"
        names = {c["name"] for c in got["components"]}
        assert {"actix-web", "ring", "tokio-postgres"} <= names, sorted(names)
        assert got["metadata"]["component"]["name"] == "tasks-server"
        other = reg.generate_key_pair(tmp_path / f"other-{platform}")
        with pytest.raises(reg.VerificationError):
            reg.verify_sbom(ref, other.public)


# ---------------------------------------------------------------------------------------
# The chart as an OCI artifact, with Helm 3 and Helm 4.


@pytest.mark.parametrize("helm", ["helm3", "helm"])
def test_chart_is_pushed_and_shown_from_oci(registry, helm, tmp_path):
    subprocess.run([paths.REPO / "scripts" / "ensure-tools.sh", helm], check=True, timeout=600)
    binary = paths.REPO / ".tools" / "bin" / helm
    reference = reg.publish_chart(registry, paths.REPO / "deploy" / "helm" / "tasks", binary,
                                  repository=f"charts-{helm}")
    chart = (paths.REPO / "deploy" / "helm" / "tasks" / "Chart.yaml").read_text()
    version = re.search(r"^version: (\S+)", chart, re.MULTILINE).group(1)
    assert reference == f"oci://{registry.address}/charts-{helm}/tasks:{version}"
    manifest = json.loads(registry.crane("manifest", reference.removeprefix("oci://")))
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"


# ---------------------------------------------------------------------------------------
# Release N+1: another build with another version string.


def test_version_suffix_builds_another_release(registry, image, tmp_path):
    # The scenarios' release N+1 (same suffix, files and platform): after test-cluster's
    # scenarios this is already built, so the test costs no fat-LTO link of its own.
    suffixed = reg.publish_service_image(registry, version_suffix="next", extra_files=scenarios.NEXT_RELEASE_FILES,
                                         platforms=("amd64",))
    version = reg.service_version("next")
    assert version.endswith("-next")
    assert suffixed.split("@")[1] != image.split("@")[1]
    config = json.loads(registry.crane("config", "--platform", "linux/amd64", suffixed))
    assert config["config"]["Labels"]["org.opencontainers.image.version"] == version
    rootfs = _export(registry, suffixed, "amd64", tmp_path / "amd64.tar")
    binary = tmp_path / "tasks-server-amd64"
    binary.write_bytes(rootfs.extractfile("tasks-server").read())
    reg.check_binary(binary, "amd64", version)
    binary.chmod(0o755)
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    assert f"{version} (" in out.stdout, out


def test_a_build_is_named_by_everything_that_makes_the_binary(tmp_path):
    # Release builds are skipped when one with the same key exists: the key must change
    # with the sources, the version, the platform and the profile, and only with them.
    (tmp_path / "Cargo.toml").write_text((paths.REPO / "Cargo.toml").read_text())
    key = reg.build_key(tmp_path, "1.0.0", "amd64", {})
    assert reg.build_key(tmp_path, "1.0.0", "amd64", {"CARGO_BUILD_JOBS": "1", "HOME": "/elsewhere"}) == key
    assert reg.build_key(tmp_path, "1.0.1", "amd64", {}) != key
    assert reg.build_key(tmp_path, "1.0.0", "arm64", {}) != key
    assert reg.build_key(tmp_path, "1.0.0", "amd64", {"CARGO_PROFILE_RELEASE_LTO": "off"}) != key
    assert reg.build_key(tmp_path, "1.0.0", "amd64", {"GIT_REVISION": "0123456789ab"}) != key
    migration = "migrations/V999__next.sql"
    (tmp_path / "migrations").mkdir()
    (tmp_path / migration).write_text("ALTER TABLE tasks ADD COLUMN x int;\n")
    with_extra = reg.build_key(tmp_path, "1.0.0", "amd64", {}, {migration: "ALTER TABLE tasks ADD COLUMN x int;\n"})
    assert with_extra != key
    (tmp_path / migration).write_text("ALTER TABLE tasks ADD COLUMN y int;\n")
    assert reg.build_key(tmp_path, "1.0.0", "amd64", {}, {migration: "..."}) != with_extra
    (tmp_path / "Cargo.toml").write_text((paths.REPO / "Cargo.toml").read_text() + "\n# changed\n")
    assert reg.build_key(tmp_path, "1.0.0", "amd64", {}) != key
