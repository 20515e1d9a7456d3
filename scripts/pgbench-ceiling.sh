#!/usr/bin/env bash
# The database's ceiling for our write transaction shape, measured with pgbench:
# one transaction = 2 event rows (synchronous commit on), at 32 and 64 clients. (Before the relay
# read the settled log, 2026-12-06, the shape had 1 outbox row more.)
# Usage: scripts/pgbench-ceiling.sh [DATABASE_URL] [seconds]
# Prints one JSON line per client count.
set -euo pipefail
url="${1:-${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}}"
seconds="${2:-10}"
db="pgbench_ceiling_$$"
export PGOPTIONS="-c client_min_messages=warning"
admin="$url"
psql "$admin" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
target="${url%/*}/$db"
trap 'psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
psql "$target" -q <<'SQL'
CREATE TABLE events (
  global_position BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL UNIQUE, stream_id UUID NOT NULL,
  version BIGINT NOT NULL, event_type TEXT NOT NULL, schema_version INT NOT NULL,
  payload JSONB NOT NULL, metadata JSONB NOT NULL, xid XID8 NOT NULL DEFAULT pg_current_xact_id(),
  recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(), UNIQUE (stream_id, version));
SQL
script=$(mktemp)
cat > "$script" <<'SQL'
\set n random(1, 1000000000)
BEGIN;
INSERT INTO events (event_id, stream_id, version, event_type, schema_version, payload, metadata)
  VALUES (gen_random_uuid(), md5(:n::text || clock_timestamp()::text)::uuid, 1, 'OrderCreated', 1,
          '{"items":[{"product_id":"sku-1","quantity":2,"unit_price":"29.99"}],"total":"59.98"}', '{}');
INSERT INTO events (event_id, stream_id, version, event_type, schema_version, payload, metadata)
  VALUES (gen_random_uuid(), md5(:n::text || 'b' || clock_timestamp()::text)::uuid, 2, 'SagaStarted', 1, '{}', '{}');
COMMIT;
SQL
for clients in 32 64; do
  tps=$(pgbench -n -M prepared -c "$clients" -j 2 -T "$seconds" -f "$script" "$target" 2>/dev/null \
        | awk '/^tps/ {print $3; exit}')
  echo "{\"scenario\":\"pgbench_ceiling\",\"clients\":$clients,\"seconds\":$seconds,\"tps\":$tps}"
done
rm -f "$script"
