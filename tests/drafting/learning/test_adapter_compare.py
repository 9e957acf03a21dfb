"""Candidate adapter against the current model on the same drafts
(drafting.learning.adapter_compare): hand-computed means, paired differences and t intervals;
which attempts pair up; too few drafts; other teams' drafts never mix in."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from scipy.stats import t as student_t

from drafting.learning.adapter_compare import (
    Comparison,
    Paired,
    compare_shadow,
    paired,
    t_quantile_975,
)
from drafting.models import DistillRun, Draft, DraftAttempt, ModelEndpoint
from tests.drafting.factories import distill_run
from tests.factories import (
    EARLY,
    AgentActionFactory,
    DraftAttemptFactory,
    DraftFactory,
    MessageFactory,
    TeamSetup,
    make_team,
)

SHADOW = DraftAttempt.Purpose.SHADOW


def _draft(setup: TeamSetup) -> Draft:
    message = MessageFactory.create(conversation__channel=setup.channel)
    return DraftFactory.create(message=message, policy=setup.policy, status="ready", ready_at=EARLY)


def _answer(
    draft: Draft,
    endpoint: ModelEndpoint,
    *,
    text: str,
    score: str | None,
    cost: str,
    latency: int,
    purpose: str = "",
    tier: int = 1,
) -> DraftAttempt:
    return DraftAttemptFactory.create(
        draft=draft,
        endpoint=endpoint,
        tier=tier,
        purpose=purpose,
        exploratory=purpose == SHADOW,
        text=text,
        score=None if score is None else D(score),
        cost=D(cost),
        latency_ms=latency,
    )


def _pair(
    setup: TeamSetup,
    run: DistillRun,
    *,
    sent: str | None,
    candidate: tuple[str, str | None, str, int],
    current: tuple[str, str | None, str, int],
) -> Draft:
    """A draft answered by the shadowed tier (current) and in shadow by the run (candidate):
    (text, score, cost, latency) each; `sent` the agent's reply (None: none yet)."""
    draft = _draft(setup)
    text, score, cost, latency = current
    _answer(draft, setup.endpoint, text=text, score=score, cost=cost, latency=latency)
    assert run.endpoint is not None
    text, score, cost, latency = candidate
    _answer(draft, run.endpoint, text=text, score=score, cost=cost, latency=latency, purpose=SHADOW)
    if sent is not None:
        AgentActionFactory.create(draft=draft, kind="edit", final_text=sent)
    return draft


def _figure(comparison: Comparison, key: str) -> Paired:
    return next(f for f in comparison.figures if f.key == key)


def _close(value: D | None, expected: str, places: int = 6) -> None:
    assert value is not None
    assert abs(value - D(expected)) < D(1).scaleb(-places), (value, expected)


# --- The maths --------------------------------------------------------------------------------


@pytest.mark.parametrize("df", [1, 2, 3, 7, 29, 30, 31, 45, 120, 5000])
def test_t_quantile_matches_scipy(df: int) -> None:
    assert t_quantile_975(df) == pytest.approx(float(student_t.ppf(0.975, df)), abs=1e-6)


def test_paired_differences_have_a_t_interval() -> None:
    # Differences 0.3, 0, 0.3: mean 0.2, s² = 0.03, s/√3 = 0.1, t(2) = 4.302653.
    figure = paired(
        [(D("0.8"), D("0.5")), (D("0.6"), D("0.6")), (D("0.7"), D("0.4"))], key="p", label="P"
    )
    assert figure.n == 3
    _close(figure.candidate, "0.7")
    _close(figure.current, "0.5")
    _close(figure.difference, "0.2")
    _close(figure.low, "-0.2302653")
    _close(figure.high, "0.6302653")
    assert figure.verdict == "no clear difference"


