#!/usr/bin/env bash
# `make test`: lint, type-check, then the whole pytest suite on a real Kafka broker, PostgreSQL and one
# Cassandra node. Starts what it needs and stops it again on exit, success or failure. The services start
# first, in the background, while lint and type checks run: the Cassandra node (about 20 CPU seconds to
# start: 11 s alone on 2 cores, up to a minute beside other jobs), then Kafka and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
state=.run/test
started_kafka=0
started_postgres=0
started_cassandra=0
cassandra_up=""  # pid of a `cassandra.sh up` still running in the background
kafka_up=""      # ... of a `kafka.sh up`
postgres_up=""   # ... of a `postgres.sh up`

cleanup() {
  local rc=$?
  if [ -n "$kafka_up" ]; then kill "$kafka_up" 2>/dev/null || true; wait "$kafka_up" 2>/dev/null || true; fi
  if [ -n "$postgres_up" ]; then kill "$postgres_up" 2>/dev/null || true; wait "$postgres_up" 2>/dev/null || true; fi
  if [ "$started_kafka" = 1 ]; then bash deploy/kafka/kafka.sh down --dir "$state/kafka" || true; fi
  if [ "$started_postgres" = 1 ]; then bash scripts/postgres.sh down --dir "$state/postgres" || true; fi
  if [ "$started_cassandra" = 1 ]; then
    if [ -n "$cassandra_up" ]; then kill "$cassandra_up" 2>/dev/null || true; fi
    bash scripts/cassandra.sh down --dir "$state/cassandra" --purge || true
  fi
  exit $rc
}
trap cleanup EXIT INT TERM

# System tools the tests drive, from Debian's packages when missing: curl + jq (the seed's snippets) and
# Chromium (the web UI tests; in CI a missing browser fails them, never skips).
missing=()
for tool in curl jq; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing ${missing[*]}"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if [ -z "${TRACING_TEST_CASSANDRA_URL:-}" ]; then
  echo "== cassandra (starting in the background)"
  mkdir -p "$state"
  bash scripts/cassandra.sh down --dir "$state/cassandra" --purge  # a node left by an interrupted run
  started_cassandra=1
  bash scripts/cassandra.sh up --dir "$state/cassandra" --port "$(free_port)" --storage-port "$(free_port)" \
    --jmx-port "$(free_port)" >"$state/cassandra.url" 2>"$state/cassandra.log" &
  cassandra_up=$!
fi

if [ -z "${TRACING_KAFKA_BOOTSTRAP:-}" ]; then
  echo "== kafka (starting in the background)"
  mkdir -p "$state"
  rm -rf "$state/kafka"
  started_kafka=1
  kafka_port=$(free_port)
  bash deploy/kafka/kafka.sh up --port "$kafka_port" --controller-port "$(free_port)" --dir "$state/kafka" \
    >"$state/kafka.log" 2>&1 &
  kafka_up=$!
fi

if [ -z "${TRACING_TEST_POSTGRES_URL:-}" ]; then
  echo "== postgres (starting in the background)"
  mkdir -p "$state"
  bash scripts/postgres.sh down --dir "$state/postgres" --purge  # a cluster left by an interrupted run
  started_postgres=1
  bash scripts/postgres.sh up --port "$(free_port)" --dir "$state/postgres" \
    >"$state/postgres.url" 2>"$state/postgres.log" &
  postgres_up=$!
fi

echo "== ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
echo "== mypy --strict"
"$PY" -m mypy

# Waits for the background `up` of pid $1 (service $2, its log $3); on failure prints the log and exits.
wait_up() {
  echo "== $2 (waiting for it)"
  if ! wait "$1"; then
    echo "$2 did not start:" >&2
    cat "$3" >&2
    exit 1
  fi
  cat "$3"
}

if [ -n "$kafka_up" ]; then
  pid=$kafka_up
  kafka_up=""
  wait_up "$pid" kafka "$state/kafka.log"
  export TRACING_KAFKA_BOOTSTRAP=127.0.0.1:$kafka_port
  export TRACING_TEST_KAFKA_DIR="$PWD/$state/kafka"  # lets fault tests restart the broker
fi

if [ -n "$postgres_up" ]; then
  pid=$postgres_up
  postgres_up=""
  wait_up "$pid" postgres "$state/postgres.log"
  TRACING_TEST_POSTGRES_URL=$(tail -n 1 "$state/postgres.url")
  export TRACING_TEST_POSTGRES_URL
fi

if [ -n "$cassandra_up" ]; then
  pid=$cassandra_up
  cassandra_up=""
  wait_up "$pid" cassandra "$state/cassandra.log"
  TRACING_TEST_CASSANDRA_URL=$(tail -n 1 "$state/cassandra.url")
  export TRACING_TEST_CASSANDRA_URL
fi

echo "== pytest"
set +e
"$PY" -m pytest "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "pytest collected no tests: that is a failure" >&2; exit 1; fi
exit $rc
