#!/usr/bin/env bash
# axe-core for the accessibility checks of the browser tests (tests/a11y.py injects it into the
# console and dashboard pages). Pinned by tests/a11y/package-lock.json; installed once into
# tests/a11y/node_modules (ignored by git). Node and npm come from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[axe] %s\n' "$*"; }
want=$(sed -n 's/.*"axe-core": "\([^"]*\)".*/\1/p' tests/a11y/package.json | head -n 1)
have=""
if [ -f tests/a11y/node_modules/axe-core/package.json ]; then
    have=$(sed -n 's/^  "version": "\([^"]*\)".*/\1/p' tests/a11y/node_modules/axe-core/package.json)
fi
if [ "$have" = "$want" ]; then
    log "axe-core $have present; skipped"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    log "installing npm (Debian)"
    if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
log "installing axe-core $want"
npm ci --prefix tests/a11y --no-audit --no-fund --loglevel=error
