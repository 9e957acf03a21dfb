"""Withholding drafts, simulated with known action probabilities (no database).

Each simulated draft has a true P(good) drawn from a Beta distribution, split into P(use),
P(edit), P(ignore) by an ActionSplit, and a cost; the scorer's estimate is the true P(good)
moved by Gaussian noise on the logit scale (`noise` 0: a perfectly calibrated scorer). The agent's
action on each draft is drawn once from the true probabilities and reused by every policy
(common random numbers), so the policies differ only by what they decide:

- show all: every draft shown, ENCS = S_action − cost;
- withhold: drafts whose estimated value of showing is negative are withheld (ENCS = −cost)
  except a random `show_share` of them (drafting.engine.decisions.show_decision).

The exploration share's cost is what showing the would-be-withheld drafts anyway gives up
against withholding them all: Σ over those drafts of −S_action (realised) per message.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import Decimal

from drafting.engine.decisions import ActionSplit, ActionValuesUSD, show_decision

VALUES = ActionValuesUSD(s_use=Decimal("0.90"), s_edit=Decimal("0.45"), s_ignore=Decimal("-0.40"))
SPLIT = ActionSplit(use_given_good=0.7, edit_given_bad=0.3)


@dataclass(frozen=True)
class SimulationResult:
    messages: int
    withheld: int
    shown_negative: int  # negative estimate, shown by the show share
    show_all_encs_per_message: Decimal
    withhold_encs_per_message: Decimal
    exploration_cost_per_message: Decimal  # what the show share gave up, realised

    @property
    def gain_per_message(self) -> Decimal:
        return self.withhold_encs_per_message - self.show_all_encs_per_message

    def as_json(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "withheld": self.withheld,
            "shown_negative": self.shown_negative,
            "show_all_encs_per_message_usd": str(self.show_all_encs_per_message),
            "withhold_encs_per_message_usd": str(self.withhold_encs_per_message),
            "gain_per_message_usd": str(self.gain_per_message),
            "exploration_cost_per_message_usd": str(self.exploration_cost_per_message),
        }


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def simulate(
    *,
    seed: int,
    messages: int = 10_000,
    show_share: Decimal = Decimal("0.1"),
    noise: float = 0.0,
    good_alpha: float = 2.0,
    good_beta: float = 2.0,
    cost: Decimal = Decimal("0.002"),
    values: ActionValuesUSD = VALUES,
    split: ActionSplit = SPLIT,
) -> SimulationResult:
    """One seeded run of `messages` drafts under both policies (see the module docstring)."""
    rng = random.Random(seed)  # noqa: S311 - a seeded simulation, not secrets
    worth = {"use": values.s_use, "edit": values.s_edit, "ignore": values.s_ignore}
    show_all = withhold = gave_up = Decimal(0)
    withheld = shown_negative = 0
    for _ in range(messages):
        true_good = rng.betavariate(good_alpha, good_beta)
        estimate = _sigmoid(_logit(true_good) + rng.gauss(0.0, noise)) if noise else true_good
        truth = split.probabilities(true_good)
        u = rng.random()
        action = "use" if u < truth.use else ("edit" if u < truth.use + truth.edit else "ignore")
        decision = show_decision(
            probabilities=split.probabilities(estimate),
            values=values,
            cost=cost,
            show_share=show_share,
            draw=rng.random,
        )
        encs_shown = worth[action] - cost
        show_all += encs_shown
        if decision.show:
            withhold += encs_shown
            if decision.value_of_showing < 0:
                shown_negative += 1
                gave_up += -worth[action]
        else:
            withheld += 1
            withhold += -cost
    places = Decimal("0.000001")
    return SimulationResult(
        messages=messages,
        withheld=withheld,
        shown_negative=shown_negative,
        show_all_encs_per_message=(show_all / messages).quantize(places),
        withhold_encs_per_message=(withhold / messages).quantize(places),
        exploration_cost_per_message=(gave_up / messages).quantize(places),
    )
