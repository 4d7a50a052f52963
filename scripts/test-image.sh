#!/usr/bin/env bash
# Image test: build the runtime image with Docker Engine from a static binary compiled
# on the host, run it hardened (read-only, non-root, no capabilities, no new privileges)
# against a real PostgreSQL, and check what ADR 0004 and docs/architecture.md §6 promise.
# The API is called with a bearer token minted by the binary (`mint-token`), whose line is
# in the container's secrets directory (auth.api_tokens); a call without one gets 401.
#
#   scripts/test-image.sh
#
# Prints PASS/FAIL per check and ends with "N passed, M failed"; exits non-zero on any
# failure. Under CI=true a missing tool is a failure, never a skip.
# Environment: KEEP_IMAGE=1 keeps the built test image; IMAGE_TEST_WAIT_SECS (default
# 60) bounds each wait for the service.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}" || exit 1

TARGET_TRIPLE="x86_64-unknown-linux-musl"
TARGET_DIR="${CARGO_TARGET_DIR:-${ROOT}/target}"
CONTEXT_DIR="${ROOT}/target/docker"   # re-included by .dockerignore
BUDGET_MB=25
DRAIN_SECS=1
SHUTDOWN_TIMEOUT_SECS=10
WAIT_SECS="${IMAGE_TEST_WAIT_SECS:-60}"
CONTAINER_SECRETS_DIR="/var/run/secrets/tasks"   # the binary's default TASKS_SECRETS_DIR
CONTAINER_TOKEN_DIR="/var/run/tasks-client"       # the client's token, outside the secrets dir
RUN_ID="$$-${RANDOM}"
IMAGE="tasks-server:image-test-${RUN_ID}"
CONTAINER="tasks-image-test-${RUN_ID}"

PASSED=0
FAILED=0
WORK_DIR=""
PG_DATA=""
DOCKERD_STARTED=""
CONTAINER_CREATED=""
IMAGE_BUILT=""

