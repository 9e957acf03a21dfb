"""ENCS from stored rows: a scenario worked out by hand, the baseline switch, the rollup, and a
hypothesis property (totals = sum of groups; rollup = recomputation from raw rows)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounting.engine import GROUP_BY, SettingsBook, money_str, totals, whatif
from accounting.facts import FACT_FIELDS, Fact, raw_facts, scope_facts, without_agents
from accounting.models import AccountingSettings, DailyFact, FixedCost, RolledUpDay
from accounting.selectors import encs_report
from accounting.services import facts_rollup, facts_rollup_due
from csbot.models import Message
from drafting.models import (
    AgentAction,
    CascadePolicy,
    CascadeTier,
    Draft,
    DraftAttempt,
    Intent,
    MessageIntent,
)
from drafting.signals import attempts_added, intents_changed
from tests.accounting.factories import DAY, OCTOBER, at, case_study_settings, drafted, scenario
from tests.factories import (
    AgentActionFactory,
    DraftAttemptFactory,
    EndpointFactory,
    MessageFactory,
    PolicyFactory,
    TeamFactory,
    UserFactory,
)


@pytest.fixture
def policy(db: None) -> CascadePolicy:
    case_study_settings()
    return PolicyFactory.create(team=TeamFactory.create(name="Hand"))


def test_a_small_scenario_matches_the_hand_computation(policy: CascadePolicy) -> None:
    scenario(policy)
    report = encs_report(OCTOBER)
    # Savings at R = $0.01/s, T = 120 s (2 held-out replies < 3: the default):
    #   use 0.01 × (120 − 30) = 0.90, edit 0.01 × 60 = 0.60, ignore 0.01 × (−30) = −0.30
    assert report["baseline_source"] == "default" and report["baseline_seconds"] == "120.000"
    assert report["labor_savings_usd"] == "1.2000000000"
    assert report["model_cost_usd"] == "0.0100000000"
    assert report["encs_usd"] == "1.1900000000"
    assert report["messages"] == 6 and report["drafts"] == 4
    assert report["encs_per_message_usd"] == "0.1983333333"  # 1.19 / 6
    assert report["actions"] == {"use": 1, "edit": 1, "ignore": 1, "none": 2}
    # P(a) over all 4 drafts (the unanswered one too): the decomposition's P(a) below.
    assert report["shares"] == {"use": "0.2500", "edit": "0.2500", "ignore": "0.2500"}
    assert report["handle_seconds"]["use"] == "30.000"
    assert report["handle_seconds"]["held_out"] == "120.000"
    # P(a)·S_a over the 4 drafts (the unanswered one saves 0) − C = 0.2975 per draft.
    decomposition = report["decomposition"]
    assert decomposition["p"] == {
        "use": "0.2500",
        "edit": "0.2500",
        "ignore": "0.2500",
        "none": "0.0000",
        "unused": "0.2500",
        "outlier": "0.0000",
    }
    assert decomposition["c_usd"] == "0.0025000000"
    assert decomposition["encs_per_draft_usd"] == "0.2975000000"
    assert decomposition["encs_usd"] == report["encs_usd"]
    # Against the all-paid baseline: 0.010 + 0.012 + 0.009 + 0.003 (no counterfactual: its cost).
    assert report["all_paid_cost_usd"] == "0.0340000000"
    assert report["cascade_savings_usd"] == "0.0240000000"
    assert report["encs_all_paid_usd"] == "1.1660000000"


def test_the_baseline_switches_to_the_measured_one_with_enough_held_out_replies(
    policy: CascadePolicy,
) -> None:
    scenario(policy)
    drafted(policy, kind="held_out", handle="150")
    report = encs_report(OCTOBER)
    # Held-out mean (100 + 140 + 150) / 3 = 130 s: use 1.00, edit 0.70, ignore −0.20.
    assert report["baseline_source"] == "measured" and report["baseline_seconds"] == "130.000"
    assert report["labor_savings_usd"] == "1.5000000000"
    assert report["encs_usd"] == "1.4900000000"
    # sd = √700, half-width 1.96 × √(700/3) = 29.939…
    baseline = report["baselines"][str(policy.team_id)]
    assert baseline["sample"] == 3
    assert baseline["ci95_seconds"] == ["100.061", "159.939"]


def test_the_agent_rate_in_force_on_the_day_prices_the_saving(policy: CascadePolicy) -> None:
    AccountingSettings.objects.create(
        team=policy.team,
        effective_from=date(2026, 10, 10),
        agent_hourly_usd=Decimal(72),
        default_baseline_seconds=Decimal(120),
        min_holdout_sample=3,
    )
    drafted(policy, kind="use", handle="60", day=date(2026, 10, 9))  # 0.01 × 60 = 0.60
    drafted(policy, kind="use", handle="60", day=date(2026, 10, 10))  # 0.02 × 60 = 1.20
    assert encs_report(OCTOBER)["labor_savings_usd"] == "1.8000000000"


def test_groups_by_model_agent_and_day(policy: CascadePolicy) -> None:
    scenario(policy)
    report = encs_report(OCTOBER, group_by="day")
    assert [g["group"] for g in report["groups"]] == [DAY.isoformat()]
    names = {g["group"] for g in report["by_model"]}
    assert "no draft" in names and len(names) == 2
    endpoint_id = Draft.objects.filter(final_endpoint__isnull=False)[0].final_endpoint_id
    assert endpoint_id is not None
    CascadeTier.objects.create(policy=policy, position=2, endpoint_id=endpoint_id)
    tiers = {g["group"]: g["drafts"] for g in encs_report(OCTOBER, group_by="tier")["groups"]}
    assert tiers == {"tier 2": 3, "no draft": 1}


def test_the_rollup_gives_what_the_raw_rows_give_and_a_late_action_makes_it_stale(
    policy: CascadePolicy,
) -> None:
    scenario(policy)
    raw = encs_report(OCTOBER, group_by="model")
    assert facts_rollup(day=DAY) > 0
    assert DailyFact.objects.filter(day=DAY).exists()
    assert encs_report(OCTOBER, group_by="model") == raw
    # An agent answers one of that day's drafts after the rollup: the day is read raw again.
    open_draft = drafted(policy, kind=None, cost="0.001")
    assert scope_facts(OCTOBER) != raw_facts(OCTOBER.start, OCTOBER.end)
    conversation = open_draft.message.conversation
    AgentAction.objects.create(
        draft=open_draft,
        inbound_message=open_draft.message,
        outbound_message=MessageFactory.create(
            conversation=conversation, direction=Message.Direction.OUTBOUND
        ),
        agent=UserFactory.create(),
        kind="none",
        final_text="Written unaided",
        shown_at=at(DAY),
        acted_at=datetime.now(tz=UTC),
        handle_seconds=Decimal(10),
    )
    assert sorted(scope_facts(OCTOBER), key=repr) == sorted(
        raw_facts(OCTOBER.start, OCTOBER.end), key=repr
    )


def test_an_action_posted_after_the_rollup_with_an_earlier_acted_at_still_makes_it_stale(
    policy: CascadePolicy,
) -> None:
    """An integration sends yesterday's actions late, with the times they happened: what makes
    the day stale is that the row was written after the rollup, not when the agent acted."""
    scenario(policy)
    open_draft = drafted(policy, kind=None, cost="0.001")
    facts_rollup(day=DAY)
    assert RolledUpDay.objects.get(day=DAY).stale is False
    AgentActionFactory.create(
        draft=open_draft,
        inbound_message=open_draft.message,
        kind="none",
        final_text="Written unaided",
        shown_at=at(DAY),
        acted_at=at(DAY, hour=13),  # long before the rollup ran
        handle_seconds=Decimal(3600),
    )
    assert RolledUpDay.objects.get(day=DAY).stale is True
    assert sorted(scope_facts(OCTOBER), key=repr) == sorted(
        raw_facts(OCTOBER.start, OCTOBER.end), key=repr
    )
    assert facts_rollup_due()[0] == DAY  # stale days first: the next rollup sums it again
    assert RolledUpDay.objects.get(day=DAY).stale is False
    assert sorted(scope_facts(OCTOBER), key=repr) == sorted(
        raw_facts(OCTOBER.start, OCTOBER.end), key=repr
    )


def test_a_reclassified_message_makes_its_day_stale(policy: CascadePolicy) -> None:
    billing = Intent.objects.create(team=policy.team, name="billing")
    refunds = Intent.objects.create(team=policy.team, name="refunds")
    draft = drafted(policy, kind="use", handle="30", cost="0.002", intent=billing)
    facts_rollup(day=DAY)
    MessageIntent.objects.filter(message=draft.message).get().delete()
    MessageIntent.objects.create(message=draft.message, intent=refunds, confidence=Decimal("0.8"))
    groups = {g["group"]: g["drafts"] for g in encs_report(OCTOBER, group_by="intent")["groups"]}
    assert groups == {"refunds": 1}
    # A bulk write sends drafting's own signal; accounting marks the day the same way.
    facts_rollup(day=DAY)
    intents_changed.send(sender=MessageIntent, message_ids=[draft.message_id])
    assert RolledUpDay.objects.get(day=DAY).stale is True


def test_attempts_added_after_the_rollup_make_the_day_stale(policy: CascadePolicy) -> None:
    """Exploration asks a finished draft's skipped tiers later and adds their cost to it."""
    draft = drafted(policy, kind="use", handle="30", cost="0.002")
    facts_rollup(day=DAY)
    DraftAttemptFactory.create(draft=draft, tier=2, exploratory=True, cost=Decimal("0.01"))
    Draft.objects.filter(pk=draft.pk).update(total_cost=Decimal("0.012"))
    attempts_added.send(sender=DraftAttempt, draft_ids=[draft.pk])
    assert RolledUpDay.objects.get(day=DAY).stale is True
    assert encs_report(OCTOBER)["model_cost_usd"] == money_str(Decimal("0.012"))


