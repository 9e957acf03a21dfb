"""Shared fixtures: a team with a channel, an agent and a policy on the real local vLLM; a
real Celery worker on the real broker; the vLLM server itself (started once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from csbot import services
from csbot.models import AgentProfile, Channel, Team
from drafting.models import CascadePolicy, ModelEndpoint
from tests.factories import (
    AgentProfileFactory,
    ChannelFactory,
    EndpointFactory,
    PolicyFactory,
    TeamFactory,
    TierFactory,
    token_for,
)

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


@dataclass
class TeamSetup:
    team: Team
    channel: Channel
    agent: Any
    profile: AgentProfile
    policy: CascadePolicy
    endpoint: ModelEndpoint
    token: str

    def api(self) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {self.token}")
        return client


def make_team(name: str, *, endpoint: ModelEndpoint | None = None) -> TeamSetup:
    team = TeamFactory.create(name=name)
    channel = ChannelFactory.create(team=team, name="web-chat")
    profile = AgentProfileFactory.create(
        team=team, user__username=f"{name.lower().replace(' ', '-')}-agent"
    )
    policy = PolicyFactory.create(team=team)
    endpoint = endpoint or EndpointFactory.create()
    TierFactory.create(policy=policy, endpoint=endpoint, position=1)
    return TeamSetup(
        team=team,
        channel=channel,
        agent=profile.user,
        profile=profile,
        policy=policy,
        endpoint=endpoint,
        token=token_for(channel),
    )


def ingest(
    setup: TeamSetup, conversation: str, message_id: str, text: str = "Hi there"
) -> services.IngestResult:
    """A customer message arriving on the team's channel, as the API would store it."""
    return services.message_ingest(
        channel=setup.channel,
        conversation_external_id=conversation,
        channel_message_id=message_id,
        text=text,
        customer_ref="Dana",
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
