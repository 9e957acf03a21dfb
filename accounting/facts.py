"""Facts: drafts summed per (day, team, policy, model, agent, outcome, intent) — all ENCS needs.

ENCS is linear in its inputs: labour saving = R × (n·T_baseline − Σ handle seconds) / 3600 and
cost = Σ attempt costs, so sums per day and per outcome lose nothing. Facts come from the raw
rows (one GROUP BY over drafts joined to their actions) or, for days already closed, from the
`DailyFact` rollup; both give the same numbers (tests/accounting/test_accounting.py checks
it, with hypothesis).

Outcome kinds, one per draft:
- `use`, `edit`, `ignore`: the agent replied with the draft shown (AgentAction.kind);
- `none`: the agent replied but there was no draft text to use (the draft failed);
- `unused`: no reply answers this draft (failed or late and never answered, superseded by a
  newer customer message, or still open) — it cost money and saved no time;
- `held_out`: the conversation is in the hold-out group and the agent replied unaided: the
  sample `T_baseline` is measured from; `held_out_open`: held out, not answered (yet).
- `outlier`, `held_out_outlier`: answered, but with a handle time above
  ACTION_MAX_HANDLE_SECONDS (AgentAction.outlier_condition): the time measures a break, not
  work, so it counts neither as a saving nor in the baseline; an outlier draft's cost counts.
  The rule is applied when facts are computed: a changed maximum reaches rolled-up days when
  they are rolled up again.
A draft belongs to the day it was created on (the project's time zone): that is when its cost
was incurred; its action may come later.

The agent's wait: a fact also sums, per answered draft, the seconds its agent waited for it,
max(0, ready_at − first_shown_at) — the agent opened the conversation while the draft was still
generating —, capped at the action's handle time (the wait is part of the handle time, which
starts when the conversation is opened; an agent who replied before the draft was ready
waited only until they replied), and counts the drafts waited for (`waited`). Drafts nobody
answered (and drafts never ready, or never shown) have no wait: no labour was measured for
them, so the wait of a fact is always a part of its `handle_seconds`.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import (
    Case,
    CharField,
    Count,
    DecimalField,
    DurationField,
    ExpressionWrapper,
    F,
    Func,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Greatest, Least, Round, TruncDate

from accounting.models import DailyFact, DailyTotal, RolledUpDay
from drafting.models import MONEY_DIGITS, MONEY_PLACES, AgentAction, Draft

# What an agent can do with a draft's text: drafting's action kinds, in this order everywhere.
DRAFTED_KINDS: tuple[str, ...] = (
    AgentAction.Kind.USE.value,
    AgentAction.Kind.EDIT.value,
    AgentAction.Kind.IGNORE.value,
)
KINDS = (
    *DRAFTED_KINDS,
    "none",
    "unused",
    "outlier",
    "held_out",
    "held_out_open",
    "held_out_outlier",
)
ZERO = Decimal(0)


@dataclass(frozen=True)
class Fact:
    day: date
    team_id: int
    policy_id: int
    endpoint_id: int | None
    source: str  # "model" (an endpoint's draft), "cache" (a cache hit) or "none" (no text)
    agent_id: int | None
    kind: str
    drafts: int
    handle_seconds: Decimal
    handle_seconds_sq: Decimal
    cost: Decimal
    counterfactual_cost: Decimal
    intent_id: int | None = None  # the customer message's classified intent, if any
    waited: int = 0  # answered drafts the agent opened before they were ready
    wait_seconds: Decimal = ZERO  # seconds agents waited for them (inside handle_seconds)

    @property
    def key(self) -> tuple[object, ...]:
        return (
            self.day,
            self.team_id,
            self.policy_id,
            self.endpoint_id,
            self.source,
            self.agent_id,
            self.kind,
            self.intent_id,
        )


@dataclass(frozen=True)
class Scope:
    start: date  # first day
    end: date  # day after the last
    team_ids: tuple[int, ...] | None = None
    policy_ids: tuple[int, ...] | None = None

    def admits(self, fact: Fact) -> bool:
        return (self.team_ids is None or fact.team_id in self.team_ids) and (
            self.policy_ids is None or fact.policy_id in self.policy_ids
        )


def local_tz() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=local_tz())


def drafts_between(start: date, end: date) -> QuerySet[Draft]:
    """Drafts created on days start … end − 1 (local time)."""
    return Draft.objects.filter(created_at__gte=day_start(start), created_at__lt=day_start(end))


def raw_facts(start: date, end: date, *, team_ids: Iterable[int] | None = None) -> list[Fact]:
    """Facts for days start … end − 1 straight from the drafts and actions (one query)."""
    drafts = drafts_between(start, end)
    if team_ids is not None:
        drafts = drafts.filter(policy__team_id__in=list(team_ids))
    return [fact for _keys, fact in facts_of(drafts)]


class EpochSeconds(Func):
    """An interval in seconds (PostgreSQL's EXTRACT(EPOCH FROM …), a numeric)."""

    template = "EXTRACT(EPOCH FROM %(expressions)s)"
    output_field = DecimalField(max_digits=30, decimal_places=6)


def wait_seconds_expression(via: str = "") -> Any:
    """The seconds the agent waited for the draft `via` reaches: max(0, ready_at −
    first_shown_at) to the millisecond (handle times are stored so), at most the action's
    handle time, 0 without an action (nothing measured) and when either time is unknown (an
    action recorded through the API for a draft no console showed). The unknown gap must be
    made 0 before LEAST: PostgreSQL's GREATEST and LEAST skip NULLs, so LEAST(NULL, handle)
    would be the whole handle time."""
    gap = ExpressionWrapper(
        F(f"{via}ready_at") - F(f"{via}first_shown_at"), output_field=DurationField()
    )
    handle = Coalesce(F(f"{via}action__handle_seconds"), Value(ZERO))
    return Greatest(
        Value(ZERO),
        Least(Coalesce(Round(EpochSeconds(gap), 3), Value(ZERO)), handle),
        output_field=DecimalField(max_digits=20, decimal_places=3),
    )


def facts_of(
    rows: QuerySet[Any],
    *,
    via: str = "",
    keys: tuple[str, ...] = (),
    extra: Mapping[str, Any] | None = None,
) -> list[tuple[dict[str, Any], Fact]]:
    """Facts of the drafts `rows` reach (one query): `rows` are drafts (`via` "") or rows that
    point at one draft each (`via` "draft__": cited passages, macro attempts, one per draft
    and what it is counted for). Each fact comes with the values of `keys` (more columns of
    `rows` to group by, e.g. the article cited) and of the `extra` aggregates."""
    money: DecimalField[Any, Any] = DecimalField(
        max_digits=MONEY_DIGITS + 6, decimal_places=MONEY_PLACES
    )
    seconds: DecimalField[Any, Any] = DecimalField(max_digits=30, decimal_places=6)
    action = f"{via}action__"
    held_out = {f"{via}status": Draft.Status.HELD_OUT}
    grouped = (
        rows.annotate(
            fact_day=TruncDate(f"{via}created_at", tzinfo=local_tz()),
            fact_team=F(f"{via}policy__team_id"),
            fact_policy=F(f"{via}policy_id"),
            fact_endpoint=F(f"{via}final_endpoint_id"),
            fact_agent=F(f"{action}agent_id"),
            fact_intent=F(f"{via}message__intent_verdict__intent_id"),
            fact_source=Case(
                When(**{f"{via}final_endpoint__isnull": False}, then=Value("model")),
                When(~Q(**{f"{via}text": ""}), then=Value("cache")),
                default=Value("none"),
                output_field=CharField(),
            ),
            fact_wait=wait_seconds_expression(via),
            fact_kind=Case(
                When(
                    AgentAction.outlier_condition(action),
                    **held_out,
                    then=Value("held_out_outlier"),
                ),
                When(**held_out, **{f"{action}isnull": False}, then=Value("held_out")),
                When(**held_out, then=Value("held_out_open")),
                When(**{f"{action}isnull": True}, then=Value("unused")),
                When(AgentAction.outlier_condition(action), then=Value("outlier")),
                default=F(f"{action}kind"),
                output_field=CharField(),
            ),
        )
        .values(
            "fact_day",
            "fact_team",
            "fact_policy",
            "fact_endpoint",
            "fact_source",
            "fact_agent",
            "fact_kind",
            "fact_intent",
            *keys,
        )
        .annotate(
            n=Count(f"{via}id"),
            handle=Coalesce(Sum(f"{action}handle_seconds"), Value(ZERO), output_field=seconds),
            handle_sq=Coalesce(
                Sum(
                    F(f"{action}handle_seconds") * F(f"{action}handle_seconds"),
                    output_field=seconds,
                ),
                Value(ZERO),
                output_field=seconds,
            ),
            spent=Coalesce(Sum(f"{via}total_cost"), Value(ZERO), output_field=money),
            # A draft with no counterfactual (nothing answered) would have cost what it did.
            all_paid=Coalesce(
                Sum(Coalesce(f"{via}counterfactual_cost", f"{via}total_cost"), output_field=money),
                Value(ZERO),
                output_field=money,
            ),
            waited=Count(f"{via}id", filter=Q(fact_wait__gt=0)),
            wait=Coalesce(Sum("fact_wait"), Value(ZERO), output_field=seconds),
            **(extra or {}),
        )
        .order_by()
    )
    named = (*keys, *(extra or {}))
    return [
        (
            {name: row[name] for name in named},
            Fact(
                day=row["fact_day"],
                team_id=row["fact_team"],
                policy_id=row["fact_policy"],
                endpoint_id=row["fact_endpoint"],
                source=row["fact_source"],
                agent_id=row["fact_agent"],
                kind=row["fact_kind"],
                drafts=row["n"],
                handle_seconds=Decimal(row["handle"]),
                handle_seconds_sq=Decimal(row["handle_sq"]),
                cost=Decimal(row["spent"]),
                counterfactual_cost=Decimal(row["all_paid"]),
                intent_id=row["fact_intent"],
                waited=row["waited"],
                wait_seconds=Decimal(row["wait"]),
            ),
        )
        for row in grouped
    ]


def days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days)]


