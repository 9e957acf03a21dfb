"""Routing before generation: the decision (skip a tier only when a later one is expected to be
worth more, never the last), the cascade recording a skip with its estimates and asking no
provider for it, the plain cascade whenever no router is in force, the exploration that still
asks a skipped tier, and skips kept out of every error count."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounting.dashboard import tier_costs
from accounting.facts import Scope
from drafting import services as drafting
from drafting.engine.breaker import breaker
from drafting.engine.embeddings import embedder
from drafting.engine.routing import RouteValues, TierEstimate, route
from drafting.learning import routing
from drafting.learning.routing import RouterModel, TierModel
from drafting.models import CascadePolicy, Draft, DraftAttempt, TrainedClassifier
from drafting.observability import drafting_metrics
from tests.drafting.factories import cheap_endpoint, drafted, paid_endpoint, two_tier_team
from tests.factories import TeamSetup, TierFactory
from tests.http_stub import Reply, StubServer, chat_completion, openai_stub

CHEAP = "Maybe try again later."
STRONG = "Thanks for reaching out! I issued your refund today; it arrives within 5 business days."
Stubs = tuple[TeamSetup, StubServer, StubServer]
VALUES = RouteValues(good_draft=Decimal("0.50"), wait_per_second=Decimal("0.01"))


def estimate(tier: int, p: float, cost: str = "0", latency: float = 0.0) -> TierEstimate:
    return TierEstimate(tier=tier, p_good=p, cost=Decimal(cost), latency_s=latency)


# --- The decision -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("estimates", "skip", "best"),
    [
        # V = 0.5 p − cost − 0.01 latency: tier 1 0.05 − 0.0001 − 0.01, tier 2 0.45 − 0.002 − 0.03
        ([estimate(1, 0.1, "0.0001", 1), estimate(2, 0.9, "0.002", 3)], True, 2),
        # Tier 1 as likely to be good, and cheaper and faster: asked.
        ([estimate(1, 0.9, "0.0001", 1), estimate(2, 0.9, "0.002", 3)], False, 1),
        # A stronger tier that costs more than its extra chance is worth: tier 1 asked.
        ([estimate(1, 0.6, "0.0001", 1), estimate(2, 0.7, "0.2", 3)], False, 1),
        # Equal value: the cascade's order stands.
        ([estimate(1, 0.5), estimate(2, 0.5)], False, 1),
        # The best of several later tiers is the one named: tier 3 alone 0.4; tier 2 next
        # 0.3 − 0.1 + 0.4 × 0.4 = 0.36; tier 1 next 0.05 − 0.02 + 0.9 × 0.4 = 0.39.
        ([estimate(1, 0.1, "0", 2), estimate(2, 0.6, "0.1"), estimate(3, 0.8)], True, 3),
        # Free tiers are all worth asking: each keeps the later ones as its fall-back.
        ([estimate(1, 0.1), estimate(2, 0.6), estimate(3, 0.8)], False, 1),
        # Tier 2 alone is worth more (0.448 against 0.2499), but asking tier 1 first with tier 2
        # as the fall-back is worth 0.2499 + 0.5 × 0.448 = 0.4739: not skipped.
        ([estimate(1, 0.5, "0.0001"), estimate(2, 0.9, "0.002")], False, 1),
    ],
)
def test_a_tier_is_skipped_only_when_a_later_one_is_expected_to_be_worth_more(
    estimates: list[TierEstimate], skip: bool, best: int
) -> None:
    decision = route(estimates, values=VALUES)
    assert decision.skip is skip
    assert decision.best == best


def test_the_only_remaining_tier_is_never_skipped() -> None:
    assert route([estimate(3, 0.0, "9", 60)], values=VALUES).skip is False
    with pytest.raises(ValueError, match="at least one"):
        route([], values=VALUES)


def test_the_record_says_why_with_every_estimate() -> None:
    decision = route([estimate(1, 0.1, "0.0001", 1), estimate(2, 0.9, "0.002", 3)], values=VALUES)
    record = decision.record()
    assert record["decision"] == "skip"
    assert record["tier"] == 1 and record["best"] == 2
    assert record["good_draft_usd"] == "0.50"
    assert record["estimates"] == [
        {
            "tier": 1,
            "p_good": 0.1,
            "cost_usd": "0.0001",
            "latency_s": 1.0,
            "value_usd": 0.0399,
            "if_asked_next_usd": 0.4161,  # 0.0399 + 0.9 × 0.418
        },
        {
            "tier": 2,
            "p_good": 0.9,
            "cost_usd": "0.002",
            "latency_s": 3.0,
            "value_usd": 0.418,
            "if_asked_next_usd": 0.418,
        },
    ]


# --- The cascade with a router in force --------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_routers() -> Iterator[None]:
    routing.active_routers.clear()
    yield
    routing.active_routers.clear()


def router_for(
    setup: TeamSetup,
    p_good: tuple[float, ...],
    *,
    active: bool = True,
    embedding_model: str | None = None,
) -> TrainedClassifier:
    """A stored router version for the policy with fixed estimates (base rates, no PLR): each
    tier dearer and slower than the one before."""
    tiers = list(setup.policy.tiers.order_by("position"))
    model = RouterModel(
        tiers=[
            TierModel(
                position=tier.position,
                endpoint_id=tier.endpoint_id,
                base_rate=p,
                cost=Decimal(cost),
                latency_s=latency,
                n_labels=40,
            )
            for tier, p, cost, latency in zip(
                tiers, p_good, ("0.0001", "0.002", "0.01"), (1.0, 3.0, 5.0), strict=False
            )
        ],
        intents=[],
        values=VALUES,
    )
    using = embedder()
    assert using is not None
    return routing._store(
        policy=setup.policy,
        model=model,
        embedding_model=embedding_model or using.name,
        n_train=40,
        metrics={},
        activate=active,
        trained_by=None,
    )


@pytest.fixture
def stubs() -> Iterator[Stubs]:
    """A two-tier team whose cheap tier 1 would stop the cascade (confident draft, threshold
    0.5): the plain cascade never asks tier 2."""
    with (
        openai_stub(Reply(body=chat_completion(CHEAP, logprob=-0.01))) as cheap,
        openai_stub(Reply(body=chat_completion(STRONG, logprob=-0.01))) as strong,
    ):
        setup = two_tier_team(
            "Routing",
            cheap_endpoint(cheap.base_url),
            paid_endpoint(strong.base_url),
            threshold="0.5",
        )
        yield setup, cheap, strong


def test_a_tier_expected_to_fail_is_skipped_recorded_with_its_estimates_and_not_called(
    db: None, stubs: Stubs
) -> None:
    setup, cheap, _strong = stubs
    router = router_for(setup, (0.1, 0.9))

    draft = drafted(setup)

    assert draft.status == Draft.Status.READY
    assert draft.text == STRONG
    assert cheap.requests == []
    skipped, asked = draft.attempts.order_by("tier")
    assert skipped.tier == 1
    assert skipped.outcome == DraftAttempt.Outcome.ERROR
    assert skipped.error_kind == DraftAttempt.ErrorKind.ROUTED
    assert skipped.cost == 0 and skipped.tokens_in == 0
    assert skipped.routing is not None
    assert skipped.routing["router"] == router.pk
    assert skipped.routing["decision"] == "skip" and skipped.routing["best"] == 2
    assert [e["p_good"] for e in skipped.routing["estimates"]] == [0.1, 0.9]
    assert asked.tier == 2 and asked.outcome == DraftAttempt.Outcome.OK
    assert draft.total_cost == asked.cost
    # A skip is no failure of the endpoint: its circuit stays closed.
    assert skipped.endpoint_id is not None
    assert breaker().is_open(skipped.endpoint_id) is False


def test_a_tier_expected_to_do_well_is_asked_and_keeps_the_estimates(
    db: None, stubs: Stubs
) -> None:
    setup, _cheap, strong = stubs
    router_for(setup, (0.9, 0.9))

    draft = drafted(setup)

    assert draft.text == CHEAP
    assert strong.requests == []
    [attempt] = draft.attempts.all()
    assert attempt.outcome == DraftAttempt.Outcome.OK
    assert attempt.routing is not None and attempt.routing["decision"] == "ask"


@pytest.mark.parametrize("why", ["inactive", "switched_off", "other_embedder", "tiers_changed"])
def test_the_plain_cascade_runs_when_no_router_is_in_force(
    db: None, stubs: Stubs, why: str
) -> None:
    setup, cheap, strong = stubs
    router_for(
        setup,
        (0.1, 0.9),
        active=why != "inactive",
        embedding_model="other:model:384" if why == "other_embedder" else None,
    )
    if why == "switched_off":
        CascadePolicy.objects.filter(pk=setup.policy.pk).update(routing=False)
        routing.active_routers.clear()  # an update() sends no signal; other processes: seconds
    if why == "tiers_changed":
        tier = setup.policy.tiers.get(position=2)
        tier.endpoint = paid_endpoint(strong.base_url)
        tier.save()

    draft = drafted(setup)

    assert draft.text == CHEAP
    assert len(cheap.requests) == 1
    [attempt] = draft.attempts.all()
    assert attempt.tier == 1 and attempt.routing is None


def test_a_later_tier_cooling_down_is_no_alternative(db: None, stubs: Stubs) -> None:
    setup, cheap, _strong = stubs
    router_for(setup, (0.1, 0.9))
    second = setup.policy.tiers.get(position=2)
    breaker().record_failure(second.endpoint_id, "permanent")  # one auth error opens it
    assert breaker().is_open(second.endpoint_id)

    draft = drafted(setup)

    assert draft.text == CHEAP
    assert len(cheap.requests) == 1
    assert draft.attempts.filter(error_kind=DraftAttempt.ErrorKind.ROUTED).count() == 0


def test_the_decision_is_made_again_after_each_answer(db: None) -> None:
    """Tier 1 is expected to do best and is asked; its draft falls short of the threshold; of
    the two tiers left, tier 3 is expected to be worth more: tier 2 is routed past."""
    with (
        openai_stub(Reply(body=chat_completion(CHEAP, logprob=-3.0))) as cheap,
        openai_stub(Reply(body=chat_completion(STRONG))) as middle,
        openai_stub(Reply(body=chat_completion(STRONG))) as strong,
    ):
        setup = two_tier_team(
            "Again", cheap_endpoint(cheap.base_url), paid_endpoint(middle.base_url), threshold="0.5"
        )
        TierFactory.create(policy=setup.policy, position=3, endpoint=paid_endpoint(strong.base_url))
        router_for(setup, (0.95, 0.1, 0.9))
        draft = drafted(setup)

    assert draft.text == STRONG
    assert (len(cheap.requests), len(middle.requests), len(strong.requests)) == (1, 0, 1)
    first, second, third = draft.attempts.order_by("tier")
    assert first.outcome == DraftAttempt.Outcome.OK
    assert first.routing is not None and first.routing["decision"] == "ask"
    assert second.error_kind == DraftAttempt.ErrorKind.ROUTED
    assert second.routing is not None
    assert [e["tier"] for e in second.routing["estimates"]] == [2, 3]  # the tiers left
    assert third.outcome == DraftAttempt.Outcome.OK and third.routing is None  # the last


# --- Exploration and the error counts ----------------------------------------------------------


def test_exploration_asks_the_tier_the_router_skipped(
    db: None, stubs: Stubs, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, cheap, _strong = stubs
    setup.policy.explore_share = Decimal("1")
    setup.policy.save()
    router_for(setup, (0.1, 0.9))
    rung: list[int] = []
    monkeypatch.setattr(drafting, "_enqueue_explore", rung.append)
    draft = drafted(setup)
    assert cheap.requests == []

    asked = drafting.draft_explore(draft_id=draft.pk)

    assert asked == 1
    assert len(cheap.requests) == 1
    explored = draft.attempts.get(tier=1, exploratory=True)
    assert explored.outcome == DraftAttempt.Outcome.OK and explored.text == CHEAP
    assert drafting.draft_explore(draft_id=draft.pk) == 0  # asked once only
    draft.refresh_from_db()
    assert draft.text == STRONG


def test_routed_skips_count_as_no_endpoint_error_nor_escalation(db: None, stubs: Stubs) -> None:
    setup, _cheap, _strong = stubs
    router_for(setup, (0.1, 0.9))
    drafted(setup)

    samples = {
        (family.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in drafting_metrics()
        for sample in family.samples
    }
    assert not any(name == "csbot_provider_errors" for name, _ in samples)
    # The steps past the first tier count calls: tier 2's, not the skip.
    steps = {
        dict(labels)["to_tier"]: value
        for (name, labels), value in samples.items()
        if name == "csbot_cascade_escalations"
    }
    assert steps == {"2": 1}
    # The attempt itself is on record, by its kind.
    routed = [
        dict(labels)
        for name, labels in samples
        if name == "csbot_draft_attempts" and dict(labels)["error_kind"] == "routed"
    ]
    assert [r["tier"] for r in routed] == ["1"]
    today = timezone.localdate()
    rows = tier_costs(
        Scope(
            start=today - timedelta(days=1),
            end=today + timedelta(days=1),
            team_ids=(setup.team.pk,),
        )
    )
    assert [(row.tier, row.attempts, row.ok) for row in rows] == [(2, 1, 1)]
