#!/usr/bin/env bash
# The whole benchmark in one run, on the real backends of this machine:
#   1. pgbench ceiling for our write transaction shape (2 event rows + 1 outbox row);
#   2. the peer: cqrs-es + postgres-es on the same create-order workload;
#   3. `commerce bench` (release build) on PostgreSQL + Redis: every scenario;
# then the ratios. Usage: scripts/bench.sh [seconds] [concurrency]
# Output: JSON lines on stdout (tee'd to target/bench/latest.jsonl) and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
concurrency="${2:-32}"
eval "$(scripts/ensure-services.sh)"
out=target/bench
mkdir -p "$out"
log="$out/latest.jsonl"
: > "$log"

echo "# machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r)" >&2
cargo build --release --quiet
(cd tools/peer-bench && cargo build --release --quiet)

scripts/pgbench-ceiling.sh "$TEST_DATABASE_URL" "$seconds" | tee -a "$log"
tools/peer-bench/target/release/peer-bench "$TEST_DATABASE_URL" "$seconds" "$concurrency" | tee -a "$log"
target/release/commerce bench --seconds "$seconds" --concurrency "$concurrency" \
  --database-url "$TEST_DATABASE_URL" --redis-url "$TEST_REDIS_URL" | tee -a "$log"

python3 - "$log" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {r["scenario"]: r for r in rows}
def tput(name):
    r = by.get(name, {})
    return r.get("throughput_ops_per_sec", r.get("ops_per_sec", r.get("tps", 0))) or 0
def ratio(a, b):
    return a / b if b else float("nan")
ceiling = max([r["tps"] for r in rows if r["scenario"] == "pgbench_ceiling"] or [0])
peer = tput("peer_create_order")
gc, one_tx = tput("store_append_group_commit"), tput("store_append_one_tx")
placement, add_item, hello = tput("order_placement"), tput("add_item"), tput("hello_ceiling")
print()
print(f"create-order command, in-process on our event store: group commit {gc:.0f}/s, one transaction "
      f"each {one_tx:.0f}/s; peer (cqrs-es/postgres-es) {peer:.0f}/s; ratio ours/peer {ratio(gc, peer):.2f} "
      f"(group commit x{ratio(gc, one_tx):.2f}); pgbench ceiling {ceiling:.0f} tx/s, ours/ceiling {ratio(gc, ceiling):.2f}")
print(f"order placement over gRPC (CreateCart + AddItem + CreateOrder, sagas running): {placement:.0f}/s, "
      f"ours/peer {ratio(placement, peer):.2f}")
print(f"AddItem {add_item:.0f}/s = {100 * ratio(add_item, hello):.0f}% of the hello-world tonic ceiling "
      f"({hello:.0f}/s), p99 {by.get('add_item', {}).get('p99_ms')} ms at 70% load")
PY
