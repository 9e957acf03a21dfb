"""The ENCS figures as typed values: what the engine and break-even compute, and what the
dashboard, the printable report, the CSV, the e-mail and the API read.

Money is a `Decimal` already rounded to `MONEY` (10 places), counts are ints, shares are
`Decimal`s rounded to `SHARE`. Each shape turns into JSON once, in its `as_json()` (the API's
body, the `encs_report` command, a stored MonthlyReport's `figures`), and a stored report is
read back through `EncsReport.from_json`; nothing else parses figures out of strings.

One definition of the action shares: P(a) = drafts with action a ÷ all drafts (answered or
not, failed ones included), the P(a) of the decomposition
ENCS per draft = Σ P(a)·S_a − C̄. The report's `shares` are P(use), P(edit), P(ignore) of that
same decomposition, so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from accounting.facts import DRAFTED_KINDS
from drafting.models import AgentAction

MONEY = Decimal("0.0000000001")
SECONDS = Decimal("0.001")
SHARE = Decimal("0.0001")
ZERO = Decimal(0)

# What an agent can do with a draft's text, and what else can become of a draft (failed and
# answered unaided, never answered, answered after too long): the decomposition's kinds.
ACTED_KINDS = DRAFTED_KINDS
DECOMPOSED_KINDS = (*ACTED_KINDS, "none", "unused", "outlier")
# How every page, chart and file names them.
KIND_LABELS = {
    AgentAction.Kind.USE.value: "Used as is",
    AgentAction.Kind.EDIT.value: "Edited",
    AgentAction.Kind.IGNORE.value: "Ignored",
    "none": "Failed, answered unaided",
    "unused": "Not answered",
    "outlier": "Answered after too long (outlier)",
}


def plain(value: Decimal) -> str:
    """A decimal as JSON text: positional, never "0E-10"."""
    return f"{value:f}"


def share_of(count: int, total: int) -> Decimal:
    """`count` ÷ `total` as a share (4 places); 0 when there is nothing to divide."""
    return (Decimal(count) / Decimal(total)).quantize(SHARE) if total else ZERO


def _seconds_or_none(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _usd_or_none(value: Decimal | None) -> str | None:
    return None if value is None else plain(value)


def _month(value: str) -> date:
    return date.fromisoformat(f"{value}-01")


@dataclass(frozen=True)
class Baseline:
    """T_baseline of one team: measured on its held-out replies, or the configured default."""

    seconds: Decimal
    source: str  # "measured" or "default"
    sample: int
    min_sample: int
    ci95_seconds: tuple[Decimal, Decimal] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": str(self.seconds.quantize(SECONDS)),
            "source": self.source,
            "sample": self.sample,
            "min_sample": self.min_sample,
            "ci95_seconds": [str(v.quantize(SECONDS)) for v in self.ci95_seconds]
            if self.ci95_seconds
            else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Baseline:
        ci = data["ci95_seconds"]
        return cls(
            seconds=Decimal(data["seconds"]),
            source=data["source"],
            sample=data["sample"],
            min_sample=data["min_sample"],
            ci95_seconds=(Decimal(ci[0]), Decimal(ci[1])) if ci else None,
        )


@dataclass(frozen=True)
class Decomposition:
    """ENCS per draft = Σ P(a)·S_a − C̄ over `drafts` drafts (none of this when there are
    none): P(a) the share of drafts with outcome a, S_a their mean saving, C̄ the mean cost.
    W̄ (`w_usd`) is the agents' wait per draft, already inside the S_a (they are net of it):
    Σ P(a)·S_a = Σ P(a)·S_a(instant) − W̄."""

    drafts: int
    p: Mapping[str, Decimal]  # DECOMPOSED_KINDS
    s_usd: Mapping[str, Decimal]  # DECOMPOSED_KINDS
    c_usd: Decimal
    encs_per_draft_usd: Decimal
    encs_usd: Decimal
    w_usd: Decimal

    def as_json(self) -> dict[str, Any]:
        return {
            "drafts": self.drafts,
            "p": {k: plain(v) for k, v in self.p.items()},
            "s_usd": {k: plain(v) for k, v in self.s_usd.items()},
            "c_usd": plain(self.c_usd),
            "encs_per_draft_usd": plain(self.encs_per_draft_usd),
            "encs_usd": plain(self.encs_usd),
            "w_usd": plain(self.w_usd),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Decomposition | None:
        if "p" not in data:
            return None
        return cls(
            drafts=data["drafts"],
            p={k: Decimal(v) for k, v in data["p"].items()},
            s_usd={k: Decimal(v) for k, v in data["s_usd"].items()},
            c_usd=Decimal(data["c_usd"]),
            encs_per_draft_usd=Decimal(data["encs_per_draft_usd"]),
            encs_usd=Decimal(data["encs_usd"]),
            # Reports stored before the wait was measured have none.
            w_usd=Decimal(data.get("w_usd", "0")),
        )


@dataclass(frozen=True)
class Figures:
    """ENCS over a set of drafts: the whole report, or one of its groups (a model, a day…)."""

    messages: int  # every customer message in scope, held-out included
    drafts: int  # drafted messages: acted on, failed, never answered, outliers
    actions: Mapping[str, int]  # use, edit, ignore; none = failed or held out, answered unaided
    unanswered_drafts: int
    outliers: int  # answered after longer than ACTION_MAX_HANDLE_SECONDS: no saving
    held_out: int
    handle_seconds: Mapping[str, Decimal | None]  # mean per use, edit, ignore, held_out
    labor_savings_usd: Decimal
    model_cost_usd: Decimal
    encs_usd: Decimal
    encs_per_message_usd: Decimal | None
    all_paid_cost_usd: Decimal
    cascade_savings_usd: Decimal
    encs_all_paid_usd: Decimal
    decomposition: Decomposition | None  # None without drafts
    # The agent's wait (engine's docstring): drafts acted on that the agent opened before they
    # were ready, the seconds waited and their cost R × wait/3600. ENCS already pays for it
    # (handle time includes it); `encs_if_instant_usd` = ENCS + wait cost is the what-if.
    waited_drafts: int
    wait_seconds: Decimal
    wait_cost_usd: Decimal
    encs_if_instant_usd: Decimal

    @property
    def shares(self) -> dict[str, Decimal]:
        """P(use), P(edit), P(ignore): the decomposition's, over all drafts."""
        if self.decomposition is None:
            return dict.fromkeys(ACTED_KINDS, ZERO)
        return {k: self.decomposition.p[k] for k in ACTED_KINDS}

    @property
    def acted(self) -> int:
        """Drafts the agents used, edited or ignored."""
        return sum(self.actions[k] for k in ACTED_KINDS)

    @property
    def cost_per_draft_usd(self) -> Decimal | None:
        return self.decomposition.c_usd if self.decomposition is not None else None

    def as_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "drafts": self.drafts,
            "actions": dict(self.actions),
            "unanswered_drafts": self.unanswered_drafts,
            "outliers": self.outliers,
            "held_out": self.held_out,
            "shares": {k: str(v) for k, v in self.shares.items()},
            "handle_seconds": {
                k: None if v is None else str(v) for k, v in self.handle_seconds.items()
            },
            "labor_savings_usd": plain(self.labor_savings_usd),
            "model_cost_usd": plain(self.model_cost_usd),
            "encs_usd": plain(self.encs_usd),
            "encs_per_message_usd": _usd_or_none(self.encs_per_message_usd),
            "all_paid_cost_usd": plain(self.all_paid_cost_usd),
            "cascade_savings_usd": plain(self.cascade_savings_usd),
            "encs_all_paid_usd": plain(self.encs_all_paid_usd),
            "decomposition": self.decomposition.as_json()
            if self.decomposition is not None
            else {"drafts": self.drafts},
            "waited_drafts": self.waited_drafts,
            "wait_seconds": str(self.wait_seconds),
            "wait_cost_usd": plain(self.wait_cost_usd),
            "encs_if_instant_usd": plain(self.encs_if_instant_usd),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Figures:
        """Read back what `as_json` wrote. Shares are not read: they are the decomposition's
        P(a), whatever a report stored before they were defined that way."""
        per_message = data["encs_per_message_usd"]
        return cls(
            messages=data["messages"],
            drafts=data["drafts"],
            actions=dict(data["actions"]),
            unanswered_drafts=data["unanswered_drafts"],
            outliers=data["outliers"],
            held_out=data["held_out"],
            handle_seconds={k: _seconds_or_none(v) for k, v in data["handle_seconds"].items()},
            labor_savings_usd=Decimal(data["labor_savings_usd"]),
            model_cost_usd=Decimal(data["model_cost_usd"]),
            encs_usd=Decimal(data["encs_usd"]),
            encs_per_message_usd=None if per_message is None else Decimal(per_message),
            all_paid_cost_usd=Decimal(data["all_paid_cost_usd"]),
            cascade_savings_usd=Decimal(data["cascade_savings_usd"]),
            encs_all_paid_usd=Decimal(data["encs_all_paid_usd"]),
            decomposition=Decomposition.from_json(data["decomposition"]),
            # Absent from reports stored before the wait was measured: none then.
            waited_drafts=data.get("waited_drafts", 0),
            wait_seconds=Decimal(data.get("wait_seconds", "0")),
            wait_cost_usd=Decimal(data.get("wait_cost_usd", "0")),
            encs_if_instant_usd=Decimal(data.get("encs_if_instant_usd", data["encs_usd"])),
        )


