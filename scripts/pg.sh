#!/usr/bin/env bash
# A real, throwaway PostgreSQL: the one implementation, used by `just run`, the shell
# suites, the benchmark AND the Rust test harness
# (crates/test-support/src/local.rs runs this script for every server it starts).
#
# Why the script and not the Rust harness: the shell suites and `just run` need a server
# without compiling anything, and everything here (finding or installing the binaries,
# the unprivileged user under root, initdb, pg_ctl) is a sequence of commands. The Rust
# harness keeps only what needs a live process: the free-port choice and retry, the wait
# for readiness, and the watchdog that stops the server when the test process dies
# (it calls `pg.sh stop DATADIR immediate`).
#
#   scripts/pg.sh bindir               print the directory of the server binaries (initdb,
#                                      pg_ctl, postgres, pg_isready, psql, pgbench),
#                                      installing Debian's `postgresql` when none is
#                                      found and CI=true (as root)
#   scripts/pg.sh start DATADIR PORT   initialise DATADIR when empty, start the server on
#                                      127.0.0.1:PORT (TCP only on loopback, scram auth),
#                                      with the role PG_ROLE (default `tasks`; password
#                                      from PGPASSWORD_TASKS, default tasks-dev; may create
#                                      databases, a superuser with PG_SUPERUSER=1) owning
#                                      the database `tasks`. Already running: nothing to do.
#   scripts/pg.sh stop DATADIR [MODE]  shutdown, MODE fast (default), smart or immediate
#                                      (no-op when not running)
#   scripts/pg.sh status DATADIR       exit 0 when running, 3 when not
#
# The server binaries come from PG_BINDIR when set (it must hold them), else
# `pg_config --bindir`, else the newest /usr/lib/postgresql/<major>/bin. When none is
# found: under CI=true (as root) Debian's `postgresql` is installed; otherwise this fails
# naming the package and PG_BINDIR. scripts/ensure-tools.sh postgres calls `bindir`.
# initdb refuses to run as root: as root the server runs as the system user `tasks-pg`
# (created when missing), which owns DATADIR; ancestors of DATADIR it cannot enter get
# o+x (search, not read). The log is DATADIR.log (a sibling file); the local socket is
# in DATADIR when its path is short enough.
# Environment: PGPASSWORD_TASKS, PG_ROLE, PG_SUPERUSER, PG_WAIT_SECS (default 60),
# PG_DURABLE (default 1; 0 = fsync and full_page_writes off: an OS crash may lose data),
# PG_THROWAWAY=1 (the cluster is deleted after use: initdb and the role setup skip
# syncing to disk), PG_EXTRA_OPTS (extra server options, e.g. "-c max_connections=300"),
# PG_DEBIAN_DIR (default /usr/lib/postgresql; a test of the missing-server path moves it).
set -euo pipefail

PG_USER_SYSTEM="tasks-pg"
WAIT_SECS="${PG_WAIT_SECS:-60}"
ROLE="${PG_ROLE:-tasks}"
REQUIRED_BINARIES=(initdb pg_ctl postgres)
DEBIAN_DIR="${PG_DEBIAN_DIR:-/usr/lib/postgresql}"
# shellcheck source=scripts/lib/debian.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/debian.sh"

log() { printf 'pg.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    echo "usage: $0 bindir | start DATADIR PORT | stop DATADIR [fast|smart|immediate] | status DATADIR" >&2
    exit 2
}

has_binaries() { # has_binaries DIR -> 0 when DIR holds every required binary
    local b
    for b in "${REQUIRED_BINARIES[@]}"; do [[ -x "$1/$b" ]] || return 1; done
}

