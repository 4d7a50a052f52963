#!/bin/sh
# Init container of the PostgreSQL pod: on an initialised volume, start a server that
# listens on the local socket only, converge the roles (converge-roles.sh), stop it.
# A fresh volume is left to the image's entrypoint, which runs converge-roles.sh from
# /docker-entrypoint-initdb.d after initdb.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "converge-on-start: $PGDATA is not initialised yet; the image initialises it"
  exit 0
fi
here="$(dirname "$0")"
# The socket directory: PGHOST when it names one (tests), else the image's.
sockets="${PGHOST:-/var/run/postgresql}"
case "$sockets" in /*) ;; *) sockets=/var/run/postgresql ;; esac
export PGHOST="$sockets"
pg_ctl -D "$PGDATA" -w -t "${CONVERGE_START_TIMEOUT:-3600}" \
  -o "-c listen_addresses='' -c unix_socket_directories=$sockets -c hba_file=$here/pg_hba.conf" start
status=0
"$here/converge-roles.sh" || status=$?
pg_ctl -D "$PGDATA" -m fast -w -t 600 stop
exit "$status"
