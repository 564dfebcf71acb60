#!/usr/bin/env bash
# postgres.sh starts a throwaway PostgreSQL for dstack's tests and prints its DSN.
#
#   export DSTACK_TEST_POSTGRES_DSN=$(scripts/postgres.sh)
#
# It is idempotent: it installs PostgreSQL from the distribution when no initdb
# is found under /usr/lib/postgresql/*/bin, creates a cluster in
# ${DSTACK_PG_DIR:-/tmp/dstack-test-pg} (trust authentication: for local tests
# only), starts it on 127.0.0.1:${DSTACK_PG_PORT:-55432} unless it already
# answers, and creates the database dstack_test. Progress goes to stderr; the
# DSN is the last line on stdout. Stop it with:
#
#   pg_ctl -D "${DSTACK_PG_DIR:-/tmp/dstack-test-pg}/data" stop   (as the postgres user when root)
set -euo pipefail

dir=${DSTACK_PG_DIR:-/tmp/dstack-test-pg}
port=${DSTACK_PG_PORT:-55432}
db=dstack_test

log() { echo "postgres.sh: $*" >&2; }

find_bin() {
	# The newest installed major version.
	ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

bin=$(find_bin)
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
	log "PostgreSQL not found under /usr/lib/postgresql; installing it"
	sudo=""
	if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
	$sudo apt-get update >&2
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y postgresql >&2
	bin=$(find_bin)
	if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
		log "installing postgresql did not provide initdb under /usr/lib/postgresql/*/bin"
		exit 1
	fi
fi

# PostgreSQL refuses to run as root: as root, run it as the postgres user.
as_pg() { "$@"; }
if [[ $(id -u) -eq 0 ]]; then
	if ! id postgres >/dev/null 2>&1; then
		log "creating the postgres OS user"
		useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
	fi
	as_pg() { runuser -u postgres -- "$@"; }
fi

mkdir -p "$dir"
if [[ $(id -u) -eq 0 ]]; then chown postgres: "$dir"; fi
chmod 700 "$dir"

# Two runs at once must not both initialise or start the cluster. The server
# must not inherit the lock's descriptor (9>&- below), or it would hold it.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$dir.lock"
	flock 9
fi

data=$dir/data
if [[ ! -s "$data/PG_VERSION" ]]; then
	log "creating a cluster in $data"
	as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >&2 ||
		as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale >&2
fi

ready() { "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; }

if ! ready; then
	log "starting PostgreSQL on 127.0.0.1:$port"
	as_pg "$bin/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=300" \
		start >&2 9>&- || {
		log "PostgreSQL did not start; its log follows"
		tail -n 30 "$dir/postgres.log" >&2 || true
		exit 1
	}
	for _ in $(seq 1 30); do
		ready && break
		sleep 1
	done
	ready || {
		log "PostgreSQL is not accepting connections on 127.0.0.1:$port"
		exit 1
	}
fi

psql=("$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != "1" ]]; then
	log "creating database $db"
	"${psql[@]}" -c "CREATE DATABASE $db" >&2
fi

echo "postgres://postgres@127.0.0.1:$port/$db?sslmode=disable"