# Candidates, best first: pg_config's (a non-Debian install), then Debian's by major.
candidates() {
    local dir
    if dir="$(pg_config --bindir 2>/dev/null)" && [[ -n "${dir}" ]]; then
        printf '%s\n' "${dir}"
    fi
    for dir in "${DEBIAN_DIR}"/*/bin; do
        [[ -d "${dir}" ]] && printf '%s\n' "${dir}"
    done | awk -F/ '{ print $(NF - 1) "\t" $0 }' | sort -k1,1nr | cut -f2-
}

find_installed() {
    local dir
    while IFS= read -r dir; do
        if has_binaries "${dir}"; then printf '%s' "${dir}"; return 0; fi
    done < <(candidates)
    return 1
}

find_bindir() {
    if [[ -n "${PG_BINDIR:-}" ]]; then
        has_binaries "${PG_BINDIR}" \
            || die "PG_BINDIR=${PG_BINDIR} lacks one of ${REQUIRED_BINARIES[*]} (install Debian 'postgresql', or point PG_BINDIR at the server's bin directory)"
        printf '%s' "${PG_BINDIR}"; return
    fi
    local found
    if found="$(find_installed)"; then printf '%s' "${found}"; return; fi
    local missing="no PostgreSQL server binaries (${REQUIRED_BINARIES[*]}) found: checked pg_config --bindir and ${DEBIAN_DIR}/*/bin"
    [[ "${CI:-}" == "true" ]] \
        || die "${missing}; install Debian package 'postgresql' (apt-get install postgresql; as root with CI=true the recipes install it), or set PG_BINDIR to the directory holding them"
    log "${missing}: installing Debian postgresql (CI=true)"
    debian_install postgresql || die "${missing}, and installing Debian 'postgresql' failed (set PG_BINDIR to use installed binaries)"
    found="$(find_installed)" || die "Debian postgresql installed but no ${DEBIAN_DIR}/*/bin holds ${REQUIRED_BINARIES[*]}"
    printf '%s' "${found}"
}

# Run a command as the user that owns the cluster (root cannot run the server).
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u "${PG_USER_SYSTEM}" -- "$@"
    else
        "$@"
    fi
}

ensure_system_user() {
    [[ "$(id -u)" == 0 ]] || return 0
    if ! id -u "${PG_USER_SYSTEM}" >/dev/null 2>&1; then
        log "creating system user ${PG_USER_SYSTEM}"
        useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "${PG_USER_SYSTEM}" 2>/dev/null \
            || id -u "${PG_USER_SYSTEM}" >/dev/null 2>&1 \
            || die "useradd ${PG_USER_SYSTEM} failed"
    fi
}

# The unprivileged server user must be able to reach DATADIR: grant search (x, not read)
# permission on ancestors that lack it, e.g. a 0700 mktemp directory.
ensure_traversable() {
    [[ "$(id -u)" == 0 ]] || return 0
    local dir="$1"
    while [[ "${dir}" != "/" && -n "${dir}" ]]; do
        dir="$(dirname "${dir}")"
        if ! runuser -u "${PG_USER_SYSTEM}" -- test -x "${dir}"; then
            log "granting search permission on ${dir} so ${PG_USER_SYSTEM} can reach the data directory"
            chmod o+x "${dir}"
        fi
    done
}

abs_path() {
    local p="$1"
    mkdir -p "$p"
    (cd "$p" && pwd -P)
}

is_running() { # is_running BINDIR DATADIR
    [[ -f "$2/postmaster.pid" ]] || return 1
    as_owner "$1/pg_ctl" status -D "$2" >/dev/null 2>&1
}

sql_literal() { printf "'%s'" "${1//\'/\'\'}"; }

init_cluster() { # init_cluster BINDIR DATADIR LOGFILE
    local bindir="$1" datadir="$2" logfile="$3" password
    password="${PGPASSWORD_TASKS:-tasks-dev}"
    [[ "${password}" != *$'\n'* ]] || die "PGPASSWORD_TASKS must not contain a newline"
    local attributes="LOGIN CREATEDB" initdb_sync=() single_sync=()
    [[ "${PG_SUPERUSER:-}" != 1 ]] || attributes="LOGIN SUPERUSER"
    # A throwaway cluster need not be on disk before the server starts.
    if [[ "${PG_THROWAWAY:-}" == 1 ]]; then initdb_sync=(--no-sync); single_sync=(-c fsync=off); fi
    log "initialising ${datadir} ($("${bindir}/postgres" --version))"
    # The bootstrap superuser is the OS user; it logs in only over the local socket (peer).
    as_owner "${bindir}/initdb" -D "${datadir}" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 "${initdb_sync[@]}" >>"${logfile}" 2>&1 \
        || { tail -n 20 "${logfile}" >&2; die "initdb failed for ${datadir}"; }
    # Create the application role and database in single-user mode: no socket, no
    # password on any command line.
    # One statement per line (single-user mode ends a command at a newline).
    as_owner "${bindir}/postgres" --single -D "${datadir}" "${single_sync[@]}" postgres >>"${logfile}" 2>&1 <<SQL \
        || { tail -n 20 "${logfile}" >&2; die "creating role ${ROLE} and database tasks failed"; }
SET password_encryption = 'scram-sha-256';
CREATE ROLE ${ROLE} ${attributes} PASSWORD $(sql_literal "${password}");
CREATE DATABASE tasks OWNER ${ROLE};
SQL
}

