#!/bin/sh
# One-shot job (temporalio/admin-tools image): create or upgrade Temporal's two MySQL schemas.
#
# The same steps as Temporal's samples-server compose/scripts/setup-mysql.sh, but each schema is set
# up by its own user, not root: the databases and users already exist (deploy/mysql-init). Safe to
# re-run: setup-schema only adds the version tables if they are missing, and update-schema applies
# only the versions a database does not have yet, which is also how a Temporal upgrade migrates.
set -eu

: "${MYSQL_SEEDS:?}" "${DB_PORT:=3306}"
: "${TEMPORAL_DB_NAME:?}" "${TEMPORAL_DB_USER:?}" "${TEMPORAL_DB_PASSWORD:?}"
: "${TEMPORAL_VISIBILITY_DB_NAME:?}" "${TEMPORAL_VISIBILITY_DB_USER:?}" "${TEMPORAL_VISIBILITY_DB_PASSWORD:?}"
SCHEMA_DIR=/etc/temporal/schema/mysql/v8

echo "setup-schema: waiting for MySQL at ${MYSQL_SEEDS}:${DB_PORT}"
attempt=0
until nc -z -w 5 "$MYSQL_SEEDS" "$DB_PORT"; do
	attempt=$((attempt + 1))
	if [ "$attempt" -ge 60 ]; then
		echo "setup-schema: MySQL did not answer" >&2
		exit 1
	fi
	sleep 2
done

# sql_tool DATABASE USER PASSWORD COMMAND...: the password goes through SQL_PASSWORD, not argv.
sql_tool() {
	database=$1 user=$2 password=$3
	shift 3
	SQL_PASSWORD="$password" temporal-sql-tool --plugin mysql8 --ep "$MYSQL_SEEDS" --port "$DB_PORT" \
		--user "$user" --db "$database" "$@"
}

echo "setup-schema: ${TEMPORAL_DB_NAME}"
sql_tool "$TEMPORAL_DB_NAME" "$TEMPORAL_DB_USER" "$TEMPORAL_DB_PASSWORD" setup-schema -v 0.0
sql_tool "$TEMPORAL_DB_NAME" "$TEMPORAL_DB_USER" "$TEMPORAL_DB_PASSWORD" \
	update-schema -d "$SCHEMA_DIR/temporal/versioned"

echo "setup-schema: ${TEMPORAL_VISIBILITY_DB_NAME}"
sql_tool "$TEMPORAL_VISIBILITY_DB_NAME" "$TEMPORAL_VISIBILITY_DB_USER" "$TEMPORAL_VISIBILITY_DB_PASSWORD" \
	setup-schema -v 0.0
sql_tool "$TEMPORAL_VISIBILITY_DB_NAME" "$TEMPORAL_VISIBILITY_DB_USER" "$TEMPORAL_VISIBILITY_DB_PASSWORD" \
	update-schema -d "$SCHEMA_DIR/visibility/versioned"

echo "setup-schema: done"
