"""Break-even: when do a policy's or an endpoint's fixed costs pay back?

For each cascade policy and each model endpoint with fixed costs (one-off: set-up,
fine-tuning, integration; monthly: a reserved GPU), from the month of its first fixed cost to
the end of the period:
- cumulative net savings = ENCS of its drafts (a policy: all its drafts; an endpoint: the
  drafts it produced) month by month, against cumulative fixed costs (one-offs in their
  month, monthly costs every month they run);
- months to pay back = what is still to recover ÷ (mean monthly ENCS − current monthly fixed
  costs) at the observed volume; none when that rate is not positive;
- the yearly message volume at which a year pays for itself: (12 × monthly + one-off fixed
  costs) ÷ ENCS per message.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from fractions import Fraction

from accounting.engine import Scope, SettingsBook, money, totals
from accounting.facts import Fact, scope_facts
from accounting.figures import BreakEvenMonth, BreakEvenTarget
from accounting.models import FixedCost
from drafting.models import CascadePolicy, ModelEndpoint


def _month(day: date) -> date:
    return day.replace(day=1)


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _months(start: date, end: date) -> list[date]:
    months, month = [], _month(start)
    while month < end:
        months.append(month)
        month = _next_month(month)
    return months


def _fixed_in(cost: FixedCost, month: date) -> Decimal:
    if cost.kind == FixedCost.Kind.ONE_OFF:
        return cost.amount_usd if _month(cost.starts_on) == month else Decimal(0)
    running = _month(cost.starts_on) <= month and (
        cost.ends_on is None or month <= _month(cost.ends_on)
    )
    return cost.amount_usd if running else Decimal(0)


def break_even(*, end: date, team_ids: tuple[int, ...] | None = None) -> list[BreakEvenTarget]:
    """One entry per policy and per endpoint with fixed costs starting before `end` (the day
    after the period), limited to `team_ids`' policies when given."""
    costs = list(FixedCost.objects.filter(starts_on__lt=end).order_by("starts_on", "pk"))
    if team_ids is not None:
        team_policies = set(
            CascadePolicy.objects.filter(team_id__in=team_ids).values_list("pk", flat=True)
        )
        costs = [c for c in costs if c.policy_id is None or c.policy_id in team_policies]
    if not costs:
        return []
    start = _month(min(c.starts_on for c in costs))
    facts = scope_facts(Scope(start=start, end=end, team_ids=team_ids), by_agent=False)
    book = SettingsBook.load()
    by_target: dict[tuple[str, int], list[FixedCost]] = defaultdict(list)
    for cost in costs:
        if cost.policy_id is not None:
            by_target[("policy", cost.policy_id)].append(cost)
        if cost.endpoint_id is not None:
            by_target[("endpoint", cost.endpoint_id)].append(cost)
    names = {
        "policy": dict(CascadePolicy.objects.values_list("pk", "name")),
        "endpoint": dict(ModelEndpoint.objects.values_list("pk", "name")),
    }
    result = []
    for (target, target_id), target_costs in sorted(by_target.items()):
        field = "policy_id" if target == "policy" else "endpoint_id"
        result.append(
            _entry(
                target=target,
                target_id=target_id,
                name=names[target].get(target_id, str(target_id)),
                costs=target_costs,
                facts=[f for f in facts if getattr(f, field) == target_id],
                end=end,
                book=book,
                team_ids=team_ids,
            )
        )
    return result


def _entry(
    *,
    target: str,
    target_id: int,
    name: str,
    costs: list[FixedCost],
    facts: list[Fact],
    end: date,
    book: SettingsBook,
    team_ids: tuple[int, ...] | None,
) -> BreakEvenTarget:
    months = _months(min(c.starts_on for c in costs), end)
    scope = Scope(start=months[0], end=end, team_ids=team_ids)
    total, per_month, _ = totals(
        facts, scope=scope, book=book, label=lambda f: _month(f.day).isoformat()
    )
    series, saved, fixed = [], Fraction(0), Decimal(0)
    for month in months:
        month_totals = per_month.get(month.isoformat())
        if month_totals is not None:
            saved += month_totals.labour_savings() - Fraction(month_totals.cost)
        fixed += sum((_fixed_in(c, month) for c in costs), Decimal(0))
        series.append(
            BreakEvenMonth(
                month=month,
                cumulative_net_savings_usd=money(saved),
                cumulative_fixed_costs_usd=money(fixed),
            )
        )
    last = months[-1]
    monthly_fixed = sum(
        (c.amount_usd for c in costs if c.kind == FixedCost.Kind.MONTHLY and _fixed_in(c, last)),
        Decimal(0),
    )
    one_off = sum((c.amount_usd for c in costs if c.kind == FixedCost.Kind.ONE_OFF), Decimal(0))
    monthly_encs = saved / len(months)
    messages = sum(total.drafts.values())
    per_message = saved / messages if messages else None
    remaining = Fraction(fixed) - saved
    rate = monthly_encs - Fraction(monthly_fixed)
    if remaining <= 0:
        months_to_pay_back: float | None = 0.0
    elif rate > 0:
        months_to_pay_back = round(float(remaining / rate), 1)
    else:
        months_to_pay_back = None
    yearly_fixed = 12 * Fraction(monthly_fixed) + Fraction(one_off)
    volume = (
        int(-(-yearly_fixed // per_message))
        if per_message is not None and per_message > 0
        else None
    )
    return BreakEvenTarget(
        target=target,
        id=target_id,
        name=name,
        since=months[0],
        one_off_usd=money(one_off),
        monthly_usd=money(monthly_fixed),
        fixed_costs_usd=money(fixed),
        cumulative_net_savings_usd=money(saved),
        monthly_net_savings_usd=money(monthly_encs),
        messages=messages,
        paid_back=remaining <= 0,
        months_to_pay_back=months_to_pay_back,
        break_even_messages_per_year=volume,
        series=tuple(series),
    )
