"""Decisions with ENCS per message: the team's action values, and whether a draft is shown.

Accounting measures what an agent's action on a draft is worth to a team (S_use, S_edit,
S_ignore, and a second of an agent's wait) and hands the figures to drafting through
`action_values_store`: drafting decides with them and never imports accounting.

Withholding (CascadePolicy.withhold_negative, off by default): when a draft is ready, its
expected ENCS of showing is worked out from the learned scorer's P(good), split into the three
actions (drafting.learning.withholding, stored with the scorer version), and the team's action
values (drafting.engine.decisions does the arithmetic). A draft worth less than nothing to the
agent is withheld, except for a random share still shown. Nothing is withheld unless the policy
withholds, a learned scorer is in force and judged the draft, and the team has action values:
otherwise the draft is shown and `expected_encs` stays null.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from csbot.memo import Memo
from drafting.engine.decisions import (
    ActionSplit,
    ActionValuesUSD,
    ShowDecision,
    show_decision,
)
from drafting.models import ActionValues, CascadePolicy, Draft, TrainedClassifier

# --- Action values (written by accounting) ----------------------------------------------------


def action_values_store(
    *,
    team_id: int,
    s_use: Decimal,
    s_edit: Decimal,
    s_ignore: Decimal,
    wait_per_second: Decimal,
    n_actions: int,
    computed_at: datetime | None = None,
) -> ActionValues:
    """Store the team's action values (one row per team, replaced): USD per draft of each
    action, USD per second of an agent's wait, and how many actions they were measured on."""
    values, _ = ActionValues.objects.update_or_create(
        team_id=team_id,
        defaults={
            "s_use": s_use,
            "s_edit": s_edit,
            "s_ignore": s_ignore,
            "wait_per_second": wait_per_second,
            "n_actions": n_actions,
            "computed_at": computed_at or timezone.now(),
        },
    )
    return values


# --- Withholding (worker) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Withholding:
    """What deciding a policy's drafts needs, when it can decide at all."""

    policy_id: int
    show_share: Decimal
    scorer_id: int  # the learned scorer in force; only its judgements are decided on
    split: ActionSplit
    values: ActionValuesUSD


# Read for every draft of a policy that withholds; changed by an admin, a training run or the
# accounting task now and then: remembered a few seconds per process (csbot.memo).
_withholdings: Memo[int, Withholding | None] = Memo(
    depends_on=(CascadePolicy, ActionValues, TrainedClassifier)
)


def _load_withholding(policy_id: int) -> Withholding | None:
    policy = (
        CascadePolicy.objects.filter(pk=policy_id)
        .values("team_id", "withhold_negative", "withhold_show_share")
        .first()
    )
    if policy is None or not policy["withhold_negative"]:
        return None
    scorer = (
        TrainedClassifier.objects.filter(
            kind=TrainedClassifier.Kind.SCORER, policy_id=policy_id, active=True
        )
        .values_list("pk", "metrics")
        .first()
    )
    if scorer is None:
        return None
    metrics: dict[str, Any] = scorer[1] or {}
    split = ActionSplit.from_json(metrics.get("action_split"))
    values = (
        ActionValues.objects.filter(team_id=policy["team_id"])
        .values_list("s_use", "s_edit", "s_ignore")
        .first()
    )
    if split is None or values is None:
        return None
    return Withholding(
        policy_id=policy_id,
        show_share=policy["withhold_show_share"],
        scorer_id=scorer[0],
        split=split,
        values=ActionValuesUSD(s_use=values[0], s_edit=values[1], s_ignore=values[2]),
    )


def withholding_for(*, policy_id: int) -> Withholding | None:
    """What deciding the policy's drafts needs, or None when nothing can be withheld: the
    policy does not withhold, has no active learned scorer (or one trained before the action
    split was stored with it), or its team has no action values yet."""
    return _withholdings.get(policy_id, lambda: _load_withholding(policy_id))


def draft_decide(
    *,
    withholding: Withholding | None,
    score: float | None,
    scorer_id: int | None,
    cost: Decimal,
    draw: Callable[[], float] = random.random,
) -> ShowDecision | None:
    """Show or withhold a ready draft judged `score` by scorer `scorer_id`, whose attempts cost
    `cost`. None (shown, nothing recorded) unless withholding applies and the learned scorer in
    force judged the draft (a draft the default scorer judged, after an embedding failure, a
    cache hit or a macro offer have no calibrated P(good))."""
    if withholding is None or score is None or scorer_id != withholding.scorer_id:
        return None
    return show_decision(
        probabilities=withholding.split.probabilities(score),
        values=withholding.values,
        cost=cost,
        show_share=withholding.show_share,
        draw=draw,
    )


def decision_columns(decision: ShowDecision | None) -> dict[str, Any]:
    """The draft's columns for the decision, as `_finish` stores them with the ready draft:
    its status (withheld or ready), the value of showing (`_finish` subtracts the draft's total
    cost to record expected ENCS) and the decision's probability."""
    if decision is None:
        return {}
    return {
        "status": Draft.Status.READY if decision.show else Draft.Status.WITHHELD,
        "value_of_showing": decision.value_of_showing,
        "decision_probability": decision.probability,
    }
