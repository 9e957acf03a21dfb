"""What an endpoint has spent this UTC day and month, and which spend cap that reaches: the
cascade checks it before asking a capped endpoint, the admin shows it per endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db.models import DecimalField, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from drafting.models import MONEY_DIGITS, MONEY_PLACES, DraftAttempt, ModelEndpoint


@dataclass(frozen=True)
class EndpointSpend:
    today: Decimal
    month: Decimal
    capped: str  # "", "daily" or "monthly"

    @classmethod
    def of(cls, *, endpoint: ModelEndpoint, today: Decimal, month: Decimal) -> EndpointSpend:
        """These totals, and which of the endpoint's caps, if any, they reach."""
        capped = ""
        if endpoint.daily_spend_cap is not None and today >= endpoint.daily_spend_cap:
            capped = "daily"
        elif endpoint.monthly_spend_cap is not None and month >= endpoint.monthly_spend_cap:
            capped = "monthly"
        return cls(today=today, month=month, capped=capped)


def _spend_periods(now: datetime | None) -> tuple[datetime, datetime]:
    """The start of the current UTC day and month."""
    now = (now or timezone.now()).astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1)


def endpoint_spend(*, endpoint: ModelEndpoint, now: datetime | None = None) -> EndpointSpend:
    """What the endpoint's attempts cost this UTC day and month (one aggregate query), and
    which cap, if any, that reaches."""
    day, month = _spend_periods(now)
    totals = DraftAttempt.objects.filter(endpoint=endpoint, started_at__gte=month).aggregate(
        month=Coalesce(Sum("cost"), Decimal(0)),
        today=Coalesce(Sum("cost", filter=Q(started_at__gte=day)), Decimal(0)),
    )
    return EndpointSpend.of(endpoint=endpoint, today=totals["today"], month=totals["month"])


def endpoints_with_spend(
    queryset: QuerySet[ModelEndpoint], *, now: datetime | None = None
) -> QuerySet[ModelEndpoint]:
    """`queryset` with each endpoint's `spend_today` and `spend_month` annotated, as
    endpoint_spend computes them: a list of endpoints in one query, not one per row."""
    day, month = _spend_periods(now)
    money: DecimalField[Decimal, Decimal] = DecimalField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES
    )
    this_month = (
        DraftAttempt.objects.filter(endpoint=OuterRef("pk"), started_at__gte=month)
        .order_by()  # the default ordering would split the per-endpoint group
        .values("endpoint")
    )

    def total(attempts: QuerySet[DraftAttempt, Any]) -> Coalesce:
        summed = attempts.annotate(total=Sum("cost")).values("total")
        return Coalesce(Subquery(summed, output_field=money), Value(Decimal(0)), output_field=money)

    return queryset.annotate(
        spend_today=total(this_month.filter(started_at__gte=day)), spend_month=total(this_month)
    )
