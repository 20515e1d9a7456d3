#!/usr/bin/env bash
# A local three-node Redis Cluster for the tests and CI (no persistence, no replicas).
#   eval "$(scripts/redis-cluster.sh start)"   starts it if it is not up, prints the export
#   scripts/redis-cluster.sh stop              shuts its nodes down and removes its directory
#   scripts/redis-cluster.sh status            cluster info of the first node
# Ports: REDIS_CLUSTER_PORT (default 7101) and the two after it; files under
# REDIS_CLUSTER_DIR (default ${TMPDIR:-/tmp}/commerce-redis-cluster-PORT). Idempotent like
# scripts/ensure-services.sh: a cluster whose nodes all say cluster_state:ok is left as it is.
#
# With replicas, for failover tests: six nodes, three masters each with one replica.
#   eval "$(scripts/redis-cluster.sh start-ha)"   prints TEST_REDIS_CLUSTER_HA_URL
#   scripts/redis-cluster.sh stop-ha | status-ha
#   scripts/redis-cluster.sh restart-node PORT    (HA) shuts node PORT down without saving and
#                                                 starts it again with its node identity; a
#                                                 master's replica has taken over meanwhile,
#                                                 and the node comes back as a replica
# Ports: REDIS_CLUSTER_HA_PORT (default 7111) and the five after it.
set -euo pipefail

case "${1:-start}" in
  start-ha | stop-ha | status-ha | restart-node)
    base="${REDIS_CLUSTER_HA_PORT:-7111}"
    count=6
    replicas=1
    export_name=TEST_REDIS_CLUSTER_HA_URL
    ;;
  *)
    base="${REDIS_CLUSTER_PORT:-7101}"
    count=3
    replicas=0
    export_name=TEST_REDIS_CLUSTER_URL
    ;;
esac
dir="${REDIS_CLUSTER_DIR:-${TMPDIR:-/tmp}/commerce-redis-cluster-$base}"
ports=()
for ((i = 0; i < count; i++)); do ports+=("$((base + i))"); done

cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }
cluster_ok() {
  for port in "${ports[@]}"; do
    cli "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
}
print_env() { echo "export $export_name=redis://127.0.0.1:$base"; }

start_node() {
  redis-server --daemonize yes --bind 127.0.0.1 --port "$1" \
    --cluster-enabled yes --cluster-config-file "nodes-$1.conf" --cluster-node-timeout 2000 \
    --save "" --appendonly no --dir "$dir" --dbfilename "dump-$1.rdb" \
    --pidfile "$dir/$1.pid" --logfile "$dir/$1.log" >&2
}

restart_node() {
  local port="$1"
  if [ ! -f "$dir/nodes-$port.conf" ]; then
    echo "node $port is not a node of the cluster in $dir" >&2
    exit 1
  fi
  # A master's replica, which must take over before the master comes back: a master
  # restarted without persistence before that would come back empty and stay master.
  local id replica=""
  id="$(cli "$port" cluster myid)"
  replica="$(cli "$port" cluster nodes | awk -v id="$id" '$4 == id { split($2, a, "[:@]"); print a[2]; exit }')"
  cli "$port" shutdown nosave >/dev/null 2>&1 || true
  for _ in $(seq 1 50); do cli "$port" ping >/dev/null 2>&1 || break; sleep 0.1; done
  if [ -n "$replica" ]; then
    echo "waiting for replica 127.0.0.1:$replica to take over from $port" >&2
    for _ in $(seq 1 300); do
      [ "$(cli "$replica" role 2>/dev/null | head -n 1)" = master ] && break
      sleep 0.1
    done
  fi
  echo "restarting Redis Cluster node 127.0.0.1:$port" >&2
  start_node "$port"
  for _ in $(seq 1 300); do
    if cluster_ok; then
      return
    fi
    sleep 0.1
  done
  echo "the cluster did not reach cluster_state:ok after restarting $port" >&2
  exit 1
}

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
    # A replica keeps the snapshot its master sent it in its dbfilename, and a node loads
    # that file when it starts: a fresh node must not start with a leftover's keys.
    rm -f "$dir/nodes-$port.conf" "$dir/dump-$port.rdb" "$dir/dump.rdb"
    start_node "$port"
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 1 50); do cli "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  echo "creating the cluster" >&2
  redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas "$replicas" --cluster-yes >&2
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
  start | start-ha) start ;;
  stop | stop-ha) stop ;;
  status | status-ha) cli "$base" cluster info ;;
  restart-node) restart_node "${2:?restart-node PORT}" ;;
  *) echo "usage: $0 start|stop|status|start-ha|stop-ha|status-ha|restart-node PORT" >&2; exit 2 ;;
esac
