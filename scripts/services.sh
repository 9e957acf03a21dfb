#!/usr/bin/env bash
# Install, start, stop and inspect the local services csbot's tests and dev server need:
# PostgreSQL and Redis (plus the Debian Chromium and wrk used by browser tests and benchmarks).
#
# Usage: scripts/services.sh {install|start|stop|status|env|up}
#   install  apt-get the Debian packages that are missing (nothing if all are there)
#   start    start PostgreSQL and Redis unless they already answer; create role and database
#   stop     stop the PostgreSQL cluster and Redis
#   status   say what is installed and what answers; exit 1 unless both services answer
#   env      print `export ...` lines for DATABASE_URL and CELERY_BROKER_URL (for eval)
#   up       install, then start
#
# Why no systemd: CI machines and containers have none, so Postgres is driven through
# Debian's cluster tools (pg_ctlcluster) and Redis is run as a plain daemon.
#
# Overridable settings (defaults in brackets). Credentials use CSBOT_* names rather than
# PGUSER/PGPASSWORD/PGDATABASE on purpose: a developer's exported PGUSER=postgres must not
# make this script reset the password of their superuser.
#   PGHOST [127.0.0.1]  PGPORT [5432]
#   CSBOT_DB_USER [csbot]  CSBOT_DB_PASSWORD [csbot]  CSBOT_DB_NAME [csbot]
#   REDIS_HOST [127.0.0.1]  REDIS_PORT [6379]  REDIS_DB [0]
#   SERVICES_TIMEOUT [60]  seconds to wait for each service to answer
#   SERVICES_STATE_DIR [/tmp/csbot-services-$UID]  Redis pid/log files
set -euo pipefail

PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
DB_USER="${CSBOT_DB_USER:-csbot}"
DB_PASSWORD="${CSBOT_DB_PASSWORD:-csbot}"
DB_NAME="${CSBOT_DB_NAME:-csbot}"
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
PACKAGES=(postgresql redis-server chromium chromium-driver fonts-liberation wrk
    libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core)

log() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# Percent-encode a URL component, so overridden credentials with '@', ':' or '/' stay valid.
urlencode() {
    local LC_ALL=C s=$1 out="" c i  # C locale: encode bytes, not characters
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
            [a-zA-Z0-9._~-]) out+=$c ;;
            *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    printf '%s' "$out"
}

DATABASE_URL="postgres://$(urlencode "$DB_USER"):$(urlencode "$DB_PASSWORD")@${PGHOST}:${PGPORT}/$(urlencode "$DB_NAME")"
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

