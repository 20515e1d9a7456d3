#!/usr/bin/env bash
# Statements per order: what one fulfilled order costs PostgreSQL, counted, not timed, so the
# figure holds on a busy machine too. Serves BINARY on a fresh database with every statement of
# that database logged (log_min_duration_statement = 0 for it alone), drives it with
# `commerce bench --scenario fulfillment`, then sorts the logged statements into kinds and divides
# by the orders placed. Also gives PostgreSQL's own count of committed transactions per order.
# Usage: scripts/count-statements.sh BINARY [concurrency=32] [seconds=6]
# Needs to read PostgreSQL's log (root, or a member of group adm): LOG below.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="$1" concurrency="${2:-32}" seconds="${3:-6}"
log="${LOG:-/var/log/postgresql/postgresql-15-main.log}"
eval "$(scripts/ensure-services.sh)"
db="stmt_count_$$"
admin_psql() { psql "$TEST_DATABASE_URL" -qAt -c "$1"; }
db_psql() { psql "${TEST_DATABASE_URL%/*}/$db" -qAt -c "$1"; }
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
dir="$(mktemp -d)"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  admin_psql "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
  redis-cli -u "$TEST_REDIS_URL" --scan --pattern "$db:*" | xargs -r redis-cli -u "$TEST_REDIS_URL" unlink > /dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

admin_psql "CREATE DATABASE \"$db\""
DATABASE_URL="${TEST_DATABASE_URL%/*}/$db" REDIS_URL="$TEST_REDIS_URL" REDIS_KEY_PREFIX="$db" \
  HOST=127.0.0.1 PORT="$port" RATE_LIMIT_PER_SECOND=0 RUST_LOG=warn SQLITE_PATH="$dir/unused.db" \
  "$binary" serve > "$dir/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/health" > /dev/null && break
  sleep 0.1
done
# Migrations and startup are not counted: logging starts now, for new sessions of the database,
# so the server's pool is recycled by a restart with the setting in place.
admin_psql "ALTER DATABASE \"$db\" SET log_min_duration_statement = 0"
kill "$pid"; wait "$pid" 2>/dev/null || true
offset="$(stat -c %s "$log")"
DATABASE_URL="${TEST_DATABASE_URL%/*}/$db" REDIS_URL="$TEST_REDIS_URL" REDIS_KEY_PREFIX="$db" \
  HOST=127.0.0.1 PORT="$port" RATE_LIMIT_PER_SECOND=0 RUST_LOG=warn SQLITE_PATH="$dir/unused.db" \
  "$binary" serve >> "$dir/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/health" > /dev/null && break
  sleep 0.1
done
commits_before="$(db_psql "SELECT pg_stat_clear_snapshot(); SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()" | tail -1)"
"$binary" bench --target "http://127.0.0.1:$port" --scenario fulfillment --seconds "$seconds" \
  --concurrency "$concurrency" > "$dir/bench.jsonl"
# The sagas still running finish, so that every counted order paid for all of its steps.
for _ in $(seq 1 100); do
  [ "$(db_psql "SELECT count(*) FROM sagas WHERE status NOT IN ('COMPLETED', 'COMPENSATED', 'FAILED', 'COMPENSATION_FAILED')")" = 0 ] && break
  sleep 0.1
done
sleep 2 # the projections and the relay catch up
kill "$pid"; wait "$pid" 2>/dev/null || true
pid=""
sleep 1.2 # PostgreSQL reports a backend's counts at most once a second
commits_after="$(db_psql "SELECT pg_stat_clear_snapshot(); SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()" | tail -1)"
orders="$(db_psql "SELECT count(*) FROM sagas")"
completed="$(db_psql "SELECT count(*) FROM sagas WHERE status = 'COMPLETED'")"
tail -c +"$((offset + 1))" "$log" > "$dir/statements.log"

python3 - "$dir/statements.log" "$db" "$orders" "$completed" "$commits_before" "$commits_after" "$concurrency" <<'PY'
import collections, re, sys
path, db, orders, completed, before, after, concurrency = sys.argv[1:]
orders, commits = int(orders), int(after) - int(before)
# A statement is counted once, at its execute (extended protocol) or as a simple query. A
# prepared statement's execute names it only: its text is in the parse logged by the same backend.
line_re = re.compile(r"\[(\d+)\] \S+@" + re.escape(db) + r" LOG:  duration: [0-9.]+ ms  (parse|execute|statement) ?([^:]*): (.*)")
prepared = {}
kinds = [
    ("BEGIN", r"^BEGIN"),
    ("COMMIT", r"^COMMIT"),
    ("ROLLBACK", r"^ROLLBACK"),
    ("saga step write (fenced, with its steps and attempts)", r"WITH s AS \(UPDATE sagas SET"),
    ("saga claim", r"WITH c AS \(UPDATE sagas SET lease_owner"),
    ("saga lease release", r"^UPDATE sagas SET lease_owner = NULL"),
    ("saga insert (with its first write when handed over)", r"^INSERT INTO sagas|^WITH s AS \(INSERT INTO sagas"),
    ("event append (units of work)", r"INSERT INTO events"),
    ("idempotency key", r"idempotency_keys"),
    ("relay (outbox, before migration 0012)", r"outbox"),
    ("relay cursor", r"relay_"),
    ("read-model upsert (guarded by the table's generation)", r"^WITH checked AS \(SELECT"),
    ("projection checkpoint", r"projection_checkpoints"),
    ("read-model upsert", r"^(WITH moved AS .*)?INSERT INTO (order_details|customer_orders|cart_conversions)"),
    ("read-model row read", r"FROM (order_details|customer_orders|cart_conversions)"),
    ("stream version", r"max\(version\)|MAX\(version\)"),
    ("order stream read", r"FROM events WHERE stream_id"),
    ("settled log read", r"FROM events"),
    ("event consumers", r"event_consumers"),
    ("advisory lock", r"pg_try_advisory|pg_advisory"),
]
counts = collections.Counter()
samples = {}
def entries(path):
    """The logged statements, a statement's continuation lines (a tab first) joined to it."""
    entry = None
    for line in open(path, errors="replace"):
        if line.startswith("\t") and entry:
            entry[3] = (entry[3] + " " + line.strip()).strip()
            continue
        if entry:
            yield entry
        m = line_re.search(line)
        entry = list(m.groups()) if m else None
    if entry:
        yield entry

for backend, step, name, sql in entries(path):
    if step == "parse":
        prepared[(backend, name)] = sql
        continue
    if step == "execute" and not sql:
        sql = prepared.get((backend, name), "")
    for kind, pattern in kinds:
        if re.search(pattern, sql):
            break
    else:
        kind = "other: " + sql[:70]
    counts[kind] += 1
    samples.setdefault(kind, sql[:120])
total = sum(counts.values())
print(f"fulfillment at {concurrency} workers: {orders} orders ({completed} COMPLETED)")
print(f"statements per order: {total / orders:.1f}; committed transactions per order (pg_stat_database): {commits / orders:.1f}")
print()
print("| statements per order | kind |")
print("|---|---|")
for kind, n in counts.most_common():
    print(f"| {n / orders:.2f} | {kind} |")
PY
