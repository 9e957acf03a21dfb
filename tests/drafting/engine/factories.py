"""Builders of the cache and few-shot example tests: a team on a recorded paid endpoint, a
first-turn question drafted through the cascade, and an agent's reply to it."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from csbot import services
from drafting import services as drafting
from drafting.models import AgentAction, Draft, ModelEndpoint
from tests.factories import EndpointFactory, TeamSetup, ingest, make_team

QUESTION = "Do you ship to Canada?"
ANSWER = "Yes! We ship to Canada in 5-7 business days."


def generate(setup: TeamSetup, conversation: str, text: str = QUESTION, turn: int = 1) -> Draft:
    """Turn `turn` of `conversation`, drafted through the cascade (in this thread)."""
    draft = ingest(setup, conversation, f"{conversation}-{turn}", text).draft
    assert draft is not None
    drafting.draft_generate(draft_id=draft.pk)
    draft.refresh_from_db()
    return draft


def act(setup: TeamSetup, draft: Draft, kind: str, text: str) -> None:
    """The agent replies; then what the worker does when the action's bell rings (the test
    transaction never commits, so on_commit callbacks are captured, not run)."""
    Draft.objects.filter(pk=draft.pk).update(
        created_at=timezone.now() - timedelta(seconds=30),
        first_shown_at=timezone.now() - timedelta(seconds=20),
    )
    draft.refresh_from_db()
    services.reply_send(
        conversation=draft.message.conversation,
        agent=setup.agent,
        text=text,
        inbound_message=draft.message,
        draft=draft,
        kind=kind,
    )
    drafting.reply_remember(action_id=AgentAction.objects.get(draft=draft).pk)


def stubbed_team(name: str, stub_url: str) -> TeamSetup:
    """A team whose one tier is a paid endpoint at `stub_url` (a recorded HTTP stub)."""
    return make_team(
        name, endpoint=EndpointFactory.create(kind=ModelEndpoint.Kind.PAID, base_url=stub_url)
    )