cmd_start() {
    local datadir="$1" port="$2" bindir logfile sockdir options
    if ! [[ "${port}" =~ ^[0-9]+$ ]] || (( port < 1 || port > 65535 )); then
        die "bad port: ${port}"
    fi
    bindir="$(find_bindir)"
    ensure_system_user
    datadir="$(abs_path "${datadir}")"
    logfile="${datadir}.log"
    if [[ ! -s "${datadir}/PG_VERSION" && -n "$(ls -A "${datadir}")" ]]; then
        die "${datadir} is neither empty nor a PostgreSQL data directory"
    fi
    if [[ "$(id -u)" == 0 ]]; then
        ensure_traversable "${datadir}"
        chown "${PG_USER_SYSTEM}:" "${datadir}"
        touch "${logfile}"
        chown "${PG_USER_SYSTEM}:" "${logfile}"
    fi
    chmod 0700 "${datadir}"
    # A working directory the server's user can enter (the caller's may not be).
    cd "${datadir}"
    if is_running "${bindir}" "${datadir}"; then
        log "already running: ${datadir}"
        return 0
    fi
    if [[ ! -s "${datadir}/PG_VERSION" ]]; then
        init_cluster "${bindir}" "${datadir}" "${logfile}"
    fi
    # The local socket lives in the data directory when the path is short enough (the
    # limit is 107 bytes); otherwise the server listens on TCP only.
    sockdir="${datadir}"
    if (( ${#datadir} + 20 > 100 )); then sockdir=""; fi
    options="-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='${sockdir}'"
    # Not durable: no fsync, no full-page images. A fast or smart stop still writes a
    # checkpoint, so a stop/start keeps every acknowledged write; only an OS crash loses data.
    [[ "${PG_DURABLE:-1}" != 0 ]] || options+=" -c fsync=off -c full_page_writes=off"
    log "starting PostgreSQL on 127.0.0.1:${port} (log ${logfile})"
    if ! as_owner "${bindir}/pg_ctl" start -D "${datadir}" -l "${logfile}" -w -t "${WAIT_SECS}" \
        -o "${options} ${PG_EXTRA_OPTS:-}" \
        >/dev/null; then
        log "PostgreSQL did not start; last log lines:"
        tail -n 20 "${logfile}" >&2 || true
        exit 1
    fi
}

cmd_stop() {
    local datadir="$1" mode="${2:-fast}" bindir
    [[ "${mode}" =~ ^(fast|smart|immediate)$ ]] || usage
    [[ -d "${datadir}" ]] || { log "no such data directory: ${datadir}"; return 0; }
    bindir="$(find_bindir)"
    datadir="$(cd "${datadir}" && pwd -P)"
    cd /
    if ! is_running "${bindir}" "${datadir}"; then
        log "not running: ${datadir}"
        return 0
    fi
    as_owner "${bindir}/pg_ctl" stop -D "${datadir}" -m "${mode}" -w -t "${WAIT_SECS}" >/dev/null \
        || die "PostgreSQL in ${datadir} did not stop within ${WAIT_SECS}s"
}

cmd_status() {
    local datadir="$1" bindir
    [[ -d "${datadir}" ]] || { echo "not running (no ${datadir})"; return 3; }
    bindir="$(find_bindir)"
    if is_running "${bindir}" "${datadir}"; then
        echo "running: ${datadir}"
        return 0
    fi
    echo "not running: ${datadir}"
    return 3
}

[[ "${ROLE}" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "PG_ROLE must be a lower-case SQL identifier: ${ROLE}"

case "${1:-}" in
    bindir) [[ $# == 1 ]] || usage; find_bindir; echo ;;
    start) [[ $# == 3 ]] || usage; cmd_start "$2" "$3" ;;
    stop) [[ $# == 2 || $# == 3 ]] || usage; cmd_stop "$2" "${3:-}" ;;
    status) [[ $# == 2 ]] || usage; cmd_status "$2" ;;
    *) usage ;;
esac
