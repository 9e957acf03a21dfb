"""Expected Net Cost Savings (Howell et al., LivePerson 2023) from measured agent actions.

    ENCS = P(use)·S_use + P(edit)·S_edit + P(ignore)·S_ignore − C      (per draft)

For every drafted message: labour saving = R × (T_baseline − handle seconds) / 3600 when the
agent used, edited or ignored the draft (negative when a useless draft cost time), 0 when no
draft text was there to use; cost = what its cascade attempts cost. Summed over a period:
ENCS = labour savings − model cost. The decomposition above (P over every draft, S_a the mean
saving of kind a, C the mean cost) gives the same total, exactly; the report shows both.

- R: the team's agent rate in force on the draft's day (AccountingSettings, dated rows; a
  team's own row wins over the default for all teams).
- T_baseline: per team, the mean handle time of the replies agents wrote in held-out
  conversations (no draft) during the period, once there are at least `min_holdout_sample`
  of them (with a 95 % confidence interval); before that the configured default.
- Savings against the all-paid baseline: each draft stores what the policy's top tier alone
  would have cost (drafting's counterfactual); the report shows that total and the cascade's
  saving against it.
- The agent's wait: handle time starts when the agent opens the conversation, so seconds spent
  waiting for a draft still generating are already in it, and ENCS already pays for them. The
  wait term decomposes the labour, it is no second deduction:
      labour savings = R·(n·T − Σ(handle − wait))/3600 − R·Σ wait/3600,
  so ENCS = ENCS if drafts were instant − wait cost, exactly (wait cost = R × Σ wait / 3600,
  at each day's rate, over the drafts acted on: use, edit, ignore — the ones whose handle time
  is in ENCS).

Everything is computed from facts (accounting.facts): the rollup for closed days, the raw
rows for the rest; money stays Decimal throughout and is rounded once, at the end.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, localcontext
from fractions import Fraction

from accounting.facts import DRAFTED_KINDS, KINDS, Fact, Scope
from accounting.figures import (
    DECOMPOSED_KINDS,
    MONEY,
    SECONDS,
    ZERO,
    Baseline,
    Decomposition,
    Figures,
    Group,
    WhatIf,
    share_of,
)
from accounting.models import AccountingSettings

GROUP_BY = ("model", "tier", "policy", "team", "agent", "intent", "day", "month")


# Sums of savings are kept as exact decimals scaled by 3600 (R × (n·T − Σ handle), in
# USD·s/h): additions and products of decimals are exact given enough digits, and this context
# raises instead of rounding if that ever stops being true. The one division, by 3600, happens
# once per figure, as a Fraction. (Fractions all the way were exact too, but 30× slower: a
# month of facts took seconds.)
EXACT = Context(prec=120, traps=[Inexact, InvalidOperation, Overflow])


class SettingsMissing(LookupError):
    """No AccountingSettings row is in force for a team on a day: ENCS cannot be priced."""


def money(value: Decimal | Fraction) -> Decimal:
    if isinstance(value, Fraction):
        value = Decimal(value.numerator) / Decimal(value.denominator)
    return value.quantize(MONEY)


def money_str(value: Decimal | Fraction) -> str:
    """Money for JSON: a plain decimal string with 10 places ("0.0000000000", never "0E-10")."""
    return f"{money(value):f}"


class SettingsBook:
    """Every AccountingSettings row, read once; `at(team, day)` is the row in force."""

    def __init__(self, rows: Iterable[AccountingSettings]):
        self._rows: dict[int | None, list[AccountingSettings]] = defaultdict(list)
        for row in sorted(rows, key=lambda r: r.effective_from, reverse=True):
            self._rows[row.team_id].append(row)

    @classmethod
    def load(cls) -> SettingsBook:
        return cls(AccountingSettings.objects.all())

    def at(self, team_id: int, day: date) -> AccountingSettings:
        for owner in (team_id, None):
            for row in self._rows.get(owner, []):
                if row.effective_from <= day:
                    return row
        raise SettingsMissing(
            f"No accounting settings in force for team {team_id} on {day}: add an agent rate "
            "and default baseline (admin → Accounting settings)."
        )


def baseline_for(
    facts: Sequence[Fact], *, team_id: int, book: SettingsBook, last_day: date
) -> Baseline:
    held = [f for f in facts if f.team_id == team_id and f.kind == "held_out"]
    n = sum(f.drafts for f in held)
    settings_row = book.at(team_id, last_day)
    if n >= settings_row.min_holdout_sample and n > 0:
        total = sum((f.handle_seconds for f in held), ZERO)
        total_sq = sum((f.handle_seconds_sq for f in held), ZERO)
        mean = total / n
        ci = None
        if n > 1:
            variance = max(ZERO, (total_sq - n * mean * mean) / (n - 1))
            half = Decimal("1.96") * (variance / n).sqrt()
            ci = (mean - half, mean + half)
        return Baseline(
            seconds=mean,
            source="measured",
            sample=n,
            min_sample=settings_row.min_holdout_sample,
            ci95_seconds=ci,
        )
    return Baseline(
        seconds=settings_row.default_baseline_seconds,
        source="default",
        sample=n,
        min_sample=settings_row.min_holdout_sample,
    )


@dataclass
class Totals:
    """Sums over a set of facts, with the labour saving already priced per fact."""

    drafts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    handle: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(KINDS, ZERO))
    # Labour savings per kind × 3600 (see EXACT); read them through `saving(kind)`.
    savings_x3600: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(KINDS, ZERO))
    cost: Decimal = ZERO
    counterfactual_cost: Decimal = ZERO
    # The agent's wait inside the acted drafts' handle time (see the module's docstring).
    waited: int = 0
    wait_seconds: Decimal = ZERO
    wait_cost_x3600: Decimal = ZERO

    def add(self, fact: Fact, saving_x3600: Decimal, wait_cost_x3600: Decimal = ZERO) -> None:
        """Add one fact (call under `localcontext(EXACT)`: the sums stay exact)."""
        self.drafts[fact.kind] += fact.drafts
        self.handle[fact.kind] += fact.handle_seconds
        self.savings_x3600[fact.kind] += saving_x3600
        self.cost += fact.cost
        self.counterfactual_cost += fact.counterfactual_cost
        if fact.kind in DRAFTED_KINDS:
            self.waited += fact.waited
            self.wait_seconds += fact.wait_seconds
            self.wait_cost_x3600 += wait_cost_x3600

    def wait_cost(self) -> Fraction:
        """R × Σ wait / 3600 in USD, exactly: the labour spent waiting for drafts."""
        return Fraction(self.wait_cost_x3600) / 3600

    def saving(self, kind: str) -> Fraction:
        """Labour savings of `kind`'s drafts in USD, exactly."""
        return Fraction(self.savings_x3600[kind]) / 3600

    def labour_savings(self) -> Fraction:
        with localcontext(EXACT):
            return Fraction(sum(self.savings_x3600.values(), ZERO)) / 3600

    def figures(self) -> Figures:
        """The figures of these sums, money rounded once (here)."""
        drafted = {k: self.drafts[k] for k in DECOMPOSED_KINDS}
        n_drafts = sum(drafted.values())
        messages = sum(self.drafts.values())
        labour = self.labour_savings()
        encs = labour - Fraction(self.cost)
        wait_cost = self.wait_cost()
        decomposition = None
        if n_drafts:
            s = {k: (self.saving(k) / v if v else Fraction(0)) for k, v in drafted.items()}
            c = Fraction(self.cost) / n_drafts
            per_draft = (
                sum((Fraction(v, n_drafts) * s[k] for k, v in drafted.items()), Fraction(0)) - c
            )
            decomposition = Decomposition(
                drafts=n_drafts,
                p={k: share_of(v, n_drafts) for k, v in drafted.items()},
                s_usd={k: money(v) for k, v in s.items()},
                c_usd=money(c),
                encs_per_draft_usd=money(per_draft),
                encs_usd=money(per_draft * n_drafts),
                w_usd=money(wait_cost / n_drafts),
            )
        return Figures(
            messages=messages,
            drafts=n_drafts,
            actions={
                **{k: self.drafts[k] for k in DRAFTED_KINDS},
                "none": self.drafts["none"] + self.drafts["held_out"],
            },
            unanswered_drafts=self.drafts["unused"],
            # Answered, but after longer than ACTION_MAX_HANDLE_SECONDS: no saving, no baseline.
            outliers=self.drafts["outlier"] + self.drafts["held_out_outlier"],
            held_out=self.drafts["held_out"]
            + self.drafts["held_out_open"]
            + self.drafts["held_out_outlier"],
            handle_seconds={
                k: (self.handle[k] / self.drafts[k]).quantize(SECONDS) if self.drafts[k] else None
                for k in (*DRAFTED_KINDS, "held_out")
            },
            labor_savings_usd=money(labour),
            model_cost_usd=money(self.cost),
            encs_usd=money(encs),
            encs_per_message_usd=money(encs / messages) if messages else None,
            all_paid_cost_usd=money(self.counterfactual_cost),
            cascade_savings_usd=money(self.counterfactual_cost - self.cost),
            encs_all_paid_usd=money(labour - Fraction(self.counterfactual_cost)),
            decomposition=decomposition,
            waited_drafts=self.waited,
            wait_seconds=self.wait_seconds.quantize(SECONDS),
            wait_cost_usd=money(wait_cost),
            encs_if_instant_usd=money(encs + wait_cost),
        )