FACT_FIELDS = (
    "day",
    "team_id",
    "policy_id",
    "endpoint_id",
    "source",
    "agent_id",
    "kind",
    "drafts",
    "handle_seconds",
    "handle_seconds_sq",
    "cost",
    "counterfactual_cost",
    "intent_id",
    "waited",
    "wait_seconds",
)
# DailyTotal's columns: a Fact without its agent (agent_id defaults to None).
TOTAL_FIELDS = tuple(f for f in FACT_FIELDS if f != "agent_id")


def without_agents(facts: Iterable[Fact]) -> list[Fact]:
    """The facts summed over agents (what DailyTotal holds)."""
    sums: dict[tuple[Any, ...], list[Any]] = {}
    for f in facts:
        key = (f.day, f.team_id, f.policy_id, f.endpoint_id, f.source, f.kind, f.intent_id)
        row = sums.get(key)
        if row is None:
            sums[key] = [
                f.drafts,
                f.handle_seconds,
                f.handle_seconds_sq,
                f.cost,
                f.counterfactual_cost,
                f.waited,
                f.wait_seconds,
            ]
        else:
            row[0] += f.drafts
            row[1] += f.handle_seconds
            row[2] += f.handle_seconds_sq
            row[3] += f.cost
            row[4] += f.counterfactual_cost
            row[5] += f.waited
            row[6] += f.wait_seconds
    return [
        Fact(
            day=day,
            team_id=team,
            policy_id=policy,
            endpoint_id=endpoint,
            source=source,
            agent_id=None,
            kind=kind,
            drafts=n,
            handle_seconds=handle,
            handle_seconds_sq=handle_sq,
            cost=cost,
            counterfactual_cost=all_paid,
            intent_id=intent,
            waited=waited,
            wait_seconds=wait,
        )
        for (day, team, policy, endpoint, source, kind, intent), (
            n,
            handle,
            handle_sq,
            cost,
            all_paid,
            waited,
            wait,
        ) in sums.items()
    ]


