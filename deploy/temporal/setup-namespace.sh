#!/bin/sh
# One-shot job (temporalio/admin-tools image): create the app's namespace and register every custom
# search attribute the case workflows upsert, before any worker or API starts.
#
# SEARCH_ATTRIBUTES is a space-separated list of Name=Type (docker-compose.yml sets it; a test checks
# it against core/search_attributes.py). A workflow that upserts an unregistered attribute gets stuck,
# so this job must succeed before the app starts. Safe to re-run: existing ones are left alone.
set -eu

: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:?}" "${SEARCH_ATTRIBUTES:?}"
: "${TEMPORAL_NAMESPACE_RETENTION:=720h}"

echo "setup-namespace: waiting for the Temporal cluster at ${TEMPORAL_ADDRESS}"
attempt=0
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do
	attempt=$((attempt + 1))
	if [ "$attempt" -ge 60 ]; then
		echo "setup-namespace: Temporal did not become healthy" >&2
		exit 1
	fi
	sleep 2
done

if temporal operator namespace describe --namespace "$TEMPORAL_NAMESPACE" --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; then
	echo "setup-namespace: namespace ${TEMPORAL_NAMESPACE} exists"
else
	echo "setup-namespace: creating namespace ${TEMPORAL_NAMESPACE} (retention ${TEMPORAL_NAMESPACE_RETENTION})"
	temporal operator namespace create --namespace "$TEMPORAL_NAMESPACE" \
		--retention "$TEMPORAL_NAMESPACE_RETENTION" --address "$TEMPORAL_ADDRESS"
fi

# A new namespace reaches every frontend through a cache: wait until it answers.
attempt=0
until temporal operator search-attribute list --namespace "$TEMPORAL_NAMESPACE" --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do
	attempt=$((attempt + 1))
	if [ "$attempt" -ge 30 ]; then
		echo "setup-namespace: namespace ${TEMPORAL_NAMESPACE} is not usable" >&2
		exit 1
	fi
	sleep 2
done

registered() {
	temporal operator search-attribute list --namespace "$TEMPORAL_NAMESPACE" --address "$TEMPORAL_ADDRESS" \
		--output json | grep -q "\"$1\""
}

# One `create` call per attribute: with several --name flags the CLI registers only the first one
# and still reports success.
created=0
for attribute in $SEARCH_ATTRIBUTES; do
	name=${attribute%%=*}
	type=${attribute#*=}
	if registered "$name"; then
		echo "setup-namespace: search attribute ${name} exists"
		continue
	fi
	echo "setup-namespace: registering search attribute ${name} (${type})"
	temporal operator search-attribute create --namespace "$TEMPORAL_NAMESPACE" --address "$TEMPORAL_ADDRESS" \
		--name "$name" --type "$type"
	created=1
done

for attribute in $SEARCH_ATTRIBUTES; do
	name=${attribute%%=*}
	if ! registered "$name"; then
		echo "setup-namespace: search attribute ${name} is missing after registration" >&2
		exit 1
	fi
done

# Temporal's services cache namespaces and their search attributes (refreshed about every 10 s).
# After a first registration, wait until the frontend accepts a query on every keyword attribute,
# then one more refresh for the other services, so the first cases filed cannot be refused.
if [ "$created" = 1 ]; then
	query=""
	for attribute in $SEARCH_ATTRIBUTES; do
		case ${attribute#*=} in
		Keyword | Text) query="${query:+$query AND }${attribute%%=*} = 'probe'" ;;
		esac
	done
	attempt=0
	until [ -z "$query" ] || temporal workflow list --namespace "$TEMPORAL_NAMESPACE" --address "$TEMPORAL_ADDRESS" \
		--query "$query" --limit 1 >/dev/null 2>&1; do
		attempt=$((attempt + 1))
		if [ "$attempt" -ge 30 ]; then
			echo "setup-namespace: the frontend still rejects: $query" >&2
			exit 1
		fi
		sleep 2
	done
	sleep 15
fi
echo "setup-namespace: done"