@dataclass(frozen=True)
class Group:
    """One group of a report (`name`: a model, a day, an intent…) and its figures."""

    name: str
    figures: Figures

    def as_json(self) -> dict[str, Any]:
        return {"group": self.name, **self.figures.as_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Group:
        return cls(name=data["group"], figures=Figures.from_json(data))


@dataclass(frozen=True)
class BreakEvenMonth:
    month: date  # its first day
    cumulative_net_savings_usd: Decimal
    cumulative_fixed_costs_usd: Decimal

    def as_json(self) -> dict[str, Any]:
        return {
            "month": self.month.strftime("%Y-%m"),
            "cumulative_net_savings_usd": plain(self.cumulative_net_savings_usd),
            "cumulative_fixed_costs_usd": plain(self.cumulative_fixed_costs_usd),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BreakEvenMonth:
        return cls(
            month=_month(data["month"]),
            cumulative_net_savings_usd=Decimal(data["cumulative_net_savings_usd"]),
            cumulative_fixed_costs_usd=Decimal(data["cumulative_fixed_costs_usd"]),
        )


@dataclass(frozen=True)
class BreakEvenTarget:
    """A policy's or an endpoint's fixed costs against the ENCS of its drafts."""

    target: str  # "policy" or "endpoint"
    id: int
    name: str
    since: date  # the month of the first fixed cost
    one_off_usd: Decimal
    monthly_usd: Decimal
    fixed_costs_usd: Decimal
    cumulative_net_savings_usd: Decimal
    monthly_net_savings_usd: Decimal
    messages: int
    paid_back: bool
    months_to_pay_back: float | None
    break_even_messages_per_year: int | None
    series: tuple[BreakEvenMonth, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "id": self.id,
            "name": self.name,
            "since": self.since.strftime("%Y-%m"),
            "one_off_usd": plain(self.one_off_usd),
            "monthly_usd": plain(self.monthly_usd),
            "fixed_costs_usd": plain(self.fixed_costs_usd),
            "cumulative_net_savings_usd": plain(self.cumulative_net_savings_usd),
            "monthly_net_savings_usd": plain(self.monthly_net_savings_usd),
            "messages": self.messages,
            "paid_back": self.paid_back,
            "months_to_pay_back": self.months_to_pay_back,
            "break_even_messages_per_year": self.break_even_messages_per_year,
            "series": [month.as_json() for month in self.series],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BreakEvenTarget:
        return cls(
            target=data["target"],
            id=data["id"],
            name=data["name"],
            since=_month(data["since"]),
            one_off_usd=Decimal(data["one_off_usd"]),
            monthly_usd=Decimal(data["monthly_usd"]),
            fixed_costs_usd=Decimal(data["fixed_costs_usd"]),
            cumulative_net_savings_usd=Decimal(data["cumulative_net_savings_usd"]),
            monthly_net_savings_usd=Decimal(data["monthly_net_savings_usd"]),
            messages=data["messages"],
            paid_back=data["paid_back"],
            months_to_pay_back=data["months_to_pay_back"],
            break_even_messages_per_year=data["break_even_messages_per_year"],
            series=tuple(BreakEvenMonth.from_json(m) for m in data["series"]),
        )


@dataclass(frozen=True)
class BreakEven:
    as_of: date  # the period's last day
    targets: tuple[BreakEvenTarget, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "targets": [target.as_json() for target in self.targets],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BreakEven:
        return cls(
            as_of=date.fromisoformat(data["as_of"]),
            targets=tuple(BreakEvenTarget.from_json(t) for t in data["targets"]),
        )


@dataclass(frozen=True)
class EncsReport:
    """The ENCS report of a scope: in total, per `group_by` (when asked), per model, per
    intent, each team's baseline, and break-even."""

    period: str  # "2026-10" for a calendar month, else "2026-10-03..2026-10-17"
    start: date
    last: date  # included
    teams: tuple[int, ...] | None  # None: every team
    policies: tuple[int, ...] | None
    totals: Figures
    baselines: Mapping[int, Baseline]
    group_by: str | None
    groups: tuple[Group, ...] | None  # None unless grouped
    by_model: tuple[Group, ...]
    by_intent: tuple[Group, ...]
    break_even: BreakEven

    @property
    def whole_month(self) -> bool:
        return ".." not in self.period

    @property
    def baseline(self) -> Baseline | None:
        """The baseline when the report has one team; None with several (or none)."""
        return next(iter(self.baselines.values())) if len(self.baselines) == 1 else None

    @property
    def baseline_source(self) -> str:
        if self.baseline is not None:
            return self.baseline.source
        return "per team" if self.baselines else "none"

    @property
    def baseline_seconds(self) -> Decimal | None:
        return self.baseline.seconds.quantize(SECONDS) if self.baseline is not None else None

    def as_json(self) -> dict[str, Any]:
        seconds = self.baseline_seconds
        result: dict[str, Any] = {
            "period": self.period,
            "from": self.start.isoformat(),
            "to": self.last.isoformat(),
            "teams": list(self.teams) if self.teams is not None else None,
            "policies": list(self.policies) if self.policies is not None else None,
            **self.totals.as_json(),
            "baseline_seconds": None if seconds is None else str(seconds),
            "baseline_source": self.baseline_source,
            "baselines": {str(t): b.as_json() for t, b in self.baselines.items()},
        }
        if self.groups is not None:
            result["groups"] = [group.as_json() for group in self.groups]
        result["group_by"] = self.group_by
        result["by_model"] = [group.as_json() for group in self.by_model]
        result["by_intent"] = [group.as_json() for group in self.by_intent]
        result["break_even"] = self.break_even.as_json()
        return result

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EncsReport:
        """A report from its JSON (a stored MonthlyReport's `figures`: extra keys such as
        `team` are left alone)."""
        groups = data.get("groups")
        return cls(
            period=data["period"],
            start=date.fromisoformat(data["from"]),
            last=date.fromisoformat(data["to"]),
            teams=tuple(data["teams"]) if data["teams"] is not None else None,
            policies=tuple(data["policies"]) if data["policies"] is not None else None,
            totals=Figures.from_json(data),
            baselines={int(t): Baseline.from_json(b) for t, b in data["baselines"].items()},
            group_by=data["group_by"],
            groups=None if groups is None else tuple(Group.from_json(g) for g in groups),
            by_model=tuple(Group.from_json(g) for g in data["by_model"]),
            by_intent=tuple(Group.from_json(g) for g in data["by_intent"]),
            break_even=BreakEven.from_json(data["break_even"]),
        )


@dataclass(frozen=True)
class WhatIf:
    """The paper's case-study arithmetic for assumed figures (`engine.whatif`)."""

    s_usd: Mapping[str, Decimal]  # saving per draft, per ACTED_KINDS
    encs_per_message_usd: Decimal
    encs_per_year_usd: Decimal
    messages_per_year: int
    break_even_cost_per_response_usd: Decimal

    def as_json(self) -> dict[str, Any]:
        return {
            "s_usd": {k: plain(v) for k, v in self.s_usd.items()},
            "encs_per_message_usd": plain(self.encs_per_message_usd),
            "encs_per_year_usd": plain(self.encs_per_year_usd),
            "messages_per_year": self.messages_per_year,
            # str(), not plain(): the API has always sent this one so ("1E-10" when tiny).
            "break_even_cost_per_response_usd": str(self.break_even_cost_per_response_usd),
        }


@dataclass(frozen=True)
class TierCost:
    """Provider attempts of one cascade tier (0: the cache), exploratory ones and the composer
    tools' (agents' rewrites of their replies, asked of the tier) apart."""

    tier: int
    exploratory: bool
    attempts: int
    ok: int
    cost_usd: Decimal
    composer: bool = False
    shadow: bool = False  # a candidate adapter's answers in shadow (drafting.adapters)

    @property
    def label(self) -> str:
        name = "Cache" if self.tier == 0 else f"Tier {self.tier}"
        if self.shadow:
            return name + " (shadow)"
        if self.composer:
            return name + " (composer tools)"
        return name + (" (exploration)" if self.exploratory else "")
