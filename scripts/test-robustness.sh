#!/usr/bin/env bash
# Robustness suite (docs/architecture.md §5, hostile input), run by `just test-robustness`:
#
#   1. the explicit tests of bin/tasks-server/tests/it/robustness.rs (oversized and
#      deeply nested bodies, slow clients cut off) and the API tests they rely on
#      (invalid UTF-8, hostile `limit`s, unicode and SQL metacharacters byte for byte,
#      database outage → fast 503 and recovery);
#   2. schemathesis (PyPI, pinned, in .tools/schemathesis) against /openapi.json of a
#      running debug tasks-server on a real PostgreSQL (scripts/pg.sh): every check
#      (no 5xx, status codes, content types, headers and bodies conform to the document,
#      negative data rejected, positive data accepted), bounded by examples and time.
#      Authenticated: the server's secrets directory holds the line of a token minted by
#      the binary, and every request carries `Authorization: Bearer <that token>`.
#
# Ends with "robustness: N passed, M failed" (plus cargo's own summary line).
# Environment: ST_MAX_EXAMPLES (default 60), ST_MAX_TIME_SECS (default 180), ST_SEED.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

SCHEMATHESIS="schemathesis==4.32.5"
VENV="${ROOT}/.tools/schemathesis"
MAX_EXAMPLES="${ST_MAX_EXAMPLES:-60}"
MAX_TIME="${ST_MAX_TIME_SECS:-180}"
SEED="${ST_SEED:-20240801}"

say() { printf 'test-robustness: %s\n' "$*" >&2; }
passed=0 failed=0
pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$1"; [[ -n "${2:-}" ]] && printf '     %s\n' "$2"; }
finish() {
    echo "robustness: ${passed} passed, ${failed} failed"
    [[ ${failed} -eq 0 ]]
    exit $?
}

# Both parts need PostgreSQL server binaries (the harness and scripts/pg.sh run them).
if ! scripts/ensure-tools.sh postgres; then
    fail "PostgreSQL server binaries available (scripts/ensure-tools.sh postgres)"
    finish
fi

# --- 1. explicit tests (cargo prints its own summary line) ----------------------------
say "explicit robustness tests (cargo test --test it robustness::)"
if cargo test --locked -p tasks-server --test it -- --include-ignored robustness:: \
    api::create_rejects_malformed_json_with_400 api::list_limit_bounds \
    api::unicode_and_sql_metacharacters_round_trip_exactly api::database_outage_answers_503_quickly; then
    cargo_ok=1
else
    cargo_ok=0
fi

# --- 2. schemathesis ---------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
if ! "${VENV}/bin/st" --version 2>/dev/null | grep -q "${SCHEMATHESIS#*==}"; then
    say "installing ${SCHEMATHESIS} into .tools/schemathesis"
    rm -rf "${VENV}"
    if ! { "${PYTHON}" -m venv "${VENV}" >/dev/null 2>&1 \
           || { rm -rf "${VENV}" && "${PYTHON}" -m venv --without-pip "${VENV}" \
                && "${PYTHON}" -m pip --python "${VENV}/bin/python" install --quiet pip; }; } \
       || ! "${VENV}/bin/python" -m pip install --quiet "${SCHEMATHESIS}"; then
        fail "schemathesis installs" "pip install ${SCHEMATHESIS} failed"
        finish
    fi
fi

say "building tasks-server (debug)"
if ! cargo build --locked -p tasks-server --quiet; then
    fail "tasks-server builds"
    finish
fi
BIN="${CARGO_TARGET_DIR:-${ROOT}/target}/debug/tasks-server"
# shellcheck source=scripts/lib/api_token.sh
source "${ROOT}/scripts/lib/api_token.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tasks-robustness.XXXXXX")"
SERVER_PID=""
cleanup() {
    if [[ -n "${SERVER_PID}" ]] && kill -0 "${SERVER_PID}" 2>/dev/null; then
        kill -TERM "${SERVER_PID}" 2>/dev/null
        for _ in $(seq 50); do kill -0 "${SERVER_PID}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${SERVER_PID}" 2>/dev/null || true
    fi
    scripts/pg.sh stop "${WORK}/pg" >/dev/null 2>&1 || true
    rm -rf "${WORK}"
}
trap cleanup EXIT

