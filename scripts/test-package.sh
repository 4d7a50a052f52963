#!/usr/bin/env bash
# Packages the reusable crates exactly as crates.io would receive them and checks each:
#   - `cargo package` builds the .crate and verifies it: the crate is unpacked and compiled
#     on its own, against registry versions of its dependencies (all four at once, so a
#     crate depending on another workspace crate is resolved against that one's package);
#   - the packaged manifest carries the metadata crates.io and docs.rs show (description,
#     license, repository, homepage, readme, keywords, categories, rust-version) and the
#     README is inside the package;
#   - no normal dependency (on this platform, as locked) needs a newer Rust than the
#     crate's rust-version, and none is a workspace crate outside the packaged set.
# Prints PASS/FAIL per crate and ends with "package: N passed, M failed".
#
#   scripts/test-package.sh [CRATE...]     (default: the four reusable crates)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CRATES=("$@")
[[ ${#CRATES[@]} -eq 0 ]] && CRATES=(tasks-config tasks-health tasks-telemetry tasks-postgres)

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

args=()
for crate in "${CRATES[@]}"; do args+=(-p "$crate"); done
# Verification compiles each package in the shared target directory, so with a warm
# `cargo test` it costs well under a minute; --locked keeps the workspace lock untouched;
# --allow-dirty because `just test` runs before a commit as well as in CI.
touch "$WORK/started"
cargo package --locked --allow-dirty "${args[@]}" 2>&1 | tee "$WORK/package.log"
cargo_status=${PIPESTATUS[0]}
cargo metadata --locked --format-version 1 \
    --filter-platform "$(rustc -vV | sed -n 's/^host: //p')" >"$WORK/metadata.json" ||
    cargo_status=1

python3 - "$WORK/package.log" "$WORK/metadata.json" "$cargo_status" "${CRATES[@]}" <<'PY'
import json, os, re, sys, tarfile

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
PY
