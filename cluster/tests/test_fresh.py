"""The pure parts of the fresh-machine recipes and of deploy-local on this cluster:
what the fresh machine is given (and what not), how image names reach the nodes, the
values file ``up`` writes for ``LOCAL_CLUSTER=tasks just deploy-local``."""

from pathlib import Path

from localcluster import cluster, fresh, images, node, paths


def mounts(args: list[str]) -> dict[str, str]:
    """target -> source:mode of every --volume."""
    found = {}
    for flag, value in zip(args, args[1:]):
        if flag == "--volume":
            source, target, mode = value.rsplit(":", 2)
            found[target] = f"{source}:{mode}"
    return found


def envs(args: list[str]) -> dict[str, str]:
    return dict(value.split("=", 1) for flag, value in zip(args, args[1:]) if flag == "--env")


def test_the_fresh_machine_gets_the_toolchain_and_the_cluster_and_nothing_of_the_checkout_but_git():
    args = fresh.run_arguments("m", "tasks-fresh-machine:k", docker_host="unix:///x/docker.sock",
                               rustup_home=Path("/r/.rustup"), cargo_home=Path("/r/.cargo"),
                               environ={"CARGO_BUILD_JOBS": "1", "PATH": "/host/only"},
                               machine_ca=Path("/usr/local/share/ca-certificates"), pip_conf=Path("/etc/pip.conf"))
    found = mounts(args)
    # The checkout only read-only, to be cloned; of what is under it, only the cluster's
    # state, never .tools, .local or target/ (the build's target directory is cached per machine).
    assert found[fresh.CHECKOUT_MOUNT] == f"{paths.REPO}:ro"
    under_checkout = {target for target, source in found.items() if source.startswith(f"{paths.REPO}/")}
    assert under_checkout <= {str(paths.STATE)}, under_checkout
    assert str(fresh.target_dir()).startswith(f"{paths.CACHE}/")
    # The toolchain and the cluster at the same paths (kubeconfig paths, node socket names).
    for same in ("/r/.rustup", "/r/.cargo", "/x/docker.sock", str(paths.STATE), str(node.RUN_ROOT), str(fresh.target_dir())):
        assert found[same] == f"{same}:rw"
    assert found["/etc/pip.conf"] == "/etc/pip.conf:ro"
    env = envs(args)
    assert env["CLUSTER_STATE_DIR"] == str(paths.STATE)
    assert env["DOCKER_HOST"] == "unix:///x/docker.sock"
    assert env["CARGO_BUILD_JOBS"] == "1"
    # The release build is made cheap through Cargo's environment, never by changing the recipe.
    assert {key: env[key] for key in fresh.BUILD_PROFILE} == fresh.BUILD_PROFILE
    assert all(key.startswith("CARGO_PROFILE_RELEASE_") for key in fresh.BUILD_PROFILE)
    # The host's PATH (its .tools, its docker) is not passed: the machine's own PATH and cargo's bin.
    assert env["PATH"].split(":")[0] == "/r/.cargo/bin" and "/host/only" not in env["PATH"]
    assert "--privileged" not in args and args[args.index("--network") + 1] == "host"


def test_the_fresh_machine_image_holds_only_what_the_readme_assumes():
    for package in ("musl-tools", "docker.io", "containerd", "kubectl", "helm"):
        assert package not in images.FRESH_MACHINE_PACKAGES
    for tool in ("x86_64-linux-musl-gcc", "docker", "helm", "kubectl", "just", "ctr"):
        assert tool in fresh.ABSENT


def test_image_tag_and_present_tools_are_read_from_the_output():
    assert fresh.image_tag("+ docker build ...\nSuccessfully tagged x\ntasks-server:0.1.0-abc-dirty\n") == "tasks-server:0.1.0-abc-dirty"
    assert fresh.image_tag("ensure-tools: FAILED to install musl: ...\n") is None
    assert fresh.present_tools("PRESENT docker /usr/bin/docker\nnoise\nPRESENT helm /x/helm\n") == ["docker", "helm"]


def test_docker_names_are_normalized_as_containerd_and_the_kubelet_do():
    assert cluster.normalized_reference("tasks-server:dev-0123") == "docker.io/library/tasks-server:dev-0123"
    assert cluster.normalized_reference("tasks-server") == "docker.io/library/tasks-server:latest"
    assert cluster.normalized_reference("acme/tasks:1") == "docker.io/acme/tasks:1"
    assert cluster.normalized_reference("10.201.0.1:5000/tasks:1") == "10.201.0.1:5000/tasks:1"
    assert cluster.normalized_reference("localhost/tasks:1") == "localhost/tasks:1"


def test_deploy_values_point_postgresql_at_the_cluster_registry_by_digest():
    digest = "sha256:" + "a" * 64
    text = cluster.deploy_values(f"10.201.0.1:5000/postgres@{digest}", "17.12")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == ["postgresql:", "  image:", '    registry: "10.201.0.1:5000"', "    repository: postgres",
                     '    tag: "17.12"', f'    digest: "{digest}"']


def test_the_fresh_machine_step_runs_unless_switched_off(monkeypatch):
    from localcluster import __main__ as entry

    monkeypatch.delenv("CLUSTER_FRESH_MACHINE", raising=False)
    assert callable(entry.fresh_machine_step())
    monkeypatch.setenv("CLUSTER_FRESH_MACHINE", "0")
    assert entry.fresh_machine_step() is None
