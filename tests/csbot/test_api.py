"""REST API v1: ingest, reads, agent actions, auth, team isolation and the OpenAPI schema.

These run on the `db` fixture: `transaction.on_commit` callbacks are captured, never run, so no
Celery task is sent; a queued Draft row is what ingest promises.
"""

from __future__ import annotations

import io
import json
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError
from rest_framework.test import APIClient

from csbot import memo, services
from csbot.api.parsers import BoundedJSONParser, RequestTooLarge
from csbot.api.serializers import MessageOut, message_out
from csbot.celery import app as celery_app
from csbot.models import ApiToken, Conversation, Message
from drafting import selectors as drafting_selectors
from drafting.models import AgentAction, CascadePolicy, Draft
from drafting.tasks import draft_generate_task
from tests.factories import (
    DRAFT_TEXT,
    WHATIF_PAPER_CASE,
    AgentProfileFactory,
    ChannelFactory,
    ConversationFactory,
    DraftFactory,
    MessageFactory,
    TeamSetup,
    UserFactory,
    post_action,
    token_for,
)

INGEST = "/api/v1/messages"
CONVERSATIONS = "/api/v1/conversations"


def ingest(client: APIClient, **overrides: Any) -> Any:
    payload: dict[str, Any] = {
        "conversation_external_id": "conv-1",
        "channel_message_id": "msg-1",
        "text": "Where is my parcel?",
        "customer_ref": "cust-42",
    }
    payload.update(overrides)
    return client.post(INGEST, payload, format="json")


def make_draft(
    setup: TeamSetup,
    *,
    status: str = Draft.Status.READY,
    text: str = DRAFT_TEXT,
    shown_at: datetime | None = None,
) -> Draft:
    """A draft for a fresh inbound message of `setup`'s team, in the given state."""
    conversation = ConversationFactory.create(channel=setup.channel)
    now = timezone.now()
    # The message arrived (and its draft was created) a while before it was shown.
    arrived = min(now, shown_at or now) - timedelta(minutes=10)
    message = MessageFactory.create(conversation=conversation, created_at=arrived)
    return DraftFactory.create(
        message=message,
        policy=setup.policy,
        status=status,
        text=text,
        created_at=arrived,
        ready_at=now if status == Draft.Status.READY else None,
        first_shown_at=shown_at,
    )


def outbound_count() -> int:
    return Message.objects.filter(direction=Message.Direction.OUTBOUND).count()


# --- Ingest -----------------------------------------------------------------------------------


def test_ingest_creates_conversation_inbound_message_and_queued_draft(acme: TeamSetup) -> None:
    response = ingest(acme.api(), conversation_external_id="c-100", channel_message_id="m-100")

    assert response.status_code == 201
    body = response.json()
    message = Message.objects.get(pk=body["id"])
    assert message.direction == Message.Direction.INBOUND
    assert message.text == "Where is my parcel?"
    assert message.channel_id == acme.channel.pk
    assert message.channel_message_id == "m-100"
    assert message.author == "cust-42"
    conversation = message.conversation
    assert conversation.team_id == acme.team.pk
    assert conversation.external_id == "c-100"
    assert conversation.customer_ref == "cust-42"
    assert conversation.status == Conversation.Status.OPEN
    assert conversation.awaiting_reply_since is not None
    draft = Draft.objects.get(message=message)
    assert draft.status == Draft.Status.QUEUED
    assert draft.policy_id == acme.policy.pk

    assert body["conversation"] == conversation.pk
    assert body["conversation_external_id"] == "c-100"
    assert body["direction"] == "in"
    assert body["channel_message_id"] == "m-100"
    assert body["draft"]["id"] == draft.pk
    assert body["draft"]["status"] == "queued"


def test_ingest_schedules_one_draft_task_after_commit(
    acme: TeamSetup, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = ingest(acme.api())
    assert response.status_code == 201
    assert len(callbacks) == 1

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        repeat = ingest(acme.api())
    assert repeat.status_code == 200
    assert callbacks == []


def test_ingest_trims_text_and_defaults_customer_ref(acme: TeamSetup) -> None:
    payload = {"conversation_external_id": "c", "channel_message_id": "m", "text": "  hello  "}
    response = acme.api().post(INGEST, payload, format="json")

    assert response.status_code == 201
    message = Message.objects.get(pk=response.json()["id"])
    assert message.text == "hello"
    assert message.conversation.customer_ref == ""


def test_ingest_uses_sent_at_as_message_time(acme: TeamSetup) -> None:
    sent_at = timezone.now() - timedelta(hours=3)
    response = ingest(acme.api(), sent_at=sent_at.isoformat())

    assert response.status_code == 201
    assert Message.objects.get(pk=response.json()["id"]).created_at == sent_at


def test_posting_the_same_channel_message_id_twice_returns_the_first_result(
    acme: TeamSetup,
) -> None:
    client = acme.api()
    first = ingest(client)
    second = ingest(client, text="Where is my parcel? (resent)")

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["draft"]["id"] == first.json()["draft"]["id"]
    assert second.json()["text"] == "Where is my parcel?"
    assert Message.objects.count() == 1
    assert Draft.objects.count() == 1
    assert Conversation.objects.count() == 1


def test_same_channel_message_id_on_another_channel_is_a_new_message(acme: TeamSetup) -> None:
    email = ChannelFactory.create(team=acme.team, name="email")
    email_client = APIClient()
    email_client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(email)}")

    first = ingest(acme.api())
    second = ingest(email_client)

    assert first.status_code == 201
    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]
    assert second.json()["conversation"] != first.json()["conversation"]
    assert Message.objects.filter(channel_message_id="msg-1").count() == 2
    assert Draft.objects.count() == 2
    assert Message.objects.get(pk=second.json()["id"]).channel_id == email.pk


