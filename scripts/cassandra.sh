#!/usr/bin/env bash
# A throwaway local Apache Cassandra cluster (1..9 nodes on 127.0.0.1 .. 127.0.0.N), run from its Maven
# Central jars with the installed Java 17: for tests and benchmarks, NOT for real data.
#
#   scripts/cassandra.sh fetch                        download the jars into the cache (idempotent)
#   scripts/cassandra.sh up     [--nodes N] [--dir D] [--port P] [--storage-port S] [--jmx-port J]
#                               [--keyspace K]        start every node that is not running; prints the URL
#   scripts/cassandra.sh down   [--dir D] [--purge]   stop every node (--purge: SIGKILL, then delete the dir)
#   scripts/cassandra.sh status [--dir D]             one line per node; exit 1 unless all are running
#   scripts/cassandra.sh url    [--dir D]             the TRACING_STORE_URL of the cluster in D
#   scripts/cassandra.sh kill   --node I [--dir D]    SIGKILL node I (fault tests)
#   scripts/cassandra.sh start  --node I [--dir D]    start node I of the existing cluster in D again
#
# Layout: node I listens on 127.0.0.I (the whole 127.0.0.0/8 range is loopback on Linux): CQL on port P
# (default 9042) and inter-node traffic on port S (default 7000) on every address, JMX on 127.0.0.1 port
# J+I-1 (default J 7199). One cluster, node 1 is the seed, replication factor min(N, 3) in the URL.
# D (default .run/cassandra in the checkout) holds cluster.env (the options of `up`, reused by every
# later command, so ports and node count never change under existing data) and node<I>/ with conf/, data/,
# commitlog/, hints/, saved_caches/, cdc_raw/, logs/system.log (the JVM's stdout and stderr) and pid.
#
# Nodes start one after another: each must log "Startup complete" while its pid is alive (a joining node
# needs the previous ones up), or `up` fails after TRACING_CASSANDRA_TIMEOUT_S (default 180) per node with
# the tail of that node's log. The JVMs run detached (own session, stdio to their log file), so they never
# hold a caller's terminal or pipe open. `down` sends SIGTERM to every node, then SIGKILL after 30 s
# (`down --purge` SIGKILLs at once: a clean shutdown only flushes data that is deleted next); a
# pid file only counts when that pid is a Cassandra JVM of this very node dir (a stale pid reused by another
# process is never signalled).
#
# Sized for tests: heap -Xms256m -Xmx${TRACING_CASSANDRA_HEAP:-768m}, small memtables and caches, few
# threads, no snapshots on drop/truncate, no waiting for gossip to settle (single-machine clusters are
# settled at once), a short ring delay for joining nodes.
# Environment: TRACING_CACHE_DIR (jar cache, default ~/.cache/tracing), TRACING_CASSANDRA_HEAP,
# TRACING_CASSANDRA_TIMEOUT_S, TRACING_CASSANDRA_JVM_OPTS (more JVM options, after the script's own).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pom="$root/deploy/cassandra/pom.xml"
version=$(sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$pom")
cache="${TRACING_CACHE_DIR:-$HOME/.cache/tracing}/cassandra-$version"
heap="${TRACING_CASSANDRA_HEAP:-768m}"
timeout_s="${TRACING_CASSANDRA_TIMEOUT_S:-180}"
stop_timeout_s=30

dir="$root/.run/cassandra"
purge=0
node=""
# Options of `up`: defaults, then cluster.env of an existing dir, then the command line.
declare -A given=()
nodes=1
port=9042
storage_port=7000
jmx_port=7199
keyspace=tracing

log() { printf 'cassandra: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=lib/jvm.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/jvm.sh"
usage() {
  echo "usage: cassandra.sh fetch|up|down|status|url|kill|start [--nodes N] [--dir D] [--port P]" \
    "[--storage-port S] [--jmx-port J] [--keyspace K] [--node I] [--purge]" >&2
  exit 2
}

cmd=${1:-}
[ $# -gt 0 ] && shift
while [ $# -gt 0 ]; do
  case "$1" in --purge) ;; *) [ $# -ge 2 ] || usage ;; esac
  case "$1" in
    --nodes) given[nodes]=$2; shift 2 ;;
    --port) given[port]=$2; shift 2 ;;
    --storage-port) given[storage_port]=$2; shift 2 ;;
    --jmx-port) given[jmx_port]=$2; shift 2 ;;
    --keyspace) given[keyspace]=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --node) node=$2; shift 2 ;;
    --purge) purge=1; shift ;;
    *) echo "cassandra.sh: unknown option $1" >&2; usage ;;
  esac
