"""Withheld drafts in ENCS (accounting/withholding.py): a withheld draft saves nothing and costs
its attempts, its reply is no held-out baseline reply; the dashboard's withholding figures; the
action values accounting measures and hands to drafting."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from django.test import Client
from django.utils import timezone

from accounting.engine import SettingsBook
from accounting.facts import Scope
from accounting.selectors import encs_figures
from accounting.tasks import action_values_refresh_task
from accounting.withholding import (
    action_values_measure,
    action_values_refresh,
    withholding_stats,
)
from drafting.models import ActionValues, CascadePolicy, Draft, DraftAttempt
from tests.accounting.factories import DAY, OCTOBER, case_study_settings, drafted
from tests.factories import EndpointFactory, PolicyFactory, UserFactory


def _withheld(
    policy: CascadePolicy,
    *,
    answered: bool,
    cost: str,
    expected: str,
    handle: str = "0",
    status: str = Draft.Status.WITHHELD,
    probability: str = "0.9",
) -> Draft:
    """A decided draft with text whose attempt cost `cost`: withheld (answered unaided, kind
    `none`, as drafting records a reply to it, or never answered) or, with `status` ready,
    shown anyway."""
    endpoint = EndpointFactory.create()
    if status == Draft.Status.WITHHELD:
        draft = drafted(
            policy,
            kind="none" if answered else None,
            failed=False,
            handle=handle,
            cost=cost,
            endpoint=endpoint,
        )
    else:
        draft = drafted(policy, kind=answered, handle=handle, cost=cost, endpoint=endpoint)  # type: ignore[arg-type]
    Draft.objects.filter(pk=draft.pk).update(
        status=status, expected_encs=Decimal(expected), decision_probability=Decimal(probability)
    )
    DraftAttempt.objects.create(
        draft=draft,
        tier=1,
        endpoint=endpoint,
        cost=Decimal(cost),
        outcome=DraftAttempt.Outcome.OK,
        started_at=timezone.now(),
    )
    return draft


def test_a_withheld_draft_saves_nothing_costs_its_attempts_and_is_no_baseline_reply(
    db: None,
) -> None:
    """R = $0.01/s. Used after 30 s (saves 0.90), ignored after 150 s (−0.30), two withheld
    (one answered unaided after 90 s, one never answered), three held-out replies (100, 140 and
    120 s: T_baseline 120 s measured; the withheld reply's 90 s would make it 112.5)."""
    case_study_settings()
    policy = PolicyFactory.create()
    endpoint = EndpointFactory.create()
    drafted(policy, kind="use", handle="30", cost="0.002", endpoint=endpoint)
    drafted(policy, kind="ignore", handle="150", cost="0.001", endpoint=endpoint)
    _withheld(policy, answered=True, handle="90", cost="0.003", expected="-0.053")
    _withheld(policy, answered=False, cost="0.004", expected="-0.104")
    for handle in ("100", "140", "120"):
        drafted(policy, kind="held_out", handle=handle)
    report = encs_figures(OCTOBER)
    totals = report.totals
    baseline = report.baselines[policy.team_id]
    assert (baseline.source, baseline.sample, baseline.seconds) == ("measured", 3, Decimal(120))
    assert totals.labor_savings_usd == Decimal("0.6000000000")
    assert totals.model_cost_usd == Decimal("0.0100000000")
    assert totals.encs_usd == Decimal("0.5900000000")
    assert totals.messages == 7
    assert totals.unanswered_drafts == 1
    assert totals.actions["none"] == 4  # the withheld reply and the three held-out ones
    assert totals.held_out == 3


def test_the_dashboard_figures_count_withheld_drafts_and_measure_the_shown_negatives(
    db: None,
) -> None:
    case_study_settings()  # T_baseline 120 s (default: no held-out reply), R $0.01/s
    policy = PolicyFactory.create()
    # Withheld: V = E + cost = −0.05 and −0.10 → expected loss avoided $0.15.
    _withheld(policy, answered=True, handle="90", cost="0.003", expected="-0.053")
    _withheld(policy, answered=False, cost="0.004", expected="-0.104")
    # Negative estimates shown anyway: ignored after 150 s (−0.30 − 0.001), used after 30 s
    # (0.90 − 0.002).
    _withheld(
        policy,
        answered="ignore",  # type: ignore[arg-type]
        handle="150",
        cost="0.001",
        expected="-0.021",
        status=Draft.Status.READY,
        probability="0.1",
    )
    _withheld(
        policy,
        answered="use",  # type: ignore[arg-type]
        handle="30",
        cost="0.002",
        expected="-0.012",
        status=Draft.Status.READY,
        probability="0.1",
    )
    # A positive estimate, shown: decided, but no negative.
    _withheld(
        policy,
        answered="use",  # type: ignore[arg-type]
        handle="30",
        cost="0.002",
        expected="0.5",
        status=Draft.Status.READY,
        probability="1",
    )
    drafted(policy, kind="use", handle="30", cost="0.002")  # not decided (withholding off)
    report = encs_figures(OCTOBER)
    stats = withholding_stats(OCTOBER, baselines=report.baselines)
    assert (stats.decided, stats.withheld, stats.shown_negative) == (5, 2, 2)
    assert stats.loss_avoided_usd == Decimal("0.1500000000")
    assert stats.shown_negative_expected_usd == Decimal("-0.0165000000")
    assert stats.shown_negative_encs_usd == Decimal("0.2985000000")
    # Two values ±0.5995 around the mean: s = 0.5995·√2, half-width 1.96·s/√2 = 1.17502.
    assert stats.shown_negative_ci95_usd == (Decimal("-0.8765200000"), Decimal("1.4735200000"))
    other = withholding_stats(
        Scope(start=OCTOBER.start, end=OCTOBER.end, team_ids=(policy.team_id + 1,)),
        baselines=report.baselines,
    )
    assert (other.decided, other.withheld) == (0, 0)


def test_the_dashboard_shows_the_withheld_drafts(db: None, client: Client) -> None:
    case_study_settings()
    policy = PolicyFactory.create()
    _withheld(policy, answered=False, cost="0.004", expected="-0.104")
    client.force_login(UserFactory.create(is_superuser=True, is_staff=True))
    page = client.get("/accounting/", {"from": "2026-10-01", "to": "2026-10-31"})
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="withholding"' in html
    assert "$0.10" in html  # the expected loss avoided


def test_action_values_are_accountings_own_s_a_handed_to_drafting(db: None) -> None:
    case_study_settings()  # T_baseline 120 s, R $0.01/s
    policy = PolicyFactory.create()
    for kind, handle in [("use", "30"), ("use", "30"), ("edit", "60"), ("ignore", "150")]:
        drafted(policy, kind=kind, handle=handle, cost="0.002")
    book = SettingsBook.load()
    measured = action_values_measure(team_id=policy.team_id, today=DAY, book=book, min_actions=4)
    assert measured is not None
    assert (measured.s_use, measured.s_edit, measured.s_ignore) == (
        Decimal("0.9000000000"),
        Decimal("0.6000000000"),
        Decimal("-0.3000000000"),
    )
    assert measured.wait_per_second == Decimal("0.0100000000")
    assert measured.n_actions == 4
    # Too few actions, or a kind never seen: nothing.
    assert (
        action_values_measure(team_id=policy.team_id, today=DAY, book=book, min_actions=5) is None
    )
    assert action_values_refresh(today=DAY, min_actions=4) == [policy.team_id]
    stored = ActionValues.objects.get(team_id=policy.team_id)
    assert (stored.s_use, stored.s_ignore, stored.n_actions) == (
        Decimal("0.9000000000"),
        Decimal("-0.3000000000"),
        4,
    )
    # Outside the window (30 days up to `today`) nothing is measured, and nothing is replaced.
    assert action_values_refresh(today=date(2026, 12, 1), min_actions=4) == []
    assert ActionValues.objects.get(team_id=policy.team_id).n_actions == 4


def test_the_periodic_task_measures_with_the_default_minimum(db: None) -> None:
    case_study_settings()
    policy = PolicyFactory.create()
    drafted(policy, kind="use", handle="30", cost="0.002", day=timezone.localdate())
    assert action_values_refresh_task() == 0  # one action, 30 needed
    assert not ActionValues.objects.exists()
