"""Settings fail loudly: a malformed environment stops the process at start-up.

Each start-up case runs `django.setup()` in a fresh interpreter with its own environment, so the
settings module is imported exactly as `manage.py` or gunicorn would import it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from csbot import env

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Every variable the settings module reads; cleared so the caller's environment cannot leak in.
SETTINGS_VARS = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_CSRF_TRUSTED_ORIGINS",
    "CSBOT_VAR_DIR",
    "TIME_ZONE",
    "LOCAL_LLM_URL",
    "LOCAL_LLM_PORT",
    "DRAFT_STALE_SECONDS",
    "DRAFT_MAX_AGE_SECONDS",
    "DRAFT_MAX_TRIES",
    "DRAFT_RETRY_BASE_SECONDS",
    "DRAFT_HISTORY_MESSAGES",
    "DRAFT_SWEEP_INTERVAL_SECONDS",
    "CSBOT_MAX_MESSAGE_CHARS",
    "CSBOT_MAX_BODY_BYTES",
    "LOG_LEVEL",
    "DATABASE_CONNECT_TIMEOUT",
    "CACHE_URL",
)

REPORT = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'engine': s.DATABASES['default']['ENGINE'], "
    "'name': s.DATABASES['default']['NAME'], 'broker': s.CELERY_BROKER_URL, "
    "'debug': s.DEBUG, 'stale': s.DRAFT_STALE_SECONDS, 'llm': s.LOCAL_LLM_URL, "
    "'hosts': s.ALLOWED_HOSTS, "
    "'connect_timeout': s.DATABASES['default'].get('OPTIONS', {}).get('connect_timeout'), "
    "'host': s.DATABASES['default']['HOST'], 'port': s.DATABASES['default']['PORT'], "
    "'options': s.DATABASES['default'].get('OPTIONS', {}).get('options')}))"
)


def start(
    tmp_path: Path, *, code: str = REPORT, **changes: str | None
) -> subprocess.CompletedProcess[str]:
    """Run `code` (django.setup() and a report of the settings) with a valid environment plus
    `changes` (None removes a variable)."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in SETTINGS_VARS and not any(key == f"{name}_FILE" for name in SETTINGS_VARS)
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="csbot.settings",
        DJANGO_SECRET_KEY="settings-test-secret",
        DJANGO_DEBUG="0",
        DATABASE_URL="postgres://csbot:csbot@127.0.0.1:5432/csbot",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
        CSBOT_VAR_DIR=str(tmp_path),
    )
    for key, value in changes.items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_refused(result: subprocess.CompletedProcess[str], variable: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "ImproperlyConfigured" in result.stderr, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert variable in last_line, result.stderr


# --- Start-up ---------------------------------------------------------------------------------


def test_a_valid_environment_starts_on_postgresql(tmp_path: Path) -> None:
    result = start(tmp_path, DATABASE_URL="postgres://u:p@db.internal:5433/csbot")

    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["engine"] == "django.db.backends.postgresql"
    assert loaded["name"] == "csbot"
    assert loaded["broker"] == "redis://127.0.0.1:6379/0"
    assert loaded["debug"] is False
    assert loaded["stale"] == 120
    assert loaded["llm"] == ""


def test_without_database_url_the_embedded_postgresql_is_used(tmp_path: Path) -> None:
    # The server scripts/postgres.sh starts for `make run` and `make test`.
    result = start(tmp_path, DATABASE_URL=None, CELERY_BROKER_URL=None)

    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["engine"] == "django.db.backends.postgresql"
    assert (loaded["host"], loaded["port"], loaded["name"]) == ("127.0.0.1", 5433, "csbot")
    # Filtered vector searches keep walking the index until they have their rows.
    assert "-c hnsw.iterative_scan=relaxed_order" in loaded["options"]
    assert loaded["broker"] == "filesystem://"
    assert (tmp_path / "broker").is_dir()


def test_an_sqlite_database_url_is_refused_with_the_reason(tmp_path: Path) -> None:
    # Vector search needs PostgreSQL with pgvector: SQLite is no longer a fallback.
    assert_refused(start(tmp_path, DATABASE_URL="sqlite:///var/csbot.sqlite3"), "DATABASE_URL")


def test_overrides_are_read_from_the_environment(tmp_path: Path) -> None:
    result = start(
        tmp_path,
        DJANGO_DEBUG="yes",
        DRAFT_STALE_SECONDS="45",
        LOCAL_LLM_URL="http://gpu-box:8000/v1",
        DJANGO_ALLOWED_HOSTS="csbot.example.com, api.example.com,",
        DATABASE_CONNECT_TIMEOUT="7",
    )

    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["debug"] is True
    assert loaded["stale"] == 45
    assert loaded["llm"] == "http://gpu-box:8000/v1"
    assert loaded["hosts"] == ["csbot.example.com", "api.example.com"]
    assert loaded["connect_timeout"] == 7


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://x"),
        ("DATABASE_URL", "not-a-url"),
        ("DATABASE_URL", ""),
        ("CELERY_BROKER_URL", "amqp://x"),
        ("CELERY_BROKER_URL", "redis"),
        ("CELERY_BROKER_URL", ""),
        ("DJANGO_DEBUG", "maybe"),
        ("DRAFT_STALE_SECONDS", "abc"),
        ("DRAFT_STALE_SECONDS", "0"),
        ("CSBOT_MAX_MESSAGE_CHARS", "4k"),
        ("LOCAL_LLM_URL", "ftp://x"),
        ("LOCAL_LLM_URL", "http://"),
        ("LOG_LEVEL", "LOUD"),
        ("TIME_ZONE", "Mars/Base"),
        ("DRAFT_CACHE_SEMANTIC_THRESHOLD", "high"),
        ("DRAFT_CACHE_SEMANTIC_THRESHOLD", "0.2"),
        ("EMBEDDING_BACKEND", "word2vec"),
        ("DATABASE_CONNECT_TIMEOUT", "0"),
    ],
    ids=lambda value: value or "empty",
)
def test_a_malformed_variable_stops_start_up_naming_it(
    tmp_path: Path, variable: str, value: str
) -> None:
    assert_refused(start(tmp_path, **{variable: value}), variable)


