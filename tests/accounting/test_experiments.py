"""A policy experiment's results: per arm against a scenario worked out by hand (and the
dashboard's own ENCS for the same drafts), the page (team-scoped), and simulations of the
statistics: the 95 % interval's coverage of a known difference and the sequential test's
false-positive rate when the arms are equal, peeking after every batch."""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from django.test import Client

from accounting.engine import money
from accounting.experiments import (
    Z95,
    Interval,
    Moments,
    difference_interval,
    experiment_results,
    looks_in_order,
    sequential_test,
    share_interval,
)
from accounting.facts import Scope
from accounting.selectors import encs_figures
from csbot.models import AgentProfile
from drafting.experiments import experiment_start
from drafting.models import CascadePolicy, Draft, Experiment
from tests.accounting.factories import DAY, at, case_study_settings, drafted
from tests.factories import AgentProfileFactory, PolicyFactory, UserFactory

D = Decimal


# --- The hand scenario ---------------------------------------------------------------------------


@dataclass
class Scenario:
    experiment: Experiment
    control: CascadePolicy
    candidate: CascadePolicy


def _in_arm(draft: Draft, experiment: Experiment, name: str, *, shown: float | None = None) -> None:
    """Put the draft in the arm; `shown`: seconds from its creation to the agent first having
    it (negative: before it was ready, which the factory sets to its creation)."""
    draft.experiment_arm = experiment.arms.get(name=name)
    if shown is not None:
        draft.first_shown_at = draft.created_at + timedelta(seconds=shown)
    draft.save(update_fields=["experiment_arm", "first_shown_at"])


def scenario() -> Scenario:
    """October 5th, 2026, worked out by hand. R = $36/h = $0.01/s; one held-out reply (fewer
    than 3), so T_baseline is the default 120 s; a draft's ENCS is 0.01 × (120 − handle) −
    cost when answered with it, − cost otherwise.

    control (policy "control"):            candidate (policy "candidate"):
      use    30 s, 0.002 → +0.898 (wait 5)   use    20 s, 0.004 → +0.996 (shown after ready)
      ignore 150 s, 0.001 → −0.301           edit   60 s, 0.004 → +0.596 (wait 2.5)
      failed, never answered, 0.003 → −0.003 use    40 s, 0.002 → +0.798
      held out, 100 s (not a drafted message) ignore 130 s, 0.001 → −0.101
    """
    case_study_settings()
    team_policy = PolicyFactory.create(name="control")
    team = team_policy.team
    candidate = PolicyFactory.create(team=team, name="candidate", active=False)
    boss = UserFactory.create(username="boss", is_superuser=True, is_staff=True)
    experiment = experiment_start(
        team=team,
        name="prompt v2",
        arms=[("control", team_policy, D("0.5")), ("candidate", candidate, D("0.5"))],
        seed=1,
        user=boss,
    )
    experiment.started_at = at(DAY, 0)
    experiment.status = Experiment.Status.STOPPED
    experiment.stopped_at = at(DAY, 23)
    experiment.save()
    rows: list[tuple[CascadePolicy, str, dict[str, Any], float | None]] = [
        (team_policy, "control", {"kind": "use", "handle": "30", "cost": "0.002"}, -5),
        (team_policy, "control", {"kind": "ignore", "handle": "150", "cost": "0.001"}, None),
        (team_policy, "control", {"kind": None, "cost": "0.003"}, None),
        (team_policy, "control", {"kind": "held_out", "handle": "100"}, None),
        (candidate, "candidate", {"kind": "use", "handle": "20", "cost": "0.004"}, 10),
        (candidate, "candidate", {"kind": "edit", "handle": "60", "cost": "0.004"}, -2.5),
        (candidate, "candidate", {"kind": "use", "handle": "40", "cost": "0.002"}, None),
        (candidate, "candidate", {"kind": "ignore", "handle": "130", "cost": "0.001"}, None),
    ]
    for policy, arm, fields, shown in rows:
        _in_arm(drafted(policy, **fields), experiment, arm, shown=shown)
    # A draft of the team outside the experiment counts in neither arm.
    drafted(team_policy, kind="use", handle="10", cost="0.5")
    return Scenario(experiment=experiment, control=team_policy, candidate=candidate)


def _mean_ci(values: list[float]) -> tuple[Decimal, Decimal]:
    """x̄ ± 1.96·s/√n by hand (statistics' sample standard deviation)."""
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = float(Z95) * sd / math.sqrt(len(values))
    return money(D(repr(mean - half))), money(D(repr(mean + half)))


def _close(interval: Interval | None, expected: tuple[Decimal, Decimal]) -> bool:
    assert interval is not None
    tolerance = D("1e-9")  # the hand computation is in floats
    return abs(interval.low - expected[0]) <= tolerance and abs(interval.high - expected[1]) <= (
        tolerance
    )


