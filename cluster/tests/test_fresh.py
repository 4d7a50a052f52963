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


# -- staging on this cluster (fresh.FreshMachine.staging) ------------------------------------

DIGEST = "sha256:" + "b" * 64


def test_the_platform_values_take_postgresql_from_the_registry_by_digest_and_fit_the_static_volumes():
    yaml = __import__("pytest").importorskip("yaml")
    postgres = fresh.postgres_image(cluster.deploy_values(f"10.201.0.1:5000/postgres@{DIGEST}", "17.12"))
    assert postgres == {"registry": "10.201.0.1:5000", "repository": "postgres", "tag": "17.12", "digest": DIGEST}
    values = yaml.safe_load(fresh.staging_values(postgres))
    # Only what this cluster lacks: nothing else of values/staging.yaml is overridden.
    assert values == {"postgresql": {"image": postgres, "persistence": {"size": "5Gi"}}}
    assert fresh.VOLUME_SIZE == "5Gi"  # = the capacity of scenarios.storage_fixtures' volumes


def test_a_values_file_without_a_digest_is_refused():
    import pytest

    with pytest.raises(ValueError):
        fresh.postgres_image('postgresql:\n  image:\n    registry: "x"\n    repository: postgres\n    tag: "17"\n')


def test_the_staging_overlay_still_names_what_the_check_says_does_not_exist_here():
    yaml = __import__("pytest").importorskip("yaml")
    staging = yaml.safe_load((paths.REPO / "deploy" / "helm" / "values" / "staging.yaml").read_text())
    assert staging["auth"]["issuer"] == fresh.STAGING_ISSUER
    assert staging["otel"]["endpoint"] == fresh.STAGING_OTLP_ENDPOINT
    assert staging["postgresql"]["auth"]["existingSecret"] == fresh.STAGING_DB_SECRET
    assert staging["auth"]["apiTokens"]["existingSecret"] == fresh.STAGING_TOKENS_SECRET
    assert staging["tests"]["apiToken"]["existingSecret"] == fresh.STAGING_TEST_TOKEN_SECRET
    # The platform's values live outside the clone: the recipe refuses a dirty tree.
    assert not fresh.STAGING_VALUES.startswith(fresh.CLONE + "/")


def test_minted_tokens_are_read_as_api_token_sh_reads_them():
    import pytest

    output = ("token (shown once, store it now): tkn_AbC_12-x\nline for the auth.api_tokens Secret key:\n"
              f"helm-test sha256:{'c' * 64} tasks:read,tasks:write\n")
    assert fresh.minted(output) == ("tkn_AbC_12-x", f"helm-test sha256:{'c' * 64} tasks:read,tasks:write")
    with pytest.raises(ValueError):
        fresh.minted("cannot mint a token: bad scope\n")


def test_the_digest_is_the_one_docker_push_reported_for_that_repository():
    repository = "127.0.0.1:5001/fresh-machine/tasks-server"
    output = (f"+ docker push other.example/x/tasks-server:1\n1: digest: sha256:{'1' * 64} size: 528\n"
              f"+ docker push {repository}:abc\nThe push refers to repository [{repository}]\n"
              f"abc: digest: {DIGEST} size: 1234\n+ helm upgrade --install tasks\n")
    assert fresh.pushed_digest(output, repository) == DIGEST
    assert fresh.pushed_digest(output.replace(f"abc: digest: {DIGEST} size: 1234\n", ""), repository) is None


def test_helm_history_and_helm_test_are_read_strictly():
    history = [{"revision": 1, "status": "superseded", "description": "Install complete"},
               {"revision": 2, "status": "superseded", "description": "Upgrade complete"},
               {"revision": 3, "status": "deployed", "description": "Rollback to 1"}]
    assert fresh.rolled_back(history, to=1)
    assert not fresh.rolled_back(history, to=2)
    assert not fresh.rolled_back(history[:2], to=1)
    assert not fresh.rolled_back([*history[:2], {**history[2], "status": "failed"}], to=1)
    assert not fresh.rolled_back([], to=1)
    ran = "+ helm test tasks --kube-context c\nTEST SUITE:     tasks-test\nPhase:          Succeeded\n"
    assert fresh.helm_test_passed(ran)
    assert not fresh.helm_test_passed(ran.replace("Succeeded", "Failed"))
    assert not fresh.helm_test_passed("+ helm test tasks\nError: timed out\n")
    assert not fresh.helm_test_passed("Phase:          Succeeded\n")  # no helm test in this output


def test_the_pushed_image_is_deleted_from_the_registry(tmp_path):
    import http.server
    import threading

    manifests = {f"/v2/fresh-machine/tasks-server/manifests/{DIGEST}"}

    class Registry(http.server.BaseHTTPRequestHandler):
        def do_DELETE(self):
            found = self.path in manifests
            manifests.discard(self.path)
            self.send_response(202 if found else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self):
            self.send_response(200 if self.path in manifests else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        assert fresh.delete_manifest(address, "fresh-machine/tasks-server", DIGEST)
        assert not manifests
        Registry.do_DELETE = lambda self: (self.send_response(405), self.send_header("Content-Length", "0"), self.end_headers())
        manifests.add(f"/v2/fresh-machine/tasks-server/manifests/{DIGEST}")
        assert not fresh.delete_manifest(address, "fresh-machine/tasks-server", DIGEST)  # still there: not gone
    finally:
        server.shutdown()
        server.server_close()
