"""Whether to show a draft: its expected ENCS, and the show/withhold decision (issue 18).

An ignored draft costs the agent reading time (S_ignore < 0), so a draft the agent will most
likely ignore is worth less than no draft. For one draft:

    E = P(use)·S_use + P(edit)·S_edit + P(ignore)·S_ignore − cost

is its expected ENCS if shown (`expected_encs`, recorded on the draft). The decision, though,
is taken after the draft's attempts were paid for: showing and withholding both carry that
cost, so it cancels out of the comparison. Withholding earns 0 (the agent writes unaided, as
without csbot); showing earns V = E + cost, the value of showing (`value_of_showing`). A draft
is withheld when V < 0, not when E < 0: withholding a draft whose V is positive but below its
cost would throw away V to "save" money already spent (docs/decisions.md).

A withheld-would-be draft is still shown with probability `show_share`, drawn at random, so
the actions on those keep measuring what withholding gives up; `probability` is the
probability of the decision actually taken (the propensity that off-policy estimates divide by).

Pure arithmetic: no database, no scikit-learn. The action probabilities come from the learned
scorer's P(good) through an `ActionSplit` fitted in drafting.learning.withholding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

ONE = Decimal(1)
ZERO = Decimal(0)
# Probabilities are stored with four places (Draft.decision_probability).
PROBABILITY = Decimal("0.0001")
MONEY = Decimal("0.0000000001")


@dataclass(frozen=True)
class ActionProbabilities:
    """P(use), P(edit), P(ignore) of one draft, summing to 1."""

    use: float
    edit: float
    ignore: float


@dataclass(frozen=True)
class ActionSplit:
    """How the learned scorer's P(good) splits into the three actions.

    The scorer's label is good = used, or edited within SCORER_GOOD_EDIT_PERCENT; bad = a
    heavier edit, or ignored. Given good, the agent used the draft with probability
    `use_given_good` (else a light edit); given bad, a heavy edit with probability
    `edit_given_bad` (else an ignore). So, with p = P(good):

        P(use) = p·u,   P(edit) = p·(1 − u) + (1 − p)·e,   P(ignore) = (1 − p)·(1 − e)

    The scorer's own (Platt-calibrated, out-of-fold) probability carries the draft's quality;
    the split carries the policy's habits, from its labelled drafts."""

    use_given_good: float
    edit_given_bad: float
    n_good: int = 0
    n_bad: int = 0

    def __post_init__(self) -> None:
        for name in ("use_given_good", "edit_given_bad"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability, got {value}")

    def probabilities(self, p_good: float) -> ActionProbabilities:
        p = min(1.0, max(0.0, p_good))
        use = p * self.use_given_good
        ignore = (1.0 - p) * (1.0 - self.edit_given_bad)
        return ActionProbabilities(use=use, edit=1.0 - use - ignore, ignore=ignore)

    def as_json(self) -> dict[str, float | int]:
        return {
            "use_given_good": self.use_given_good,
            "edit_given_bad": self.edit_given_bad,
            "n_good": self.n_good,
            "n_bad": self.n_bad,
        }

    @classmethod
    def from_json(cls, data: object) -> ActionSplit | None:
        """The split stored with a scorer version (TrainedClassifier.metrics), None when the
        version has none or it is malformed."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                use_given_good=float(data["use_given_good"]),
                edit_given_bad=float(data["edit_given_bad"]),
                n_good=int(data.get("n_good", 0)),
                n_bad=int(data.get("n_bad", 0)),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class ActionValuesUSD:
    """What each action on a draft is worth to the team, USD per draft (accounting measures
    them: S_a = R × (T_baseline − mean handle time of action a) / 3600)."""

    s_use: Decimal
    s_edit: Decimal
    s_ignore: Decimal


@dataclass(frozen=True)
class ShowDecision:
    show: bool
    expected_encs: Decimal  # E = V − cost: the draft's expected ENCS if shown
    value_of_showing: Decimal  # V = Σ P(a)·S_a: what showing adds to not showing
    probability: Decimal  # of the decision taken: 1, show_share or 1 − show_share


def _p(value: float) -> Decimal:
    return Decimal(repr(value))


def value_of_showing(probabilities: ActionProbabilities, values: ActionValuesUSD) -> Decimal:
    """V = P(use)·S_use + P(edit)·S_edit + P(ignore)·S_ignore, USD."""
    return (
        _p(probabilities.use) * values.s_use
        + _p(probabilities.edit) * values.s_edit
        + _p(probabilities.ignore) * values.s_ignore
    ).quantize(MONEY)


def expected_encs(
    probabilities: ActionProbabilities, values: ActionValuesUSD, *, cost: Decimal
) -> Decimal:
    """The issue's E = V − cost: the draft's expected ENCS if shown, USD."""
    return (value_of_showing(probabilities, values) - cost).quantize(MONEY)


def show_decision(
    *,
    probabilities: ActionProbabilities,
    values: ActionValuesUSD,
    cost: Decimal,
    show_share: Decimal,
    draw: Callable[[], float],
) -> ShowDecision:
    """Show a draft whose value of showing is ≥ 0 (probability 1); one worth less than nothing
    is withheld with probability 1 − show_share and shown with probability show_share, by
    `draw()` (uniform on [0, 1)). A share of 1 never withholds, 0 always does (no draw is
    needed then, nor made)."""
    if not ZERO <= show_share <= ONE:
        raise ValueError(f"show_share must be a share, got {show_share}")
    value = value_of_showing(probabilities, values)
    encs = (value - cost).quantize(MONEY)
    if value >= ZERO:
        return ShowDecision(show=True, expected_encs=encs, value_of_showing=value, probability=ONE)
    if show_share == ONE:
        shown = True
    elif show_share == ZERO:
        shown = False
    else:
        shown = _p(draw()) < show_share
    probability = show_share if shown else ONE - show_share
    return ShowDecision(
        show=shown,
        expected_encs=encs,
        value_of_showing=value,
        probability=probability.quantize(PROBABILITY),
    )
