#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv in .venv with csbot and its dev tools.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
STAMP="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"

if [ -f "$STAMP" ]; then
    exit 0
fi
echo "[bootstrap] creating $VENV with $($PYTHON --version) and installing csbot[dev] …"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --progress-bar on -e ".[dev]"
rm -f "$VENV"/.installed-*
touch "$STAMP"
echo "[bootstrap] done"
