"""Cascade optimiser: which models, in which order, with which thresholds (FrugalGPT §3).

Input is a table of items × models: per item and model the answer's quality (1 correct /
0 wrong, or a value in between), its cost in USD, and a scorer's g ∈ [0, 1] for that answer.
A plan is an ordered list of tiers, cheap to expensive, each with a threshold: ask tier 1;
if its g ≥ τ1 keep its answer, else ask tier 2, and so on; the last tier's answer is always
kept. An item pays for every tier it reached.

g may depend on what the chain already knows (agreement with the earlier tiers' answers is the
strongest signal there is), so scores are keyed by chain prefix: `scores[("a", "b")]` is g of
b's answer after a's. A key of the model alone serves any prefix.

Objectives:
- "quality": maximise expected quality within a cost budget per query (FrugalGPT's);
- "cost": the cheapest plan that reaches a target quality (how the replay matches GPT-4);
- "encs": maximise value × quality − cost per query, value being the labour a good answer
  saves (csbot's ENCS per message).

Pure numpy, no Django: the product (logged attempts) and the replay share it. Every
(chain, thresholds) candidate is evaluated at once per chain: the thresholds form a grid and
the table's rows are summed with broadcasting, so thousands of plans cost one array pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Chain = tuple[str, ...]
Objective = Literal["quality", "cost", "encs"]

DEFAULT_GRID = 40
MAX_TIERS = 3
# Cells of the largest (items × thresholds^(tiers-1)) array one chain may build.
MAX_CELLS = 4_000_000


@dataclass(frozen=True)
class Tier:
    model: str
    threshold: float  # keep this tier's answer when g ≥ threshold; the last tier keeps all


@dataclass
class Plan:
    tiers: list[Tier]
    accuracy: float  # expected quality per query (accuracy when quality is 1/0)
    cost_per_query: float
    encs_per_query: float | None = None  # value × quality − cost, when a value was given
    stop_share: list[float] = field(default_factory=list)  # share of items kept at each tier

    @property
    def chain(self) -> Chain:
        return tuple(tier.model for tier in self.tiers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tiers": [{"model": t.model, "threshold": round(t.threshold, 6)} for t in self.tiers],
            "accuracy": round(self.accuracy, 6),
            "cost_per_query": round(self.cost_per_query, 8),
            "encs_per_query": None
            if self.encs_per_query is None
            else round(self.encs_per_query, 8),
            "stop_share": [round(share, 4) for share in self.stop_share],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            tiers=[Tier(str(t["model"]), float(t["threshold"])) for t in data["tiers"]],
            accuracy=float(data.get("accuracy", 0.0)),
            cost_per_query=float(data.get("cost_per_query", 0.0)),
            encs_per_query=data.get("encs_per_query"),
            stop_share=list(data.get("stop_share", [])),
        )


@dataclass
class CascadeTable:
    """Items × models. `quality` and `cost` are (items, models); `scores` maps a chain prefix
    to g (items,) of its last model's answer given the earlier tiers' answers."""

    models: list[str]
    quality: Array
    cost: Array
    scores: dict[Chain, Array] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.quality = np.asarray(self.quality, dtype=np.float64)
        self.cost = np.asarray(self.cost, dtype=np.float64)
        expected = (self.quality.shape[0], len(self.models))
        if self.quality.shape != expected or self.cost.shape != expected:
            raise ValueError(
                f"quality {self.quality.shape} and cost {self.cost.shape} must be {expected}"
            )
        self.scores = {
            tuple(k): np.asarray(v, dtype=np.float64).reshape(-1) for k, v in self.scores.items()
        }
        for key, values in self.scores.items():
            if len(values) != self.n:
                raise ValueError(f"scores{key} has {len(values)} rows for {self.n} items")

    @property
    def n(self) -> int:
        return int(self.quality.shape[0])

    def index(self, model: str) -> int:
        return self.models.index(model)

    def score(self, chain: Sequence[str]) -> Array | None:
        """g of chain[-1]'s answer after the earlier tiers: the prefix's own scores, else the
        model's prefix-free ones."""
        found = self.scores.get(tuple(chain))
        return found if found is not None else self.scores.get((chain[-1],))

    def mean_cost(self, model: str) -> float:
        return float(self.cost[:, self.index(model)].mean())

    def accuracy(self, model: str) -> float:
        return float(self.quality[:, self.index(model)].mean())

    def rows(self, index: npt.ArrayLike) -> CascadeTable:
        """The same table on a subset of items."""
        idx = np.asarray(index)
        return CascadeTable(
            models=list(self.models),
            quality=self.quality[idx],
            cost=self.cost[idx],
            scores={k: v[idx] for k, v in self.scores.items()},
        )


# --- Evaluating a plan -------------------------------------------------------------------------


