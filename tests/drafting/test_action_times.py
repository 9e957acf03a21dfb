"""Agent-action times are claims checked at the service (API and console alike), long handle
times are kept but left out of ENCS, and a closed conversation takes no reply."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounting.engine import Scope
from accounting.models import AccountingSettings
from accounting.selectors import encs_report
from csbot import services
from csbot.models import AgentProfile, Conversation, Message
from drafting.models import AgentAction, Draft
from tests.factories import (
    DRAFT_TEXT,
    AgentProfileFactory,
    TeamSetup,
    UserFactory,
    ingest,
    post_action,
)


def aged_ready_draft(setup: TeamSetup, *, age: timedelta, name: str = "c") -> Draft:
    """A ready draft for a message that arrived `age` ago (the draft is created on arrival)."""
    result = ingest(setup, name, f"{name}-m")
    assert result.draft is not None
    arrived = timezone.now() - age
    Message.objects.filter(pk=result.message.pk).update(created_at=arrived)
    Draft.objects.filter(pk=result.draft.pk).update(
        created_at=arrived,
        status=Draft.Status.READY,
        text=DRAFT_TEXT,
        ready_at=arrived,
        final_endpoint=setup.endpoint,
    )
    result.draft.refresh_from_db()
    return result.draft


def nothing_written() -> bool:
    return (
        not AgentAction.objects.exists()
        and not Message.objects.filter(direction=Message.Direction.OUTBOUND).exists()
    )


@pytest.fixture
def priced(db: None) -> None:
    """R = $36/h; T_baseline 120 s by default."""
    AccountingSettings.objects.create(
        effective_from=date(2000, 1, 1),
        agent_hourly_usd=Decimal(36),
        default_baseline_seconds=Decimal(120),
        min_holdout_sample=3,
    )


def this_month() -> Scope:
    today = timezone.localdate()
    start = today.replace(day=1) - timedelta(days=200)
    return Scope(start=start, end=today + timedelta(days=1))


# --- Times refused before anything is written ---------------------------------------------------


def test_shown_at_four_months_before_a_fresh_draft_is_refused_and_nothing_is_written(
    acme: TeamSetup,
) -> None:
    # The probe's example: a draft of a message that arrived minutes ago, "shown" months ago.
    draft = aged_ready_draft(acme, age=timedelta(minutes=5))
    acted_at = timezone.now()

    response = post_action(
        acme.api(),
        draft,
        kind="use",
        agent=acme.agent.username,
        shown_at=acted_at - timedelta(days=122),
        acted_at=acted_at,
    )

    assert response.status_code == 400
    assert "before the message reached csbot" in response.json()["shown_at"][0]
    assert nothing_written()
    conversation = Conversation.objects.get(pk=draft.message.conversation_id)
    assert conversation.awaiting_reply_since is not None  # still waiting for its reply


def test_shown_at_before_the_message_arrived_is_refused(acme: TeamSetup) -> None:
    draft = aged_ready_draft(acme, age=timedelta(hours=1))

    response = post_action(
        acme.api(),
        draft,
        kind="use",
        agent=acme.agent.username,
        shown_at=draft.created_at - timedelta(seconds=1),
    )

    assert response.status_code == 400
    assert "shown_at" in response.json()
    assert nothing_written()


@pytest.mark.parametrize("field", ["shown_at", "acted_at"])
def test_times_in_the_future_beyond_the_clock_skew_are_refused(
    acme: TeamSetup, settings: Any, field: str
) -> None:
    settings.CSBOT_CLOCK_SKEW_SECONDS = 60
    draft = aged_ready_draft(acme, age=timedelta(hours=1))
    future = timezone.now() + timedelta(minutes=5)
    times = {"shown_at": future, "acted_at": future + timedelta(seconds=1)}
    if field == "acted_at":
        times["shown_at"] = timezone.now() - timedelta(minutes=1)

    response = post_action(acme.api(), draft, kind="use", agent=acme.agent.username, **times)

    assert response.status_code == 400
    assert response.json()[field] == [f"{field} is in the future."]
    assert nothing_written()


def test_acted_at_within_the_clock_skew_is_accepted(acme: TeamSetup, settings: Any) -> None:
    settings.CSBOT_CLOCK_SKEW_SECONDS = 300
    draft = aged_ready_draft(acme, age=timedelta(hours=1))
    shown_at = timezone.now() - timedelta(seconds=20)

    response = post_action(
        acme.api(),
        draft,
        kind="use",
        agent=acme.agent.username,
        shown_at=shown_at,
        acted_at=timezone.now() + timedelta(seconds=60),  # the console's clock runs ahead
    )

    assert response.status_code == 201


# --- Long handle times: stored, not counted ---------------------------------------------------


def test_a_reply_100_days_after_the_draft_was_shown_is_stored_but_left_out_of_encs(
    acme: TeamSetup, priced: None
) -> None:
    # A normal reply first: 30 s against a 120 s baseline saves $0.90 at $36/h.
    quick = aged_ready_draft(acme, age=timedelta(minutes=10), name="quick")
    shown = timezone.now() - timedelta(seconds=40)
    assert (
        post_action(
            acme.api(),
            quick,
            kind="use",
            agent=acme.agent.username,
            shown_at=shown,
            acted_at=shown + timedelta(seconds=30),
        ).status_code
        == 201
    )
    before = encs_report(this_month())

    # The probe's example: 100 days between shown and acted, for a draft that old.
    old = aged_ready_draft(acme, age=timedelta(days=100, minutes=1), name="old")
    response = post_action(
        acme.api(),
        old,
        kind="use",
        agent=acme.agent.username,
        shown_at=old.created_at + timedelta(seconds=5),
    )

    assert response.status_code == 201
    action = AgentAction.objects.get(draft=old)
    assert action.handle_seconds > Decimal(100 * 86400)  # stored as measured
    assert action.is_outlier
    after = encs_report(this_month())
    assert after["labor_savings_usd"] == before["labor_savings_usd"] == "0.9000000000"
    assert after["outliers"] == 1 and before["outliers"] == 0
    assert after["actions"]["use"] == 1  # the outlier is not a "use" in the shares either
    assert after["decomposition"]["p"]["outlier"] == "0.5000"


def test_an_outlier_held_out_reply_does_not_move_the_baseline(
    acme: TeamSetup, priced: None
) -> None:
    for n in range(3):
        result = ingest(acme, f"held-{n}", f"held-{n}-m")
        assert result.draft is not None
        age = timedelta(days=3) if n == 0 else timedelta(minutes=5)
        Draft.objects.filter(pk=result.draft.pk).update(
            status=Draft.Status.HELD_OUT, created_at=timezone.now() - age
        )
        draft = Draft.objects.get(pk=result.draft.pk)
        response = post_action(
            acme.api(),
            draft,
            kind="none",
            final_text="Written unaided.",
            agent=acme.agent.username,
            shown_at=draft.created_at,
            acted_at=draft.created_at + timedelta(seconds=60 if n else 2 * 86400),
        )
        assert response.status_code == 201

    report = encs_report(this_month())

    assert report["outliers"] == 1
    assert report["held_out"] == 3
    baseline = next(iter(report["baselines"].values()))
    # Two replies of 60 s are below the 3-reply minimum: the default, not a 2-day mean.
    assert baseline["sample"] == 2
    assert baseline["seconds"] == "120.000"


def test_the_console_stores_a_reply_months_after_the_draft_was_shown(
    client: Client, acme: TeamSetup, priced: None
) -> None:
    draft = aged_ready_draft(acme, age=timedelta(days=130))
    Draft.objects.filter(pk=draft.pk).update(first_shown_at=draft.created_at)
    client.force_login(acme.agent)

    response = client.post(
        f"/console/c/{draft.message.conversation_id}/reply",
        {
            "text": DRAFT_TEXT,
            "kind": "use",
            "inbound_message_id": draft.message_id,
            "draft_id": draft.pk,
        },
    )

    assert response.status_code == 302
    action = AgentAction.objects.get(draft=draft)
    assert action.handle_seconds > Decimal(129 * 86400)
    assert encs_report(this_month())["outliers"] == 1


def test_admin_and_reports_read_every_stored_action_after_long_handle_times(
    client: Client, acme: TeamSetup, priced: None
) -> None:
    draft = aged_ready_draft(acme, age=timedelta(days=700))  # overflowed the old column
    assert (
        post_action(
            acme.api(),
            draft,
            kind="use",
            agent=acme.agent.username,
            shown_at=draft.created_at,
        ).status_code
        == 201
    )
    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))

    listing = client.get("/admin/drafting/agentaction/")
    detail = client.get(f"/admin/drafting/agentaction/{AgentAction.objects.get().pk}/change/")

    outliers = client.get("/admin/drafting/agentaction/", {"handle": "outlier"})
    counted = client.get("/admin/drafting/agentaction/", {"handle": "counted"})
    assert listing.status_code == 200 and detail.status_code == 200
    assert "1 agent action" in outliers.content.decode()
    assert "0 agent actions" in counted.content.decode()
    assert [a.handle_seconds > 699 * 86400 for a in AgentAction.objects.all()] == [True]
    today = timezone.localdate()
    report = encs_report(Scope(start=today - timedelta(days=701), end=today + timedelta(days=1)))
    assert report["outliers"] == 1
    manager = UserFactory.create()
    AgentProfileFactory.create(user=manager, team=acme.team, role=AgentProfile.Role.MANAGER)
    client.force_login(manager)
    period = {"from": (today - timedelta(days=701)).isoformat(), "to": today.isoformat()}
    dashboard = client.get("/accounting/", period)
    printable = client.get("/accounting/report.html", period)
    assert dashboard.status_code == 200 and printable.status_code == 200
    assert 'id="outliers"' in dashboard.content.decode()
    assert "1 replies took longer than the maximum handle time" in printable.content.decode()


# --- Closed conversations -----------------------------------------------------------------------


def test_an_action_on_a_closed_conversation_is_a_409_and_sends_nothing(acme: TeamSetup) -> None:
    draft = aged_ready_draft(acme, age=timedelta(minutes=5))
    services.conversation_close(conversation=draft.message.conversation)

    response = post_action(
        acme.api(), draft, kind="use", agent=acme.agent.username, shown_at=timezone.now()
    )

    assert response.status_code == 409
    assert "is closed" in response.json()["detail"]
    assert nothing_written()


def test_a_repeated_action_after_closing_returns_the_first_reply(acme: TeamSetup) -> None:
    draft = aged_ready_draft(acme, age=timedelta(minutes=5))
    payload = {"kind": "use", "agent": acme.agent.username, "shown_at": timezone.now()}
    first = post_action(acme.api(), draft, **payload)
    services.conversation_close(conversation=draft.message.conversation)

    again = post_action(acme.api(), draft, **payload)

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_the_console_refuses_a_reply_to_a_closed_conversation_and_says_so(
    client: Client, acme: TeamSetup
) -> None:
    draft = aged_ready_draft(acme, age=timedelta(minutes=5))
    Draft.objects.filter(pk=draft.pk).update(first_shown_at=timezone.now())
    conversation = draft.message.conversation
    client.force_login(acme.agent)
    client.get(f"/console/c/{conversation.pk}")
    services.conversation_close(conversation=conversation)  # another agent closes it

    response = client.post(
        f"/console/c/{conversation.pk}/reply",
        {
            "text": DRAFT_TEXT,
            "kind": "use",
            "inbound_message_id": draft.message_id,
            "draft_id": draft.pk,
        },
        follow=True,
    )

    assert nothing_written()
    page = response.content.decode()
    assert "is closed: the reply was not sent" in page
    assert 'id="closed-note"' in page
    assert 'id="reply-form"' not in page


def test_a_closed_conversation_reopens_and_takes_a_reply_when_the_customer_writes_again(
    acme: TeamSetup,
) -> None:
    draft = aged_ready_draft(acme, age=timedelta(minutes=5))
    conversation = draft.message.conversation
    services.conversation_close(conversation=conversation)
    again = ingest(acme, "c", "c-m2", text="Hello? Still there?")
    assert again.draft is not None
    Draft.objects.filter(pk=again.draft.pk).update(first_shown_at=timezone.now())
    again.draft.refresh_from_db()

    sent = services.reply_send(
        conversation=conversation,
        agent=acme.agent,
        text="Yes, sorry!",
        inbound_message=again.message,
        draft=again.draft,
        kind="none" if not again.draft.text else "ignore",
    )

    assert sent.created
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.OPEN
