"""The agent console without a browser: access, query counts, timings, replies."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from csbot.models import Conversation, Message
from drafting.models import AgentAction, Draft
from tests.factories import AgentProfileFactory, MessageFactory, TeamSetup, ingest


def login(client: Client, setup: TeamSetup) -> Client:
    client.force_login(setup.agent)
    return client


def make_ready(draft: Draft, text: str = "Thanks for writing! Your order ships tomorrow.") -> Draft:
    Draft.objects.filter(pk=draft.pk).update(
        status=Draft.Status.READY,
        text=text,
        ready_at=timezone.now(),
        final_endpoint=draft.policy.tiers.get().endpoint,
    )
    draft.refresh_from_db()
    return draft


def count_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def test_console_pages_need_a_login(client: Client, acme: TeamSetup) -> None:
    response = client.get("/console/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_conversation_page_runs_the_same_queries_whatever_the_thread_length(
    client: Client, acme: TeamSetup
) -> None:
    short = ingest(acme, "short", "s-1").message.conversation
    long = ingest(acme, "long", "l-1").message.conversation
    for n in range(40):
        MessageFactory.create(
            conversation=long,
            direction=Message.Direction.OUTBOUND if n % 2 else Message.Direction.INBOUND,
        )
    ingest(acme, "long", "l-last")
    login(client, acme)
    # Warm up both (the first view of a draft writes first_shown_at once).
    client.get(f"/console/c/{short.pk}")
    client.get(f"/console/c/{long.pk}")
    assert count_queries(client, f"/console/c/{short.pk}") == count_queries(
        client, f"/console/c/{long.pk}"
    )
    assert count_queries(client, f"/console/c/{short.pk}/draft") == count_queries(
        client, f"/console/c/{long.pk}/draft"
    )


def test_queue_page_runs_the_same_queries_whatever_the_number_of_conversations(
    client: Client, acme: TeamSetup
) -> None:
    login(client, acme)
    ingest(acme, "c-0", "m-0")
    few = count_queries(client, "/console/")
    for n in range(1, 30):
        ingest(acme, f"c-{n}", f"m-{n}")
    assert count_queries(client, "/console/") == few
    assert count_queries(client, "/console/") == count_queries(client, "/console/")


def test_queue_lists_only_the_agents_own_team(
    client: Client, acme: TeamSetup, globex: TeamSetup
) -> None:
    ingest(acme, "acme-conv", "a-1", "Acme customer question")
    ingest(globex, "globex-conv", "g-1", "Globex customer question")
    body = login(client, acme).get("/console/").content.decode()
    assert "Acme customer question" in body
    assert "Globex customer question" not in body


def test_another_teams_conversation_is_a_404(
    client: Client, acme: TeamSetup, globex: TeamSetup
) -> None:
    theirs = ingest(globex, "g", "g-1").message.conversation
    login(client, acme)
    assert client.get(f"/console/c/{theirs.pk}").status_code == 404
    assert client.get(f"/console/c/{theirs.pk}/draft").status_code == 404
    response = client.post(f"/console/c/{theirs.pk}/reply", {"text": "hi", "kind": "none"})
    assert response.status_code == 404
    assert not Message.objects.filter(conversation=theirs, direction="out").exists()


def test_first_view_starts_the_handle_clock_and_later_views_keep_it(
    client: Client, acme: TeamSetup
) -> None:
    result = ingest(acme, "c", "m")
    assert result.draft is not None
    login(client, acme)
    client.get(f"/console/c/{result.message.conversation_id}")
    result.draft.refresh_from_db()
    first = result.draft.first_shown_at
    assert first is not None
    client.get(f"/console/c/{result.message.conversation_id}/draft")
    result.draft.refresh_from_db()
    assert result.draft.first_shown_at == first


def test_ready_draft_is_shown_with_its_actions(client: Client, acme: TeamSetup) -> None:
    result = ingest(acme, "c", "m")
    assert result.draft is not None
    make_ready(result.draft, "We can refund that today.")
    body = (
        login(client, acme)
        .get(f"/console/c/{result.message.conversation_id}/draft")
        .content.decode()
    )
    assert "We can refund that today." in body
    assert 'data-action="accept"' in body
    assert "hx-trigger" not in body  # settled: the panel stops polling


def test_generating_draft_panel_keeps_polling(client: Client, acme: TeamSetup) -> None:
    result = ingest(acme, "c", "m")
    body = (
        login(client, acme)
        .get(f"/console/c/{result.message.conversation_id}/draft")
        .content.decode()
    )
    assert 'hx-trigger="every 1s"' in body
    assert "Drafting a reply" in body


def reply(client: Client, conversation: Conversation, **data: Any) -> Any:
    return client.post(f"/console/c/{conversation.pk}/reply", data)


def test_accepting_records_a_use_with_the_draft_text_and_handle_time(
    client: Client, acme: TeamSetup
) -> None:
    result = ingest(acme, "c", "m")
    assert result.draft is not None
    draft = make_ready(result.draft)
    conversation = result.message.conversation
    login(client, acme).get(f"/console/c/{conversation.pk}")
    Draft.objects.filter(pk=draft.pk).update(
        created_at=timezone.now() - timedelta(seconds=60),
        first_shown_at=timezone.now() - timedelta(seconds=30),
    )
    response = reply(
        client,
        conversation,
        text=draft.text,
        kind="use",
        inbound_message_id=result.message.pk,
        draft_id=draft.pk,
    )
    assert response.status_code == 302
    action = AgentAction.objects.get(draft=draft)
    assert action.kind == AgentAction.Kind.USE
    assert action.final_text == draft.text
    assert action.edit_distance == 0
    assert action.handle_seconds >= Decimal("30")
    assert action.agent == acme.agent
    conversation.refresh_from_db()
    assert conversation.awaiting_reply_since is None


def test_a_double_submitted_reply_is_sent_once(client: Client, acme: TeamSetup) -> None:
    result = ingest(acme, "c", "m")
    assert result.draft is not None
    draft = make_ready(result.draft)
    conversation = result.message.conversation
    login(client, acme).get(f"/console/c/{conversation.pk}")
    form = {
        "text": "My own words.",
        "kind": "ignore",
        "inbound_message_id": result.message.pk,
        "draft_id": draft.pk,
    }
    reply(client, conversation, **form)
    reply(client, conversation, **form)
    assert Message.objects.filter(conversation=conversation, direction="out").count() == 1
    assert AgentAction.objects.get(draft=draft).kind == AgentAction.Kind.IGNORE


def test_a_second_agent_answering_the_same_message_is_told_their_reply_was_not_sent(
    client: Client, acme: TeamSetup
) -> None:
    result = ingest(acme, "c", "m")
    assert result.draft is not None
    draft = make_ready(result.draft)
    conversation = result.message.conversation
    form = {"kind": "ignore", "inbound_message_id": result.message.pk, "draft_id": draft.pk}
    login(client, acme).get(f"/console/c/{conversation.pk}")
    reply(client, conversation, text="First agent's words.", **form)

    other = AgentProfileFactory.create(team=acme.team).user
    other_client = Client()
    other_client.force_login(other)
    response = reply(other_client, conversation, text="Second agent's words.", **form)

    assert response.status_code == 302
    assert response["Location"] == f"/console/c/{conversation.pk}"
    page = other_client.get(response["Location"]).content.decode()
    assert "had already answered this message: your reply was not sent." in page
    sent = Message.objects.filter(conversation=conversation, direction="out")
    assert [m.text for m in sent] == ["First agent's words."]
    assert AgentAction.objects.get(draft=draft).agent == acme.agent


def test_held_out_reply_is_recorded_as_an_unaided_baseline(client: Client, acme: TeamSetup) -> None:
    acme.policy.holdout_share = Decimal("1")
    acme.policy.save()
    result = ingest(acme, "c", "m")
    assert result.draft is not None and result.draft.status == Draft.Status.HELD_OUT
    conversation = result.message.conversation
    body = login(client, acme).get(f"/console/c/{conversation.pk}").content.decode()
    assert "No suggestion" in body or "write the reply" in body
    Draft.objects.filter(pk=result.draft.pk).update(
        created_at=timezone.now() - timedelta(seconds=60),
        first_shown_at=timezone.now() - timedelta(seconds=45),
    )
    reply(
        client,
        conversation,
        text="Written by hand.",
        kind="none",
        inbound_message_id=result.message.pk,
        draft_id=result.draft.pk,
    )
    action = AgentAction.objects.get(inbound_message=result.message)
    assert action.kind == AgentAction.Kind.NONE
    assert action.draft == result.draft
    assert action.edit_distance is None
    assert action.handle_seconds >= Decimal("45")


@pytest.mark.parametrize(("typed", "expected"), [("edit", "edit"), ("ignore", "ignore")])
def test_edits_and_ignores_measure_how_far_the_reply_is_from_the_draft(
    client: Client, acme: TeamSetup, typed: str, expected: str
) -> None:
    result = ingest(acme, "c", "m")
    assert result.draft is not None
    draft = make_ready(result.draft, "Your parcel ships tomorrow.")
    login(client, acme).get(f"/console/c/{result.message.conversation_id}")
    text = (
        "Your parcel ships tomorrow. Sorry for the wait!"
        if typed == "edit"
        else "Let me check with the warehouse."
    )
    reply(
        client,
        result.message.conversation,
        text=text,
        kind=typed,
        inbound_message_id=result.message.pk,
        draft_id=draft.pk,
    )
    action = AgentAction.objects.get(draft=draft)
    assert action.kind == expected
    assert action.edit_distance is not None and action.edit_distance > 0


def test_closing_takes_a_conversation_off_the_queue_until_the_customer_writes_again(
    client: Client, acme: TeamSetup
) -> None:
    conversation = ingest(acme, "c", "m1", "Thanks, all sorted!").message.conversation
    login(client, acme)
    response = client.post(f"/console/c/{conversation.pk}/close")
    assert response.status_code == 302
    assert "Thanks, all sorted!" not in client.get("/console/").content.decode()
    ingest(acme, "c", "m2", "Oh, one more thing")
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.OPEN
    assert conversation.awaiting_reply_since is not None
    assert "one more thing" in client.get("/console/").content.decode()
