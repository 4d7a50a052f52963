#!/bin/sh
# Entrypoint of the cluster's PostgreSQL image (Debian trixie's postgresql-17), written
# for this project. It implements the documented interface of the official image's
# entrypoint that the chart relies on (docs/adr/0011-cluster-postgresql-and-pause-images.md):
#
#   docker-entrypoint.sh postgres [ARG...]   (or only -flags: "postgres" is prepended)
#
#   1. Started as root: create PGDATA and the socket directory, give them to postgres
#      (uid/gid 999) and run this script again as that user (setpriv, no gosu).
#   2. PGDATA without PG_VERSION (an empty volume):
#        initdb --username=$POSTGRES_USER --pwfile=<password> $POSTGRES_INITDB_ARGS
#        [--waldir=$POSTGRES_INITDB_WALDIR]; append "host all all all <method>" to
#        PGDATA/pg_hba.conf (POSTGRES_HOST_AUTH_METHOD, default scram-sha-256);
#        start a temporary server with the given ARGs on the local socket only
#        (listen_addresses=''), create POSTGRES_DB unless it exists, run
#        /docker-entrypoint-initdb.d/* in name order (*.sh executed when executable,
#        sourced otherwise; *.sql, *.sql.gz, *.sql.xz, *.sql.zst through psql; anything
#        else is ignored), stop the temporary server (fast), and go on.
#      PGDATA with PG_VERSION: nothing is initialised and no script runs.
#   3. exec the command: postgres becomes the container's PID 1 and receives its
#      signals (the image's StopSignal is SIGINT, PostgreSQL's fast shutdown).
#
# Any other command (psql, pg_dump, sh, ...) is exec'd as given, untouched.
#
# Variables (each of the POSTGRES_* ones may instead be given as NAME_FILE, a path
# whose content is the value; both at once is an error):
#   POSTGRES_PASSWORD          password of POSTGRES_USER; required to initialise unless
#                              POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_USER              bootstrap superuser (default postgres)
#   POSTGRES_DB                database created after initdb (default POSTGRES_USER)
#   POSTGRES_INITDB_ARGS       extra initdb arguments, split on blanks
#   POSTGRES_INITDB_WALDIR     initdb --waldir
#   POSTGRES_HOST_AUTH_METHOD  method of the appended pg_hba.conf line
#   PGDATA                     data directory (image default /var/lib/postgresql/data)
#   PGPORT                     port of the server (default 5432)
#   POSTGRES_START_TIMEOUT     seconds the temporary server may take to start (60)
set -eu

log() { printf '%s entrypoint: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# file_env NAME [DEFAULT]: NAME from $NAME or from the file named by $NAME_FILE.
file_env() {
    name="$1"
    default="${2:-}"
    eval "value=\${$name:-}"
    eval "file=\${${name}_FILE:-}"
    if [ -n "$value" ] && [ -n "$file" ]; then
        die "both $name and ${name}_FILE are set; they are exclusive"
    fi
    if [ -n "$file" ]; then
        [ -r "$file" ] || die "${name}_FILE=$file is not readable"
        # Command substitution drops trailing newlines, as a Secret file often ends with one.
        value="$(cat "$file")"
    fi
    [ -n "$value" ] || value="$default"
    eval "$name=\$value"
    export "$name"
    unset "${name}_FILE" value file default name
}

# quote ARG: ARG as one word of a POSIX shell command line (pg_ctl -o runs one).
quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# psql_local [psql args...]: SQL as the bootstrap superuser over the local socket.
psql_local() {
    PGHOST= PGHOSTADDR= psql -X -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password "$@"
}

# The first argument is a flag: the command is the server.
case "${1:-}" in
    -*) set -- postgres "$@" ;;
esac

# Anything but the server (psql, pg_dump, sh...) runs as given.
if [ "${1:-}" != postgres ]; then
    exec "$@"
fi
# `postgres --help`, `--version`, `-C name`, `--describe-config`: no data directory involved.
for arg in "$@"; do
    case "$arg" in
        -'?' | --help | --describe-config | -V | --version | -C) exec "$@" ;;
    esac
done

: "${PGDATA:?PGDATA must name the data directory}"
socket_dir=/var/run/postgresql

if [ "$(id -u)" = 0 ]; then
    # Root: prepare the directories, then drop to postgres for everything else.
    mkdir -p "$PGDATA" "$socket_dir"
    chown postgres:postgres "$PGDATA" "$socket_dir"
    chmod 0700 "$PGDATA"
    chmod 3777 "$socket_dir"
    if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
        mkdir -p "$POSTGRES_INITDB_WALDIR"
        chown postgres:postgres "$POSTGRES_INITDB_WALDIR"
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

