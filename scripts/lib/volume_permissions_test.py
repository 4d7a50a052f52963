"""postgresql.volumePermissions: rendered least-privilege, and proven to need exactly it
(called by scripts/test-chart.sh).

Usage: python volume_permissions_test.py HELM CHART BASE_VALUES

Checks:
  - off by default: no volume-permissions init container;
  - when enabled it is the first init container, mounts only the data volume, runs as
    UID 0 with every capability dropped but CHOWN and DAC_OVERRIDE, no privilege
    escalation, read-only root filesystem, RuntimeDefault seccomp, resource limits;
    the PostgreSQL container and the pod stay non-root;
  - the rendered script, run for real (as root, through setpriv, with exactly the
    rendered capabilities as the bounding set) on a data directory that storage
    ignoring fsGroup would leave behind (root-owned volume, PGDATA 0700 owned by another
    UID), hands every file to runAsUser:fsGroup; run again it changes nothing; and with
    either capability removed it fails: each one is needed, no more is granted.
The run needs root and util-linux's setpriv: without them it is a SKIP, a FAIL under
CI=true. Prints PASS/FAIL/SKIP per check and ends with "N passed, M failed[, K skipped]".
"""

import os
import shutil
import subprocess
import sys
import tempfile

import yaml

MOUNT = "/var/lib/postgresql/data"
WANT_CAPS = ["CHOWN", "DAC_OVERRIDE"]
IN_CI = os.environ.get("CI") == "true"
results = {"passed": 0, "failed": 0, "skipped": 0}


def check(name, problems):
    if problems:
        results["failed"] += 1
        print(f"FAIL  {name}")
        for p in problems:
            print(f"      | {p}")
    else:
        results["passed"] += 1
        print(f"PASS  {name}")


def skip(name, why):
    if IN_CI:
        check(name, [f"{why} (CI=true: a missing prerequisite is a failure)"])
    else:
        results["skipped"] += 1
        print(f"SKIP  {name} ({why})")


def statefulset(helm, chart, base, *sets):
    cmd = [helm, "template", "tasks", chart, "--namespace", "tasks", "-f", base,
           "--show-only", "templates/postgresql-statefulset.yaml"]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return yaml.safe_load(out.stdout)


def rendered_checks(sts_off, sts_on):
    spec_off, spec = sts_off["spec"]["template"]["spec"], sts_on["spec"]["template"]["spec"]
    names_off = [c["name"] for c in spec_off.get("initContainers", [])]
    check("volumePermissions is off by default", ["volume-permissions rendered"] if "volume-permissions" in names_off else [])
    inits = spec.get("initContainers", [])
    problems = []
    if not inits or inits[0]["name"] != "volume-permissions":
        check("volume-permissions is the first init container", [f"init containers: {[c['name'] for c in inits]}"])
        return None
    check("volume-permissions is the first init container", [])
    c = inits[0]
    sc = c.get("securityContext", {})
    expect = {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False, "privileged": False,
              "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"}}
    for key, want in expect.items():
        if sc.get(key) != want:
            problems.append(f"securityContext.{key} = {sc.get(key)!r}, want {want!r}")
    caps = sc.get("capabilities", {})
    if caps.get("drop") != ["ALL"]:
        problems.append(f"capabilities.drop = {caps.get('drop')}, want [ALL]")
    if sorted(caps.get("add", [])) != WANT_CAPS:
        problems.append(f"capabilities.add = {caps.get('add')}, want {WANT_CAPS}")
    mounts = [(m["name"], m["mountPath"]) for m in c.get("volumeMounts", [])]
    if mounts != [("data", MOUNT)]:
        problems.append(f"volumeMounts {mounts}, want only data at {MOUNT}")
    if not c.get("resources", {}).get("limits"):
        problems.append("no resource limits")
    check("volume-permissions: UID 0 with only CHOWN and DAC_OVERRIDE, no escalation, read-only root", problems)
    problems = []
    if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
        problems.append("the pod's runAsNonRoot is no longer true")
    for other in spec["containers"] + inits[1:]:
        osc = other.get("securityContext", {})
        if osc.get("runAsNonRoot") is not True or osc.get("capabilities", {}).get("add"):
            problems.append(f"container {other['name']} is no longer non-root without capabilities")
    check("every other PostgreSQL container stays non-root with no capability", problems)
    return c


