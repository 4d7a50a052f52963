"""Checks of the chart's database tier, run by scripts/test-chart.sh.

Usage: python chart_db_checks.py COMMAND --helm HELM --chart CHART [options]
  release-stability --values FILE... [--set-digest DIGEST]
      renders each overlay twice as two consecutive releases (another chart version and
      appVersion, another app image, other app values) and once more with changed
      PostgreSQL values: the PostgreSQL pod template must be byte-for-byte the same across
      the releases, and every workload's selector and the StatefulSet's immutable fields
      (selector, serviceName, volumeClaimTemplates, podManagementPolicy) the same in all
      three renders (helm upgrade could not change them)
  roles --pg-sh PG_SH
      against real PostgreSQL servers (scripts/pg.sh): a volume initialised the way the
      previous chart did (the app role IS the bootstrap superuser, owning everything) is
      converged by the rendered init-container script; a fresh one by the rendered
      /docker-entrypoint-initdb.d script; afterwards the app role is no superuser, cannot
      create roles or databases, owns the database and every object, still logs in with
      its password and can migrate; a second run changes nothing
  backup-restore --pg-sh PG_SH --runbook RUNBOOK
      runs the rendered backup CronJob's command against a real server holding data (and
      checks its retention), restores the dump into a fresh server with the runbook's
      blocks marked `<!-- test: restore -->`, and compares every row of every table

  tls-reload --pg-sh PG_SH
      the rendered tls-reloader sidecar against a real server serving TLS: when the
      mounted certificate is replaced (as a Secret update swaps it), the server serves the
      new one within seconds, without a restart (openssl s_client -starttls postgres)

Needs PyYAML and the openssl command. Exit status 1 on any failed assertion, with the reason.
"""

import argparse
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import yaml

