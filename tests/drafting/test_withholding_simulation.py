"""Withholding simulated with known action probabilities (drafting.evaluation.withholding, no
database): ENCS per message rises when drafts worth less than nothing are withheld, and never
falls below showing every draft by more than what the show share gives up."""

from __future__ import annotations

from decimal import Decimal

import pytest

from drafting.evaluation.withholding import simulate

SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
def test_withholding_negative_drafts_raises_encs_per_message(seed: int) -> None:
    result = simulate(seed=seed, messages=4000)
    assert result.withheld > 0
    assert result.withhold_encs_per_message > result.show_all_encs_per_message
    # Never below showing all by more than the show share's cost.
    assert result.gain_per_message >= -result.exploration_cost_per_message


@pytest.mark.parametrize("seed", SEEDS)
def test_the_show_share_is_all_withholding_gives_up_against_withholding_every_negative(
    seed: int,
) -> None:
    shown = simulate(seed=seed, messages=4000, show_share=Decimal("0.1"))
    # About a tenth of the negative drafts are shown anyway (binomial, seeded).
    negatives = shown.withheld + shown.shown_negative
    assert 0.05 < shown.shown_negative / negatives < 0.15
    assert shown.withhold_encs_per_message >= (
        shown.show_all_encs_per_message - shown.exploration_cost_per_message
    )


def test_when_every_draft_is_worth_showing_nothing_is_withheld_and_encs_is_unchanged() -> None:
    result = simulate(seed=3, messages=3000, good_alpha=9.0, good_beta=1.0)
    assert result.withheld == 0
    assert result.withhold_encs_per_message == result.show_all_encs_per_message
