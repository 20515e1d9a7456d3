#!/usr/bin/env bash
# Instructions per operation of the server, counted by valgrind's callgrind: repeatable on a
# loaded machine, where wall-clock figures are not. Starts `BINARY serve` under callgrind on a
# fresh PostgreSQL database and Redis key prefix, warms it up with `commerce bench --target`,
# then counts the instructions of a loaded window and of an idle window of the same length
# (background pollers), and divides the difference by the operations the server's /metrics
# counted in the window.
#
# Usage: scripts/callgrind-op.sh BINARY SCENARIO [seconds=20]
#   SCENARIO: add-item (counted: cart_operations_total{operation="add_item"}) or fulfillment
#   (counted: orders_status_transitions_total{to="CONFIRMED"}; one order = CreateOrder + its saga).
# The load generator is BENCH_BINARY (default target/release/commerce, else target/debug),
# one worker, so the count is per operation, not per contention. TOGGLE='*CartApp*add_item*'
# (a callgrind --toggle-collect pattern) counts only while such a function is on the stack:
# no background noise, but only what runs inside its polls.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "$1"); scenario="$2"; seconds="${3:-20}"
bench_binary="${BENCH_BINARY:-$( [ -x target/release/commerce ] && echo target/release/commerce || echo target/debug/commerce)}"
eval "$(scripts/ensure-services.sh)"
case "$scenario" in
  add-item) metric='cart_operations_total{operation="add_item",outcome="ok"}' ;;
  fulfillment) metric='orders_status_transitions_total{to="CONFIRMED"}' ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
run="cg$(date +%s)$$"
db="profile_$run"
psql "$TEST_DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
db_url=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$TEST_DATABASE_URL" "$db")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out=$(mktemp -d)
HOST=127.0.0.1 PORT=$port RATE_LIMIT_PER_SECOND=0 RUST_LOG=warn POOL_TIMEOUT_MS=60000 SQLITE_PATH="$out/x.db" \
  DATABASE_URL="$db_url" REDIS_URL="$TEST_REDIS_URL" REDIS_KEY_PREFIX="$run" \
  valgrind --tool=callgrind ${TOGGLE:+--toggle-collect="$TOGGLE"} --callgrind-out-file="$out/cg.%p" "$binary" serve >"$out/serve.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  psql "$TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -u "$TEST_REDIS_URL" --scan --pattern "$run:*" | xargs -r redis-cli -u "$TEST_REDIS_URL" unlink >/dev/null
  rm -rf "$out"
}
trap cleanup EXIT
# Under callgrind the server runs some 50-100 times slower: generous timeouts, and wait until it
# answers at all (on a busy machine its health may say degraded for a while: slow pools).
answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" != 000 ]; }
for _ in $(seq 600); do answers && break; sleep 0.5; done
answers || { echo "server does not answer:" >&2; tail -5 "$out/serve.log" >&2; exit 1; }
count() { curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$metric" 'index($0, m) == 1 {print $2}' | head -1; }
load() {
  "$bench_binary" bench --target "http://127.0.0.1:$port" --scenario "$scenario" --concurrency 1 \
    --connections 1 --warmup-seconds 0 --seconds "$1" --open-loop-fraction 0.5 >/dev/null
}
# vgdb names its pipe after $HOST, which the server was started with: say the same.
total() { # instructions in the dump just written
  HOST=127.0.0.1 callgrind_control -d "$pid" >/dev/null
  sleep 1
  local f; f=$(ls -t "$out"/cg.* | head -1)
  awk '/^(summary|totals):/ {print $2; exit}' "$f"
}
load 4                                   # warm-up: connections, scripts, caches
HOST=127.0.0.1 callgrind_control -z "$pid" >/dev/null
start=$(date +%s.%N); before=$(count)
load "$seconds"
after=$(count); elapsed=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$(date +%s.%N)")
loaded=$(total)
HOST=127.0.0.1 callgrind_control -z "$pid" >/dev/null
sleep "$elapsed"
idle=$(total)
python3 - "$loaded" "$idle" "${before:-0}" "${after:-0}" "$elapsed" "$binary" "$scenario" <<'PY'
import json, sys
loaded, idle, before, after, elapsed = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
ops = after - before
print(json.dumps({"binary": sys.argv[6], "scenario": sys.argv[7], "ops": ops, "window_s": round(elapsed, 1),
    "instructions_loaded": loaded, "instructions_idle_same_length": idle,
    "instructions_per_op": round((loaded - idle) / ops) if ops else None}))
PY
