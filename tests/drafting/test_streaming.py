"""Streaming drafts through real PostgreSQL LISTEN/NOTIFY: the worker's text so far reaches a
subscriber as the web side reads it, the row stays the truth, the stream always ends."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Generator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from drafting import services as drafting
from drafting.models import Draft
from drafting.streaming import (
    DraftStreamWriter,
    StreamEvent,
    _payload,
    draft_stream_events,
    draft_stream_publish,
)
from tests.drafting.factories import GOOD, cheap_endpoint, paid_endpoint, two_tier_team
from tests.factories import EndpointFactory, ingest, make_team
from tests.http_stub import Reply, chat_completion, openai_stub

pytestmark = pytest.mark.django_db(transaction=True)  # NOTIFY is delivered at commit

STREAMED = "Thanks for waiting! Your parcel left our warehouse today and arrives on Friday."


def _queued_draft(name: str, endpoint_url: str | None = None) -> Draft:
    endpoint = EndpointFactory.create(base_url=endpoint_url) if endpoint_url else None
    setup = make_team(name, endpoint=endpoint)
    draft = ingest(setup, "c1", "c1-m1", "Where is my parcel?").draft
    assert draft is not None
    return draft


Subscribe = Callable[..., Iterator[StreamEvent | None]]


@pytest.fixture
def subscribe() -> Iterator[Subscribe]:
    """`draft_stream_events`, each stream closed at the end of the test, finished or not: each
    holds a connection of its own, and the test database cannot be dropped while one is open."""
    opened: list[Generator[StreamEvent | None]] = []

    def subscribe(**kwargs: Any) -> Generator[StreamEvent | None]:
        stream = draft_stream_events(**kwargs)
        opened.append(stream)
        return stream

    yield subscribe
    for stream in opened:
        stream.close()


def _events(stream: Iterator[StreamEvent | None]) -> list[StreamEvent]:
    return [event for event in stream if event is not None]


def _in_thread(work: Callable[[], object]) -> threading.Thread:
    """Run `work` as the worker would, in its own thread and database connection."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test thread by `_join`)
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.failures = failures  # type: ignore[attr-defined]
    thread.start()
    return thread


def _join(thread: threading.Thread) -> None:
    thread.join(timeout=60)
    assert not thread.is_alive()
    failures = thread.failures  # type: ignore[attr-defined]
    if failures:
        raise failures[0]


def test_a_subscriber_gets_the_state_then_published_text_then_the_final_state(
    subscribe: Subscribe,
) -> None:
    draft = _queued_draft("Pub")
    stream = subscribe(draft_id=draft.pk, timeout=20)
    assert next(stream) == StreamEvent("state", {"status": "queued"})  # listening from here
    draft_stream_publish(draft_id=draft.pk, event="text", seq=1, text="Hello, your")
    draft_stream_publish(draft_id=draft.pk, event="improving", seq=2)
    Draft.objects.filter(pk=draft.pk).update(
        status=Draft.Status.READY, text="Hello!", ready_at=timezone.now()
    )
    draft_stream_publish(draft_id=draft.pk, event="settled", seq=3)
    assert _events(stream) == [
        StreamEvent("text", {"text": "Hello, your", "at": 0}),
        StreamEvent("improving", {}),
        StreamEvent("final", {"status": "ready"}),
    ]


def test_a_late_subscriber_of_a_final_draft_gets_its_state_and_the_end_at_once(
    subscribe: Subscribe,
) -> None:
    draft = _queued_draft("Late")
    Draft.objects.filter(pk=draft.pk).update(status=Draft.Status.FAILED)
    assert _events(subscribe(draft_id=draft.pk, timeout=20)) == [
        StreamEvent("state", {"status": "failed"}),
        StreamEvent("final", {"status": "failed"}),
    ]


def test_the_subscriber_notices_a_final_row_without_any_event(subscribe: Subscribe) -> None:
    """A worker that died after storing the draft, or an event lost: the row is read anyway."""
    draft = _queued_draft("Quiet")
    stream = subscribe(draft_id=draft.pk, timeout=20)
    next(stream)
    Draft.objects.filter(pk=draft.pk).update(status=Draft.Status.SUPERSEDED)
    assert _events(stream) == [StreamEvent("final", {"status": "superseded"})]


def test_a_draft_back_in_the_queue_is_announced_and_the_stream_ends_at_its_timeout(
    subscribe: Subscribe,
) -> None:
    draft = _queued_draft("Requeue")
    Draft.objects.filter(pk=draft.pk).update(status=Draft.Status.GENERATING)
    stream = subscribe(draft_id=draft.pk, timeout=1.5, keepalive=0.5)
    assert next(stream) == StreamEvent("state", {"status": "generating"})
    Draft.objects.filter(pk=draft.pk).update(status=Draft.Status.QUEUED)
    draft_stream_publish(draft_id=draft.pk, event="settled", seq=1)
    rest = list(stream)
    assert rest[0] == StreamEvent("state", {"status": "queued"})
    assert None in rest  # keep-alives while nothing happens
    assert rest[-1] == StreamEvent("timeout", {})


def test_a_text_too_long_for_notify_is_sent_as_its_tail(subscribe: Subscribe) -> None:
    text = "é" * 3000 + "x" * 3000 + " the end"  # 9 008 bytes in UTF-8
    payload = _payload("text", 1, text)
    assert len(payload.encode()) <= 7900
    body = json.loads(payload)
    assert body["at"] > 0
    assert text[body["at"] :] == body["text"]
    assert body["text"].endswith(" the end")
    draft = _queued_draft("Long")
    stream = subscribe(draft_id=draft.pk, timeout=3)
    next(stream)
    draft_stream_publish(draft_id=draft.pk, event="text", seq=1, text=text)  # PostgreSQL takes it
    assert next(stream) == StreamEvent("text", {"text": body["text"], "at": body["at"]})


