#!/usr/bin/env bash
# A throwaway local S3-compatible server: S3Proxy (Apache-2.0) with its filesystem backend, run from its
# Maven Central jars with the installed Java 17: for tests and benchmarks, NOT for real data.
#
#   scripts/s3.sh fetch                       download the jars into the cache (idempotent)
#   scripts/s3.sh up     [--port P] [--dir D] start the server unless it runs; prints its archive URL
#   scripts/s3.sh down   [--dir D] [--purge]  stop it (--purge also deletes the state dir, objects included)
#   scripts/s3.sh status [--dir D]            one line; exit 1 unless it is running
#   scripts/s3.sh url    [--dir D]            the archive URL (TRACING_ARCHIVE_URL) of the server in D
#   scripts/s3.sh kill   [--dir D]            SIGKILL it (fault tests)
#
# The server listens on 127.0.0.1 port P (default 8333) and checks AWS signatures (V2 and V4) against one
# access key and secret (default tracing / tracing-secret; TRACING_S3_ACCESS_KEY and TRACING_S3_SECRET_KEY
# at `up` choose others: letters, digits and . _ ~ + / -). `up` prints the URL of bucket `tracing` on
# stdout, s3://tracing/?endpoint=http://127.0.0.1:P&region=us-east-1, and on stderr an
# `export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...` line to paste (local test credentials).
# D (default .run/s3 in the checkout) holds server.env (the port and keys of the last `up`, reused by every
# later command; an `up` may change them only while the server is stopped), conf/ (s3proxy.properties,
# logback.xml), data/ (the filesystem backend: one directory a bucket, one file an object; data/tracing is
# created by `up`, so the bucket always exists), s3proxy.log (the JVM's stdout and stderr) and pid.
#
# `up` returns once GET /healthz answers 200 while the JVM lives, or fails after TRACING_S3_TIMEOUT_S
# (default 60) with the tail of the log. The JVM runs detached (own session, stdio to its log file), so it
# never holds a caller's terminal or pipe open. `down` sends SIGTERM, then SIGKILL after 30 s; the pid file
# only counts when that pid is the S3Proxy JVM of this very dir (a stale pid reused by another process is
# never signalled).
# Environment: TRACING_CACHE_DIR (jar cache, default ~/.cache/tracing), TRACING_S3_ACCESS_KEY,
# TRACING_S3_SECRET_KEY, TRACING_S3_HEAP (default 512m), TRACING_S3_TIMEOUT_S, TRACING_S3_JVM_OPTS (more
# JVM options, after the script's own).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pom="$root/deploy/s3proxy/pom.xml"
version=$(sed -n 's:.*<s3proxy.version>\(.*\)</s3proxy.version>.*:\1:p' "$pom")
cache="${TRACING_CACHE_DIR:-$HOME/.cache/tracing}/s3proxy-$version"
heap="${TRACING_S3_HEAP:-512m}"
timeout_s="${TRACING_S3_TIMEOUT_S:-60}"
stop_timeout_s=30
bucket=tracing
region=us-east-1

dir="$root/.run/s3"
purge=0
# Options of `up`: defaults, then server.env of an existing dir, then the command line and environment.
declare -A given=()
port=8333
access_key=tracing
secret_key=tracing-secret

log() { printf 's3: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=lib/jvm.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/jvm.sh"
usage() {
  echo "usage: s3.sh fetch|up|down|status|url|kill [--port P] [--dir D] [--purge]" >&2
  exit 2
}

cmd=${1:-}
[ $# -gt 0 ] && shift
while [ $# -gt 0 ]; do
  case "$1" in --purge) ;; *) [ $# -ge 2 ] || usage ;; esac
  case "$1" in
    --port) given[port]=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --purge) purge=1; shift ;;
    *) echo "s3.sh: unknown option $1" >&2; usage ;;
  esac
done

