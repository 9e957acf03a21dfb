"""drafting.learning.optimiser on small hand-made tables whose best plans can be worked out by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from drafting.learning.optimiser import (
    CascadeTable,
    Plan,
    Tier,
    optimise,
    outcome,
    pareto,
    preview,
    sweep,
)

# Four items, three models: "cheap" ($1) is right on items 0 and 1, "mid" ($3) on 0–2,
# "big" ($10) on all. cheap's scorer ranks its right answers highest; mid's scorer after
# cheap does the same for mid.
QUALITY = np.array([[1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 0, 1]], dtype=float)
COST = np.array([[1, 3, 10]] * 4, dtype=float)
SCORES = {
    ("cheap",): np.array([0.9, 0.8, 0.3, 0.2]),
    ("mid",): np.array([0.9, 0.9, 0.7, 0.1]),
    ("cheap", "mid"): np.array([0.95, 0.9, 0.8, 0.1]),
}


def _table() -> CascadeTable:
    return CascadeTable(["cheap", "mid", "big"], QUALITY, COST, SCORES)


def test_outcome_follows_thresholds_and_charges_every_tier_reached() -> None:
    table = _table()
    tiers = [Tier("cheap", 0.5), Tier("mid", 0.5), Tier("big", 0.0)]
    quality, cost, stopped = outcome(table, tiers)
    # Items 0, 1 stop at cheap; item 2 (cheap's g 0.3) goes to mid (g 0.8) and stops; item 3
    # goes all the way.
    assert stopped.tolist() == [0, 0, 1, 2]
    assert cost.tolist() == [1, 1, 4, 14]
    assert quality.tolist() == [1, 1, 1, 1]
    plan = preview(table, tiers, value=20.0)
    assert plan.accuracy == 1.0
    assert plan.cost_per_query == pytest.approx(5.0)
    assert plan.encs_per_query == pytest.approx(15.0)
    assert plan.stop_share == [0.5, 0.25, 0.25]


def test_cheapest_plan_at_full_accuracy_is_the_three_tier_chain() -> None:
    # By hand: big alone costs 10; cheap→big (stop on 0, 1) 1 + 0.5·10 = 6; mid→big (stop on
    # 0–2) 3 + 2.5 = 5.5; cheap→mid→big 1 + 0.5·3 + 0.25·10 = 5, all at accuracy 1.
    plan = optimise(_table(), objective="cost", target_accuracy=1.0)
    assert plan.chain == ("cheap", "mid", "big")
    assert plan.accuracy == 1.0
    assert plan.cost_per_query == pytest.approx(5.0)
    # The thresholds reproduce the stops the arithmetic assumed.
    assert outcome(_table(), plan.tiers)[2].tolist() == [0, 0, 1, 2]


def test_quality_within_budget() -> None:
    table = _table()
    # $1 buys cheap alone (0.5); $3 buys mid alone (0.75) or cheap→mid: 1 + 0.5·3 = 2.5 for
    # 0.75 — the cheaper of the two most accurate plans.
    assert optimise(table, objective="quality", budget=1.0).accuracy == 0.5
    plan = optimise(table, objective="quality", budget=3.0)
    assert plan.accuracy == 0.75
    assert plan.cost_per_query == pytest.approx(2.5)
    assert plan.chain == ("cheap", "mid")
    # Nothing fits under $0.5: the cheapest plan is returned rather than an error.
    assert optimise(table, objective="quality", budget=0.5).chain == ("cheap",)


def test_pareto_is_monotone_in_budget() -> None:
    plans = pareto(_table(), [1.0, 3.0, 5.0, 100.0])
    assert [p.accuracy for p in plans] == [0.5, 0.75, 1.0, 1.0]
    assert all(p.cost_per_query <= b + 1e-9 for p, b in zip(plans, [1, 3, 5, 100], strict=True))


def test_encs_objective_depends_on_the_value_of_a_right_answer() -> None:
    # Value 2: cheap alone earns 2·0.5 − 1 = 0; mid alone 2·0.75 − 3 < 0 … cheap wins.
    assert optimise(_table(), objective="encs", value=2.0).chain == ("cheap",)
    # Value 100: accuracy dominates, the cheapest full-accuracy plan (5) wins: 100 − 5.
    plan = optimise(_table(), objective="encs", value=100.0)
    assert plan.encs_per_query == pytest.approx(95.0)
    assert plan.chain == ("cheap", "mid", "big")


def test_sweep_matches_brute_force_on_a_random_table() -> None:
    rng = np.random.default_rng(3)
    n = 60
    quality = (rng.random((n, 3)) < [0.5, 0.7, 0.9]).astype(float)
    cost = np.tile([1.0, 2.0, 8.0], (n, 1))
    scores = {("a",): rng.random(n), ("a", "b"): rng.random(n)}
    table = CascadeTable(["a", "b", "c"], quality, cost, scores)
    result = sweep(table, ("a", "b", "c"), grid=6)
    for i, j in itertools.product(range(len(result.grids[0])), range(len(result.grids[1]))):
        tiers = [Tier("a", result.grids[0][i]), Tier("b", result.grids[1][j]), Tier("c", 0.0)]
        plan = preview(table, tiers)
        assert result.accuracy[i, j] == pytest.approx(plan.accuracy)
        assert result.cost[i, j] == pytest.approx(plan.cost_per_query)


def test_confidence_asks_more_of_a_plan_that_departs_from_the_reference() -> None:
    # Two models on 100 items, both right on 96: "small" ($1) is wrong on 0–3, "large" ($10)
    # on 4–7. Small alone matches large's accuracy at a tenth of the cost, but they differ on
    # 8 items, so that tie is a noisy promise: with a two-standard-error guard the plan must
    # pass small's doubtful items (0–3, scored lowest) on to large. Then it is right on 100,
    # 4 ahead of large, which clears the guard (100 − 2·1.97 ≥ 96) for $1.40.
    n = 100
    small = np.ones(n)
    large = np.ones(n)
    small[:4] = 0
    large[4:8] = 0
    g = np.linspace(0.0, 1.0, n)  # small's doubtful items (0–3) score lowest
    table = CascadeTable(
        ["small", "large"],
        np.column_stack([small, large]),
        np.tile([1.0, 10.0], (n, 1)),
        {("small",): g},
    )
    target = table.accuracy("large")
    # A grid as fine as the items, so the exact stop is among the candidates.
    bold = optimise(table, objective="cost", target_accuracy=target, grid=n)
    careful = optimise(
        table, objective="cost", target_accuracy=target, reference="large", confidence=2.0, grid=n
    )
    assert bold.chain == ("small",)
    assert careful.chain == ("small", "large")
    assert careful.accuracy == 1.0
    assert careful.cost_per_query == pytest.approx(1.4)


def test_plan_round_trips_through_a_dict() -> None:
    plan = optimise(_table(), objective="cost", target_accuracy=1.0, value=50.0)
    again = Plan.from_dict(plan.to_dict())
    assert again.chain == plan.chain
    assert again.accuracy == pytest.approx(plan.accuracy)
    assert [t.threshold for t in again.tiers] == pytest.approx([t.threshold for t in plan.tiers])


def test_bad_tables_and_objectives_are_refused() -> None:
    with pytest.raises(ValueError, match="must be"):
        CascadeTable(["a", "b"], np.array([[1.0, 0.0]]), np.array([[1.0]]))
    with pytest.raises(ValueError, match="rows"):
        CascadeTable(["a"], np.ones((2, 1)), np.ones((2, 1)), {("a",): np.array([0.5])})
    with pytest.raises(ValueError, match="budget"):
        optimise(_table(), objective="quality")
    with pytest.raises(ValueError, match="target"):
        optimise(_table(), objective="cost")
    with pytest.raises(ValueError, match="value"):
        optimise(_table(), objective="encs")
