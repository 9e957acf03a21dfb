"""Per-intent thresholds and routes (issue 18, build 4).

Intents differ in how well the cheap tier serves them, so once an intent has at least the
policy's `intent_min_labels` labelled drafts (explored drafts whose message has a confident
intent: every tier's answer labelled against what the agent sent), the optimiser proposes the
intent's own rules, an admin applies them (IntentRule, audit-logged) and the cascade uses them:

- `intent_proposals(policy, ...)`: per intent, the best route on its own explored drafts for
  the objective the policy-wide tuning uses (drafting.learning.tuning): every ordered subset of
  the policy's tiers is a candidate; a tier before the route's last that is not on it is routed
  past (skip), the route's tiers get the optimiser's thresholds, a route ending before the
  policy's last tier keeps its last answer (threshold 0; later tiers are only asked if it fails).
- `intent_rules_apply(...)`: writes one intent's rules, logged like the policy's thresholds.
- `intent_route(...)`: at serving time, the tier list for a draft whose message has a confident
  intent with rules in force: thresholds replaced, routed tiers left out and returned as
  "routed" attempts to record. Never routes past every tier.
"""

from __future__ import annotations

import contextvars
import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
from auditlog.context import set_actor
from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from drafting.engine.cascade import TierAttempt
from drafting.engine.routing import RoutedPast
from drafting.learning import optimiser, tuning
from drafting.learning.offpolicy import ProposalEstimate
from drafting.models import (
    CascadePolicy,
    CascadeTier,
    Draft,
    Intent,
    IntentRule,
)

ZERO = Decimal(0)


# --- Serving ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntentRoute:
    """The tiers to ask (copies, with the intent's thresholds), and the routed-past attempts
    (no call, no cost) to store with the cascade's."""

    tiers: list[CascadeTier]
    routed: list[TierAttempt] = field(default_factory=list)


def intent_route(*, tiers: Sequence[CascadeTier], intent_id: int | None) -> IntentRoute:
    """The tier list for a draft: unchanged (no query) without a confident intent; else the
    intent's rules in force (n_labels ≥ the policy's intent_min_labels; one query) applied to
    copies of the tiers (the list is shared between threads: never changed in place). A routed
    tier becomes an attempt whose error is `RoutedPast` (error kind "routed") with the rule in
    `routing`; were every tier routed, none is (the thresholds still apply)."""
    if intent_id is None or not tiers:
        return IntentRoute(tiers=list(tiers))
    rules = {
        rule.tier_id: rule
        for rule in IntentRule.objects.filter(
            tier_id__in=[t.pk for t in tiers],
            intent_id=intent_id,
            n_labels__gte=F("tier__policy__intent_min_labels"),
        )
    }
    if not rules:
        return IntentRoute(tiers=list(tiers))
    routed_all = all(t.pk in rules and rules[t.pk].skip for t in tiers)
    asked: list[CascadeTier] = []
    routed: list[TierAttempt] = []
    for tier in tiers:
        rule = rules.get(tier.pk)
        if rule is None:
            asked.append(tier)
        elif rule.skip and not routed_all:
            routed.append(
                TierAttempt(
                    tier=tier.position,
                    endpoint=tier.endpoint,
                    started_at=timezone.now(),
                    error=RoutedPast(f"Routed past for intent {intent_id} (its rule)."),
                    routing={"rule": "intent", "intent": intent_id, "n_labels": rule.n_labels},
                )
            )
        else:
            own = copy.copy(tier)
            own.threshold = rule.threshold
            asked.append(own)
    return IntentRoute(tiers=asked, routed=routed)


# --- Proposals ----------------------------------------------------------------------------------


@dataclass
class RuleRow:
    """One tier of an intent's proposal: what is in force, what is proposed."""

    tier: tuning.TierColumn
    threshold: Decimal
    skip: bool
    proposed_threshold: Decimal
    proposed_skip: bool


@dataclass
class RouteFigures:
    accuracy: float  # share of the intent's messages whose kept draft would have been good
    cost_per_message: Decimal
    encs_per_message: Decimal | None


@dataclass
class IntentProposal:
    intent_id: int
    intent_name: str
    n_labels: int
    rows: list[RuleRow]
    current: RouteFigures  # the rules in force (the policy's where there are none)
    proposed: RouteFigures
    estimate: ProposalEstimate | None = None  # attached by the page (drafting.learning.offpolicy)

    @property
    def changes(self) -> bool:
        return any(
            (r.threshold, r.skip) != (r.proposed_threshold, r.proposed_skip) for r in self.rows
        )

    @property
    def rules(self) -> dict[int, tuple[Decimal, bool]]:
        """tier id → (threshold, skip) as proposed."""
        return {r.tier.tier_id: (r.proposed_threshold, r.proposed_skip) for r in self.rows}


