#!/usr/bin/env bash
# Starts a throwaway PostgreSQL (Debian's) for the ledger tests on 127.0.0.1:$1, trusting local
# connections, in a fresh data folder; prints the URL of an empty database. Stop it with
# `.ci/postgres.sh stop DATADIR`. Installs the server from Debian if it is missing.
set -euo pipefail
if [ "${1:-}" = "stop" ]; then
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  runuser -u postgres -- "$bin/pg_ctl" -D "$2" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$2"
  exit 0
fi
port=${1:-55432}
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
data=$(mktemp -d /tmp/hashsink-pg.XXXXXX)
chown postgres "$data"
runuser -u postgres -- "$bin/initdb" -D "$data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
  -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=on" start >/dev/null
runuser -u postgres -- "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres hashsink_test
echo "$data postgres://postgres@127.0.0.1:$port/hashsink_test"
