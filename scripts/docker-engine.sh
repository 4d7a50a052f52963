#!/usr/bin/env bash
# Make a Docker Engine available for the project's image build and image test.
#
#   scripts/docker-engine.sh ensure   install Debian's docker.io if dockerd is missing (and
#                                     docker-cli where the client is a package of its own);
#                                     reuse a daemon that answers (DOCKER_HOST, the default
#                                     socket, or one this script started earlier); otherwise
#                                     start dockerd with its own data root and socket under
#                                     .local/docker/ and wait until it answers.
#                                     Prints the DOCKER_HOST to use on stdout (only that).
#   scripts/docker-engine.sh status   exit 0 when a daemon this script started is running
#                                     (prints its DOCKER_HOST), 1 otherwise.
#   scripts/docker-engine.sh stop     stop only the daemon this script started (pid file).
#
# Environment: DOCKER_ENGINE_WAIT_SECS (default 60) bounds every wait.
# No systemd is assumed. The storage driver is overlay2, falling back to vfs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${ROOT}/.local/docker"
PID_FILE="${STATE_DIR}/dockerd.pid"
HOST_FILE="${STATE_DIR}/docker-host"
LOG_FILE="${STATE_DIR}/dockerd.log"
DATA_ROOT="${STATE_DIR}/data"
WAIT_SECS="${DOCKER_ENGINE_WAIT_SECS:-60}"
DEFAULT_SOCK="/var/run/docker.sock"

# shellcheck source=scripts/lib/debian.sh
source "${ROOT}/scripts/lib/debian.sh"

