"""The agent's wait for drafts, as the dashboard and the report show it.

The sums (drafts waited for, seconds, their cost R × wait/3600, ENCS had drafts been instant)
are ENCS figures like any other (accounting.engine, from the facts and the rollup). What sums
cannot give is the spread: the median and the 95th percentile of a wait. They are read here
from the raw rows of the scope, in one aggregate query, as the dashboard reads the cost per
tier (`accounting.dashboard.tier_costs`).

The drafts counted are the ones whose handle time is in ENCS: used, edited or ignored, not
outliers, not held out (accounting.facts explains the wait of a draft).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Aggregate, Count, FloatField, Q

from accounting.facts import DRAFTED_KINDS, Scope, drafts_between, wait_seconds_expression
from accounting.figures import SECONDS, share_of
from drafting.models import AgentAction, Draft


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate: the `fraction` percentile, interpolated."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, *, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"A percentile's fraction is in [0, 1], not {fraction}.")
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


@dataclass(frozen=True)
class WaitStats:
    """The wait of a scope's drafts acted on: how many, how many were waited for, and the
    median and 95th percentile of the waits that happened (None when none did)."""

    acted: int
    waited: int
    p50_seconds: Decimal | None
    p95_seconds: Decimal | None

    @property
    def share(self) -> Decimal:
        """Drafts waited for ÷ drafts acted on."""
        return share_of(self.waited, self.acted)


def _seconds(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(repr(value)).quantize(SECONDS)


def wait_stats(scope: Scope) -> WaitStats:
    """The scope's waits from the raw rows (one query)."""
    drafts = drafts_between(scope.start, scope.end).filter(
        ~AgentAction.outlier_condition("action__"),
        action__kind__in=DRAFTED_KINDS,
    )
    drafts = drafts.exclude(status=Draft.Status.HELD_OUT)
    if scope.team_ids is not None:
        drafts = drafts.filter(policy__team_id__in=scope.team_ids)
    if scope.policy_ids is not None:
        drafts = drafts.filter(policy_id__in=scope.policy_ids)
    waited = Q(wait__gt=0)
    row = drafts.annotate(
        wait=wait_seconds_expression(),
    ).aggregate(
        acted=Count("id"),
        waited=Count("id", filter=waited),
        p50=PercentileCont("wait", fraction=0.5, filter=waited),
        p95=PercentileCont("wait", fraction=0.95, filter=waited),
    )
    return WaitStats(
        acted=row["acted"],
        waited=row["waited"],
        p50_seconds=_seconds(row["p50"]),
        p95_seconds=_seconds(row["p95"]),
    )