def outcome(table: CascadeTable, tiers: Sequence[Tier]) -> tuple[Array, Array, npt.NDArray[Any]]:
    """Per item: the quality of the kept answer, the cost paid, and the tier that answered."""
    if not tiers:
        raise ValueError("A plan needs at least one tier.")
    n = table.n
    quality = np.zeros(n)
    cost = np.zeros(n)
    stopped = np.full(n, len(tiers) - 1)
    open_ = np.ones(n, dtype=bool)
    for position, tier in enumerate(tiers):
        column = table.index(tier.model)
        cost[open_] += table.cost[open_, column]
        if position == len(tiers) - 1:
            keep = open_
        else:
            g = table.score([t.model for t in tiers[: position + 1]])
            if g is None:
                raise ValueError(f"No scores for {tier.model} after {tiers[:position]}")
            keep = open_ & (g >= tier.threshold)
        quality[keep] = table.quality[keep, column]
        stopped[keep] = position
        open_ &= ~keep
    return quality, cost, stopped


def preview(table: CascadeTable, tiers: Sequence[Tier], *, value: float | None = None) -> Plan:
    """Expected accuracy, cost and ENCS per query of `tiers` on the table's items."""
    quality, cost, stopped = outcome(table, tiers)
    accuracy, cost_per_query = float(quality.mean()), float(cost.mean())
    return Plan(
        tiers=list(tiers),
        accuracy=accuracy,
        cost_per_query=cost_per_query,
        encs_per_query=None if value is None else value * accuracy - cost_per_query,
        stop_share=(np.bincount(stopped, minlength=len(tiers)) / table.n).tolist(),
    )


# --- Search ------------------------------------------------------------------------------------


def threshold_grid(g: Array, size: int = DEFAULT_GRID) -> Array:
    """Candidate thresholds: quantiles of the scores (so each step moves a similar share of
    items), the lowest one keeping every item."""
    values = np.unique(g)
    if len(values) <= size:
        return values
    return np.unique(np.quantile(g, np.linspace(0.0, 1.0, size), method="lower"))


def candidate_chains(
    table: CascadeTable,
    *,
    max_tiers: int = MAX_TIERS,
    models: Sequence[str] | None = None,
    last: str | None = None,
) -> list[Chain]:
    """Every subset of up to `max_tiers` models, ordered cheap → expensive (mean cost),
    whose every non-last tier has scores; `last` forces the final tier."""
    pool = sorted(models if models is not None else table.models, key=table.mean_cost)
    chains: list[Chain] = []
    for size in range(1, max_tiers + 1):
        for chain in itertools.combinations(pool, size):
            if last is not None and chain[-1] != last:
                continue
            if all(table.score(chain[: i + 1]) is not None for i in range(size - 1)):
                chains.append(chain)
    return chains


@dataclass
class Sweep:
    """Every threshold combination of one chain: `grids[i]` are tier i's thresholds;
    accuracy and cost are arrays over the grid (one axis per non-last tier)."""

    chain: Chain
    grids: list[Array]
    accuracy: Array
    cost: Array
    # Standard error of the mean paired difference (plan − reference) per item, when a
    # reference quality column was given: how far the accuracy could move on other rows.
    gap_se: Array | None = None

    def tiers(self, flat_index: int) -> list[Tier]:
        position = np.unravel_index(flat_index, self.accuracy.shape) if self.grids else ()
        thresholds = [float(grid[i]) for grid, i in zip(self.grids, position, strict=True)]
        return [
            Tier(model, thresholds[i] if i < len(thresholds) else 0.0)
            for i, model in enumerate(self.chain)
        ]


def sweep(
    table: CascadeTable,
    chain: Chain,
    *,
    grid: int = DEFAULT_GRID,
    reference: Array | None = None,
) -> Sweep:
    """Accuracy and cost of `chain` under every threshold combination of the grid.

    Walks the chain backwards: the value of reaching tier j is, per item and thresholds,
    keep(j)·q_j + (1 − keep(j))·value(j+1), and the cost c_j + (1 − keep(j))·cost(j+1); each
    tier adds one axis. The grid shrinks for long chains to keep the arrays bounded."""
    free = len(chain) - 1
    size = int(max(2, min(grid, (MAX_CELLS / max(table.n, 1)) ** (1 / max(free, 1)))))
    columns = [table.index(model) for model in chain]
    value = table.quality[:, columns[-1]].copy()
    cost = table.cost[:, columns[-1]].copy()
    grids: list[Array] = []
    for j in range(free - 1, -1, -1):
        g = table.score(chain[: j + 1])
        assert g is not None  # candidate_chains checked
        thresholds = threshold_grid(g, size)
        keep = (g[:, None] >= thresholds[None, :]).astype(np.float64)  # (n, K_j)
        # Broadcast keep over the later tiers' axes.
        keep = keep.reshape(keep.shape + (1,) * (value.ndim - 1))
        value = (
            keep * table.quality[:, columns[j]].reshape((-1,) + (1,) * value.ndim)
            + (1 - keep) * value[:, None]
        )
        cost = (
            table.cost[:, columns[j]].reshape((-1,) + (1,) * cost.ndim) + (1 - keep) * cost[:, None]
        )
        grids.insert(0, thresholds)
    gap_se = None
    if reference is not None:
        gap = value - np.asarray(reference, dtype=np.float64).reshape(
            (-1,) + (1,) * (value.ndim - 1)
        )
        spread = (gap**2).mean(axis=0) - gap.mean(axis=0) ** 2
        gap_se = np.sqrt(np.maximum(spread, 0.0) / max(table.n - 1, 1))
    return Sweep(
        chain=chain,
        grids=grids,
        accuracy=value.mean(axis=0),
        cost=cost.mean(axis=0),
        gap_se=gap_se,
    )