# Postgres superuser work goes through the 'postgres' OS account and peer authentication
# on the Unix socket, so no superuser password is needed anywhere.
as_postgres() {
    if [[ $(id -un) == postgres ]]; then
        "$@"
    elif [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -u postgres "$@"
    else
        die "need to run as the postgres user for: $* (run as root, or install sudo)"
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
# PostgreSQL
# ---------------------------------------------------------------------------------------------
pg_answers() { pg_isready -q -h "$PGHOST" -p "$PGPORT" -t 2 >/dev/null 2>&1; }

# Newest PostgreSQL major version whose server binaries are installed (not hard-coded: Debian
# 12 ships 15, later releases ship newer ones).
pg_version() {
    local dir ver best=""
    for dir in /usr/lib/postgresql/*/bin/postgres; do
        [[ -x $dir ]] || continue
        ver=${dir#/usr/lib/postgresql/}
        ver=${ver%%/*}
        if [[ -z $best ]] || ((ver > best)); then best=$ver; fi
    done
    [[ -n $best ]] || return 1
    printf '%s\n' "$best"
}

# One pg_lsclusters field (Ver Cluster Port Status Owner Datadir Logfile) of cluster <ver> main.
pg_cluster_field() {
    local ver=$1 field=$2
    pg_lsclusters --no-header 2>/dev/null |
        awk -v v="$ver" -v f="$field" '$1 == v && $2 == "main" { print $f }'
}

# Directory of the cluster's Unix socket (Debian default /var/run/postgresql).
pg_socket_dir() {
    local dirs
    dirs=$(pg_conftool -s "$1" main show unix_socket_directories 2>/dev/null || true)
    dirs=${dirs%%,*}
    dirs=${dirs//\'/}
    printf '%s\n' "${dirs:-/var/run/postgresql}"
}

# Wait until $1 (a function) succeeds, or fail after TIMEOUT seconds showing a log.
wait_for() {
    local check=$1 what=$2 logfile=${3:-} deadline=$((SECONDS + TIMEOUT))
    until "$check"; do
        if ((SECONDS >= deadline)); then
            if [[ -n $logfile ]]; then
                printf '[services] last lines of %s:\n' "$logfile" >&2
                as_root tail -n 30 "$logfile" >&2 || true
            fi
            die "$what did not answer within ${TIMEOUT}s"
        fi
        sleep 0.5
    done
}

start_postgres() {
    command -v pg_lsclusters >/dev/null 2>&1 ||
        die "PostgreSQL is not installed: run '$0 install' first"
    local ver
    ver=$(pg_version) || die "no PostgreSQL server binaries under /usr/lib/postgresql: run '$0 install'"

    if pg_answers; then
        log "PostgreSQL already answering on $PGHOST:$PGPORT"
    else
        if [[ -z $(pg_cluster_field "$ver" 2) ]]; then
            # The postgresql package normally creates 'main' itself; a removed cluster or an
            # image built with create_main_cluster=false does not have one.
            log "creating PostgreSQL $ver cluster 'main' on port $PGPORT"
            as_root pg_createcluster "$ver" main --port "$PGPORT"
        fi
        local port status
        port=$(pg_cluster_field "$ver" 3)
        status=$(pg_cluster_field "$ver" 4)
        if [[ $port != "$PGPORT" ]]; then
            # An overridden PGPORT must be where the cluster listens, or nothing would answer.
            # Never silently stop a cluster that others may be using on its current port.
            [[ $status == online* ]] && die "PostgreSQL $ver/main is running on port $port," \
                "not $PGPORT: use PGPORT=$port, or stop it first (PGPORT=$port $0 stop)"
            log "moving PostgreSQL $ver/main from port $port to $PGPORT"
            as_root pg_conftool "$ver" main set port "$PGPORT"
        fi
        if [[ $status == online* ]]; then
            # Running but not answering on TCP yet (e.g. still recovering): just wait below.
            log "PostgreSQL $ver/main is running; waiting for it"
        else
            log "starting PostgreSQL $ver/main on port $PGPORT"
            # pg_ctlcluster uses pg_ctl directly when systemd is not running.
            as_root pg_ctlcluster "$ver" main start
        fi
        wait_for pg_answers "PostgreSQL on $PGHOST:$PGPORT" "$(pg_cluster_field "$ver" 7)"
    fi

    ensure_role_and_db "$ver"
}

# Create the login role and its database if missing. CREATEDB because Django's test runner
# creates (and drops) a test_<name> database. Re-setting the password keeps a pre-existing
# role usable with the credentials printed below.
ensure_role_and_db() {
    local ver=$1 sock
    sock=$(pg_socket_dir "$ver")
    # psql variables (:'name' quoting) + format(%I/%L) + \gexec: safe quoting of any names,
    # and CREATE only when absent (CREATE ROLE/DATABASE have no IF NOT EXISTS).
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$PGPORT" -U postgres -d postgres \
        -v role="$DB_USER" -v pass="$DB_PASSWORD" -v db="$DB_NAME" >/dev/null <<'SQL' ||
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'pass')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'pass') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
        die "could not create role '$DB_USER' / database '$DB_NAME' (via socket $sock)"

    # Prove the printed URL works (password auth over TCP, as Django will connect).
    PGPASSWORD=$DB_PASSWORD PGCONNECT_TIMEOUT=5 psql -X -q -h "$PGHOST" -p "$PGPORT" \
        -U "$DB_USER" -d "$DB_NAME" -c 'select 1' >/dev/null ||
        die "cannot log in as '$DB_USER' to '$DB_NAME' on $PGHOST:$PGPORT"
    log "PostgreSQL role '$DB_USER' and database '$DB_NAME' ready"
}

stop_postgres() {
    command -v pg_lsclusters >/dev/null 2>&1 || { log "PostgreSQL not installed"; return 0; }
    local ver status
    ver=$(pg_version) || { log "PostgreSQL not installed"; return 0; }
    status=$(pg_cluster_field "$ver" 4)
    if [[ $status == online* ]]; then
        log "stopping PostgreSQL $ver/main"
        as_root pg_ctlcluster "$ver" main stop
    else
        log "PostgreSQL $ver/main not running"
    fi
}

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
    printf 'DATABASE_URL=%s\n' "$DATABASE_URL"
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
    if command -v pg_isready >/dev/null 2>&1 && pg_answers; then
        log "PostgreSQL: answering on $PGHOST:$PGPORT"
    else
        log "PostgreSQL: not answering on $PGHOST:$PGPORT"
        ok=1
    fi
    if command -v pg_lsclusters >/dev/null 2>&1; then pg_lsclusters | sed 's/^/[services]   /'; fi
    if command -v redis-cli >/dev/null 2>&1 && redis_answers; then
        log "Redis: answering on $REDIS_HOST:$REDIS_PORT"
    else
        log "Redis: not answering on $REDIS_HOST:$REDIS_PORT"
        ok=1
    fi
    printf 'DATABASE_URL=%s\n' "$DATABASE_URL"
    printf 'CELERY_BROKER_URL=%s\n' "$CELERY_BROKER_URL"
    return "$ok"
}

cmd_env() {
    printf 'export DATABASE_URL=%q\n' "$DATABASE_URL"
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
