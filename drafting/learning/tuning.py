"""Tuning a policy's thresholds from its explored drafts (issue 5, build item 5).

Exploration (`CascadePolicy.explore_share`) asks every tier of a sampled draft, so those drafts
carry each tier's answer to the same message; the agent's reply labels each answer. That is a
`CascadeTable` for the optimiser, read back from the database:

- `exploration_table(policy)`: rows = acted-on drafts with an OK, non-empty answer from every
  enabled tier; quality = the answer was within SCORER_GOOD_EDIT_PERCENT edit distance of what
  the agent sent (the learned scorer's rule), g = the score the cascade stored, cost = its cost.
- `policy_preview(policy, ...)`: the policy's thresholds now vs the optimiser's, on that table.
- `policy_apply_thresholds(policy, thresholds, user)`: writes the new thresholds, logged in
  the admin history.

The tier order stays the policy's (applying changes thresholds only); choosing another order
or other models is the replay's job (`cascade_replay`), where every model has answered.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import numpy as np
import numpy.typing as npt
from auditlog.context import set_actor
from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from drafting.engine.edits import edit_distance, is_good_edit
from drafting.learning import optimiser
from drafting.learning.shadowed import shadow_only_drafts
from drafting.models import MONEY_PLACES, AgentAction, CascadePolicy, CascadeTier, DraftAttempt

TuningObjective = Literal["encs", "quality"]

# Fewer explored drafts than this and a threshold chosen on them is mostly noise.
MIN_ROWS = 30
# Folds of the held-out estimate: at MIN_ROWS, thresholds are chosen on 24 drafts, scored on 6.
HELD_OUT_FOLDS = 5
THRESHOLD_PLACES = Decimal("0.0001")  # CascadeTier.threshold's 4 places
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
LABELLED_KINDS = (AgentAction.Kind.USE, AgentAction.Kind.EDIT, AgentAction.Kind.IGNORE)

CAVEAT = (
    "A tier's answer counts as good when it is within {percent} % edit distance of what the "
    "agent sent. Agents wrote their reply looking at the draft they were shown, so the shown "
    "tier's answers are favoured (agents anchor on it) and the others' are judged against a "
    "reply they never saw: treat the figures as a guide, not a promise."
)


class TuningError(ValueError):
    """Thresholds that cannot be applied to the policy (unknown tier, out of range)."""


# --- Reading the explored drafts ----------------------------------------------------------------


@dataclass(frozen=True)
class TierColumn:
    tier_id: int
    position: int
    endpoint_id: int
    label: str  # the table's model name: "1: endpoint-name"
    threshold: Decimal


@dataclass
class ExplorationRows:
    """What the table was built from: the tiers (its columns) and how many drafts qualified."""

    tiers: list[TierColumn]
    acted_drafts: int  # drafts with an agent action that had at least one usable answer
    rows: int  # of those, the drafts with every tier's answer (the table's rows)
    exploratory_rows: int  # rows whose later tiers were asked by exploration
    good_edit_percent: int
    tier_accuracy: list[float] = field(default_factory=list)
    tier_mean_cost: list[Decimal] = field(default_factory=list)
    draft_ids: list[int] = field(default_factory=list)  # the table's rows, in order


def policy_tier_columns(policy: CascadePolicy) -> list[TierColumn]:
    """The tiers the cascade runs for this policy: enabled endpoints, in position order."""
    tiers = (
        CascadeTier.objects.filter(policy=policy, endpoint__enabled=True)
        .select_related("endpoint")
        .order_by("position")
    )
    return [
        TierColumn(
            tier_id=tier.pk,
            position=tier.position,
            endpoint_id=tier.endpoint_id,
            label=f"{tier.position}: {tier.endpoint.name}",
            threshold=tier.threshold,
        )
        for tier in tiers
    ]


def exploration_table(
    policy: CascadePolicy,
) -> tuple[optimiser.CascadeTable, ExplorationRows]:
    """The policy's explored drafts as an optimiser table (two queries).

    Steps: read the enabled tiers; read every OK, non-empty answer of an acted-on draft of the
    policy with the agent's final text (one values() query, ordered so a retried tier's later
    answer wins); keep the drafts with an answer from every tier and a score on every tier but
    the last (the last tier's answer is always kept, its score is never compared)."""
    columns = policy_tier_columns(policy)
    rows = ExplorationRows(
        tiers=columns,
        acted_drafts=0,
        rows=0,
        exploratory_rows=0,
        good_edit_percent=settings.SCORER_GOOD_EDIT_PERCENT,
    )
    empty = optimiser.CascadeTable(
        models=[c.label for c in columns],
        quality=np.zeros((0, len(columns))),
        cost=np.zeros((0, len(columns))),
    )
    if not columns:
        return empty, rows
    # A tier is matched by position and endpoint: an attempt from before the tiers were
    # reordered or re-pointed answered for a different cascade and must not be mixed in.
    slot = {(c.position, c.endpoint_id): i for i, c in enumerate(columns)}
    attempts = (
        DraftAttempt.objects.filter(
            draft__policy=policy,
            draft__action__kind__in=LABELLED_KINDS,
            outcome=DraftAttempt.Outcome.OK,
            cache_hit=False,
            purpose=DraftAttempt.Purpose.DRAFT,  # composer rewrites answer no customer message
            endpoint_id__in=[c.endpoint_id for c in columns],
        )
        .exclude(text="")
        .order_by("draft_id", "started_at", "id")
        .values_list(
            "draft_id",
            "tier",
            "endpoint_id",
            "text",
            "score",
            "cost",
            "exploratory",
            "draft__action__final_text",
        )
    )
    k = len(columns)
    by_draft: dict[int, dict[int, tuple[str, Decimal | None, Decimal, bool, str]]] = {}
    for draft_id, tier, endpoint_id, text, score, cost, exploratory, final_text in attempts:
        i = slot.get((tier, endpoint_id))
        if i is None:
            continue
        by_draft.setdefault(draft_id, {})[i] = (text, score, cost, exploratory, final_text)
    for draft_id in shadow_only_drafts(by_draft):  # texts kept for a shadow answer: not explored
        del by_draft[draft_id]
    rows.acted_drafts = len(by_draft)

    quality: list[list[float]] = []
    costs: list[list[float]] = []
    scores: list[list[float]] = []
    for draft_id, answers in by_draft.items():
        if len(answers) < k or any(answers[i][1] is None for i in range(k - 1)):
            continue
        rows.draft_ids.append(draft_id)
        quality.append(
            [float(is_good_edit(edit_distance(answers[i][0], answers[i][4]))) for i in range(k)]
        )
        costs.append([float(answers[i][2]) for i in range(k)])
        scores.append([float(answers[i][1] or 0) for i in range(k)])
        rows.exploratory_rows += any(answers[i][3] for i in range(k))
    rows.rows = len(quality)
    if not quality:
        return empty, rows
    g = np.asarray(scores)
    table = optimiser.CascadeTable(
        models=[c.label for c in columns],
        quality=np.asarray(quality),
        cost=np.asarray(costs),
        # g of a tier's answer, whatever came before (the stored score is what the cascade
        # compared with the threshold, so it is the one to tune on).
        scores={(c.label,): g[:, i] for i, c in enumerate(columns)},
    )
    rows.tier_accuracy = [table.accuracy(c.label) for c in columns]
    rows.tier_mean_cost = [money(table.mean_cost(c.label)) for c in columns]
    return table, rows


# --- Preview ------------------------------------------------------------------------------------


def money(amount: float) -> Decimal:
    return Decimal(repr(amount)).quantize(MONEY_QUANTUM)


def threshold_of(value: float) -> Decimal:
    return Decimal(f"{value:.4f}").quantize(THRESHOLD_PLACES)


@dataclass
class PlanPreview:
    thresholds: list[Decimal]  # per tier, position order (the last tier's is never compared)
    accuracy: float  # share of messages whose kept draft would have been good
    cost_per_message: Decimal
    encs_per_message: Decimal | None  # value × accuracy − cost, when a value was given
    stop_share: list[float]  # share of messages answered at each tier


@dataclass
class HeldOut:
    folds: int
    accuracy: float
    cost_per_message: Decimal
    encs_per_message: Decimal | None


@dataclass
class TuningPreview:
    policy: CascadePolicy
    objective: TuningObjective
    rows: ExplorationRows
    current: PlanPreview | None = None
    proposed: PlanPreview | None = None
    # The proposal's method scored on drafts it did not choose on (k-fold): what to expect on
    # new messages. `proposed` is scored on the rows it was fitted to and flatters itself.
    held_out: HeldOut | None = None
    reason: str = ""  # why there is no proposal (too few rows, a missing input)
    caveat: str = ""

    @property
    def ok(self) -> bool:
        return self.proposed is not None

    @property
    def changes(self) -> bool:
        """Whether applying the proposal would change a threshold."""
        if self.current is None or self.proposed is None:
            return False
        return self.current.thresholds[:-1] != self.proposed.thresholds[:-1]


def _plan_preview(
    table: optimiser.CascadeTable,
    columns: Sequence[TierColumn],
    thresholds: Sequence[Decimal],
    value_usd: Decimal | None,
) -> PlanPreview:
    plan = optimiser.preview(
        table,
        [optimiser.Tier(c.label, float(t)) for c, t in zip(columns, thresholds, strict=True)],
        value=None if value_usd is None else float(value_usd),
    )
    return PlanPreview(
        thresholds=list(thresholds),
        accuracy=plan.accuracy,
        cost_per_message=money(plan.cost_per_query),
        encs_per_message=None if plan.encs_per_query is None else money(plan.encs_per_query),
        stop_share=[round(share, 4) for share in plan.stop_share],
    )


def policy_preview(
    policy: CascadePolicy,
    *,
    value_usd: Decimal | None,
    objective: TuningObjective = "encs",
    budget_usd: Decimal | None = None,
) -> TuningPreview:
    """The policy's current thresholds and the optimiser's, evaluated on its explored drafts.

    objective "encs": maximise value_usd × P(good draft) − cost per message (value_usd is the
    agent labour a good draft saves); "quality": the most good drafts within budget_usd per
    message. The tier order is kept: the proposal differs only in thresholds."""
    table, rows = exploration_table(policy)
    preview = TuningPreview(
        policy=policy,
        objective=objective,
        rows=rows,
        caveat=CAVEAT.format(percent=rows.good_edit_percent),
    )
    columns = rows.tiers
    if len(columns) < 2:
        preview.reason = (
            "The policy has fewer than two enabled tiers: there is no threshold to tune."
        )
        return preview
    if rows.rows < MIN_ROWS:
        share = policy.explore_share
        hint = (
            f"exploration is on ({share:.2%} of drafts): wait for more agent replies"
            if share > 0
            else "turn exploration on: set the policy's explore share (e.g. 0.05)"
        )
        preview.reason = (
            f"Only {rows.rows} drafts have every tier's answer and an agent's reply "
            f"(at least {MIN_ROWS} needed): {hint}."
        )
        return preview
    if objective == "encs" and (value_usd is None or value_usd <= 0):
        preview.reason = "Give the value (USD) of a good draft to maximise ENCS."
        return preview
    if objective == "quality" and (budget_usd is None or budget_usd < 0):
        preview.reason = "Give a budget (USD per message) to maximise quality within it."
        return preview

    preview.current = _plan_preview(table, columns, [c.threshold for c in columns], value_usd)
    plan = optimiser.optimise(
        table,
        objective=objective,
        value=None if value_usd is None else float(value_usd),
        budget=None if budget_usd is None else float(budget_usd),
        chains=[tuple(c.label for c in columns)],
    )
    # Scores are stored with 4 places, so the grid's thresholds are too: rounding them is exact
    # and the preview below is what the cascade will do. The last tier keeps its threshold.
    proposed = [threshold_of(t.threshold) for t in plan.tiers[:-1]] + [columns[-1].threshold]
    preview.proposed = _plan_preview(table, columns, proposed, value_usd)
    preview.held_out = _held_out(table, objective, value_usd=value_usd, budget_usd=budget_usd)
    return preview


def _rows(table: optimiser.CascadeTable, index: npt.NDArray[np.int64]) -> optimiser.CascadeTable:
    return optimiser.CascadeTable(
        models=table.models,
        quality=table.quality[index],
        cost=table.cost[index],
        scores={chain: values[index] for chain, values in table.scores.items()},
    )


def _held_out(
    table: optimiser.CascadeTable,
    objective: TuningObjective,
    *,
    value_usd: Decimal | None,
    budget_usd: Decimal | None,
    folds: int = HELD_OUT_FOLDS,
) -> HeldOut:
    """Cross-fitting: thresholds chosen on k − 1 folds, scored on the fold left out; the
    figures are the means over all drafts, each scored by thresholds it did not shape."""
    order = np.random.default_rng(0).permutation(table.n)
    chain = tuple(table.models)
    value = None if value_usd is None else float(value_usd)
    good, cost = np.zeros(table.n), np.zeros(table.n)
    for part in np.array_split(order, folds):
        rest = np.setdiff1d(order, part)
        plan = optimiser.optimise(
            _rows(table, rest),
            objective=objective,
            value=value,
            budget=None if budget_usd is None else float(budget_usd),
            chains=[chain],
        )
        scored = optimiser.preview(_rows(table, part), plan.tiers, value=value)
        good[part] = scored.accuracy
        cost[part] = scored.cost_per_query
    # Each fold's figures are means over its rows: weight them back by row.
    accuracy, cost_per_message = float(good.mean()), float(cost.mean())
    return HeldOut(
        folds=folds,
        accuracy=accuracy,
        cost_per_message=money(cost_per_message),
        encs_per_message=None if value is None else money(value * accuracy - cost_per_message),
    )


# --- Applying -----------------------------------------------------------------------------------


def policy_apply_thresholds(
    *,
    policy: CascadePolicy,
    thresholds: Mapping[int, Decimal],
    user: AbstractBaseUser,
) -> list[str]:
    """Set the thresholds of the policy's tiers (tier id → threshold) in one transaction and
    record the change in the admin history of the policy and, tier by tier with old and new
    values, in the audit log under `user`; returns the changes made."""
    # The audit log names `user` wherever this runs (the admin, a shell, a task). In a copy of
    # the context, so that a request's own audit context is left as it was.
    return contextvars.copy_context().run(_apply_thresholds, policy, thresholds, user)


def _apply_thresholds(
    policy: CascadePolicy, thresholds: Mapping[int, Decimal], user: AbstractBaseUser
) -> list[str]:
    with set_actor(user), transaction.atomic():
        tiers = {
            tier.pk: tier
            for tier in CascadeTier.objects.select_for_update()
            .filter(policy=policy)
            .select_related("endpoint")
        }
        unknown = sorted(set(thresholds) - set(tiers))
        if unknown:
            raise TuningError(f"Tiers {unknown} are not tiers of {policy}.")
        changes: list[str] = []
        for tier_id, value in sorted(thresholds.items(), key=lambda kv: tiers[kv[0]].position):
            new = Decimal(value).quantize(THRESHOLD_PLACES)
            if not Decimal(0) <= new <= Decimal(1):
                raise TuningError(f"Threshold {new} is not between 0 and 1.")
            tier = tiers[tier_id]
            if tier.threshold == new:
                continue
            changes.append(f"tier {tier.position} ({tier.endpoint.name}) {tier.threshold} → {new}")
            tier.threshold = new
            tier.save(update_fields=["threshold"])
        if changes:
            LogEntry.objects.log_actions(
                user_id=user.pk,
                queryset=[policy],
                action_flag=CHANGE,
                change_message="Thresholds set from the optimiser's preview: " + "; ".join(changes),
                single_object=True,
            )
    return changes
