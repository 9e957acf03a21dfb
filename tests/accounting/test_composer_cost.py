"""Composer tools' spend in ENCS: a rewrite of the agent's reply is model cost on the message
(drafting.services.composer_rewrite adds it to the draft's total), so ENCS counts it, a
rolled-up day re-sums it, and the cost-by-tier table shows it apart from the drafts' tiers."""

from __future__ import annotations

from decimal import Decimal

from accounting.dashboard import tier_costs
from accounting.engine import money_str
from accounting.models import RolledUpDay
from accounting.selectors import encs_report
from accounting.services import facts_rollup
from drafting import services as drafting
from drafting.models import CascadePolicy, DraftAttempt
from tests.accounting.factories import DAY, OCTOBER, case_study_settings, drafted
from tests.factories import EndpointFactory, PolicyFactory, TeamFactory, TierFactory, UserFactory
from tests.http_stub import Reply, chat_completion, openai_stub


def composer_policy(base_url: str) -> CascadePolicy:
    case_study_settings()
    policy = PolicyFactory.create(team=TeamFactory.create(name="Composer"))
    # A local tier at $0.80 per GPU hour: the rewrite costs its GPU seconds.
    TierFactory.create(policy=policy, endpoint=EndpointFactory.create(base_url=base_url))
    return policy


def test_a_rewrites_cost_counts_in_the_model_cost_and_makes_its_day_stale(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("Shorter."))) as stub:
        policy = composer_policy(stub.base_url)
        draft = drafted(policy, kind="use", handle="30", cost="0.002")
        facts_rollup(day=DAY)
        assert encs_report(OCTOBER)["model_cost_usd"] == money_str(Decimal("0.002"))
        result = drafting.composer_rewrite(
            team=policy.team,
            message_id=draft.message_id,
            tool="shorten",
            text="A longer reply than it needs to be.",
            user=UserFactory.create(),
        )
    assert result.error == "" and result.cost > 0
    assert RolledUpDay.objects.get(day=DAY).stale is True
    report = encs_report(OCTOBER)
    assert report["model_cost_usd"] == money_str(Decimal("0.002") + result.cost)
    # ENCS = savings − model cost: the rewrite's cost is taken off.
    assert Decimal(report["encs_usd"]) == Decimal(report["labor_savings_usd"]) - Decimal(
        report["model_cost_usd"]
    )


def test_cost_by_tier_shows_composer_attempts_apart(db: None) -> None:
    policy = composer_policy("http://127.0.0.1:9/v1")
    draft = drafted(policy, kind="use", handle="30", cost="0.003")
    endpoint = policy.tiers.get().endpoint
    for purpose, cost in (("", "0.002"), ("shorten", "0.001")):
        DraftAttempt.objects.create(
            draft=draft,
            tier=1,
            endpoint=endpoint,
            purpose=purpose,
            cost=Decimal(cost),
            outcome="ok",
            started_at=draft.created_at,
        )
    rows = tier_costs(OCTOBER)
    assert [(r.label, r.attempts, r.cost_usd) for r in rows] == [
        ("Tier 1", 1, Decimal("0.0020000000")),
        ("Tier 1 (composer tools)", 1, Decimal("0.0010000000")),
    ]
