"""Admin for model endpoints and their dated prices: what each tier costs, what it has spent
against its caps today and this month, its circuit breaker, and a one-click check that it answers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from redis.exceptions import RedisError

from drafting import services
from drafting.engine.breaker import breaker
from drafting.engine.pricing import PriceBook
from drafting.engine.spend import EndpointSpend, endpoints_with_spend
from drafting.models import (
    EndpointPrice,
    ModelEndpoint,
)


def _usd(amount: Decimal) -> str:
    """A price without the column's trailing zeros: 0.150000 → 0.15, 10.000000 → 10."""
    return format(amount.normalize(), "f")


def _annotation(endpoint: ModelEndpoint, name: str) -> Any:
    """A value get_queryset annotated on the row (the type checker cannot see annotations)."""
    return getattr(endpoint, name)


class EndpointPriceInline(admin.TabularInline[EndpointPrice, ModelEndpoint]):
    model = EndpointPrice
    extra = 0
    ordering = ["-effective_from"]
    fields = [
        "effective_from",
        "input_price_per_mtok",
        "output_price_per_mtok",
        "request_fee",
        "gpu_hour_usd",
        "note",
        "created_at",
    ]
    readonly_fields = ["created_at"]
    # The table, then how to change a price (a tabular inline has no description).
    template = "admin/drafting/endpointprice_inline.html"


@admin.register(ModelEndpoint)
class ModelEndpointAdmin(admin.ModelAdmin[ModelEndpoint]):
    # A base URL typed without a scheme is an https one (Django 6's default, chosen now).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = [
        "name",
        "kind",
        "model_name",
        "current_price",
        "enabled",
        "spend",
        "breaker_state",
    ]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "model_name"]
    actions = ["test_connection"]
    inlines = [EndpointPriceInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelEndpoint]:
        # The list's price and spend columns read these: two queries for the page in all.
        return endpoints_with_spend(super().get_queryset(request).prefetch_related("prices"))

    @admin.display(description="price now")
    def current_price(self, endpoint: ModelEndpoint) -> str:
        price = PriceBook(endpoint.prices.all()).price_at(endpoint.pk, timezone.now())
        if price is None:
            return "⚠ no price in force: attempts cost $0"
        if endpoint.kind == ModelEndpoint.Kind.LOCAL:
            return f"${_usd(price.gpu_hour_usd)}/GPU h"
        text = f"${_usd(price.input_price_per_mtok)} in / ${_usd(price.output_price_per_mtok)} out per M"
        return f"{text} + ${_usd(price.request_fee)}/request" if price.request_fee else text

    @admin.display(description="spend today / this month")
    def spend(self, endpoint: ModelEndpoint) -> str:
        spend = EndpointSpend.of(
            endpoint=endpoint,
            today=_annotation(endpoint, "spend_today"),
            month=_annotation(endpoint, "spend_month"),
        )
        text = f"${spend.today:.4f} / ${spend.month:.4f}"
        if spend.capped:
            return f"{text} · ⚠ {spend.capped} cap reached: tier skipped"
        return f"{text} · under cap" if endpoint.has_spend_cap else f"{text} · no cap"

    @admin.display(description="circuit")
    def breaker_state(self, endpoint: ModelEndpoint) -> str:
        try:
            state = breaker().state(endpoint.pk)
        except RedisError as exc:
            return f"unknown ({exc.__class__.__name__})"
        if state["state"] == "closed":
            return "closed"
        return f"{state['state']} ({state['seconds_left']:.0f} s left)"

    @admin.action(description="Test connection (list models, one tiny completion)")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[ModelEndpoint]) -> None:
        for endpoint in queryset:
            check = services.endpoint_check(endpoint=endpoint)
            if check.ok:
                messages.success(
                    request,
                    f"{endpoint.name}: OK in {check.latency_ms} ms; models: "
                    f"{', '.join(check.models) or 'none listed'}; reply: {check.reply[:60]!r}",
                )
            else:
                messages.error(request, f"{endpoint.name}: failed: {check.error}")
