"""Drafting reads the support domain and accounting use (never its internals directly)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db.models import (
    Count,
    DecimalField,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from drafting.models import (
    MONEY_DIGITS,
    MONEY_PLACES,
    AgentAction,
    CachedReply,
    Draft,
    DraftAttempt,
    ModelEndpoint,
)


def live_draft_for_message(*, message_id: int) -> Draft | None:
    return (
        Draft.objects.live().select_related("final_endpoint").filter(message_id=message_id).first()
    )


def live_drafts_for_messages(*, message_ids: Iterable[int]) -> dict[int, Draft]:
    """Live drafts keyed by inbound message id: one query, whatever the thread length."""
    drafts = Draft.objects.live().filter(message_id__in=list(message_ids)).select_related("action")
    return {draft.message_id: draft for draft in drafts}


def latest_draft_status(conversation_ref: OuterRef) -> Subquery:
    """Status of a conversation's newest live draft, for annotating conversation querysets."""
    return Subquery(
        Draft.objects.live()
        .filter(message__conversation_id=conversation_ref)
        .order_by("-id")
        .values("status")[:1]
    )


def action_for_reply(*, inbound_message_id: int | None, draft_id: int | None) -> AgentAction | None:
    """The action already recorded for this inbound message or draft (a duplicate submission)."""
    queryset = AgentAction.objects.select_related("outbound_message")
    if inbound_message_id is not None:
        action = queryset.filter(inbound_message_id=inbound_message_id).first()
        if action is not None:
            return action
    if draft_id is not None:
        return queryset.filter(draft_id=draft_id).first()
    return None


def draft_of_message(*, draft_id: int, message_id: int) -> Draft | None:
    """The draft with this id if it answers this message (whatever its status now)."""
    return Draft.objects.filter(pk=draft_id, message_id=message_id).first()


def drafts_for_team(*, team_id: int) -> QuerySet[Draft]:
    return Draft.objects.filter(message__conversation__team_id=team_id).select_related(
        "message", "final_endpoint"
    )


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


def cached_replies_with_hits() -> QuerySet[CachedReply]:
    """Cached replies with `hits`: cache-hit attempts that reused the entry since it was
    (re)stored."""
    hits = (
        DraftAttempt.objects.filter(
            cache_hit=True,
            cache_source_id=OuterRef("source_draft_id"),
            started_at__gte=OuterRef("created_at"),
        )
        .order_by()
        .values("cache_source_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return CachedReply.objects.annotate(
        hits=Coalesce(Subquery(hits, output_field=IntegerField()), Value(0))
    )