# Not root: create what may be missing; the volume's owner decides the rest.
mkdir -p "$PGDATA" || die "cannot create $PGDATA as uid $(id -u)"
# initdb and the server require 0700 (or 0750); only the owner may change it.
if [ -O "$PGDATA" ]; then
    chmod 0700 "$PGDATA"
fi
mkdir -p "$socket_dir" 2>/dev/null || true

if [ -s "$PGDATA/PG_VERSION" ]; then
    log "PostgreSQL $(cat "$PGDATA/PG_VERSION") data directory found in $PGDATA; skipping initialisation"
    exec "$@"
fi

# ---- A fresh data directory -------------------------------------------------------

file_env POSTGRES_PASSWORD
file_env POSTGRES_USER postgres
file_env POSTGRES_DB "$POSTGRES_USER"
file_env POSTGRES_INITDB_ARGS
auth_method="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"

if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth_method" != trust ]; then
    die "the data directory is empty and no superuser password is set: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (or POSTGRES_HOST_AUTH_METHOD=trust to allow connections without one)"
fi
if ! id -un >/dev/null 2>&1; then
    die "uid $(id -u) has no entry in /etc/passwd; run as postgres (999) or root"
fi
if [ -n "$(ls -A "$PGDATA" 2>/dev/null)" ]; then
    die "$PGDATA has no PG_VERSION but is not empty: a failed initialisation or another program's files; move them away"
fi

log "initialising $PGDATA (superuser $POSTGRES_USER, database $POSTGRES_DB)"
initdb_waldir=
if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
    initdb_waldir="--waldir=$POSTGRES_INITDB_WALDIR"
fi
# The password reaches initdb on a pipe, never on a command line or in a file.
# POSTGRES_INITDB_ARGS is split on blanks on purpose (several flags in one variable).
# shellcheck disable=SC2086
printf '%s\n' "$POSTGRES_PASSWORD" | initdb \
    --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile=/dev/stdin \
    ${initdb_waldir:+"$initdb_waldir"} $POSTGRES_INITDB_ARGS >&2

if [ "$auth_method" = trust ]; then
    log "warning: POSTGRES_HOST_AUTH_METHOD=trust lets anyone who reaches the port connect as any role, without a password"
fi
printf '\nhost all all all %s\n' "$auth_method" >>"$PGDATA/pg_hba.conf"

# The temporary server: the given server arguments, reachable on the socket only.
shift  # "postgres"
options=
for arg in "$@" -c "listen_addresses=" -p "${PGPORT:-5432}"; do
    options="$options $(quote "$arg")"
done
log "starting a temporary server on the local socket"
pg_ctl -D "$PGDATA" -o "$options" -w -t "${POSTGRES_START_TIMEOUT:-60}" start >&2 \
    || die "the temporary server did not start (its log is above)"
set -- postgres "$@"

export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"

exists="$(psql_local --dbname postgres -At -v db="$POSTGRES_DB" <<'SQL'
SELECT 1 FROM pg_database WHERE datname = :'db';
SQL
)"
if [ -z "$exists" ]; then
    log "creating database $POSTGRES_DB"
    psql_local --dbname postgres -q -v db="$POSTGRES_DB" <<'SQL'
CREATE DATABASE :"db";
SQL
fi

for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    case "$f" in
        *.sh)
            if [ -x "$f" ]; then
                log "running $f"
                "$f"
            else
                log "sourcing $f"
                # shellcheck disable=SC1090
                . "$f"
            fi
            ;;
        *.sql) log "running $f"; psql_local --dbname "$POSTGRES_DB" -f "$f" ;;
        *.sql.gz) log "running $f"; gzip -dc "$f" | psql_local --dbname "$POSTGRES_DB" ;;
        *.sql.xz) log "running $f"; xz -dc "$f" | psql_local --dbname "$POSTGRES_DB" ;;
        *.sql.zst) log "running $f"; zstd -dc "$f" | psql_local --dbname "$POSTGRES_DB" ;;
        *) log "ignoring $f" ;;
    esac
done

log "stopping the temporary server"
pg_ctl -D "$PGDATA" -m fast -w -t 600 stop >&2
unset PGPASSWORD POSTGRES_PASSWORD
log "initialisation complete; starting PostgreSQL"

exec "$@"
