#!/usr/bin/env bash
# Instructions per event of the event feed's catch-up, counted by valgrind's callgrind: repeatable
# on a loaded machine, where wall-clock figures are not. Runs `BINARY bench --scenario
# event-catch-up` under callgrind, zeroes the counters when the bench says the seeding is done
# ("catching up" on stderr), and divides the instructions from there to the end by the events.
# Server and client share the bench's process, so the count is both sides of the stream (the
# feed's reads and mapping, tonic and HTTP/2 on both ends, the client's decoding); PostgreSQL's
# own work is in its processes and not counted (SQLite's is, in-process).
#
# SCENARIO=projection-catch-up counts the projections' catch-up instead (the three runners'
# sweep over a backlog no bus carried: reads, decoding, folds and the read-model writes' client
# side; per event of the log, each applied to three projections).
#
# Usage: [SCENARIO=event-catch-up|projection-catch-up] scripts/callgrind-catch-up.sh BINARY
#        [events=12000] [postgres|sqlite]
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "$1"); events="${2:-12000}"; backend="${3:-postgres}"
scenario="${SCENARIO:-event-catch-up}"
case "$scenario" in
  event-catch-up) size_option=--catch-up-events ;;
  projection-catch-up) size_option=--projection-events ;;
  *) echo "SCENARIO must be event-catch-up or projection-catch-up" >&2; exit 2 ;;
esac
database=()
if [ "$backend" = postgres ]; then
  eval "$(scripts/ensure-services.sh)"
  database=(--database-url "$TEST_DATABASE_URL")
fi
out=$(mktemp -d)
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" \
  "$binary" bench --scenario "$scenario" "$size_option" "$events" "${database[@]}" \
  >"$out/bench.out" 2>"$out/bench.err" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$out"; }
trap cleanup EXIT
until grep -q "catching up" "$out/bench.err"; do
  kill -0 "$pid" 2>/dev/null || { echo "bench ended before catching up:" >&2; cat "$out/bench.err" >&2; exit 1; }
  sleep 0.05
done
callgrind_control -z "$pid" >/dev/null
wait "$pid"
line=$(grep "\"scenario\":\"${scenario//-/_}\"" "$out/bench.out")
total=$(awk '/^(summary|totals):/ {print $2; exit}' "$(ls -t "$out"/cg.* | head -1)")
python3 - "$total" "$line" "$binary" <<'PY'
import json, sys
total, line = int(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"binary": sys.argv[3], "scenario": line["scenario"], "backend": line["backend"], "events": line["events"],
    "instructions": total, "instructions_per_event": round(total / line["events"])}))
PY
