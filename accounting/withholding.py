"""What withholding drafts does to ENCS, and the action values drafting withholds with.

Action values: drafting decides whether to show a draft from what each action on it is worth
to the team (drafting.decisions, drafting.engine.decisions). Those values are accounting's own
figures: S_a = the mean labour saving of the team's drafts acted on with a, R × (T_baseline −
handle)/3600 as accounting.engine prices every draft, over the last WINDOW_DAYS days, once
there are at least MIN_ACTIONS actions and every kind occurred; the wait of a second is the
agent rate / 3600. `action_values_refresh` (a periodic task) measures them per team and hands
them to drafting (drafting.decisions.action_values_store): drafting never imports accounting.

Withheld drafts in ENCS: a withheld draft was never shown, so the agent's reply to it is
recorded as `none` (drafting.services.action_record) and its fact is `none` (answered
unaided) or `unused` (never answered): it saves nothing and costs its attempts, ENCS = −cost.
It is not a held-out reply: T_baseline stays measured on the hold-out alone, whose
conversations never got a draft (a withheld draft's conversation did get drafts, and the choice
to withhold depends on the message, so its replies are no random sample of unaided work).

The dashboard (`withholding_stats`): how many drafts were decided and withheld, the expected
loss avoided (Σ −V over the withheld drafts, V = E + the draft's cost when decided: the value
of showing; the cost was spent either way), and, from the negative-estimate drafts shown anyway
(the random show share), their measured ENCS per draft with its 95 % interval beside the mean
estimate: if the measured ENCS of those drafts is not negative, the estimate is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import (
    BooleanField,
    Case,
    Count,
    DecimalField,
    F,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from accounting.engine import SettingsBook, SettingsMissing, money, summarise
from accounting.facts import DRAFTED_KINDS, Scope, drafts_between, local_tz, scope_facts
from accounting.figures import MONEY, Baseline
from drafting.decisions import action_values_store
from drafting.models import MONEY_DIGITS, MONEY_PLACES, AgentAction, Draft, DraftAttempt

WINDOW_DAYS = 30
MIN_ACTIONS = 30
ZERO = Decimal(0)


# --- Action values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredActionValues:
    team_id: int
    s_use: Decimal
    s_edit: Decimal
    s_ignore: Decimal
    wait_per_second: Decimal
    n_actions: int


def action_values_measure(
    *,
    team_id: int,
    today: date,
    book: SettingsBook,
    window_days: int = WINDOW_DAYS,
    min_actions: int = MIN_ACTIONS,
) -> MeasuredActionValues | None:
    """The team's S_use, S_edit, S_ignore from its drafts of the `window_days` days up to
    `today` (the ENCS decomposition's S_a, exactly), and its agent rate per second; None below
    `min_actions` actions or when some kind never occurred (its S_a would be a guess).
    SettingsMissing when no agent rate is in force."""
    scope = Scope(
        start=today - timedelta(days=window_days - 1),
        end=today + timedelta(days=1),
        team_ids=(team_id,),
    )
    summary = summarise(scope_facts(scope, by_agent=False), scope=scope, book=book)
    figures = summary.totals
    counts = {kind: figures.actions[kind] for kind in DRAFTED_KINDS}
    decomposition = figures.decomposition
    if decomposition is None or sum(counts.values()) < min_actions or min(counts.values()) == 0:
        return None
    rate = book.at(team_id, today).agent_hourly_usd
    return MeasuredActionValues(
        team_id=team_id,
        s_use=decomposition.s_usd["use"],
        s_edit=decomposition.s_usd["edit"],
        s_ignore=decomposition.s_usd["ignore"],
        wait_per_second=money(rate / 3600),
        n_actions=sum(counts.values()),
    )


def action_values_refresh(
    *, today: date | None = None, min_actions: int = MIN_ACTIONS
) -> list[int]:
    """Measure every team with drafts in the window and store its values in drafting (the
    periodic task's work). The ids of the teams whose values were stored; a team below the
    minimum, or without an agent rate, keeps what it had (values age: `computed_at`)."""
    today = today or timezone.localdate()
    book = SettingsBook.load()
    start = today - timedelta(days=WINDOW_DAYS - 1)
    teams = sorted(
        set(
            drafts_between(start, today + timedelta(days=1))
            .values_list("policy__team_id", flat=True)
            .distinct()
        )
    )
    stored = []
    for team_id in teams:
        try:
            measured = action_values_measure(
                team_id=team_id, today=today, book=book, min_actions=min_actions
            )
        except SettingsMissing:
            continue
        if measured is None:
            continue
        action_values_store(
            team_id=team_id,
            s_use=measured.s_use,
            s_edit=measured.s_edit,
            s_ignore=measured.s_ignore,
            wait_per_second=measured.wait_per_second,
            n_actions=measured.n_actions,
        )
        stored.append(team_id)
    return stored


# --- The dashboard's figures ------------------------------------------------------------------


@dataclass(frozen=True)
class WithholdingStats:
    """Withholding in a scope: see the module docstring."""

    decided: int  # drafts whose expected ENCS was worked out
    withheld: int
    loss_avoided_usd: Decimal  # Σ −V over the withheld drafts
    shown_negative: int  # negative value of showing, shown anyway (the random share)
    shown_negative_expected_usd: Decimal | None  # their mean expected ENCS, E
    shown_negative_encs_usd: Decimal | None  # their measured ENCS per draft
    shown_negative_ci95_usd: tuple[Decimal, Decimal] | None

    @property
    def any(self) -> bool:
        return self.decided > 0


def _money_field() -> DecimalField[Any, Any]:
    return DecimalField(max_digits=MONEY_DIGITS + 6, decimal_places=MONEY_PLACES)


def withholding_stats(scope: Scope, *, baselines: Mapping[int, Baseline]) -> WithholdingStats:
    """The scope's withholding figures (two queries). `baselines`: each team's T_baseline, as
    the ENCS figures of the same scope measured it."""
    drafts = drafts_between(scope.start, scope.end).filter(expected_encs__isnull=False)
    if scope.team_ids is not None:
        drafts = drafts.filter(policy__team_id__in=scope.team_ids)
    if scope.policy_ids is not None:
        drafts = drafts.filter(policy_id__in=scope.policy_ids)
    # What the draft had cost when it was decided: its own attempts (every try), neither the
    # exploration after it nor composer rewrites of the agent's reply.
    decided_cost = Subquery(
        DraftAttempt.objects.filter(
            draft_id=OuterRef("pk"), exploratory=False, purpose=DraftAttempt.Purpose.DRAFT
        )
        .order_by()
        .values("draft_id")
        .annotate(total=Sum("cost"))
        .values("total"),
        output_field=_money_field(),
    )
    drafts = drafts.annotate(
        value_of_showing=Coalesce(decided_cost, Value(ZERO), output_field=_money_field())
        + F("expected_encs")
    )
    is_withheld = Q(status=Draft.Status.WITHHELD)
    counts = drafts.aggregate(
        decided=Count("id"),
        withheld=Count("id", filter=is_withheld),
        value=Coalesce(
            Sum("value_of_showing", filter=is_withheld),
            Value(ZERO),
            output_field=_money_field(),
        ),
    )
    # The shown drafts with a negative value of showing: read only when some draft was shown
    # after a decision (a policy that does not withhold costs the dashboard one statement).
    rows = []
    if counts["decided"] > counts["withheld"]:
        rows = list(
            drafts.filter(value_of_showing__lt=0)
            .exclude(status=Draft.Status.WITHHELD)
            .annotate(
                day=TruncDate("created_at", tzinfo=local_tz()),
                outlier=Case(
                    When(AgentAction.outlier_condition("action__"), then=Value(True)),
                    default=Value(False),
                    output_field=BooleanField(),
                ),
            )
            .values_list(
                "policy__team_id",
                "day",
                "action__kind",
                "action__handle_seconds",
                "outlier",
                "total_cost",
                "expected_encs",
            )
        )
    book = SettingsBook.load() if rows else None
    measured: list[Decimal] = []
    estimated: list[Decimal] = []
    for team_id, day, kind, handle, outlier, cost, expected_encs in rows:
        estimated.append(expected_encs or ZERO)  # never null: only decided drafts are read
        saving = ZERO
        if kind in DRAFTED_KINDS and not outlier and book is not None:
            rate = book.at(team_id, day).agent_hourly_usd
            saving = rate * (baselines[team_id].seconds - handle) / 3600
        measured.append(saving - cost)
    n = len(measured)
    mean = sum(measured, ZERO) / n if n else None
    ci = None
    if mean is not None and n > 1:
        variance = sum(((x - mean) ** 2 for x in measured), ZERO) / (n - 1)
        half = Decimal("1.96") * Decimal(math.sqrt(variance / n))
        ci = (money(mean - half), money(mean + half))
    expected = sum(estimated, ZERO) / n if n else None
    return WithholdingStats(
        decided=counts["decided"],
        withheld=counts["withheld"],
        loss_avoided_usd=(-counts["value"]).quantize(MONEY),
        shown_negative=n,
        shown_negative_expected_usd=money(expected) if expected is not None else None,
        shown_negative_encs_usd=money(mean) if mean is not None else None,
        shown_negative_ci95_usd=ci,
    )


def withholding_display(stats: WithholdingStats) -> dict[str, Any]:
    """The dashboard card's strings (money formatted once, here at the edge)."""
    from accounting.rendering import usd

    ci = stats.shown_negative_ci95_usd
    return {
        "any": stats.any,
        "decided": stats.decided,
        "withheld": stats.withheld,
        "loss_avoided": usd(stats.loss_avoided_usd, 2),
        "shown_negative": stats.shown_negative,
        "expected": usd(stats.shown_negative_expected_usd, 4),
        "measured": usd(stats.shown_negative_encs_usd, 4),
        "ci": f"{usd(ci[0], 4)} … {usd(ci[1], 4)}" if ci is not None else None,
    }
