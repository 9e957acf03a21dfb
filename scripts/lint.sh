#!/usr/bin/env bash
# `make lint`: every static check CI runs before the tests (scripts/test.sh calls this too, and
# .pre-commit-config.yaml runs the same commands). Needs the virtualenv (scripts/bootstrap.sh);
# mypy and the migrations check load Django's settings, so the environment of scripts/test.sh
# (or a development .env) must be set.
set -euo pipefail
cd "$(dirname "$0")/.."
# Standalone (`make lint`), settings load in development mode; scripts/test.sh sets its own.
export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"

echo "[lint] ruff check"
.venv/bin/ruff check .
echo "[lint] ruff format --check"
.venv/bin/ruff format --check .
echo "[lint] mypy"
.venv/bin/mypy .
echo "[lint] import contracts (pyproject.toml [tool.importlinter]; docs/architecture.md)"
.venv/bin/lint-imports
echo "[lint] migrations up to date"
.venv/bin/python manage.py makemigrations --check --dry-run
