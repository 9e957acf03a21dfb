"""Accounting reads: facts for a scope (rollup where fresh, raw rows elsewhere) and the ENCS
report built from them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Max
from django.db.models.functions import TruncDate

from accounting.engine import GROUP_BY, Scope, SettingsBook, summarise
from accounting.facts import Fact, day_start, days, local_tz, raw_facts
from accounting.models import DailyFact, RolledUpDay
from csbot.models import Team
from drafting.models import AgentAction, CascadePolicy, ModelEndpoint


def stale_days(rolled: dict[date, datetime]) -> set[date]:
    """Rolled-up days with an action recorded after their rollup (an agent answered late)."""
    if not rolled:
        return set()
    first, last = min(rolled), max(rolled)
    late = (
        AgentAction.objects.filter(
            acted_at__gt=min(rolled.values()),
            draft__created_at__gte=day_start(first),
            draft__created_at__lt=day_start(date.fromordinal(last.toordinal() + 1)),
        )
        .annotate(draft_day=TruncDate("draft__created_at", tzinfo=local_tz()))
        .values("draft_day")
        .annotate(latest=Max("acted_at"))
        .order_by()
    )
    return {row["draft_day"] for row in late if row["latest"] > rolled[row["draft_day"]]}


def scope_facts(scope: Scope) -> list[Fact]:
    """Facts for the scope's days: from DailyFact for days rolled up and not stale since,
    from the raw rows for the others (today, typically)."""
    rolled = dict(
        RolledUpDay.objects.filter(day__gte=scope.start, day__lt=scope.end).values_list(
            "day", "rolled_at"
        )
    )
    fresh = set(rolled) - stale_days(rolled)
    rollup = DailyFact.objects.filter(day__in=sorted(fresh))
    if scope.team_ids is not None:
        rollup = rollup.filter(team_id__in=scope.team_ids)
    if scope.policy_ids is not None:
        rollup = rollup.filter(policy_id__in=scope.policy_ids)
    facts = [
        Fact(
            day=row.day,
            team_id=row.team_id,
            policy_id=row.policy_id,
            endpoint_id=row.endpoint_id,
            source=row.source,
            agent_id=row.agent_id,
            kind=row.kind,
            drafts=row.drafts,
            handle_seconds=row.handle_seconds,
            handle_seconds_sq=row.handle_seconds_sq,
            cost=row.cost,
            counterfactual_cost=row.counterfactual_cost,
        )
        for row in rollup
    ]
    # The other days, read raw in as few contiguous ranges as there are.
    pending = [d for d in days(scope.start, scope.end) if d not in fresh]
    ranges: list[list[date]] = []
    for day in pending:
        if ranges and ranges[-1][-1].toordinal() + 1 == day.toordinal():
            ranges[-1].append(day)
        else:
            ranges.append([day])
    for run in ranges:
        end = date.fromordinal(run[-1].toordinal() + 1)
        facts += [f for f in raw_facts(run[0], end, team_ids=scope.team_ids) if scope.admits(f)]
    return facts


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
    if group_by == "agent":
        users = dict(
            get_user_model()
            .objects.filter(pk__in={f.agent_id for f in facts if f.agent_id})
            .values_list("pk", "username")
        )
        return lambda f: users.get(f.agent_id or 0, "(no reply)")
    raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}, not {group_by!r}.")


def encs_report(scope: Scope, *, group_by: str | None = None) -> dict[str, Any]:
    """ENCS figures for the scope, in total, per `group_by` and per model (`by_model`)."""
    facts = scope_facts(scope)
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
    result: dict[str, Any] = {
        "period": scope.start.strftime("%Y-%m") if whole_month else f"{scope.start}..{last}",
        "from": scope.start.isoformat(),
        "to": last.isoformat(),
        "teams": list(scope.team_ids) if scope.team_ids is not None else None,
        "policies": list(scope.policy_ids) if scope.policy_ids is not None else None,
    }
    grouped = summarise(
        facts,
        scope=scope,
        book=book,
        group_by=group_by,
        label=_labeller(group_by, facts) if group_by else None,
    )
    by_model = summarise(
        facts, scope=scope, book=book, group_by="model", label=_labeller("model", facts)
    )
    result.update(grouped)
    result["group_by"] = group_by
    result["by_model"] = by_model["groups"]
    return result
