#!/usr/bin/env bash
# The whole benchmark in one run, on the real backends of this machine:
#   1. pgbench ceiling for our write transaction shape (2 event rows);
#   2. the peer: cqrs-es + postgres-es on the same create-order workload;
#   3. `commerce bench` (release build) on PostgreSQL + Redis: the hello-world ceiling, store
#      append, the event feed's catch-up and the projections' catch-up (both also on SQLite), the cart scenarios (AddItem's open loop at 50 % of its maximum, as its target
#      says), read queries, fulfillment at one worker and at CONCURRENCY workers;
#   4. right after our fulfillment, the Restate saga peer (../shared/peers/restate-saga, both
#      handlers) when its `npm ci` has been done (PEER_RESTATE=path overrides where it is);
#   5. order placement (last: its sagas keep the server busy after it ends);
# then the issue's table and the ratios the targets are stated in.
# Usage: scripts/bench.sh [seconds] [concurrency]   (a short check: scripts/bench.sh 3 8)
# Output: JSON lines on stdout (tee'd to target/bench/latest.jsonl) and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
concurrency="${2:-32}"
restate="${PEER_RESTATE:-$(cd .. && pwd)/shared/peers/restate-saga}"
eval "$(scripts/ensure-services.sh)"
out=target/bench
mkdir -p "$out"
log="$out/latest.jsonl"
: > "$log"

echo "# machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cargo build --release --quiet
(cd tools/peer-bench && cargo build --release --quiet)

bench() {
  target/release/commerce bench --seconds "$seconds" --database-url "$TEST_DATABASE_URL" \
    --redis-url "$TEST_REDIS_URL" "$@" | tee -a "$log"
}

echo "{\"scenario\":\"machine\",\"cores\":$(nproc),\"loadavg_start\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" | tee -a "$log"
scripts/pgbench-ceiling.sh "$TEST_DATABASE_URL" "$seconds" | tee -a "$log"
tools/peer-bench/target/release/peer-bench "$TEST_DATABASE_URL" "$seconds" "$concurrency" | tee -a "$log"
bench --concurrency "$concurrency" --scenario hello-ceiling --scenario store-append \
  --scenario cart-ops --scenario read-queries
# In-process, each on a fresh database: a consumer 100,000 events behind the public feed.
bench --scenario event-catch-up
target/release/commerce bench --scenario event-catch-up | tee -a "$log"
# The projections' catch-up of 300,000 events no bus carried (the sweep alone).
bench --scenario projection-catch-up
target/release/commerce bench --scenario projection-catch-up | tee -a "$log"
bench --concurrency "$concurrency" --open-loop-fraction 0.5 --scenario add-item
# --settle-seconds 11: the backends' counters per order (the README's capacity model) are whole.
bench --concurrency 1 --settle-seconds 11 --scenario fulfillment
bench --concurrency "$concurrency" --settle-seconds 11 --scenario fulfillment

if [ -d "$restate/node_modules/@restatedev/restate-sdk" ]; then
  for handler in placeRuns place; do
    # Its phases as our log lines: scenario restate_<handler>, the rest as it prints it.
    (cd "$restate" && HANDLER="$handler" ./run.sh "$seconds" "$concurrency") \
      | python3 -c '
import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        row = json.loads(line)
        row["scenario"] = "restate_" + sys.argv[1]
        print(json.dumps(row), flush=True)
' "$handler" | tee -a "$log"
  done
else
  echo "bench: no Restate peer at $restate (run npm ci there): its columns stay empty" >&2
fi

bench --concurrency "$concurrency" --scenario order-placement
echo "{\"scenario\":\"machine\",\"loadavg_end\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" | tee -a "$log"

python3 - "$log" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def find(scenario, **match):
    for r in rows:
        if r.get("scenario") == scenario and all(r.get(k) == v for k, v in match.items()):
            return r
    return {}
def tput(r):
    return r.get("throughput_ops_per_sec", r.get("ops_per_sec", r.get("tps", 0))) or 0
def ratio(a, b):
    return a / b if b else float("nan")
def ms(x):
    return "-" if x is None else f"{x:.1f}"
def cpu_total(cpu):
    vals = [v for v in (cpu or {}).values() if isinstance(v, (int, float))]
    return sum(vals) if vals else None
def cpu_text(cpu):
    if not cpu:
        return "-"
    parts = ", ".join(f"{k} {v}" for k, v in cpu.items() if v is not None)
    total = cpu_total(cpu)
    return f"{total:.2f} ms ({parts})" if total is not None else "-"

machine = [r for r in rows if r.get("scenario") == "machine"]
conc = max((r.get("concurrency", 0) for r in rows if r.get("scenario") == "fulfillment"), default=0)
one, many = find("fulfillment", concurrency=1), find("fulfillment", concurrency=conc)
# Each `commerce bench` ends with a line about its server: the one after fulfillment's lines.
fulfillment_rss, last = [], None
for r in rows:
    if r.get("scenario") == "server" and last == "fulfillment" and r.get("peak_rss_mb"):
        fulfillment_rss.append(r["peak_rss_mb"])
    last = r.get("scenario")

def ours_closed(r):
    c = r.get("closed_loop", {})
    return f"{c.get('ops_per_sec', 0):.1f} orders/s, p50 {ms(c.get('p50_ms'))} ms, p99 {ms(c.get('p99_ms'))} ms" if c else "-"
def ours_open(r):
    return f"{ms(r.get('p50_ms'))} / {ms(r.get('p99_ms'))} ms at {r.get('open_loop_rate', 0):.0f}/s" if r else "-"
def restate(handler, phase):
    return find("restate_" + handler, phase=phase)
