"""The drafting pipeline: claim, supersession, provider failures, the sweeper, hold-out."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlparse

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from csbot import services
from csbot.celery import app as celery_app
from drafting import services as drafting
from drafting.models import CachedReply, Draft, DraftAttempt, ModelEndpoint, ReplyExample
from tests.factories import EndpointFactory, ingest, make_team
from tests.http_stub import Reply, TcpProxy, chat_completion, openai_stub

T = TypeVar("T")


def wait_for(fetch: Callable[[], T], done: Callable[[T], bool], *, timeout: float) -> T:
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.25)
        value = fetch()
    return value


def queued_draft_ids() -> list[int]:
    """Draft ids of the tasks waiting in the real Redis broker's default queue."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    ids = []
    for raw in client.lrange("celery", 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == "drafting.tasks.draft_generate":
            ids.append(int(message["headers"]["argsrepr"].strip("(),[]")))
    return ids


@pytest.fixture
def empty_broker() -> None:
    celery_app.control.purge()


# --- End to end with real parts ---------------------------------------------------------------


@pytest.mark.vllm
def test_api_message_is_drafted_by_real_vllm_through_celery_and_the_action_is_stored(
    vllm_base_url: str, celery_worker: None
) -> None:
    setup = make_team("E2E")
    response = setup.api().post(
        "/api/v1/messages",
        {
            "conversation_external_id": "order-77",
            "channel_message_id": "wa-1",
            "text": "Hi! My parcel has not arrived yet. Can you check where it is?",
            "customer_ref": "Dana",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    draft_id = response.json()["draft"]["id"]

    draft = wait_for(
        lambda: Draft.objects.get(pk=draft_id),
        lambda d: d.status in (Draft.Status.READY, Draft.Status.FAILED),
        timeout=240,
    )
    assert draft.status == Draft.Status.READY, draft.failure_reason
    assert draft.text.strip()
    attempt = draft.attempts.get()
    assert attempt.outcome == DraftAttempt.Outcome.OK
    assert attempt.tokens_in > 0
    assert attempt.tokens_out > 0
    assert attempt.latency_ms > 0
    assert attempt.cost > 0  # GPU-seconds × the endpoint's GPU $/hour
    assert draft.total_cost == attempt.cost
    assert draft.final_endpoint == setup.endpoint

    # Shown 12 s ago: the draft (and so the message's arrival) is moved back to allow it.
    shown = timezone.now() - timedelta(seconds=12)
    Draft.objects.filter(pk=draft_id).update(created_at=shown - timedelta(seconds=1))
    action = setup.api().post(
        f"/api/v1/drafts/{draft_id}/action",
        {"kind": "use", "agent": setup.agent.username, "shown_at": shown.isoformat()},
        format="json",
    )
    assert action.status_code == 201, action.content
    body = action.json()
    assert body["kind"] == "use"
    assert body["final_text"] == draft.text
    assert Decimal(body["handle_seconds"]) >= Decimal("12")
    # After commit the worker learns from it: a cached first-turn reply and a few-shot example.
    example = wait_for(
        lambda: ReplyExample.objects.filter(source_draft_id=draft_id).first(),
        lambda e: e is not None,
        timeout=60,
    )
    assert example is not None and example.embedding_model.startswith("minilm:")
    assert CachedReply.objects.get(source_draft_id=draft_id).reply == draft.text


# --- The claim ---------------------------------------------------------------------------------


def test_two_workers_claiming_one_draft_at_once_get_it_exactly_once(transactional_db: None) -> None:
    setup = make_team("Claim")
    draft = ingest(setup, "c1", "m1", "Where is my refund?").draft
    assert draft is not None
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def claim() -> None:
        barrier.wait()
        try:
            results.append(drafting.draft_claim(draft_id=draft.pk) is not None)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    draft.refresh_from_db()
    assert draft.status == Draft.Status.GENERATING
    assert draft.tries == 1


def test_a_redelivered_task_does_not_draft_twice(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("Your refund is on its way."))) as stub:
        setup = make_team("Redelivery", endpoint=EndpointFactory.create(base_url=stub.base_url))
        draft = ingest(setup, "c1", "m1", "Where is my refund?").draft
        assert draft is not None
        drafting.draft_generate(draft_id=draft.pk)
        drafting.draft_generate(draft_id=draft.pk)  # the broker delivered the task again
    draft.refresh_from_db()
    assert draft.status == Draft.Status.READY
    assert draft.attempts.count() == 1
    assert len(stub.requests) == 1


# --- Supersession ------------------------------------------------------------------------------


def test_a_new_customer_message_supersedes_the_unfinished_draft(db: None) -> None:
    setup = make_team("Supersede")
    first = ingest(setup, "c1", "m1", "Hello?").draft
    second = ingest(setup, "c1", "m2", "Actually, I need to change my address.").draft
    assert first is not None and second is not None
    first.refresh_from_db()
    assert first.status == Draft.Status.SUPERSEDED
    assert second.status == Draft.Status.QUEUED
    # A late task for the old draft finds nothing to do.
    assert drafting.draft_claim(draft_id=first.pk) is None


def test_a_draft_superseded_while_generating_keeps_its_cost_but_never_becomes_ready(
    transactional_db: None,
) -> None:
    release = threading.Event()
    with openai_stub(
        Reply(
            body=chat_completion("Old answer.", prompt_tokens=1000, completion_tokens=500),
            wait=release,
        )
    ) as stub:
        endpoint = EndpointFactory.create(
            kind=ModelEndpoint.Kind.PAID,
            base_url=stub.base_url,
            price__input_price_per_mtok=Decimal("2.50"),
            price__output_price_per_mtok=Decimal("10.00"),
        )
        setup = make_team("Race", endpoint=endpoint)
        first = ingest(setup, "c1", "m1", "Hello?").draft
        assert first is not None

        def generate() -> None:
            try:
                drafting.draft_generate(draft_id=first.pk)
            finally:
                connection.close()

        worker = threading.Thread(target=generate)
        worker.start()
        wait_for(lambda: len(stub.requests), lambda n: n == 1, timeout=10)
        ingest(setup, "c1", "m2", "Never mind, found it.")
        release.set()
        worker.join(timeout=30)
    first.refresh_from_db()
    assert first.status == Draft.Status.SUPERSEDED
    assert first.text == ""
    attempt = first.attempts.get()
    # 1000 × $2.50/M + 500 × $10/M = $0.0075, spent even though nobody will see the draft.
    assert attempt.cost == Decimal("0.0075")
    assert first.total_cost == Decimal("0.0075")


# --- Provider failures and the sweeper --------------------------------------------------------


@pytest.mark.vllm
def test_vllm_down_records_a_failed_attempt_and_the_sweeper_drafts_it_once_back(
    vllm_base_url: str, db: None, empty_broker: None, settings: Any
) -> None:
    settings.DRAFT_RETRY_BASE_SECONDS = 0
    target = urlparse(vllm_base_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 80)  # stopped: "vLLM is down"
    endpoint = EndpointFactory.create(base_url=proxy.base_url, timeout_seconds=120)
    setup = make_team("Outage", endpoint=endpoint)
    result = ingest(setup, "c1", "m1", "Can I pay by bank transfer?")
    draft = result.draft
    assert draft is not None

    drafting.draft_generate(draft_id=draft.pk)  # what the worker does with the task

    draft.refresh_from_db()
    failed = draft.attempts.get()
    assert failed.outcome == DraftAttempt.Outcome.ERROR
    assert failed.error_kind == DraftAttempt.ErrorKind.UNAVAILABLE
    assert failed.cost == 0
    assert draft.status == Draft.Status.QUEUED  # back in line, not lost
    assert draft.tries == 1
    assert result.message.__class__.objects.filter(pk=result.message.pk).exists()

    celery_app.control.purge()  # the retry task got lost too: only the sweeper is left
    proxy.start()  # vLLM is back
    try:
        later = timezone.now() + timedelta(seconds=settings.DRAFT_STALE_SECONDS + 1)
        sweep = drafting.drafts_sweep(now=later)
        assert sweep.requeued == 1
        assert queued_draft_ids() == [draft.pk]  # the doorbell rang again, on the real broker
        drafting.draft_generate(draft_id=draft.pk)
    finally:
        proxy.stop()

    draft.refresh_from_db()
    assert draft.status == Draft.Status.READY, draft.failure_reason
    assert draft.text
    outcomes = list(draft.attempts.order_by("started_at").values_list("outcome", flat=True))
    assert outcomes == ["error", "ok"]
    assert draft.total_cost == sum(a.cost for a in draft.attempts.all())


def test_sweeper_reclaims_a_draft_whose_worker_died_and_expires_old_ones(
    db: None, empty_broker: None
) -> None:
    setup = make_team("Sweeper")
    stuck = ingest(setup, "c1", "m1", "Hi").draft
    old = ingest(setup, "c2", "m2", "Hello").draft
    assert stuck is not None and old is not None
    long_ago = timezone.now() - timedelta(seconds=settings.DRAFT_STALE_SECONDS + 5)
    Draft.objects.filter(pk=stuck.pk).update(
        status=Draft.Status.GENERATING, claimed_at=long_ago, tries=1
    )
    Draft.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.DRAFT_MAX_AGE_SECONDS + 5)
    )

    result = drafting.drafts_sweep()

    stuck.refresh_from_db()
    old.refresh_from_db()
    assert (result.reclaimed, result.expired) == (1, 1)
    assert stuck.status == Draft.Status.QUEUED
    assert queued_draft_ids() == [stuck.pk]
    assert old.status == Draft.Status.FAILED
    assert "expired" in old.failure_reason


