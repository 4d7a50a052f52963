"""The cluster's PostgreSQL and pause images, run with Docker Engine (no mocks).

The images are loaded from exactly what ``localcluster.images`` hands the registry (the
layer and the OCI image config), and the PostgreSQL image is started the way the chart
starts it: the env, args, commands, users, mounts and probes are read from
``helm template`` of the chart (local values, backups and TLS on), not restated here.
A pod is modelled as its containers run one after another on shared host directories
(the volumes), with the pod's security context: uid 999, fsGroup 999 as a supplementary
group, read-only root filesystem, no capabilities.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from localcluster import images, paths

HELM = paths.REPO / ".tools" / "bin" / "helm"
CHART = paths.REPO / "deploy" / "helm" / "tasks"
LOCAL_VALUES = paths.REPO / "deploy" / "helm" / "values" / "local.yaml"
DOCKER_ENV: dict[str, str] = {}


# ---- Docker and the chart -----------------------------------------------------------

def docker(*args: str, check: bool = True, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=DOCKER_ENV, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def eventually(condition, timeout: float, what: str, interval: float = 0.25):
    """Poll ``condition`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session", autouse=True)
def docker_engine():
    script = str(paths.REPO / "scripts" / "docker-engine.sh")
    # Stop afterwards only a daemon this session started (as scripts/test-image.sh does):
    # a suite leaves nothing running that it did not find running.
    already_running = subprocess.run([script, "status"], capture_output=True, text=True, timeout=30).returncode == 0
    result = subprocess.run([script, "ensure"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"docker-engine.sh ensure failed:\n{result.stderr}"
    DOCKER_ENV.update(os.environ, DOCKER_HOST=result.stdout.strip())
    yield
    if not already_running:
        subprocess.run([script, "stop"], capture_output=True, text=True, timeout=120)


def load(content: images.ImageContent) -> str:
    """``docker load`` the image from its layer and OCI config; returns its reference."""
    reference = f"localcluster-test/{content.name}:{content.diff_id[7:19]}"
    archive = content.layer.parent / f".docker-archive-{uuid.uuid4().hex}.tar"
    try:
        with tarfile.open(archive, "w") as tar:
            def add(name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            add("config.json", json.dumps(content.image_config()).encode())
            tar.add(content.layer, "layer.tar.gz")
            add("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": [reference], "Layers": ["layer.tar.gz"]}]).encode())
        docker("load", "-i", str(archive), timeout=600)
    finally:
        archive.unlink(missing_ok=True)
    return reference


def render(*overrides: str) -> list[dict]:
    """The chart's manifests as JSON: rendered by helm, then parsed by helm (fromYaml)."""
    if not HELM.exists():
        subprocess.run([str(paths.REPO / "scripts" / "ensure-tools.sh"), "helm"], check=True, timeout=600)
    rendered = subprocess.run(
        [str(HELM), "template", "t", str(CHART), "-f", str(LOCAL_VALUES), *overrides],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    # A throwaway chart whose one template turns every rendered document into JSON.
    converter = Path(os.environ.get("TMPDIR", "/tmp")) / f"yaml-to-json-{uuid.uuid4().hex}"
    (converter / "templates").mkdir(parents=True)
    try:
        (converter / "Chart.yaml").write_text("apiVersion: v2\nname: yaml-to-json\nversion: 0.0.0\n")
        (converter / "rendered.yaml").write_text(rendered)
        (converter / "templates" / "json.yaml").write_text(
            '{{- $docs := list -}}\n'
            '{{- range regexSplit "(?m)^---$" (.Files.Get "rendered.yaml") -1 -}}\n'
            '{{- $doc := fromYaml . -}}{{- if $doc.kind -}}{{- $docs = append $docs $doc -}}{{- end -}}\n'
            '{{- end -}}\n'
            '{"items": {{ toJson $docs }}}\n'
        )
        out = subprocess.run([str(HELM), "template", "c", str(converter)], check=True, capture_output=True, text=True, timeout=120).stdout
    finally:
        subprocess.run(["rm", "-rf", str(converter)], check=True)
    body = "\n".join(line for line in out.splitlines() if not line.startswith(("#", "---")))
    return json.loads(body)["items"]


def find(manifests: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind} *{name_suffix}: {len(found)} rendered"
    return found[0]


def named(manifests: list[dict], kind: str, name: str) -> dict:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} rendered"
    return found[0]


def container(pod_spec: dict, name: str, init: bool = False) -> dict:
    for c in pod_spec["initContainers" if init else "containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no {'init ' if init else ''}container {name}")


# ---- A PostgreSQL pod of the chart --------------------------------------------------

class Pod:
    """The chart's PostgreSQL pod on Docker: its volumes are host directories."""

    def __init__(self, manifests: list[dict], image: str, root: Path):
        self.image = image
        self.sts = find(manifests, "StatefulSet")
        self.spec = self.sts["spec"]["template"]["spec"]
        self.main = container(self.spec, "postgresql")
        security = self.spec["securityContext"]
        self.uid, self.gid, self.fs_group = security["runAsUser"], security["runAsGroup"], security["fsGroup"]
        volumes = {v["name"]: v for v in self.spec["volumes"]}
        configmap = named(manifests, "ConfigMap", volumes["config"]["configMap"]["name"])
        secret = named(manifests, "Secret", volumes["credentials"]["secret"]["secretName"])
        self.passwords = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.names: list[str] = []
        self.dirs: dict[str, Path] = {}
        for volume in self.spec["volumes"]:
            directory = root / volume["name"]
            directory.mkdir(mode=0o755)
            self.dirs[volume["name"]] = directory
            if "secret" in volume:
                mode = volume["secret"]["defaultMode"]
                for item in volume["secret"]["items"]:
                    data = self.passwords.get(item["key"]) if volume["name"] == "credentials" else None
                    if data is None:
                        continue  # the TLS Secret: written by the test that uses it
                    self._file(directory / item["path"], data, mode)
            elif "configMap" in volume:
                mode = volume["configMap"]["defaultMode"]
                items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in configmap["data"]]
                for item in items:
                    self._file(directory / item["path"], configmap["data"][item["key"]], mode)
            else:  # emptyDir: writable by the fsGroup, as the kubelet makes it
                os.chown(directory, 0, self.fs_group)
                os.chmod(directory, 0o2777)
        # The PersistentVolume: root-owned, group fsGroup (fsGroupChangePolicy applies it).
        data = root / "data"
        data.mkdir()
        os.chown(data, 0, self.fs_group)
        os.chmod(data, 0o2775)
        self.dirs["data"] = data

    def _file(self, path: Path, text: str, mode: int) -> None:
        path.write_text(text)
        os.chown(path, 0, self.fs_group)
        os.chmod(path, mode)

    def add_init_script(self, name: str, text: str) -> None:
        self._file(self.dirs["initdb"] / name, text, 0o555)

    @property
    def pgdata(self) -> Path:
        env = {e["name"]: e["value"] for e in self.main["env"]}
        relative = Path(env["PGDATA"]).relative_to("/var/lib/postgresql/data")
        return self.dirs["data"] / relative

    def _run_args(self, spec: dict, name: str, extra_env: dict | None = None) -> list[str]:
        security = spec["securityContext"]
        args = [
            "--name", name,
            "--user", f"{security.get('runAsUser', self.uid)}:{security.get('runAsGroup', self.gid)}",
            "--group-add", str(self.fs_group),
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        ]
        if security.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        for capability in security.get("capabilities", {}).get("add", []):
            args += ["--cap-add", capability]
        for mount in spec.get("volumeMounts", []):
            source = self.dirs[mount["name"]]
            args += ["--mount", f"type=bind,source={source},target={mount['mountPath']}{',readonly' if mount.get('readOnly') else ''}"]
        for env in spec.get("env", []):
            args += ["--env", f"{env['name']}={env['value']}"]
        for key, value in (extra_env or {}).items():
            args += ["--env", f"{key}={value}"]
        return args

    def run_init(self, name: str) -> subprocess.CompletedProcess:
        """Run an init container of the pod to completion."""
        spec = container(self.spec, name, init=True)
        cname = f"pg-{name}-{uuid.uuid4().hex[:8]}"
        command = spec["command"]
        return docker("run", "--rm", *self._run_args(spec, cname), "--entrypoint", command[0], self.image, *command[1:], check=False, timeout=300)

    def start(self) -> str:
        """Start the pod: every init container in order, then PostgreSQL."""
        self.init_logs = ""
        for init in self.spec.get("initContainers", []):
            if init.get("restartPolicy") == "Always":
                continue  # a sidecar: started by the test that needs it
            result = self.run_init(init["name"])
            assert result.returncode == 0, f"init container {init['name']} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            self.init_logs += result.stdout + result.stderr
        name = f"pg-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        docker("run", "--detach", *self._run_args(self.main, name), self.image, *self.main["args"])
        self.name = name
        pid = docker("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
        if pid != "0":  # else it has exited already: wait_ready reports it
            added = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "address", "add", f"{POD_ADDRESS}/32", "dev", "lo"],
                                   capture_output=True, text=True, timeout=30)
            # A container meant to fail (bad volume permissions) can exit between inspect
            # and nsenter: then wait_ready reports the exit; a running one must get the address.
            assert added.returncode == 0 or not self.running(), f"adding the pod address failed:\n{added.stderr}"
        self.wait_ready()
        return name

    def probe(self, kind: str = "startupProbe") -> int:
        return docker("exec", self.name, *self.main[kind]["exec"]["command"], check=False, timeout=30).returncode

    def wait_ready(self, timeout: float = 180) -> None:
        def ready():
            if not self.running():
                raise AssertionError(f"PostgreSQL exited ({self.exit_code()}):\n{self.logs()}")
            return self.probe() == 0
        eventually(ready, timeout, "the startup probe (pg_isready)")

    def running(self) -> bool:
        return docker("inspect", "-f", "{{.State.Running}}", self.name).stdout.strip() == "true"

    def exit_code(self) -> int:
        return int(docker("inspect", "-f", "{{.State.ExitCode}}", self.name).stdout.strip())

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def sql(self, query: str, database: str = "postgres", user: str = "postgres") -> str:
        """A query over the pod's local socket (kubectl exec), as the chart's runbooks do."""
        result = docker("exec", self.name, "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", database, "-c", query, check=False)
        assert result.returncode == 0, f"psql failed: {query}\n{result.stderr}"
        return result.stdout.strip()

    def stop(self, signal: str | None = None, timeout: float = 60) -> float:
        """Stop PostgreSQL with ``signal`` (default: docker stop, the image's StopSignal)."""
        started = time.monotonic()
        if signal is None:
            docker("stop", "--time", str(int(timeout)), self.name, timeout=timeout + 30)
        else:
            docker("kill", "--signal", signal, self.name)
        eventually(lambda: not self.running(), timeout, f"PostgreSQL to stop on {signal or 'docker stop'}")
        return time.monotonic() - started

    def remove(self) -> None:
        for name in self.names:
            docker("rm", "--force", name, check=False)


# ---- Fixtures -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def postgres_content() -> images.ImageContent:
    return images.postgres()


@pytest.fixture(scope="module")
def postgres_image(postgres_content) -> str:
    return load(postgres_content)


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return render("--set", "backup.enabled=true")


@pytest.fixture
def pod(manifests, postgres_image, tmp_path):
    running = Pod(manifests, postgres_image, tmp_path)
    yield running
    running.remove()


# ---- The build ------------------------------------------------------------------------

def test_postgres_build_is_cached_and_described(postgres_content):
    started = time.monotonic()
    again = images.postgres()
    elapsed = time.monotonic() - started
    assert again == postgres_content, "a second call must return the cached build"
    assert elapsed < 30, f"the cached call took {elapsed:.1f}s"
    meta = json.loads((postgres_content.layer.parent / "meta.json").read_text())
    print(f"\npostgres image: fresh build {meta['build_seconds']}s, cached call {elapsed:.2f}s, "
          f"layer {meta['size'] / 1e6:.1f} MB gzipped, {meta['uncompressed_size'] / 1e6:.1f} MB unpacked")
    config = postgres_content.config
    assert config["Labels"]["org.opencontainers.image.version"] == postgres_content.tag
    assert postgres_content.tag.startswith("17.")
    assert config["Labels"]["org.opencontainers.image.base.name"] == "debian:trixie"
    assert config["User"] == "999:999" and config["StopSignal"] == "SIGINT"
    assert "PGDATA=/var/lib/postgresql/data" in config["Env"]
    assert config["ExposedPorts"] == {"5432/tcp": {}}
    # One layer, paths relative to /, no device nodes, no build-host files.
    with tarfile.open(postgres_content.layer) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert not [n for n in members if n.startswith(("/", "./"))]
    assert not [m.name for m in members.values() if m.ischr() or m.isblk()]
    assert members["usr/local/bin/docker-entrypoint.sh"].mode & 0o111
    assert members["var/lib/postgresql/data"].uid == 999
    assert "etc/ssl/private/ssl-cert-snakeoil.key" not in members
    assert members["etc/resolv.conf"].size == 0 and members["etc/hostname"].size == 0


def test_postgres_binaries_and_user(postgres_image, postgres_content):
    script = (
        "set -e; id -u postgres; id -g postgres; for b in psql pg_isready pg_dump pg_restore pg_ctl initdb postgres; do command -v $b; done; "
        "postgres --version; readlink -f /bin/sh; for t in sed date wc find ls mv cksum sleep cat dirname stat chown setpriv gzip; "
        "do command -v $t >/dev/null || { echo missing $t; exit 1; }; done"
    )
    out = docker("run", "--rm", "--read-only", "--entrypoint", "/bin/sh", postgres_image, "-c", script).stdout.split("\n")
    assert out[0] == "999" and out[1] == "999"
    assert out[2:9] == [f"/usr/lib/postgresql/17/bin/{b}" for b in ("psql", "pg_isready", "pg_dump", "pg_restore", "pg_ctl", "initdb", "postgres")]
    assert out[9].startswith(f"postgres (PostgreSQL) {postgres_content.tag} ")
    assert out[10] == "/usr/bin/dash"
    # The image's default user (999) and the entrypoint passing any other command through.
    assert docker("run", "--rm", postgres_image, "id", "-u").stdout.strip() == "999"


# ---- The chart's pod ---------------------------------------------------------------

#: The pod's IP: the test's dockerd has no bridge network, so the test gives the pod's
#: network namespace this address (on lo) and other containers join that namespace.
#: Connections to it come from it, not from the 127.0.0.1 the chart's pg_hba.conf trusts.
POD_ADDRESS = "192.0.2.10"

MARKER_SQL = "CREATE TABLE IF NOT EXISTS init_runs (at timestamptz DEFAULT now());\nINSERT INTO init_runs DEFAULT VALUES;\n"


def test_chart_pod_lifecycle(pod: Pod, manifests):
    pod.add_init_script("20-marker.sql", MARKER_SQL)
    app_env = {e["name"]: e["value"] for e in pod.main["env"]}
    app_role, app_db = app_env["APP_ROLE"], app_env["APP_DB"]

    # First start on an empty volume: the init container leaves it to the entrypoint.
    pod.start()
    assert "is not initialised yet" in pod.init_logs
    logs = pod.logs()
    assert "initialising" in logs and "running /docker-entrypoint-initdb.d/10-converge-roles.sh" in logs
    assert "converge-roles: creating the application role" in logs
    assert "running /docker-entrypoint-initdb.d/20-marker.sql" in logs

    # initdb ran as uid 999: the data directory and the server are postgres's.
    assert (pod.pgdata / "PG_VERSION").read_text().strip() == "17"
    st = pod.pgdata.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (999, 999, 0o700)
    status = docker("exec", pod.name, "cat", "/proc/1/status").stdout
    assert [line.split()[1] for line in status.splitlines() if line.startswith(("Uid:", "Gid:"))] == ["999", "999"]
    assert docker("exec", pod.name, "cat", "/proc/1/comm").stdout.strip() == "postgres"
    assert pod.sql("SHOW data_directory") == app_env["PGDATA"]
    assert pod.sql("SHOW hba_file") == "/etc/tasks-postgresql/pg_hba.conf"
    assert pod.sql("SELECT version()").startswith("PostgreSQL 17.")

    # The roles: postgres is the bootstrap superuser, the app role owns its database
    # and is no superuser; the settings of the chart's args are in effect.
    assert pod.sql("SELECT rolname FROM pg_roles WHERE oid = 10") == "postgres"
    assert pod.sql("SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = 'postgres'") == "t|t"
    assert pod.sql(
        f"SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = '{app_role}'"
    ) == "f|f|f|f|f|t"
    assert pod.sql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{app_db}'") == app_role
    settings = dict(arg.split("=", 1) for arg in pod.main["args"][1:] if arg != "-c")
    assert pod.sql("SHOW max_connections") == settings["max_connections"]
    assert pod.sql("SHOW shared_buffers") == settings["shared_buffers"]
    assert pod.sql("SELECT count(*) FROM init_runs", database=app_db) == "1"

    # Over TCP to the pod's address (from another container in its network namespace),
    # under the chart's pg_hba.conf: the app role with its password; never postgres, never a wrong
    # password. The image listens on every address, as the chart's Service needs.
    assert pod.sql("SHOW listen_addresses") == "*"
    def connect(user: str, password: str) -> subprocess.CompletedProcess:
        return docker("run", "--rm", "--network", f"container:{pod.name}", "--env", f"PGPASSWORD={password}", "--env", "PGCONNECT_TIMEOUT=5",
                      pod.image, "psql", "-X", "-At", "-h", POD_ADDRESS, "-U", user, "-d", app_db, "-c", "SELECT current_user", check=False)
    good = connect(app_role, pod.passwords["password"])
    assert good.returncode == 0 and good.stdout.strip() == app_role, good.stderr
    assert "password authentication failed" in connect(app_role, "wrong").stderr
    assert "pg_hba.conf rejects connection" in connect("postgres", pod.passwords["postgres-password"]).stderr
    # The liveness and readiness probes as rendered.
    assert pod.probe("livenessProbe") == 0 and pod.probe("readinessProbe") == 0

    # Data written by the app role, then the image's stop signal (SIGINT: fast shutdown)
    # with a session still open: it ends the session and stops cleanly.
    pod.sql("CREATE TABLE items (id int PRIMARY KEY, body text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 1000) g", database=app_db, user=app_role)
    session = subprocess.Popen(["docker", "exec", "-i", pod.name, "psql", "-X", "-U", app_role, "-d", app_db],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DOCKER_ENV)
    try:
        eventually(lambda: pod.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()") == "1", 30, "the open session")
        seconds = pod.stop()
    finally:
        session.kill()
        session.wait(timeout=30)
    logs = pod.logs()
    assert "received fast shutdown request" in logs, logs[-2000:]
    assert "database system is shut down" in logs
    assert pod.exit_code() == 0
    assert seconds < 30, f"the fast shutdown took {seconds:.1f}s"
    print(f"\nfast shutdown (docker stop, StopSignal SIGINT) with an open session: {seconds:.2f}s")

    # Restart on the initialised volume: the init container converges the roles with
    # its own temporary server; the entrypoint initialises nothing and runs no script.
    first = pod.name
    pod.start()
    assert "converge-roles: done" in pod.init_logs, pod.init_logs
    logs = pod.logs()
    assert "skipping initialisation" in logs and "docker-entrypoint-initdb.d" not in logs, logs
    assert pod.name != first
    assert pod.sql("SELECT count(*) FROM init_runs", database=app_db) == "1", "an init script ran again"
    assert pod.sql("SELECT count(*), max(id) FROM items", database=app_db) == "1000|1000"

    # The backup CronJob's container against this server: pg_dump, then pg_restore --list.
    backup_dumps(pod, manifests)

    # SIGTERM is PostgreSQL's smart shutdown: with no session open it stops cleanly too.
    seconds = pod.stop("TERM")
    logs = pod.logs()
    assert "received smart shutdown request" in logs and "database system is shut down" in logs, logs[-2000:]
    assert pod.exit_code() == 0
    print(f"smart shutdown (SIGTERM), no session: {seconds:.2f}s")


def backup_dumps(pod: Pod, manifests: list[dict]) -> None:
    cronjob = find(manifests, "CronJob")
    spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    job = spec["containers"][0]
    security = spec["securityContext"]
    backups = pod.root / "backups"
    backups.mkdir()
    os.chown(backups, 0, security["fsGroup"])
    os.chmod(backups, 0o2775)
    secret = pod.root / "backup-secret"
    secret.mkdir()
    (secret / "password").write_text(pod.passwords["password"])
    os.chown(secret / "password", 0, security["fsGroup"])
    os.chmod(secret / "password", 0o440)
    tmp = pod.root / "backup-tmp"
    tmp.mkdir(mode=0o1777)
    os.chmod(tmp, 0o1777)
    dirs = {"backups": backups, "credentials": secret, "tmp": tmp}
    env = {e["name"]: e["value"] for e in job["env"]}
    env["PGHOST"] = POD_ADDRESS  # the Service's name, in the cluster
    args = ["--rm", "--network", f"container:{pod.name}", "--user", f"{security['runAsUser']}:{security['runAsGroup']}", "--group-add", str(security["fsGroup"]),
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    for mount in job["volumeMounts"]:
        args += ["--mount", f"type=bind,source={dirs[mount['name']]},target={mount['mountPath']}{',readonly' if mount.get('readOnly') else ''}"]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    command = job["command"]
    result = docker("run", *args, "--entrypoint", command[0], pod.image, *command[1:], check=False, timeout=300)
    assert result.returncode == 0, f"the backup job failed:\n{result.stdout}{result.stderr}"
    dumps = sorted(backups.glob(f"{env['PGDATABASE']}-*.dump"))
    assert len(dumps) == 1 and dumps[0].stat().st_size > 0, result.stdout
    listing = docker("run", "--rm", "--user", f"{security['runAsUser']}:{security['runAsGroup']}", "--mount", f"type=bind,source={backups},target=/backups,readonly", pod.image,
                     "pg_restore", "--list", f"/backups/{dumps[0].name}").stdout
    assert "TABLE DATA public items" in listing, listing
    print(f"\nbackup job: {dumps[0].name}, {dumps[0].stat().st_size} bytes")


def test_empty_password_refuses_to_initialise(postgres_image, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 999, 999)
    result = docker("run", "--rm", "--mount", f"type=bind,source={data},target=/var/lib/postgresql/data", postgres_image, check=False)
    assert result.returncode != 0
    assert "no superuser password is set" in result.stderr
    assert not any(data.iterdir()), "nothing may be written without a password"
    both = docker("run", "--rm", "--env", "POSTGRES_PASSWORD=a", "--env", "POSTGRES_PASSWORD_FILE=/etc/hostname",
                  "--mount", f"type=bind,source={data},target=/var/lib/postgresql/data", postgres_image, check=False)
    assert both.returncode != 0 and "are exclusive" in both.stderr, both.stderr
    assert not any(data.iterdir())


def test_root_start_drops_to_postgres_and_runs_init_files(postgres_image, tmp_path):
    """The official image's other documented paths: started as root, POSTGRES_* defaults,
    POSTGRES_INITDB_ARGS, a sourced .sh, a .sql.gz, an ignored file."""
    initdb = tmp_path / "initdb"
    initdb.mkdir()
    (initdb / "10-sourced.sh").write_text('echo "sourced as $(id -u), db $POSTGRES_DB"\n')
    os.chmod(initdb / "10-sourced.sh", 0o644)
    import gzip as gz
    (initdb / "20-table.sql.gz").write_bytes(gz.compress(b"CREATE TABLE from_gz (x int);\n"))
    (initdb / "30-ignored.txt").write_text("not run\n")
    name = f"pg-root-{uuid.uuid4().hex[:8]}"
    docker("run", "--detach", "--name", name, "--user", "0:0", "--env", "POSTGRES_PASSWORD=secret", "--env", "POSTGRES_USER=admin",
           "--env", "POSTGRES_INITDB_ARGS=--data-checksums --auth-local=trust", "--mount", f"type=bind,source={initdb},target=/docker-entrypoint-initdb.d,readonly",
           postgres_image)
    try:
        def ready():
            return docker("exec", name, "pg_isready", "-U", "admin", "-d", "admin", check=False).returncode == 0 and \
                "initialisation complete" in docker("logs", name).stderr
        eventually(ready, 180, "the root-started server")
        output = docker("logs", name)
        logs = output.stdout + output.stderr
        assert "sourced as 999, db admin" in logs
        assert "ignoring /docker-entrypoint-initdb.d/30-ignored.txt" in logs
        query = docker("exec", "--user", "999", name, "psql", "-X", "-At", "-U", "admin", "-d", "admin", "-c",
                       "SELECT current_setting('data_checksums'), (SELECT count(*) FROM pg_tables WHERE tablename = 'from_gz'), "
                       "(SELECT rolsuper FROM pg_roles WHERE rolname = 'admin')").stdout.strip()
        assert query == "on|1|t"
        status = docker("exec", name, "cat", "/proc/1/status").stdout
        assert [line.split()[1] for line in status.splitlines() if line.startswith("Uid:")] == ["999"]
    finally:
        docker("rm", "--force", name, check=False)


def test_volume_permissions_init_container(postgres_image, tmp_path):
    """Storage that ignores fsGroup: a root-owned 0755 volume. The chart's opt-in init
    container (root with CHOWN and DAC_OVERRIDE only) gives it to 999, then the pod starts."""
    # Without the init container, such a volume stops PostgreSQL from starting.
    plain = Pod(render(), postgres_image, tmp_path / "plain")
    os.chown(plain.dirs["data"], 0, 0)
    os.chmod(plain.dirs["data"], 0o755)
    try:
        with pytest.raises(AssertionError, match="PostgreSQL exited"):
            plain.start()
    finally:
        plain.remove()

    pod = Pod(render("--set", "postgresql.volumePermissions.enabled=true"), postgres_image, tmp_path / "fixed")
    os.chown(pod.dirs["data"], 0, 0)
    os.chmod(pod.dirs["data"], 0o755)
    try:
        pod.start()
        assert "volume-permissions: /var/lib/postgresql/data now owned by 999:999" in pod.init_logs, pod.init_logs
        st = pod.dirs["data"].stat()
        assert (st.st_uid, st.st_gid) == (999, 999)
        assert (pod.pgdata / "PG_VERSION").read_text().strip() == "17"
    finally:
        pod.remove()


# ---- TLS: the chart's args with a certificate, and the reloader sidecar ---------------

def _certificate(directory: Path, common_name: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    for file, data in (("tls.crt", cert.public_bytes(serialization.Encoding.PEM)),
                       ("tls.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))):
        partial = directory / f".{file}.new"
        partial.write_bytes(data)
        os.chown(partial, 0, 999)
        os.chmod(partial, 0o440)
        partial.rename(directory / file)


SERVED_CERTIFICATE = """
import socket, ssl, struct, sys
from cryptography import x509
sock = socket.create_connection((sys.argv[1], 5432), timeout=10)
sock.sendall(struct.pack("!II", 8, 80877103))  # PostgreSQL's SSLRequest
assert sock.recv(1) == b"S", "the server refused TLS"
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with context.wrap_socket(sock) as tls:
    print(x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).subject.rfc4514_string())
"""


def served_certificate(pod: Pod) -> str:
    """The subject of the certificate PostgreSQL serves, read in the pod's network namespace."""
    pid = docker("inspect", "-f", "{{.State.Pid}}", pod.name).stdout.strip()
    result = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", SERVED_CERTIFICATE, POD_ADDRESS],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_tls_args_and_reloader(postgres_image, tmp_path):
    manifests = render("--set", "postgresql.tls.enabled=true", "--set", "postgresql.tls.existingSecret=pg-tls")
    pod = Pod(manifests, postgres_image, tmp_path)
    try:
        _certificate(pod.dirs["tls"], "first")
        pod.start()
        assert pod.sql("SHOW ssl") == "on"
        over_tls = docker("exec", "--env", "PGSSLMODE=require", pod.name, "psql", "-X", "-At", "-h", POD_ADDRESS, "-U", "postgres", "-d", "postgres",
                          "-c", "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()", check=False)
        # postgres over the network is rejected by pg_hba.conf, but only after TLS was set up.
        assert "pg_hba.conf rejects connection" in over_tls.stderr and "SSL encryption" in over_tls.stderr, over_tls.stderr
        assert served_certificate(pod) == "CN=first"
        # The sidecar, as rendered, polling every second: a renewed certificate is reloaded.
        sidecar = container(pod.spec, "tls-reloader", init=True)
        name = f"pg-reloader-{uuid.uuid4().hex[:8]}"
        pod.names.append(name)
        docker("run", "--detach", *pod._run_args(sidecar, name, {"RELOAD_INTERVAL": "1"}), "--entrypoint", sidecar["command"][0],
               pod.image, *sidecar["command"][1:])
        eventually(lambda: "tls-reloader: watching" in docker("logs", name).stdout, 30, "the reloader to start")
        _certificate(pod.dirs["tls"], "second")
        eventually(lambda: "PostgreSQL reloaded" in docker("logs", name).stdout, 30, "the reloader to reload PostgreSQL")
        assert served_certificate(pod) == "CN=second"
        assert pod.running() and pod.exit_code() == 0, "the reload must not restart PostgreSQL"
    finally:
        pod.remove()


# ---- pause ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pause_image() -> str:
    return load(images.pause())


def test_pause_image_is_tiny_and_static():
    content = images.pause()
    with tarfile.open(content.layer) as tar:
        files = {m.name: m for m in tar.getmembers() if m.isfile()}
    assert set(files) == {"usr/bin/catatonit", "usr/share/doc/catatonit/copyright", "etc/passwd", "etc/group"}
    assert content.config["Entrypoint"] == ["/usr/bin/catatonit", "-P"]
    assert content.layer.stat().st_size < 1_000_000
    print(f"\npause image: layer {content.layer.stat().st_size / 1e3:.0f} kB gzipped")


@pytest.mark.parametrize("signal, exit_code", [("TERM", 0), ("KILL", 137)])
def test_pause_stays_up_until_signalled(pause_image, signal, exit_code):
    name = f"pause-{uuid.uuid4().hex[:8]}"
    docker("run", "--detach", "--name", name, "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", pause_image)
    try:
        def state() -> dict:
            return json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
        # Up, and still up for two seconds of polling (no exit, no restart).
        eventually(lambda: state()["Running"], 30, "pause to run")
        pid = state()["Pid"]
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            current = state()
            assert current["Running"] and current["Pid"] == pid, current
            time.sleep(0.2)
        assert docker("top", name, "-o", "pid,uid,args").stdout.split("\n")[1].split()[1:4] == ["65535", "/usr/bin/catatonit", "-P"]
        started = time.monotonic()
        docker("kill", "--signal", signal, name)
        eventually(lambda: not state()["Running"], 10, f"pause to exit on SIG{signal}")
        assert state()["ExitCode"] == exit_code
        print(f"\npause: SIG{signal} -> exit {exit_code} in {time.monotonic() - started:.2f}s")
    finally:
        docker("rm", "--force", name, check=False)
