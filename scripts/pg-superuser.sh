#!/usr/bin/env bash
# Prints the PostgreSQL superuser the local scripts connect as over TCP: whichever of postgres
# and root the server at HOST:PORT (default 127.0.0.1:5432) lets into database postgres
# (trust auth on these machines). Used by scripts/pg-replica.sh and scripts/pgbouncer.sh.
set -euo pipefail
host="${1:-127.0.0.1}"
port="${2:-5432}"
for user in postgres root; do
  if psql -h "$host" -p "$port" -U "$user" -d postgres -Atc 'SELECT 1' >/dev/null 2>&1; then
    echo "$user"
    exit 0
  fi
done
echo "no superuser (postgres, root) could connect to PostgreSQL on $host:$port" >&2
exit 1
