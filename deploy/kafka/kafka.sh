#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft: broker + controller in one JVM), run from Maven Central jars.
#
#   deploy/kafka/kafka.sh fetch                 download the jars into the cache (idempotent)
#   deploy/kafka/kafka.sh up   [--port P] [--controller-port C] [--dir D] [--properties F] [--add-scram S]...
#   deploy/kafka/kafka.sh down [--dir D]
#   deploy/kafka/kafka.sh restart [--dir D]      stop and start again on the same ports and data
#   deploy/kafka/kafka.sh status [--dir D]
#
# Environment: TRACING_CACHE_DIR (jar cache, default ~/.cache/tracing), TRACING_KAFKA_DIR (state dir:
# data, log, pid; default .run/kafka in the checkout), TRACING_KAFKA_HEAP (default 512m).
# --properties F: server properties appended to the generated ones (a key given again wins: listeners,
# security, an authorizer), kept in the state dir for `restart`. --add-scram S (repeatable): a SCRAM
# credential created when the data dir is formatted, e.g. 'SCRAM-SHA-512=[name=admin,password=...]'.
# `up` returns once the broker logged "Kafka Server started" and accepts connections; the JVM runs
# detached (own session, stdio to a log file), so it never holds a caller's terminal or pipe open.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
cache="${TRACING_CACHE_DIR:-$HOME/.cache/tracing}/kafka-$version"
dir="${TRACING_KAFKA_DIR:-$root/.run/kafka}"
port=9092
cport=9093
heap="${TRACING_KAFKA_HEAP:-512m}"
timeout_s=90
properties=""
scram=()

cmd=${1:-}
[ $# -gt 0 ] && shift
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --controller-port) cport=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --properties) properties=$2; shift 2 ;;
    --add-scram) scram+=(--add-scram "$2"); shift 2 ;;
    *) echo "kafka.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

log() { printf 'kafka: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=../../scripts/lib/jvm.sh
. "$here/../../scripts/lib/jvm.sh"

fetch() { fetch_jars "Apache Kafka $version" "$here/pom.xml" "$cache"; }

alive() { [ -f "$dir/kafka.pid" ] && kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null; }

up() {
  fetch
  if alive; then log "already running (pid $(cat "$dir/kafka.pid")) on port $(cat "$dir/port")"; return 0; fi
  mkdir -p "$dir/data"
  cat > "$dir/log4j2.properties" <<PROPS
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = info
PROPS
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
num.network.threads=2
num.io.threads=2
PROPS
  if [ -n "$properties" ]; then cp "$properties" "$dir/extra.properties"; fi
  if [ -f "$dir/extra.properties" ]; then cat "$dir/extra.properties" >> "$dir/server.properties"; fi
  local cp="$cache/lib/*" logflag="-Dlog4j2.configurationFile=$dir/log4j2.properties"
  if [ ! -f "$dir/data/meta.properties" ]; then
    local id
    id=$(java -Xmx256m -cp "$cp" kafka.tools.StorageTool random-uuid)
    java -Xmx256m -cp "$cp" "$logflag" kafka.tools.StorageTool format -t "$id" \
      -c "$dir/server.properties" --ignore-formatted ${scram[@]+"${scram[@]}"} >"$dir/format.log" 2>&1
  fi
  : > "$dir/kafka.log"
  echo "$port" > "$dir/port"
  echo "$cport" > "$dir/controller-port"
  setsid nohup java "-Xms$heap" "-Xmx$heap" -XX:+UseG1GC -Djava.awt.headless=true "$logflag" \
    -cp "$cp" kafka.Kafka "$dir/server.properties" </dev/null >>"$dir/kafka.log" 2>&1 &
  echo $! > "$dir/kafka.pid"
  local start=$SECONDS
  while ! grep -q "Kafka Server started" "$dir/kafka.log"; do
    if ! alive; then log "broker exited while starting; last lines of $dir/kafka.log:"; tail -20 "$dir/kafka.log" >&2; exit 1; fi
    if [ $((SECONDS - start)) -ge $timeout_s ]; then log "not ready after ${timeout_s}s"; down; exit 1; fi
    sleep 0.2
  done
  log "ready on 127.0.0.1:$port in $((SECONDS - start))s (pid $(cat "$dir/kafka.pid"), state in $dir)"
}

down() {
  if ! alive; then rm -f "$dir/kafka.pid"; return 0; fi
  local pid; pid=$(cat "$dir/kafka.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "no exit after 10s, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$dir/kafka.pid"
  log "stopped"
}

case "$cmd" in
  fetch) fetch ;;
  restart)
    # same ports and data as before: a broker restart as operators do it
    [ -f "$dir/port" ] && port=$(cat "$dir/port")
    [ -f "$dir/controller-port" ] && cport=$(cat "$dir/controller-port")
    down; up ;;
  up) up ;;
  down) down ;;
  status) if alive; then echo "running pid $(cat "$dir/kafka.pid") port $(cat "$dir/port")"; else echo "stopped"; exit 1; fi ;;
  *) echo "usage: kafka.sh fetch|up|down|restart|status [--port P] [--controller-port C] [--dir D]" >&2; exit 2 ;;
esac
