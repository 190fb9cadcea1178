#!/usr/bin/env bash
# Starts (or reuses) a throwaway PostgreSQL cluster for the service tests and prints the
# URL to use, as shell exports on stdout (logs go to stderr):
#
#   eval "$(scripts/start-postgres.sh)"      # sets LRFR_TEST_POSTGRES_URL
#   scripts/start-postgres.sh stop           # stops the cluster (data stays in $LRFR_PG_DIR)
#
# Idempotent: a cluster already running on the port is reused. Needs the PostgreSQL
# server binaries (Debian: postgresql-15, found under /usr/lib/postgresql/*/bin). As root
# the cluster runs as the 'postgres' system user (initdb refuses root).
#
# Settings (environment): LRFR_PG_PORT (54329), LRFR_PG_DIR (/tmp/lrfr-postgres),
# LRFR_PG_DB (lrfr_test), LRFR_PG_USER (lrfr).
set -euo pipefail

PORT="${LRFR_PG_PORT:-54329}"
BASE="${LRFR_PG_DIR:-/tmp/lrfr-postgres}"
DB="${LRFR_PG_DB:-lrfr_test}"
DB_USER="${LRFR_PG_USER:-lrfr}"
DATA="$BASE/data"
SOCKETS="$BASE/run"
LOG="$BASE/postgres.log"

log() { echo "start-postgres: $*" >&2; }

find_bin() {
  if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$dir/pg_ctl" ]]; then echo "$dir"; return; fi
  done
  if command -v pg_ctl >/dev/null 2>&1; then dirname "$(command -v pg_ctl)"; return; fi
  log "no PostgreSQL server binaries (install postgresql, or set PG_BIN)"
  exit 1
}

BIN="$(find_bin)"

# Run a command as the cluster owner: 'postgres' when we are root, ourselves otherwise.
as_owner() {
  if [[ "$(id -u)" == "0" ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

if [[ "${1:-start}" == "stop" ]]; then
  if [[ -f "$DATA/PG_VERSION" ]]; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast stop >&2 || true
  fi
  exit 0
fi

mkdir -p "$BASE" "$SOCKETS"
if [[ "$(id -u)" == "0" ]]; then
  chown postgres: "$BASE" "$SOCKETS"
fi

if [[ ! -f "$DATA/PG_VERSION" ]]; then
  log "initialising a cluster in $DATA"
  as_owner "$BIN/initdb" -D "$DATA" -U "$DB_USER" --auth=trust -E UTF8 --no-locale >&2
fi

if as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "reusing the cluster already running in $DATA"
else
  log "starting PostgreSQL on 127.0.0.1:$PORT (log: $LOG)"
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
    -o "-p $PORT -k $SOCKETS -c listen_addresses=127.0.0.1 -c fsync=off" start >&2
fi

for _ in $(seq 1 30); do
  if "$BIN/pg_isready" -h 127.0.0.1 -p "$PORT" -q; then break; fi
  sleep 1
done
"$BIN/pg_isready" -h 127.0.0.1 -p "$PORT" >&2

if ! "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
  log "creating database $DB"
  "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U "$DB_USER" "$DB"
fi

echo "export LRFR_TEST_POSTGRES_URL=postgresql+psycopg://$DB_USER@127.0.0.1:$PORT/$DB"
