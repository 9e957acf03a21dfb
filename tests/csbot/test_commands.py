"""Management commands of `make run`: the demo seed and the simulated customer stream."""

from __future__ import annotations

from io import StringIO
from typing import Any

from django.core.management import call_command

from csbot.demo import demo_conversations
from csbot.models import Conversation, Message, Team
from drafting.models import CascadePolicy, Draft


def test_seed_demo_creates_a_working_demo_once(db: None) -> None:
    out = StringIO()
    # No hold-out, so every conversation's newest message has a queued draft to count.
    # Without the past (tests/csbot/test_demo_history.py): these count the live demo only.
    call_command("seed_demo", "--holdout-share", "0", "--no-history", stdout=out)
    call_command("seed_demo", "--no-history", stdout=StringIO())  # idempotent

    team = Team.objects.get(name="Demo Support")
    expected = sum(len(c["messages"]) for c in demo_conversations())
    assert Message.objects.filter(conversation__team=team, direction="in").count() == expected
    assert Conversation.objects.filter(team=team).count() == len(demo_conversations())
    policy = CascadePolicy.objects.get(team=team, active=True)
    assert policy.tiers.get().endpoint.kind == "local"
    # A second customer message supersedes the first one's draft: one live draft per thread.
    assert Draft.objects.live().filter(message__conversation__team=team).count() == len(
        demo_conversations()
    )
    assert "agent / csbot-demo" in out.getvalue()


def test_simulate_posts_customer_messages_through_the_http_api(live_server: Any) -> None:
    call_command("seed_demo", "--no-conversations", stdout=StringIO())
    out = StringIO()
    call_command(
        "simulate",
        "--url",
        live_server.url,
        "--count",
        "5",
        "--interval",
        "0",
        "--seed",
        "7",
        stdout=out,
    )
    team = Team.objects.get(name="Demo Support")
    assert Message.objects.filter(conversation__team=team, direction="in").count() == 5
    assert out.getvalue().count("→ message") == 5
