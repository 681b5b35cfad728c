#!/usr/bin/env bash
# A throwaway local PostgreSQL cluster (Debian's packages) for tests and benchmarks: NOT for real data.
#
#   scripts/postgres.sh up     [--port P] [--dir D]    start it (initdb on first use); prints its URL
#   scripts/postgres.sh down   [--dir D] [--purge]     stop it (--purge also deletes the state dir)
#   scripts/postgres.sh status [--dir D]
#
# Defaults: port 15432, state dir .run/postgres in the checkout (data/, postgres.log, the unix socket). As
# root, when the `postgres` user cannot reach the state dir (a private parent such as /root), the cluster
# lives in a private dir under /tmp instead, recorded in <state dir>/cluster for `down`.
# Durability is switched off (fsync, synchronous_commit, full_page_writes): a crash can lose the cluster.
# Trust authentication on 127.0.0.1 and the unix socket only. As root, the server runs as the `postgres`
# OS user (initdb refuses root). `up` returns once pg_isready answers and database `tracing` exists; the
# server runs detached with all output in postgres.log, so it never holds the caller's stdout open.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=15432
dir="$root/.run/postgres"
purge=0
timeout_s=60
database=tracing

cmd=${1:-}
[ $# -gt 0 ] && shift
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --purge) purge=1; shift ;;
    *) echo "postgres.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$port" in ''|*[!0-9]*) echo "postgres.sh: --port must be a number" >&2; exit 2 ;; esac
if [ "$cmd" = up ]; then mkdir -p "$dir"; fi
if [ -d "$dir" ]; then dir=$(cd "$dir" && pwd); fi
home="$dir"  # where data/, postgres.log and the socket live
if [ -f "$dir/cluster" ]; then home=$(cat "$dir/cluster"); fi
set_paths() { data="$home/data"; logfile="$home/postgres.log"; }
set_paths

log() { printf 'postgres: %s\n' "$*" >&2; }

find_bindir() {
  local found
  if found=$(command -v initdb 2>/dev/null) && [ -x "$(dirname "$(readlink -f "$found")")/pg_ctl" ]; then
    dirname "$(readlink -f "$found")"
    return 0
  fi
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$found" ] && [ -x "$found/initdb" ]; then echo "$found"; return 0; fi
  return 1
}

bindir=$(find_bindir || true)
ensure_installed() {
  if [ -n "$bindir" ]; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    log "initdb/pg_ctl not found (PATH, /usr/lib/postgresql/*/bin): install Debian's postgresql package"
    exit 1
  fi
  log "installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
  bindir=$(find_bindir) || { log "postgresql installed but initdb not found"; exit 1; }
}

# Run a server-side command as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() { [ -n "$bindir" ] && [ -f "$data/PG_VERSION" ] && as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; }

url() { echo "postgresql://postgres@127.0.0.1:$port/$database"; }

up() {
  ensure_installed
  mkdir -p "$home"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || { log "running as root but there is no 'postgres' OS user"; exit 1; }
    chown -R postgres: "$home"
    if [ "$home" = "$dir" ] && ! runuser -u postgres -- test -w "$dir"; then
      home=$(mktemp -d /tmp/tracing-postgres.XXXXXX)
      chown postgres: "$home"
      echo "$home" > "$dir/cluster"
      set_paths
      log "the postgres user cannot reach $dir: the cluster lives in $home"
    fi
  fi
  if running; then
    port=$(cat "$dir/port" 2>/dev/null || echo "$port")
    log "already running on 127.0.0.1:$port (state in $dir)"
    url
    return 0
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$data"
    as_owner "$bindir/initdb" -D "$data" -U postgres -E UTF8 --locale=C --auth-local=trust --auth-host=reject \
      >"$home/initdb.log" 2>&1 || { log "initdb failed:"; tail -20 "$home/initdb.log" >&2; exit 1; }
    cat > "$data/pg_hba.conf" <<HBA
# throwaway test cluster: trust on the unix socket and on 127.0.0.1 only
local all all trust
host  all all 127.0.0.1/32 trust
HBA
  fi
  # Settings in postgresql.auto.conf win over postgresql.conf; rewritten on each start so that --port can
  # change. No unix socket when its path would be too long (the tools here all use TCP anyway).
  local sockdir="$home"
  if [ ${#home} -gt 90 ]; then sockdir=""; fi
  cat > "$data/postgresql.auto.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sockdir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_buffers = 256MB
max_wal_size = 2GB
checkpoint_timeout = 30min
logging_collector = off
log_min_messages = warning
CONF
  if [ "$(id -u)" = 0 ]; then chown postgres: "$data/pg_hba.conf" "$data/postgresql.auto.conf"; fi
  echo "$port" > "$dir/port"
  : > "$logfile"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$logfile"; fi
  # pg_ctl forks the postmaster with stdin from /dev/null and output appended to the log file; pg_ctl
  # itself runs in its own session with its output there too.
  as_owner setsid "$bindir/pg_ctl" -D "$data" -l "$logfile" -W start </dev/null >>"$logfile" 2>&1
  local start=$SECONDS
  until "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres -U postgres; do
    if [ $((SECONDS - start)) -ge $timeout_s ]; then
      log "not ready after ${timeout_s}s; last lines of $logfile:"; tail -20 "$logfile" >&2
      down; exit 1
    fi
    if [ $((SECONDS - start)) -ge 2 ] && ! running; then
      log "server exited while starting; last lines of $logfile:"; tail -20 "$logfile" >&2; exit 1
    fi
    sleep 0.1
  done
  local psql=("$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres)
  if [ -z "$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")" ]; then
    "${psql[@]}" -c "CREATE DATABASE $database" >&2
  fi
  log "ready on 127.0.0.1:$port in $((SECONDS - start))s (state in $home, log $logfile)"
  url
}

down() {
  if running; then
    as_owner "$bindir/pg_ctl" -D "$data" -m fast -w -t 30 stop >>"$logfile" 2>&1 || log "pg_ctl stop failed"
    log "stopped"
  fi
  if [ "$purge" = 1 ]; then
    if [ "$home" != "$dir" ]; then rm -rf "$home"; fi
    rm -rf "$dir"
    log "removed $dir"
  fi
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) if running; then echo "running on port $(cat "$dir/port" 2>/dev/null)"; else echo "stopped"; exit 1; fi ;;
  *) echo "usage: postgres.sh up|down|status [--port P] [--dir D] [--purge]" >&2; exit 2 ;;
esac
