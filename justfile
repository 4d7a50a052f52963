# Tasks service: every workflow, for humans and CI alike. `just --list` is the menu.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments := true

export PATH := justfile_directory() + "/.tools/bin:" + env_var("HOME") + "/.cargo/bin:" + env_var("PATH")

version := `sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1`
image_repository := env_var_or_default("IMAGE_REPOSITORY", "tasks-server")
local_pg_port := env_var_or_default("LOCAL_PG_PORT", "55432")

# Show this menu.
default:
    @just --list --unsorted

# Run the service on :8080 (API) and :9090 (admin) against a persistent local PostgreSQL (or TASKS_DATABASE__* when set).
run *args:
    #!/usr/bin/env bash
    set -euo pipefail
    if [[ -z "${TASKS_DATABASE__HOST:-}" ]]; then
        scripts/ensure-tools.sh postgres
        PGPASSWORD_TASKS=tasks-dev scripts/pg.sh start .local/pg/data {{local_pg_port}}
        export TASKS_DATABASE__HOST=127.0.0.1 TASKS_DATABASE__PORT={{local_pg_port}} TASKS_DATABASE__PASSWORD=tasks-dev
        export TASKS_DATABASE__SSLMODE=disable
        echo "database: postgres://tasks@127.0.0.1:{{local_pg_port}}/tasks (data in .local/pg/data; stop with: scripts/pg.sh stop .local/pg/data)"
    fi
    export TASKS_LOG__FORMAT="${TASKS_LOG__FORMAT:-pretty}" TASKS_SECRETS_DIR="${TASKS_SECRETS_DIR:-.local/secrets}"
    # Authentication is on: on first run, a development API token for principal local-dev
    # (its line in the secrets dir, the token itself in .local/dev-api-token); kept after.
    cargo build --locked -p tasks-server
    if [[ "${TASKS_SECRETS_DIR}" == .local/secrets && ! -e .local/secrets/auth.api_tokens ]]; then
        source scripts/lib/api_token.sh
        mint_api_token "${CARGO_TARGET_DIR:-target}/debug/tasks-server" local-dev .local/minted tasks:read tasks:write
        mkdir -p .local/secrets
        { echo "# just run: development API tokens (lines from tasks-server mint-token)"; cat .local/minted/line; } >.local/secrets/auth.api_tokens
        mv .local/minted/token .local/dev-api-token
        rm -rf .local/minted
        echo "minted a development API token (principal local-dev) into .local/secrets/auth.api_tokens"
    fi
    echo "API:   http://127.0.0.1:${TASKS_HTTP__PORT:-8080}/v1/tasks  (OpenAPI: /openapi.json)"
    if [[ -s .local/dev-api-token && "${TASKS_SECRETS_DIR}" == .local/secrets ]]; then
        echo "       curl -H \"Authorization: Bearer \$(cat .local/dev-api-token)\" http://127.0.0.1:${TASKS_HTTP__PORT:-8080}/v1/tasks"
    fi
    echo "admin: http://127.0.0.1:${TASKS_ADMIN__PORT:-9090}/livez /readyz /metrics"
    exec cargo run --locked -p tasks-server -- "$@"

# Everything CI runs, with a summary line: lint, Rust tests, packaging, robustness, chart, observability, image, deploy scripts, the real cluster.
test:
    #!/usr/bin/env bash
    set -euo pipefail
    # The cluster suite's tools (Kubernetes, CoreDNS, cosign, cargo-cyclonedx, the
    # PostgreSQL image) are built once per machine; on a new one that is the longest
    # build of the run. Started now at the lowest priority, it takes only the CPU the
    # other suites leave idle; test-cluster waits for what is still building (each tool
    # is built under a lock). Its own process group, so it is stopped with the run.
    if [[ " ${RUN_SUITES_EXCLUDE:-} " != *" test-cluster "* ]]; then
        mkdir -p target
        setsid nice -n 19 scripts/cluster.sh prefetch >target/cluster-prefetch.log 2>&1 &
        prefetch=$!
        trap 'kill -- -"$prefetch" 2>/dev/null || true' EXIT
    fi
    scripts/run-suites.sh lint test-rust test-package test-robustness test-chart test-observability test-image test-deploy test-cluster

# Format check, clippy and rustdoc with warnings denied, hadolint on the Dockerfile, no references to documents outside the repository.
lint:
    scripts/lint.sh

# Format the code.
fmt:
    cargo fmt --all