def saving_x3600(fact: Fact, *, rate: Decimal, baseline: Decimal) -> Decimal:
    """R × (n·T − Σ handle): the fact's labour saving × 3600 (call under EXACT)."""
    if fact.kind not in DRAFTED_KINDS:
        return ZERO
    return rate * (fact.drafts * baseline - fact.handle_seconds)


def _wait_cost_x3600(fact: Fact, *, rate: Decimal) -> Decimal:
    """R × Σ wait: the fact's wait cost × 3600 (call under EXACT); 0 where the handle time
    is not in ENCS (outliers, held out, unanswered)."""
    if fact.kind not in DRAFTED_KINDS:
        return ZERO
    return rate * fact.wait_seconds


Labeller = Callable[[Fact], str]


def totals(
    facts: Sequence[Fact],
    *,
    scope: Scope,
    book: SettingsBook,
    label: Labeller | None = None,
    baselines: Mapping[int, Baseline] | None = None,
) -> tuple[Totals, dict[str, Totals], dict[int, Baseline]]:
    """Exact sums over the facts in `scope`: in total, per `label(fact)`, and each team's
    baseline (measured over the whole scope). A subset of a scope's drafts (those citing an
    article, say) holds none of its held-out replies: pass the scope's `baselines` then."""
    facts = [f for f in facts if scope.admits(f)]
    if baselines is None:
        last_day = date.fromordinal(scope.end.toordinal() - 1)
        teams = sorted({f.team_id for f in facts} | set(scope.team_ids or ()))
        baselines = {t: baseline_for(facts, team_id=t, book=book, last_day=last_day) for t in teams}
    else:
        baselines = dict(baselines)
    total = Totals()
    groups: dict[str, Totals] = defaultdict(Totals)
    rates: dict[tuple[int, date], Decimal] = {}
    with localcontext(EXACT):
        for fact in facts:
            rate = rates.get((fact.team_id, fact.day))
            if rate is None:
                rate = rates[fact.team_id, fact.day] = book.at(
                    fact.team_id, fact.day
                ).agent_hourly_usd
            saving = saving_x3600(fact, rate=rate, baseline=baselines[fact.team_id].seconds)
            waiting = _wait_cost_x3600(fact, rate=rate)
            total.add(fact, saving, waiting)
            if label is not None:
                groups[label(fact)].add(fact, saving, waiting)
    return total, groups, baselines