def test_a_permanent_provider_error_fails_the_draft_with_the_reason(db: None) -> None:
    with openai_stub(
        Reply(
            status=401,
            body={"error": {"message": "Incorrect API key", "type": "invalid_request_error"}},
        )
    ) as stub:
        setup = make_team(
            "Auth",
            endpoint=EndpointFactory.create(kind=ModelEndpoint.Kind.PAID, base_url=stub.base_url),
        )
        draft = ingest(setup, "c1", "m1", "Hi").draft
        assert draft is not None
        drafting.draft_generate(draft_id=draft.pk)
    draft.refresh_from_db()
    assert draft.status == Draft.Status.FAILED
    assert draft.failure_reason.startswith("permanent")
    assert draft.attempts.get().error_kind == DraftAttempt.ErrorKind.PERMANENT


def test_transient_errors_give_up_after_the_configured_tries(db: None, settings: Any) -> None:
    settings.DRAFT_MAX_TRIES = 2
    settings.DRAFT_RETRY_BASE_SECONDS = 0
    with openai_stub(Reply(status=503, body={"error": {"message": "overloaded"}})) as stub:
        setup = make_team("Flaky", endpoint=EndpointFactory.create(base_url=stub.base_url))
        draft = ingest(setup, "c1", "m1", "Hi").draft
        assert draft is not None
        drafting.draft_generate(draft_id=draft.pk)
        drafting.draft_generate(draft_id=draft.pk)
    draft.refresh_from_db()
    assert draft.status == Draft.Status.FAILED
    assert draft.attempts.count() == 2
    assert set(draft.attempts.values_list("error_kind", flat=True)) == {"unavailable"}