def _with_agent(row: tuple[Any, ...], agent_id: int | None) -> tuple[Any, ...]:
    """A DailyTotal row in Fact's field order: agent_id goes after `source`."""
    return (*row[:5], agent_id, *row[5:])


def scope_facts(scope: Scope, *, by_agent: bool = True) -> list[Fact]:
    """Facts for the scope's days: from DailyFact for days rolled up and not stale since,
    from the raw rows for the others (today, typically).

    `by_agent=False` reads the facts summed over agents (DailyTotal; agent_id None): every
    figure but a per-agent grouping is the same, from ~1/agents as many rows."""
    fresh = set(
        RolledUpDay.objects.filter(
            day__gte=scope.start, day__lt=scope.end, stale=False, rolled_at__isnull=False
        ).values_list("day", flat=True)
    )
    pending = [d for d in days(scope.start, scope.end) if d not in fresh]
    table: type[DailyFact] | type[DailyTotal] = DailyFact if by_agent else DailyTotal
    # A range and the few days not to take (today, a stale day), not a list of 365 dates.
    rollup = table.objects.filter(day__gte=scope.start, day__lt=scope.end).exclude(day__in=pending)
    if scope.team_ids is not None:
        rollup = rollup.filter(team_id__in=scope.team_ids)
    if scope.policy_ids is not None:
        rollup = rollup.filter(policy_id__in=scope.policy_ids)
    # Positional construction from plain tuples: a year of one team's totals is thousands of
    # rows, read on every dashboard load (field order is Fact's, see FACT_FIELDS).
    if by_agent:
        facts = [Fact(*row) for row in rollup.values_list(*FACT_FIELDS)]
    else:
        rows = rollup.values_list(*TOTAL_FIELDS)
        facts = [Fact(*_with_agent(row, None)) for row in rows]
    # The other days, read raw in as few contiguous ranges as there are.
    ranges: list[list[date]] = []
    for day in pending:
        if ranges and ranges[-1][-1].toordinal() + 1 == day.toordinal():
            ranges[-1].append(day)
        else:
            ranges.append([day])
    for run in ranges:
        end = date.fromordinal(run[-1].toordinal() + 1)
        raw = [f for f in raw_facts(run[0], end, team_ids=scope.team_ids) if scope.admits(f)]
        facts += raw if by_agent else without_agents(raw)
    return facts
