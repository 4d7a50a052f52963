#!/usr/bin/env bash
# A real, throwaway PostgreSQL for shell tests and `just run`.
#
#   scripts/pg.sh start DATADIR PORT   initialise DATADIR when empty, start the server on
#                                      127.0.0.1:PORT (TCP only on loopback, scram auth),
#                                      with role `tasks` (password from PGPASSWORD_TASKS,
#                                      default tasks-dev, may create databases) owning the
#                                      database `tasks`. Already running: nothing to do.
#   scripts/pg.sh stop DATADIR         fast shutdown (no-op when not running)
#   scripts/pg.sh status DATADIR       exit 0 when running, 3 when not
#
# The server binaries come from the newest /usr/lib/postgresql/<major>/bin (PG_BINDIR
# overrides). When none is installed and CI=true, Debian's `postgresql` is installed.
# initdb refuses to run as root: as root the server runs as the system user `tasks-pg`
# (created when missing), which owns DATADIR. The log is DATADIR.log (a sibling file).
# Environment: PGPASSWORD_TASKS, PG_WAIT_SECS (default 60), PG_EXTRA_OPTS (extra
# server options, e.g. "-c fsync=off").
set -euo pipefail

PG_USER_SYSTEM="tasks-pg"
WAIT_SECS="${PG_WAIT_SECS:-60}"

log() { printf 'pg.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    echo "usage: $0 start DATADIR PORT | stop DATADIR | status DATADIR" >&2
    exit 2
}

find_bindir() {
    if [[ -n "${PG_BINDIR:-}" ]]; then
        [[ -x "${PG_BINDIR}/pg_ctl" ]] || die "PG_BINDIR=${PG_BINDIR} has no pg_ctl"
        printf '%s' "${PG_BINDIR}"; return
    fi
    local newest
    newest="$(newest_bindir)"
    if [[ -z "${newest}" ]]; then
        if [[ "${CI:-}" == "true" ]]; then
            log "no PostgreSQL server installed: installing Debian postgresql (CI=true)"
            [[ "$(id -u)" == 0 ]] || die "installing postgresql needs root"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq >&2 || die "apt-get update failed"
            apt-get install -y -qq --no-install-recommends postgresql >&2 \
                || die "apt-get install postgresql failed"
            newest="$(newest_bindir)"
            [[ -n "${newest}" ]] || die "postgresql installed but no /usr/lib/postgresql/*/bin/pg_ctl found"
        else
            die "no PostgreSQL server found in /usr/lib/postgresql/*/bin; install Debian 'postgresql' (or set PG_BINDIR)"
        fi
    fi
    printf '%s' "${newest}"
}

newest_bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "${d}/pg_ctl" ]] && printf '%s\n' "${d}"
    done | sort -t/ -k5,5n | tail -n 1
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
    log "initialising ${datadir} ($("${bindir}/postgres" --version))"
    # The bootstrap superuser is the OS user; it logs in only over the local socket (peer).
    as_owner "${bindir}/initdb" -D "${datadir}" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >>"${logfile}" 2>&1 \
        || { tail -n 20 "${logfile}" >&2; die "initdb failed for ${datadir}"; }
    # Create the application role and database in single-user mode: no socket, no
    # password on any command line.
    # One statement per line (single-user mode ends a command at a newline).
    as_owner "${bindir}/postgres" --single -D "${datadir}" postgres >>"${logfile}" 2>&1 <<SQL \
        || { tail -n 20 "${logfile}" >&2; die "creating role and database tasks failed"; }
SET password_encryption = 'scram-sha-256';
CREATE ROLE tasks LOGIN CREATEDB PASSWORD $(sql_literal "${password}");
CREATE DATABASE tasks OWNER tasks;
SQL
}

cmd_start() {
    local datadir="$1" port="$2" bindir logfile sockdir
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
    log "starting PostgreSQL on 127.0.0.1:${port} (log ${logfile})"
    if ! as_owner "${bindir}/pg_ctl" start -D "${datadir}" -l "${logfile}" -w -t "${WAIT_SECS}" \
        -o "-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='${sockdir}' ${PG_EXTRA_OPTS:-}" \
        >/dev/null; then
        log "PostgreSQL did not start; last log lines:"
        tail -n 20 "${logfile}" >&2 || true
        exit 1
    fi
}

cmd_stop() {
    local datadir="$1" bindir
    [[ -d "${datadir}" ]] || { log "no such data directory: ${datadir}"; return 0; }
    bindir="$(find_bindir)"
    datadir="$(cd "${datadir}" && pwd -P)"
    if ! is_running "${bindir}" "${datadir}"; then
        log "not running: ${datadir}"
        return 0
    fi
    as_owner "${bindir}/pg_ctl" stop -D "${datadir}" -m fast -w -t "${WAIT_SECS}" >/dev/null \
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

case "${1:-}" in
    start) [[ $# == 3 ]] || usage; cmd_start "$2" "$3" ;;
    stop) [[ $# == 2 ]] || usage; cmd_stop "$2" ;;
    status) [[ $# == 2 ]] || usage; cmd_status "$2" ;;
    *) usage ;;
esac