def fixture(root, other_uid):
    """A volume as storage that ignores fsGroup leaves it: root-owned, PGDATA of another UID, 0700."""
    data = os.path.join(root, "data")
    os.makedirs(os.path.join(data, "pgdata", "base", "1"))
    with open(os.path.join(data, "pgdata", "PG_VERSION"), "w") as f:
        f.write("17\n")
    with open(os.path.join(data, "pgdata", "base", "1", "16384"), "w") as f:
        f.write("x")
    for dirpath, dirnames, filenames in os.walk(os.path.join(data, "pgdata")):
        os.chown(dirpath, other_uid, other_uid)
        os.chmod(dirpath, 0o700)
        for fn in filenames:
            os.chown(os.path.join(dirpath, fn), other_uid, other_uid)
            os.chmod(os.path.join(dirpath, fn), 0o600)
    os.chown(data, 0, 0)
    os.chmod(data, 0o755)
    return data


def owners(data):
    seen = set()
    for dirpath, dirnames, filenames in os.walk(data):
        for p in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
            st = os.lstat(p)
            seen.add((st.st_uid, st.st_gid))
    return seen


def run_script(script, data, caps):
    bounding = ",".join(["-all"] + [f"+{c.lower()}" for c in caps])
    cmd = ["setpriv", "--reuid=0", "--regid=0", "--clear-groups", "--inh-caps=-all", f"--bounding-set={bounding}",
           "--no-new-privs", "--", "sh", "-ec", script.replace(MOUNT, data)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def runtime_checks(container, owner):
    name = "the rendered script fixes a wrongly owned data directory with exactly CHOWN + DAC_OVERRIDE"
    if os.geteuid() != 0:
        skip(name, "needs root")
        return
    if not shutil.which("setpriv"):
        skip(name, "setpriv (util-linux) not found")
        return
    script = container["command"][-1]
    caps = container["securityContext"]["capabilities"]["add"]
    with tempfile.TemporaryDirectory() as root:
        os.chmod(root, 0o755)
        data = fixture(root, 4321)
        out = run_script(script, data, caps)
        got = owners(data)
        check(name, [] if out.returncode == 0 and got == {owner} else
              [f"exit {out.returncode}: {out.stderr.strip()} {out.stdout.strip()}", f"owners afterwards: {sorted(got)}"])
        out = run_script(script, data, caps)
        check("run again on a correctly owned volume it changes nothing",
              [] if out.returncode == 0 and "already owned" in out.stdout else [f"exit {out.returncode}: {out.stdout}{out.stderr}"])
    for missing in caps:
        fewer = [c for c in caps if c != missing]
        with tempfile.TemporaryDirectory() as root:
            os.chmod(root, 0o755)
            data = fixture(root, 4321)
            out = run_script(script, data, fewer)
            ok = out.returncode != 0 and owners(data) != {owner}
            check(f"without {missing} (only {fewer}) it fails: the capability is needed",
                  [] if ok else [f"exit {out.returncode}; owners {sorted(owners(data))}"])


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    helm, chart, base = sys.argv[1:]
    try:
        off = statefulset(helm, chart, base)
        on = statefulset(helm, chart, base, "postgresql.volumePermissions.enabled=true")
    except RuntimeError as e:
        check("the StatefulSet renders with and without volumePermissions", [str(e)])
        off = on = None
    if on is not None:
        container = rendered_checks(off, on)
        if container is not None:
            psc = on["spec"]["template"]["spec"]["securityContext"]
            runtime_checks(container, (psc["runAsUser"], psc["fsGroup"]))
    tail = f", {results['skipped']} skipped" if results["skipped"] else ""
    print(f"{results['passed']} passed, {results['failed']} failed{tail}")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