say() { printf 'test-image: %s\n' "$*" >&2; }
pass() { PASSED=$((PASSED + 1)); printf 'PASS %s\n' "$1"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL %s%s\n' "$1" "${2:+ ($2)}"; }
check() { # check NAME COMMAND... -> PASS when the command succeeds
    local name="$1"
    shift
    if "$@"; then pass "${name}"; else fail "${name}"; fi
}
# Predicates for check (called through "$@", which shellcheck cannot see).
# shellcheck disable=SC2329
is() { [[ "$1" == "$2" ]]; }              # is ACTUAL EXPECTED
# shellcheck disable=SC2329
is_one_of() { local v="$1"; shift; local e; for e in "$@"; do [[ "${v}" == "${e}" ]] && return 0; done; return 1; }
# shellcheck disable=SC2329
nonempty() { [[ -n "$1" && "$1" != "<no value>" ]]; }

# shellcheck disable=SC2329 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "${CONTAINER_CREATED}" ]]; then
        timeout 60 docker rm -f "${CONTAINER}" >/dev/null 2>&1 || true
    fi
    if [[ -n "${IMAGE_BUILT}" && "${KEEP_IMAGE:-}" != 1 ]]; then
        timeout 60 docker image rm -f "${IMAGE}" >/dev/null 2>&1 || true
    fi
    if [[ -n "${PG_DATA}" ]]; then
        "${ROOT}/scripts/pg.sh" stop "${PG_DATA}" >/dev/null 2>&1 || true
    fi
    if [[ -n "${WORK_DIR}" ]]; then
        rm -rf "${WORK_DIR}"
    fi
    if [[ -n "${DOCKERD_STARTED}" ]]; then
        "${ROOT}/scripts/docker-engine.sh" stop || true
    fi
    exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

finish() {
    printf '%s passed, %s failed\n' "${PASSED}" "${FAILED}"
    if (( FAILED > 0 )); then exit 1; fi
    exit 0
}

# A prerequisite is missing: a failure under CI, a skip elsewhere.
missing() {
    if [[ "${CI:-}" == "true" ]]; then
        fail "prerequisite: $1"
    else
        say "SKIP: $1 (set CI=true to make this a failure)"
    fi
    finish
}

# shellcheck source=scripts/lib/debian.sh
source "${ROOT}/scripts/lib/debian.sh"
# shellcheck source=scripts/lib/api_token.sh
source "${ROOT}/scripts/lib/api_token.sh"
# Install a Debian package when its command is missing (root only).
apt_install() { # apt_install COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    debian_install "$2" || return 1
    command -v "$1" >/dev/null 2>&1
}

free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 40000))
        [[ " ${USED_PORTS:-} " == *" ${port} "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
            USED_PORTS="${USED_PORTS:-} ${port}"
            printf '%s' "${port}"
            return 0
        fi
    done
    return 1
}

now_ms() { date +%s%3N; }

container_running() {
    [[ "$(timeout 30 docker inspect -f '{{.State.Running}}' "${CONTAINER}" 2>/dev/null)" == "true" ]]
}

http_code() { # http_code URL [CURL-ARGS...] -> prints status code (000 when no answer)
    local url="$1"
    shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "${url}" 2>/dev/null || true
}

wait_for_200() { # wait_for_200 URL -> 0 when 200 within WAIT_SECS
    local url="$1" deadline=$((SECONDS + WAIT_SECS)) code
    while (( SECONDS < deadline )); do
        code="$(http_code "${url}")"
        [[ "${code}" == 200 ]] && return 0
        container_running || return 1
        sleep 0.1
    done
    return 1
}

show_logs() {
    say "container logs (last 40 lines):"
    timeout 30 docker logs --tail 40 "${CONTAINER}" >&2 2>&1 || true
}

# ---------------------------------------------------------------------------------------
say "checking tools"
command -v curl >/dev/null 2>&1 || apt_install curl curl || missing "curl is not installed"
command -v cargo >/dev/null 2>&1 || missing "cargo is not installed"
command -v rustup >/dev/null 2>&1 || missing "rustup is not installed"
command -v readelf >/dev/null 2>&1 || apt_install readelf binutils || missing "readelf (binutils) is not installed"

# Docker Engine: reuse a daemon that answers; stop at the end only one started here.
engine_before="$("${ROOT}/scripts/docker-engine.sh" status 2>/dev/null || true)"
if ! DOCKER_HOST="$("${ROOT}/scripts/docker-engine.sh" ensure)"; then
    if [[ "$(id -u)" != 0 ]] && ! command -v dockerd >/dev/null 2>&1; then
        missing "Docker Engine is not installed and installing it needs root"
    fi
    fail "Docker Engine is available (scripts/docker-engine.sh ensure)"
    finish
fi
export DOCKER_HOST
if [[ -z "${engine_before}" ]] && "${ROOT}/scripts/docker-engine.sh" status >/dev/null 2>&1; then
    DOCKERD_STARTED=1
fi
say "Docker Engine at ${DOCKER_HOST}"

# The static binary, built on the host (no image can be pulled here): the Rust target
# and Debian's musl-tools, the same installer as `just image`.
"${ROOT}/scripts/ensure-tools.sh" musl || missing "the Rust target ${TARGET_TRIPLE} and musl-tools (scripts/ensure-tools.sh musl)"
# The image runs against a real PostgreSQL (scripts/pg.sh below).
"${ROOT}/scripts/ensure-tools.sh" postgres || missing "PostgreSQL server binaries (scripts/ensure-tools.sh postgres)"

say "building tasks-server (release, ${TARGET_TRIPLE})"
if cargo build --release --locked --target "${TARGET_TRIPLE}" -p tasks-server >&2; then
    pass "static release binary builds (cargo build --release --locked --target ${TARGET_TRIPLE})"
else
    fail "static release binary builds"
    finish
fi
BINARY="${TARGET_DIR}/${TARGET_TRIPLE}/release/tasks-server"

# Statically linked (no program interpreter, no shared libraries) and stripped.
if readelf -lW "${BINARY}" 2>/dev/null | grep -q 'INTERP' \
    || readelf -dW "${BINARY}" 2>/dev/null | grep -q '(NEEDED)'; then
    fail "binary is statically linked" "has an interpreter or NEEDED entries"
else
    pass "binary is statically linked"
fi
if readelf -SW "${BINARY}" 2>/dev/null | grep -q '\.symtab'; then
    fail "binary is stripped" "a .symtab section is present"
else
    pass "binary is stripped"
fi

# ---------------------------------------------------------------------------------------
# Image, from the host binary (--target host).
mkdir -p "${CONTEXT_DIR}"
cp "${BINARY}" "${CONTEXT_DIR}/tasks-server"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
if [[ ! -s "${CA_BUNDLE}" ]]; then
    apt_install update-ca-certificates ca-certificates >/dev/null 2>&1 || true
fi
[[ -s "${CA_BUNDLE}" ]] || missing "${CA_BUNDLE} is missing (Debian ca-certificates)"
cp "${CA_BUNDLE}" "${CONTEXT_DIR}/ca-certificates.crt"

VERSION="$(cargo pkgid -p tasks-server 2>/dev/null | sed -E 's/.*[#@]//')"
[[ -n "${VERSION}" ]] || VERSION="0.0.0"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ -n "${SOURCE_DATE_EPOCH:-}" ]]; then
    CREATED="$(date -u -d "@${SOURCE_DATE_EPOCH}" +%Y-%m-%dT%H:%M:%SZ)"