# Unit, integration and doc tests against a real PostgreSQL the harness starts (and real helm for the chart contract).
test-rust:
    scripts/ensure-tools.sh helm postgres
    cargo test --workspace --locked

# Package the reusable crates (tasks-config, -health, -telemetry, -postgres, -runtime, -auth) as crates.io would get them, build each from its .crate, check metadata and MSRV.
test-package:
    scripts/test-package.sh

# Chart: helm lint (Helm 3 and 4), render every overlay, strict schemas for Kubernetes 1.34-1.37, checkov, negative cases.
test-chart:
    scripts/test-chart.sh

# Alerts and dashboard: promtool rule tests, then a real Prometheus scraping the real service under load evaluates every alert and dashboard query.
test-observability:
    scripts/test-observability.sh

# Build the image from a host-compiled static binary and run it hardened against PostgreSQL.
test-image:
    scripts/test-image.sh

# Build the image tasks-server:<version>-<sha>[-dirty] and print its tag (IMAGE_TARGET=host: from a host-built static binary, no registry needed).
image:
    scripts/image.sh build

# Push the image to ghcr.io/$REGISTRY_OWNER/tasks-server:<tag> (REGISTRY overrides ghcr.io; run docker login first).
image-push:
    scripts/image.sh push

# Print the OpenAPI document generated from the code.
openapi:
    @cargo run --quiet --locked -p tasks-server -- openapi

# Regenerate docs/openapi.json from the code (a test fails when it drifts).
openapi-update:
    cargo run --quiet --locked -p tasks-server -- openapi > docs/openapi.json

# Robustness: hostile bodies, limits, unicode, slow clients, database outage, and schemathesis fuzzing of /openapi.json.
test-robustness:
    scripts/test-robustness.sh

# Benchmarks (not in CI): release build, PostgreSQL with 10,000 tasks, wrk vs minimal baselines and pgbench; table, target/bench/results.json, chart.svg.
bench:
    scripts/bench.sh

# ===================================================================================
# Deploy workflows and the real test cluster (scripts/deploy-*.sh, scripts/cluster.sh).
# Each prints every command before running it; DRY_RUN=1 prints without running.
# ===================================================================================

# Build the image, load it into minikube (LOCAL_CLUSTER=tasks: every node of the repository's own cluster, just cluster-up), helm upgrade --install into namespace tasks-local (wait, roll back on failure), helm test. Needs docker; installs kubectl and helm when missing.
deploy-local:
    scripts/deploy-local.sh deploy

# Uninstall the local release and delete its namespace (and the database volume with it).
undeploy-local:
    scripts/deploy-local.sh undeploy

# Follow the app logs of the local release (KUBE_CONTEXT/NAMESPACE for another one; LOGS_FOLLOW=0 to print and exit).
logs:
    scripts/deploy-local.sh logs

# Forward the local release's API to 127.0.0.1:8080 and admin to 127.0.0.1:9090.
port-forward:
    scripts/deploy-local.sh port-forward

# Show the local release: helm status, workloads, pods, services, PVCs.
status:
    scripts/deploy-local.sh status

# Push $REGISTRY (default ghcr.io)/$REGISTRY_OWNER/tasks-server:<git-sha> and deploy it by digest to KUBE_CONTEXT with values/staging.yaml (+ EXTRA_VALUES; clean tree only), then helm test.
deploy-staging:
    scripts/deploy-staging.sh deploy

# Roll the staging release back to REVISION (default: the previous one) in KUBE_CONTEXT.
rollback-staging *revision:
    scripts/deploy-staging.sh rollback "$@"

# Check every deploy recipe in dry-run mode (exact commands, refusals), helm --dry-run per overlay, actionlint.
test-deploy:
    scripts/test-deploy.sh

# Start a real single-node Kubernetes (built from the Go module proxy, cached) with a registry on its bridge; state under .cluster/.
cluster-up:
    scripts/cluster.sh up

# Stop everything cluster-up started and remove its state (logs are kept in target/cluster-logs).
cluster-down:
    scripts/cluster.sh down

# The release on a real cluster (two nodes): images and chart through the registry, install, helm test, upgrade and rollback under load, crashes, database outages, node failure, uninstall (Helm 4 and 3); then the package's unit tests.
test-cluster:
    #!/usr/bin/env bash
    set -uo pipefail
    status=0
    scripts/cluster.sh test || status=1
    scripts/cluster.sh unit-tests || status=1
    exit "$status"