@dataclass
class IntentProposals:
    proposals: list[IntentProposal]
    waiting: list[tuple[str, int]]  # intents with labels, below the minimum: (name, labels)
    min_labels: int
    reason: str = ""


def draft_intents(draft_ids: Sequence[int], *, floor: Decimal) -> dict[int, int]:
    """draft id → its message's confident intent (the floor the claim uses)."""
    return dict(
        Draft.objects.filter(
            pk__in=list(draft_ids), message__intent_verdict__confidence__gte=floor
        ).values_list("pk", "message__intent_verdict__intent_id")
    )


def route_rules(
    columns: Sequence[tuning.TierColumn], plan: Sequence[optimiser.Tier]
) -> list[tuple[Decimal, bool]]:
    """(threshold, skip) per policy tier for a plan over a subset of its tiers (see the module
    docstring)."""
    chosen = {tier.model: tier.threshold for tier in plan}
    last = next(i for i, c in enumerate(columns) if c.label == plan[-1].model)
    out: list[tuple[Decimal, bool]] = []
    for i, column in enumerate(columns):
        if column.label in chosen:
            if i == last:
                out.append((column.threshold if i == len(columns) - 1 else ZERO, False))
            else:
                out.append((tuning.threshold_of(chosen[column.label]), False))
        else:
            out.append((column.threshold, i < last))
    return out


def _figures(
    table: optimiser.CascadeTable,
    columns: Sequence[tuning.TierColumn],
    rules: Sequence[tuple[Decimal, bool]],
    value: float | None,
) -> RouteFigures:
    tiers = [
        optimiser.Tier(c.label, float(threshold))
        for c, (threshold, skip) in zip(columns, rules, strict=True)
        if not skip
    ]
    plan = optimiser.preview(table, tiers, value=value)
    return RouteFigures(
        accuracy=plan.accuracy,
        cost_per_message=tuning.money(plan.cost_per_query),
        encs_per_message=None if plan.encs_per_query is None else tuning.money(plan.encs_per_query),
    )


def intent_proposals(
    policy: CascadePolicy,
    *,
    value_usd: Decimal | None,
    objective: tuning.TuningObjective = "encs",
    budget_usd: Decimal | None = None,
    floor: Decimal | None = None,
) -> IntentProposals:
    """Per intent with at least `policy.intent_min_labels` rows of the exploration table, the
    route and thresholds maximising the objective on those rows, beside the rules in force."""
    floor = floor if floor is not None else Decimal(str(settings.MACRO_MIN_INTENT_CONFIDENCE))
    table, rows = tuning.exploration_table(policy)
    columns = rows.tiers
    result = IntentProposals(proposals=[], waiting=[], min_labels=policy.intent_min_labels)
    if len(columns) < 2:
        result.reason = "The policy has fewer than two enabled tiers: there is nothing to route."
        return result
    if objective == "encs" and (value_usd is None or value_usd <= 0):
        result.reason = "Give the value (USD) of a good draft to maximise ENCS."
        return result
    if objective == "quality" and (budget_usd is None or budget_usd < 0):
        result.reason = "Give a budget (USD per message) to maximise quality within it."
        return result
    intents = draft_intents(rows.draft_ids, floor=floor)
    by_intent: dict[int, list[int]] = {}
    for row, draft_id in enumerate(rows.draft_ids):
        if draft_id in intents:
            by_intent.setdefault(intents[draft_id], []).append(row)
    names = dict(Intent.objects.filter(pk__in=list(by_intent)).values_list("pk", "name"))
    in_force = {
        (rule.intent_id, rule.tier_id): rule
        for rule in IntentRule.objects.filter(
            tier_id__in=[c.tier_id for c in columns], n_labels__gte=policy.intent_min_labels
        )
    }
    labels = [c.label for c in columns]
    # The policy's own route first: on a tie, the optimiser keeps the first chain it saw.
    chains = [
        tuple(labels[i] for i in subset)
        for size in range(len(labels), 0, -1)
        for subset in itertools.combinations(range(len(labels)), size)
    ]
    value = None if value_usd is None else float(value_usd)
    for intent_id, members in sorted(by_intent.items(), key=lambda kv: names.get(kv[0], "")):
        name = names.get(intent_id, str(intent_id))
        if len(members) < policy.intent_min_labels:
            result.waiting.append((name, len(members)))
            continue
        sub = table.rows(np.asarray(members))
        plan = optimiser.optimise(
            sub,
            objective=objective,
            value=value,
            budget=None if budget_usd is None else float(budget_usd),
            chains=chains,
        )
        proposed = route_rules(columns, plan.tiers)
        current = [
            (in_force[(intent_id, c.tier_id)].threshold, in_force[(intent_id, c.tier_id)].skip)
            if (intent_id, c.tier_id) in in_force
            else (c.threshold, False)
            for c in columns
        ]
        result.proposals.append(
            IntentProposal(
                intent_id=intent_id,
                intent_name=name,
                n_labels=len(members),
                rows=[
                    RuleRow(c, now[0], now[1], new[0], new[1])
                    for c, now, new in zip(columns, current, proposed, strict=True)
                ],
                current=_figures(sub, columns, current, value),
                proposed=_figures(sub, columns, proposed, value),
            )
        )
    return result


