"""The draft panel's stream (server-sent events): login and team scoping, the headers a proxy
and a browser need, the events of a draft from its state to its end."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from drafting.models import Draft
from drafting.streaming import draft_stream_publish
from tests.factories import ingest, make_team

pytestmark = pytest.mark.django_db(transaction=True)  # NOTIFY is delivered at commit


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _events(frames: list[bytes]) -> list[tuple[str, Any]]:
    """(event, data) of each SSE frame; comments (keep-alives) and `retry` left out."""
    events = []
    for frame in b"".join(frames).decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_the_stream_is_for_logged_in_agents_of_the_conversations_team() -> None:
    acme, globex = make_team("Acme"), make_team("Globex")
    draft = ingest(acme, "c1", "m1").draft
    assert draft is not None
    url = reverse("console:draft-stream", args=[draft.message.conversation_id])
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    assert _client(globex.agent).get(url).status_code == 404
    assert _client(acme.agent).post(url).status_code == 405


def test_a_pending_draft_streams_its_state_text_and_end_with_the_headers_sse_needs() -> None:
    setup = make_team("Acme")
    draft = ingest(setup, "c1", "m1").draft
    assert draft is not None
    response = _client(setup.agent).get(
        reverse("console:draft-stream", args=[draft.message.conversation_id])
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["X-Accel-Buffering"] == "no"
    assert response["Cache-Control"] == "no-cache"
    frames = iter(response.streaming_content)  # type: ignore[attr-defined]
    received = [next(frames), next(frames)]  # retry, then the state: listening from here
    assert _events(received) == [("state", {"status": "queued"})]
    draft_stream_publish(draft_id=draft.pk, event="text", seq=1, text="Your parcel")
    received.append(next(frames))
    Draft.objects.filter(pk=draft.pk).update(
        status=Draft.Status.READY, text="Your parcel ships today.", ready_at=timezone.now()
    )
    draft_stream_publish(draft_id=draft.pk, event="settled", seq=2)
    received += list(frames)  # the stream ends by itself at the final state
    assert _events(received) == [
        ("state", {"status": "queued"}),
        ("text", {"text": "Your parcel", "at": 0}),
        ("final", {"status": "ready"}),
    ]
    response.close()


def test_a_conversation_without_a_pending_draft_ends_at_once() -> None:
    setup = make_team("Acme")
    draft = ingest(setup, "c1", "m1").draft
    assert draft is not None
    Draft.objects.filter(pk=draft.pk).update(status=Draft.Status.FAILED)
    response = _client(setup.agent).get(
        reverse("console:draft-stream", args=[draft.message.conversation_id])
    )
    assert _events(list(response.streaming_content)) == [  # type: ignore[attr-defined]
        ("state", {"status": "failed"}),
        ("final", {"status": "failed"}),
    ]