def test_results_per_arm_equal_the_hand_computation(db: None) -> None:
    s = scenario()
    results = experiment_results(s.experiment)
    control, candidate = results.arms
    assert (results.baseline.seconds, results.baseline.source) == (D(120), "default")
    assert (control.name, control.messages, control.held_out) == ("control", 3, 1)
    assert (candidate.name, candidate.messages, candidate.held_out) == ("candidate", 4, 0)

    control_encs = [0.898, -0.301, -0.003]
    candidate_encs = [0.996, 0.596, 0.798, -0.101]
    assert control.encs_usd == D("0.594")
    assert control.encs_per_message_usd.value == money(D("0.594") / 3)
    assert candidate.encs_per_message_usd.value == D("0.57225")
    assert _close(control.encs_per_message_usd.ci95, _mean_ci(control_encs))
    assert _close(candidate.encs_per_message_usd.ci95, _mean_ci(candidate_encs))

    assert control.p_use.value == D("0.3333") and control.p_ignore.value == D("0.3333")
    assert candidate.p_use.value == D("0.5") and candidate.p_ignore.value == D("0.25")
    # Wilson's interval for 2 of 4, by hand: centre (p + z²/2n)/(1 + z²/n) = 0.5.
    z2 = float(Z95) ** 2
    half = float(Z95) / (1 + z2 / 4) * math.sqrt(0.25 / 4 + z2 / 64)
    assert candidate.p_use.ci95 is not None
    assert abs(float(candidate.p_use.ci95.low) - (0.5 - half)) < 1e-4
    assert abs(float(candidate.p_use.ci95.high) - (0.5 + half)) < 1e-4

    assert control.cost_per_message_usd.value == D("0.002")
    assert candidate.cost_per_message_usd.value == D("0.00275")
    assert _close(candidate.cost_per_message_usd.ci95, _mean_ci([0.004, 0.004, 0.002, 0.001]))

    # Waits, the ENCS report's (answered drafts, at most the handle time): control 5 s and 0
    # (the ignored draft was ready first); candidate 0 (shown after ready), 2.5, 0 and 0.
    assert (control.waited, control.wait_seconds.value) == (2, D("2.500"))
    assert (candidate.waited, candidate.wait_seconds.value) == (4, D("0.625"))

    (comparison,) = results.comparisons
    assert comparison.arm == candidate
    assert comparison.encs_per_message_usd.value == money(D("0.57225") - D("0.594") / 3)
    variance = statistics.variance(control_encs) / 3 + statistics.variance(candidate_encs) / 4
    delta = statistics.fmean(candidate_encs) - statistics.fmean(control_encs)
    half = float(Z95) * math.sqrt(variance)
    expected = (money(D(repr(delta - half))), money(D(repr(delta + half))))
    assert _close(comparison.encs_per_message_usd.ci95, expected)
    assert comparison.p_use.value == D("0.1667")
    # Three and four messages are far below the sequential test's first look.
    assert comparison.sequential.interval is None and not comparison.sequential.significant


def test_an_arms_encs_per_message_is_the_dashboards(db: None) -> None:
    """The candidate arm is all of its policy's drafts: the dashboard filtered to that policy
    shows the same ENCS per drafted message (its decomposition) and the same ENCS."""
    s = scenario()
    candidate = experiment_results(s.experiment).arms[1]
    report = encs_figures(
        Scope(
            start=DAY,
            end=DAY + timedelta(days=1),
            team_ids=(s.candidate.team_id,),
            policy_ids=(s.candidate.pk,),
        )
    )
    decomposition = report.totals.decomposition
    assert decomposition is not None
    assert candidate.encs_per_message_usd.value == decomposition.encs_per_draft_usd
    assert candidate.encs_usd == report.totals.encs_usd


# --- The page ------------------------------------------------------------------------------------


def _manager(team: Any, username: str = "manager") -> Client:
    user = AgentProfileFactory.create(
        team=team, role=AgentProfile.Role.MANAGER, user__username=username
    ).user
    client = Client()
    client.force_login(user)
    return client


def test_the_page_shows_the_arms_and_is_team_scoped(db: None) -> None:
    s = scenario()
    team = s.control.team
    manager = _manager(team)
    page = manager.get("/accounting/experiments")
    assert page.status_code == 200
    body = page.content.decode()
    assert f'data-experiment="{s.experiment.pk}"' in body
    assert 'data-arm="control"' in body and 'data-arm="candidate"' in body
    assert "0.5723" in body  # the candidate's ENCS per message (0.57225), rounded for reading
    assert 'data-significant="no"' in body
    # Another team's manager: the experiment does not exist for them; bad input is a 400.
    other_policy = PolicyFactory.create(name="other")
    other = _manager(other_policy.team, "other-manager")
    assert other.get("/accounting/experiments", {"experiment": s.experiment.pk}).status_code == 404
    assert "prompt v2" not in other.get("/accounting/experiments").content.decode()
    assert manager.get("/accounting/experiments", {"experiment": "x"}).status_code == 400
    assert manager.get("/accounting/experiments", {"experiment": "999999"}).status_code == 404
    # An agent sees no money.
    agent = Client()
    agent.force_login(AgentProfileFactory.create(team=team, user__username="agent").user)
    assert agent.get("/accounting/experiments").status_code == 403


