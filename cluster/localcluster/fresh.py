"""The README's image and deploy recipes on a fresh machine (issue 19, point 6).

A recipe that works only because a test suite happened to install something stays
broken for a new user while CI is green (``IMAGE_TARGET=host just image`` once needed
musl-gcc that only the image test installed). So the recipes are run as a new user
would run them, in a container holding only what the README assumes:

- the image: ``images.fresh_machine()``, a Debian minbase root filesystem with git,
  Python 3 and pip, gcc and libc6-dev (rustc's linker) and CA certificates, cached per
  machine; the Rust toolchain is the host's rustup and cargo homes, mounted at the same
  paths (so the registry cache and toolchains are not downloaded again). No
  musl-tools, docker, helm, kubectl, containerd or just: checked absent first.
- the machine's own settings that are not packages: its extra CA certificates and
  ``/etc/pip.conf`` (this machine reaches the internet through a proxy with its own CA),
  the network (``--network host``: the cluster's API server and registry are on its
  bridge), and apt's download cache (a cache of downloads; every install still runs).
- Docker Engine: the host's (``scripts/docker-engine.sh ensure``), its socket mounted;
  the recipe must still install the docker client (Debian's docker.io) itself.
- the cluster: the running one, named by ``CLUSTER_STATE_DIR`` (its state directory
  and node sockets mounted at the same paths), as for a cluster another checkout started.
- the musl release build uses a target directory cached per machine, like the tool
  builds (``$CLUSTER_CACHE_DIR/fresh-machine/target``; every CI run is a fresh clone, so
  one under the checkout would cost a cold build of every dependency each time), so a
  warm run rebuilds only the workspace crates (a fresh clone's files are new), and Cargo's environment makes the release
  profile cheap (BUILD_PROFILE: no LTO, no optimisation, incremental): the recipe's
  commands and install steps are the same, only the binary is less optimised (the
  image test and the scenarios build the real profile). Cached C objects mean musl-gcc
  may not be called again, so the check does not rely on the build:
  x86_64-linux-musl-gcc must be absent before the recipe and present after it.

In the container: a fresh ``git clone`` of the checkout's HEAD; ``./just image`` with
IMAGE_TARGET=host where apt can install nothing (it must fail naming musl-tools); the
same with apt working (it must install musl-tools and docker.io itself and build the
image); ``./just deploy-local`` with LOCAL_CLUSTER=tasks (installs helm and kubectl,
imports the image into the nodes, helm install of the local overlay, helm test); then,
from here, the API answers with the development token (and 401 without); ``./just
status``, ``./just logs``, ``./just undeploy-local`` (the namespace is gone after).

Then staging, for real, in the same container (:meth:`FreshMachine.staging`): what the
platform does once is done from here, not by the recipe — the namespace ``tasks-staging``,
the three Secrets (database passwords; API-token lines minted with the image's own
``mint-token``; the Helm test's token), a values file of this cluster's specifics outside
the clone (the recipe refuses a dirty tree) and a kubeconfig context of its own; then
``REGISTRY=127.0.0.1:5001 ... IMAGE_TARGET=host ./just deploy-staging`` pushes through the
registry's loopback name (``localcluster.loopback``) and deploys by digest, a second
deploy makes a new revision of the same commit, ``./just rollback-staging`` rolls back,
and everything is removed again (the release, the namespace, the volume's claim).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from . import cluster, images, load, node, paths, scenarios

NAMESPACE = "tasks-local"
CLONE = "/root/tasks"
CHECKOUT_MOUNT = "/srv/checkout"
MACHINE_CA_MOUNT = "/srv/machine-ca"
#: Tools the recipes must install themselves: none may be on the fresh machine.
ABSENT = ("x86_64-linux-musl-gcc", "docker", "dockerd", "ctr", "helm", "kubectl", "just")
#: apt with no package source: nothing can be installed (the negative check).
NO_APT_CONFIG = ('Dir::Etc::SourceList "/dev/null";\nDir::Etc::SourceParts "/nonexistent";\n'
                 'Dir::State::Lists "/tmp/no-apt/lists/";\n')

#: Cargo's environment in the container: the recipe's ``cargo build --release`` with a
#: profile a warm run rebuilds in well under a minute (the real one, fat LTO with one
#: codegen unit, takes minutes on two cores for the workspace crates alone).
BUILD_PROFILE = {
    "CARGO_PROFILE_RELEASE_LTO": "false",
    "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "256",
    "CARGO_PROFILE_RELEASE_OPT_LEVEL": "0",
    "CARGO_PROFILE_RELEASE_INCREMENTAL": "true",
}

#: Bounds of each step, in seconds (a cold build of the musl release binary is the long one).
TIMEOUTS = {"setup": 120, "absent": 60, "present": 60, "clone": 300, "negative": 600, "image": 3600, "deploy": 1200,
            "status": 180, "logs": 180, "undeploy": 600,
            "staging-setup": 120, "staging-deploy": 1200, "staging-redeploy": 900, "staging-rollback": 600}

#: Staging on this cluster: the overlay's namespace and Secret names (values/staging.yaml),
#: a kubeconfig context of the fresh machine's own, an owner of the pushed image.
STAGING_NAMESPACE = "tasks-staging"
STAGING_CONTEXT = "fresh-machine-staging"
STAGING_OWNER = "fresh-machine"
STAGING_DB_SECRET = "tasks-staging-db"
STAGING_TOKENS_SECRET = "tasks-staging-api-tokens"
STAGING_TEST_TOKEN_SECRET = "tasks-staging-helm-test-token"
#: The platform's values file: outside the clone (deploy-staging refuses a dirty tree).
STAGING_VALUES = "/root/platform/staging-values.yaml"
#: The static local volumes of ``scenarios.storage_fixtures`` (the staging overlay asks 20Gi).
VOLUME_SIZE = "5Gi"
#: What the staging overlay points at that does not exist here; the service must become
#: ready regardless (the issuer's keys are fetched in the background, spans are dropped).
STAGING_ISSUER = "https://login.staging.example.com/realms/tasks"
STAGING_OTLP_ENDPOINT = "http://otel-collector.observability.svc:4318"


def target_dir() -> Path:
    """Per machine, not per checkout: CI clones afresh every run, and the dependencies'
    build is the same for every clone (cargo's own lock serialises two users)."""
    return paths.CACHE / "fresh-machine" / "target"


def apt_archives() -> Path:
    return paths.CACHE / "fresh-machine" / "apt-archives"


def image_name(content: images.ImageContent) -> str:
    return f"tasks-fresh-machine:{content.tag}"


def run_arguments(name: str, image: str, *, docker_host: str, rustup_home: Path, cargo_home: Path,
                  environ: dict[str, str] | None = None, machine_ca: Path | None = None,
                  pip_conf: Path | None = None) -> list[str]:
    """``docker run`` arguments of the fresh machine (a pure function: what is mounted,
    and nothing else, is tested)."""
    environ = os.environ if environ is None else environ
    socket = docker_host.removeprefix("unix://")
    state = str(paths.STATE)
    node_runs = str(node.RUN_ROOT)
    env = {
        "HOME": "/root",
        "PATH": f"{cargo_home}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "RUSTUP_HOME": str(rustup_home),
        "CARGO_HOME": str(cargo_home),
        "DOCKER_HOST": docker_host,
        "CLUSTER_STATE_DIR": state,
        "CARGO_TARGET_DIR": str(target_dir()),
        "LANG": "C.UTF-8",
        **BUILD_PROFILE,
    }
    for passed in ("CARGO_BUILD_JOBS", "RUSTUP_AUTO_INSTALL"):
        if environ.get(passed):
            env[passed] = environ[passed]
    mounts = [
        (str(paths.REPO), CHECKOUT_MOUNT, "ro"),
        (str(rustup_home), str(rustup_home), "rw"),
        (str(cargo_home), str(cargo_home), "rw"),
        (str(target_dir()), str(target_dir()), "rw"),
        (socket, socket, "rw"),
        (state, state, "rw"),
        (node_runs, node_runs, "rw"),
        (str(apt_archives()), "/var/cache/apt/archives", "rw"),
    ]
    if machine_ca is not None:
        mounts.append((str(machine_ca), MACHINE_CA_MOUNT, "ro"))
    if pip_conf is not None:
        mounts.append((str(pip_conf), "/etc/pip.conf", "ro"))
    args = ["run", "--detach", "--rm", "--name", name, "--network", "host", "--workdir", "/root"]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    for source, target, mode in mounts:
        args += ["--volume", f"{source}:{target}:{mode}"]
    return [*args, image, "sleep", "7200"]


def image_tag(output: str) -> str | None:
    """The image reference ``scripts/image.sh build`` prints as its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if lines and lines[-1].startswith("tasks-server:") and " " not in lines[-1]:
        return lines[-1]
    return None


def present_tools(output: str) -> list[str]:
    """Names from the ``PRESENT <tool>`` lines of the absence check."""
    return [line.split()[1] for line in output.splitlines() if line.startswith("PRESENT ")]


def absence_command(tools: tuple[str, ...] = ABSENT) -> str:
    return "for t in " + " ".join(tools) + '; do if p="$(command -v "$t")"; then echo "PRESENT $t $p"; fi; done; true'


def status_without_credentials(host: str, port: int, path: str) -> int:
    """The status of a GET with no Authorization header at all."""
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def postgres_image(values_text: str) -> dict[str, str]:
    """registry, repository, tag and digest of PostgreSQL from the values file ``up``
    writes (``cluster.deploy_values``): the image in the cluster's registry, by digest."""
    found = dict(re.findall(r'^    (registry|repository|tag|digest): "?([^"\n]+)"?$', values_text, re.MULTILINE))
    if set(found) != {"registry", "repository", "tag", "digest"} or not re.fullmatch(r"sha256:[0-9a-f]{64}", found["digest"]):
        raise ValueError(f"no PostgreSQL image by digest in the values file: {values_text!r}")
    return found


def staging_values(postgres: dict[str, str]) -> str:
    """The platform's values for staging on this cluster (EXTRA_VALUES of deploy-staging):
    only what the cluster lacks, each with why."""
    return (
        "# The platform's values for tasks-staging on the repository's own cluster, applied by\n"
        "# `just deploy-staging` after values/staging.yaml (EXTRA_VALUES). Only what this cluster lacks:\n"
        "postgresql:\n"
        "  # The chart's default image is on Docker Hub, which the nodes cannot reach: the same\n"
        "  # PostgreSQL the cluster's registry serves, by digest (as the scenarios deploy it).\n"
        "  image:\n"
        f'    registry: "{postgres["registry"]}"\n'
        f"    repository: {postgres['repository']}\n"
        f'    tag: "{postgres["tag"]}"\n'
        f'    digest: "{postgres["digest"]}"\n'
        "  # Staging asks 20Gi; the cluster's volumes are static local ones of 5Gi (no provisioner).\n"
        "  persistence:\n"
        f"    size: {VOLUME_SIZE}\n"
        "# Kept as staging has them, though none exists here: the Ingress (class nginx; no\n"
        "# controller runs, the test calls the Service), the OTLP collector (spans are dropped;\n"
        "# nothing waits for it), the OIDC issuer (its keys are fetched in the background and\n"
        "# readiness does not depend on them; API tokens work without it) and the\n"
        "# NetworkPolicies (stored, not enforced: the bridge CNI does not implement them).\n"
    )


def minted(output: str) -> tuple[str, str]:
    """The token and its ``auth.api_tokens`` line from ``tasks-server mint-token``'s output
    (as scripts/lib/api_token.sh reads them)."""
    token = re.search(r"tkn_[A-Za-z0-9_-]+", output)
    line = re.search(r"^[^ #\n]+ sha256:[0-9a-fA-F]{64} [^ \n]+$", output, re.MULTILINE)
    if not token or not line:
        raise ValueError("mint-token printed no token and line")
    return token.group(0), line.group(0)


def pushed_digest(output: str, repository: str) -> str | None:
    """The digest ``docker push`` reported for ``repository`` (``<tag>: digest: sha256:... size: N``
    after the ``+ docker push <repository>:<tag>`` line), or None."""
    pushing, digest = False, None
    for line in output.splitlines():
        if line.startswith("+ "):
            pushing = line.startswith(f"+ docker push {repository}:")
        elif pushing and (found := re.search(r"\bdigest: (sha256:[0-9a-f]{64}) size: \d+", line)):
            digest = found.group(1)
    return digest


def rolled_back(history: list[dict], *, to: int) -> bool:
    """Whether the newest revision of ``helm history -o json`` is a deployed rollback to ``to``."""
    if not history:
        return False
    last = max(history, key=lambda entry: entry["revision"])
    return last["status"] == "deployed" and last.get("description", "") == f"Rollback to {to}"


def helm_test_passed(output: str) -> bool:
    """``helm test``'s report in a recipe's output: a test suite ran and none failed."""
    phases = re.findall(r"^Phase:\s+(\w+)", output, re.MULTILINE)
    return "+ helm test " in output and bool(phases) and all(phase == "Succeeded" for phase in phases)


def brief_history(history: list[dict]) -> list[str]:
    return [f"{h.get('revision')}:{h.get('status')}:{h.get('description')}" for h in history]


def recycle_volumes(kube: scenarios.Kube, namespace: str) -> tuple[list[str], list[str]]:
    """The static local volumes claims of ``namespace`` held, emptied and made available
    again (their reclaim policy is Retain, so they stay Released otherwise and a later
    claim could not bind them). Only directories under the cluster's state are emptied.
    Returns (recycled, still held) volume names."""
    def claimed() -> list[dict]:
        return [v for v in kube.json("pv")["items"] if ((v["spec"].get("claimRef") or {}).get("namespace")) == namespace]

    # The PV controller marks a volume Released shortly after its claim is deleted.
    try:
        scenarios.poll(f"the volumes of {namespace} released", lambda: all(v["status"].get("phase") == "Released" for v in claimed()), 60, 1)
    except TimeoutError:
        pass
    recycled, held = [], []
    for volume in claimed():
        name = volume["metadata"]["name"]
        directory = Path((volume["spec"].get("local") or {}).get("path", "/nonexistent"))
        if volume["status"].get("phase") != "Released" or not directory.is_relative_to(paths.STATE) or not directory.is_dir():
            held.append(name)
            continue
        for entry in directory.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        kube.run("patch", "pv", name, "--type", "json", "-p", '[{"op":"remove","path":"/spec/claimRef"}]', namespaced=False)
        recycled.append(name)
    for name in recycled:
        try:
            scenarios.poll(f"{name} available", lambda: kube.json("pv", name)["status"].get("phase") == "Available", 60, 1)
        except TimeoutError:
            held.append(name)
    return recycled, held


def delete_manifest(registry: str, repository: str, reference: str) -> bool:
    """Delete the manifest ``reference`` (a tag or a digest) of ``repository`` from the
    plain-HTTP registry at ``registry``; True when it is gone afterwards (404)."""
    host, port = registry.rsplit(":", 1)

    def call(method: str) -> int:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request(method, f"/v2/{repository}/manifests/{reference}",
                               headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                                  "application/vnd.docker.distribution.manifest.v2+json"})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    try:
        call("DELETE")
        return call("HEAD") == 404
    except OSError:
        return False


