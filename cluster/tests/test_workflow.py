"""The kind workflow (.github/workflows/cluster.yml) runs the scenarios through the same
entry point as ``just test-cluster``, so the two cannot drift apart.

Offline and stdlib only: run by pytest, or as ``python3 cluster/tests/test_workflow.py``
(suite test-deploy of ``./just test`` does that, next to actionlint on the same file).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "cluster.yml"
ENTRY = "scripts/cluster.sh test --existing-cluster"

sys.path.insert(0, str(REPO / "cluster"))


def _jobs(text: str) -> dict[str, str]:
    """Job id -> its block of the workflow (the YAML subset this file is written in:
    top-level ``jobs:``, job ids indented by two spaces)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip() == "jobs:")
    jobs: dict[str, list[str]] = {}
    current = None
    for line in lines[start + 1:]:
        if line and not line[0].isspace() and not line.startswith("#"):
            break  # the next top-level key
        match = re.match(r"^  ([A-Za-z0-9_-]+):\s*$", line)
        if match:
            current = match.group(1)
            jobs[current] = []
        elif current is not None:
            jobs[current].append(line)
    return {job: "\n".join(body) for job, body in jobs.items()}


def _commands(block: str) -> list[str]:
    """Shell commands of a job that call scripts/cluster.sh, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if "scripts/cluster.sh" in line and not line.strip().startswith("#")]


def _test_help() -> str:
    from localcluster import __main__ as cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            cli.main(["test", "--help"])
        except SystemExit as exit_:
            assert exit_.code == 0, f"localcluster test --help exited {exit_.code}"
    return out.getvalue()


def test_every_job_runs_the_same_entry_point():
    jobs = _jobs(WORKFLOW.read_text())
    assert jobs, f"no jobs found in {WORKFLOW}"
    for job, block in jobs.items():
        commands = _commands(block)
        assert any(ENTRY in c for c in commands), f"job {job} does not run `{ENTRY}`: {commands}"


def test_the_flags_the_workflow_passes_exist():
    text = WORKFLOW.read_text()
    help_text = _test_help()
    flags = set()
    for block in _jobs(text).values():
        for command in _commands(block):
            flags |= set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", command.split("scripts/cluster.sh", 1)[1]))
    flags |= set(re.findall(r"extra\+=\(([^)]*)\)", text))
    assert {"--existing-cluster", "--registry"} <= flags, flags
    for flag in flags:
        assert flag in help_text, f"the workflow passes {flag}; `localcluster test --help` does not know it"


def test_the_network_policy_job_exists_and_only_it_expects_enforcement():
    text = WORKFLOW.read_text()
    assert len(re.findall(r"^\s+cni: calico\s*$", text, re.MULTILINE)) == 1, "one Calico matrix entry"
    assert "disableDefaultCNI: ${disable_default_cni}" in text
    # The flag is added only on the Calico job (kindnet enforces no NetworkPolicy).
    assert re.search(r'if \[\[ "\$CNI" == calico \]\]; then extra\+=\(--expect-network-policy\); fi', text)
    assert re.search(r"^  CALICO_VERSION: v\d+\.\d+\.\d+$", text, re.MULTILINE), "Calico pinned to a release"


def test_node_images_are_pinned_by_digest_and_cover_several_minors():
    text = WORKFLOW.read_text()
    images = re.findall(r"node-image: (\S+)", text)
    assert images, "no node images in the matrix"
    for image in images:
        assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", image), image
    minors = {re.match(r"kindest/node:v1\.(\d+)\.", image).group(1) for image in images}
    assert len(minors) >= 4, minors
    chart = (REPO / "deploy" / "helm" / "tasks" / "Chart.yaml").read_text()
    floor = int(re.search(r'kubeVersion: ">=1\.(\d+)', chart).group(1))
    assert all(int(m) >= floor for m in minors), f"a node below the chart's kubeVersion floor 1.{floor}: {minors}"


def test_the_local_suite_uses_the_same_script():
    justfile = (REPO / "justfile").read_text()
    recipe = re.search(r"^test-cluster:\n((?:[ \t]+.*\n)+)", justfile, re.MULTILINE)
    assert recipe and "scripts/cluster.sh test" in recipe.group(1), "just test-cluster runs scripts/cluster.sh test"


if __name__ == "__main__":
    failed = 0
    for name, function in sorted((n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)):
        try:
            function()
            print(f"PASS {name}")
        except Exception as error:  # report every test, then fail
            failed += 1
            print(f"FAIL {name}: {type(error).__name__}: {error}")
    sys.exit(1 if failed else 0)
