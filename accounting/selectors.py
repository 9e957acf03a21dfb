"""Accounting reads: the ENCS report for a scope, with its groups and break-even."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from django.contrib.auth import get_user_model

from accounting.breakeven import break_even
from accounting.engine import GROUP_BY, Scope, SettingsBook, summarise
from accounting.facts import Fact, scope_facts
from accounting.figures import BreakEven, EncsReport
from csbot.models import Team
from drafting.models import CascadePolicy, CascadeTier, Intent, ModelEndpoint


def _labeller(group_by: str, facts: list[Fact]) -> Callable[[Fact], str]:
    if group_by == "day":
        return lambda f: f.day.isoformat()
    if group_by == "month":
        return lambda f: f.day.strftime("%Y-%m")
    if group_by == "model":
        names = dict(
            ModelEndpoint.objects.filter(
                pk__in={f.endpoint_id for f in facts if f.endpoint_id}
            ).values_list("pk", "name")
        )
        other = {"cache": "cache", "none": "no draft"}
        return lambda f: names.get(f.endpoint_id or 0, other.get(f.source, "no draft"))
    if group_by == "tier":
        # The position of the draft's final endpoint in its policy; 0 is the cache.
        positions = {
            (policy_id, endpoint_id): position
            for policy_id, endpoint_id, position in CascadeTier.objects.filter(
                policy_id__in={f.policy_id for f in facts}
            ).values_list("policy_id", "endpoint_id", "position")
        }

        def tier(fact: Fact) -> str:
            if fact.source == "cache":
                return "tier 0 (cache)"
            position = positions.get((fact.policy_id, fact.endpoint_id or 0))
            return f"tier {position}" if position is not None else "no draft"

        return tier
    if group_by == "policy":
        policies = dict(
            CascadePolicy.objects.filter(pk__in={f.policy_id for f in facts}).values_list(
                "pk", "name"
            )
        )
        return lambda f: policies.get(f.policy_id, str(f.policy_id))
    if group_by == "team":
        teams = dict(
            Team.objects.filter(pk__in={f.team_id for f in facts}).values_list("pk", "name")
        )
        return lambda f: teams.get(f.team_id, str(f.team_id))
    if group_by == "intent":
        intents = dict(
            Intent.objects.filter(pk__in={f.intent_id for f in facts if f.intent_id}).values_list(
                "pk", "name"
            )
        )
        return lambda f: intents.get(f.intent_id or 0, "(no intent)")
    if group_by == "agent":
        users = dict(
            get_user_model()
            .objects.filter(pk__in={f.agent_id for f in facts if f.agent_id})
            .values_list("pk", "username")
        )
        return lambda f: users.get(f.agent_id or 0, "(no reply)")
    raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}, not {group_by!r}.")


def encs_figures(scope: Scope, *, group_by: str | None = None) -> EncsReport:
    """ENCS figures for the scope, in total, per `group_by`, per model (`by_model`) and per
    intent (`by_intent`), with each team's baseline and break-even."""
    # Only a per-agent grouping needs the facts per agent; the rest sum them in the database.
    facts = scope_facts(scope, by_agent=group_by == "agent")
    book = SettingsBook.load()
    last = date.fromordinal(scope.end.toordinal() - 1)
    whole_month = (
        scope.start.day == 1
        and scope.end.day == 1
        and (
            (scope.end.year * 12 + scope.end.month) - (scope.start.year * 12 + scope.start.month)
            == 1
        )
    )
    grouped = summarise(
        facts, scope=scope, book=book, label=_labeller(group_by, facts) if group_by else None
    )
    by = {
        name: grouped
        if group_by == name
        else summarise(facts, scope=scope, book=book, label=_labeller(name, facts))
        for name in ("model", "intent")
    }
    return EncsReport(
        period=scope.start.strftime("%Y-%m") if whole_month else f"{scope.start}..{last}",
        start=scope.start,
        last=last,
        teams=scope.team_ids,
        policies=scope.policy_ids,
        totals=grouped.totals,
        baselines=grouped.baselines,
        group_by=group_by,
        groups=grouped.groups if group_by else None,
        by_model=by["model"].groups,
        # Messages the intent classifier has not labelled are the "(no intent)" group.
        by_intent=by["intent"].groups,
        break_even=BreakEven(
            as_of=last, targets=tuple(break_even(end=scope.end, team_ids=scope.team_ids))
        ),
    )


def encs_report(scope: Scope, *, group_by: str | None = None) -> dict[str, Any]:
    """`encs_figures` as JSON: the body of GET /api/v1/encs."""
    return encs_figures(scope, group_by=group_by).as_json()
