#!/usr/bin/env bash
# Starts PostgreSQL and Redis on 127.0.0.1 if they are down,
# then prints the TEST_DATABASE_URL / TEST_REDIS_URL exports for the test suite.
set -euo pipefail

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start >&2
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis" >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2
  for _ in $(seq 1 30); do redis-cli ping >/dev/null 2>&1 && break; sleep 1; done
fi

# Trust auth: whichever of postgres/root exists and may create databases.
for user in postgres root; do
  if psql -h 127.0.0.1 -U "$user" -d test -Atc 'SELECT 1' >/dev/null 2>&1; then
    echo "export TEST_DATABASE_URL=postgres://$user@127.0.0.1:5432/test"
    echo "export TEST_REDIS_URL=redis://127.0.0.1:6379"
    exit 0
  fi
done
echo "no PostgreSQL user could connect to database test" >&2
exit 1
