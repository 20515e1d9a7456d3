#!/usr/bin/env bash
# Fulfillment end to end (CreateOrder sent -> CONFIRMED seen), or another scenario of
# `commerce bench` named by SCENARIO (e.g. SCENARIO=order-placement), on two builds of the service, in
# the same minutes and by the same load generator: each build serves in turn on a fresh
# PostgreSQL database and Redis key prefix, and NEW's `commerce bench --target` drives both,
# so a change in the bench's own definitions cannot tilt the comparison.
# Usage: scripts/bench-compare.sh OLD_BINARY NEW_BINARY [seconds=10] [concurrency ...=1 32]
# Output: one JSON line per run with "build" = old|new (tee'd to target/bench/compare.jsonl),
# then the medians' table. Run it on a quiet machine; it says the load at the start and end.
set -euo pipefail
cd "$(dirname "$0")/.."
old="$1" new="$2" seconds="${3:-10}" scenario="${SCENARIO:-fulfillment}"
shift $(( $# < 3 ? $# : 3 ))
concurrencies=("$@")
[ ${#concurrencies[@]} -gt 0 ] || concurrencies=(1 32)
eval "$(scripts/ensure-services.sh)"
mkdir -p target/bench
log=target/bench/compare.jsonl
: > "$log"
echo "{\"scenario\":\"machine\",\"loadavg_start\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" | tee -a "$log"

server_pid=""
# A failed bench leaves no server behind.
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true' EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
admin_psql() { psql "$TEST_DATABASE_URL" -qAt -c "$1"; }

run() { # build binary concurrency round
  local build="$1" binary="$2" concurrency="$3" round="$4"
  local db="bench_cmp_${build}_${concurrency}_${round}_$$" port dir pid
  port="$(free_port)"
  dir="$(mktemp -d)"
  admin_psql "CREATE DATABASE \"$db\""
  DATABASE_URL="${TEST_DATABASE_URL%/*}/$db" REDIS_URL="$TEST_REDIS_URL" REDIS_KEY_PREFIX="$db" \
    HOST=127.0.0.1 PORT="$port" RATE_LIMIT_PER_SECOND=0 RUST_LOG=warn SQLITE_PATH="$dir/unused.db" \
    "$binary" serve > "$dir/serve.log" 2>&1 &
  pid=$!
  server_pid=$pid
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/health" > /dev/null && break
    sleep 0.1
  done
  "$new" bench --target "http://127.0.0.1:$port" --scenario "$scenario" --seconds "$seconds" \
    --concurrency "$concurrency" \
    | python3 -c '
import json, sys
for line in sys.stdin:
    row = json.loads(line) if line.startswith("{") else {}
    if row.get("scenario") == sys.argv[3].replace("-", "_"):
        row["build"], row["round"] = sys.argv[1], int(sys.argv[2])
        print(json.dumps(row), flush=True)
' "$build" "$round" "$scenario" | tee -a "$log"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  server_pid=""
  admin_psql "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
  redis-cli -u "$TEST_REDIS_URL" --scan --pattern "$db:*" | xargs -r redis-cli -u "$TEST_REDIS_URL" unlink > /dev/null
  rm -rf "$dir"
}

# Old and new alternate, three rounds each, so drift in the machine's state hits both alike.
for concurrency in "${concurrencies[@]}"; do
  for round in 1 2 3; do
    run old "$old" "$concurrency" "$round"
    run new "$new" "$concurrency" "$round"
  done
done
echo "{\"scenario\":\"machine\",\"loadavg_end\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" | tee -a "$log"

python3 - "$log" "$scenario" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
runs = [r for r in rows if "build" in r]
print()
print(sys.argv[2])
print()
print("| workers | build | closed loop ops/s | closed p50 ms | open loop p50 / p99 ms | CPU ms per op (server) |")
print("|---|---|---|---|---|---|")
for c in sorted({r["concurrency"] for r in runs}):
    for build in ("old", "new"):
        mine = [r for r in runs if r["concurrency"] == c and r["build"] == build]
        if not mine:
            continue
        med = lambda f: statistics.median(f(r) for r in mine)
        cpu = [r.get("open_loop_cpu_ms_per_op", {}).get("server") for r in mine]
        cpu = statistics.median(x for x in cpu if x is not None) if any(x is not None for x in cpu) else None
        print(f"| {c} | {build} | {med(lambda r: r['throughput_ops_per_sec']):.1f} | "
              f"{med(lambda r: r['closed_loop']['p50_ms']):.1f} | {med(lambda r: r['p50_ms']):.1f} / "
              f"{med(lambda r: r['p99_ms']):.1f} | {cpu} |")
print("(medians of three alternating runs each)")
PY