def test_second_message_reuses_the_conversation_and_supersedes_the_first_draft(
    acme: TeamSetup,
) -> None:
    client = acme.api()
    first = ingest(client, channel_message_id="m-1").json()
    second = ingest(client, channel_message_id="m-2", text="Hello? Any news?").json()

    assert second["conversation"] == first["conversation"]
    assert Conversation.objects.count() == 1
    assert Draft.objects.get(pk=first["draft"]["id"]).status == Draft.Status.SUPERSEDED
    assert Draft.objects.get(pk=second["draft"]["id"]).status == Draft.Status.QUEUED
    assert second["draft"]["status"] == "queued"


def test_ingest_without_an_active_policy_stores_the_message_without_a_draft(
    acme: TeamSetup,
) -> None:
    acme.policy.active = False
    acme.policy.save(update_fields=["active"])

    response = ingest(acme.api())

    assert response.status_code == 201
    assert response.json()["draft"] is None
    assert Message.objects.count() == 1
    assert Draft.objects.count() == 0


def test_a_policy_switched_off_in_bulk_stops_drafts_once_the_cache_time_has_passed(
    acme: TeamSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = acme.api()
    assert ingest(client, channel_message_id="m-1").json()["draft"] is not None
    # A bulk update sends no signal: processes notice within ACTIVE_POLICY_SECONDS.
    CascadePolicy.objects.filter(pk=acme.policy.pk).update(active=False)
    assert ingest(client, channel_message_id="m-2").json()["draft"] is not None

    later = time.monotonic() + drafting_selectors.ACTIVE_POLICY_SECONDS + 0.1
    monkeypatch.setattr(memo.time, "monotonic", lambda: later)

    assert ingest(client, channel_message_id="m-3").json()["draft"] is None


def test_a_policy_saved_through_the_orm_applies_to_the_next_message_at_once(
    acme: TeamSetup,
) -> None:
    client = acme.api()
    assert ingest(client, channel_message_id="m-1").json()["draft"] is not None
    acme.policy.holdout_share = Decimal("1")
    acme.policy.save(update_fields=["holdout_share"])

    # A new conversation draws its hold-out from the saved share at once.
    body = ingest(client, conversation_external_id="c-2", channel_message_id="m-2").json()

    assert body["draft"]["status"] == Draft.Status.HELD_OUT


def test_a_message_reopens_a_closed_conversation_and_keeps_its_wait_start(
    acme: TeamSetup,
) -> None:
    client = acme.api()
    first = ingest(client, channel_message_id="m-1").json()
    waiting_since = timezone.now() - timedelta(hours=2)
    Conversation.objects.filter(pk=first["conversation"]).update(
        status=Conversation.Status.CLOSED, awaiting_reply_since=waiting_since
    )

    second = ingest(client, channel_message_id="m-2", customer_ref="").json()

    conversation = Conversation.objects.get(pk=first["conversation"])
    assert second["conversation"] == conversation.pk
    assert conversation.status == Conversation.Status.OPEN
    assert conversation.awaiting_reply_since == waiting_since
    assert conversation.updated_at > waiting_since
    assert second["author"] == "cust-42"  # the conversation's customer when none is given


def test_a_message_after_the_agent_replied_starts_a_new_wait(acme: TeamSetup) -> None:
    client = acme.api()
    first = ingest(client, channel_message_id="m-1").json()
    Conversation.objects.filter(pk=first["conversation"]).update(awaiting_reply_since=None)
    before = timezone.now()

    ingest(client, channel_message_id="m-2")

    conversation = Conversation.objects.get(pk=first["conversation"])
    assert conversation.awaiting_reply_since is not None
    assert conversation.awaiting_reply_since >= before


def test_ingest_answers_the_body_the_message_serializer_gives(acme: TeamSetup) -> None:
    client = acme.api()
    created = ingest(client, channel_message_id="m-1", sent_at="2026-01-02T03:04:05.123456Z")
    repeat = ingest(client, channel_message_id="m-1", sent_at="2026-01-02T03:04:05.123456Z")

    message = Message.objects.select_related("conversation").get(pk=created.json()["id"])
    draft = Draft.objects.get(message=message)
    expected = json.loads(
        json.dumps(MessageOut(message, context={"drafts": {message.pk: draft}}).data)
    )
    assert created.json() == expected
    assert repeat.json() == expected


@pytest.mark.parametrize("with_draft", [True, False])
def test_the_ingest_body_builder_matches_the_serializer_for_finished_drafts(
    acme: TeamSetup, with_draft: bool
) -> None:
    draft = make_draft(acme)
    Draft.objects.filter(pk=draft.pk).update(score=Decimal("0.8125"), total_cost=Decimal("0.0012"))
    draft.refresh_from_db()
    message = Message.objects.select_related("conversation").get(pk=draft.message_id)
    drafts = {message.pk: draft} if with_draft else {}

    built = message_out(message, draft if with_draft else None)

    assert built == MessageOut(message, context={"drafts": drafts}).data


def test_ingest_rings_the_broker_once_per_message_and_survives_a_broker_failure(
    acme: TeamSetup,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    celery_app.control.purge()
    client = acme.api()
    with django_capture_on_commit_callbacks(execute=True):
        first = ingest(client, conversation_external_id="c-1", channel_message_id="m-1").json()
    with django_capture_on_commit_callbacks(execute=True):
        second = ingest(client, conversation_external_id="c-2", channel_message_id="m-2").json()

    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise KombuOperationalError("connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(draft_generate_task, "apply_async", broker_down)
        with django_capture_on_commit_callbacks(execute=True):
            lost = ingest(client, conversation_external_id="c-3", channel_message_id="m-3")
    with django_capture_on_commit_callbacks(execute=True):
        third = ingest(client, conversation_external_id="c-4", channel_message_id="m-4").json()

    queued = [
        json.loads(raw)["headers"]["argsrepr"] for raw in reversed(broker.lrange("celery", 0, -1))
    ]
    celery_app.control.purge()
    assert lost.status_code == 201  # stored and queued: the sweeper rings again later
    assert Draft.objects.get(pk=lost.json()["draft"]["id"]).status == Draft.Status.QUEUED
    assert "could not reach the broker" in caplog.text
    assert queued == [f"({body['draft']['id']},)" for body in (first, second, third)]


def test_ingest_rejects_text_over_the_documented_limit(acme: TeamSetup) -> None:
    response = ingest(acme.api(), text="x" * (settings.CSBOT_MAX_MESSAGE_CHARS + 1))

    assert response.status_code == 400
    assert "text" in response.json()
    assert Message.objects.count() == 0


def test_ingest_accepts_text_at_the_documented_limit(acme: TeamSetup) -> None:
    response = ingest(acme.api(), text="x" * settings.CSBOT_MAX_MESSAGE_CHARS)

    assert response.status_code == 201


def test_ingest_reports_each_missing_required_field(acme: TeamSetup) -> None:
    response = acme.api().post(INGEST, {}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert {"conversation_external_id", "channel_message_id", "text"} <= set(body)
    assert "customer_ref" not in body
    assert Message.objects.count() == 0


def test_ingest_refuses_blank_text(acme: TeamSetup) -> None:
    response = ingest(acme.api(), text="   ")

    assert response.status_code == 400
    assert "text" in response.json()


def test_ingest_refuses_an_unknown_field_by_name(acme: TeamSetup) -> None:
    client = acme.api()
    only_unknown = client.post(INGEST, {"foo": 1}, format="json")
    with_typo = ingest(client, customer_reff="cust-1")

    assert only_unknown.status_code == 400
    assert "foo" in only_unknown.json()
    assert with_typo.status_code == 400
    assert set(with_typo.json()) == {"customer_reff"}
    assert Message.objects.count() == 0


def test_ingest_answers_malformed_json_with_a_400_detail(acme: TeamSetup) -> None:
    response = acme.api().post(
        INGEST, data='{"text": "unterminated', content_type="application/json"
    )

    assert response.status_code == 400
    assert "detail" in response.json()
    assert Message.objects.count() == 0


def test_ingest_answers_a_json_list_with_a_400_object(acme: TeamSetup) -> None:
    response = acme.api().post(
        INGEST, data=json.dumps([{"text": "hi"}]), content_type="application/json"
    )

    assert response.status_code == 400
    body = response.json()
    assert isinstance(body, dict)
    assert "non_field_errors" in body


def test_ingest_refuses_a_body_over_the_upload_limit_with_413(acme: TeamSetup) -> None:
    huge = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = ingest(acme.api(), text=huge)

    assert response.status_code == 413
    assert "detail" in response.json()
    assert Message.objects.count() == 0


def test_bounded_parser_refuses_an_oversized_body_without_content_length() -> None:
    body = json.dumps({"text": "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE}).encode()

    with pytest.raises(RequestTooLarge):
        BoundedJSONParser().parse(io.BytesIO(body), "application/json", {})


def test_bounded_parser_parses_a_small_body_without_content_length() -> None:
    parsed = BoundedJSONParser().parse(io.BytesIO(b'{"text": "hi"}'), "application/json", {})

    assert parsed == {"text": "hi"}


def test_ingest_refuses_form_encoded_bodies(acme: TeamSetup) -> None:
    response = acme.api().post(INGEST, {"text": "hi"})  # multipart: not JSON

    assert response.status_code == 415


# --- Authentication ---------------------------------------------------------------------------


def test_ingest_without_a_token_is_401_with_token_challenge(acme: TeamSetup) -> None:
    response = ingest(APIClient())

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert Message.objects.count() == 0


def test_ingest_with_a_wrong_token_is_401(acme: TeamSetup) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-the-right-key")

    response = ingest(client)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert Message.objects.count() == 0


def test_ingest_with_a_malformed_authorization_header_is_401(acme: TeamSetup) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {acme.token} extra")

    response = ingest(client)

    assert response.status_code == 401


def test_ingest_with_a_revoked_token_is_401(acme: TeamSetup) -> None:
    client = acme.api()
    assert ingest(client, channel_message_id="before").status_code == 201
    ApiToken.objects.filter(channel=acme.channel).update(revoked_at=timezone.now())

    response = ingest(client, channel_message_id="after")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert not Message.objects.filter(channel_message_id="after").exists()


def test_reads_without_a_token_are_401(acme: TeamSetup) -> None:
    response = APIClient().get(CONVERSATIONS)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_an_agent_session_reads_its_team_but_cannot_post_customer_messages(
    acme: TeamSetup, globex: TeamSetup
) -> None:
    ingest(acme.api(), conversation_external_id="acme-conv")
    ingest(globex.api(), conversation_external_id="globex-conv")
    client = APIClient()
    client.force_login(acme.agent)

    listing = client.get(CONVERSATIONS)
    posting = ingest(client, channel_message_id="from-agent")

    assert listing.status_code == 200
    assert [c["external_id"] for c in listing.json()["results"]] == ["acme-conv"]
    assert posting.status_code == 403
    assert not Message.objects.filter(channel_message_id="from-agent").exists()


def test_a_logged_in_user_without_agent_profile_is_refused(acme: TeamSetup) -> None:
    client = APIClient()
    client.force_login(UserFactory.create(username="no-team"))

    assert client.get(CONVERSATIONS).status_code == 403


# --- Team isolation ---------------------------------------------------------------------------


def test_another_team_gets_404_for_every_object_of_acme(acme: TeamSetup, globex: TeamSetup) -> None:
    created = ingest(acme.api()).json()
    conversation_id, message_id, draft_id = (
        created["conversation"],
        created["id"],
        created["draft"]["id"],
    )
    urls = [
        f"{CONVERSATIONS}/{conversation_id}",
        f"{CONVERSATIONS}/{conversation_id}/messages",
        f"/api/v1/messages/{message_id}",
        f"/api/v1/drafts/{draft_id}",
    ]

    for url in urls:
        assert acme.api().get(url).status_code == 200, url
        assert globex.api().get(url).status_code == 404, url


def test_another_team_cannot_act_on_acme_draft(acme: TeamSetup, globex: TeamSetup) -> None:
    draft = make_draft(acme, shown_at=timezone.now())

    response = post_action(globex.api(), draft, kind="use", agent=globex.agent.username)

    assert response.status_code == 404
    assert AgentAction.objects.count() == 0
    assert outbound_count() == 0


def test_conversation_list_shows_only_the_callers_team(acme: TeamSetup, globex: TeamSetup) -> None:
    ingest(acme.api(), conversation_external_id="acme-1", channel_message_id="a1")
    ingest(acme.api(), conversation_external_id="acme-2", channel_message_id="a2")
    ingest(globex.api(), conversation_external_id="globex-1", channel_message_id="g1")

    acme_ids = {c["external_id"] for c in acme.api().get(CONVERSATIONS).json()["results"]}
    globex_ids = {c["external_id"] for c in globex.api().get(CONVERSATIONS).json()["results"]}

    assert acme_ids == {"acme-1", "acme-2"}
    assert globex_ids == {"globex-1"}


# --- Reads ------------------------------------------------------------------------------------


def test_conversation_detail_shows_channel_and_latest_draft_status(acme: TeamSetup) -> None:
    created = ingest(acme.api()).json()

    body = acme.api().get(f"{CONVERSATIONS}/{created['conversation']}").json()

    assert body["id"] == created["conversation"]
    assert body["channel"] == "web-chat"
    assert body["external_id"] == "conv-1"
    assert body["status"] == "open"
    assert body["draft_status"] == "queued"
    assert body["awaiting_reply_since"] is not None


def test_conversation_messages_attach_only_the_live_draft(acme: TeamSetup) -> None:
    client = acme.api()
    first = ingest(client, channel_message_id="m-1").json()
    second = ingest(client, channel_message_id="m-2", text="Anyone there?").json()

    response = client.get(f"{CONVERSATIONS}/{first['conversation']}/messages")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [m["id"] for m in results] == [first["id"], second["id"]]
    assert results[0]["draft"] is None  # superseded
    assert results[1]["draft"]["id"] == second["draft"]["id"]


def test_draft_detail_shows_status_and_text(acme: TeamSetup) -> None:
    draft = make_draft(acme)

    body = acme.api().get(f"/api/v1/drafts/{draft.pk}").json()

    assert body["id"] == draft.pk
    assert body["message"] == draft.message_id
    assert body["status"] == "ready"
    assert body["text"] == DRAFT_TEXT
    assert body["attempts"] == []


def test_conversation_list_paginates_with_a_cursor_newest_first(acme: TeamSetup) -> None:
    base = timezone.now()
    expected = [
        ConversationFactory.create(channel=acme.channel, updated_at=base - timedelta(minutes=i)).pk
        for i in range(5)
    ]
    client = acme.api()

    seen: list[int] = []
    page = client.get(CONVERSATIONS, {"page_size": 2}).json()
    assert page["previous"] is None
    pages = 1
    seen += [c["id"] for c in page["results"]]
    while page["next"]:
        assert len(page["results"]) == 2
        page = client.get(page["next"]).json()
        pages += 1
        seen += [c["id"] for c in page["results"]]

    assert pages == 3
    assert seen == expected
    assert page["previous"] is not None


def test_conversation_list_filters_by_status_and_refuses_unknown_status(acme: TeamSetup) -> None:
    open_conversation = ConversationFactory.create(channel=acme.channel)
    ConversationFactory.create(channel=acme.channel, status=Conversation.Status.CLOSED)
    client = acme.api()

    filtered = client.get(CONVERSATIONS, {"status": "open"})
    bogus = client.get(CONVERSATIONS, {"status": "pending"})

    assert [c["id"] for c in filtered.json()["results"]] == [open_conversation.pk]
    assert bogus.status_code == 400
    assert "status" in bogus.json()


# --- Agent actions ----------------------------------------------------------------------------


def test_use_without_final_text_sends_the_draft_and_records_handle_time(acme: TeamSetup) -> None:
    shown_at = timezone.now() - timedelta(minutes=5)
    draft = make_draft(acme, shown_at=shown_at)
    acted_at = shown_at + timedelta(seconds=42, milliseconds=500)

    response = post_action(
        acme.api(), draft, kind="use", agent=acme.agent.username, acted_at=acted_at
    )

    assert response.status_code == 201
    recorded = AgentAction.objects.get()
    assert recorded.draft_id == draft.pk
    assert recorded.inbound_message_id == draft.message_id
    assert recorded.kind == AgentAction.Kind.USE
    assert recorded.agent_id == acme.agent.pk
    assert recorded.final_text == DRAFT_TEXT
    assert recorded.edit_distance == Decimal("0")
    assert recorded.shown_at == shown_at
    assert recorded.acted_at == acted_at
    assert recorded.handle_seconds == Decimal("42.500")
    outbound = recorded.outbound_message
    assert outbound.direction == Message.Direction.OUTBOUND
    assert outbound.text == DRAFT_TEXT
    assert outbound.author_user_id == acme.agent.pk
    assert outbound.conversation_id == draft.message.conversation_id
    assert outbound.created_at == acted_at
    conversation = Conversation.objects.get(pk=draft.message.conversation_id)
    assert conversation.awaiting_reply_since is None

    body = response.json()
    assert body["id"] == recorded.pk
    assert body["kind"] == "use"
    assert body["agent"] == acme.agent.username
    assert body["outbound_message"] == outbound.pk
    assert Decimal(body["handle_seconds"]) == Decimal("42.5")


def test_edit_with_changed_text_is_stored_as_edit_with_a_distance(acme: TeamSetup) -> None:
    draft = make_draft(acme, shown_at=timezone.now() - timedelta(minutes=1))
    final = "Your parcel ships on Monday; the tracking link follows by email."

    response = post_action(
        acme.api(), draft, kind="edit", final_text=final, agent=acme.agent.username
    )

    assert response.status_code == 201
    recorded = AgentAction.objects.get()
    assert recorded.kind == AgentAction.Kind.EDIT
    assert recorded.edit_distance is not None
    assert Decimal("0") < recorded.edit_distance <= Decimal("1")
    assert recorded.final_text == final
    assert recorded.outbound_message.text == final


def test_edit_that_changes_nothing_is_stored_as_use(acme: TeamSetup) -> None:
    draft = make_draft(acme, shown_at=timezone.now() - timedelta(minutes=1))

    response = post_action(
        acme.api(), draft, kind="edit", final_text=f"  {DRAFT_TEXT}\n", agent=acme.agent.username
    )

    assert response.status_code == 201
    assert response.json()["kind"] == "use"
    recorded = AgentAction.objects.get()
    assert recorded.kind == AgentAction.Kind.USE
    assert recorded.edit_distance == Decimal("0")


def test_use_with_different_text_is_refused(acme: TeamSetup) -> None:
    draft = make_draft(acme, shown_at=timezone.now() - timedelta(minutes=1))

    response = post_action(
        acme.api(), draft, kind="use", final_text="Something else.", agent=acme.agent.username
    )

    assert response.status_code == 400
    assert "final_text" in response.json()
    assert AgentAction.objects.count() == 0
    assert outbound_count() == 0


def test_ignore_stores_the_agents_own_reply(acme: TeamSetup) -> None:
    draft = make_draft(acme, shown_at=timezone.now() - timedelta(minutes=1))
    final = "Let me check with the warehouse and come back to you."

    response = post_action(
        acme.api(), draft, kind="ignore", final_text=final, agent=acme.agent.username
    )

    assert response.status_code == 201
    recorded = AgentAction.objects.get()
    assert recorded.kind == AgentAction.Kind.IGNORE
    assert recorded.outbound_message.text == final


def test_posting_the_same_action_again_returns_the_first_one(acme: TeamSetup) -> None:
    draft = make_draft(acme, shown_at=timezone.now() - timedelta(minutes=1))
    client = acme.api()

    first = post_action(client, draft, kind="use", agent=acme.agent.username)
    second = post_action(client, draft, kind="use", agent=acme.agent.username)

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["outbound_message"] == first.json()["outbound_message"]
    assert AgentAction.objects.count() == 1
    assert outbound_count() == 1


def test_action_by_an_agent_of_another_team_is_refused(acme: TeamSetup, globex: TeamSetup) -> None:
    draft = make_draft(acme, shown_at=timezone.now() - timedelta(minutes=1))

    response = post_action(acme.api(), draft, kind="use", agent=globex.agent.username)

    assert response.status_code == 400
    assert "agent" in response.json()
    assert AgentAction.objects.count() == 0
    assert outbound_count() == 0


def test_action_by_an_inactive_agent_is_refused(acme: TeamSetup) -> None:
    gone = AgentProfileFactory.create(team=acme.team, user__username="former-agent").user
    gone.is_active = False
    gone.save(update_fields=["is_active"])
    draft = make_draft(acme, shown_at=timezone.now() - timedelta(minutes=1))

    response = post_action(acme.api(), draft, kind="use", agent="former-agent")

    assert response.status_code == 400
    assert "agent" in response.json()


def test_action_without_shown_at_on_a_never_shown_draft_is_refused(acme: TeamSetup) -> None:
    draft = make_draft(acme, shown_at=None)

    response = post_action(acme.api(), draft, kind="use", agent=acme.agent.username)

    assert response.status_code == 400
    assert "shown_at" in response.json()
    assert AgentAction.objects.count() == 0
    assert outbound_count() == 0  # the reply is rolled back with the refused action


def test_explicit_shown_at_starts_the_clock_on_a_never_shown_draft(acme: TeamSetup) -> None:
    draft = make_draft(acme, shown_at=None)
    shown_at = timezone.now() - timedelta(minutes=2)
    acted_at = shown_at + timedelta(seconds=90)

    response = post_action(
        acme.api(),
        draft,
        kind="use",
        agent=acme.agent.username,
        shown_at=shown_at,
        acted_at=acted_at,
    )

    assert response.status_code == 201
    assert AgentAction.objects.get().handle_seconds == Decimal("90.000")


def test_acted_at_before_shown_at_is_refused(acme: TeamSetup) -> None:
    shown_at = timezone.now() - timedelta(minutes=1)
    draft = make_draft(acme, shown_at=shown_at)

    response = post_action(
        acme.api(),
        draft,
        kind="use",
        agent=acme.agent.username,
        acted_at=shown_at - timedelta(seconds=1),
    )

    assert response.status_code == 400
    assert "acted_at" in response.json()
    assert AgentAction.objects.count() == 0
    assert outbound_count() == 0


def test_kind_none_on_a_draft_with_text_is_refused(acme: TeamSetup) -> None:
    draft = make_draft(acme, shown_at=timezone.now() - timedelta(minutes=1))

    response = post_action(
        acme.api(), draft, kind="none", final_text="My own words.", agent=acme.agent.username
    )

    assert response.status_code == 400
    assert "kind" in response.json()
    assert AgentAction.objects.count() == 0
    assert outbound_count() == 0


def test_unknown_kind_and_unknown_fields_are_refused(acme: TeamSetup) -> None:
    draft = make_draft(acme, shown_at=timezone.now() - timedelta(minutes=1))
    client = acme.api()

    bad_kind = post_action(client, draft, kind="approve", agent=acme.agent.username)
    extra = post_action(client, draft, kind="use", agent=acme.agent.username, score=1)

    assert bad_kind.status_code == 400
    assert "kind" in bad_kind.json()
    assert extra.status_code == 400
    assert "score" in extra.json()
    assert AgentAction.objects.count() == 0


def test_ignore_on_a_held_out_draft_is_stored_as_none(acme: TeamSetup) -> None:
    draft = make_draft(
        acme, status=Draft.Status.HELD_OUT, text="", shown_at=timezone.now() - timedelta(minutes=3)
    )
    final = "Hi! I have checked: your parcel leaves today."

    response = post_action(
        acme.api(), draft, kind="ignore", final_text=final, agent=acme.agent.username
    )

    assert response.status_code == 201
    recorded = AgentAction.objects.get()
    assert recorded.kind == AgentAction.Kind.NONE
    assert recorded.edit_distance is None
    assert recorded.draft_id == draft.pk
    assert recorded.outbound_message.text == final
    assert response.json()["kind"] == "none"


def test_a_macro_draft_used_through_the_api_is_signed_with_the_agents_name(
    acme: TeamSetup,
) -> None:
    """A macro offer keeps `{agent_name}` for whoever answers: used as is, the customer gets
    it signed, and sending the signed text yourself is a use too, not an edit."""
    acme.agent.first_name, acme.agent.last_name = "Robin", "Park"
    acme.agent.save()
    template = "Happy to help.\n\nBest,\n{agent_name}"
    shown_at = timezone.now() - timedelta(minutes=2)

    response = post_action(
        acme.api(),
        make_draft(acme, text=template, shown_at=shown_at),
        kind="use",
        agent=acme.agent.username,
    )
    signed = AgentAction.objects.get()
    assert response.status_code == 201
    assert signed.final_text == "Happy to help.\n\nBest,\nRobin Park"
    assert (signed.kind, signed.edit_distance) == (AgentAction.Kind.USE, Decimal("0"))

    response = post_action(
        acme.api(),
        make_draft(acme, text=template, shown_at=shown_at),
        kind="use",
        agent=acme.agent.username,
        final_text="Happy to help.\n\nBest,\nRobin Park",
    )
    assert response.status_code == 201
    assert AgentAction.objects.latest("id").kind == AgentAction.Kind.USE


def test_held_out_draft_needs_final_text(acme: TeamSetup) -> None:
    draft = make_draft(
        acme, status=Draft.Status.HELD_OUT, text="", shown_at=timezone.now() - timedelta(minutes=3)
    )

    response = post_action(acme.api(), draft, kind="use", agent=acme.agent.username)

    assert response.status_code == 400
    assert "final_text" in response.json()
    assert outbound_count() == 0


def test_action_on_a_missing_draft_is_404(acme: TeamSetup) -> None:
    response = acme.api().post(
        "/api/v1/drafts/999999/action", {"kind": "use", "agent": acme.agent.username}, format="json"
    )

    assert response.status_code == 404


# --- OpenAPI ----------------------------------------------------------------------------------


def test_openapi_schema_loads_and_documents_the_api(db: None) -> None:
    response = APIClient().get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = json.loads(response.content)
    assert "/api/v1/messages" in schema["paths"]
    assert "post" in schema["paths"]["/api/v1/messages"]
    assert "/api/v1/drafts/{id}/action" in schema["paths"]
    assert "ChannelToken" in schema["components"]["securitySchemes"]


def test_swagger_ui_page_loads_with_its_assets_served_locally(db: None, settings: Any) -> None:
    # With DEBUG off the manifest storage needs `collectstatic`; the page itself is under test.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }

    response = APIClient().get("/api/docs/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page  # no CDN
    # The start-up script is a file of its own (Content-Security-Policy forbids inline ones).
    assert "<script>" not in page
    script = APIClient().get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "/api/schema/" in script.content.decode()


def test_a_token_revoked_through_the_service_is_refused_at_once_despite_the_cache(
    acme: TeamSetup, settings: Any
) -> None:
    settings.API_TOKEN_CACHE_SECONDS = 30
    client = acme.api()
    assert client.get("/api/v1/conversations").status_code == 200  # now cached
    token = ApiToken.objects.get(channel=acme.channel)
    services.api_token_revoke(token=token)
    assert client.get("/api/v1/conversations").status_code == 401


# --- Odd input: a 400 that says what is wrong, never a server error ----------------------------


def test_deeply_nested_json_is_a_400_that_names_the_nesting(acme: TeamSetup) -> None:
    body = "[" * 1024 + "]" * 1024  # 2 KB: deep enough to exhaust Python's JSON parser

    response = acme.api().generic("POST", INGEST, body, content_type="application/json")

    assert response.status_code == 400
    assert "nest deeper than" in response.json()["detail"]
    assert Message.objects.count() == 0


def test_brackets_inside_json_strings_are_text_not_nesting(acme: TeamSetup) -> None:
    text = '[{"' * 300 + '\\" ]]'
    response = ingest(acme.api(), text=text)

    assert response.status_code == 201
    assert Message.objects.get().text == text


def _encs_reader(acme: TeamSetup) -> APIClient:
    from accounting.models import AccountingSettings

    AccountingSettings.objects.create(
        effective_from=datetime(2020, 1, 1).date(),
        agent_hourly_usd=Decimal(36),
        default_baseline_seconds=Decimal(120),
    )
    return acme.api()


@pytest.mark.parametrize(
    "period",
    [
        {"from": "9999-12-31", "to": "9999-12-31"},
        {"from": "0001-01-01", "to": "0001-01-02"},
    ],
)
def test_encs_for_a_period_at_the_ends_of_the_calendar_is_a_clear_400(
    acme: TeamSetup, period: dict[str, str]
) -> None:
    response = _encs_reader(acme).get("/api/v1/encs", period)

    assert response.status_code == 400
    errors = " ".join(" ".join(v) for v in response.json().values())
    assert "1970-01-01" in errors or "9998-12-31" in errors


def test_encs_on_the_last_reportable_day_answers(acme: TeamSetup) -> None:
    response = _encs_reader(acme).get("/api/v1/encs", {"from": "9998-12-31", "to": "9998-12-31"})

    assert response.status_code == 200
    assert response.json()["messages"] == 0


WHATIF = WHATIF_PAPER_CASE


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999999", "1e-999999"])
@pytest.mark.parametrize("field", ["agent_hourly_usd", "use_share", "messages_per_year"])
def test_whatif_refuses_non_finite_or_huge_numbers_by_field(
    acme: TeamSetup, field: str, value: str
) -> None:
    response = acme.api().get("/api/v1/encs/whatif", {**WHATIF, field: value})

    assert response.status_code == 400
    assert field in response.json()


def test_whatif_at_the_largest_figures_it_accepts_still_answers(acme: TeamSetup) -> None:
    largest = {
        **WHATIF,
        "agent_hourly_usd": "10000",
        "baseline_seconds": "86400",
        "use_seconds": "0",
        "use_share": "1",
        "edit_share": "0",
        "ignore_share": "0",
        "cost_per_response_usd": "1000",
        "messages_per_year": str(10**10),
    }
    response = acme.api().get("/api/v1/encs/whatif", largest)

    assert response.status_code == 200, response.json()
    assert response.json()["encs_per_year_usd"] == "2390000000000000.0000000000"
    # Figures whose ENCS per year overflowed Decimal's precision (a server error) are refused.
    beyond = {**largest, "agent_hourly_usd": "999999", "messages_per_year": str(10**12)}
    refused = acme.api().get("/api/v1/encs/whatif", beyond)
    assert refused.status_code == 400
    assert set(refused.json()) == {"agent_hourly_usd", "messages_per_year"}


# --- Chunked request bodies (Transfer-Encoding: chunked, no Content-Length) --------------------


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _post_chunked(port: int, token: str, chunks: list[bytes]) -> tuple[int, dict[str, Any]]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST",
            INGEST,
            body=iter(chunks),  # no length known: http.client sends it chunked
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


@pytest.mark.slow
def test_a_chunked_body_through_gunicorn_is_read_whole_and_bounded(
    acme: TeamSetup, transactional_db: None, tmp_path: Any
) -> None:
    """gunicorn passes chunked bodies to WSGI without a length; Django read them as empty
    ("This field is required"). Now a valid message is stored, and one over the body limit
    is refused as a body with its length would be."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from django.db import connection as db_connection

    db = db_connection.settings_dict
    port = _free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(  # noqa: S603 - our own gunicorn, fixed arguments
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "csbot.wsgi:application",
            f"--bind=127.0.0.1:{port}",
            "--workers=1",
        ],
        env={
            **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
            "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "DJANGO_DEBUG": "0",
            "CACHE_URL": "locmem://",  # one process
        },
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.3)
        body = json.dumps(
            {"conversation_external_id": "chunked", "channel_message_id": "c-1", "text": "Hi!"}
        ).encode()
        status, answer = _post_chunked(port, acme.token, [body[:20], body[20:]])
        assert status == 201, answer
        assert Message.objects.get(pk=answer["id"]).text == "Hi!"
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        big = json.dumps({"text": "x" * limit}).encode()
        status, answer = _post_chunked(
            port, acme.token, [big[i : i + 4096] for i in range(0, len(big), 4096)]
        )
        assert status == 413, answer
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_a_chunked_body_a_server_cannot_delimit_is_refused_with_411() -> None:
    """A WSGI server that does not say it decoded the chunks (wsgi.input_terminated) leaves
    the body's end unknown: 411 with a message, before Django reads anything."""
    from csbot.security import chunked_bodies

    def never_called(environ: Any, start_response: Any) -> list[bytes]:
        raise AssertionError("the application must not run")

    answered: list[str] = []
    body = chunked_bodies(never_called)(
        {
            "REQUEST_METHOD": "POST",
            "HTTP_TRANSFER_ENCODING": "chunked",
            "wsgi.input": io.BytesIO(b"5\r\nhello\r\n0\r\n\r\n"),
        },
        lambda status, headers: answered.append(status),  # type: ignore[arg-type]
    )
    assert answered == ["411 Length Required"]
    assert "Content-Length" in json.loads(b"".join(body))["detail"]