@pytest.mark.slow
def test_the_dashboard_links_to_the_experiments(db: None) -> None:
    policy = PolicyFactory.create(name="linked")
    dashboard = _manager(policy.team).get("/accounting/")
    assert dashboard.status_code == 200
    assert 'href="/accounting/experiments"' in dashboard.content.decode()


# --- Statistics: pure functions ------------------------------------------------------------------


def test_intervals_by_hand() -> None:
    m = Moments.of([D(1), D(2), D(3), D(4)])
    assert (m.n, m.mean) == (4, D("2.5"))
    assert abs((m.mean_variance or 0) - D(5) / 12) < D("1e-25")  # s²/n
    assert Moments.of([D(7)]).mean_variance is None
    ci = difference_interval(Moments.of([D(0), D(2)]), Moments.of([D(1), D(3), D(5)]))
    assert ci is not None
    half = float(Z95) * math.sqrt(2 / 2 + 4 / 3)
    assert abs(float(ci.low) - (3 - 1 - half)) < 1e-12
    assert abs(float(ci.high) - (3 - 1 + half)) < 1e-12
    # Wilson never leaves [0, 1], even at 0 of n.
    zero = share_interval(0, 10)
    assert zero is not None and zero.low == 0 and D("0.2") < zero.high < D("0.35")
    assert share_interval(0, 0) is None


def test_a_conversations_messages_are_one_cluster() -> None:
    """Per message R = Σy/Σm over conversations (y: their total, m: their messages), and
    Var(R) = Σ(y − R·m)² / (n(n − 1)·m̄²) by hand."""
    clusters = [(D("1.0"), 2), (D("0.5"), 1), (D("-0.2"), 1), (D("0.9"), 2)]
    m = Moments.of_clusters(clusters)
    ratio = 2.2 / 6
    residual = sum((float(y) - ratio * n) ** 2 for y, n in clusters)
    expected = residual / (4 * 3 * (6 / 4) ** 2)
    assert m.n == 4 and m.size == 6 and abs(float(m.mean or 0) - ratio) < 1e-15
    assert abs(float(m.mean_variance or 0) - expected) < 1e-15
    # The same messages as independent values have another (here smaller) variance.
    independent = Moments.of([D("0.5"), D("0.5"), D("0.5"), D("-0.2"), D("0.45"), D("0.45")])
    assert independent.mean == m.mean and independent.mean_variance != m.mean_variance
    # The looks build the same moments message by message.
    events: list[tuple[int, Hashable, Decimal]] = [
        (1, "a", D("0.4")),
        (1, "b", D("0.5")),
        (1, "a", D("0.6")),
        (1, "c", D("-0.2")),
    ]
    events += [(1, "d", D("0.45")), (1, "d", D("0.45"))] + [(0, i, D(1)) for i in range(6)]
    *_, (control, arm) = looks_in_order(events, look_from=1, look_every=1)
    assert arm == m and control == Moments.of([D(1)] * 6)


def test_looks_come_after_each_batch_once_both_arms_have_enough() -> None:
    events = [(i % 2, i, D(1 + i % 2)) for i in range(100)]
    looks = list(looks_in_order(events, look_from=30, look_every=20))
    # Both arms reach 30 at message 60 (after the look due at 60), then 80, 100.
    assert [(c.n, a.n) for c, a in looks] == [(30, 30), (40, 40), (50, 50)]
    assert looks[-1][1].total == D(100)


# --- Statistics: simulations (seeded, no database) -----------------------------------------------

RATE, T_BASELINE = 36.0, 120.0
# Handle seconds per action (use, edit, ignore): lognormal (median, sigma).
HANDLE = ((30.0, 0.5), (70.0, 0.5), (150.0, 0.4))


