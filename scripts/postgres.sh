#!/usr/bin/env bash
# postgres.sh makes sure a PostgreSQL server answers on 127.0.0.1:5432 and
# lets user postgres in without a password from 127.0.0.1, then prints the URL
# the tests take in DLM_TEST_POSTGRES:
#
#   export DLM_TEST_POSTGRES="$(scripts/postgres.sh)"
#
# It is idempotent: where such a server already runs it changes nothing. On a
# fresh Debian 12 machine (as root, as CI runs) it installs PostgreSQL with
# apt-get, starts the cluster and adds a trust rule for postgres@127.0.0.1.
# Progress goes to stderr; only the URL goes to stdout.
set -euo pipefail

HOST=127.0.0.1
PORT=5432
URL="postgres://postgres@${HOST}:${PORT}/postgres?sslmode=disable"

log() { echo "postgres.sh: $*" >&2; }

answers() { (exec 3<>"/dev/tcp/${HOST}/${PORT}") 2>/dev/null; }

# connects reports whether user postgres gets in without a password.
connects() {
	command -v psql >/dev/null || return 0 # no client to ask: assume so
	PGCONNECT_TIMEOUT=5 psql "$URL" -XAtqc 'SELECT 1' </dev/null >/dev/null 2>&1
}

cluster_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n1; }

start_cluster() {
	local v=$1
	log "starting cluster $v/main"
	pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null ||
		pg_ctlcluster "$v" main start
}

trust_local() {
	local v=$1 hba="/etc/postgresql/$1/main/pg_hba.conf"
	local rule="host all postgres ${HOST}/32 trust"
	if ! grep -qxF "$rule" "$hba"; then
		log "adding '$rule' to $hba"
		# The first matching line wins: put the rule first.
		{ echo "$rule # added by dlm scripts/postgres.sh"; cat "$hba"; } >"$hba.new"
		chown --reference="$hba" "$hba.new"
		chmod --reference="$hba" "$hba.new"
		mv "$hba.new" "$hba"
	fi
	pg_ctlcluster "$v" main reload
}

wait_ready() {
	for _ in $(seq 1 120); do
		if command -v pg_isready >/dev/null; then
			pg_isready -q -h "$HOST" -p "$PORT" && return 0
		elif answers; then
			return 0
		fi
		sleep 0.5
	done
	log "PostgreSQL did not become ready on ${HOST}:${PORT}"
	return 1
}

if answers && connects; then
	log "PostgreSQL already answers on ${HOST}:${PORT}"
	echo "$URL"
	exit 0
fi

if ! answers; then
	if [ -z "$(cluster_version)" ] || ! command -v pg_ctlcluster >/dev/null; then
		log "installing PostgreSQL with apt-get"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >&2
		apt-get install -y -qq postgresql >&2
	fi
	v=$(cluster_version)
	if [ -z "$v" ]; then
		log "no PostgreSQL cluster in /etc/postgresql after installing"
		exit 1
	fi
	if [ ! -d "/etc/postgresql/$v/main" ]; then
		log "creating cluster $v/main"
		pg_createcluster "$v" main >&2
	fi
	# The package may have started it already.
	answers || start_cluster "$v" >&2
	wait_ready
fi

if ! connects; then
	v=$(cluster_version)
	if [ -z "$v" ]; then
		log "something answers on ${HOST}:${PORT} but refuses postgres, and no local cluster to configure"
		exit 1
	fi
	trust_local "$v" >&2
	wait_ready
	if ! connects; then
		log "user postgres still cannot connect to ${HOST}:${PORT}"
		exit 1
	fi
fi

echo "$URL"
