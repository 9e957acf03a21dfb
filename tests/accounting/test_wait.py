"""The agent's wait for drafts (issue 18): seconds from opening the conversation to the draft
being ready, priced at the agent rate, reported as a part of ENCS (not a second deduction),
grouped like every ENCS figure, rolled up, shown on the dashboard and in the reports; and the
selectors the router prices a slow tier with."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from django.test import Client

from accounting.engine import SettingsBook, money_str, totals
from accounting.facts import Scope, raw_facts, scope_facts, without_agents
from accounting.figures import EncsReport, Figures
from accounting.models import AccountingSettings, DailyTotal
from accounting.rendering import report_html
from accounting.reports import report_csv
from accounting.selectors import encs_figures, encs_report
from accounting.services import facts_rollup
from accounting.wait import wait_stats
from drafting import selectors as drafting_selectors
from drafting.models import CascadePolicy, CascadeTier, Draft, DraftAttempt, ModelEndpoint
from drafting.selectors import endpoint_latency_p50, wait_estimates, waiting_share
from tests.accounting.factories import DAY, OCTOBER, at, case_study_settings, drafted
from tests.factories import (
    AgentProfileFactory,
    EndpointFactory,
    PolicyFactory,
    TeamFactory,
)


@pytest.fixture
def policy(db: None) -> CascadePolicy:
    case_study_settings()  # R = $36/h = $0.01/s, T_baseline 120 s
    return PolicyFactory.create(team=TeamFactory.create(name="Hand"))


@pytest.fixture
def endpoints(policy: CascadePolicy) -> tuple[ModelEndpoint, ModelEndpoint]:
    local, paid = EndpointFactory.create(name="local"), EndpointFactory.create(name="paid")
    CascadeTier.objects.create(policy=policy, position=1, endpoint=local)
    CascadeTier.objects.create(policy=policy, position=2, endpoint=paid)
    return local, paid


def waiting_scenario(policy: CascadePolicy, local: ModelEndpoint, paid: ModelEndpoint) -> None:
    """October 5th by hand, R = $0.01/s, T = 120 s:
    - used (local): opened 12 s before ready, replied 30 s after opening: saves 0.90, of
      which 0.12 went to waiting;
    - edited (local): ready 5 s before it was opened: no wait; saves 0.60;
    - ignored (paid): opened 20 s before ready, 150 s in all: loses 0.30, 0.20 of it waiting;
    - ready, opened 8 s early, never answered: cost, no labour measured, so no wait either.
    Model cost 0.002 + 0.004 + 0.001 + 0.003 = 0.010: ENCS = 1.20 − 0.010 = 1.19."""
    drafted(policy, kind="use", handle="30", cost="0.002", endpoint=local, wait="12")
    drafted(policy, kind="edit", handle="60", cost="0.004", endpoint=local, wait="-5")
    drafted(policy, kind="ignore", handle="150", cost="0.001", endpoint=paid, wait="20")
    drafted(policy, kind=None, failed=False, cost="0.003", endpoint=local, wait="8")


def test_a_wait_of_12_seconds_costs_the_agent_rate_and_a_draft_ready_first_costs_none(
    policy: CascadePolicy, endpoints: tuple[ModelEndpoint, ModelEndpoint]
) -> None:
    waiting_scenario(policy, *endpoints)
    report = encs_report(OCTOBER)
    assert report["waited_drafts"] == 2  # the edit was ready first; nobody answered the 4th
    assert report["wait_seconds"] == "32.000"
    assert report["wait_cost_usd"] == "0.3200000000"  # $0.01/s × (12 + 20) s
    assert report["encs_usd"] == "1.1900000000"  # unchanged: the wait was always inside
    assert report["encs_if_instant_usd"] == "1.5100000000"  # ENCS + the wait
    assert report["decomposition"]["w_usd"] == "0.0800000000"  # 0.32 over 4 drafts


def test_the_wait_is_grouped_by_model_and_by_tier(
    policy: CascadePolicy, endpoints: tuple[ModelEndpoint, ModelEndpoint]
) -> None:
    waiting_scenario(policy, *endpoints)
    by_model = {g["group"]: g for g in encs_report(OCTOBER, group_by="model")["groups"]}
    assert (by_model["local"]["waited_drafts"], by_model["local"]["wait_cost_usd"]) == (
        1,
        "0.1200000000",
    )
    assert (by_model["paid"]["waited_drafts"], by_model["paid"]["wait_cost_usd"]) == (
        1,
        "0.2000000000",
    )
    by_tier = {g["group"]: g for g in encs_report(OCTOBER, group_by="tier")["groups"]}
    assert by_tier["tier 1"]["wait_seconds"] == "12.000"
    assert by_tier["tier 2"]["wait_seconds"] == "20.000"
    assert by_tier["tier 2"]["encs_if_instant_usd"] == money_str(
        Decimal("-0.30") - Decimal("0.001") + Decimal("0.20")
    )


def test_the_wait_is_priced_at_the_agent_rate_in_force_on_the_drafts_day(
    policy: CascadePolicy, endpoints: tuple[ModelEndpoint, ModelEndpoint]
) -> None:
    AccountingSettings.objects.create(
        effective_from=DAY + timedelta(days=1),
        agent_hourly_usd=Decimal(72),
        default_baseline_seconds=Decimal(120),
        min_holdout_sample=3,
    )
    local, _paid = endpoints
    drafted(policy, kind="use", handle="30", endpoint=local, wait="10")
    drafted(policy, kind="use", handle="30", endpoint=local, wait="10", day=DAY + timedelta(1))
    assert encs_report(OCTOBER)["wait_cost_usd"] == "0.3000000000"  # 10 s × $0.01 + × $0.02


def test_a_reply_before_the_draft_was_ready_waited_only_until_the_reply(
    policy: CascadePolicy, endpoints: tuple[ModelEndpoint, ModelEndpoint]
) -> None:
    """The wait is a part of the handle time: it is capped at it."""
    drafted(policy, kind="ignore", handle="5", endpoint=endpoints[0], wait="12")
    (fact,) = raw_facts(OCTOBER.start, OCTOBER.end)
    assert (fact.waited, fact.wait_seconds) == (1, Decimal("5.000"))


def test_a_draft_no_console_showed_has_no_wait(
    policy: CascadePolicy, endpoints: tuple[ModelEndpoint, ModelEndpoint]
) -> None:
    """An action recorded through the API for a draft no console opened: first_shown_at is
    unknown, so nothing was measured (not the whole handle time, as LEAST(NULL, handle)
    would give)."""
    drafted(policy, kind="ignore", handle="150", endpoint=endpoints[0])
    (fact,) = raw_facts(OCTOBER.start, OCTOBER.end)
    assert (fact.waited, fact.wait_seconds) == (0, Decimal("0.000"))


def test_outliers_and_held_out_replies_have_no_wait_in_encs(
    policy: CascadePolicy, endpoints: tuple[ModelEndpoint, ModelEndpoint]
) -> None:
    drafted(policy, kind="use", handle="99999", endpoint=endpoints[0], wait="40")  # an outlier
    drafted(policy, kind="held_out", handle="100")
    report = encs_report(OCTOBER)
    assert (report["outliers"], report["waited_drafts"], report["wait_cost_usd"]) == (
        1,
        0,
        "0.0000000000",
    )


def test_encs_decomposes_into_encs_if_instant_minus_the_wait_exactly(
    policy: CascadePolicy, endpoints: tuple[ModelEndpoint, ModelEndpoint]
) -> None:
    """labour = R·(n·T − Σ(handle − wait))/3600 − R·Σ wait/3600, so the wait term is a part of
    ENCS, never a second deduction: ENCS = ENCS(instant) − wait cost, to the last digit, in
    total and in every group."""
    local, paid = endpoints
    rate, baseline = Fraction(36), Fraction(120)
    specs = [("use", 31, 7), ("edit", 64, 13), ("ignore", 170, 2), ("use", 12, -3), ("edit", 9, 9)]
    for n, (kind, handle, wait) in enumerate(specs):
        drafted(
            policy,
            kind=kind,
            handle=str(handle),
            cost="0.000137",
            endpoint=local if n % 2 else paid,
            wait=str(wait),
        )
    waits = [max(0, w) for _k, _h, w in specs]
    instant_labour = sum(
        (rate * (baseline - (h - w)) / 3600 for (_k, h, _w), w in zip(specs, waits, strict=True)),
        Fraction(0),
    )
    wait_cost = rate * sum(waits) / 3600
    report = encs_report(OCTOBER, group_by="model")
    assert report["wait_cost_usd"] == money_str(wait_cost)
    assert report["labor_savings_usd"] == money_str(instant_labour - wait_cost)
    assert report["encs_if_instant_usd"] == money_str(
        instant_labour - 5 * Fraction(Decimal("0.000137"))
    )
    book = SettingsBook.load()
    facts = raw_facts(OCTOBER.start, OCTOBER.end)
    total, groups, _ = totals(facts, scope=OCTOBER, book=book, label=lambda f: str(f.endpoint_id))
    for sums in (total, *groups.values()):
        figures = sums.figures()
        encs = sums.labour_savings() - Fraction(sums.cost)
        assert figures.encs_if_instant_usd == Decimal(money_str(encs + sums.wait_cost()))
        assert sums.wait_cost() == Fraction(36) * Fraction(sums.wait_seconds) / 3600
    assert sum(g.wait_cost() for g in groups.values()) == total.wait_cost()


def test_the_rollup_keeps_the_wait(
    policy: CascadePolicy, endpoints: tuple[ModelEndpoint, ModelEndpoint]
) -> None:
    waiting_scenario(policy, *endpoints)
    raw = {group: encs_report(OCTOBER, group_by=group) for group in ("model", "tier", "day")}
    facts_rollup(day=DAY)
    assert DailyTotal.objects.filter(day=DAY, wait_seconds__gt=0).exists()
    for group, report in raw.items():
        assert encs_report(OCTOBER, group_by=group) == report
    assert scope_facts(OCTOBER) == raw_facts(OCTOBER.start, OCTOBER.end)
    assert sorted(scope_facts(OCTOBER, by_agent=False), key=repr) == sorted(
        without_agents(raw_facts(OCTOBER.start, OCTOBER.end)), key=repr
    )


def test_a_report_stored_before_the_wait_reads_back_with_none(
    policy: CascadePolicy, endpoints: tuple[ModelEndpoint, ModelEndpoint]
) -> None:
    waiting_scenario(policy, *endpoints)
    stored = encs_report(OCTOBER)
    for key in ("waited_drafts", "wait_seconds", "wait_cost_usd", "encs_if_instant_usd"):
        del stored[key]
    del stored["decomposition"]["w_usd"]
    read = EncsReport.from_json(stored).totals
    assert (read.waited_drafts, read.wait_cost_usd) == (0, Decimal(0))
    assert read.encs_if_instant_usd == read.encs_usd
    assert Figures.from_json(encs_report(OCTOBER)).wait_cost_usd == Decimal("0.32")


def test_the_spread_of_the_waits_median_and_95th_percentile(
    policy: CascadePolicy, endpoints: tuple[ModelEndpoint, ModelEndpoint]
) -> None:
    waiting_scenario(policy, *endpoints)
    stats = wait_stats(OCTOBER)
    assert (stats.acted, stats.waited, stats.share) == (3, 2, Decimal("0.6667"))
    assert stats.p50_seconds == Decimal("16.000")  # of 12 and 20
    assert stats.p95_seconds == Decimal("19.600")  # 12 + 0.95 × 8
    other_team = Scope(start=OCTOBER.start, end=OCTOBER.end, team_ids=(0,))
    assert wait_stats(other_team).p50_seconds is None


def test_the_dashboard_and_the_reports_show_the_wait(
    client: Client, policy: CascadePolicy, endpoints: tuple[ModelEndpoint, ModelEndpoint]
) -> None:
    waiting_scenario(policy, *endpoints)
    manager = AgentProfileFactory.create(team=policy.team, role="manager").user
    client.force_login(manager)
    html = client.get("/accounting/", {"from": "2026-10-01", "to": "2026-10-31"}).content.decode()
    assert 'data-wait-cost="0.3200000000"' in html
    assert 'data-encs-if-instant="1.5100000000"' in html
    assert "Waiting for drafts" in html
    assert "16 s · 19.6 s" in html  # median · 95th percentile
    figures = encs_figures(OCTOBER, group_by="day")
    document = report_html(figures, title="October")
    assert "ENCS if drafts were instant" in document and "$1.51" in document
    rows = list(csv.DictReader(io.StringIO(report_csv(figures))))
    total = next(row for row in rows if row["section"] == "total")
    assert (total["waited_drafts"], total["wait_cost_usd"]) == ("2", "0.3200000000")


# --- The routing objective's estimates (drafting.selectors) ------------------------------------


def shown(policy: CascadePolicy, endpoint: ModelEndpoint, *, waited: bool) -> Draft:
    """A model's draft, opened 4 s before it was ready (`waited`) or 4 s after."""
    return drafted(policy, kind=None, failed=False, endpoint=endpoint, wait="4" if waited else "-4")