free_port() { "${PYTHON}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG_PORT="$(free_port)"
PASSWORD="robustness-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
if ! PGPASSWORD_TASKS="${PASSWORD}" scripts/pg.sh start "${WORK}/pg" "${PG_PORT}" >/dev/null 2>&1; then
    fail "PostgreSQL starts" "$(tail -n 20 "${WORK}/pg.log" 2>/dev/null)"
    finish
fi

API_PORT="$(free_port)"; ADMIN_PORT="$(free_port)"
mkdir -p "${WORK}/secrets"
# The fuzzer's API token: its line in the server's auth.api_tokens, the token in its headers.
if ! mint_api_token "${BIN}" robustness "${WORK}/client" tasks:read tasks:write; then
    fail "tasks-server mint-token mints the fuzzer's API token"
    finish
fi
cp "${WORK}/client/line" "${WORK}/secrets/auth.api_tokens"
TOKEN="$(cat "${WORK}/client/token")"
env -i PATH="${PATH}" HOME="${HOME:-/root}" \
    TASKS_HTTP__HOST=127.0.0.1 TASKS_HTTP__PORT="${API_PORT}" \
    TASKS_ADMIN__HOST=127.0.0.1 TASKS_ADMIN__PORT="${ADMIN_PORT}" \
    TASKS_DATABASE__HOST=127.0.0.1 TASKS_DATABASE__PORT="${PG_PORT}" \
    TASKS_DATABASE__PASSWORD="${PASSWORD}" TASKS_DATABASE__SSLMODE=disable \
    TASKS_SECRETS_DIR="${WORK}/secrets" TASKS_SHUTDOWN__DRAIN_DELAY_SECS=0 \
    TASKS_HTTP__WORKERS=2 \
    "${BIN}" >"${WORK}/server.log" 2>&1 &
SERVER_PID=$!
ready=0
for _ in $(seq 300); do
    if curl -fsS -o /dev/null "http://127.0.0.1:${ADMIN_PORT}/readyz" 2>/dev/null; then ready=1; break; fi
    kill -0 "${SERVER_PID}" 2>/dev/null || break
    sleep 0.1
done
if [[ ${ready} -ne 1 ]]; then
    fail "tasks-server becomes ready" "$(tail -n 20 "${WORK}/server.log")"
    finish
fi
pass "tasks-server ready on a real PostgreSQL"

# Authentication is on: without a token 401, with the minted one 200.
code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${API_PORT}/v1/tasks" || true)"
if [[ "${code}" == 401 ]]; then pass "GET /v1/tasks without a token answers 401"; else fail "GET /v1/tasks without a token answers 401" "got ${code}"; fi
code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN}" "http://127.0.0.1:${API_PORT}/v1/tasks" || true)"
if [[ "${code}" == 200 ]]; then pass "GET /v1/tasks with the minted token answers 200"; else fail "GET /v1/tasks with the minted token answers 200" "got ${code}"; fi

# A few tasks (the fuzzer's own), so reads and pagination meet real rows too.
for i in 1 2 3 4 5; do
    curl -fsS -o /dev/null -H "Authorization: Bearer ${TOKEN}" -H 'content-type: application/json' \
        -d "{\"title\":\"seed ${i}\",\"status\":\"todo\"}" "http://127.0.0.1:${API_PORT}/v1/tasks" || true
done

say "schemathesis ${SCHEMATHESIS#*==}: every check, ${MAX_EXAMPLES} examples per operation, at most ${MAX_TIME}s"
REPORT="${WORK}/report"
# Statuses a request may legitimately get for reasons of state rather than shape: a
# schema-valid PATCH/DELETE whose If-Match names another version gets 412 (RFC 9110),
# and a schema-violating body can be refused as too large (413) before it is parsed.
# Everything else keeps schemathesis' defaults. Requests carry a valid token with both
# scopes, so a schema-valid request never gets 401 or 403: those are not accepted for
# positive data (a broken authentication fails the run instead of passing it quietly).
# A malformed If-Match names no version, so its precondition fails: 412 is a rejection.
# POST /v1/tasks may answer a schema-valid request 422 when its Idempotency-Key was
# already used for another body (the generator draws keys from a small space, so unrelated
# requests share keys): that is state, which a stateless fuzzer cannot judge. Body
# validation (16 kinds of 422) and key replay/mismatch/in-flight are asserted exactly by
# the API tests.
cat > "${WORK}/schemathesis.toml" <<'TOML'
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "404", "409", "412", "429", "5xx"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "412", "413", "415", "422", "428", "429", "5xx"]

[[operations]]
include-path = "/v1/tasks"
include-method = "POST"

[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "404", "409", "412", "422", "429", "5xx"]
TOML
# One worker: with several threads, Hypothesis' lambda descriptions call ast.parse
# concurrently, which trips a CPython 3.11 race ("AST constructor recursion depth
# mismatch") and aborts operations with a runtime error that has nothing to do with the
# service.
timeout --kill-after=30 $((MAX_TIME + 120)) "${VENV}/bin/st" --config-file "${WORK}/schemathesis.toml" run \
    "http://127.0.0.1:${API_PORT}/openapi.json" \
    --header "Authorization: Bearer ${TOKEN}" \
    --checks all \
    --max-examples "${MAX_EXAMPLES}" \
    --max-time "${MAX_TIME}" \
    --seed "${SEED}" \
    --workers 1 \
    --request-timeout 10 \
    --max-response-time 5 \
    --no-color \
    --output-truncate true \
    --report junit --report-junit-path "${REPORT}/junit.xml" \
    > "${WORK}/st.log" 2>&1
st_status=$?
cat "${WORK}/st.log"
# One result per operation from the JUnit report.
if [[ -s "${REPORT}/junit.xml" ]]; then
    while IFS=$'\t' read -r verdict name detail; do
        if [[ "${verdict}" == ok ]]; then pass "schemathesis ${name}"; else fail "schemathesis ${name}" "${detail}"; fi
    done < <("${PYTHON}" scripts/lib/junit_results.py "${REPORT}/junit.xml")
fi
if [[ ${st_status} -eq 0 ]]; then
    pass "schemathesis run: no failures"
else
    fail "schemathesis run: no failures" "exit ${st_status}; see the output above"
fi

# The server survived everything and logged no panic.
if kill -0 "${SERVER_PID}" 2>/dev/null && curl -fsS -o /dev/null "http://127.0.0.1:${ADMIN_PORT}/livez"; then
    pass "tasks-server still alive after fuzzing"
else
    fail "tasks-server still alive after fuzzing" "$(tail -n 20 "${WORK}/server.log")"
fi
if grep -q '"panicked\|panicked at' "${WORK}/server.log"; then
    fail "no panic in the server log" "$(grep -m3 'panicked' "${WORK}/server.log")"
else
    pass "no panic in the server log"
fi
# cargo counted its own tests above; a failure there fails this suite too.
[[ ${cargo_ok} -eq 1 ]] || fail "explicit robustness tests (cargo test --test it robustness::)"
finish