def test_rolled_up_rows_read_back_in_the_facts_field_order(policy: CascadePolicy) -> None:
    assert tuple(field.name for field in dataclasses.fields(Fact)) == FACT_FIELDS
    drafted(policy, kind="edit", handle="60", cost="0.004", agent=UserFactory.create())
    raw = raw_facts(OCTOBER.start, OCTOBER.end)
    facts_rollup(day=DAY)
    assert scope_facts(OCTOBER) == raw
    assert scope_facts(OCTOBER, by_agent=False) == without_agents(raw)


def test_encs_per_intent(policy: CascadePolicy) -> None:
    billing = Intent.objects.create(team=policy.team, name="billing")
    endpoint = EndpointFactory.create()
    # R = $0.01/s, T = 120 s: a use after 30 s saves 0.90, an ignore after 150 s loses 0.30.
    drafted(policy, kind="use", handle="30", cost="0.002", endpoint=endpoint, intent=billing)
    drafted(policy, kind="ignore", handle="150", cost="0.003", endpoint=endpoint, intent=billing)
    drafted(policy, kind="edit", handle="60", cost="0.004", endpoint=endpoint)
    report = encs_report(OCTOBER, group_by="intent")
    groups = {g["group"]: g for g in report["groups"]}
    assert groups["billing"]["drafts"] == 2
    assert groups["billing"]["encs_usd"] == "0.5950000000"  # 0.90 − 0.30 − 0.005
    assert groups["(no intent)"]["encs_usd"] == "0.5960000000"  # 0.60 − 0.004
    assert report["encs_usd"] == "1.1910000000"
    assert encs_report(OCTOBER)["by_intent"] == report["groups"]
    facts_rollup(day=DAY)
    assert encs_report(OCTOBER, group_by="intent") == report


