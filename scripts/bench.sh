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
concurrency="${2:-64}"
eval "$(scripts/ensure-services.sh)"
out=target/bench
mkdir -p "$out"
log="$out/latest.jsonl"
: > "$log"

echo "# machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r)" >&2
cargo build --release --quiet
(cd tools/peer-bench && cargo build --release --quiet)

scripts/pgbench-ceiling.sh "$TEST_DATABASE_URL" "$seconds" | tee -a "$log"
tools/peer-bench/target/release/peer-bench "$TEST_DATABASE_URL" "$seconds" 32 | tee -a "$log"
target/release/commerce bench --seconds "$seconds" --concurrency "$concurrency" \
  --database-url "$TEST_DATABASE_URL" --redis-url "$TEST_REDIS_URL" | tee -a "$log"

python3 - "$log" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {}
for r in rows:
    by.setdefault(r["scenario"], []).append(r)
ceiling = max(r["tps"] for r in by.get("pgbench_ceiling", [{"tps": 0}]))
peer = by.get("peer_create_order", [{}])[0].get("ops_per_sec", 0)
ours = by.get("order_placement", [{}])[0].get("throughput_ops_per_sec", 0)
print()
print(f"order placement: ours {ours:.0f}/s, peer (cqrs-es/postgres-es) {peer:.0f}/s, "
      f"ratio ours/peer {ours / peer if peer else float('nan'):.2f}; "
      f"pgbench ceiling {ceiling:.0f} tx/s, ours/ceiling {ours / ceiling if ceiling else float('nan'):.2f}")
PY
