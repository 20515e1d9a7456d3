#!/usr/bin/env bash
# Two local PgBouncers in front of the PostgreSQL on 127.0.0.1:5432, for the PgBouncer tests and
# CI (Debian's pgbouncer package, installed here when missing): one in TRANSACTION pooling mode
# on PGBOUNCER_PORT (default 6432), one in SESSION pooling mode on the port after it.
#   eval "$(scripts/pgbouncer.sh start)"   starts them if they are not up, prints the exports
#                                          TEST_PGBOUNCER_URL (transaction) and
#                                          TEST_PGBOUNCER_SESSION_URL (session)
#   scripts/pgbouncer.sh stop              stops them and removes their directories
#   scripts/pgbouncer.sh status            SHOW POOLS of each admin console
# Files under PGBOUNCER_DIR (default ${TMPDIR:-/tmp}/commerce-pgbouncer-PORT), one directory
# per instance. Every database of the server is reachable under its own name (a `*` entry);
# the superuser authenticates as PostgreSQL trusts it here (trust, listed in the auth file).
# Idempotent: an instance that answers is left as it is.
set -euo pipefail

base="${PGBOUNCER_PORT:-6432}"
root="${PGBOUNCER_DIR:-${TMPDIR:-/tmp}/commerce-pgbouncer-$base}"
server_host=127.0.0.1
server_port=5432
# port:mode of each instance.
instances=("$base:transaction" "$((base + 1)):session")

user="$("$(dirname "$0")/pg-superuser.sh" "$server_host" "$server_port")"

print_env() {
  echo "export TEST_PGBOUNCER_URL=postgres://$user@127.0.0.1:$base/test"
  echo "export TEST_PGBOUNCER_SESSION_URL=postgres://$user@127.0.0.1:$((base + 1))/test"
}

up() { psql -h 127.0.0.1 -p "$1" -U "$user" -d pgbouncer -Atc 'SHOW VERSION' >/dev/null 2>&1; }

start_one() { # port, pool mode
  local port="$1" mode="$2" dir="$root/$1"
  if up "$port"; then
    return
  fi
  if [ -f "$dir/pgbouncer.pid" ]; then
    kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
    sleep 0.5
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  cat >"$dir/userlist.txt" <<USERS
"$user" ""
USERS
  cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=$server_host port=$server_port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
pidfile = $dir/pgbouncer.pid
logfile = $dir/pgbouncer.log
auth_type = trust
auth_file = $dir/userlist.txt
admin_users = $user
pool_mode = $mode
max_client_conn = 2000
default_pool_size = 20
; sqlx sends extra_float_digits (and options, when set) at startup; PgBouncer keeps
; DateStyle, TimeZone, client_encoding and application_name per client itself.
ignore_startup_parameters = extra_float_digits,options
INI
  echo "starting PgBouncer ($mode pooling) on 127.0.0.1:$port" >&2
  # PgBouncer refuses to run as root: as the postgres user, who owns its directory.
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$dir"
    runuser -u postgres -- pgbouncer -d "$dir/pgbouncer.ini" >&2
  else
    pgbouncer -d "$dir/pgbouncer.ini" >&2
  fi
  for _ in $(seq 1 50); do
    up "$port" && return
    sleep 0.1
  done
  echo "PgBouncer did not start on $port; its log:" >&2
  tail -n 20 "$dir/pgbouncer.log" >&2 || true
  exit 1
}

start() {
  if ! command -v pgbouncer >/dev/null 2>&1; then
    echo "installing pgbouncer (Debian package)" >&2
    apt-get install -y -qq pgbouncer >&2 || { apt-get update -qq >&2 && apt-get install -y -qq pgbouncer >&2; }
  fi
  mkdir -p "$root"
  [ "$(id -u)" = 0 ] && chmod 0755 "$root"
  for instance in "${instances[@]}"; do
    start_one "${instance%%:*}" "${instance##*:}"
  done
  print_env
}

stop() {
  for instance in "${instances[@]}"; do
    local pidfile="$root/${instance%%:*}/pgbouncer.pid"
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
  done
  rm -rf "$root"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status)
    for instance in "${instances[@]}"; do
      echo "== ${instance##*:} pooling on ${instance%%:*}"
      psql -h 127.0.0.1 -p "${instance%%:*}" -U "$user" -d pgbouncer -c 'SHOW POOLS'
    done
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
