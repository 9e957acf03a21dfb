"""One order of a conversation's messages, arrival, used by supersession, the console, the API
and the drafter's prompt: a message delivered late never hides the draft being shown."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models.signals import post_save
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csbot import selectors, services
from csbot.models import Conversation, Message
from drafting import services as drafting
from drafting.models import Draft
from tests.factories import EndpointFactory, TeamSetup, ingest, make_team
from tests.http_stub import Reply, chat_completion, openai_stub

LIVE = (Draft.Status.QUEUED, Draft.Status.GENERATING, Draft.Status.READY)


def post(setup: TeamSetup, message_id: str, text: str, sent_at: Any = None) -> Any:
    body: dict[str, Any] = {
        "conversation_external_id": "late",
        "channel_message_id": message_id,
        "text": text,
    }
    if sent_at is not None:
        body["sent_at"] = sent_at.isoformat()
    return setup.api().post("/api/v1/messages", body, format="json")


def make_ready(draft_id: int, text: str) -> None:
    Draft.objects.filter(pk=draft_id).update(
        status=Draft.Status.READY, text=text, ready_at=timezone.now()
    )


def live_drafts(conversation_id: int) -> list[Draft]:
    return list(
        Draft.objects.filter(
            message__conversation_id=conversation_id, status__in=LIVE, action__isnull=True
        )
    )


def test_a_late_message_with_an_earlier_sent_at_is_answered_last_with_the_whole_thread(
    client: Client, acme: TeamSetup
) -> None:
    now = timezone.now()
    newer = post(acme, "m2", "Also, can I pay by invoice?", sent_at=now - timedelta(minutes=1))
    make_ready(newer.json()["draft"]["id"], "Yes, invoices are fine.")

    # Sent ten minutes earlier, delivered now.
    late = post(acme, "m1", "Hi, I want to order 40 chairs.", sent_at=now - timedelta(minutes=10))

    assert late.status_code == 201
    conversation = Conversation.objects.get(external_id="late")
    # Supersession, console and API agree: the late message is the one waiting, with its draft.
    [live] = live_drafts(conversation.pk)
    assert live.message_id == late.json()["id"]
    assert Draft.objects.get(pk=newer.json()["draft"]["id"]).status == Draft.Status.SUPERSEDED
    thread = selectors.conversation_thread(team=acme.team, conversation_id=conversation.pk)
    assert thread.pending is not None and thread.pending.pk == late.json()["id"]
    assert thread.draft is not None and thread.draft.pk == live.pk
    assert [m.pk for m in thread.messages] == [newer.json()["id"], late.json()["id"]]
    listed = acme.api().get(f"/api/v1/conversations/{conversation.pk}/messages").json()
    assert [m["id"] for m in listed["results"]] == [newer.json()["id"], late.json()["id"]]
    assert listed["results"][0]["draft"] is None  # superseded: not live
    assert listed["results"][1]["draft"]["id"] == live.pk
    # The sender's time is kept and shown, though it decides nothing.
    assert Message.objects.get(pk=late.json()["id"]).created_at == now - timedelta(minutes=10)
    detail = acme.api().get(f"/api/v1/conversations/{conversation.pk}").json()
    assert detail["draft_status"] == "queued"
    client.force_login(acme.agent)
    page = client.get(f"/console/c/{conversation.pk}").content.decode()
    assert f'name="inbound_message_id" value="{late.json()["id"]}"' in page
    assert f'name="draft_id" id="draft-id" value="{live.pk}"' in page


def test_the_late_messages_draft_is_written_from_the_thread_in_arrival_order(
    db: None,
) -> None:
    with openai_stub(Reply(body=chat_completion("We can do both."))) as stub:
        setup = make_team("Order", endpoint=EndpointFactory.create(base_url=stub.base_url))
        now = timezone.now()
        post(setup, "m2", "Also, can I pay by invoice?", sent_at=now - timedelta(minutes=1))
        late = post(setup, "m1", "Hi, I want 40 chairs.", sent_at=now - timedelta(minutes=10))
        drafting.draft_generate(draft_id=late.json()["draft"]["id"])

    sent = [m["content"] for m in stub.requests[-1]["json"]["messages"] if m["role"] == "user"]
    assert sent == ["Also, can I pay by invoice?", "Hi, I want 40 chairs."]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    offsets=st.lists(st.integers(min_value=-3600, max_value=60), min_size=1, max_size=6),
    replies=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_whatever_the_sent_times_the_console_shows_the_one_live_draft(
    acme: TeamSetup, offsets: list[int], replies: list[bool]
) -> None:
    """Messages with any sent_at, in any order, sometimes answered in between: after each
    arrival the conversation has one live draft, for the message the console shows waiting,
    and the API's draft status is that draft's."""
    external = f"prop-{Conversation.objects.count()}"
    now = timezone.now()
    for n, (offset, answer) in enumerate(zip(offsets, replies, strict=False)):
        result = services.message_ingest(
            channel=acme.channel,
            conversation_external_id=external,
            channel_message_id=f"{external}-{n}",
            text=f"Message {n}",
            sent_at=now + timedelta(seconds=offset),
        )
        assert result.draft is not None
        conversation = result.message.conversation
        [live] = live_drafts(conversation.pk)
        thread = selectors.conversation_thread(team=acme.team, conversation_id=conversation.pk)
        assert thread.pending is not None and thread.pending.pk == result.message.pk
        assert thread.draft is not None and thread.draft.pk == live.pk == result.draft.pk
        status = (
            selectors.conversation_queue(team=acme.team).get(pk=conversation.pk).draft_status  # type: ignore[attr-defined]
        )
        assert status == live.status
        if answer:
            make_ready(live.pk, "Thanks!")
            Draft.objects.filter(pk=live.pk).update(first_shown_at=timezone.now())
            live.refresh_from_db()
            services.reply_send(
                conversation=conversation,
                agent=acme.agent,
                text="Thanks!",
                inbound_message=result.message,
                draft=live,
                kind="use",
            )
            thread = selectors.conversation_thread(team=acme.team, conversation_id=conversation.pk)
            assert thread.pending is None


def test_two_messages_arriving_at_once_leave_one_live_draft_for_the_later_one(
    transactional_db: None,
) -> None:
    """The first message's transaction stalls right after its INSERT while a second message
    of the same conversation arrives: ids (the order) and supersession must still agree."""
    setup = make_team("Race")
    ingest(setup, "together", "m0", "First.")
    first_inserted = threading.Event()

    def stall(sender: Any, instance: Message, created: bool, **kwargs: Any) -> None:
        if created and threading.current_thread().name == "first":
            first_inserted.set()
            time.sleep(0.5)  # the second message arrives meanwhile

    def arrive(message_id: str) -> None:
        try:
            ingest(setup, "together", message_id, message_id)
        finally:
            connection.close()

    post_save.connect(stall, sender=Message)
    try:
        first = threading.Thread(target=arrive, args=("m1",), name="first")
        second = threading.Thread(target=arrive, args=("m2",), name="second")
        first.start()
        assert first_inserted.wait(10)
        second.start()
        first.join()
        second.join()
    finally:
        post_save.disconnect(stall, sender=Message)

    conversation = Conversation.objects.get(external_id="together")
    [live] = live_drafts(conversation.pk)
    newest = Message.objects.filter(conversation=conversation).order_by("-id").first()
    assert newest is not None and live.message_id == newest.pk


def test_a_sent_at_in_the_future_is_refused(acme: TeamSetup, settings: Any) -> None:
    settings.CSBOT_CLOCK_SKEW_SECONDS = 60
    response = post(acme, "m1", "Hello from the future", timezone.now() + timedelta(hours=2))

    assert response.status_code == 400
    assert response.json()["sent_at"] == ["sent_at is in the future."]
    assert not Message.objects.exists()


def test_a_sent_at_before_1970_is_refused(acme: TeamSetup) -> None:
    response = post(acme, "m1", "Hello", timezone.now().replace(year=1) + timedelta(days=1))

    assert response.status_code == 400
    assert "sent_at" in response.json()