def test_a_malformed_database_url_with_an_allowed_scheme_is_refused(tmp_path: Path) -> None:
    assert_refused(start(tmp_path, DATABASE_URL="postgres://u:p@h:notaport/db"), "DATABASE_URL")


def test_debug_off_without_secret_key_is_refused(tmp_path: Path) -> None:
    assert_refused(start(tmp_path, DJANGO_DEBUG="0", DJANGO_SECRET_KEY=None), "DJANGO_SECRET_KEY")


def test_debug_off_with_an_empty_secret_key_is_refused(tmp_path: Path) -> None:
    assert_refused(start(tmp_path, DJANGO_DEBUG="0", DJANGO_SECRET_KEY=""), "DJANGO_SECRET_KEY")


def test_debug_on_without_secret_key_starts_with_a_dev_key(tmp_path: Path) -> None:
    result = start(tmp_path, DJANGO_DEBUG="1", DJANGO_SECRET_KEY=None)

    assert result.returncode == 0, result.stderr


def test_an_unreadable_secret_key_file_is_refused(tmp_path: Path) -> None:
    result = start(
        tmp_path, DJANGO_SECRET_KEY=None, DJANGO_SECRET_KEY_FILE=str(tmp_path / "missing")
    )

    assert_refused(result, "DJANGO_SECRET_KEY_FILE")


# --- The readers ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "True", " yes ", "ON"])
def test_env_bool_reads_true_spellings(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("CSBOT_TEST_FLAG", raw)

    assert env.env_bool("CSBOT_TEST_FLAG", False) is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "off", ""])
