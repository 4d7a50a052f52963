"""Check the reusable crates as scripts/test-package.sh packaged them (`cargo package`).

For each crate: the .crate exists and is from this run, its manifest carries the
metadata crates.io and docs.rs show and its README is inside, cargo verified it (built
the unpacked package), no normal dependency needs a newer Rust than its rust-version, and
none is a workspace crate outside the packaged set. Prints PASS/FAIL per crate and
"package: N passed, M failed"; exits 1 on any failure or when cargo failed.

Usage: python package_checks.py PACKAGE_LOG METADATA_JSON CARGO_STATUS CRATE...
  PACKAGE_LOG    cargo package's output; a file named "started" next to it marks the
                 start of the run (older .crate files are left-overs)
  METADATA_JSON  `cargo metadata --format-version 1` for the host platform
  CARGO_STATUS   cargo package's exit status
"""

import json
import os
import re
import sys
import tarfile

if len(sys.argv) < 5:
    sys.exit(__doc__)
log_path, metadata_path, cargo_status, *crates = sys.argv[1:]
started = os.path.getmtime(os.path.join(os.path.dirname(log_path), "started"))
log = open(log_path, encoding="utf-8", errors="replace").read()
try:
    meta = json.load(open(metadata_path))
except ValueError:
    meta = {"packages": [], "resolve": {"nodes": []}, "target_directory": "target"}
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
workspace = {packages[i]["name"] for i in meta.get("workspace_members", []) if i in packages}
REQUIRED = ["description", "license", "repository", "homepage", "readme",
            "keywords", "categories", "rust-version"]

def version_tuple(text):
    parts = [int(x) for x in re.findall(r"\d+", text or "0")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))

def verified(name):
    """Whether cargo compiled the unpacked package: its `Verifying` section has a
    `Finished` line before the next section starts."""
    match = re.search(rf"^\s*Verifying {re.escape(name)} v\S+.*?$(.*?)(?=^\s*(?:Verifying|Packaging) |\Z)",
                      log, re.M | re.S)
    return bool(match and re.search(r"^\s*Finished ", match.group(1), re.M))

def normal_closure(root):
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for dep in nodes.get(node, {}).get("deps", []):
            if any(k["kind"] is None for k in dep["dep_kinds"]):
                stack.append(dep["pkg"])
    seen.discard(root)
    return [packages[i] for i in seen]

passed = failed = 0
for name in crates:
    problems, facts = [], []
    package = next((p for p in packages.values() if p["name"] == name), None)
    if package is None:
        problems.append("not a workspace package")
    else:
        version = package["version"]
        found = re.search(rf"Packaging {re.escape(name)} v\S+[^\n]*\n(?:\s*Updating[^\n]*\n)*\s*Packaged (\d+) files", log)
        path = f"{meta['target_directory']}/package/{name}-{version}.crate"
        try:
            if os.path.getmtime(path) < started:
                raise OSError(f"{path} is left over from an earlier run")
            with tarfile.open(path) as crate:
                members = crate.getnames()
                manifest = crate.extractfile(f"{name}-{version}/Cargo.toml").read().decode()
            facts.append(f"packaged ({found.group(1) if found else len(members)} files)")
            missing = [k for k in REQUIRED if not re.search(rf"^{re.escape(k)} = \S", manifest, re.M)]
            if missing:
                problems.append("manifest lacks " + ", ".join(missing))
            readme = re.search(r'^readme = "([^"]+)"', manifest, re.M)
            if readme and f"{name}-{version}/{readme.group(1)}" not in members:
                problems.append(f"{readme.group(1)} is not in the package")
            if not missing:
                facts.append("metadata complete")
        except (OSError, KeyError, tarfile.TarError) as error:
            problems.append(f"no package: {error}")
        if int(cargo_status) == 0 or verified(name):
            facts.append("built from the .crate")
        else:
            problems.append("verification did not finish (see cargo's output above)")
        msrv = package.get("rust_version")
        if not msrv:
            problems.append("no rust-version")
        deps = normal_closure(package["id"])
        newer = sorted(f"{d['name']} {d['version']} (rust {d['rust_version']})" for d in deps
                       if d.get("rust_version") and version_tuple(d["rust_version"]) > version_tuple(msrv))
        if newer:
            problems.append(f"dependencies need a newer Rust than {msrv}: " + ", ".join(newer))
        elif msrv:
            facts.append(f"{len(deps)} dependencies within rust {msrv}")
        internal = sorted(d["name"] for d in deps if d["name"] in workspace and d["name"] not in crates)
        if internal:
            problems.append("depends on workspace crates " + ", ".join(internal))
    if problems:
        failed += 1
        print(f"FAIL  {name}: " + "; ".join(problems))
    else:
        passed += 1
        print(f"PASS  {name} {package['version']}: " + ", ".join(facts))
print(f"package: {passed} passed, {failed} failed")
sys.exit(1 if failed or int(cargo_status) else 0)