else
    CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
fi
SOURCE_URL="$(sed -nE 's/^repository *= *"([^"]+)".*/\1/p' Cargo.toml | head -n 1)"
[[ -n "${SOURCE_URL}" ]] || SOURCE_URL="https://github.com/tasks-platform/tasks"

# Debian's docker.io has no buildx plugin: use the legacy builder then (it handles
# FROM scratch and stops at --target; BuildKit is used when available).
if docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=1
else
    export DOCKER_BUILDKIT=0
fi
say "building image ${IMAGE} (DOCKER_BUILDKIT=${DOCKER_BUILDKIT})"
if timeout 600 docker build -f docker/Dockerfile --target host \
    --build-arg "VERSION=${VERSION}" --build-arg "REVISION=${REVISION}" \
    --build-arg "CREATED=${CREATED}" --build-arg "SOURCE=${SOURCE_URL}" \
    -t "${IMAGE}" . >&2; then
    IMAGE_BUILT=1
    pass "image builds from the host binary (docker build --target host)"
else
    fail "image builds from the host binary"
    finish
fi

inspect() { timeout 30 docker image inspect -f "$1" "${IMAGE}" 2>/dev/null; }
for key in source revision version created licenses; do
    value="$(inspect "{{index .Config.Labels \"org.opencontainers.image.${key}\"}}")"
    check "label org.opencontainers.image.${key} is set (${value})" nonempty "${value}"
done
check "label revision matches the commit" \
    is "$(inspect '{{index .Config.Labels "org.opencontainers.image.revision"}}')" "${REVISION}"
check "label version matches the crate version" \
    is "$(inspect '{{index .Config.Labels "org.opencontainers.image.version"}}')" "${VERSION}"
user="$(inspect '{{.Config.User}}')"
check "image user is 10001 (${user})" is_one_of "${user}" 10001 10001:10001
# shellcheck disable=SC2016 # a Go template, not a shell expansion
ports="$(inspect '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}')"
check "image exposes 8080/tcp and 9090/tcp (${ports% })" is "${ports% }" "8080/tcp 9090/tcp"
entry="$(inspect '{{json .Config.Entrypoint}} {{json .Config.Cmd}}')"
check "entrypoint /tasks-server, cmd serve (${entry})" is "${entry}" '["/tasks-server"] ["serve"]'

version_out="$(timeout 60 docker run --rm --read-only --user 10001 --cap-drop ALL \
    --security-opt no-new-privileges --network none "${IMAGE}" --version 2>&1)"
check "tasks-server --version runs in the image (${version_out})" \
    is "$(grep -cF "${VERSION}" <<<"${version_out}")" 1

size_bytes="$(inspect '{{.Size}}')"
size_mb="$(awk -v b="${size_bytes:-0}" 'BEGIN { printf "%.1f", b / 1000000 }')"
printf 'image size: %s MB (budget <= %s MB)\n' "${size_mb}" "${BUDGET_MB}"
check "image size ${size_mb} MB within the ${BUDGET_MB} MB budget" \
    awk -v b="${size_bytes:-0}" -v m="${BUDGET_MB}" 'BEGIN { exit !(b > 0 && b <= m * 1000000) }'

# ---------------------------------------------------------------------------------------
# A real PostgreSQL on a free loopback port, in a temporary directory.
WORK_DIR="$(mktemp -d)"
if ! { PG_PORT="$(free_port)" && HTTP_PORT="$(free_port)" && ADMIN_PORT="$(free_port)"; }; then
    fail "find free loopback ports"
    finish
fi
PGPASSWORD_TASKS="it-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export PGPASSWORD_TASKS
PG_DATA="${WORK_DIR}/pg"
say "starting PostgreSQL on 127.0.0.1:${PG_PORT}"
if ! "${ROOT}/scripts/pg.sh" start "${PG_DATA}" "${PG_PORT}"; then
    fail "PostgreSQL starts (scripts/pg.sh)"
    finish
fi

# The secrets directory, bind-mounted read-only, readable by UID 10001 only: the
# database password and the API-token file (the line of a token minted by the binary,
# as an operator adds it to the Secret). The client's plain token lives apart from it.
SECRETS_DIR="${WORK_DIR}/secrets"
CLIENT_DIR="${WORK_DIR}/client"
mkdir -p "${SECRETS_DIR}" "${CLIENT_DIR}"
printf '%s\n' "${PGPASSWORD_TASKS}" >"${SECRETS_DIR}/database.password"
if mint_api_token "${BINARY}" image-test "${CLIENT_DIR}" tasks:read tasks:write; then
    pass "tasks-server mint-token prints a token and its auth.api_tokens line"
else
    fail "tasks-server mint-token prints a token and its auth.api_tokens line"
    finish
fi
{ echo "# image test: one token, hash only"; cat "${CLIENT_DIR}/line"; } >"${SECRETS_DIR}/auth.api_tokens"
rm -f "${CLIENT_DIR}/line"
API_TOKEN="$(cat "${CLIENT_DIR}/token")"
AUTH=(-H "Authorization: Bearer ${API_TOKEN}")
if [[ "$(id -u)" == 0 ]]; then
    chown -R 10001:10001 "${SECRETS_DIR}" "${CLIENT_DIR}"
    chmod 0500 "${SECRETS_DIR}" "${CLIENT_DIR}"
    chmod 0400 "${SECRETS_DIR}"/* "${CLIENT_DIR}"/*
else
    chmod 0755 "${SECRETS_DIR}" "${CLIENT_DIR}"
    chmod 0444 "${SECRETS_DIR}"/* "${CLIENT_DIR}"/*
fi

say "running ${CONTAINER} (API 127.0.0.1:${HTTP_PORT}, admin 127.0.0.1:${ADMIN_PORT})"
CONTAINER_CREATED=1
if ! timeout 60 docker run -d --name "${CONTAINER}" \
    --read-only --user 10001 --cap-drop ALL --security-opt no-new-privileges \
    --network host \
    -e TASKS_HTTP__HOST=127.0.0.1 \
    -e TASKS_ADMIN__HOST=127.0.0.1 \
    -e "TASKS_HTTP__PORT=${HTTP_PORT}" \
    -e "TASKS_ADMIN__PORT=${ADMIN_PORT}" \
    -e TASKS_DATABASE__HOST=127.0.0.1 \
    -e "TASKS_DATABASE__PORT=${PG_PORT}" \
    -e TASKS_DATABASE__NAME=tasks \
    -e TASKS_DATABASE__USER=tasks \
    -e "TASKS_SHUTDOWN__DRAIN_DELAY_SECS=${DRAIN_SECS}" \
    -e "TASKS_SHUTDOWN__TIMEOUT_SECS=${SHUTDOWN_TIMEOUT_SECS}" \
    -v "${SECRETS_DIR}:${CONTAINER_SECRETS_DIR}:ro" \
    -v "${CLIENT_DIR}:${CONTAINER_TOKEN_DIR}:ro" \
    "${IMAGE}" >/dev/null; then
    fail "container starts (docker run --read-only --user 10001 --cap-drop ALL ...)"
    finish
fi
pass "container starts (docker run --read-only --user 10001 --cap-drop ALL --security-opt no-new-privileges)"

ADMIN="http://127.0.0.1:${ADMIN_PORT}"
API="http://127.0.0.1:${HTTP_PORT}"
if wait_for_200 "${ADMIN}/livez"; then pass "/livez answers 200"; else fail "/livez answers 200" "last: $(http_code "${ADMIN}/livez")"; show_logs; fi
if wait_for_200 "${ADMIN}/readyz"; then pass "/readyz answers 200"; else fail "/readyz answers 200" "last: $(http_code "${ADMIN}/readyz")"; show_logs; fi

# Authentication: /v1/* needs a bearer token (401 with a Bearer challenge without one or
# with an unknown one); the OpenAPI document stays open.
unauth_headers="${WORK_DIR}/unauth.headers"
code="$(curl -s -o /dev/null -D "${unauth_headers}" -w '%{http_code}' --max-time 10 "${API}/v1/tasks" 2>/dev/null || true)"
challenge="$(tr -d '\r' <"${unauth_headers}" 2>/dev/null | sed -nE 's/^[Ww][Ww][Ww]-[Aa]uthenticate: *//p' | head -n 1)"
check "GET /v1/tasks without a token answers 401 with WWW-Authenticate: Bearer (${code}, ${challenge:-no challenge})" \
    is "${code}:${challenge%% *}" "401:Bearer"
code="$(http_code "${API}/v1/tasks" -H "Authorization: Bearer tkn_not-a-minted-token")"
check "GET /v1/tasks with an unknown token answers 401 (${code})" is "${code}" 401
code="$(http_code "${API}/openapi.json")"
check "GET /openapi.json needs no token (${code})" is "${code}" 200
code="$(http_code "${API}/v1/tasks" "${AUTH[@]}")"
check "GET /v1/tasks with the minted token answers 200 (${code})" is "${code}" 200

# Task round trip through the API.
TITLE="image-test-${RUN_ID}"
headers="${WORK_DIR}/post.headers"
code="$(curl -s -o "${WORK_DIR}/post.body" -D "${headers}" -w '%{http_code}' --max-time 10 "${AUTH[@]}" \
    -H 'Content-Type: application/json' -d "{\"title\":\"${TITLE}\"}" "${API}/v1/tasks" 2>/dev/null || true)"
location="$(tr -d '\r' <"${headers}" 2>/dev/null | sed -nE 's/^[Ll]ocation: *//p' | head -n 1)"
check "POST /v1/tasks answers 201 with Location (${code:-none}, ${location:-no Location})" \
    is "${code}:${location:+set}" "201:set"
if [[ -n "${location}" ]]; then
    [[ "${location}" == http* ]] || location="${API}${location}"
    code="$(curl -s -o "${WORK_DIR}/get.body" -w '%{http_code}' --max-time 10 "${AUTH[@]}" "${location}" 2>/dev/null || true)"
    title_ok=no
    grep -qF "\"title\":\"${TITLE}\"" "${WORK_DIR}/get.body" 2>/dev/null && title_ok=yes
    check "GET Location answers 200 with the same title (${code}, title ${title_ok})" is "${code}:${title_ok}" "200:yes"
else
    fail "GET Location answers 200 with the same title" "no Location"
fi

# The shell-less image probes itself.
timeout 30 docker exec "${CONTAINER}" /tasks-server probe "${ADMIN}/readyz" >/dev/null 2>&1
rc=$?
check "docker exec ... tasks-server probe ${ADMIN}/readyz exits 0 (${rc})" is "${rc}" 0
timeout 30 docker exec "${CONTAINER}" /tasks-server probe "${ADMIN}/no-such-path" >/dev/null 2>&1
rc=$?
check "tasks-server probe of a 404 exits non-zero (${rc})" test "${rc}" != 0
# ... and runs the Helm test's round trip (create, read back, delete) from inside,
# authenticated with the token file as the Helm test pod mounts it.
timeout 60 docker exec "${CONTAINER}" /tasks-server round-trip "${API}" --token-file "${CONTAINER_TOKEN_DIR}/token" \
    >"${WORK_DIR}/round-trip.out" 2>&1
rc=$?
check "docker exec ... tasks-server round-trip ${API} --token-file ... exits 0 (${rc}): $(head -c 200 "${WORK_DIR}/round-trip.out")" is "${rc}" 0
timeout 60 docker exec "${CONTAINER}" /tasks-server round-trip "${API}" >"${WORK_DIR}/round-trip-anon.out" 2>&1
rc=$?
check "tasks-server round-trip without a token fails (${rc})" test "${rc}" != 0

# Effective identity and privileges of the container's main process.
pid="$(timeout 30 docker inspect -f '{{.State.Pid}}' "${CONTAINER}" 2>/dev/null || echo 0)"
status_file="/proc/${pid}/status"
if [[ "${pid}" != 0 && -r "${status_file}" ]]; then
    uids="$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "${status_file}")"
    check "effective UID is 10001 (Uid: ${uids})" is "${uids}" "10001 10001 10001 10001"
    capeff="$(awk '/^CapEff:/ { print $2 }' "${status_file}")"
    check "no effective capabilities (CapEff ${capeff})" is "${capeff}" "0000000000000000"
    say "main process $(awk '/^Gid:/ { print "Gid:", $2, $3, $4, $5 }' "${status_file}")"
    nnp="$(awk '/^NoNewPrivs:/ { print $2 }' "${status_file}")"
    check "no_new_privs is set (${nnp})" is "${nnp}" 1
else
    fail "effective UID is 10001" "no main process"
fi
check "root filesystem is read-only" \
    is "$(timeout 30 docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "${CONTAINER}")" true

# Graceful stop: readiness fails at once, the API keeps serving through the drain delay,
# then the process exits 0 within drain + timeout.
start_ms="$(now_ms)"
timeout 60 docker stop -t 30 "${CONTAINER}" >/dev/null 2>&1 &
stop_pid=$!
saw_503="" served_in_drain=""
deadline=$((SECONDS + 5))
while (( SECONDS < deadline )); do
    code="$(http_code "${ADMIN}/readyz")"
    if [[ "${code}" == 503 ]]; then
        saw_503=1
        [[ "$(http_code "${location:-${API}/v1/tasks}" "${AUTH[@]}")" == 200 ]] && served_in_drain=1
        break
    fi
    [[ "${code}" == 000 ]] && break
    sleep 0.05
done
wait "${stop_pid}"
stop_rc=$?
elapsed_ms=$(( $(now_ms) - start_ms ))
exit_code="$(timeout 30 docker inspect -f '{{.State.ExitCode}}' "${CONTAINER}" 2>/dev/null || echo unknown)"
check "after SIGTERM /readyz answers 503" is "${saw_503}" 1
check "the API keeps serving during the drain delay" is "${served_in_drain}" 1
check "docker stop -t 30 ends the container with exit code 0 (${exit_code})" \
    is "${stop_rc}:${exit_code}" "0:0"
limit_ms=$(( (DRAIN_SECS + SHUTDOWN_TIMEOUT_SECS) * 1000 ))
printf 'stop took %s ms (drain %ss + timeout %ss)\n' "${elapsed_ms}" "${DRAIN_SECS}" "${SHUTDOWN_TIMEOUT_SECS}"
check "stop finished within drain + timeout (${elapsed_ms} ms <= ${limit_ms} ms)" \
    test "${elapsed_ms}" -le "${limit_ms}"

# Secrets never reach the logs.
if timeout 30 docker logs "${CONTAINER}" 2>&1 | grep -qF "${PGPASSWORD_TASKS}"; then
    fail "the database password does not appear in the container logs"
else
    pass "the database password does not appear in the container logs"
fi
if timeout 30 docker logs "${CONTAINER}" 2>&1 | grep -qF "${API_TOKEN}"; then
    fail "the API token does not appear in the container logs"
else
    pass "the API token does not appear in the container logs"
fi
if (( FAILED > 0 )); then show_logs; fi

finish