# --- Applying -----------------------------------------------------------------------------------


def intent_labels(policy: CascadePolicy, intent_id: int, *, floor: Decimal | None = None) -> int:
    """The intent's labelled drafts: rows of the policy's exploration table whose message has
    the intent (confidently)."""
    floor = floor if floor is not None else Decimal(str(settings.MACRO_MIN_INTENT_CONFIDENCE))
    _, rows = tuning.exploration_table(policy)
    intents = draft_intents(rows.draft_ids, floor=floor)
    return sum(1 for draft_id in rows.draft_ids if intents.get(draft_id) == intent_id)


def intent_rules_apply(
    *,
    policy: CascadePolicy,
    intent_id: int,
    rules: Mapping[int, tuple[Decimal, bool]],
    user: AbstractBaseUser,
) -> list[str]:
    """Set one intent's rules on the policy's tiers (tier id → (threshold, skip)) in one
    transaction, audit-logged under `user` (IntentRule is tracked) and noted in the policy's
    admin history, with the intent's labelled drafts counted now (`n_labels`: what the rule
    came from; it applies while that is at least the policy's intent_min_labels); returns the
    changes made. Refuses an intent with fewer labels than that, a tier of another policy, an
    intent of another team, a threshold outside [0, 1] and routing past every enabled tier."""
    n_labels = intent_labels(policy, intent_id)
    if n_labels < policy.intent_min_labels:
        raise tuning.TuningError(
            f"The intent has {n_labels} labelled drafts; its own rules need "
            f"{policy.intent_min_labels}."
        )
    return contextvars.copy_context().run(_apply, policy, intent_id, dict(rules), n_labels, user)


def _apply(
    policy: CascadePolicy,
    intent_id: int,
    rules: dict[int, tuple[Decimal, bool]],
    n_labels: int,
    user: AbstractBaseUser,
) -> list[str]:
    with set_actor(user), transaction.atomic():
        intent = Intent.objects.filter(pk=intent_id, team_id=policy.team_id).first()
        if intent is None:
            raise tuning.TuningError(f"Intent {intent_id} is not an intent of {policy.team}.")
        tiers = {
            tier.pk: tier
            for tier in CascadeTier.objects.select_for_update()
            .filter(policy=policy)
            .select_related("endpoint")
        }
        unknown = sorted(set(rules) - set(tiers))
        if unknown:
            raise tuning.TuningError(f"Tiers {unknown} are not tiers of {policy}.")
        existing = {
            rule.tier_id: rule
            for rule in IntentRule.objects.filter(tier__in=list(tiers), intent=intent)
        }
        enabled = [pk for pk, tier in tiers.items() if tier.endpoint.enabled]
        skips = {
            pk: rules[pk][1] if pk in rules else (pk in existing and existing[pk].skip)
            for pk in enabled
        }
        if enabled and all(skips.values()):
            raise tuning.TuningError("An intent's rules cannot route past every tier.")
        changes: list[str] = []
        for tier_id, (threshold, skip) in sorted(
            rules.items(), key=lambda kv: tiers[kv[0]].position
        ):
            new = Decimal(threshold).quantize(tuning.THRESHOLD_PLACES)
            if not ZERO <= new <= Decimal(1):
                raise tuning.TuningError(f"Threshold {new} is not between 0 and 1.")
            tier, rule = tiers[tier_id], existing.get(tier_id)
            if rule is not None and (rule.threshold, rule.skip, rule.n_labels) == (
                new,
                skip,
                n_labels,
            ):
                continue
            before = "none" if rule is None else f"{rule.threshold}{' routed' if rule.skip else ''}"
            changes.append(
                f"{intent.name}, tier {tier.position} ({tier.endpoint.name}) {before} → "
                f"{new}{' routed' if skip else ''}"
            )
            if rule is None:
                IntentRule.objects.create(
                    tier=tier, intent=intent, threshold=new, skip=skip, n_labels=n_labels
                )
            else:
                rule.threshold, rule.skip, rule.n_labels = new, skip, n_labels
                rule.save(update_fields=["threshold", "skip", "n_labels"])
        if changes:
            LogEntry.objects.log_actions(
                user_id=user.pk,
                queryset=[policy],
                action_flag=CHANGE,
                change_message="Intent rules set from the optimiser's proposal: "
                + "; ".join(changes),
                single_object=True,
            )
    return changes