def restate_closed(handler, phase):
    r = restate(handler, phase)
    return f"{r['orders_per_s']} orders/s, p50 {ms(r.get('p50_ms'))} ms, p99 {ms(r.get('p99_ms'))} ms" if r else "-"
def restate_open(handler):
    r = restate(handler, "open_70pct")
    return f"{ms(r.get('p50_ms'))} / {ms(r.get('p99_ms'))} ms at {r.get('orders_per_s')}/s" if r else "-"
def restate_rss(handler):
    r = restate(handler, "rss")
    return f"server {r.get('restate-server_peak_rss_mb')} MB + endpoint {r.get('endpoint_peak_rss_mb')} MB" if r else "-"
def restate_cpu(handler):
    return cpu_text(restate(handler, f"closed_{conc}").get("cpu_ms_per_order"))

print()
print(f"machine: load average {machine[0].get('loadavg_start') if machine else '?'} at the start, "
      f"{machine[-1].get('loadavg_end') if machine else '?'} at the end")
print()
print(f"| fulfillment | Restate `placeRuns` | Restate `place` | ours |")
print("|---|---|---|---|")
print(f"| one worker, closed loop | {restate_closed('placeRuns', 'one_worker')} | {restate_closed('place', 'one_worker')} | {ours_closed(one)} |")
print(f"| {conc} workers, closed loop | {restate_closed('placeRuns', f'closed_{conc}')} | {restate_closed('place', f'closed_{conc}')} | {ours_closed(many)} |")
print(f"| open loop at 70 % of max, p50 / p99 | {restate_open('placeRuns')} | {restate_open('place')} | {ours_open(many)} |")
print(f"| CPU per order ({conc} workers; ours: open loop) | {restate_cpu('placeRuns')} | {restate_cpu('place')} | {cpu_text(many.get('open_loop_cpu_ms_per_op'))} |")
print(f"| peak RSS | {restate_rss('placeRuns')} | {restate_rss('place')} | {max(fulfillment_rss or [0])} MB (PostgreSQL and Redis not counted) |")

def work_text(r):
    w = r.get("open_loop_backend_work_per_op") or {}
    pg, rd = w.get("postgres") or {}, w.get("redis") or {}
    if not pg and not rd:
        return "-"
    return (f"PostgreSQL {pg.get('transactions')} transactions, {pg.get('rows_written')} rows, "
            f"{pg.get('wal_bytes', 0) / 1024:.1f} KiB WAL; Redis {rd.get('commands')} commands, "
            f"{rd.get('bytes_in', 0) / 1024:.1f} KiB in, {rd.get('bytes_out', 0) / 1024:.1f} KiB out")
print()
print("capacity model inputs, per placed-and-fulfilled order (fulfillment's open loop):")
for r in (one, many):
    if r:
        print(f"- {r.get('concurrency')} workers at {r.get('open_loop_rate', 0):.0f}/s: CPU "
              f"{cpu_text(r.get('open_loop_cpu_ms_per_op'))}; {work_text(r)}")

peer = tput(find("peer_create_order"))
gc, one_tx = tput(find("store_append_group_commit")), tput(find("store_append_one_tx"))
ceiling = max([r["tps"] for r in rows if r.get("scenario") == "pgbench_ceiling"] or [0])
placement, add_item, hello = find("order_placement"), find("add_item"), find("hello_ceiling")
print()
print(f"- fulfillment one worker: our p50 {ms(one.get('closed_loop', {}).get('p50_ms'))} ms vs placeRuns "
      f"{ms(restate('placeRuns', 'one_worker').get('p50_ms'))} ms (target: at most)")
print(f"- fulfillment {conc} workers: ours {tput(many):.0f}/s = "
      f"{ratio(tput(many), restate('placeRuns', f'closed_{conc}').get('orders_per_s', 0)):.2f}x placeRuns "
      f"(target >= 1, aim 2); open loop p99 {ms(many.get('p99_ms'))} ms (target < 50)")
print(f"- order placement over gRPC (CreateCart + AddItem + CreateOrder, sagas running): {tput(placement):.0f}/s, "
      f"CPU per placement {cpu_text(placement.get('open_loop_cpu_ms_per_op'))} (server = commerce, bench = load generator)")
print(f"- AddItem {tput(add_item):.0f}/s = {100 * ratio(tput(add_item), tput(hello)):.0f}% of the hello-world tonic "
      f"ceiling ({tput(hello):.0f}/s, target >= 30 %), p99 {ms(add_item.get('p99_ms'))} ms at 50% load (target < 5)")
for r in rows:
    if r.get("scenario") == "event_catch_up":
        print(f"- event feed catch-up ({r['backend']}): a consumer {r['events']} events behind caught up in "
              f"{r['elapsed_s']} s = {r['events_per_sec']:.0f} events/s (target >= 50,000); RSS "
              f"{r['rss_before_mb']} MB before, {r['rss_peak_mb']} MB peak (server and client in one process)")
    if r.get("scenario") == "projection_catch_up":
        rates = ", ".join(f"{name} {p['events_per_sec']:.0f}" for name, p in r["projections"].items())
        print(f"- projection catch-up ({r['backend']}): {r['events']} events no bus carried, events/s per "
              f"projection: {rates} (target >= 50,000 each); {r['log_reads_per_1000_events']} log reads per "
              f"1000 events; RSS {r['rss_before_mb']} MB before, {r['rss_peak_mb']} MB peak")
print(f"- store append, in-process on our event store: group commit {gc:.0f}/s, one transaction each {one_tx:.0f}/s; "
      f"peer (cqrs-es/postgres-es) {peer:.0f}/s; ours/peer {ratio(gc, peer):.2f} (target 2); "
      f"pgbench ceiling {ceiling:.0f} tx/s, ours/ceiling {ratio(gc, ceiling):.2f}")
PY
