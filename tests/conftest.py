"""Shared fixtures: a team with a channel, an agent and a policy on the real local vLLM; a
real Celery worker on the real broker; the vLLM server itself (started once per session).
Fixtures only: the builders they use live in tests/factories.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.factories import TeamSetup, make_team

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@pytest.fixture(autouse=True)
def _static_files_from_the_source(settings: Any) -> None:
    """Tests run with DEBUG off but without `collectstatic`: serve static files from the app
    folders instead of a manifest that does not exist."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.WHITENOISE_USE_FINDERS = True
    # Tests revoke tokens behind the web layer's back; the cache has its own test.
    settings.API_TOKEN_CACHE_SECONDS = 0


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """Every factory-made user gets a password: with the default PBKDF2 hasher that costs about
    0.3 s each on CI's two cores. The tests check who may log in, not the hash's strength."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _closed_circuit_breakers() -> Iterator[None]:
    """Endpoint ids repeat between test runs: start every test with no breaker state."""
    from drafting.engine.breaker import breaker

    breaker.cache_clear()
    if settings.CELERY_BROKER_URL.startswith("redis"):
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        keys = list(client.scan_iter("csbot:breaker:*"))
        if keys:
            client.delete(*keys)
    yield
    breaker.cache_clear()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def vllm_base_url() -> str:
    """The real local vLLM server: LOCAL_LLM_URL when given, else the CPU build, reused when
    `make test` already started it, otherwise installed and started here (slow)."""
    from drafting import localserver

    return localserver.ensure_server(
        url=settings.LOCAL_LLM_URL or None, port=settings.LOCAL_LLM_PORT, timeout=1200
    )


@pytest.fixture
def acme(db: None) -> TeamSetup:
    return make_team("Acme")


@pytest.fixture
def globex(db: None) -> TeamSetup:
    return make_team("Globex")


@pytest.fixture
def celery_worker(transactional_db: None) -> Iterator[None]:
    """A real Celery worker (in a thread of this process, so it sees the test database)
    consuming from the real broker configured by CELERY_BROKER_URL."""
    from celery.contrib.testing.worker import start_worker

    from csbot.celery import app

    app.control.purge()  # tasks left in the broker by earlier tests point at deleted rows
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=60
    ):
        yield