done

number() { case "$2" in '' | *[!0-9]*) die "$1 must be a number, got '$2'" ;; esac; }
for key in nodes port storage_port jmx_port; do
  if [ -n "${given[$key]:-}" ]; then
    number "--${key//_/-}" "${given[$key]}"
    if [ "$key" != nodes ] && { [ "${given[$key]}" -lt 1 ] || [ "${given[$key]}" -gt 65526 ]; }; then
      die "--${key//_/-} must be 1..65526"
    fi
  fi
done
# the keyspace only names the URL's keyspace (what the store creates), as the URL parser takes it
if [ -n "${given[keyspace]:-}" ] && ! [[ ${given[keyspace]} =~ ^[a-z][a-z0-9_]{0,47}$ ]]; then
  die "--keyspace must be a lower-case CQL name (a letter, then up to 47 letters, digits or _), got '${given[keyspace]}'"
fi
if [ -n "${given[nodes]:-}" ] && { [ "${given[nodes]}" -lt 1 ] || [ "${given[nodes]}" -gt 9 ]; }; then
  die "--nodes must be 1..9"
fi

if [ "$cmd" = up ]; then mkdir -p "$dir"; fi
if [ -d "$dir" ]; then dir=$(cd "$dir" && pwd); fi
env_file="$dir/cluster.env"

# The cluster's options: cluster.env when the dir holds a cluster (an explicit option that disagrees with
# it is an error: the data was laid out for those), else the defaults and the command line.
load_options() {
  if [ -f "$env_file" ]; then
    local key value
    while IFS='=' read -r key value; do
      case "$key" in nodes | port | storage_port | jmx_port | keyspace) printf -v "$key" '%s' "$value" ;; esac
    done <"$env_file"
    for key in "${!given[@]}"; do
      if [ "$key" = keyspace ]; then keyspace=${given[keyspace]}; continue; fi  # not part of the cluster
      if [ "${given[$key]}" != "${!key}" ]; then
        die "$dir holds a cluster with $key=${!key} (asked ${given[$key]}): use it as is, or down --purge first"
      fi
    done
  else
    for key in "${!given[@]}"; do printf -v "$key" '%s' "${given[$key]}"; done
  fi
}

address() { echo "127.0.0.$1"; }
node_dir() { echo "$dir/node$1"; }

url() {
  local hosts="" i
  for i in $(seq 1 "$nodes"); do hosts="$hosts${hosts:+,}$(address "$i")"; done
  local rf=$((nodes < 3 ? nodes : 3))
  echo "cassandra://$hosts:$port/$keyspace?replication_factor=$rf"
}

fetch() { fetch_jars "Apache Cassandra $version" "$pom" "$cache"; }

# The pid of node $1 when it is a live Cassandra JVM of this node dir; nothing (and status 1) otherwise.
node_pid() { jvm_pid "$(node_dir "$1")/pid" "-Dcassandra.storagedir=$(node_dir "$1")"; }

write_config() {
  local i=$1 home
  home=$(node_dir "$i")
  mkdir -p "$home/conf" "$home/data" "$home/commitlog" "$home/hints" "$home/saved_caches" "$home/cdc_raw" \
    "$home/logs"
  local rf=$((nodes < 3 ? nodes : 3))
  cat >"$home/conf/cassandra.yaml" <<YAML
# written by scripts/cassandra.sh on every start of this node: edits here are lost
cluster_name: 'tracing-test'
num_tokens: 16
allocate_tokens_for_local_replication_factor: $rf
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
data_file_directories: [$home/data]
commitlog_directory: $home/commitlog
saved_caches_directory: $home/saved_caches
hints_directory: $home/hints
cdc_raw_directory: $home/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 16MiB
commitlog_total_space: 256MiB
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$(address 1):$storage_port"
listen_address: $(address "$i")
rpc_address: $(address "$i")
storage_port: $storage_port
native_transport_port: $port
start_native_transport: true
endpoint_snitch: SimpleSnitch
# a test cluster: small memory, few threads, nothing kept on drop or truncate
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
key_cache_size: 16MiB
row_cache_size: 0MiB
counter_cache_size: 0MiB
file_cache_size: 32MiB
networking_cache_size: 16MiB
prepared_statements_cache_size: 8MiB
concurrent_reads: 8
concurrent_writes: 16
concurrent_counter_writes: 4
concurrent_compactors: 1
memtable_flush_writers: 1
native_transport_max_threads: 32
auto_snapshot: false
YAML
  cat >"$home/conf/logback.xml" <<XML
<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
XML
}