def test_no_pair_and_one_pair_have_no_interval() -> None:
    empty = paired([], key="p", label="P")
    assert (empty.n, empty.candidate, empty.difference, empty.low) == (0, None, None, None)
    assert empty.too_few and empty.verdict == "too few"
    one = paired([(D("0.9"), D("0.4"))], key="p", label="P")
    assert one.n == 1 and one.difference == D("0.5")
    assert one.too_few and one.verdict == "too few"


def test_the_verdict_follows_which_direction_is_better() -> None:
    lower = [(D(1), D(5)), (D(2), D(5)), (D(1), D(6))]
    assert paired(lower, key="c", label="C", higher_is_better=False).verdict == "candidate"
    assert paired(lower, key="r", label="R", higher_is_better=True).verdict == "current"


# --- Pairs from the database --------------------------------------------------------------------


def test_shadow_comparison_on_three_hand_computed_drafts(db: None) -> None:
    setup = make_team("Acme")
    run = distill_run(setup, stage=DistillRun.Stage.SHADOW, shadow_tier=1)
    _pair(
        setup,
        run,
        sent="your refund is on its way",
        candidate=("your refund is on its way", "0.8", "0.0001", 100),
        current=("your parcel is late", "0.5", "0.0004", 200),
    )
    _pair(
        setup,
        run,
        sent="thanks we will call you",
        candidate=("we will call you", "0.6", "0.0001", 120),
        current=("thanks", "0.6", "0.0003", 220),
    )
    _pair(  # no reply sent yet: in score, cost and latency, not in closeness
        setup,
        run,
        sent=None,
        candidate=("anything", "0.7", "0.0001", 110),
        current=("something", "0.4", "0.0002", 230),
    )
    comparison = compare_shadow(run=run)
    assert (comparison.n_drafts, comparison.n_sent, comparison.shadow_errors) == (3, 2, 0)

    # ROUGE-L: candidate 1 and 8/9 (LCS 4 of 4 and 5 tokens), current 0.4 (2 of 4 and 6) and
    # 1/3 (1 of 1 and 5). Differences 0.6 and 5/9: mean 26/45, s/√2 = |0.6 − 5/9|/2 = 1/45,
    # t(1) = 12.706205.
    rouge = _figure(comparison, "rouge_l")
    assert rouge.n == 2
    _close(rouge.candidate, str((1 + D(8) / 9) / 2))
    _close(rouge.current, str((D("0.4") + D(1) / 3) / 2))
    _close(rouge.difference, "0.5777778")
    _close(rouge.low, "0.2954177")
    _close(rouge.high, "0.8601379")
    assert rouge.verdict == "candidate"

    # Edit similarity 1 − Levenshtein/longer: 1 and 1 − 7/23, current 1 − 15/25 and 1 − 17/23
    # (4 places, as AgentAction.edit_distance stores them).
    similarity = _figure(comparison, "edit_similarity")
    assert similarity.n == 2
    assert similarity.candidate == (D("1") + D("0.6957")) / 2
    assert similarity.current == (D("0.4") + D("0.2609")) / 2
    assert similarity.difference == D("0.5174")

    # P(good): differences 0.3, 0, 0.3 (see test_paired_differences_have_a_t_interval).
    p_good = _figure(comparison, "p_good")
    assert p_good.n == 3
    _close(p_good.difference, "0.2")
    _close(p_good.low, "-0.2302653")
    _close(p_good.high, "0.6302653")

    # Cost: differences −0.0003, −0.0002, −0.0001: mean −0.0002, s = 0.0001, exact in Decimal.
    cost = _figure(comparison, "cost_usd")
    assert (cost.n, cost.candidate, cost.current, cost.difference) == (
        3,
        D("0.0001"),
        D("0.0003"),
        D("-0.0002"),
    )
    _close(cost.low, "-0.000448414", places=9)
    _close(cost.high, "0.000048414", places=9)

    # Latency: differences −100, −100, −120: mean −106.667, s² = 133.33, s/√3 = 6.6667.
    latency = _figure(comparison, "latency_ms")
    _close(latency.difference, "-106.666667")
    _close(latency.low, "-135.351020", places=5)
    _close(latency.high, "-77.982313", places=5)
    assert latency.verdict == "candidate"


