#!/usr/bin/env bash
# Starts (or reuses) a throwaway PostgreSQL cluster for the service tests and makes its
# URL known as LRFR_TEST_POSTGRES_URL. Works run or sourced:
#
#   . scripts/start-postgres.sh                 # sourced: exports LRFR_TEST_POSTGRES_URL
#   eval "$(scripts/start-postgres.sh)"         # run: prints the export line on stdout
#   scripts/start-postgres.sh stop              # stops the cluster (data stays)
#
# Idempotent: a cluster already running in the folder is reused. Needs the PostgreSQL
# server binaries (Debian: postgresql-15, found under /usr/lib/postgresql/*/bin, or
# PG_BIN). As root the cluster runs as the 'postgres' system user (initdb refuses root).
# Logs go to stderr. Settings: LRFR_PG_PORT (54329), LRFR_PG_DIR (/tmp/lrfr-postgres),
# LRFR_PG_DB (lrfr_test), LRFR_PG_USER (lrfr).

_lrfr_pg() (
  # Each step checks its own status: 'set -e' is void when the caller tests this function.
  set -uo pipefail
  port="${LRFR_PG_PORT:-54329}"
  base="${LRFR_PG_DIR:-/tmp/lrfr-postgres}"
  db="${LRFR_PG_DB:-lrfr_test}"
  user="${LRFR_PG_USER:-lrfr}"
  data="$base/data"
  sockets="$base/run"
  logfile="$base/postgres.log"

  log() { echo "start-postgres: $*" >&2; }

  bin="${PG_BIN:-}"
  if [[ -z "$bin" ]]; then
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
      if [[ -x "$dir/pg_ctl" ]]; then bin="$dir"; break; fi
    done
  fi
  if [[ -z "$bin" ]] && command -v pg_ctl >/dev/null 2>&1; then
    bin="$(dirname "$(command -v pg_ctl)")"
  fi
  if [[ -z "$bin" ]]; then
    log "no PostgreSQL server binaries (install postgresql, or set PG_BIN)"
    return 1
  fi

  # The cluster owner: 'postgres' when we are root, ourselves otherwise.
  as_owner() {
    if [[ "$(id -u)" == "0" ]]; then runuser -u postgres -- "$@"; else "$@"; fi
  }

  if [[ "${1:-start}" == "stop" ]]; then
    if [[ -f "$data/PG_VERSION" ]]; then
      as_owner "$bin/pg_ctl" -D "$data" -m fast stop >&2 || true
    fi
    return 0
  fi

  mkdir -p "$base" "$sockets"
  if [[ "$(id -u)" == "0" ]]; then chown postgres: "$base" "$sockets"; fi

  if [[ ! -f "$data/PG_VERSION" ]]; then
    log "initialising a cluster in $data"
    as_owner "$bin/initdb" -D "$data" -U "$user" --auth=trust -E UTF8 --no-locale >&2 \
      || { log "initdb failed"; return 1; }
  fi
  if as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "reusing the cluster running in $data"
  else
    log "starting PostgreSQL on 127.0.0.1:$port (log: $logfile)"
    as_owner "$bin/pg_ctl" -D "$data" -l "$logfile" -w -t 60 \
      -o "-p $port -k $sockets -c listen_addresses=127.0.0.1 -c fsync=off" start >&2 \
      || { log "PostgreSQL did not start (see $logfile)"; return 1; }
  fi
  for _ in $(seq 1 30); do
    if "$bin/pg_isready" -h 127.0.0.1 -p "$port" -q; then break; fi
    sleep 1
  done
  "$bin/pg_isready" -h 127.0.0.1 -p "$port" >&2 || { log "PostgreSQL is not ready"; return 1; }
  if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U "$user" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    log "creating database $db"
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$user" "$db" \
      || { log "cannot create database $db"; return 1; }
  fi
  echo "postgresql+psycopg://$user@127.0.0.1:$port/$db"
)

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  # Sourced: export the URL into the caller's shell; the caller's arguments are not ours.
  if _lrfr_pg_url="$(_lrfr_pg start)"; then
    export LRFR_TEST_POSTGRES_URL="$_lrfr_pg_url"
    unset _lrfr_pg_url
    unset -f _lrfr_pg
  else
    unset -f _lrfr_pg
    return 1
  fi
else
  if [[ "${1:-start}" == "stop" ]]; then
    _lrfr_pg stop
  else
    url="$(_lrfr_pg start)" || exit 1
    echo "export LRFR_TEST_POSTGRES_URL=$url"
  fi
fi
