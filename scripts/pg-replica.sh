#!/usr/bin/env bash
# A local PostgreSQL hot standby of the primary on 127.0.0.1:5432, streaming from it, for
# the read-replica tests and CI (DATABASE_READ_URL).
#   eval "$(scripts/pg-replica.sh start)"   makes and starts it if it is not up, prints the export
#   scripts/pg-replica.sh stop              stops it and removes its directory
#   scripts/pg-replica.sh status            pg_stat_wal_receiver of the standby
# Port: PG_REPLICA_PORT (default 5442); files under PG_REPLICA_DIR (default
# ${TMPDIR:-/tmp}/commerce-pg-replica-PORT). Idempotent: a standby that answers and is in
# recovery is left as it is. Uses the Debian binaries of the primary's major version
# (/usr/lib/postgresql/N/bin) and runs them as the postgres user (PostgreSQL refuses root).
#
# pg_basebackup needs a replication connection: pg_hba's `all` does not match the
# `replication` pseudo-database, so when the primary refuses one from 127.0.0.1 this script
# adds `host replication all 127.0.0.1/32 trust` to the primary's pg_hba.conf (the trust
# the primary already gives every local database connection) and reloads it. The primary
# also needs wal_level replica (the default) and a free WAL sender (max_wal_senders).
set -euo pipefail

primary_host=127.0.0.1
primary_port=5432
port="${PG_REPLICA_PORT:-5442}"
dir="${PG_REPLICA_DIR:-${TMPDIR:-/tmp}/commerce-pg-replica-$port}"
data="$dir/data"

user="$("$(dirname "$0")/pg-superuser.sh" "$primary_host" "$primary_port")"
psql_primary() { psql -h "$primary_host" -p "$primary_port" -U "$user" -d postgres -Atc "$1"; }
psql_standby() { psql -h 127.0.0.1 -p "$port" -U "$user" -d postgres -Atc "$1"; }
bindir="/usr/lib/postgresql/$(psql_primary 'SHOW server_version_num' | cut -c1-2)/bin"
# As the owner of the data directory: postgres when we are root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

print_env() {
  echo "export TEST_DATABASE_REPLICA_URL=postgres://$user@127.0.0.1:$port/test"
}

standby_up() {
  [ "$(psql_standby 'SELECT pg_is_in_recovery()' 2>/dev/null)" = t ]
}

allow_replication() {
  if psql "host=$primary_host port=$primary_port user=$user replication=true" \
    -c 'IDENTIFY_SYSTEM' >/dev/null 2>&1; then
    return
  fi
  local hba
  hba="$(psql_primary 'SHOW hba_file')"
  echo "allowing replication connections from 127.0.0.1 in $hba" >&2
  # First, so that no earlier line (a reject, another method) decides for replication.
  sed -i '1i host replication all 127.0.0.1/32 trust' "$hba"
  psql_primary 'SELECT pg_reload_conf()' >/dev/null
  for _ in $(seq 1 50); do
    psql "host=$primary_host port=$primary_port user=$user replication=true" \
      -c 'IDENTIFY_SYSTEM' >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "the primary still refuses replication connections; see $hba" >&2
  exit 1
}

start() {
  if standby_up; then
    print_env
    return
  fi
  if pg_isready -q -h 127.0.0.1 -p "$port" 2>/dev/null && [ ! -f "$data/postmaster.pid" ]; then
    echo "port $port is taken by a PostgreSQL this script did not start" >&2
    exit 1
  fi
  # A leftover of an interrupted start: stopped and made again.
  if [ -f "$data/postmaster.pid" ]; then
    as_owner "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  allow_replication
  mkdir -p "$dir"
  chmod 0755 "$dir"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  echo "copying the primary $primary_host:$primary_port into $data (pg_basebackup)" >&2
  # -R writes standby.signal and primary_conninfo; -X stream copies the WAL made meanwhile.
  as_owner "$bindir/pg_basebackup" -h "$primary_host" -p "$primary_port" -U "$user" \
    -D "$data" -R -X stream -c fast >&2
  # Debian keeps the primary's configuration in /etc, so the copy has none: the standby's
  # own, with the settings a hot standby must at least match taken from the primary.
  as_owner tee "$data/postgresql.conf" >/dev/null <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
max_connections = $(psql_primary 'SHOW max_connections')
max_worker_processes = $(psql_primary 'SHOW max_worker_processes')
max_wal_senders = $(psql_primary 'SHOW max_wal_senders')
max_prepared_transactions = $(psql_primary 'SHOW max_prepared_transactions')
max_locks_per_transaction = $(psql_primary 'SHOW max_locks_per_transaction')
CONF
  as_owner tee "$data/pg_hba.conf" >/dev/null <<HBA
local all all trust
host all all 127.0.0.1/32 trust
HBA
  echo "starting the standby on 127.0.0.1:$port" >&2
  as_owner "$bindir/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 start >&2
  for _ in $(seq 1 100); do
    if standby_up; then
      print_env
      return
    fi
    sleep 0.1
  done
  echo "the standby did not come up in recovery; its log:" >&2
  tail -n 30 "$dir/postgres.log" >&2 || true
  exit 1
}

stop() {
  if [ -f "$data/postmaster.pid" ]; then
    as_owner "$bindir/pg_ctl" -D "$data" -m fast stop >&2 || true
  fi
  rm -rf "$dir"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) psql_standby 'SELECT status, flushed_lsn, pg_last_wal_replay_lsn() FROM pg_stat_wal_receiver' ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
