set -eu
# One logical backup: pg_dump in custom format into BACKUP_DIR, written under a
# temporary name and renamed only once its table of contents reads back; then dumps
# older than RETENTION_DAYS are deleted (never the one just written). Any failure
# exits non-zero: the Job fails, which monitoring sees (kube_job_status_failed).
# Environment: libpq's PGHOST, PGPORT, PGDATABASE, PGUSER, PGSSLMODE (PGSSLROOTCERT),
# PGPASSWORD_FILE (the mounted password), BACKUP_DIR, RETENTION_DAYS, TMPDIR.
umask 077
: "${PGDATABASE:?}" "${BACKUP_DIR:?}" "${RETENTION_DAYS:?}" "${PGPASSWORD_FILE:?}"
# The password goes to a password file, never into the environment or a command line.
PGPASSFILE="${TMPDIR:-/tmp}/backup.pgpass"
printf '*:*:*:*:%s\n' "$(sed -e 's/\\/\\\\/g' -e 's/:/\\:/g' "$PGPASSWORD_FILE")" >"$PGPASSFILE"
export PGPASSFILE
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
final="$BACKUP_DIR/$PGDATABASE-$stamp.dump"
partial="$BACKUP_DIR/.$PGDATABASE-$stamp.dump.partial"
echo "backup: pg_dump of $PGDATABASE on $PGHOST:${PGPORT:-5432} -> $final"
pg_dump --format=custom --no-password --file="$partial"
pg_restore --list "$partial" >/dev/null
mv "$partial" "$final"
echo "backup: wrote $(wc -c <"$final") bytes"
# Retention: only after a successful dump, only this database's dumps and leftovers.
find "$BACKUP_DIR" -maxdepth 1 -type f \( -name "$PGDATABASE-*.dump" -o -name ".$PGDATABASE-*.dump.partial" \) \
  ! -path "$final" -mmin +"$((RETENTION_DAYS * 1440))" -print -delete | sed 's/^/backup: deleted /'
ls -l "$BACKUP_DIR"