# Start node $1 and wait until it logged "Startup complete" while alive.
start_node() {
  local i=$1 home pid
  home=$(node_dir "$i")
  if pid=$(node_pid "$i"); then log "node$i already running (pid $pid)"; return 0; fi
  write_config "$i"
  local logfile="$home/logs/system.log"
  if [ -s "$logfile" ]; then mv "$logfile" "$logfile.previous"; fi
  : >"$logfile"
  rm -f "$home/pid"
  local jvm=(
    "-Xms256m" "-Xmx$heap" -Xss256k -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1
    -XX:+HeapDumpOnOutOfMemoryError "-XX:HeapDumpPath=$home/logs" "-XX:ErrorFile=$home/logs/hs_err_%p.log"
    -XX:+PerfDisableSharedMem -Djava.net.preferIPv4Stack=true -Djava.awt.headless=true
    -ea -da:net.openhft... -XX:+UseThreadPriorities
    -Djdk.attach.allowAttachSelf=true
  )
  local mod
  for mod in java.base/jdk.internal.misc java.management.rmi/com.sun.jmx.remote.internal.rmi \
    java.rmi/sun.rmi.registry java.rmi/sun.rmi.server java.sql/java.sql java.base/java.lang.ref \
    jdk.unsupported/sun.misc jdk.compiler/com.sun.tools.javac.file jdk.attach/sun.tools.attach; do
    jvm+=(--add-exports "$mod=ALL-UNNAMED")
  done
  for mod in java.base/java.lang.module java.base/jdk.internal.loader java.base/jdk.internal.ref \
    java.base/jdk.internal.reflect java.base/jdk.internal.math java.base/jdk.internal.module \
    java.base/jdk.internal.util.jar jdk.management/com.sun.management.internal java.base/sun.nio.ch \
    java.base/java.io java.base/java.lang.reflect jdk.compiler/com.sun.tools.javac java.base/java.lang \
    java.base/java.util; do
    jvm+=(--add-opens "$mod=ALL-UNNAMED")
  done
  jvm+=(
    -Dio.netty.tryReflectionSetAccessible=true -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
    "-Dcassandra.config=file://$home/conf/cassandra.yaml" "-Dlogback.configurationFile=$home/conf/logback.xml"
    "-Dcassandra.storagedir=$home" "-Dcassandra.logdir=$home/logs" -Dcassandra-foreground=yes
    "-Dcassandra.jmx.local.port=$((jmx_port + i - 1))"
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=2000
  )
  # extra JVM options last, so they win (e.g. TRACING_CASSANDRA_JVM_OPTS='-XX:TieredStopAtLevel=1')
  read -r -a extra <<<"${TRACING_CASSANDRA_JVM_OPTS:-}"
  jvm+=("${extra[@]}" -cp "$cache/lib/*" org.apache.cassandra.service.CassandraDaemon)
  # A new session whose shell records its own pid, then becomes the JVM (exec keeps the pid); stdin from
  # /dev/null and all output to the log, so nothing of the caller's stays open in the JVM.
  # As root, Cassandra mlockall()s its whole address space (CAP_IPC_LOCK ignores the memlock limit): a
  # test node must not pin ~700 MiB, so the JVM runs without that capability, as a non-root user would.
  local nolock=()
  if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then nolock=(setpriv --bounding-set=-ipc_lock); fi
  (cd "$home" && exec setsid "${nolock[@]}" bash -c 'echo $$ > "$0"; exec java "$@"' "$home/pid" "${jvm[@]}") \
    </dev/null >>"$logfile" 2>&1 &
  local start=$SECONDS
  until [ -s "$home/pid" ]; do
    [ $((SECONDS - start)) -lt 10 ] || die "node$i: no pid file after 10s"
    sleep 0.05
  done
  until grep -q "Startup complete" "$logfile"; do
    if ! node_pid "$i" >/dev/null; then
      log "node$i exited while starting; last lines of $logfile:"
      tail -25 "$logfile" >&2
      return 1
    fi
    if [ $((SECONDS - start)) -ge "$timeout_s" ]; then
      log "node$i not ready after ${timeout_s}s; last lines of $logfile:"
      tail -25 "$logfile" >&2
      stop_nodes TERM "$i"
      return 1
    fi
    sleep 0.2
  done
  pid=$(cat "$home/pid")
  local ticks cpu
  ticks=$(cut -d')' -f2 "/proc/$pid/stat" | awk '{print $12 + $13}')
  cpu=$((ticks / $(getconf CLK_TCK)))
  log "node$i ready on $(address "$i"):$port in $((SECONDS - start))s, ${cpu} CPU s (pid $pid, state in $home)"
}

