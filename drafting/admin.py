from __future__ import annotations

from django.contrib import admin

from drafting.models import (
    AgentAction,
    CascadePolicy,
    CascadeTier,
    Draft,
    DraftAttempt,
    ModelEndpoint,
)


@admin.register(ModelEndpoint)
class ModelEndpointAdmin(admin.ModelAdmin[ModelEndpoint]):
    list_display = [
        "name",
        "kind",
        "model_name",
        "base_url",
        "input_price_per_mtok",
        "output_price_per_mtok",
        "gpu_hour_usd",
        "enabled",
    ]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "model_name"]


class CascadeTierInline(admin.TabularInline[CascadeTier, CascadePolicy]):
    model = CascadeTier
    extra = 0
    autocomplete_fields = ["endpoint"]


@admin.register(CascadePolicy)
class CascadePolicyAdmin(admin.ModelAdmin[CascadePolicy]):
    list_display = ["name", "team", "active", "holdout_share", "created_at"]
    list_filter = ["team", "active"]
    search_fields = ["name"]
    inlines = [CascadeTierInline]


_ATTEMPT_FIELDS: tuple[str, ...] = (
    "tier",
    "endpoint",
    "model_name",
    "tokens_in",
    "tokens_out",
    "latency_ms",
    "cost",
    "outcome",
    "error_kind",
    "error_message",
    "started_at",
)


class DraftAttemptInline(admin.TabularInline[DraftAttempt, Draft]):
    model = DraftAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = _ATTEMPT_FIELDS


@admin.register(Draft)
class DraftAdmin(admin.ModelAdmin[Draft]):
    list_display = [
        "id",
        "message",
        "policy",
        "status",
        "final_endpoint",
        "score",
        "total_cost",
        "created_at",
        "ready_at",
    ]
    list_filter = ["status", "policy", "final_endpoint"]
    list_select_related = ["message", "policy", "final_endpoint"]
    raw_id_fields = ["message"]
    readonly_fields = [
        "created_at",
        "enqueued_at",
        "claimed_at",
        "ready_at",
        "first_shown_at",
        "tries",
    ]
    inlines = [DraftAttemptInline]


@admin.register(DraftAttempt)
class DraftAttemptAdmin(admin.ModelAdmin[DraftAttempt]):
    list_display = [
        "id",
        "draft",
        "tier",
        "endpoint",
        "outcome",
        "error_kind",
        "tokens_in",
        "tokens_out",
        "latency_ms",
        "cost",
        "started_at",
    ]
    list_filter = ["outcome", "error_kind", "endpoint"]
    list_select_related = ["endpoint", "draft"]
    raw_id_fields = ["draft"]


@admin.register(AgentAction)
class AgentActionAdmin(admin.ModelAdmin[AgentAction]):
    list_display = ["id", "kind", "agent", "draft", "handle_seconds", "edit_distance", "acted_at"]
    list_filter = ["kind"]
    list_select_related = ["agent", "draft"]
    raw_id_fields = ["draft", "inbound_message", "outbound_message"]