def test_env_bool_reads_false_spellings(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("CSBOT_TEST_FLAG", raw)

    assert env.env_bool("CSBOT_TEST_FLAG", True) is False


def test_env_bool_unset_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CSBOT_TEST_FLAG", raising=False)

    assert env.env_bool("CSBOT_TEST_FLAG", True) is True
    assert env.env_bool("CSBOT_TEST_FLAG", False) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled"])
def test_env_bool_refuses_anything_else(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("CSBOT_TEST_FLAG", raw)

    with pytest.raises(ImproperlyConfigured, match="CSBOT_TEST_FLAG"):
        env.env_bool("CSBOT_TEST_FLAG", False)


def test_env_int_reads_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSBOT_TEST_INT", " 17 ")
    assert env.env_int("CSBOT_TEST_INT", 3) == 17

    monkeypatch.delenv("CSBOT_TEST_INT")
    assert env.env_int("CSBOT_TEST_INT", 3) == 3


@pytest.mark.parametrize("raw", ["abc", "1.5", "", "10s"])
def test_env_int_refuses_non_integers(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("CSBOT_TEST_INT", raw)

    with pytest.raises(ImproperlyConfigured, match="CSBOT_TEST_INT"):
        env.env_int("CSBOT_TEST_INT", 3)


def test_env_int_refuses_values_below_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSBOT_TEST_INT", "0")

    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env.env_int("CSBOT_TEST_INT", 3, minimum=1)
    assert env.env_int("CSBOT_TEST_INT", 3, minimum=0) == 0


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSBOT_TEST_LIST", " a.example, ,b.example,")
    assert env.env_list("CSBOT_TEST_LIST", ["x"]) == ["a.example", "b.example"]

    monkeypatch.setenv("CSBOT_TEST_LIST", "")
    assert env.env_list("CSBOT_TEST_LIST", ["x"]) == []

    monkeypatch.delenv("CSBOT_TEST_LIST")
    assert env.env_list("CSBOT_TEST_LIST", ["x"]) == ["x"]


def test_env_str_without_default_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CSBOT_TEST_STR", raising=False)
    monkeypatch.delenv("CSBOT_TEST_STR_FILE", raising=False)

    with pytest.raises(ImproperlyConfigured, match="CSBOT_TEST_STR"):
        env.env_str("CSBOT_TEST_STR")
    assert env.env_str("CSBOT_TEST_STR", "fallback") == "fallback"


def test_env_str_prefers_a_secret_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    monkeypatch.setenv("CSBOT_TEST_STR", "from-env")
    monkeypatch.setenv("CSBOT_TEST_STR_FILE", str(secret))

    assert env.env_str("CSBOT_TEST_STR") == "from-file"


def test_env_str_refuses_an_unreadable_secret_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CSBOT_TEST_STR_FILE", str(tmp_path / "missing"))

    with pytest.raises(ImproperlyConfigured, match="CSBOT_TEST_STR_FILE"):
        env.env_str("CSBOT_TEST_STR", "fallback")


def test_env_url_accepts_listed_schemes_and_an_unset_optional_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CSBOT_TEST_URL", "https://api.example.com/v1")
    assert (
        env.env_url("CSBOT_TEST_URL", "", schemes=("http", "https")) == "https://api.example.com/v1"
    )

    monkeypatch.delenv("CSBOT_TEST_URL")
    assert env.env_url("CSBOT_TEST_URL", "", schemes=("http",)) == ""
    assert env.env_url("CSBOT_TEST_URL", "redis://d", schemes=("redis",)) == "redis://d"

    monkeypatch.setenv("CSBOT_TEST_URL", "")
    assert env.env_url("CSBOT_TEST_URL", "", schemes=("http",)) == ""


@pytest.mark.parametrize("raw", ["ftp://x", "not-a-url", "http", "HTTP//x"])
def test_env_url_refuses_other_schemes_and_non_urls(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("CSBOT_TEST_URL", raw)

    with pytest.raises(ImproperlyConfigured, match="CSBOT_TEST_URL"):
        env.env_url("CSBOT_TEST_URL", "", schemes=("http", "https"))


def test_env_url_refuses_an_empty_value_where_a_default_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An empty CELERY_BROKER_URL would otherwise reach Celery, which falls back to amqp://.
    monkeypatch.setenv("CSBOT_TEST_URL", "")

    with pytest.raises(ImproperlyConfigured, match="CSBOT_TEST_URL"):
        env.env_url("CSBOT_TEST_URL", "redis://d", schemes=("redis",))


def test_env_float_reads_a_number_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSBOT_TEST_SHARE", " 0.97 ")
    assert env.env_float("CSBOT_TEST_SHARE", 0.5, minimum=0, maximum=1) == 0.97
    monkeypatch.delenv("CSBOT_TEST_SHARE")
    assert env.env_float("CSBOT_TEST_SHARE", 0.5, minimum=0, maximum=1) == 0.5
    monkeypatch.setenv("CSBOT_TEST_SHARE", "1.5")
    with pytest.raises(ImproperlyConfigured, match="between 0 and 1"):
        env.env_float("CSBOT_TEST_SHARE", 0.5, minimum=0, maximum=1)


# --- The web server and its shared cache -----------------------------------------------------

SERVE = "import csbot.wsgi; print('serving')"


@pytest.mark.slow
def test_the_web_server_refuses_to_start_without_a_shared_cache_when_debug_is_off(
    tmp_path: Path,
) -> None:
    """Rate limits and token revocations live in the cache: with several web processes a
    per-process one multiplies the login limits by the processes."""
    refused = start(tmp_path, code=SERVE, CACHE_URL=None)
    assert_refused(refused, "CACHE_URL")
    assert "CACHE_URL=locmem://" in refused.stderr  # the message names the way out
    assert start(
        tmp_path, code=SERVE, CACHE_URL="redis://cache.internal:6379/2"
    ).stdout.strip() == ("serving")


@pytest.mark.slow
def test_a_per_process_cache_is_an_explicit_choice(tmp_path: Path) -> None:
    report = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "import csbot.wsgi; print(json.dumps(s.CACHES['default']['BACKEND']))"
    )
    chosen = start(tmp_path, code=report, CACHE_URL="locmem://")
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout) == "django.core.cache.backends.locmem.LocMemCache"
    # With DEBUG on (`make run`) the default is the per-process cache, without a word.
    debug = start(tmp_path, code=report, CACHE_URL=None, DJANGO_DEBUG="1")
    assert debug.returncode == 0, debug.stderr
    assert_refused(start(tmp_path, CACHE_URL="memcached://cache:11211"), "CACHE_URL")


def test_the_embedded_broker_keeps_its_exchange_tables_under_the_var_folder(
    tmp_path: Path,
) -> None:
    """Kombu's filesystem transport writes `control/` into the current folder unless told
    where: a worker started in the project root left one in git."""
    declare = (
        "import django; django.setup(); from csbot.celery import app\n"
        "with app.connection_for_write() as connection:\n"
        "    channel = connection.default_channel\n"
        "    channel.exchange_declare('celery', type='direct')\n"
        "    channel.queue_declare('celery')\n"
        "    channel.queue_bind('celery', 'celery', 'celery')\n"
    )
    before = set(PROJECT_ROOT.iterdir())

    result = start(tmp_path, code=declare, CELERY_BROKER_URL=None, DJANGO_DEBUG="1")

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "broker-control" / "celery.exchange").is_file()
    assert set(PROJECT_ROOT.iterdir()) == before
