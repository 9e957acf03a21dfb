#!/usr/bin/env bash
# Regenerate requirements.lock from pyproject.toml's [project].dependencies: every package of
# the image pinned exactly, with hashes, for the Dockerfile's `pip install --require-hashes`.
#
#   scripts/lock.sh              add what pyproject.toml gained, keep every other pin (seconds)
#   scripts/lock.sh --upgrade    move every pin to the newest version its range allows
#   scripts/lock.sh --check      exit 1 if the lock lacks a dependency of pyproject.toml
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
UV_VERSION=0.13.9
TOOLS="${CSBOT_CACHE_DIR:-$HOME/.cache/csbot}/lock-tools"
TORCH_WHEELS="${CSBOT_TORCH_WHEELS:-/opt/wheels}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ "${1:-}" = "--check" ]; then
    exec .venv/bin/python -m pytest -q tests/system/test_deploy.py -k lock
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

"$TOOLS/bin/uv" pip compile pyproject.toml \
    --output-file "$LOCK" \
    --generate-hashes \
    --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 \
    --find-links "$TORCH_WHEELS" \
    --custom-compile-command "scripts/lock.sh" \
    --quiet \
    "$@"

if grep -Eq '^(nvidia-|triton==|cuda-)' "$LOCK"; then
    echo "[lock] $LOCK pulls CUDA packages: the CPU build of torch was not found in" \
        "$TORCH_WHEELS" >&2
    exit 1
fi
grep -q '^torch==.*+cpu' "$LOCK" || {
    echo "[lock] $LOCK has no +cpu build of torch" >&2
    exit 1
}
echo "[lock] $LOCK: $(grep -c '^[a-z0-9]' "$LOCK") packages pinned with hashes"
