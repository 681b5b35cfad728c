#!/usr/bin/env bash
# `make test`: lint, type-check, then the whole pytest suite on a real Kafka broker (and PostgreSQL when
# available). Starts what it needs and stops it again on exit, success or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
state=.run/test
started_kafka=0
started_postgres=0

cleanup() {
  local rc=$?
  if [ "$started_kafka" = 1 ]; then bash deploy/kafka/kafka.sh down --dir "$state/kafka" || true; fi
  if [ "$started_postgres" = 1 ]; then bash scripts/postgres.sh down --dir "$state/postgres" || true; fi
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

echo "== ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
echo "== mypy --strict"
"$PY" -m mypy

if [ -z "${TRACING_KAFKA_BOOTSTRAP:-}" ]; then
  echo "== kafka"
  rm -rf "$state/kafka"
  started_kafka=1
  kafka_port=$(free_port)
  bash deploy/kafka/kafka.sh up --port "$kafka_port" --controller-port "$(free_port)" --dir "$state/kafka"
  export TRACING_KAFKA_BOOTSTRAP=127.0.0.1:$kafka_port
  export TRACING_TEST_KAFKA_DIR="$PWD/$state/kafka"  # lets fault tests restart the broker
fi

if [ -z "${TRACING_TEST_POSTGRES_URL:-}" ]; then
  echo "== postgres"
  bash scripts/postgres.sh down --dir "$state/postgres" --purge  # a cluster left by an interrupted run
  started_postgres=1
  TRACING_TEST_POSTGRES_URL=$(bash scripts/postgres.sh up --port "$(free_port)" --dir "$state/postgres")
  export TRACING_TEST_POSTGRES_URL
fi

echo "== pytest"
set +e
"$PY" -m pytest "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "pytest collected no tests: that is a failure" >&2; exit 1; fi
exit $rc
