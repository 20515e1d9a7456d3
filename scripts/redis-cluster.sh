#!/usr/bin/env bash
# A local three-node Redis Cluster for the tests and CI (no persistence, no replicas).
#   eval "$(scripts/redis-cluster.sh start)"   starts it if it is not up, prints the export
#   scripts/redis-cluster.sh stop              shuts its nodes down and removes its directory
#   scripts/redis-cluster.sh status            cluster info of the first node
# Ports: REDIS_CLUSTER_PORT (default 7101) and the two after it; files under
# REDIS_CLUSTER_DIR (default ${TMPDIR:-/tmp}/commerce-redis-cluster-PORT). Idempotent like
# scripts/ensure-services.sh: a cluster whose nodes all say cluster_state:ok is left as it is.
set -euo pipefail

base="${REDIS_CLUSTER_PORT:-7101}"
dir="${REDIS_CLUSTER_DIR:-${TMPDIR:-/tmp}/commerce-redis-cluster-$base}"
ports=("$base" "$((base + 1))" "$((base + 2))")

cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }
cluster_ok() {
  for port in "${ports[@]}"; do
    cli "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
}
print_env() { echo "export TEST_REDIS_CLUSTER_URL=redis://127.0.0.1:$base"; }

start() {
  if cluster_ok; then
    print_env
    return
  fi
  mkdir -p "$dir"
  for port in "${ports[@]}"; do
    if cli "$port" ping >/dev/null 2>&1; then
      # Up but not (yet) in a healthy cluster: a leftover of an interrupted start.
      # Only nodes of ours (same directory) are reset; anything else is refused.
      if [ ! -f "$dir/$port.pid" ]; then
        echo "port $port is taken by a Redis this script did not start" >&2
        exit 1
      fi
      cli "$port" flushall >/dev/null 2>&1 || true
      cli "$port" cluster reset hard >/dev/null
      continue
    fi
    echo "starting Redis Cluster node on 127.0.0.1:$port" >&2
    rm -f "$dir/nodes-$port.conf"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" \
      --cluster-enabled yes --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 2000 \
      --save "" --appendonly no --dir "$dir" --pidfile "$dir/$port.pid" \
      --logfile "$dir/$port.log" >&2
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 1 50); do cli "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  echo "creating the cluster" >&2
  redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >&2
  for _ in $(seq 1 100); do
    if cluster_ok; then
      print_env
      return
    fi
    sleep 0.1
  done
  echo "the cluster did not reach cluster_state:ok" >&2
  cli "$base" cluster info >&2 || true
  exit 1
}

stop() {
  for port in "${ports[@]}"; do
    if [ -f "$dir/$port.pid" ]; then
      cli "$port" shutdown nosave >/dev/null 2>&1 || true
    fi
  done
  rm -rf "$dir"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) cli "$base" cluster info ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
