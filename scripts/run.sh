#!/usr/bin/env bash
# `make run`: install, migrate, seed the demo, start web + worker + local vLLM.
#
# Embedded defaults (SQLite file, Kombu filesystem broker under var/) need no servers; set
# DATABASE_URL / CELERY_BROKER_URL for PostgreSQL / Redis, LOCAL_LLM_URL for a vLLM elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
# One web process (runserver): its own memory cache is the one every request shares, also
# with DJANGO_DEBUG=0 (which otherwise requires CACHE_URL).
export CACHE_URL="${CACHE_URL:-locmem://}"
PORT="${PORT:-8000}"
PY=.venv/bin/python
mkdir -p var/logs

$PY manage.py migrate --noinput
$PY manage.py seed_demo
$PY manage.py accounting_defaults

pids=()
started_llm=""
started_embed=""
cleanup() {
    echo "[run] stopping…"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # Stop the model server only if this run started it (a test run may share it).
    if [ -n "$started_llm" ]; then $PY manage.py local_llm stop || true; fi
    if [ -n "$started_embed" ]; then $PY manage.py local_llm stop --embed || true; fi
    wait || true
}
trap cleanup EXIT INT TERM

$PY manage.py runserver "127.0.0.1:$PORT" >var/logs/web.log 2>&1 &
pids+=($!)
echo "[run] web console starting at http://127.0.0.1:$PORT/ (log: var/logs/web.log)"

# The worker starts once the model server answers, so demo drafts do not burn their retries
# on a server still installing or compiling (first run: several minutes, shown below).
if [ -z "${LOCAL_LLM_URL:-}" ]; then
    if ! $PY manage.py local_llm status >/dev/null 2>&1; then started_llm=1; fi
    $PY manage.py local_llm serve --background
fi
# EMBEDDING_BACKEND=vllm embeds with the same model served as a pooling model, beside it.
if [ "${EMBEDDING_BACKEND:-}" = "vllm" ] && [ -z "${EMBEDDING_URL:-}" ]; then
    if ! $PY manage.py local_llm status --embed >/dev/null 2>&1; then started_embed=1; fi
    $PY manage.py local_llm serve --embed --background
fi
$PY -m celery -A csbot worker --beat --pool threads --concurrency 2 --loglevel INFO \
    --schedule var/celerybeat-schedule >var/logs/worker.log 2>&1 &
pids+=($!)

cat <<MSG

  csbot is running:  http://127.0.0.1:$PORT/
    agent console    log in as  agent / csbot-demo
    admin            http://127.0.0.1:$PORT/admin/  (admin / csbot-demo)
    API docs         http://127.0.0.1:$PORT/api/docs/
  More demo traffic: .venv/bin/python manage.py simulate --count 20
  Logs in var/logs/. Ctrl-C stops everything.

MSG
wait