def test_break_even_against_fixed_costs(policy: CascadePolicy) -> None:
    scenario(policy)  # October: ENCS 1.19 over 6 messages
    FixedCost.objects.create(
        name="Integration",
        kind="one_off",
        amount_usd=Decimal(1),
        policy=policy,
        starts_on=date(2026, 10, 1),
    )
    FixedCost.objects.create(
        name="GPU",
        kind="monthly",
        amount_usd=Decimal("0.5"),
        policy=policy,
        starts_on=date(2026, 10, 1),
    )
    [entry] = encs_report(OCTOBER)["break_even"]["targets"]
    assert (entry["target"], entry["id"]) == ("policy", policy.pk)
    assert entry["fixed_costs_usd"] == "1.5000000000"
    assert entry["cumulative_net_savings_usd"] == "1.1900000000"
    assert entry["paid_back"] is False
    # Still to recover 0.31 at 1.19 − 0.50 = 0.69 a month.
    assert entry["months_to_pay_back"] == 0.4
    # A year costs 12 × 0.50 + 1.00 = 7.00; at 1.19 / 6 a message that is 35.3 → 36 messages.
    assert entry["break_even_messages_per_year"] == 36
    assert entry["series"] == [
        {
            "month": "2026-10",
            "cumulative_net_savings_usd": "1.1900000000",
            "cumulative_fixed_costs_usd": "1.5000000000",
        }
    ]


def test_an_unsettled_day_is_not_rolled_up(db: None) -> None:
    with pytest.raises(ValueError, match="not settled"):
        facts_rollup(day=datetime.now(tz=UTC).date())


def test_whatif_reproduces_the_case_study_arithmetic() -> None:
    result = whatif(
        agent_hourly_usd=Decimal(36),
        baseline_seconds=Decimal(120),
        handle_seconds={"use": Decimal(30), "edit": Decimal(60), "ignore": Decimal(150)},
        shares={"use": Decimal("0.5"), "edit": Decimal("0.3"), "ignore": Decimal("0.2")},
        cost_per_response_usd=Decimal("0.011"),
        messages_per_year=500_000,
    )
    # 0.5 × 0.90 + 0.3 × 0.60 + 0.2 × (−0.30) − 0.011 = 0.559
    assert result.encs_per_message_usd == Decimal("0.5590000000")
    assert result.as_json()["encs_per_year_usd"] == "279500.0000000000"


# --- Property: totals = sum of groups; rollup = raw ------------------------------------------

