#!/usr/bin/env bash
# Instructions per operation, counted by valgrind's callgrind: repeatable on a loaded machine,
# where wall-clock figures are not. Starts `BINARY serve` on a fresh PostgreSQL database and Redis
# key prefix (rate limit off, as `commerce bench` starts it) and drives it with
# `commerce bench --target`, one worker, so the count is per operation, not per contention.
#
# SIDE=server (default): the server runs under callgrind. It is warmed up, then the
# instructions of a loaded window and of an idle window of the same length (background pollers:
# relay, saga claims, projections, sweeps) are counted, and the difference is divided by the
# operations the server's /metrics counted in the window. Redis commands sent by the server in
# both windows are counted too (MONITOR, on the run's key prefix; commands a Lua script runs are
# not round trips and are left out), so the round trips per operation come out of the same run.
# SIDE=client: the server runs natively and the load generator under callgrind, twice (for no
# time at all, then for `seconds`); the difference of the two totals over the difference of the
# operations is the generator's cost per operation, its start-up and set-up cancelled out. The
# bench starts the server it measures as a child process of its own (`commerce serve`), so the
# two sides never share a process and are counted apart.
#
# Usage: scripts/callgrind-op.sh BINARY SCENARIO [seconds=20]
#   SCENARIO: add-item (counted: cart_operations_total{operation="add_item"}) or fulfillment
#   (counted: orders_status_transitions_total{to="CONFIRMED"}; one order = CreateOrder + its saga).
#   BENCH_BINARY: the load generator (default target/release/commerce, else target/debug); keep
#   it the same build when comparing two servers.
#   TOGGLE='*CartApp*add_item*' (a callgrind --toggle-collect pattern, server side): counts only
#   while such a function is on the stack: no background noise, but only what runs inside its polls.
#   OUT=DIR keeps the callgrind file of the measured window as DIR/SIDE.callgrind (for
#   `callgrind_annotate --inclusive=yes DIR/server.callgrind`).
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "$1"); scenario="$2"; seconds="${3:-20}"; side="${SIDE:-server}"
bench_binary="${BENCH_BINARY:-$( [ -x target/release/commerce ] && echo target/release/commerce || echo target/debug/commerce)}"
eval "$(scripts/ensure-services.sh)"
case "$scenario" in
  add-item) metric='cart_operations_total{operation="add_item",outcome="ok"}' ;;
  fulfillment) metric='orders_status_transitions_total{to="CONFIRMED"}' ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
case "$side" in server | client) ;; *) echo "SIDE must be server or client" >&2; exit 2 ;; esac
run="cg$(date +%s)$$"
db="profile_$run"
psql "$TEST_DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
db_url=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$TEST_DATABASE_URL" "$db")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out=$(mktemp -d)
valgrind=()
if [ "$side" = server ]; then
  valgrind=(valgrind --tool=callgrind ${TOGGLE:+--toggle-collect="$TOGGLE"} --callgrind-out-file="$out/cg.%p")
fi
HOST=127.0.0.1 PORT=$port RATE_LIMIT_PER_SECOND=0 RUST_LOG=warn POOL_TIMEOUT_MS=60000 SQLITE_PATH="$out/x.db" \
  DATABASE_URL="$db_url" REDIS_URL="$TEST_REDIS_URL" REDIS_KEY_PREFIX="$run" \
  "${valgrind[@]}" "$binary" serve >"$out/serve.log" 2>&1 &
pid=$!
monitor=
cleanup() {
  [ -n "$monitor" ] && { kill "$monitor" 2>/dev/null || true; }
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
load() { # seconds [wrapper...]: one worker on one connection
  local s="$1"; shift
  "$@" "$bench_binary" bench --target "http://127.0.0.1:$port" --scenario "$scenario" --concurrency 1 \
    --connections 1 --warmup-seconds 0 --seconds "$s" --open-loop-fraction 0.5 >/dev/null
}
newest() { ls -t "$out"/cg.* | head -1; }
instructions() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }
keep() { [ -n "${OUT:-}" ] && { mkdir -p "$OUT"; cp "$1" "$OUT/$side.callgrind"; }; return 0; }

if [ "$side" = client ]; then
  load 2                                 # warm-up: the server's connections, scripts, caches
  client_run() { # seconds: instructions of a whole bench process, and the operations it made
    local before after
    before=$(count)
    load "$1" valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" 2>/dev/null
    after=$(count)
    echo "$(instructions "$(newest)") $(python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "${before:-0}" "${after:-0}")"
  }
  read -r short_total short_ops < <(client_run 0)
  read -r long_total long_ops < <(client_run "$seconds")
  keep "$(newest)"
  python3 - "$short_total" "$short_ops" "$long_total" "$long_ops" "$bench_binary" "$scenario" <<'PY'
import json, sys
st, so, lt, lo = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
print(json.dumps({"side": "client", "bench_binary": sys.argv[5], "scenario": sys.argv[6],
    "runs": [{"ops": so, "instructions": st}, {"ops": lo, "instructions": lt}],
    "instructions_per_op": round((lt - st) / (lo - so)) if lo > so else None}))
PY
  exit 0
fi

# Redis commands from the server's connections (not those a script runs) on the run's keys.
redis-cli -u "$TEST_REDIS_URL" monitor >"$out/monitor.log" &
monitor=$!
redis_mark() { wc -l <"$out/monitor.log"; }
redis_commands() { # from-line to-line: commands by name
  sed -n "$(($1 + 1)),$2p" "$out/monitor.log" |
    awk -v p="\"$run:" 'index($0, p) && $3 != "lua]" { gsub(/"/, "", $4); n[toupper($4)]++ } END { for (c in n) printf "%s=%d ", c, n[c] }'
}
# vgdb names its pipe after $HOST, which the server was started with: say the same.
total() { # instructions in the dump just written
  HOST=127.0.0.1 callgrind_control -d "$pid" >/dev/null
  sleep 1
  instructions "$(newest)"
}
load 4                                   # warm-up: connections, scripts, caches
HOST=127.0.0.1 callgrind_control -z "$pid" >/dev/null
start=$(date +%s.%N); before=$(count); mark0=$(redis_mark)
load "$seconds"
after=$(count); mark1=$(redis_mark); elapsed=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$(date +%s.%N)")
loaded=$(total)
keep "$(newest)"
HOST=127.0.0.1 callgrind_control -z "$pid" >/dev/null
sleep "$elapsed"
idle=$(total); mark2=$(redis_mark)
python3 - "$loaded" "$idle" "${before:-0}" "${after:-0}" "$elapsed" "$binary" "$scenario" \
  "$(redis_commands "$mark0" "$mark1")" "$(redis_commands "$mark1" "$mark2")" <<'PY'
import json, sys
loaded, idle, before, after, elapsed = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
ops = after - before
counts = lambda text: {k: int(v) for k, v in (w.split("=") for w in text.split())}
busy, quiet = counts(sys.argv[8]), counts(sys.argv[9])
print(json.dumps({"side": "server", "binary": sys.argv[6], "scenario": sys.argv[7], "ops": ops,
    "window_s": round(elapsed, 1), "instructions_loaded": loaded, "instructions_idle_same_length": idle,
    "instructions_per_op": round((loaded - idle) / ops) if ops else None,
    "redis_commands_loaded": busy, "redis_commands_idle": quiet,
    # By command: the background's polls (bus reads, claims) vary between windows; a
    # command the operation sends shows as about a whole number per operation.
    "redis_commands_per_op": {c: round((busy.get(c, 0) - quiet.get(c, 0)) / ops, 2)
        for c in sorted(set(busy) | set(quiet))} if ops else None}))
PY