class FreshMachine:
    def __init__(self, results: scenarios.Results, info: dict):
        self.r = results
        self.info = info
        self.name = f"tasks-fresh-machine-{os.getpid()}"
        self.env = dict(os.environ)
        self.figures: dict[str, float] = {}
        self.logs = paths.STATE / "logs"
        self.built_images: list[str] = []
        #: Tags and digests pushed to the cluster's registry by the staging step (deleted at its end).
        self.pushed: set[str] = set()

    # -- docker on the host ---------------------------------------------------------

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:3])}: exit {result.returncode}: {(result.stdout + result.stderr).strip()[-1500:]}")
        return result

    def exec(self, step: str, command: str, *env: str) -> tuple[int, str, float]:
        """Run ``command`` (bash) in the container; its output goes to the step's log too."""
        workdir = "/root" if step in ("setup", "absent", "present", "clone") else CLONE
        argv = ["docker", "exec", *[f"--env={item}" for item in env], "--workdir", workdir, self.name, "bash", "-c", command]
        started = time.monotonic()
        print(f"$ [fresh machine] {' '.join(env)}{' ' if env else ''}{command}", flush=True)
        try:
            result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    timeout=TIMEOUTS[step], env=self.env)
            code, output = result.returncode, result.stdout
        except subprocess.TimeoutExpired as expired:
            code = -1
            output = (expired.stdout or b"").decode(errors="replace") if isinstance(expired.stdout, bytes) else (expired.stdout or "")
            output += f"\n[fresh machine] {step}: no result within {TIMEOUTS[step]}s"
        seconds = time.monotonic() - started
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.logs / f"fresh-machine-{step}.log").write_text(f"$ {command}\n{output}\n[exit {code} after {seconds:.1f}s]\n")
        self.figures[f"{step}_s"] = round(seconds, 1)
        return code, output, seconds

    def check(self, name: str, ok: bool, output: str = "", detail: str = "") -> bool:
        """A check; on failure the end of the step's output is printed with it."""
        if not ok and output:
            detail = f"{detail}{'; ' if detail else ''}output:\n" + "\n".join(output.strip().splitlines()[-60:])
        return self.r.check(f"[fresh machine] {name}", ok, detail)

    # -- the steps ------------------------------------------------------------------

    def start(self) -> None:
        content = images.fresh_machine()
        image = image_name(content)
        if self.docker("image", "inspect", image, check=False).returncode != 0:
            started = time.monotonic()
            self.docker("import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        str(content.layer), image, timeout=600)
            self.figures["import_s"] = round(time.monotonic() - started, 1)
        target_dir().mkdir(parents=True, exist_ok=True)
        apt_archives().mkdir(parents=True, exist_ok=True)
        machine_ca = Path("/usr/local/share/ca-certificates")
        pip_conf = Path("/etc/pip.conf")
        home = Path.home()
        args = run_arguments(
            self.name, image, docker_host=self.env["DOCKER_HOST"],
            rustup_home=Path(os.environ.get("RUSTUP_HOME", home / ".rustup")),
            cargo_home=Path(os.environ.get("CARGO_HOME", home / ".cargo")),
            machine_ca=machine_ca if any(machine_ca.glob("*.crt")) else None,
            pip_conf=pip_conf if pip_conf.is_file() else None)
        self.docker(*args, timeout=120)

    def run(self) -> None:
        started = time.monotonic()
        print("\n=== the README's image and deploy recipes on a fresh machine", flush=True)
        try:
            self.steps()
        finally:
            self.figures["total_s"] = round(time.monotonic() - started, 1)

    def steps(self) -> None:
        self.start()
        # The machine's CA certificates (a proxy's), as its administrator installed them.
        code, output, _ = self.exec("setup", f"if [ -d {MACHINE_CA_MOUNT} ]; then cp {MACHINE_CA_MOUNT}/*.crt /usr/local/share/ca-certificates/ "
                                             "&& update-ca-certificates >/dev/null; fi")
        if not self.check("machine set up (CA certificates)", code == 0, output):
            return
        code, output, _ = self.exec("absent", absence_command())
        present = present_tools(output)
        if not self.check(f"none of {', '.join(ABSENT)} on the machine before the recipes", code == 0 and not present, output,
                          f"present: {present}"):
            return
        code, output, _ = self.exec("clone", f"git clone --quiet file://{CHECKOUT_MOUNT} {CLONE} && git -C {CLONE} log -1 --format=%h")
        if not self.check("git clone of the checkout", code == 0, output):
            return
        self.negative()
        if not self.image():
            return
        if not self.deploy():
            self.failure_logs()
            self.exec("undeploy", "./just undeploy-local", "LOCAL_CLUSTER=tasks")
            return
        self.api()
        code, output, _ = self.exec("status", "./just status", "LOCAL_CLUSTER=tasks")
        self.check("LOCAL_CLUSTER=tasks ./just status shows the deployed release", code == 0 and "STATUS: deployed" in output, output)
        code, output, _ = self.exec("logs", "./just logs", "LOCAL_CLUSTER=tasks", "LOGS_FOLLOW=0")
        self.check("LOCAL_CLUSTER=tasks LOGS_FOLLOW=0 ./just logs prints the app's log", code == 0 and "[pod/" in output, output)
        code, output, _ = self.exec("undeploy", "./just undeploy-local", "LOCAL_CLUSTER=tasks")
        gone = scenarios.Kube(self.info["kubeconfig"], NAMESPACE).run("get", "namespace", NAMESPACE, namespaced=False, check=False).returncode != 0
        self.check("LOCAL_CLUSTER=tasks ./just undeploy-local removes the release and its namespace", code == 0 and gone, output)
        self.staging()

    def negative(self) -> None:
        """Where apt can install nothing, the recipe stops, naming what to install."""
        command = ("mkdir -p /tmp/no-apt/lists/partial && printf %s " + shlex.quote(NO_APT_CONFIG) + " >/tmp/no-apt.conf"
                   " && APT_CONFIG=/tmp/no-apt.conf ./just image")
        code, output, _ = self.exec("negative", command, "IMAGE_TARGET=host")
        built = any(line.startswith(("+ cargo build", "+ docker build")) for line in output.splitlines())
        self.check("./just image (IMAGE_TARGET=host) where musl-tools cannot be installed: non-zero, names musl-tools, builds nothing",
                   code not in (0, -1) and "musl-tools" in output and not built, output, f"exit {code}")

    def image(self) -> bool:
        code, output, seconds = self.exec("image", "./just image", "IMAGE_TARGET=host")
        tag = image_tag(output)
        if not self.check("IMAGE_TARGET=host ./just image builds the image", code == 0 and tag is not None, output, f"exit {code}"):
            return False
        self.built_images.append(tag)
        self.check("the recipe installed musl-tools and docker.io itself",
                   "apt-get install musl-tools" in output and "installing Debian docker.io" in output, output)
        code, after, _ = self.exec("present", absence_command(("x86_64-linux-musl-gcc", "docker")))
        self.check("x86_64-linux-musl-gcc and docker present after the recipe", sorted(present_tools(after)) == ["docker", "x86_64-linux-musl-gcc"], after)
        inspected = self.docker("image", "inspect", "--format", "{{.Config.User}}", tag, check=False)
        self.check(f"{tag} is in Docker Engine, user 10001", inspected.returncode == 0 and inspected.stdout.strip() == "10001:10001",
                   inspected.stdout + inspected.stderr)
        return True

    def deploy(self) -> bool:
        code, output, seconds = self.exec("deploy", "./just deploy-local", "LOCAL_CLUSTER=tasks", "IMAGE_TARGET=host")
        for line in output.splitlines():
            if line.startswith("+ docker build") and " -t " in line:
                self.built_images.append(line.split(" -t ", 1)[1].split()[0])
        ok = self.check("LOCAL_CLUSTER=tasks ./just deploy-local: image loaded into every node, helm install of the local overlay, helm test passes",
                        code == 0 and "+ scripts/cluster.sh load-image" in output and "helm test" in output, output, f"exit {code}")
        self.check("deploy-local installed helm and kubectl itself", "installing helm kubectl into .tools/bin" in output, output)
        return ok

    def api(self) -> None:
        kube = scenarios.Kube(self.info["kubeconfig"], NAMESPACE)
        answers: dict[str, object] = {}

        def answered() -> bool:
            host, port = kube.service_address(scenarios.RELEASE)
            answers["with"] = load.request(host, port, "GET", "/v1/tasks", scenarios.TOKEN)[0]
            answers["without"] = status_without_credentials(host, port, "/v1/tasks")
            return answers["with"] == 200

        try:
            scenarios.poll("the deployed API answers", answered, 60, 1)
        except TimeoutError as error:
            answers.setdefault("error", str(error))
        self.check("the deployed API answers 200 with the development token, 401 without",
                   answers.get("with") == 200 and answers.get("without") == 401, detail=f"{answers}")

    # -- staging, for real ---------------------------------------------------------

    def staging(self) -> None:
        """``./just deploy-staging`` twice and ``./just rollback-staging`` against this
        cluster, as a new user with a platform team would run them; then everything the
        step made is removed again."""
        kube = scenarios.Kube(self.info["kubeconfig"], STAGING_NAMESPACE)
        registry = self.info.get("registry_loopback", cluster.REGISTRY_LOOPBACK)
        self.staging_repository = f"{registry}/{STAGING_OWNER}/tasks-server"
        self.staging_env = (f"REGISTRY={registry}", f"REGISTRY_OWNER={STAGING_OWNER}", "IMAGE_TARGET=host",
                            f"KUBE_CONTEXT={STAGING_CONTEXT}", f"EXTRA_VALUES={STAGING_VALUES}")
        # An error ends the step as a failed check; the cleanup runs whatever happened.
        errors = (ValueError, KeyError, RuntimeError, OSError, subprocess.SubprocessError, TimeoutError)
        try:
            if self.staging_platform(kube) and self.staging_deploy(kube):
                self.staging_redeploy_and_rollback(kube)
        except errors as error:
            self.check("staging ran to the end", False, detail=str(error)[-2000:])
        finally:
            try:
                self.staging_cleanup(kube)
            except errors as error:
                self.check("staging removed", False, detail=str(error)[-2000:])

    def write_file(self, path: str, text: str) -> None:
        """A file on the fresh machine (its user's, outside the clone)."""
        quoted = shlex.quote(path)
        subprocess.run(["docker", "exec", "-i", self.name, "sh", "-c", f'mkdir -p "$(dirname {quoted})" && cat > {quoted}'],
                       input=text, text=True, capture_output=True, check=True, timeout=60, env=self.env)

    def staging_platform(self, kube: scenarios.Kube) -> bool:
        """What the platform sets up once per namespace, done here (never by the recipe):
        the namespace, the database Secret, the API-token Secret with lines of tokens
        minted by the image's own ``mint-token`` (one for the Helm test, one for the checks
        below), the Helm test's token; the platform's values file and a kube context on
        the fresh machine. No secret is printed or logged."""
        started = time.monotonic()
        postgres = postgres_image(cluster.deploy_values_file().read_text())
        image = self.built_images[0]  # `./just image`'s, of the commit deployed
        tokens = {}
        for principal in ("helm-test", "fresh-machine"):
            result = self.docker("run", "--rm", "--network", "none", image, "mint-token", principal, "--scope", "tasks:read", "tasks:write")
            tokens[principal] = minted(result.stdout)
        kube.run("create", "namespace", STAGING_NAMESPACE, namespaced=False)
        with tempfile.TemporaryDirectory(prefix="tasks-staging-secrets-") as work:  # mode 0700
            folder = Path(work)
            files = {
                "password": secrets.token_urlsafe(24),
                "postgres-password": secrets.token_urlsafe(24),
                "api_tokens": "# tasks-staging: the Helm test's token and the fresh-machine check's, hashes only\n"
                              + "".join(f"{line}\n" for _, line in tokens.values()),
                "token": tokens["helm-test"][0],
            }
            for name, text in files.items():
                (folder / name).write_text(text)
            kube.run("create", "secret", "generic", STAGING_DB_SECRET,
                     f"--from-file=password={folder / 'password'}", f"--from-file=postgres-password={folder / 'postgres-password'}")
            kube.run("create", "secret", "generic", STAGING_TOKENS_SECRET, f"--from-file=api_tokens={folder / 'api_tokens'}")
            kube.run("create", "secret", "generic", STAGING_TEST_TOKEN_SECRET, f"--from-file=token={folder / 'token'}")
        self.staging_token = tokens["fresh-machine"][0]
        self.write_file(STAGING_VALUES, staging_values(postgres))
        # The cluster's kubeconfig as the user's own (~/.kube/config), its context renamed:
        # deploy-staging must find the context by the name it is given.
        kubectl = "./.tools/bin/kubectl"
        code, output, _ = self.exec(
            "staging-setup",
            f'mkdir -p /root/.kube && KUBECONFIG="$CLUSTER_STATE_DIR/kubeconfig" {kubectl} config view --raw --flatten > /root/.kube/config'
            f" && chmod 600 /root/.kube/config && {kubectl} config rename-context tasks {STAGING_CONTEXT} >/dev/null"
            f" && {kubectl} config get-contexts -o name && test -f {STAGING_VALUES} && git status --porcelain")
        self.figures["staging-platform_s"] = round(time.monotonic() - started, 1)
        return self.check("staging set up as the platform would: namespace, database and API-token Secrets (tokens minted with the "
                          "image's mint-token), the Helm test's token, platform values outside the clone (tree clean), a kube context",
                          code == 0 and output.split() == [STAGING_CONTEXT], output, f"exit {code}")

    def staging_deploy(self, kube: scenarios.Kube) -> bool:
        code, output, _ = self.exec("staging-deploy", "./just deploy-staging", *self.staging_env)
        self.track_pushed(output)
        ok = self.check(f"{' '.join(self.staging_env)} ./just deploy-staging exits 0 (static musl binary built here, pushed, "
                        "helm upgrade --install by digest, helm test)",
                        code == 0 and "+ scripts/ensure-tools.sh musl" in output and "--target host" in output
                        and f"+ docker push {self.staging_repository}:" in output, output, f"exit {code}")
        if not ok:
            self.failure_logs(STAGING_NAMESPACE)
            return False
        self.check("helm test passed (deploy-staging)", helm_test_passed(output), output)
        digest = pushed_digest(output, self.staging_repository)
        deployment = kube.json("deployment", scenarios.RELEASE)
        images = [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
        pods = kube.pods(scenarios.APP_SELECTOR)
        pulled = [status.get("imageID", "") for pod in pods for status in pod["status"].get("containerStatuses", [])]
        self.check(f"the Deployment runs {self.staging_repository}:<commit>@<the digest docker push reported>, and every app "
                   "pod runs that digest, pulled by the nodes through the registry's loopback name",
                   digest is not None and len(images) == 1 and images[0].startswith(f"{self.staging_repository}:")
                   and images[0].endswith(f"@{digest}") and bool(pulled)
                   # The kubelet reports one repo digest of the image: its name may be another
                   # reference of the same content, the digest may not differ.
                   and all(i.endswith(f"@{digest}") for i in pulled),
                   detail=f"pushed {digest}, Deployment {images}, pods {pulled}")
        # The overlay's OIDC issuer and OTLP collector do not exist here: the service must
        # still become ready (the issuer's keys are fetched in the background; readiness
        # is the database and the migrations), and say it could not reach the issuer.
        config = kube.json("configmap", scenarios.RELEASE)["data"]
        status = deployment.get("status", {})
        logs: dict[str, str] = {}

        def warned() -> bool:
            logs["text"] = kube.run("logs", "--selector", scenarios.APP_SELECTOR, "--all-containers", "--tail=400", check=False).stdout
            return "identity provider not reachable yet" in logs["text"]

        try:
            scenarios.poll("the issuer warning in the app log", warned, 60, 2)
        except TimeoutError:
            pass
        warning = next((line for line in logs.get("text", "").splitlines() if "identity provider not reachable yet" in line), "")
        ready = (config.get("TASKS_AUTH__ISSUER") == STAGING_ISSUER and config.get("OTEL_EXPORTER_OTLP_ENDPOINT") == STAGING_OTLP_ENDPOINT
                 and status.get("readyReplicas", 0) == deployment["spec"].get("replicas", -1) >= 1 and bool(warning))
        self.check("every replica ready although the overlay's OIDC issuer and OTLP collector do not exist here "
                   "(the app logs that the issuer is not reachable; API tokens work without it)", ready,
                   detail=f"issuer {config.get('TASKS_AUTH__ISSUER')}, otlp {config.get('OTEL_EXPORTER_OTLP_ENDPOINT')}, "
                          f"ready {status.get('readyReplicas')}/{deployment['spec'].get('replicas')}, "
                          + (f"logged: {warning[:300]}" if ready else f"log:\n{logs.get('text', '')[-1500:]}"))
        answers: dict[str, object] = {}

        def answered() -> bool:
            host, port = kube.service_address(scenarios.RELEASE)
            answers["minted"] = load.request(host, port, "GET", "/v1/tasks", self.staging_token)[0]
            answers["none"] = status_without_credentials(host, port, "/v1/tasks")
            answers["development"] = load.request(host, port, "GET", "/v1/tasks", scenarios.TOKEN)[0]
            return answers["minted"] == 200

        try:
            scenarios.poll("the staging API answers", answered, 60, 1)
        except TimeoutError as error:
            answers.setdefault("error", str(error))
        self.check("the staging API answers 200 with a token minted for it, 401 without one and 401 with the local overlay's development token",
                   answers.get("minted") == 200 and answers.get("none") == 401 and answers.get("development") == 401, detail=f"{answers}")
        return True

    def staging_redeploy_and_rollback(self, kube: scenarios.Kube) -> None:
        code, output, _ = self.exec("staging-redeploy", "./just deploy-staging", *self.staging_env)
        self.track_pushed(output)
        history = self.helm_history()
        self.check("a second ./just deploy-staging of the same commit exits 0: revision 2 deployed, the same digest, helm test passed",
                   code == 0 and helm_test_passed(output) and [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]
                   and pushed_digest(output, self.staging_repository) is not None
                   and kube.json("deployment", scenarios.RELEASE)["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
                       f"@{pushed_digest(output, self.staging_repository)}"),
                   output, f"exit {code}, history {brief_history(history)}")
        code, output, _ = self.exec("staging-rollback", "./just rollback-staging", f"KUBE_CONTEXT={STAGING_CONTEXT}")
        history = self.helm_history()
        self.check("./just rollback-staging exits 0, helm test passes, helm history shows revision 3 deployed: Rollback to 1",
                   code == 0 and helm_test_passed(output) and rolled_back(history, to=1) and len(history) == 3,
                   output, f"exit {code}, history {brief_history(history)}")
        if code != 0:
            self.failure_logs(STAGING_NAMESPACE)

    def helm(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(paths.REPO / ".tools" / "bin" / "helm"), "--kubeconfig", self.info["kubeconfig"],
                               "--namespace", STAGING_NAMESPACE, *args], capture_output=True, text=True, timeout=timeout)

    def helm_history(self) -> list[dict]:
        result = self.helm("history", scenarios.RELEASE, "--output", "json")
        return json.loads(result.stdout) if result.returncode == 0 and result.stdout.strip() else []

    def track_pushed(self, output: str) -> None:
        """What a deploy pushed: its tag is removed from Docker Engine at the end like the
        other images, its digest from the registry by the cleanup."""
        for line in output.splitlines():
            if line.startswith(f"+ docker push {self.staging_repository}:"):
                reference = line.split()[3]
                if reference not in self.built_images:
                    self.built_images.append(reference)
                self.pushed.add(reference.rsplit(":", 1)[1])
        digest = pushed_digest(output, self.staging_repository)
        if digest:
            self.pushed.add(digest)

    def staging_cleanup(self, kube: scenarios.Kube) -> None:
        """The platform's removal: the release, the namespace (its Secrets and claim), the
        image in the registry, and the local volume the claim held made available again
        (its data deleted, as a recycler would), so the step leaves nothing behind."""
        started = time.monotonic()
        references = self.pushed | set(re.findall(r"@(sha256:[0-9a-f]{64})", kube.run(
            "get", "deployment", scenarios.RELEASE, "-o", "jsonpath={.spec.template.spec.containers[*].image}", check=False).stdout))
        uninstall = self.helm("uninstall", scenarios.RELEASE, "--ignore-not-found", "--wait", "--timeout", "5m", timeout=360)
        deleted = kube.run("delete", "namespace", STAGING_NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=300s",
                           namespaced=False, check=False, timeout=360)
        gone = kube.run("get", "namespace", STAGING_NAMESPACE, namespaced=False, check=False).returncode != 0
        recycled, leftover = recycle_volumes(kube, STAGING_NAMESPACE)
        # Tags first: deleting a digest leaves a tag naming it in some registries.
        ordered = sorted(references, key=lambda reference: (reference.startswith("sha256:"), reference))
        removed = {reference: delete_manifest(self.info.get("registry_loopback", cluster.REGISTRY_LOOPBACK),
                                              f"{STAGING_OWNER}/tasks-server", reference) for reference in ordered}
        self.figures["staging-cleanup_s"] = round(time.monotonic() - started, 1)
        self.check("staging removed: release uninstalled, namespace deleted, the image deleted from the registry, the volume "
                   "its claim held emptied and available again",
                   uninstall.returncode == 0 and deleted.returncode == 0 and gone and not leftover and all(removed.values()),
                   detail=f"uninstall exit {uninstall.returncode} {uninstall.stderr.strip()[-300:]}; namespace delete exit "
                          f"{deleted.returncode} {deleted.stderr.strip()[-300:]}; namespace gone {gone}; volumes recycled {recycled}, "
                          f"still bound or released {leftover}; deleted from the registry {removed}")

    def failure_logs(self, namespace: str = NAMESPACE) -> None:
        kube = scenarios.Kube(self.info["kubeconfig"], namespace)
        print(kube.run("get", "pods,pvc,events", "-o", "wide", check=False).stdout[-4000:], flush=True)
        print(kube.run("logs", "--selector", scenarios.APP_SELECTOR, "--all-containers", "--tail=40", check=False).stdout[-4000:], flush=True)

    def stop(self) -> None:
        self.docker("rm", "--force", self.name, check=False, timeout=120)
        for tag in self.built_images:
            self.docker("rmi", tag, check=False, timeout=120)


def run(results: scenarios.Results, info: dict) -> None:
    """The fresh-machine checks, with their figures; Docker Engine is started for them
    (and stopped again when it was not running before)."""
    script = str(paths.REPO / "scripts" / "docker-engine.sh")
    already_running = subprocess.run([script, "status"], capture_output=True, text=True, timeout=30).returncode == 0
    fresh = FreshMachine(results, info)
    try:
        engine = subprocess.run([script, "ensure"], capture_output=True, text=True, timeout=600)
        if not results.check("[fresh machine] Docker Engine for the container", engine.returncode == 0, engine.stderr.strip()[-1500:]):
            return
        fresh.env["DOCKER_HOST"] = engine.stdout.strip()
        try:
            fresh.run()
        except (RuntimeError, OSError, subprocess.TimeoutExpired, TimeoutError) as error:
            results.check("[fresh machine] ran to the end", False, str(error)[:2000])
        finally:
            fresh.stop()
            results.figure("fresh-machine", **fresh.figures)
    finally:
        if not already_running:
            subprocess.run([script, "stop"], capture_output=True, text=True, timeout=120)


def run_on_running_cluster() -> int:
    """``scripts/cluster.sh fresh-machine``: the checks against the cluster ``up`` started."""
    import json

    if not cluster.info_file().exists():
        print(f"cluster: no cluster is running from {paths.STATE}: start one with scripts/cluster.sh up --nodes 2", flush=True)
        return 1
    info = json.loads(cluster.info_file().read_text())
    results = scenarios.Results()
    run(results, info)
    print(results.summary(), flush=True)
    return 0 if not results.failed else 1

