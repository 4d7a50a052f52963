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
"""

from __future__ import annotations

import http.client
import os
import shlex
import subprocess
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
            "status": 180, "logs": 180, "undeploy": 600}


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


class FreshMachine:
    def __init__(self, results: scenarios.Results, info: dict):
        self.r = results
        self.info = info
        self.name = f"tasks-fresh-machine-{os.getpid()}"
        self.env = dict(os.environ)
        self.figures: dict[str, float] = {}
        self.logs = paths.STATE / "logs"
        self.built_images: list[str] = []

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

    def failure_logs(self) -> None:
        kube = scenarios.Kube(self.info["kubeconfig"], NAMESPACE)
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