def test_the_writer_publishes_at_most_one_text_per_interval_and_flushes_before_improving(
    subscribe: Subscribe,
) -> None:
    draft = _queued_draft("Throttle")
    stream = subscribe(draft_id=draft.pk, timeout=2)
    next(stream)
    writer = DraftStreamWriter(draft_id=draft.pk, interval=60)
    for so_far in ("Hel", "Hello", "Hello the", "Hello there"):
        writer.text(so_far)
    writer.improving()
    Draft.objects.filter(pk=draft.pk).update(status=Draft.Status.READY, ready_at=timezone.now())
    writer.settled()
    assert _events(stream) == [
        StreamEvent("text", {"text": "Hel", "at": 0}),
        StreamEvent("text", {"text": "Hello there", "at": 0}),  # the newest, before improving
        StreamEvent("improving", {}),
        StreamEvent("final", {"status": "ready"}),
    ]


def test_the_worker_streams_the_first_tier_and_the_stored_draft_is_what_it_would_be_anyway(
    subscribe: Subscribe,
) -> None:
    body = chat_completion(STREAMED, completion_tokens=16, logprob=-0.05)
    with openai_stub(Reply(body=body, stream=True, chunk_delay=0.03)) as stub:
        draft = _queued_draft("Worker", stub.base_url)
        stream = subscribe(draft_id=draft.pk, timeout=30)
        assert next(stream) == StreamEvent("state", {"status": "queued"})
        worker = _in_thread(lambda: drafting.draft_generate(draft_id=draft.pk))
        events = _events(stream)
        _join(worker)
    texts = [e.data["text"] for e in events if e.name == "text"]
    assert len(texts) >= 3, events  # it did arrive piece by piece
    assert all(STREAMED.startswith(t) for t in texts)
    assert len(texts[0]) < len(STREAMED)
    assert events[-1] == StreamEvent("final", {"status": "ready"})
    draft.refresh_from_db()
    assert draft.text == STREAMED
    attempt = draft.attempts.get()
    assert (attempt.tokens_out, attempt.outcome) == (16, "ok")
    assert stub.requests[0]["json"]["stream"] is True


def test_an_escalated_first_tier_is_announced_as_improving_and_the_second_tier_is_not_streamed(
    subscribe: Subscribe,
) -> None:
    unsure = chat_completion("Maybe. I think so?", logprob=-3.0)
    with (
        openai_stub(Reply(body=unsure, stream=True, chunk_delay=0.05)) as cheap,
        openai_stub(Reply(body=chat_completion(GOOD))) as paid,
    ):
        setup = two_tier_team(
            "Escalating",
            cheap_endpoint(cheap.base_url),
            paid_endpoint(paid.base_url),
            threshold="0.5",
        )
        draft = ingest(setup, "c1", "c1-m1", "Where is my refund?").draft
        assert draft is not None
        stream = subscribe(draft_id=draft.pk, timeout=30)
        next(stream)
        worker = _in_thread(lambda: drafting.draft_generate(draft_id=draft.pk))
        events = _events(stream)
        _join(worker)
    names = [e.name for e in events]
    assert "text" in names
    assert names.index("improving") > names.index("text")
    assert names[-1] == "final"
    assert all(e.data["text"] in "Maybe. I think so?" for e in events if e.name == "text")
    assert "stream" not in paid.requests[0]["json"]
    draft.refresh_from_db()
    assert draft.text == GOOD
    assert draft.score is not None and draft.score >= Decimal("0")


def test_a_card_number_being_written_is_never_streamed_in_full(subscribe: Subscribe) -> None:
    echoed = "I see your card 4111 1111 1111 1111 on file; it is charged on the 3rd."
    with openai_stub(Reply(body=chat_completion(echoed), stream=True, chunk_delay=0.01)) as stub:
        draft = _queued_draft("Card", stub.base_url)
        stream = subscribe(draft_id=draft.pk, timeout=30)
        next(stream)
        # Unthrottled, so every intermediate text is published.
        writer = DraftStreamWriter(draft_id=draft.pk, interval=0)
        worker = _in_thread(
            lambda: drafting._draft_generate(
                draft_id=draft.pk, explore_draw=lambda: 1.0, stream=writer
            )
        )
        worker.join(timeout=60)
        writer.settled()
        events = _events(stream)
        _join(worker)
    texts = [e.data["text"] for e in events if e.name == "text"]
    assert texts, events
    assert not any("1111 1111" in t or "4111" in t for t in texts), texts
    assert any("•••• 1111" in t for t in texts)
    draft.refresh_from_db()
    assert "4111" not in draft.text


@pytest.mark.vllm
def test_the_real_local_model_streams_a_draft_the_console_can_follow(
    vllm_base_url: str, subscribe: Subscribe
) -> None:
    draft = _queued_draft("Local")  # its tier is the local endpoint: the real vLLM server
    stream = subscribe(draft_id=draft.pk, timeout=240)
    assert next(stream) == StreamEvent("state", {"status": "queued"})
    worker = _in_thread(lambda: drafting.draft_generate(draft_id=draft.pk))
    events = _events(stream)
    _join(worker)
    draft.refresh_from_db()
    assert draft.status == Draft.Status.READY, draft.failure_reason
    assert events[-1] == StreamEvent("final", {"status": "ready"})
    texts = [e.data["text"] for e in events if e.name == "text"]
    assert texts, events
    assert draft.text.startswith(texts[0])
    attempt = draft.attempts.get()
    assert attempt.tokens_in > 0 and attempt.tokens_out > 0  # usage came with the stream