def latency(draft: Draft, endpoint: ModelEndpoint, ms: int, *, ok: bool = True) -> None:
    DraftAttempt.objects.create(
        draft=draft,
        tier=1,
        endpoint=endpoint,
        latency_ms=ms,
        outcome="ok" if ok else "error",
        error_kind="" if ok else "timeout",
        started_at=draft.created_at,
    )


def test_the_waiting_share_is_of_model_drafts_opened_before_they_were_ready(
    policy: CascadePolicy, endpoints: tuple[ModelEndpoint, ModelEndpoint]
) -> None:
    local, _paid = endpoints
    assert waiting_share(policy.team_id) == Decimal(0)  # nothing measured yet
    for waited in (True, False, False, False):
        shown(policy, local, waited=waited)
    drafted(policy, kind="use", handle="10", wait="3")  # a cache hit: not a model's draft
    drafted(policy, kind=None, failed=False, endpoint=local)  # never shown: not counted
    assert waiting_share(policy.team_id) == Decimal("0.2500")
    assert waiting_share(TeamFactory.create().pk) == Decimal(0)


def test_wait_estimates_are_the_waiting_share_times_each_tiers_median_latency(
    policy: CascadePolicy, endpoints: tuple[ModelEndpoint, ModelEndpoint]
) -> None:
    local, paid = endpoints
    drafts = [shown(policy, local, waited=n == 0) for n in range(4)]  # share 1/4
    for ms in (800, 1200, 1000):
        latency(drafts[0], local, ms)
    for ms in (6000, 9000):
        latency(drafts[1], paid, ms)
    latency(drafts[2], paid, 30000, ok=False)  # a timeout: no draft's latency
    assert endpoint_latency_p50(endpoint_id=local.pk) == Decimal("1.000")
    assert endpoint_latency_p50(endpoint_id=paid.pk) == Decimal("7.500")
    assert wait_estimates(policy.pk) == {local.pk: Decimal("0.250"), paid.pk: Decimal("1.875")}
    # A tier never asked has no estimate; a policy without tiers, none at all.
    silent = EndpointFactory.create(name="silent")
    CascadeTier.objects.create(policy=policy, position=3, endpoint=silent)
    assert silent.pk not in wait_estimates(policy.pk)
    assert wait_estimates(PolicyFactory.create().pk) == {}


def test_the_latency_is_read_from_the_most_recent_attempts(
    policy: CascadePolicy,
    endpoints: tuple[ModelEndpoint, ModelEndpoint],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(drafting_selectors, "WAIT_LATENCY_ATTEMPTS", 2)
    local, _paid = endpoints
    draft = shown(policy, local, waited=True)
    for hour in (1, 2, 3):  # slow, long ago
        DraftAttempt.objects.create(
            draft=draft,
            tier=1,
            endpoint=local,
            latency_ms=50_000,
            outcome="ok",
            started_at=at(DAY, hour),
        )
    for hour in (13, 14):
        DraftAttempt.objects.create(
            draft=draft,
            tier=1,
            endpoint=local,
            latency_ms=2000,
            outcome="ok",
            started_at=at(DAY, hour),
        )
    assert endpoint_latency_p50(endpoint_id=local.pk) == Decimal("2.000")
