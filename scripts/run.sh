#!/usr/bin/env bash
# Migrate, seed the demo world, then run the Mistral simulator, a Celery worker, Celery beat and the web
# server together; Ctrl-C stops all. `make run` calls it (after installing .venv).
#
# Reads: GENESIS_PORT (web, default 8000), GENESIS_SIMULATOR_PORT (default 8765),
# GENESIS_SIMULATOR_JOB_SECONDS (a simulated fine-tuning job's length, default 60),
# GENESIS_WORKER_CONCURRENCY (Celery worker processes, default 4). Logs go to var/log/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p var/log

port="${GENESIS_PORT:-8000}"
simulator_port="${GENESIS_SIMULATOR_PORT:-8765}"

# A port another program holds would make that server die in its log while the rest run on: refuse
# up front, naming the port and the variable that moves it.
port_taken() {
  "$PY" - "$1" <<'EOF'
import socket, sys
with socket.socket() as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        sys.exit(0)
sys.exit(1)
EOF
}
for check in "web server:$port:GENESIS_PORT" "Mistral simulator:$simulator_port:GENESIS_SIMULATOR_PORT"; do
  IFS=: read -r what number variable <<<"$check"
  if port_taken "$number"; then
    echo "make run: port $number (the $what) is already in use on 127.0.0.1 — stop what holds it" \
         "(e.g. an earlier 'make run': ss -ltnp | grep :$number) or set $variable to another port" >&2
    exit 1
  fi
done

# Only now that nothing else holds the ports: a refused start must not touch a running Genesis' database
# or metrics.
$PY manage.py migrate --noinput
# The demo provider points at the simulator started below, unless GENESIS_SIMULATOR_URL names another.
# Exported: every process binds the simulator's key to that URL (GENESIS_PROVIDER_HOSTS in the README), so
# the worker must see the same one as seed_demo or it would refuse the demo provider on another port.
export GENESIS_SIMULATOR_URL="${GENESIS_SIMULATOR_URL:-http://127.0.0.1:$simulator_port}"
# Links in approvers' e-mails and in the launch report point here, so they follow GENESIS_PORT.
export GENESIS_PUBLIC_URL="${GENESIS_PUBLIC_URL:-http://127.0.0.1:$port}"
$PY manage.py seed_demo

# The demo provider reads the simulator's key from the environment in every process (the web server,
# the worker, and a command run from another terminal): the same default as the Makefile's.
export GENESIS_SIMULATOR_API_KEY="${GENESIS_SIMULATOR_API_KEY:-sim-key}"

# Web, worker and beat count metrics in files here; /metrics adds them up (genesis/metrics.py). Emptied
# at each start, as prometheus_client's multiprocess mode requires.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$PWD/var/prometheus}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

pids=()
stopping=0
stop() {
  trap - INT TERM EXIT
  if [ "${#pids[@]}" -gt 0 ]; then kill "${pids[@]}" 2>/dev/null || true; fi
  wait 2>/dev/null || true
}
on_interrupt() {
  stopping=1
  echo
  echo "stopping Genesis (simulator, worker, beat, web server)…"
  stop
  echo "Genesis stopped."
  exit 0
}
trap on_interrupt INT TERM
trap stop EXIT

$PY manage.py mistral_simulator --host 127.0.0.1 --port "$simulator_port" \
  --job-seconds "${GENESIS_SIMULATOR_JOB_SECONDS:-60}" >var/log/simulator.log 2>&1 &
pids+=($!)
$PY -m celery -A genesis worker -Q default,benchmarks --concurrency "${GENESIS_WORKER_CONCURRENCY:-4}" \
  >var/log/worker.log 2>&1 &
pids+=($!)
$PY -m celery -A genesis beat --pidfile= >var/log/beat.log 2>&1 &
pids+=($!)

password_line="password: the one seed_demo gave it when it created the user (GENESIS_ADMIN_PASSWORD, or
             printed once above); to set a new one: .venv/bin/python manage.py changepassword admin"
echo
echo "Genesis is starting:"
echo "  admin      http://127.0.0.1:${port}/admin/   — the launch board"
echo "             user 'admin', ${password_line}"
echo "  API docs   http://127.0.0.1:${port}/api/v1/docs"
echo "  readiness  http://127.0.0.1:${port}/readyz"
echo "  simulator  http://127.0.0.1:${simulator_port}/v1/models (key: \$GENESIS_SIMULATOR_API_KEY, 'sim-key' unless set)"
echo "  commands   .venv/bin/python manage.py … from another terminal: give it the same simulator first, or the"
echo "             demo provider is refused:"
echo "             export GENESIS_SIMULATOR_API_KEY=${GENESIS_SIMULATOR_API_KEY} GENESIS_SIMULATOR_URL=${GENESIS_SIMULATOR_URL}"
echo "  logs       var/log/{simulator,worker,beat}.log"
echo "Ctrl-C stops everything."
echo
# Started in the background, the processes ignore Ctrl-C (no job control in a script): the trap
# above stops them all, and says so.
$PY manage.py runserver "127.0.0.1:${port}" --noreload </dev/null &
pids+=($!)
status=0
wait -n "${pids[@]}" || status=$?
if [ "$stopping" = 0 ]; then
  echo "a Genesis process stopped (exit $status); see var/log/ — stopping the rest" >&2
  exit 1
fi
