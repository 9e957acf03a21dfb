"""The cascade: escalation by score, fall-through on provider faults, the deadline, scoring."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import pytest
from django.utils import timezone

from drafting.engine.breaker import breaker
from drafting.engine.pricing import Price, attempt_cost
from drafting.engine.providers import Completion, _server_ms
from drafting.engine.scoring import DefaultScorer, ScoringContext
from drafting.models import Draft, DraftAttempt, ModelEndpoint
from tests.drafting.factories import GOOD, cheap_endpoint, drafted, paid_endpoint, two_tier_team
from tests.factories import EndpointFactory, ingest, make_team
from tests.http_stub import Reply, StubServer, TcpProxy, chat_completion, openai_stub

# --- Escalation by score -----------------------------------------------------------------------


def test_a_low_scored_cheap_draft_escalates_to_the_paid_tier(db: None) -> None:
    unsure = Reply(body=chat_completion("Maybe. I think?", logprob=-3.0))
    with (
        openai_stub(unsure) as cheap,
        openai_stub(
            Reply(body=chat_completion(GOOD, prompt_tokens=800, completion_tokens=40))
        ) as paid,
    ):
        setup = two_tier_team(
            "Escalate",
            cheap_endpoint(cheap.base_url),
            paid_endpoint(paid.base_url),
            threshold="0.5",
        )
        draft = drafted(setup)
    assert draft.status == Draft.Status.READY
    assert draft.text == GOOD
    attempts = list(draft.attempts.order_by("tier"))
    assert [a.tier for a in attempts] == [1, 2]
    assert attempts[0].score is not None and attempts[0].score < Decimal("0.5")
    assert draft.final_endpoint == attempts[1].endpoint
    assert draft.score == attempts[1].score
    # 800 × $2.50/M + 40 × $10/M = $0.0024 for the paid tier, plus the cheap tier's tokens.
    assert attempts[1].cost == Decimal("0.0024")
    assert draft.total_cost == attempts[0].cost + attempts[1].cost
    assert draft.counterfactual_cost == attempts[1].cost  # the top tier did answer


def test_a_confident_cheap_draft_stops_the_cascade(db: None) -> None:
    with (
        openai_stub(Reply(body=chat_completion(GOOD, logprob=-0.01))) as cheap,
        openai_stub() as paid,
    ):
        setup = two_tier_team(
            "Stop",
            cheap_endpoint(cheap.base_url),
            paid_endpoint(paid.base_url),
            threshold="0.5",
        )
        draft = drafted(setup)
    assert draft.status == Draft.Status.READY
    assert draft.attempts.count() == 1
    assert paid.requests == []
    # The top tier alone: its prices for the stub's 42 prompt + 17 completion tokens.
    assert draft.counterfactual_cost == Decimal("0.000275")
    assert draft.total_cost < draft.counterfactual_cost


@pytest.mark.vllm
@pytest.mark.parametrize(("threshold", "tiers_asked"), [("0.9999", [1, 2]), ("0", [1])])
def test_real_vllm_tier_then_recorded_paid_tier(
    vllm_base_url: str, db: None, threshold: str, tiers_asked: list[int]
) -> None:
    with openai_stub(
        Reply(body=chat_completion(GOOD, prompt_tokens=120, completion_tokens=30))
    ) as paid:
        local = EndpointFactory.create(base_url=vllm_base_url, timeout_seconds=120)
        setup = two_tier_team(
            f"Real {threshold}", local, paid_endpoint(paid.base_url), threshold=threshold
        )
        draft = drafted(
            setup, "Hello, I was charged twice for my order. Can you refund one charge?"
        )
    assert draft.status == Draft.Status.READY, draft.failure_reason
    attempts = list(draft.attempts.order_by("tier"))
    assert [a.tier for a in attempts] == tiers_asked
    local_attempt = attempts[0]
    assert local_attempt.outcome == DraftAttempt.Outcome.OK
    assert local_attempt.tokens_in > 0 and local_attempt.tokens_out > 0
    assert local_attempt.cost > 0 and local_attempt.score is not None
    assert draft.total_cost == sum(a.cost for a in attempts)
    if tiers_asked == [1, 2]:
        assert draft.text == GOOD
        assert attempts[1].cost == Decimal("0.0006")  # 120 × 2.50/M + 30 × 10/M
    else:
        assert draft.final_endpoint == local
        # Had the paid tier answered alone: its prices for the tokens the local tier used.
        expected = (
            Decimal(local_attempt.tokens_in) * Decimal("2.50")
            + Decimal(local_attempt.tokens_out) * Decimal("10.00")
        ) / Decimal(1_000_000)
        assert draft.counterfactual_cost == expected.quantize(Decimal("1e-10"))


# --- Provider faults fall through to the next tier --------------------------------------------


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (
            Reply(
                status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "7"}
            ),
            "rate_limited",
        ),
        (Reply(status=500, body={"error": {"message": "boom"}}), "unavailable"),
        (Reply(raw=b'{"id": "x", "choices": [ {"mess'), "unavailable"),
        (
            Reply(
                status=400,
                body={"error": {"message": "This model's maximum context length is 4096 tokens"}},
            ),
            "context_too_long",
        ),
        (Reply(status=401, body={"error": {"message": "bad key"}}), "permanent"),
    ],
    ids=["429", "500", "malformed-json", "context-too-long", "401"],
)
def test_a_failing_tier_is_recorded_and_the_next_tier_answers(
    db: None, fault: Reply, kind: str
) -> None:
    with openai_stub(fault) as broken, openai_stub(Reply(body=chat_completion(GOOD))) as backup:
        setup = two_tier_team(
            f"Fault {kind}",
            paid_endpoint(broken.base_url),
            paid_endpoint(backup.base_url),
            threshold="0",
        )
        draft = drafted(setup)
    assert draft.status == Draft.Status.READY
    assert draft.text == GOOD
    failed, ok = draft.attempts.order_by("tier")
    assert (failed.outcome, failed.error_kind, failed.cost) == ("error", kind, Decimal(0))
    assert ok.outcome == "ok"


def draft_with_a_hanging_first_tier(name: str, *, timeout_seconds: int) -> tuple[Draft, StubServer]:
    """A draft whose tier 1 never answers (until released) and tier 2 answers at once."""
    hang = threading.Event()
    try:
        with (
            openai_stub(Reply(body=chat_completion("late"), wait=hang)) as slow,
            openai_stub(Reply(body=chat_completion(GOOD))) as backup,
        ):
            setup = two_tier_team(
                name,
                paid_endpoint(slow.base_url, timeout_seconds=timeout_seconds),
                paid_endpoint(backup.base_url),
                threshold="0",
            )
            return drafted(setup), backup
    finally:
        hang.set()


def test_a_hanging_tier_times_out_and_the_next_tier_answers(db: None) -> None:
    draft, _ = draft_with_a_hanging_first_tier("Timeout", timeout_seconds=1)
    assert draft.status == Draft.Status.READY
    assert list(draft.attempts.order_by("tier").values_list("error_kind", flat=True)) == [
        "timeout",
        "",
    ]


def test_when_every_tier_is_rate_limited_the_draft_waits_for_the_longest_retry_after(
    db: None,
) -> None:
    limited = Reply(
        status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "7"}
    )
    with (
        openai_stub(limited) as first,
        openai_stub(Reply(status=503, body={"error": {"message": "busy"}})) as second,
    ):
        setup = two_tier_team(
            "AllDown", paid_endpoint(first.base_url), paid_endpoint(second.base_url), threshold="0"
        )
        before = timezone.now()
        draft = drafted(setup)
    assert draft.status == Draft.Status.QUEUED  # not lost: retried later
    assert draft.retry_at is not None
    assert timedelta(seconds=6) <= draft.retry_at - before <= timedelta(seconds=9)
    assert draft.attempts.count() == 2
    assert "retrying" in draft.failure_reason


def test_the_deadline_bounds_the_whole_cascade(db: None, settings: Any) -> None:
    settings.DRAFT_DEADLINE_SECONDS = 1
    draft, backup = draft_with_a_hanging_first_tier("Deadline", timeout_seconds=30)
    attempt = draft.attempts.get()
    assert attempt.endpoint is not None
    assert attempt.error_kind == "timeout"
    assert attempt.latency_ms < 5000  # cut to the deadline, not the endpoint's 30 s
    assert backup.requests == []  # no time left for tier 2
    assert breaker().state(attempt.endpoint.pk)["failures"] == 0  # our deadline, not its fault
    assert draft.status == Draft.Status.QUEUED
    assert "deadline" in draft.failure_reason


# --- The default scorer ----------------------------------------------------------------------


def completion(
    text: str, *, logprobs: list[float] | None = None, finish: str = "stop"
) -> Completion:
    return Completion(
        text=text,
        tokens_in=10,
        tokens_out=10,
        latency_ms=5,
        model="m",
        finish_reason=finish,
        token_logprobs=logprobs or [],
    )


CONTEXT = ScoringContext(customer_text="Hi, where is my parcel? It was due on Monday.")


def test_default_scorer_reads_the_models_confidence() -> None:
    scorer = DefaultScorer()
    sure = scorer.score(context=CONTEXT, completion=completion(GOOD, logprobs=[-0.01] * 5))
    unsure = scorer.score(context=CONTEXT, completion=completion(GOOD, logprobs=[-2.0] * 5))
    assert sure > 0.95
    assert unsure < 0.2


@pytest.mark.parametrize(
    ("draft", "finish", "at_most"),
    [
        ("", "stop", 0.0),
        (GOOD, "length", 0.6),
        ("I'm sorry, but as an AI language model I cannot help with that.", "stop", 0.1),
        ("Здравствуйте! Ваша посылка уже в пути.", "stop", 0.2),
    ],
    ids=["empty", "truncated", "refusal", "other-script"],
)
def test_default_scorer_marks_down_drafts_an_agent_cannot_use(
    draft: str, finish: str, at_most: float
) -> None:
    score = DefaultScorer().score(
        context=CONTEXT, completion=completion(draft, logprobs=[-0.01] * 5, finish=finish)
    )
    assert score <= at_most


# --- Cost metering ----------------------------------------------------------------------------


def test_local_cost_prefers_the_servers_own_timing_then_shares_latency_between_concurrent_requests() -> (
    None
):
    local = ModelEndpoint(kind=ModelEndpoint.Kind.LOCAL)
    # $3.60/h = $0.001 per second.
    price = Price(effective_from=timezone.now(), gpu_hour_usd=Decimal("3.60"))
    tokens = {"tokens_in": 9, "tokens_out": 9, "latency_ms": 4000}
    assert attempt_cost(endpoint=local, price=price, **tokens, server_ms=2500) == Decimal("0.0025")
    assert attempt_cost(endpoint=local, price=price, **tokens, concurrency=4) == Decimal("0.001")
    assert attempt_cost(endpoint=local, price=price, **tokens) == Decimal("0.004")


def test_vllm_per_request_metrics_give_compute_time_without_queueing() -> None:
    metrics = {
        "metrics": {
            "time_to_first_token_ms": 500.0,
            "queue_time_ms": 120.0,
            "generation_time_ms": 3000.0,
        }
    }
    assert _server_ms(metrics) == 3380
    assert _server_ms({"metrics": None}) is None
    assert _server_ms(None) is None


def test_the_circuit_breaker_skips_a_failing_tier_and_closes_once_it_recovers(
    db: None, settings: Any
) -> None:
    settings.BREAKER_FAILURES = 2
    settings.BREAKER_COOLDOWN_SECONDS = 1
    breaker.cache_clear()
    boom = Reply(status=500, body={"error": {"message": "boom"}})
    with (
        openai_stub(boom, boom, Reply(body=chat_completion(GOOD, logprob=-0.01))) as flaky,
        openai_stub(Reply(body=chat_completion("Backup answer."))) as backup,
    ):
        setup = two_tier_team(
            "Breaker", paid_endpoint(flaky.base_url), paid_endpoint(backup.base_url), threshold="0"
        )
        first = drafted(setup, conversation="a")
        second = drafted(setup, conversation="b")  # second failure in a row: the breaker opens
        third = drafted(setup, conversation="c")
        assert len(flaky.requests) == 2  # the third draft did not even call the broken tier
        skipped = third.attempts.get(tier=1)
        assert (skipped.error_kind, skipped.cost, skipped.latency_ms) == ("circuit_open", 0, 0)
        assert {first.status, second.status, third.status} == {Draft.Status.READY}
        assert breaker().state(setup.endpoint.pk)["state"] == "open"

        deadline = time.monotonic() + 5
        while breaker().state(setup.endpoint.pk)["state"] == "open" and time.monotonic() < deadline:
            time.sleep(0.1)
        fourth = drafted(setup, conversation="d")  # the half-open trial succeeds
    assert fourth.final_endpoint == setup.endpoint
    assert fourth.text == GOOD
    assert breaker().state(setup.endpoint.pk)["state"] == "closed"


# --- Guards ------------------------------------------------------------------------------------


def test_a_tier_over_its_daily_spend_cap_is_skipped(db: None) -> None:
    with openai_stub() as capped, openai_stub(Reply(body=chat_completion(GOOD))) as backup:
        pricey = paid_endpoint(capped.base_url, daily_spend_cap=Decimal("0.01"))
        setup = two_tier_team("Capped", pricey, paid_endpoint(backup.base_url), threshold="0")
        earlier = ingest(setup, "old", "old-1").draft
        assert earlier is not None
        DraftAttempt.objects.create(
            draft=earlier, tier=1, endpoint=pricey, cost=Decimal("0.02"), outcome="ok"
        )
        draft = drafted(setup)
    assert capped.requests == []
    assert list(draft.attempts.order_by("tier").values_list("error_kind", flat=True)) == [
        "spend_capped",
        "",
    ]
    assert draft.text == GOOD


def test_a_paid_tier_never_receives_personal_data_and_the_agent_sees_it_restored(db: None) -> None:
    customer = (
        "Hi, I'm jane.doe@example.com, call me on +44 20 7946 0958. I paid with "
        "4242 4242 4242 4242 and want the refund to DE89 3704 0044 0532 0130 00."
    )
    reply = "We will email [EMAIL_1] and refund to the account ending [IBAN_1] today."
    with openai_stub(Reply(body=chat_completion(reply))) as paid:
        setup = make_team("Private", endpoint=paid_endpoint(paid.base_url))
        draft = drafted(setup, customer)
    body = json.dumps(paid.requests[0]["json"])
    for secret in (
        "jane.doe@example.com",
        "7946 0958",
        "4242 4242 4242 4242",
        "DE89 3704",
        "0130 00",
    ):
        assert secret not in body
    assert "[EMAIL_1]" in body and "[CARD_1]" in body and "[IBAN_1]" in body
    assert "jane.doe@example.com" in draft.text  # the customer's own address comes back
    assert "3704 0044" not in draft.text  # an IBAN is never repeated in full


@pytest.mark.vllm
def test_vllm_dying_mid_request_falls_through_to_the_paid_tier(
    vllm_base_url: str, db: None
) -> None:
    target = urlparse(vllm_base_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 80)
    proxy.start()

    def kill_once_the_request_is_in_flight() -> None:
        deadline = time.monotonic() + 30
        while not proxy.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the request is now being generated upstream
        proxy.stop()  # the local server "dies": its connections drop

    killer = threading.Thread(target=kill_once_the_request_is_in_flight)
    try:
        with openai_stub(Reply(body=chat_completion(GOOD))) as paid:
            local = EndpointFactory.create(
                base_url=proxy.base_url, timeout_seconds=120, max_output_tokens=96
            )
            setup = two_tier_team("Killed", local, paid_endpoint(paid.base_url), threshold="0")
            killer.start()
            draft = drafted(
                setup, "Please write me a long, detailed answer about your refund policy."
            )
    finally:
        killer.join()
        proxy.stop()
    assert draft.status == Draft.Status.READY
    assert draft.text == GOOD
    dead, ok = draft.attempts.order_by("tier")
    assert (dead.outcome, dead.error_kind) == ("error", "unavailable")
    assert ok.endpoint != local
