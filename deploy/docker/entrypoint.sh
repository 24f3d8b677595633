#!/bin/sh
# Entrypoint of the returns-desk image: one image, three roles.
#   api      the FastAPI app (uvicorn), on API_HOST:API_PORT
#   worker   the Temporal worker (graceful shutdown on SIGTERM)
#   migrate  alembic upgrade head, then the first admin (ADMIN_EMAIL + ADMIN_PASSWORD, if no user has that
#            email), then exit
# An admin by hand: `docker compose run --rm api python -m core.bootstrap create-admin --email EMAIL`.
# Anything else runs as given (e.g. `docker compose run --rm api alembic current`).
# Every role `exec`s, so the process gets the container's signals directly.
set -eu

role=${1:-api}
[ "$#" -gt 0 ] && shift

case "$role" in
api)
	# One process per container: scale with replicas, not uvicorn workers. The proxy in front is the
	# only client, so forwarded headers are trusted. In-flight requests get 15 s on SIGTERM.
	exec uvicorn --factory api.main:create_app \
		--host "${API_HOST:-0.0.0.0}" --port "${API_PORT:-8000}" \
		--proxy-headers --forwarded-allow-ips '*' \
		--timeout-graceful-shutdown 15 "$@"
	;;
worker)
	exec python worker.py "$@"
	;;
migrate)
	alembic upgrade head "$@"
	exec python -m core.bootstrap ensure-admin
	;;
*)
	exec "$role" "$@"
	;;
esac
