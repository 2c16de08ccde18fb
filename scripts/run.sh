#!/usr/bin/env bash
# Run the Mistral simulator, a Celery worker, Celery beat and the web server together; Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p var/log
# Web, worker and beat count metrics in files here; /metrics adds them up (genesis/metrics.py). Emptied
# at each start, as prometheus_client's multiprocess mode requires.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$PWD/var/prometheus}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
pids=()
stop() { trap - INT TERM EXIT; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop INT TERM EXIT

$PY manage.py mistral_simulator --host 127.0.0.1 --port "${GENESIS_SIMULATOR_PORT:-8765}" \
  --job-seconds "${GENESIS_SIMULATOR_JOB_SECONDS:-60}" >var/log/simulator.log 2>&1 &
pids+=($!)
$PY -m celery -A genesis worker -Q default,benchmarks --concurrency "${GENESIS_WORKER_CONCURRENCY:-4}" \
  --loglevel INFO >var/log/worker.log 2>&1 &
pids+=($!)
$PY -m celery -A genesis beat --loglevel INFO --pidfile= >var/log/beat.log 2>&1 &
pids+=($!)

port="${GENESIS_PORT:-8000}"
echo
echo "Genesis is starting:"
echo "  admin      http://127.0.0.1:${port}/admin/   (user 'admin'; password from GENESIS_ADMIN_PASSWORD or printed by seed_demo above)"
echo "  API docs   http://127.0.0.1:${port}/api/v1/docs"
echo "  readiness  http://127.0.0.1:${port}/readyz"
echo "  logs       var/log/{simulator,worker,beat}.log"
echo "Ctrl-C stops everything."
echo
$PY manage.py runserver "127.0.0.1:${port}" --noreload &
pids+=($!)
wait -n "${pids[@]}" || true
echo "a Genesis process stopped; see var/log/ — stopping the rest" >&2