RELEASE = "tasks"
NAMESPACE = "tasks"
APP_PASSWORD = "app-pass-Ω:\\x'1"  # unicode, a colon, a backslash and a quote: escaping is tested
SUPERUSER_PASSWORD = "superuser-pass-2"


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------
def helm_template(helm, chart, args):
    out = subprocess.run([helm, "template", RELEASE, chart, "--namespace", NAMESPACE, *args],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise Failure(f"helm template {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def docs_of(text):
    """(kind, name) -> (parsed document, raw text) of a rendered stream."""
    result = {}
    for raw in re.split(r"(?m)^---\s*$", text):
        doc = yaml.safe_load(raw)
        if doc:
            result[(doc["kind"], doc["metadata"]["name"])] = (doc, raw)
    return result


def canon(obj):
    return json.dumps(obj, sort_keys=True, indent=1)


def find(docs, kind, name=None):
    hits = [v for (k, n), v in docs.items() if k == kind and (name is None or n == name)]
    check(len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}")
    return hits[0]


def raw_block(raw, start, end):
    """The raw lines from the line `start` up to (not including) the line `end`."""
    a = raw.index(start)
    b = raw.index(end, a)
    return raw[a:b]


# ---------------------------------------------------------------------------
# 1. Releases never touch the database
# ---------------------------------------------------------------------------
def selectors(docs):
    sel = {}
    for (kind, name), (doc, _) in docs.items():
        spec = doc.get("spec", {})
        if kind in ("Deployment", "StatefulSet", "PodDisruptionBudget", "ReplicaSet", "DaemonSet"):
            sel[(kind, name)] = spec.get("selector")
        elif kind == "Service":
            sel[(kind, name)] = spec.get("selector")
        elif kind == "NetworkPolicy":
            sel[(kind, name)] = spec.get("podSelector")
    return sel


def immutable_sts(doc):
    s = doc["spec"]
    return {k: s.get(k) for k in ("selector", "serviceName", "volumeClaimTemplates", "podManagementPolicy")}


def release_stability(a):
    work = tempfile.mkdtemp(prefix="chart-releases-")
    try:
        chart_a = os.path.join(work, "a", "tasks")
        chart_b = os.path.join(work, "b", "tasks")
        shutil.copytree(a.chart, chart_a)
        shutil.copytree(a.chart, chart_b)
        meta = yaml.safe_load(open(os.path.join(chart_b, "Chart.yaml")))
        bumped = open(os.path.join(chart_b, "Chart.yaml")).read()
        bumped = re.sub(r"(?m)^version: .*$", "version: 99.1.0", bumped)
        bumped = re.sub(r"(?m)^appVersion: .*$", 'appVersion: "99.2.0"', bumped)
        open(os.path.join(chart_b, "Chart.yaml"), "w").write(bumped)
        check(meta["version"] != "99.1.0", "the chart version is already the bumped one")
        app_changes = [
            "--set", "image.tag=99.2.0",
            "--set", "image.digest=sha256:" + "7" * 64,
            "--set", "replicaCount=3",
            "--set", "config.log.level=warn",
            "--set", "config.database.poolMaxSize=3",
            "--set", "config.database.statementTimeoutMs=7000",
            "--set", "resources.limits.memory=300Mi",
            "--set", "podAnnotations.release-train=next",
            "--set", "commonLabels.release-train=next",
            "--set", "imagePullSecrets[0].name=another-registry",
        ]
        pg_changes = [
            "--set", "postgresql.resources.limits.memory=2Gi",
            "--set", "postgresql.configuration.work_mem=8MB",
            "--set", "postgresql.podAnnotations.changed=yes",
        ]
        checked = 0
        for values in a.values:
            name = os.path.basename(values)
            base = ["-f", values]
            if a.set_digest:
                base += ["--set", f"image.digest={a.set_digest}"]
            first = docs_of(helm_template(a.helm, chart_a, base))
            second = docs_of(helm_template(a.helm, chart_b, base + app_changes))
            third = docs_of(helm_template(a.helm, chart_b, base + app_changes + pg_changes))
            sts = [n for (k, n) in first if k == "StatefulSet"]
            if sts:
                (s1, r1), (s2, r2), (s3, _) = (find(d, "StatefulSet", sts[0]) for d in (first, second, third))
                t1 = raw_block(r1, "\n  template:\n", "\n  volumeClaimTemplates:\n")
                t2 = raw_block(r2, "\n  template:\n", "\n  volumeClaimTemplates:\n")
                check(t1 == t2, f"{name}: a release that changes only the app changes the PostgreSQL pod template:\n"
                      + "\n".join(l for l in __import__("difflib").unified_diff(t1.splitlines(), t2.splitlines(), lineterm="")))
                check(canon(s1["spec"]) == canon(s2["spec"]), f"{name}: the StatefulSet spec differs between app releases")
                check(canon(s1["spec"]["template"]) != canon(s3["spec"]["template"]),
                      f"{name}: changed postgresql.* values did not change the pod template (the comparison sees nothing)")
                for other in (s2, s3):
                    check(canon(immutable_sts(s1)) == canon(immutable_sts(other)),
                          f"{name}: an immutable StatefulSet field changed: {canon(immutable_sts(s1))} -> {canon(immutable_sts(other))}")
                # Everything else PostgreSQL reads is the same too.
                for kind in ("ConfigMap",):
                    for (k, n), (d, _) in first.items():
                        if k == kind and d["metadata"]["labels"].get("app.kubernetes.io/component") == "database":
                            check(canon(d["data"]) == canon(second[(k, n)][0]["data"]), f"{name}: {k}/{n} changed with an app release")
                checked += 1
            # The app does roll (the comparison would see a change).
            d1 = next(v[0] for (k, _), v in first.items() if k == "Deployment")
            d2 = next(v[0] for (k, _), v in second.items() if k == "Deployment")
            check(canon(d1["spec"]["template"]) != canon(d2["spec"]["template"]), f"{name}: the app's pod template did not change (sanity)")
            sel1 = selectors(first)
            for other, label in ((second, "app release"), (third, "PostgreSQL values change")):
                sel2 = selectors(other)
                check(set(sel1) == set(sel2), f"{name}: the set of workloads changed with the {label}")
                for key in sel1:
                    check(canon(sel1[key]) == canon(sel2[key]), f"{name}: the selector of {key} changed with the {label}")
            print(f"{name}: {len(sel1)} selectors stable; "
                  + ("PostgreSQL pod template identical across releases, immutable fields stable" if sts else "no in-chart PostgreSQL"))
        check(checked > 0, "no render had an in-chart PostgreSQL")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


# ---------------------------------------------------------------------------
# Real PostgreSQL servers (scripts/pg.sh)
# ---------------------------------------------------------------------------
class Server:
    def __init__(self, pg_sh, root, name, registry):
        registry.append(self)
        self.pg_sh = pg_sh
        self.bindir = subprocess.run([pg_sh, "bindir"], capture_output=True, text=True, check=True).stdout.strip()
        self.data = os.path.join(root, name)
        os.makedirs(self.data)
        self.port = None
        err = ""
        for _ in range(5):
            port = free_port()
            env = dict(os.environ, PGPASSWORD_TASKS=APP_PASSWORD, PG_SUPERUSER="1", PG_DURABLE="0")
            r = subprocess.run([pg_sh, "start", self.data, str(port)], env=env, capture_output=True, text=True)
            if r.returncode == 0:
                self.port = port
                break
            err = r.stderr
        check(self.port, f"scripts/pg.sh start failed: {err}")
        st = os.stat(self.data)
        self.uid, self.gid = st.st_uid, st.st_gid
        # As in the image: the local socket trusts its users (the pod's own containers).
        hba = os.path.join(self.data, "pg_hba.conf")
        with open(hba, "w") as f:
            f.write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        os.chown(hba, self.uid, self.gid)
        self.sql("SELECT pg_reload_conf()", user="tasks", tcp=True, password=APP_PASSWORD)
        time.sleep(0.3)

    def env(self, **extra):
        e = dict(os.environ, PATH=self.bindir + os.pathsep + os.environ.get("PATH", ""),
                 PGHOST=self.data, PGPORT=str(self.port))
        e.pop("PGPASSWORD", None)
        e.update(extra)
        return e

    def sql(self, sql, user="postgres", db="tasks", tcp=False, password=None, check_rc=True):
        env = self.env()
        if tcp:
            env["PGHOST"] = "127.0.0.1"
            env["PGSSLMODE"] = "disable"
        if password is not None:
            env["PGPASSWORD"] = password
        r = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                            "-U", user, "-d", db, "-c", sql], env=env, capture_output=True, text=True)
        if check_rc and r.returncode != 0:
            raise Failure(f"psql as {user} on {db}: {sql}\n{r.stderr}")
        return r if not check_rc else r.stdout.strip()

    def script(self, sql, user, db="tasks"):
        r = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", db],
                           input=sql, env=self.env(), capture_output=True, text=True)
        check(r.returncode == 0, f"psql script as {user} failed:\n{r.stderr}")

    def as_owner(self, cmd):
        """cmd as the server's user (root cannot run the server)."""
        if os.getuid() == 0:
            return ["runuser", "-u", pwd.getpwuid(self.uid).pw_name, "--", *cmd]
        return cmd

    def stop(self):
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            return
        subprocess.run([self.pg_sh, "stop", self.data, "fast"], capture_output=True)

    def start(self):
        env = dict(os.environ, PG_DURABLE="0")
        r = subprocess.run([self.pg_sh, "start", self.data, str(self.port)], env=env, capture_output=True, text=True)
        check(r.returncode == 0, f"restart failed: {r.stderr}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def migrations_sql(repo):
    d = os.path.join(repo, "crates", "storage", "migrations")
    files = sorted((f for f in os.listdir(d) if re.match(r"V\d+__.*\.sql$", f)), key=lambda f: int(f[1:f.index("__")]))
    check(files, f"no migrations in {d}")
    body = "".join(open(os.path.join(d, f)).read() + "\n" for f in files)
    history = "CREATE TABLE refinery_schema_history (version int4 PRIMARY KEY, name varchar(255), applied_on varchar(255), checksum varchar(255));\n"
    for f in files:
        v, name = f[1:-4].split("__", 1)
        history += f"INSERT INTO refinery_schema_history VALUES ({int(v)}, '{name}', '2026-01-01T00:00:00Z', '{len(name)}');\n"
    return body + history


# Objects of every kind the convergence hands over, and data worth comparing.
EXTRA_OBJECTS = """
CREATE TYPE task_priority AS ENUM ('low', 'high');
CREATE DOMAIN short_text AS text CHECK (char_length(VALUE) < 50);
CREATE TABLE task_notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, task_id uuid REFERENCES tasks(id),
                         body text, priority task_priority, tag short_text, created_at timestamptz DEFAULT now());
CREATE SEQUENCE ticket_numbers START 1000;
CREATE VIEW open_tasks AS SELECT id, title FROM tasks WHERE status <> 'done';
CREATE MATERIALIZED VIEW task_counts AS SELECT status, count(*) AS n FROM tasks GROUP BY status;
CREATE FUNCTION task_title_length(t tasks) RETURNS int LANGUAGE sql AS 'SELECT char_length(t.title)';
CREATE SCHEMA reporting;
CREATE TABLE reporting.daily (day date PRIMARY KEY, created int NOT NULL);
"""

DATA = """
INSERT INTO tasks (id, title, description, status, due_at, created_at, updated_at, version)
SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid,
       'task ' || i || CASE WHEN i % 7 = 0 THEN ' ✓ ünïcødé "quoted" ''single''' ELSE '' END,
       CASE WHEN i % 3 = 0 THEN NULL ELSE E'line one\\nline two\\ttab \\\\ backslash ' || i END,
       (ARRAY['todo', 'in_progress', 'done'])[1 + i % 3],
       CASE WHEN i % 2 = 0 THEN timestamptz '2026-12-01 10:00:00+00' + i * interval '1 hour' END,
       timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute',
       timestamptz '2026-01-02 00:00:00+00' + i * interval '1 minute', 1 + i % 4
FROM generate_series(1, 500) AS i;
INSERT INTO idempotency_keys (key, fingerprint, status_code, headers, body, created_at, completed_at)
SELECT 'key-' || i, decode(md5(i::text), 'hex'), 201, jsonb_build_object('location', '/tasks/' || i, 'n', i),
       convert_to('{"id":' || i || '}', 'UTF8'), timestamptz '2026-01-01 00:00:00+00', NULL
FROM generate_series(1, 50) AS i;
INSERT INTO task_notes (task_id, body, priority, tag)
SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'note ' || i, 'high', 'tag'
FROM generate_series(1, 40) AS i;
SELECT nextval('ticket_numbers') FROM generate_series(1, 5);
INSERT INTO reporting.daily VALUES ('2026-01-01', 3), ('2026-01-02', 5);
REFRESH MATERIALIZED VIEW task_counts;
"""


def rendered(helm, chart, extra):
    return docs_of(helm_template(helm, chart, ["-f", os.path.join(os.path.dirname(chart), "values", "local.yaml"), *extra]))


def converge_files(helm, chart, workdir):
    """The rendered ConfigMap's scripts and hba in workdir, and the init container's env."""
    docs = rendered(helm, chart, [])
    cm = find(docs, "ConfigMap", "tasks-postgresql-config")[0]
    for key in ("converge-roles.sh", "converge-on-start.sh", "pg_hba.conf"):
        check(key in cm["data"], f"the PostgreSQL ConfigMap has no {key}")
        path = os.path.join(workdir, key)
        with open(path, "w") as f:
            f.write(cm["data"][key])
        os.chmod(path, 0o755)
    sts = find(docs, "StatefulSet", "tasks-postgresql")[0]
    init = [c for c in sts["spec"]["template"]["spec"]["initContainers"] if c["name"] == "converge-roles"]
    check(init, "no converge-roles init container")
    env = {e["name"]: e["value"] for e in init[0]["env"]}
    check(init[0]["command"][0].endswith("/converge-on-start.sh"), f"the init container runs {init[0]['command']}")
    mounts = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    items = {i["key"]: i["path"] for i in mounts["initdb"]["configMap"]["items"]}
    check(items == {"converge-roles.sh": "10-converge-roles.sh"}, f"initdb.d gets {items}")
    # The passwords the pod would mount, here as files the server's user can read.
    with open(os.path.join(workdir, "password"), "w") as f:
        f.write(APP_PASSWORD + "\n")
    with open(os.path.join(workdir, "postgres-password"), "w") as f:
        f.write(SUPERUSER_PASSWORD)
    for fn in ("password", "postgres-password"):
        os.chmod(os.path.join(workdir, fn), 0o644)
    os.chmod(workdir, 0o755)
    env["APP_PASSWORD_FILE"] = os.path.join(workdir, "password")
    env["SUPERUSER_PASSWORD_FILE"] = os.path.join(workdir, "postgres-password")
    return env


def assert_converged(srv, label):
    role = srv.sql("SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolcanlogin "
                   "FROM pg_roles WHERE rolname = 'tasks'")
    check(role == "f|f|f|f|f|t", f"{label}: the app role's attributes are {role} (want f|f|f|f|f|t)")
    boot = srv.sql("SELECT rolname, rolsuper FROM pg_roles WHERE oid = 10")
    check(boot == "postgres|t", f"{label}: the bootstrap superuser is {boot}")
    owner = srv.sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'tasks'")
    check(owner == "tasks", f"{label}: database tasks is owned by {owner}")
    foreign = srv.sql("""
        SELECT string_agg(x, ', ') FROM (
          SELECT 'relation ' || c.oid::regclass AS x FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' AND c.relkind IN ('r','p','v','m','S','f','i')
             AND pg_get_userbyid(c.relowner) <> 'tasks'
          UNION ALL SELECT 'function ' || p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' AND pg_get_userbyid(p.proowner) <> 'tasks'
          UNION ALL SELECT 'type ' || t.oid::regtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' AND pg_get_userbyid(t.typowner) <> 'tasks'
          UNION ALL SELECT 'schema ' || nspname FROM pg_namespace
           WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' AND pg_get_userbyid(nspowner) NOT IN ('tasks', 'pg_database_owner')
        ) o""")
    check(foreign == "", f"{label}: objects not owned by the app role: {foreign}")
    # The app logs in over TCP with the password it always had, reads, writes, migrates.
    srv.sql("SELECT count(*) FROM tasks", user="tasks", tcp=True, password=APP_PASSWORD)
    srv.sql("CREATE TABLE migration_probe (id int); ALTER TABLE tasks ADD COLUMN probe int; "
            "ALTER TABLE tasks DROP COLUMN probe; DROP TABLE migration_probe", user="tasks", tcp=True, password=APP_PASSWORD)
    for stmt in ("CREATE ROLE intruder", "CREATE DATABASE intruder", "ALTER ROLE tasks SUPERUSER"):
        r = srv.sql(stmt, user="tasks", tcp=True, password=APP_PASSWORD, check_rc=False)
        check(r.returncode != 0 and ("permission denied" in r.stderr or "must be superuser" in r.stderr), f"{label}: the app role could run {stmt!r}: {r.stderr}")
    # The superuser has its own password (scram), from its own Secret key.
    pw = srv.sql("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'")
    check(pw == "t", f"{label}: the superuser has no SCRAM password")
    print(f"{label}: app role NOSUPERUSER NOCREATEROLE NOCREATEDB, owns database and objects, logs in, migrates; "
          "superuser is postgres with its own password")


def roles(a):
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    root = tempfile.mkdtemp(prefix="chartdb")
    servers = []
    try:
        scripts = os.path.join(root, "scripts")
        os.makedirs(scripts)
        env = converge_files(a.helm, a.chart, scripts)

        # --- An install of the previous chart: the image ran initdb with POSTGRES_USER=tasks,
        # so the app role is the bootstrap superuser and owns everything.
        old = Server(a.pg_sh, root, "old", servers)
        bootstrap = old.sql("SELECT rolname FROM pg_roles WHERE oid = 10", user="tasks")
        old.sql("CREATE ROLE setup SUPERUSER LOGIN", user="tasks", db="postgres")
        old.script(f'ALTER DATABASE tasks OWNER TO "{bootstrap}";\nDROP ROLE tasks;\n'
                   f'ALTER ROLE "{bootstrap}" RENAME TO tasks;\n', user="setup", db="postgres")
        old.script(f"ALTER ROLE tasks PASSWORD '{APP_PASSWORD.replace(chr(39), chr(39) * 2)}';\nDROP ROLE setup;\n",
                   user="tasks", db="postgres")
        old.script(migrations_sql(repo) + EXTRA_OBJECTS + DATA, user="tasks")
        check(old.sql("SELECT rolname, rolsuper FROM pg_roles WHERE oid = 10", user="tasks") == "tasks|t",
              "setup: the app role is not the bootstrap superuser")
        before = table_dump(old, user="tasks")

        # The upgrade: the pod restarts; its init container converges the stopped volume.
        old.stop()
        run_env = old.env(**dict(env, PGDATA=old.data))
        r = subprocess.run(old.as_owner(["env", *(f"{k}={v}" for k, v in run_env.items()),
                                         os.path.join(scripts, "converge-on-start.sh")]),
                           capture_output=True, text=True, cwd=scripts)
        check(r.returncode == 0, f"converge-on-start.sh failed on the old layout:\n{r.stdout}\n{r.stderr}")
        check("renaming it to postgres" in r.stdout, f"the old layout was not detected:\n{r.stdout}")
        check(APP_PASSWORD not in r.stdout + r.stderr and SUPERUSER_PASSWORD not in r.stdout + r.stderr,
              "a password appeared in the script's output")
        log = open(old.data + ".log", errors="replace").read()
        check(APP_PASSWORD not in log and SUPERUSER_PASSWORD not in log, "a password appeared in the server log")
        old.start()
        assert_converged(old, "old layout converged")
        check(table_dump(old) == before, "the data changed during the convergence")
        # Idempotent: the next start changes nothing.
        old.stop()
        r = subprocess.run(old.as_owner(["env", *(f"{k}={v}" for k, v in run_env.items()),
                                         os.path.join(scripts, "converge-on-start.sh")]),
                           capture_output=True, text=True, cwd=scripts)
        check(r.returncode == 0 and "renaming" not in r.stdout, f"second run:\n{r.stdout}\n{r.stderr}")
        old.start()
        assert_converged(old, "old layout, second start")

        # --- A fresh volume: the image's initdb made the superuser postgres and the
        # database (owned by it), then runs converge-roles.sh from initdb.d.
        fresh = Server(a.pg_sh, root, "fresh", servers)
        bootstrap = fresh.sql("SELECT rolname FROM pg_roles WHERE oid = 10", user="tasks")
        fresh.sql("CREATE ROLE setup SUPERUSER LOGIN", user="tasks", db="postgres")
        fresh.script(f'ALTER DATABASE tasks OWNER TO "{bootstrap}";\nDROP ROLE tasks;\n'
                     f'ALTER ROLE "{bootstrap}" RENAME TO postgres;\n', user="setup", db="postgres")
        fresh.script(f"ALTER ROLE postgres PASSWORD '{SUPERUSER_PASSWORD}';\nDROP ROLE setup;\n", user="postgres", db="postgres")
        r = subprocess.run([os.path.join(scripts, "converge-roles.sh")], env=fresh.env(**env), capture_output=True, text=True)
        check(r.returncode == 0 and "creating the application role" in r.stdout, f"converge-roles.sh on a fresh volume:\n{r.stdout}\n{r.stderr}")
        fresh.script(migrations_sql(repo) + EXTRA_OBJECTS, user="tasks")  # the app migrates
        assert_converged(fresh, "fresh install")
        # pg_hba.conf of the chart: the superuser never over the network.
        hba = open(os.path.join(scripts, "pg_hba.conf")).read()
        check(re.search(r"(?m)^host\s+all\s+postgres\s+all\s+reject", hba), "pg_hba.conf lets the superuser log in over the network")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


def table_dump(srv, user="postgres", db="tasks"):
    """Every row of every table and every sequence's position, ordered, as text."""
    tables = srv.sql("SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE c.relkind IN ('r', 'm') AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' ORDER BY 1",
                     user=user, db=db).split("\n")
    out = {}
    for t in tables:
        out[t] = srv.sql(f"SELECT coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '') FROM {t} AS r", user=user, db=db)
    seqs = srv.sql("SELECT format('%I.%I', schemaname, sequencename) || '=' || coalesce(last_value::text, 'null') "
                   "FROM pg_sequences WHERE schemaname NOT LIKE 'pg\\_%' ORDER BY 1", user=user, db=db)
    out["<sequences>"] = seqs
    return out


# ---------------------------------------------------------------------------
# 5. Backups that restore
# ---------------------------------------------------------------------------
def runbook_blocks(path):
    text = open(path).read()
    blocks = re.findall(r"<!-- test: restore -->\s*\n\s*```sh\n(.*?)\n\s*```", text, re.S)
    check(len(blocks) >= 2, f"{path}: fewer than two blocks marked <!-- test: restore -->")
    return [re.sub(r"(?m)^   ", "", b) for b in blocks]


def backup_restore(a):
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    root = tempfile.mkdtemp(prefix="chartdb")
    servers = []
    try:
        docs = rendered(a.helm, a.chart, ["--set", "backup.enabled=true", "--set", "backup.retentionDays=7"])
        cron = find(docs, "CronJob", "tasks-backup")[0]
        check(cron["spec"]["concurrencyPolicy"] == "Forbid", "the backup CronJob allows concurrent runs")
        job = cron["spec"]["jobTemplate"]["spec"]
        for k in ("activeDeadlineSeconds", "backoffLimit"):
            check(k in job, f"the backup Job has no {k}")
        check("startingDeadlineSeconds" in cron["spec"], "the backup CronJob has no startingDeadlineSeconds")
        pod = job["template"]["spec"]
        c = pod["containers"][0]
        sts = find(docs, "StatefulSet", "tasks-postgresql")[0]
        check(c["image"] == sts["spec"]["template"]["spec"]["containers"][0]["image"], "the backup image is not PostgreSQL's")
        sc = c["securityContext"]
        check(sc.get("readOnlyRootFilesystem") and sc.get("runAsNonRoot") and sc["capabilities"]["drop"] == ["ALL"]
              and sc["seccompProfile"]["type"] == "RuntimeDefault" and not sc.get("allowPrivilegeEscalation"),
              f"the backup container is not hardened: {sc}")
        check(c.get("resources", {}).get("limits"), "the backup container has no limits")
        np = find(docs, "NetworkPolicy", "tasks-postgresql")[0]
        peers = [p.get("podSelector", {}).get("matchLabels", {}) for rule in np["spec"]["ingress"] for p in rule.get("from", [])]
        check(any(p.get("app.kubernetes.io/component") == "backup" for p in peers), "PostgreSQL's NetworkPolicy does not admit the backup pods")
        check(c["command"][:2] == ["/bin/sh", "-c"], f"unexpected backup command {c['command'][:2]}")
        script = c["command"][2]
        env = {e["name"]: e["value"] for e in c["env"]}
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        check(env["BACKUP_DIR"] == mounts["backups"], "BACKUP_DIR is not the backup volume")

        src = Server(a.pg_sh, root, "source", servers)
        src.sql("CREATE ROLE postgres SUPERUSER LOGIN", user="tasks", db="postgres")
        src.sql("ALTER ROLE tasks NOSUPERUSER", user="postgres", db="postgres")
        src.script(migrations_sql(repo) + EXTRA_OBJECTS + DATA, user="tasks")

        backups = os.path.join(root, "backups")
        tmp = os.path.join(root, "tmp")
        os.makedirs(backups)
        os.makedirs(tmp)
        pwfile = os.path.join(root, "app-password")
        with open(pwfile, "w") as f:
            f.write(APP_PASSWORD + "\n")
        # Retention: a dump older than 7 days goes, younger ones and other files stay.
        now = time.time()
        stale = os.path.join(backups, "tasks-20200101T000000Z.dump")
        young = os.path.join(backups, "tasks-20261201T000000Z.dump")
        leftover = os.path.join(backups, ".tasks-20200102T000000Z.dump.partial")
        other = os.path.join(backups, "notes-20200101T000000Z.dump")
        for p, age_days in ((stale, 8), (young, 6), (leftover, 9), (other, 30)):
            open(p, "w").write("x")
            os.utime(p, (now - age_days * 86400, now - age_days * 86400))
        run_env = dict(src.env(), **env)
        run_env.update(PGHOST="127.0.0.1", PGPORT=str(src.port), PGPASSWORD_FILE=pwfile, BACKUP_DIR=backups, TMPDIR=tmp)
        run_env.pop("PGSSLROOTCERT", None)
        t0 = time.time()
        r = subprocess.run(["/bin/sh", "-c", script], env=run_env, capture_output=True, text=True)
        check(r.returncode == 0, f"the rendered backup command failed:\n{r.stdout}\n{r.stderr}")
        check(APP_PASSWORD not in r.stdout + r.stderr, "the password appeared in the backup's output")
        dumps = sorted(f for f in os.listdir(backups) if re.match(r"tasks-\d{8}T\d{6}Z\.dump$", f) and f not in
                       (os.path.basename(young),))
        check(len(dumps) == 1, f"expected one new dump, found {dumps} in {os.listdir(backups)}")
        check(not os.path.exists(stale) and not os.path.exists(leftover), "retention kept a dump older than backup.retentionDays")
        check(os.path.exists(young) and os.path.exists(other), "retention deleted a younger dump or another database's")
        dump = os.path.join(backups, dumps[0])
        print(f"backup: rendered command wrote {dumps[0]} ({os.path.getsize(dump)} bytes) in {time.time() - t0:.1f}s; retention ok")
        # A failing backup fails the Job (non-zero exit): a wrong password.
        with open(pwfile, "w") as f:
            f.write("wrong\n")
        r = subprocess.run(["/bin/sh", "-c", script], env=run_env, capture_output=True, text=True)
        check(r.returncode != 0, "a backup that could not connect exited 0 (the Job would not fail)")
        finals = [f for f in os.listdir(backups) if re.match(r"tasks-\d{8}T\d{6}Z\.dump$", f)]
        check(len(finals) == 2, f"a failed backup left a dump under a final name: {sorted(finals)}")

        # A fresh server laid out like the chart's (superuser postgres, app role tasks
        # owning an already migrated, different database).
        dst = Server(a.pg_sh, root, "restored", servers)
        dst.sql("CREATE ROLE postgres SUPERUSER LOGIN", user="tasks", db="postgres")
        dst.sql("ALTER ROLE tasks NOSUPERUSER NOCREATEDB", user="postgres", db="postgres")
        dst.script(migrations_sql(repo) + "INSERT INTO tasks VALUES (gen_random_uuid(), 'only here', NULL, 'todo', NULL, now(), now(), 1);",
                   user="tasks")
        renv = dst.env(DUMP=dump, DB="tasks", APP_ROLE="tasks")
        for i, block in enumerate(runbook_blocks(a.runbook), 1):
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=renv, capture_output=True, text=True)
            check(r.returncode == 0, f"runbook block {i} failed:\n{block}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}")
        after = table_dump(dst)
        source = table_dump(src)
        check(set(after) == set(source), f"tables differ: {sorted(set(source) ^ set(after))}")
        for t in source:
            check(after[t] == source[t], f"{t}: the restored rows differ from the source")
        rows = sum(len(v.splitlines()) for k, v in source.items() if k != "<sequences>")
        owners = dst.sql("SELECT string_agg(DISTINCT pg_get_userbyid(c.relowner), ',') FROM pg_class c JOIN pg_namespace n "
                         "ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'reporting') AND c.relkind IN ('r','S','v','m')")
        check(owners == "tasks", f"restored objects are owned by {owners}")
        kept = dst.sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'tasks\\_before\\_%'")
        check(kept == "1", "the database before the restore was not kept")
        dst.sql("SELECT count(*) FROM tasks", user="tasks", tcp=True, password=APP_PASSWORD)
        print(f"restore: runbook blocks restored {len(source) - 1} tables ({rows} rows) and sequences equal to the source; "
              "objects owned by the app role; the previous database kept")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


