#!/usr/bin/env bash
# Regenerate the two locks from pyproject.toml, every package pinned exactly, with hashes:
#   requirements.lock      [project].dependencies: what runs csbot, all the image installs
#                          (the Dockerfile's `pip install --require-hashes`)
#   requirements-dev.lock  the same pins plus the extras `local` (the embedded PostgreSQL) and
#                          `dev` (tests, lint, benches), compiled against requirements.lock so
#                          the runtime pins are identical in both
#
#   scripts/lock.sh              add what pyproject.toml gained, keep every other pin (seconds)
#   scripts/lock.sh --upgrade    move every pin to the newest version its range allows
#   scripts/lock.sh --check      exit 1 if a lock lacks a dependency of pyproject.toml
#
# The lock is for the image: Linux x86_64, CPython 3.11 (python:3.11-slim-bookworm), whatever
# machine runs this script. torch is pinned to 2.13.0 in pyproject.toml; the only build of it on
# the default index is the CUDA one, which drags in ≈3 GB of nvidia-* wheels that the image
# never uses (the GPU belongs to the vLLM container; the worker embeds on the CPU). So the
# resolver must see the CPU build (`torch-2.13.0+cpu-…whl`): CSBOT_TORCH_WHEELS names a folder or
# an HTML page of links holding it (default /opt/wheels, where the development machines keep
# it). The script refuses a lock with CUDA packages in it.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCK=requirements.lock
DEV_LOCK=requirements-dev.lock
UV_VERSION=0.13.9
TOOLS="${CSBOT_CACHE_DIR:-$HOME/.cache/csbot}/lock-tools"
TORCH_WHEELS="${CSBOT_TORCH_WHEELS:-/opt/wheels}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ "${1:-}" = "--check" ]; then
    exec .venv/bin/python -m pytest -q tests/system/test_deploy.py tests/system/test_dependencies.py -k lock
fi

# uv in its own small virtualenv: the project's .venv stays exactly what pyproject.toml says.
if ! "$TOOLS/bin/uv" --version 2>/dev/null | grep -q " $UV_VERSION"; then
    echo "[lock] installing uv $UV_VERSION into $TOOLS"
    "$PYTHON" -m venv "$TOOLS"
    "$TOOLS/bin/pip" install --quiet "uv==$UV_VERSION"
fi

if [ ! -e "$TORCH_WHEELS" ] && [[ "$TORCH_WHEELS" != http* ]]; then
    echo "[lock] $TORCH_WHEELS does not exist: set CSBOT_TORCH_WHEELS to a folder or page" \
        "holding torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl" >&2
    exit 1
fi

compile() {
    "$TOOLS/bin/uv" pip compile pyproject.toml \
        --generate-hashes \
        --python-version 3.11 \
        --python-platform x86_64-manylinux_2_28 \
        --find-links "$TORCH_WHEELS" \
        --custom-compile-command "scripts/lock.sh" \
        --quiet \
        "$@"
}

compile --output-file "$LOCK" "$@"
# The development lock starts from the runtime one (uv keeps an output file's pins) and may
# not move them (constraints): what the tests run is what the image runs.
[ -f "$DEV_LOCK" ] || cp "$LOCK" "$DEV_LOCK"
compile --extra dev --constraint "$LOCK" --output-file "$DEV_LOCK" "$@"

for lock in "$LOCK" "$DEV_LOCK"; do
    if grep -Eq '^(nvidia-|triton==|cuda-)' "$lock"; then
        echo "[lock] $lock pulls CUDA packages: the CPU build of torch was not found in" \
            "$TORCH_WHEELS" >&2
        exit 1
    fi
    grep -q '^torch==.*+cpu' "$lock" || {
        echo "[lock] $lock has no +cpu build of torch" >&2
        exit 1
    }
    echo "[lock] $lock: $(grep -c '^[a-z0-9]' "$lock") packages pinned with hashes"
done
