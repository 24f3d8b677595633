#!/bin/bash
# MySQL first-boot script (mounted into /docker-entrypoint-initdb.d by docker-compose.yml).
#
# Creates three databases, each with its own user that may touch only that database:
#   APP_DB_NAME                  (the app, user APP_DB_USER)
#   TEMPORAL_DB_NAME             (Temporal's persistence, user TEMPORAL_DB_USER)
#   TEMPORAL_VISIBILITY_DB_NAME  (Temporal's visibility, user TEMPORAL_VISIBILITY_DB_USER)
# Nothing but this script and the health check uses root.
#
# The official mysql image runs this once, when the data volume is empty, against a server that
# listens on its socket only. To change a password later, use ALTER USER (see README.md).
# The image may source this file instead of executing it, so it defines no globals it could clash
# with and never calls `set -u`.

returns_desk_init_databases() {
	local var prefix name user password sql
	for var in APP_DB_NAME APP_DB_USER APP_DB_PASSWORD \
		TEMPORAL_DB_NAME TEMPORAL_DB_USER TEMPORAL_DB_PASSWORD \
		TEMPORAL_VISIBILITY_DB_NAME TEMPORAL_VISIBILITY_DB_USER TEMPORAL_VISIBILITY_DB_PASSWORD; do
		if [ -z "${!var:-}" ]; then
			echo "mysql-init: $var is not set" >&2
			return 1
		fi
	done
	for var in APP_DB_PASSWORD TEMPORAL_DB_PASSWORD TEMPORAL_VISIBILITY_DB_PASSWORD; do
		# The passwords end up in URLs (DATABASE_URL) and SQL literals: keep them to URL-safe characters.
		if [[ ! "${!var}" =~ ^[A-Za-z0-9._~-]{16,}$ ]]; then
			echo "mysql-init: $var must be at least 16 characters of A-Z a-z 0-9 . _ ~ - (try: openssl rand -hex 24)" >&2
			return 1
		fi
	done

	sql=""
	for prefix in APP_DB TEMPORAL_DB TEMPORAL_VISIBILITY_DB; do
		name="${prefix}_NAME"
		user="${prefix}_USER"
		password="${prefix}_PASSWORD"
		sql+="CREATE DATABASE IF NOT EXISTS \`${!name}\` CHARACTER SET utf8mb4;"
		sql+="CREATE USER IF NOT EXISTS '${!user}'@'%' IDENTIFIED BY '${!password}';"
		sql+="GRANT ALL PRIVILEGES ON \`${!name}\`.* TO '${!user}'@'%';"
	done
	# The app compares ids, keys and order lines byte for byte, as its migrations and tests expect.
	sql+="ALTER DATABASE \`${APP_DB_NAME}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"

	echo "mysql-init: creating databases ${APP_DB_NAME}, ${TEMPORAL_DB_NAME}, ${TEMPORAL_VISIBILITY_DB_NAME} and their users"
	MYSQL_PWD="${MYSQL_ROOT_PASSWORD}" mysql --protocol=socket --user=root --batch <<<"$sql"
}

returns_desk_init_databases || exit 1
