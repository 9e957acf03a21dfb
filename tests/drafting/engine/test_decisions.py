"""The show/withhold arithmetic (drafting.engine.decisions): expected ENCS, the value of
showing, the split of P(good) into the three actions, and the random show share."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from drafting.engine.decisions import (
    ActionProbabilities,
    ActionSplit,
    ActionValuesUSD,
    expected_encs,
    show_decision,
    value_of_showing,
)

# R = $36/h, T_baseline 120 s; used after 30 s, edited after 60 s, ignored after 150 s.
VALUES = ActionValuesUSD(s_use=Decimal("0.90"), s_edit=Decimal("0.60"), s_ignore=Decimal("-0.30"))


def test_expected_encs_is_the_papers_formula_per_draft() -> None:
    p = ActionProbabilities(use=0.5, edit=0.2, ignore=0.3)
    # 0.5·0.90 + 0.2·0.60 + 0.3·(−0.30) = 0.45 + 0.12 − 0.09 = 0.48
    assert value_of_showing(p, VALUES) == Decimal("0.48")
    assert expected_encs(p, VALUES, cost=Decimal("0.03")) == Decimal("0.45")


def test_the_split_turns_p_good_into_three_probabilities_that_sum_to_one() -> None:
    split = ActionSplit(use_given_good=0.75, edit_given_bad=0.2)
    p = split.probabilities(0.4)
    assert p.use == pytest.approx(0.3)  # 0.4 · 0.75
    assert p.edit == pytest.approx(0.4 * 0.25 + 0.6 * 0.2)
    assert p.ignore == pytest.approx(0.6 * 0.8)
    assert p.use + p.edit + p.ignore == pytest.approx(1.0)
    # A score out of [0, 1] (rounding) is clipped, never a negative probability.
    assert split.probabilities(1.2).ignore == 0.0
    with pytest.raises(ValueError, match="probability"):
        ActionSplit(use_given_good=1.5, edit_given_bad=0.1)


def test_the_split_round_trips_through_the_scorers_metrics() -> None:
    split = ActionSplit(use_given_good=0.7, edit_given_bad=0.25, n_good=40, n_bad=30)
    assert ActionSplit.from_json(split.as_json()) == split
    assert ActionSplit.from_json(None) is None
    assert ActionSplit.from_json({"use_given_good": "x", "edit_given_bad": 0.1}) is None


def test_a_draft_worth_showing_is_shown_with_probability_one_whatever_its_cost() -> None:
    p = ActionProbabilities(use=0.1, edit=0.3, ignore=0.6)  # V = 0.09 + 0.18 − 0.18 = 0.09
    # The cost (0.20) exceeds V, so E < 0, but the money is spent either way: showing still
    # adds V > 0 over withholding, so it is shown.
    decision = show_decision(
        probabilities=p,
        values=VALUES,
        cost=Decimal("0.20"),
        show_share=Decimal("0.1"),
        draw=lambda: 0.99,
    )
    assert decision.show
    assert decision.expected_encs == Decimal("-0.11")
    assert decision.value_of_showing == Decimal("0.09")
    assert decision.probability == Decimal(1)


def test_a_draft_worth_less_than_nothing_is_withheld_but_for_the_show_share() -> None:
    p = ActionProbabilities(use=0.05, edit=0.15, ignore=0.8)  # V = 0.045 + 0.09 − 0.24 < 0
    decide = {
        "probabilities": p,
        "values": VALUES,
        "cost": Decimal("0.01"),
        "show_share": Decimal("0.1"),
    }
    withheld = show_decision(**decide, draw=lambda: 0.5)  # type: ignore[arg-type]
    shown = show_decision(**decide, draw=lambda: 0.05)  # type: ignore[arg-type]
    assert not withheld.show and withheld.probability == Decimal("0.9")
    assert shown.show and shown.probability == Decimal("0.1")
    assert withheld.value_of_showing == Decimal("-0.105")
    assert withheld.expected_encs == Decimal("-0.115")


def test_the_show_share_is_the_share_of_negative_drafts_shown_with_a_seeded_draw() -> None:
    p = ActionProbabilities(use=0.0, edit=0.1, ignore=0.9)
    rng = random.Random(18)
    shown = sum(
        show_decision(
            probabilities=p,
            values=VALUES,
            cost=Decimal(0),
            show_share=Decimal("0.2"),
            draw=rng.random,
        ).show
        for _ in range(5000)
    )
    # Binomial(5000, 0.2): sd ≈ 28; the seed makes it exact, the bound makes it meaningful.
    assert abs(shown - 1000) < 100


@pytest.mark.parametrize(("share", "shown"), [("0", False), ("1", True)])
def test_a_share_of_zero_always_withholds_and_one_never_does(share: str, shown: bool) -> None:
    def no_draw() -> float:
        raise AssertionError("no draw is needed")

    decision = show_decision(
        probabilities=ActionProbabilities(use=0.0, edit=0.0, ignore=1.0),
        values=VALUES,
        cost=Decimal(0),
        show_share=Decimal(share),
        draw=no_draw,
    )
    assert decision.show is shown
    assert decision.probability == Decimal(1)