def test_a_paid_attempt_costs_its_tokens_at_the_endpoint_prices(db: None) -> None:
    with openai_stub(
        Reply(body=chat_completion("Sure!", prompt_tokens=1200, completion_tokens=300))
    ) as stub:
        endpoint = EndpointFactory.create(
            kind=ModelEndpoint.Kind.PAID,
            base_url=stub.base_url,
            price__input_price_per_mtok=Decimal("0.15"),
            price__output_price_per_mtok=Decimal("0.60"),
            price__request_fee=Decimal("0.0001"),
        )
        setup = make_team("Paid", endpoint=endpoint)
        draft = ingest(setup, "c1", "m1", "Hi").draft
        assert draft is not None
        drafting.draft_generate(draft_id=draft.pk)
    draft.refresh_from_db()
    # 1200 × 0.15/M + 300 × 0.60/M + 0.0001 = 0.00018 + 0.00018 + 0.0001
    assert draft.total_cost == Decimal("0.00046")
    assert draft.status == Draft.Status.READY
    sent = stub.requests[0]["json"]
    assert sent["messages"][0] == {"role": "system", "content": setup.policy.system_prompt}
    assert sent["messages"][-1] == {"role": "user", "content": "Hi"}


# --- Hold-out ----------------------------------------------------------------------------------