# ---------------------------------------------------------------------------
# 3. TLS renewals reach the server: the reloader sidecar
# ---------------------------------------------------------------------------
def openssl(cwd, *args):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    check(r.returncode == 0, f"openssl {' '.join(args[:3])} failed: {r.stderr}")
    return r.stdout


def make_cert(d, name):
    """A CA-signed server certificate for localhost in d/NAME.{crt,key} (CA in d/ca.*)."""
    if not os.path.exists(os.path.join(d, "ca.crt")):
        openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                "-subj", "/CN=test-ca", "-addext", "basicConstraints=critical,CA:TRUE", "-keyout", "ca.key", "-out", "ca.crt")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
    openssl(d, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
    openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "ext", "-out", f"{name}.crt")


def served_cn(port):
    r = subprocess.run(["openssl", "s_client", "-starttls", "postgres", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"],
                       input="", capture_output=True, text=True, timeout=20)
    m = re.search(r"subject=.*?CN\s*=\s*([\w-]+)", r.stdout)
    return m.group(1) if m else f"<none: {r.stderr.strip()[-200:]}>"


def tls_reload(a):
    root = tempfile.mkdtemp(prefix="chartdb")
    servers, reloader = [], None
    try:
        docs = rendered(a.helm, a.chart, ["--set", "postgresql.tls.enabled=true", "--set", "postgresql.tls.existingSecret=db-tls"])
        sts = find(docs, "StatefulSet", "tasks-postgresql")[0]
        side = [c for c in sts["spec"]["template"]["spec"]["initContainers"] if c["name"] == "tls-reloader"]
        check(side and side[0].get("restartPolicy") == "Always", "no tls-reloader sidecar (an init container with restartPolicy Always)")
        c = side[0]
        check(c["command"][:2] == ["/bin/sh", "-c"], f"unexpected reloader command {c['command'][:2]}")
        env = {e["name"]: e["value"] for e in c["env"]}
        args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
        check(f"ssl_cert_file={env['TLS_CERT_FILE']}" in args, "the reloader watches another file than the server serves")

        srv = Server(a.pg_sh, root, "tlsdata", servers)
        srv.sql("CREATE ROLE postgres SUPERUSER LOGIN", user="tasks", db="postgres")
        tls = os.path.join(root, "certs")
        os.makedirs(tls)
        os.chmod(tls, 0o755)
        make_cert(tls, "first")
        make_cert(tls, "second")
        cert, key = os.path.join(tls, "tls.crt"), os.path.join(tls, "tls.key")

        def install(name):  # as a Secret update does: new files, swapped in at once
            for src, dst in ((f"{name}.crt", cert), (f"{name}.key", key)):
                tmp = dst + ".new"
                shutil.copyfile(os.path.join(tls, src), tmp)
                os.chown(tmp, srv.uid, srv.gid)
                os.chmod(tmp, 0o600)
                os.replace(tmp, dst)
        install("first")
        srv.script(f"ALTER SYSTEM SET ssl_cert_file = '{cert}';\nALTER SYSTEM SET ssl_key_file = '{key}';\n"
                   "ALTER SYSTEM SET ssl = on;\nSELECT pg_reload_conf();\n", user="postgres", db="postgres")
        deadline = time.time() + 10
        while served_cn(srv.port) != "first" and time.time() < deadline:
            time.sleep(0.3)
        check(served_cn(srv.port) == "first", f"the server does not serve the first certificate: {served_cn(srv.port)}")
        session = subprocess.Popen([os.path.join(srv.bindir, "psql"), "-X", "-q", "-U", "postgres", "-d", "postgres"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=srv.env())
        session.stdin.write("SELECT pg_backend_pid();\n")
        session.stdin.flush()

        renv = srv.env(**dict(env, TLS_CERT_FILE=cert, RELOAD_INTERVAL="1"))
        renv["PGHOST"] = srv.data
        reloader = subprocess.Popen(["/bin/sh", "-c", c["command"][2]], env=renv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)
        install("second")
        t0 = time.time()
        while served_cn(srv.port) != "second" and time.time() - t0 < 15:
            time.sleep(0.5)
        took = time.time() - t0
        check(served_cn(srv.port) == "second", f"after the certificate changed the server still serves {served_cn(srv.port)}")
        out, _ = session.communicate("SELECT 'session survived';\n", timeout=10)
        check("session survived" in out, f"an open session did not survive the reload: {out}")
        print(f"tls-reload: the rendered reloader made the server serve the renewed certificate {took:.1f}s after the swap; "
              "an open session stayed")
    finally:
        if reloader:
            reloader.kill()
            reloader.wait()
        for s_ in servers:
            s_.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["release-stability", "roles", "backup-restore", "tls-reload"])
    p.add_argument("--helm", required=True)
    p.add_argument("--chart", required=True)
    p.add_argument("--values", nargs="*", default=[])
    p.add_argument("--set-digest")
    p.add_argument("--pg-sh")
    p.add_argument("--runbook")
    a = p.parse_args()
    a.chart = os.path.abspath(a.chart)
    try:
        if a.command == "release-stability":
            return release_stability(a)
        if a.command == "roles":
            return roles(a)
        if a.command == "tls-reload":
            return tls_reload(a)
        return backup_restore(a)
    except Failure as e:
        print(f"FAILED: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
