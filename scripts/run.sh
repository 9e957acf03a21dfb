#!/usr/bin/env bash
# `make run`: install, migrate, seed the demo, start web + worker + local vLLM.
#
# Embedded defaults need no system service: PostgreSQL 18 with pgvector from a Python wheel
# (scripts/postgres.sh, data in var/postgres, stopped on exit if this run started it) and
# Kombu's filesystem broker under var/. Set DATABASE_URL / CELERY_BROKER_URL for servers
# elsewhere, LOCAL_LLM_URL for a vLLM elsewhere.
#
# Progress is numbered steps, each announced when it starts and timed when it ends:
#   [run] 5/9 migrations …
#   [run] 5/9 migrations … done (2.1 s; 14 s since start)
# The environment it settles on (database, broker, cache, DEBUG, a secret key generated once)
# goes to var/local.env (csbot.localenv), so the README's other commands work in a plain shell.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=9
step_no=0
step_name=""
run_start=$EPOCHREALTIME
step_start=$EPOCHREALTIME
# Seconds since $1 (an $EPOCHREALTIME), one decimal; bash has no floating point.
since() { local us=$((${EPOCHREALTIME/./} - ${1/./})); printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000)); }
step() {
    step_no=$((step_no + 1))
    step_name=$*
    step_start=$EPOCHREALTIME
    printf '[run] %d/%d %s …\n' "$step_no" "$STEPS" "$step_name"
}
done_step() {
    printf '[run] %d/%d %s … %s (%s s; %.0f s since start)\n' "$step_no" "$STEPS" \
        "$step_name" "${1:-done}" "$(since "$step_start")" "$(since "$run_start")"
}

step "virtualenv (runtime packages only)"
scripts/bootstrap.sh --runtime
done_step
started_db=""
step "embedded PostgreSQL"
if [ -z "${DATABASE_URL:-}" ]; then
    if ! scripts/postgres.sh status >/dev/null 2>&1; then started_db=1; fi
    scripts/postgres.sh start
    eval "$(scripts/postgres.sh env)"
    export DATABASE_URL
    done_step
else
    done_step "skipped: DATABASE_URL is set"
fi
export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
# One web process (runserver): its own memory cache is the one every request shares, also
# with DJANGO_DEBUG=0 (which otherwise requires CACHE_URL).
export CACHE_URL="${CACHE_URL:-locmem://}"
PORT="${PORT:-8000}"
PY=.venv/bin/python
VAR="${CSBOT_VAR_DIR:-var}"
mkdir -p var/logs

step "settings for commands run beside this one ($VAR/local.env)"
$PY -m csbot.localenv write "$VAR" DATABASE_URL CELERY_BROKER_URL CACHE_URL DJANGO_DEBUG \
    LOCAL_LLM_URL EMBEDDING_BACKEND EMBEDDING_URL
done_step

pids=()
started_llm=""
started_embed=""
cleanup() {
    trap - EXIT INT TERM  # once, whichever signal came first
    echo "[run] stopping…"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # Stop the model server only if this run started it (a test run may share it).
    if [ -n "$started_llm" ]; then $PY manage.py local_llm stop || true; fi
    if [ -n "$started_embed" ]; then $PY manage.py local_llm stop --embed || true; fi
    wait || true
    if [ -n "$started_db" ]; then scripts/postgres.sh stop || true; fi
}
trap cleanup EXIT INT TERM

# The model server takes the longest (a minute warm; installing and compiling it on a first
# run, several): it starts in the background while the database is migrated and seeded and
# the console comes up. The worker waits for it (below).
llm_job=""
step "local vLLM"
if [ -z "${LOCAL_LLM_URL:-}" ]; then
    if ! $PY manage.py local_llm status >/dev/null 2>&1; then started_llm=1; fi
    $PY manage.py local_llm serve --background &
    llm_job=$!
    pids+=("$llm_job")
    done_step "starting in the background (its progress: [local-llm] lines; waited for in step 8)"
else
    done_step "skipped: LOCAL_LLM_URL is set"
fi

step "migrations"
$PY manage.py migrate --noinput
done_step
step "demo data"
# The agent rate first: the demo's history measures the team's action values with it.
$PY manage.py accounting_defaults
$PY manage.py seed_demo
done_step

step "web console at http://127.0.0.1:$PORT/ (log: var/logs/web.log)"
$PY manage.py runserver "127.0.0.1:$PORT" >var/logs/web.log 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
    if $PY - "$PORT" <<'PYTHON' 2>/dev/null; then break; fi
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=2)
PYTHON
    sleep 0.5
done
done_step "answers (drafts start once the local model is up)"

# The worker starts once the model server answers, so demo drafts do not burn their retries
# on a server still installing or compiling.
step "waiting for the local vLLM"
if [ -n "$llm_job" ]; then
    if ! wait "$llm_job"; then
        echo "[run] the local model server did not start: see the [local-llm] lines above" >&2
        exit 1
    fi
    done_step "answers"
else
    done_step "skipped: LOCAL_LLM_URL is set"
fi
# EMBEDDING_BACKEND=vllm embeds with the same model served as a pooling model, beside it.
if [ "${EMBEDDING_BACKEND:-}" = "vllm" ] && [ -z "${EMBEDDING_URL:-}" ]; then
    if ! $PY manage.py local_llm status --embed >/dev/null 2>&1; then started_embed=1; fi
    $PY manage.py local_llm serve --embed --background
fi
step "worker (log: var/logs/worker.log)"
$PY -m celery -A csbot worker --beat --pool threads --concurrency 2 --loglevel INFO \
    --schedule var/celerybeat-schedule >var/logs/worker.log 2>&1 &
pids+=($!)
done_step "started"
cat <<MSG

  csbot is running:  http://127.0.0.1:$PORT/
    agent console    log in as  agent / csbot-demo
    admin            http://127.0.0.1:$PORT/admin/  (admin / csbot-demo)
    API docs         http://127.0.0.1:$PORT/api/docs/
  More demo traffic: .venv/bin/python manage.py simulate --count 20
  Logs in var/logs/. Ctrl-C stops everything.

MSG
wait