def _pick(
    acc: Array,
    cost: Array,
    objective: Objective,
    *,
    budget: float | None,
    target: float | None,
    value: float | None,
    lower: Array | None = None,
) -> tuple[int, tuple[float, ...]]:
    """The best cell of one sweep and its sort key (larger is better). `lower` is the
    accuracy a "cost" plan must show against the target (its cautious estimate)."""
    acc, cost = acc.reshape(-1), cost.reshape(-1)
    lower = acc if lower is None else lower.reshape(-1)
    if objective == "encs":
        assert value is not None
        gain = value * acc - cost
        best = int(np.lexsort((-cost, gain))[-1])
        return best, (1.0, float(gain[best]), -float(cost[best]))
    if objective == "quality":
        assert budget is not None
        feasible = cost <= budget + 1e-12
        if feasible.any():
            # Highest accuracy within budget; among equals, the cheaper.
            masked = np.where(feasible, acc, -np.inf)
            best = int(np.lexsort((-cost, masked))[-1])
            return best, (1.0, float(acc[best]), -float(cost[best]))
        best = int(np.argmin(cost))
        return best, (0.0, -float(cost[best]), float(acc[best]))
    assert target is not None
    feasible = lower >= target - 1e-12
    if feasible.any():
        masked = np.where(feasible, -cost, -np.inf)
        best = int(np.lexsort((lower, masked))[-1])
        return best, (1.0, -float(cost[best]), float(lower[best]))
    best = int(np.lexsort((-cost, lower))[-1])
    return best, (0.0, float(lower[best]), -float(cost[best]))


def optimise(
    table: CascadeTable,
    *,
    objective: Objective,
    budget: float | None = None,
    target_accuracy: float | None = None,
    value: float | None = None,
    max_tiers: int = MAX_TIERS,
    chains: Sequence[Chain] | None = None,
    grid: int = DEFAULT_GRID,
    reference: str | None = None,
    confidence: float = 0.0,
) -> Plan:
    """The best plan on the table for the objective (see the module docstring).

    Infeasible constraints degrade rather than fail: no plan within budget → the cheapest; no
    plan reaching the target → the most accurate. `Plan.accuracy`/`cost_per_query` are on the
    table given (pass out-of-fold scores, or the choice flatters itself).

    With objective "cost", `reference` (a model of the table) and `confidence` z > 0, a plan
    must reach the target with its accuracy less z standard errors of its per-item difference
    from the reference: a plan that answers many items differently from the reference is a
    noisier promise than one that mostly passes them on, and needs more room."""
    if objective == "quality" and budget is None:
        raise ValueError("objective 'quality' needs a budget per query")
    if objective == "cost" and target_accuracy is None:
        raise ValueError("objective 'cost' needs a target accuracy")
    if objective == "encs" and value is None:
        raise ValueError("objective 'encs' needs the value of a good answer")
    candidates = (
        list(chains) if chains is not None else candidate_chains(table, max_tiers=max_tiers)
    )
    if not candidates:
        raise ValueError("No candidate chain: every non-last tier needs scores.")
    reference_quality = (
        table.quality[:, table.index(reference)]
        if reference is not None and objective == "cost" and confidence > 0
        else None
    )
    best_key: tuple[float, ...] | None = None
    best_tiers: list[Tier] = []
    for chain in candidates:
        result = sweep(table, chain, grid=grid, reference=reference_quality)
        lower = result.accuracy - confidence * result.gap_se if result.gap_se is not None else None
        index, key = _pick(
            result.accuracy,
            result.cost,
            objective,
            budget=budget,
            target=target_accuracy,
            value=value,
            lower=lower,
        )
        if best_key is None or key > best_key:
            best_key, best_tiers = key, result.tiers(index)
    return preview(table, best_tiers, value=value)


def pareto(
    table: CascadeTable,
    budgets: Sequence[float],
    *,
    max_tiers: int = MAX_TIERS,
    chains: Sequence[Chain] | None = None,
    grid: int = DEFAULT_GRID,
    value: float | None = None,
) -> list[Plan]:
    """The most accurate plan within each budget (the accuracy–cost frontier)."""
    return [
        optimise(
            table,
            objective="quality",
            budget=budget,
            max_tiers=max_tiers,
            chains=chains,
            grid=grid,
            value=value,
        )
        for budget in budgets
    ]
