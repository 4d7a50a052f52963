#!/bin/sh
# Converges the roles of the in-chart PostgreSQL to the chart's layout, idempotently:
#   - the bootstrap superuser is SUPERUSER_NAME (postgres), used only inside the pod
#     (local socket);
#   - the application role APP_ROLE logs in with its password, owns the database APP_DB
#     and every object of the application's schemas, and is NOSUPERUSER NOCREATEDB
#     NOCREATEROLE NOREPLICATION NOBYPASSRLS.
# Runs from /docker-entrypoint-initdb.d on a fresh volume (the image's temporary server is
# up), and from the init container on every start of an initialised volume. A volume
# initialised by an older chart, where the application role IS the bootstrap superuser,
# is converted: that role is renamed to SUPERUSER_NAME (it keeps the system catalogs),
# a new APP_ROLE is created and given the database and the application's objects.
# Passwords are set only when a role is created or renamed; afterwards they are changed
# with ALTER ROLE (docs/runbooks/rotate-database-password.md).
# Environment: APP_ROLE, APP_DB, SUPERUSER_NAME, APP_PASSWORD_FILE,
# SUPERUSER_PASSWORD_FILE, and libpq's PGHOST/PGPORT (default: the local socket).
set -eu
: "${APP_ROLE:?}" "${APP_DB:?}" "${SUPERUSER_NAME:?}" "${APP_PASSWORD_FILE:?}" "${SUPERUSER_PASSWORD_FILE:?}"
[ -s "$APP_PASSWORD_FILE" ] || { echo "converge-roles: empty or missing $APP_PASSWORD_FILE" >&2; exit 1; }
[ -s "$SUPERUSER_PASSWORD_FILE" ] || { echo "converge-roles: empty or missing $SUPERUSER_PASSWORD_FILE" >&2; exit 1; }
export APP_PASSWORD_FILE SUPERUSER_PASSWORD_FILE

# Connect as the superuser of the new layout when it exists, else as the application
# role (an older install, where it is the bootstrap superuser).
as="$SUPERUSER_NAME"
if ! psql -X -q -At -U "$as" -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
  as="$APP_ROLE"
fi
echo "converge-roles: connecting as $as"

psql -X -q -v ON_ERROR_STOP=1 -U "$as" -d postgres \
  -v app_role="$APP_ROLE" -v app_db="$APP_DB" -v superuser="$SUPERUSER_NAME" <<'SQL'
-- Passwords below never reach the server's log.
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SET log_min_duration_statement = -1;
\set app_password `cat "$APP_PASSWORD_FILE"`
\set superuser_password `cat "$SUPERUSER_PASSWORD_FILE"`

SELECT rolname AS bootstrap FROM pg_roles WHERE oid = 10 \gset
SELECT :'bootstrap' = :'app_role' AS app_is_bootstrap \gset
\if :app_is_bootstrap
  \echo converge-roles: the application role is the bootstrap superuser (an older install); renaming it to :superuser
  SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'superuser') AS superuser_taken \gset
  \if :superuser_taken
    \echo converge-roles: a role named :superuser exists already; rename or drop it, then restart
    SELECT 1/0 AS stop_here;
  \endif
  -- A session user cannot be renamed: rename from a transient superuser's session.
  CREATE ROLE tasks_converge_transient SUPERUSER LOGIN;
  \connect - tasks_converge_transient
  ALTER ROLE :"app_role" RENAME TO :"superuser";
  ALTER ROLE :"superuser" PASSWORD :'superuser_password';
  \connect - :superuser
  DROP ROLE tasks_converge_transient;
\endif

SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app_role') AS create_app \gset
\if :create_app
  \echo converge-roles: creating the application role :app_role
  CREATE ROLE :"app_role" LOGIN PASSWORD :'app_password';
\endif
ALTER ROLE :"app_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER DATABASE :"app_db" OWNER TO :"app_role";

-- Inside the application's database: its schemas and objects still owned by the
-- bootstrap superuser (everything an older install created) go to the application role.
\connect :app_db
SELECT set_config('tasks.app_role', :'app_role', false);
DO $converge$
DECLARE
  app text := current_setting('tasks.app_role');
  r record;
BEGIN
  FOR r IN SELECT n.nspname FROM pg_namespace n
           WHERE n.nspowner = 10 AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
  LOOP
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', r.nspname, app);
  END LOOP;
  -- Relations; a sequence owned by a column follows its table.
  FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relowner = 10 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
             AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
             AND NOT (c.relkind = 'S' AND EXISTS (
               SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                 AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO %I',
      CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
        WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
      r.name, app);
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE p.proowner = 10 AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
             AND p.prokind IN ('f', 'p', 'a', 'w')
  LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO %I', r.name, app);
  END LOOP;
  -- Standalone types (enums, domains, ranges, composite types); not row types of
  -- tables, array types or multiranges, which follow their owners.
  FOR r IN SELECT t.oid::regtype AS name FROM pg_type t
           JOIN pg_namespace n ON n.oid = t.typnamespace
           LEFT JOIN pg_class c ON c.oid = t.typrelid
           WHERE t.typowner = 10 AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
             AND t.typtype IN ('e', 'd', 'r', 'c') AND (t.typrelid = 0 OR c.relkind = 'c')
  LOOP
    EXECUTE format('ALTER TYPE %s OWNER TO %I', r.name, app);
  END LOOP;
END
$converge$;
SQL
echo "converge-roles: done ($APP_ROLE owns $APP_DB and is not a superuser)"