@dataclass(frozen=True)
class Arm:
    """An arm's true behaviour: P(use), P(edit), P(ignore) (the rest: no draft to use) and
    the mean model cost per message (exponential)."""

    p: tuple[float, float, float]
    cost: float

    def true_encs(self) -> float:
        saving = sum(
            p * RATE * (T_BASELINE - median * math.exp(sigma**2 / 2)) / 3600
            for p, (median, sigma) in zip(self.p, HANDLE, strict=True)
        )
        return saving - self.cost

    def draw(self, rng: np.random.Generator, n: int) -> list[Decimal]:
        """n messages' ENCS: R × (T − handle) / 3600 for an action on the draft, − cost."""
        kinds = rng.choice(4, size=n, p=[*self.p, 1 - sum(self.p)])
        values = np.zeros(n)
        for kind, (median, sigma) in enumerate(HANDLE):
            chosen = kinds == kind
            handle = rng.lognormal(math.log(median), sigma, int(chosen.sum()))
            values[chosen] = RATE * (T_BASELINE - handle) / 3600
        values -= rng.exponential(self.cost, n)
        return [D(repr(float(x))) for x in np.round(values, 10)]


CONTROL = Arm(p=(0.30, 0.30, 0.30), cost=0.002)
BETTER = Arm(p=(0.35, 0.30, 0.25), cost=0.003)


@pytest.mark.slow
def test_the_95_interval_covers_a_known_difference_in_at_least_93_percent() -> None:
    rng = np.random.default_rng(20261203)
    truth = D(repr(BETTER.true_encs() - CONTROL.true_encs()))
    runs, n = 400, 1000
    covered = 0
    for _ in range(runs):
        interval = difference_interval(
            Moments.of(CONTROL.draw(rng, n)), Moments.of(BETTER.draw(rng, n))
        )
        assert interval is not None
        covered += interval.covers(truth)
    assert covered / runs >= 0.93, f"coverage {covered / runs:.4f} over {runs} experiments"


def _sequential_run(rng: np.random.Generator, control: Arm, arm: Arm, n: int) -> Any:
    """One experiment of n messages per arm arriving in random order, looked at after every
    batch (the page's looks)."""
    order = rng.permutation(np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]).tolist()
    values = (iter(control.draw(rng, n)), iter(arm.draw(rng, n)))
    events = [(side, (side, i), next(values[side])) for i, side in enumerate(order)]
    return sequential_test(looks_in_order(events))


@pytest.mark.slow
def test_the_sequential_test_rarely_calls_equal_arms_different_however_often_one_looks() -> None:
    rng = np.random.default_rng(18)
    runs = 300
    false_positives = 0
    looks = 0
    for _ in range(runs):
        verdict = _sequential_run(rng, CONTROL, CONTROL, 1000)
        false_positives += verdict.significant
        looks = verdict.looks
    assert looks >= 15  # peeking after every batch, not once at the end
    assert false_positives / runs <= 0.05, f"{false_positives} of {runs} runs"


@pytest.mark.slow
def test_the_always_valid_interval_covers_a_true_difference_at_every_look() -> None:
    rng = np.random.default_rng(7)
    truth = D(repr(BETTER.true_encs() - CONTROL.true_encs()))
    runs = 200
    covered = significant = 0
    for _ in range(runs):
        verdict = _sequential_run(rng, CONTROL, BETTER, 1000)
        # The running intersection covers the truth only if every look's interval did.
        covered += verdict.interval is not None and verdict.interval.covers(truth)
        significant += verdict.significant
    assert covered / runs >= 0.95, f"always-valid coverage {covered / runs:.4f}"
    assert significant > 0  # a real difference is found in some runs at this size


@pytest.mark.slow
def test_intervals_clustered_by_conversation_cover_when_turns_are_correlated() -> None:
    """Conversations of 1 to 7 drafted messages sharing a conversation effect (the same
    customer and agent): the clustered 95 % interval of the difference still covers the true
    one; treating the messages as independent would not."""
    rng = np.random.default_rng(3)
    truth = D(repr(BETTER.true_encs() - CONTROL.true_encs()))
    runs, conversations = 300, 300
    covered = naive = 0
    for _ in range(runs):
        arms = []
        for arm in (CONTROL, BETTER):
            sizes = rng.integers(1, 8, conversations)
            values = arm.draw(rng, int(sizes.sum()))
            # A conversation effect of mean 0 (sd $0.5) added to each of its messages.
            effects = np.repeat(rng.normal(0, 0.5, conversations), sizes)
            shifted = [
                x + D(repr(round(float(e), 10))) for x, e in zip(values, effects, strict=True)
            ]
            bounds = np.cumsum(sizes)[:-1]
            clusters = [
                (sum(part, D(0)), len(part)) for part in np.split(np.array(shifted), bounds)
            ]
            arms.append((Moments.of_clusters(clusters), Moments.of(shifted)))
        clustered = difference_interval(arms[0][0], arms[1][0])
        independent = difference_interval(arms[0][1], arms[1][1])
        assert clustered is not None and independent is not None
        covered += clustered.covers(truth)
        naive += independent.covers(truth)
    assert covered / runs >= 0.93, f"clustered coverage {covered / runs:.4f}"
    assert naive < covered, f"independent {naive / runs:.4f} vs clustered {covered / runs:.4f}"