save_options() {
  printf 'nodes=%s\nport=%s\nstorage_port=%s\njmx_port=%s\nkeyspace=%s\n' \
    "$nodes" "$port" "$storage_port" "$jmx_port" "$keyspace" >"$env_file"
}

up() {
  load_options
  fetch
  local i
  for i in $(seq 2 "$nodes"); do
    # 127.0.0.2 and up are loopback on Linux, not everywhere else (macOS needs an alias per address)
    python3 -c "import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); s.close()" "$(address "$i")" \
      2>/dev/null || die "cannot bind $(address "$i"): this machine has no loopback address for node $i"
  done
  save_options
  for i in $(seq 1 "$nodes"); do
    start_node "$i" || { down_all; exit 1; }
  done
  url
}

# Signal $1 (TERM or KILL) to the other given nodes together, then SIGKILL whatever still runs after
# stop_timeout_s.
stop_nodes() {
  local signal=$1 i pid pids=()
  shift
  for i in "$@"; do
    if pid=$(node_pid "$i"); then
      kill "-$signal" "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  local deadline=$((SECONDS + stop_timeout_s))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not exit in ${stop_timeout_s}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for i in "$@"; do rm -f "$(node_dir "$i")/pid"; done
  [ ${#pids[@]} -eq 0 ] || log "stopped ${#pids[@]} node(s)"
}

down_all() {
  local found=() d
  for d in "$dir"/node*; do
    [ -d "$d" ] && found+=("${d##*/node}")
  done
  if [ ${#found[@]} -gt 0 ]; then stop_nodes "${1:-TERM}" "${found[@]}"; fi
}

down() {
  [ -d "$dir" ] || return 0
  if [ "$purge" = 1 ]; then down_all KILL; else down_all; fi
  if [ "$purge" = 1 ]; then
    # only a dir this script laid out: never a parent of anything else by mistake
    if [ -f "$env_file" ] || [ -z "$(ls -A "$dir")" ]; then
      rm -rf "$dir"
      log "removed $dir"
    else
      die "$dir has no cluster.env: not a cluster dir, not removing it"
    fi
  fi
}

need_cluster() {
  [ -f "$env_file" ] || die "$dir holds no cluster (run up first)"
  load_options
}

need_node() {
  number --node "$node"
  [ "$node" -ge 1 ] && [ "$node" -le "$nodes" ] || die "--node must be 1..$nodes"
}

status() {
  need_cluster
  local i pid all=0
  for i in $(seq 1 "$nodes"); do
    if pid=$(node_pid "$i"); then
      echo "node$i $(address "$i"):$port running pid $pid"
    else
      echo "node$i $(address "$i"):$port stopped"
      all=1
    fi
  done
  return $all
}

kill_node() {
  need_cluster
  need_node
  local pid
  if ! pid=$(node_pid "$node"); then log "node$node is not running"; return 0; fi
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$(node_dir "$node")/pid"
  log "node$node (pid $pid) killed"
}

case "$cmd" in
  fetch) fetch ;;
  up) up ;;
  down) down ;;
  status) status ;;
  url) need_cluster; url ;;
  kill) kill_node ;;
  start) need_cluster; need_node; fetch; start_node "$node" ;;
  *) usage ;;
esac