if [ -n "${given[port]:-}" ]; then
  case "${given[port]}" in '' | *[!0-9]*) die "--port must be a number, got '${given[port]}'" ;; esac
  [ "${given[port]}" -ge 1 ] && [ "${given[port]}" -le 65535 ] || die "--port must be 1..65535"
fi
if [ "$cmd" = up ]; then
  # the keys go into a properties file and the env file: a safe alphabet only (AWS's keys fit it)
  for key in access_key secret_key; do
    var="TRACING_S3_${key^^}"
    if [ -n "${!var:-}" ]; then
      [[ ${!var} =~ ^[A-Za-z0-9._~+/-]{1,128}$ ]] || die "$var must be 1-128 of A-Z a-z 0-9 . _ ~ + / -"
      given[$key]=${!var}
    fi
  done
  mkdir -p "$dir"
fi
if [ -d "$dir" ]; then dir=$(cd "$dir" && pwd); fi
env_file="$dir/server.env"
properties="$dir/conf/s3proxy.properties"
pid_file="$dir/pid"
logfile="$dir/s3proxy.log"

load_options() {
  if [ -f "$env_file" ]; then
    local key value
    while IFS='=' read -r key value; do
      case "$key" in port | access_key | secret_key) printf -v "$key" '%s' "$value" ;; esac
    done <"$env_file"
  fi
}

url() { echo "s3://$bucket/?endpoint=http://127.0.0.1:$port&region=$region"; }

fetch() { fetch_jars "S3Proxy $version" "$pom" "$cache"; }

# The pid of the server when it is a live S3Proxy JVM of this dir; nothing (and status 1) otherwise.
server_pid() { jvm_pid "$pid_file" "$properties"; }

# Process $1 exists and is not a zombie (a killed JVM whose parent has not reaped it yet is gone for us).
alive() {
  local state
  state=$(cut -d')' -f2 "/proc/$1/stat" 2>/dev/null | awk '{print $1}') || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# GET /healthz on the port answers 200 (bash's /dev/tcp: no HTTP client needed).
healthy() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    read -r -t 5 status <&3 || exit 1
    [[ $status == HTTP/1.?" 200"* ]]
  ) 2>/dev/null
}

# A listener of any kind on the port.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

write_config() {
  mkdir -p "$dir/conf" "$dir/data/$bucket"
  (
    umask 077  # the secret is in it
    cat >"$properties" <<PROPERTIES
# written by scripts/s3.sh on every start: edits here are lost
s3proxy.endpoint=http://127.0.0.1:$port
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=$access_key
s3proxy.credential=$secret_key
jclouds.provider=filesystem
jclouds.filesystem.basedir=$dir/data
PROPERTIES
  )
  cat >"$dir/conf/logback.xml" <<XML
<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %logger{0} - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
XML
}

save_options() {
  (umask 077 && printf 'port=%s\naccess_key=%s\nsecret_key=%s\n' "$port" "$access_key" "$secret_key" >"$env_file")
}

# The options of `up`: server.env's, overridden by the command line and environment while stopped.
up_options() {
  load_options
  local key pid
  if pid=$(server_pid); then
    for key in "${!given[@]}"; do
      if [ "${given[$key]}" != "${!key}" ]; then
        die "the server in $dir runs (pid $pid) with another $key: down first to change it"
      fi
    done
    return 0
  fi
  for key in "${!given[@]}"; do printf -v "$key" '%s' "${given[$key]}"; done
}