def test_only_drafts_answered_by_both_of_the_run_on_its_team_pair_up(db: None) -> None:
    setup, other = make_team("Acme"), make_team("Globex")
    run = distill_run(setup, stage=DistillRun.Stage.SHADOW, shadow_tier=1)
    assert run.endpoint is not None
    answer = ("hello", "0.5", "0.0001", 100)
    _pair(setup, run, sent="hello there", candidate=answer, current=answer)
    # Another team's draft answered by the same endpoint in shadow (it cannot happen through
    # the services, the endpoint being the run's own: the comparison still never reads it).
    _pair(other, run, sent="hello there", candidate=answer, current=answer)
    # A shadow answer whose tier kept no text, one whose tier failed, one of another tier.
    no_text = _draft(setup)
    _answer(no_text, setup.endpoint, text="", score="0.5", cost="0", latency=1)
    _answer(no_text, run.endpoint, text="hi", score="0.5", cost="0", latency=1, purpose=SHADOW)
    failed = _draft(setup)
    DraftAttemptFactory.create(
        draft=failed, endpoint=setup.endpoint, outcome="error", error_kind="timeout", text="x"
    )
    _answer(failed, run.endpoint, text="hi", score="0.5", cost="0", latency=1, purpose=SHADOW)
    other_tier = _draft(setup)
    _answer(other_tier, setup.endpoint, text="x", score="0.5", cost="0", latency=1, tier=2)
    _answer(other_tier, run.endpoint, text="y", score="0.5", cost="0", latency=1, purpose=SHADOW)
    # A failed shadow answer is counted apart, never paired.
    shadow_failed = _draft(setup)
    _answer(shadow_failed, setup.endpoint, text="x", score="0.5", cost="0", latency=1)
    DraftAttemptFactory.create(
        draft=shadow_failed,
        endpoint=run.endpoint,
        purpose=SHADOW,
        outcome="error",
        error_kind="timeout",
        score=None,
    )
    # A draft with no shadow answer (only the current model).
    _answer(_draft(setup), setup.endpoint, text="x", score="0.5", cost="0", latency=1)

    comparison = compare_shadow(run=run)
    assert (comparison.n_drafts, comparison.n_sent, comparison.shadow_errors) == (1, 1, 1)
    assert comparison.too_few
    assert all(f.n == 1 and f.too_few for f in comparison.figures)
    rouge = _figure(comparison, "rouge_l")  # "hello" against "hello there": LCS 1 of 1 and 2
    _close(rouge.candidate, str(D(2) / 3))
    assert rouge.difference == 0


def test_a_run_never_in_shadow_compares_nothing(db: None) -> None:
    setup = make_team("Acme")
    run = distill_run(setup)  # published, never shadowed: no shadow tier
    comparison = compare_shadow(run=run)
    assert (comparison.n_drafts, comparison.n_sent) == (0, 0)
    assert all(f.n == 0 and f.verdict == "too few" for f in comparison.figures)
    unpublished = distill_run(setup, version=2, endpoint=None, shadow_tier=1)
    assert compare_shadow(run=unpublished).n_drafts == 0


def test_the_latest_drafts_only_past_the_limit(db: None) -> None:
    setup = make_team("Acme")
    run = distill_run(setup, stage=DistillRun.Stage.SHADOW, shadow_tier=1)
    answers = [("a", "0.5", "0", 10 * i) for i in range(1, 4)]
    for answer in answers:
        _pair(setup, run, sent=None, candidate=answer, current=answer)
    comparison = compare_shadow(run=run, limit=2)
    assert comparison.limited and comparison.n_drafts == 2
    # The two latest drafts: latencies 20 and 30.
    assert _figure(comparison, "latency_ms").current == D(25)
    assert not compare_shadow(run=run, limit=3).limited