@dataclass(frozen=True)
class Summary:
    """`summarise`'s answer: the figures in total and per group, and each team's baseline."""

    totals: Figures
    groups: tuple[Group, ...]
    baselines: dict[int, Baseline]


def summarise(
    facts: Sequence[Fact],
    *,
    scope: Scope,
    book: SettingsBook,
    label: Labeller | None = None,
) -> Summary:
    """The ENCS figures of `facts` (already limited to `scope`'s days), in total and per group
    (`label(fact)` names a fact's group; no groups without it)."""
    total, groups, baselines = totals(facts, scope=scope, book=book, label=label)
    return Summary(
        totals=total.figures(),
        groups=tuple(Group(name=name, figures=g.figures()) for name, g in sorted(groups.items())),
        baselines=baselines,
    )


def whatif(
    *,
    agent_hourly_usd: Decimal,
    baseline_seconds: Decimal,
    handle_seconds: dict[str, Decimal],
    shares: dict[str, Decimal],
    cost_per_response_usd: Decimal,
    messages_per_year: int,
) -> WhatIf:
    """The paper's case-study arithmetic: ENCS per message and per year from assumed action
    times and shares (use/edit/ignore, shares summing to at most 1; the rest saves nothing)."""
    per_message = Fraction(0)
    savings: dict[str, Decimal] = {}
    for kind in DRAFTED_KINDS:
        s = (
            Fraction(agent_hourly_usd)
            * (Fraction(baseline_seconds) - Fraction(handle_seconds[kind]))
            / 3600
        )
        savings[kind] = money(s)
        per_message += Fraction(shares[kind]) * s
    per_message -= Fraction(cost_per_response_usd)
    return WhatIf(
        s_usd=savings,
        encs_per_message_usd=money(per_message),
        encs_per_year_usd=money(per_message * messages_per_year),
        messages_per_year=messages_per_year,
        break_even_cost_per_response_usd=money(per_message + Fraction(cost_per_response_usd)),
    )