draft_specs = st.lists(
    st.tuples(
        st.sampled_from(["use", "edit", "ignore", "none", None, "held_out"]),
        st.integers(min_value=0, max_value=900),  # handle seconds
        st.integers(min_value=0, max_value=5000),  # cost in 1e-6 $
        st.integers(min_value=0, max_value=2),  # day offset
        st.integers(min_value=0, max_value=1),  # team
        st.integers(min_value=0, max_value=2),  # agent
        st.sampled_from([None, "billing", "delivery"]),  # intent
        st.integers(min_value=-30, max_value=60),  # seconds waited (< 0: ready first)
    ),
    min_size=1,
    max_size=14,
)


@pytest.mark.slow
@pytest.mark.django_db
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=draft_specs)
def test_totals_are_the_sum_of_groups_and_the_rollup_equals_recomputation(
    specs: list[tuple[Any, ...]],
) -> None:
    with transaction.atomic():
        AccountingSettings.objects.create(
            effective_from=date(2026, 1, 1),
            agent_hourly_usd=Decimal("41.5"),
            default_baseline_seconds=Decimal("97.5"),
            min_holdout_sample=2,
        )
        policies = [PolicyFactory.create(), PolicyFactory.create()]
        agents = [UserFactory.create() for _ in range(3)]
        endpoint = EndpointFactory.create()
        intents = {
            (team, name): Intent.objects.create(team=policy.team, name=name)
            for team, policy in enumerate(policies)
            for name in ("billing", "delivery")
        }
        for kind, handle, cost, offset, team, agent, intent, wait in specs:
            drafted(
                policies[team],
                kind=kind,
                handle=str(handle),
                cost=str(Decimal(cost) / 1_000_000),
                counterfactual=str(Decimal(cost) / 500_000) if cost % 2 else None,
                day=DAY + timedelta(days=offset),
                agent=agents[agent],
                endpoint=endpoint,
                intent=intents[team, intent] if intent else None,
                wait=str(wait),
            )
        scope = OCTOBER
        book = SettingsBook.load()
        facts = raw_facts(scope.start, scope.end)
        for label in (
            lambda f: str(f.team_id),
            lambda f: f.day.isoformat(),
            lambda f: str(f.agent_id),
            lambda f: f"{f.endpoint_id}/{f.source}",
            lambda f: str(f.intent_id),
        ):
            total, groups, _ = totals(facts, scope=scope, book=book, label=label)
            assert sum(g.cost for g in groups.values()) == total.cost
            assert sum(g.counterfactual_cost for g in groups.values()) == total.counterfactual_cost
            assert sum(g.wait_seconds for g in groups.values()) == total.wait_seconds
            assert sum((g.wait_cost() for g in groups.values()), Fraction(0)) == total.wait_cost()
            for kind in total.drafts:
                assert sum(g.drafts[kind] for g in groups.values()) == total.drafts[kind]
                assert sum((g.saving(kind) for g in groups.values()), Fraction(0)) == total.saving(
                    kind
                )
        # Decomposition = the per-draft sum, exactly.
        raw = {group: encs_report(scope, group_by=group) for group in GROUP_BY}
        if raw["team"]["drafts"]:
            assert raw["team"]["decomposition"]["encs_usd"] == raw["team"]["encs_usd"]
        expected_savings = (
            sum((_hand_saving(kind, handle) for kind, handle, *_ in specs), Fraction(0))
            if all(kind != "held_out" for kind, *_ in specs)
            else None
        )
        if expected_savings is not None:  # no held-out sample: T is the default everywhere
            assert raw["team"]["labor_savings_usd"] == money_str(expected_savings)
        # The wait: a part of the acted drafts' handle time (capped at it), priced at R.
        expected_wait = sum(
            (_hand_wait_cost(kind, handle, wait) for kind, handle, *_, wait in specs), Fraction(0)
        )
        assert raw["team"]["wait_cost_usd"] == money_str(expected_wait)
        for offset in range(3):
            facts_rollup(day=DAY + timedelta(days=offset))
        for group in GROUP_BY:
            assert encs_report(scope, group_by=group) == raw[group]
        # The agent-free totals (what every report but a per-agent one reads) = raw, summed.
        assert sorted(scope_facts(scope, by_agent=False), key=repr) == sorted(
            without_agents(raw_facts(scope.start, scope.end)), key=repr
        )
        transaction.set_rollback(True)


def _hand_wait_cost(kind: str | None, handle: int, wait: int) -> Fraction:
    if kind not in ("use", "edit", "ignore"):
        return Fraction(0)
    return Fraction(Decimal("41.5")) * min(max(wait, 0), handle) / 3600


def _hand_saving(kind: str | None, handle: int) -> Fraction:
    if kind not in ("use", "edit", "ignore"):
        return Fraction(0)
    return Fraction(Decimal("41.5")) * (Fraction(Decimal("97.5")) - handle) / 3600
