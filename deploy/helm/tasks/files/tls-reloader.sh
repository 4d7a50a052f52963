set -eu
# Sidecar of PostgreSQL with TLS: PostgreSQL reads its certificate at start and on
# reload only. When the mounted certificate changes (cert-manager renewed it, or the
# Secret was replaced), ask the server to reload over the pod's local socket; sessions
# stay open. Environment: TLS_CERT_FILE, PGHOST (socket directory), RELOAD_INTERVAL.
cert="${TLS_CERT_FILE:?}"
interval="${RELOAD_INTERVAL:-60}"
last="$(cksum <"$cert")"
echo "tls-reloader: watching $cert every ${interval}s"
while sleep "$interval"; do
  now="$(cksum <"$cert" 2>/dev/null || echo unreadable)"
  [ "$now" != "$last" ] || continue
  if psql -X -q -At -U postgres -d postgres -c 'SELECT pg_reload_conf()' >/dev/null; then
    echo "tls-reloader: certificate changed; PostgreSQL reloaded"
    last="$now"
  else
    echo "tls-reloader: certificate changed, but the reload failed; retrying" >&2
  fi
done