start_server() {
  write_config
  if [ -s "$logfile" ]; then mv "$logfile" "$logfile.previous"; fi
  : >"$logfile"
  rm -f "$pid_file"
  local jvm=(
    -Xms64m "-Xmx$heap" -XX:+HeapDumpOnOutOfMemoryError "-XX:HeapDumpPath=$dir"
    "-XX:ErrorFile=$dir/hs_err_%p.log" -XX:+PerfDisableSharedMem -Djava.net.preferIPv4Stack=true
    -Djava.awt.headless=true "-Dlogback.configurationFile=$dir/conf/logback.xml"
  )
  read -r -a extra <<<"${TRACING_S3_JVM_OPTS:-}"
  jvm+=("${extra[@]}" -cp "$cache/lib/*" org.gaul.s3proxy.Main --properties "$properties")
  # A new session whose shell records its own pid, then becomes the JVM (exec keeps the pid); stdin from
  # /dev/null and all output to the log, so nothing of the caller's stays open in the JVM.
  (cd "$dir" && exec setsid bash -c 'echo $$ > "$0"; exec java "$@"' "$pid_file" "${jvm[@]}") \
    </dev/null >>"$logfile" 2>&1 &
}

# Wait until the server answers while its JVM lives; its startup time and CPU seconds on success.
wait_ready() {
  local start=$SECONDS started=$EPOCHREALTIME pid
  until [ -s "$pid_file" ]; do
    [ $((SECONDS - start)) -lt 10 ] || die "no pid file after 10s"
    sleep 0.05
  done
  until healthy; do
    if ! server_pid >/dev/null; then
      log "S3Proxy exited while starting; last lines of $logfile:"
      tail -25 "$logfile" >&2
      return 1
    fi
    if [ $((SECONDS - start)) -ge "$timeout_s" ]; then
      log "S3Proxy not ready after ${timeout_s}s; last lines of $logfile:"
      tail -25 "$logfile" >&2
      stop_server
      return 1
    fi
    sleep 0.1
  done
  pid=$(cat "$pid_file")
  local ticks cpu
  ticks=$(cut -d')' -f2 "/proc/$pid/stat" | awk '{print $12 + $13}')
  cpu=$((ticks / $(getconf CLK_TCK)))
  local took
  took=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  log "S3Proxy $version ready on 127.0.0.1:$port in ${took}s, ${cpu} CPU s (pid $pid, state in $dir)"
}

up() {
  up_options
  local pid
  if pid=$(server_pid); then
    log "already running on 127.0.0.1:$port (pid $pid, state in $dir)"
  else
    fetch
    ! port_taken || die "something else listens on 127.0.0.1:$port: choose another --port"
    save_options
    start_server
    wait_ready || exit 1
  fi
  echo "export AWS_ACCESS_KEY_ID=$access_key AWS_SECRET_ACCESS_KEY=$secret_key" >&2
  url
}

# SIGTERM the server, then SIGKILL it if it still runs after stop_timeout_s.
stop_server() {
  local pid
  if ! pid=$(server_pid); then rm -f "$pid_file"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + stop_timeout_s))
  while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  if alive "$pid"; then
    log "pid $pid did not exit in ${stop_timeout_s}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.05; done
  fi
  rm -f "$pid_file"
  log "stopped (pid $pid)"
}

down() {
  [ -d "$dir" ] || return 0
  stop_server
  if [ "$purge" = 1 ]; then
    # only a dir this script laid out: never a parent of anything else by mistake
    if [ -f "$env_file" ] || [ -z "$(ls -A "$dir")" ]; then
      rm -rf "$dir"
      log "removed $dir"
    else
      die "$dir has no server.env: not a state dir of this script, not removing it"
    fi
  fi
}

need_server() {
  [ -f "$env_file" ] || die "$dir holds no S3 server (run up first)"
  load_options
}

status() {
  need_server
  local pid
  if pid=$(server_pid); then
    echo "127.0.0.1:$port running pid $pid"
  else
    echo "127.0.0.1:$port stopped"
    return 1
  fi
}

kill_server() {
  need_server
  local pid
  if ! pid=$(server_pid); then log "not running"; return 0; fi
  kill -KILL "$pid"
  while alive "$pid"; do sleep 0.05; done
  rm -f "$pid_file"
  log "killed (pid $pid)"
}

case "$cmd" in
  fetch) fetch ;;
  up) up ;;
  down) down ;;
  status) status ;;
  url) need_server; url ;;
  kill) kill_server ;;
  *) usage ;;
esac