log() { printf 'docker-engine: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Unix socket paths are limited to 107 bytes. dockerd also puts containerd's socket
# under its exec root, so keep the runtime dir short when the checkout path is long.
runtime_dir() {
    local dir="${STATE_DIR}/run"
    if (( ${#dir} > 60 )); then
        local sum
        sum="$(printf '%s' "${ROOT}" | cksum | cut -d' ' -f1)"
        dir="/run/tasks-docker-${sum}"
    fi
    printf '%s' "${dir}"
}

answers() { # answers DOCKER_HOST
    DOCKER_HOST="$1" timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

our_pid() {
    [[ -f "${PID_FILE}" ]] || return 1
    local pid
    pid="$(cat "${PID_FILE}")"
    [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null || return 1
    # Guard against pid reuse: the process must be a dockerd.
    [[ "$(cat "/proc/${pid}/comm" 2>/dev/null)" == "dockerd" ]] || return 1
    printf '%s' "${pid}"
}

need_root() {
    [[ "$(id -u)" == 0 ]] || die "$1 needs root (run as root or start Docker Engine yourself and set DOCKER_HOST)"
}

install_engine() {
    if command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1; then
        return 0
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        need_root "installing docker.io"
        log "dockerd not found: installing Debian docker.io"
        # docker.io pulls in containerd, runc and iptables. /usr/local/bin/docker (a newer
        # client) may already exist and keeps precedence in PATH; both talk to this daemon.
        debian_install docker.io || die "dockerd is missing and installing Debian docker.io failed; install Docker Engine"
        command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is still missing"
    fi
    # Debian 13 moved the client out of docker.io into docker-cli (only recommended, so
    # --no-install-recommends leaves it out); Debian 12's docker.io holds both.
    if ! command -v docker >/dev/null 2>&1; then
        need_root "installing docker-cli"
        log "the docker client is not found: installing Debian docker-cli"
        debian_install docker-cli || die "the docker client is missing and installing Debian docker-cli failed; install the Docker CLI"
        command -v docker >/dev/null 2>&1 || die "docker-cli installed but docker is still missing"
    fi
}

wait_for() { # wait_for DOCKER_HOST PID
    local host="$1" pid="$2" deadline=$((SECONDS + WAIT_SECS))
    while (( SECONDS < deadline )); do
        if answers "${host}"; then return 0; fi
        kill -0 "${pid}" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

start_daemon() { # start_daemon DRIVER -> 0 when it answers
    local driver="$1" run_dir host pid
    run_dir="$(runtime_dir)"
    host="unix://${run_dir}/docker.sock"
    mkdir -p "${DATA_ROOT}" "${run_dir}/exec"
    log "starting dockerd (storage driver ${driver}, data root ${DATA_ROOT}, log ${LOG_FILE})"
    # setsid: the daemon must outlive the shell that started it and must not receive
    # the caller's terminal signals; it is stopped explicitly with `stop`.
    # --bridge none / --iptables=false: this daemon leaves the host's network alone (no
    # docker0, no NAT rules, nothing to clash with another daemon); containers run with
    # --network host (the tests, loopback only) or without a network.
    setsid dockerd \
        --host "${host}" \
        --data-root "${DATA_ROOT}" \
        --exec-root "${run_dir}/exec" \
        --pidfile "${run_dir}/dockerd.pid" \
        --storage-driver "${driver}" \
        --bridge none \
        --iptables=false \
        --ip-masq=false \
        >>"${LOG_FILE}" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "${pid}" >"${PID_FILE}"
    printf '%s\n' "${host}" >"${HOST_FILE}"
    if wait_for "${host}" "${pid}"; then
        DOCKER_HOST="${host}"
        return 0
    fi
    log "dockerd with ${driver} did not come up; last log lines:"
    tail -n 15 "${LOG_FILE}" >&2 || true
    stop_daemon quiet
    return 1
}

ensure() {
    install_engine
    # 1. A daemon the caller already points at, 2. the default socket.
    if [[ -n "${DOCKER_HOST:-}" ]] && answers "${DOCKER_HOST}"; then
        printf '%s\n' "${DOCKER_HOST}"; return 0
    fi
    if answers "unix://${DEFAULT_SOCK}"; then
        printf '%s\n' "unix://${DEFAULT_SOCK}"; return 0
    fi
    # 3. One this script started before.
    if our_pid >/dev/null && [[ -f "${HOST_FILE}" ]]; then
        local host
        host="$(cat "${HOST_FILE}")"
        if wait_for "${host}" "$(our_pid)"; then
            printf '%s\n' "${host}"; return 0
        fi
        log "the daemon started earlier does not answer; restarting it"
        stop_daemon quiet
    fi
    need_root "starting dockerd"
    mkdir -p "${STATE_DIR}"
    if start_daemon overlay2 || start_daemon vfs; then
        printf '%s\n' "${DOCKER_HOST}"
        return 0
    fi
    die "could not start dockerd (see ${LOG_FILE})"
}

stop_daemon() {
    local quiet="${1:-}" pid deadline
    if ! pid="$(our_pid)"; then
        rm -f "${PID_FILE}"
        [[ -n "${quiet}" ]] || log "no daemon started by this script is running"
        return 0
    fi
    [[ -n "${quiet}" ]] || log "stopping dockerd (pid ${pid})"
    kill -TERM "${pid}" 2>/dev/null || true
    deadline=$((SECONDS + WAIT_SECS))
    while kill -0 "${pid}" 2>/dev/null && (( SECONDS < deadline )); do
        sleep 0.2
    done
    if kill -0 "${pid}" 2>/dev/null; then
        log "dockerd (pid ${pid}) ignored SIGTERM for ${WAIT_SECS}s; sending SIGKILL"
        kill -KILL "${pid}" 2>/dev/null || true
    fi
    rm -f "${PID_FILE}" "${HOST_FILE}"
}

status() {
    if our_pid >/dev/null && [[ -f "${HOST_FILE}" ]]; then
        cat "${HOST_FILE}"
        return 0
    fi
    return 1
}

case "${1:-}" in
    ensure) ensure ;;
    stop) stop_daemon ;;
    status) status ;;
    *) echo "usage: $0 ensure|status|stop" >&2; exit 2 ;;
esac