def test_held_out_conversations_get_no_draft_and_no_task(
    db: None, django_capture_on_commit_callbacks: Any
) -> None:
    setup = make_team("Baseline")
    setup.policy.holdout_share = Decimal("1")
    setup.policy.save()
    with django_capture_on_commit_callbacks() as callbacks:
        first = ingest(setup, "c1", "m1", "Hi").draft
    setup.policy.holdout_share = Decimal("0")  # later messages follow the conversation's draw
    setup.policy.save()
    second = ingest(setup, "c1", "m2", "Anyone there?").draft
    assert first is not None and second is not None
    assert first.status == Draft.Status.HELD_OUT
    assert second.status == Draft.Status.HELD_OUT
    assert callbacks == []


def test_a_team_without_an_active_policy_stores_the_message_without_a_draft(db: None) -> None:
    setup = make_team("NoPolicy")
    setup.policy.active = False
    setup.policy.save()
    result = ingest(setup, "c1", "m1", "Hi")
    assert result.created
    assert result.draft is None


def test_a_drafted_conversation_stays_drafted_after_a_reply_even_if_the_hold_out_grows(
    db: None,
) -> None:
    setup = make_team("Sticky")
    first = ingest(setup, "c1", "m1", "Hi").draft
    assert first is not None and first.status == Draft.Status.QUEUED
    Draft.objects.filter(pk=first.pk).update(
        status=Draft.Status.READY,
        text="Hello!",
        ready_at=timezone.now(),
        first_shown_at=timezone.now(),
    )
    first.refresh_from_db()
    services.reply_send(
        conversation=first.message.conversation,
        agent=setup.agent,
        text="Hello!",
        inbound_message=first.message,
        draft=first,
        kind="use",
    )
    setup.policy.holdout_share = Decimal("1")
    setup.policy.save()
    second = ingest(setup, "c1", "m2", "One more question").draft
    assert second is not None
    assert second.status == Draft.Status.QUEUED
    first.refresh_from_db()
    assert first.status == Draft.Status.READY  # answered drafts are not superseded


def test_a_misconfigured_endpoint_fails_the_draft_with_a_recorded_attempt(
    db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CSBOT_TEST_MISSING_KEY", raising=False)
    no_key = EndpointFactory.create(
        kind=ModelEndpoint.Kind.PAID,
        base_url="http://127.0.0.1:9/v1",
        api_key_env="CSBOT_TEST_MISSING_KEY",
    )
    setup = make_team("Misconfigured", endpoint=no_key)
    draft = ingest(setup, "c1", "m1", "Hi").draft
    assert draft is not None
    drafting.draft_generate(draft_id=draft.pk)
    draft.refresh_from_db()
    assert draft.status == Draft.Status.FAILED
    attempt = draft.attempts.get()
    assert attempt.error_kind == DraftAttempt.ErrorKind.PERMANENT
    assert "CSBOT_TEST_MISSING_KEY" in attempt.error_message
