"""Admin for what the cascade produced and agents did: drafts with their attempts (and why a
draft was escalated), agent actions (with whether each counts in ENCS), the completion cache and
the few-shot examples. All are records, read-only here (csbot.admin_records); cache entries and
examples may be deleted."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from csbot.admin_records import RecordAdmin
from drafting import selectors
from drafting.models import (
    AgentAction,
    CachedReply,
    Draft,
    DraftAttempt,
    ReplyExample,
)

_ATTEMPT_FIELDS: tuple[str, ...] = (
    "tier",
    "endpoint",
    "cache_hit",
    "cache_match",
    "cache_similarity",
    "fewshot_examples",
    "prompt_tokens_saved",
    "model_name",
    "tokens_in",
    "tokens_out",
    "latency_ms",
    "cost",
    "outcome",
    "error_kind",
    "error_message",
    "exploratory",
    "started_at",
)


def explanation_html(explanation: list[dict[str, Any]] | None) -> str:
    """The escalated draft's words, red where they pulled the learned score down, green where
    they held it up, stronger for larger weights (as in the console's draft panel)."""
    if not explanation:
        return "—"
    words = selectors.explained_words(explanation)
    return format_html(
        '<span class="explanation">{}</span><br><small>red: pulled the score down; '
        "green: held it up (hover for the weight)</small>",
        format_html_join(
            "",
            '{}<span title="{}" style="background: rgba({}, {})">{}</span>',
            (
                (
                    word.gap,
                    f"{word.weight:+.3f}",
                    "220, 38, 38" if word.negative else "22, 163, 74",
                    word.strength,
                    word.word,
                )
                for word in words
            ),
        ),
    )


class DraftAttemptInline(admin.TabularInline[DraftAttempt, Draft]):
    model = DraftAttempt
    fk_name = "draft"
    extra = 0
    can_delete = False
    fields = readonly_fields = _ATTEMPT_FIELDS


@admin.register(Draft)
class DraftAdmin(RecordAdmin, admin.ModelAdmin[Draft]):
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
class DraftAttemptAdmin(RecordAdmin, admin.ModelAdmin[DraftAttempt]):
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
    exclude = ["explanation"]
    readonly_fields = ["scorer", "why_escalated"]

    @admin.display(description="why this draft was escalated")
    def why_escalated(self, attempt: DraftAttempt) -> str:
        return explanation_html(attempt.explanation)


class HandleTimeFilter(admin.SimpleListFilter):
    title = "handle time"
    parameter_name = "handle"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [("counted", "Counted in ENCS"), ("outlier", "Outlier (too long, not counted)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "outlier":
            return queryset.filter(AgentAction.outlier_condition())
        if self.value() == "counted":
            return queryset.exclude(AgentAction.outlier_condition())
        return queryset


@admin.register(AgentAction)
class AgentActionAdmin(RecordAdmin, admin.ModelAdmin[AgentAction]):
    list_display = [
        "id",
        "kind",
        "agent",
        "draft",
        "handle_seconds",
        "counted_in_encs",
        "edit_distance",
        "acted_at",
    ]
    list_filter = ["kind", HandleTimeFilter]
    list_select_related = ["agent", "draft"]
    raw_id_fields = ["draft", "inbound_message", "outbound_message"]

    @admin.display(boolean=True, description="Counted in ENCS")
    def counted_in_encs(self, action: AgentAction) -> bool:
        return not action.is_outlier


@admin.register(CachedReply)
class CachedReplyAdmin(RecordAdmin, admin.ModelAdmin[CachedReply]):
    """Approved replies served again (drafting.engine.cache): learned from agents' replies,
    never typed in; an entry that should not be served any more is deleted."""

    deletable = True
    list_display = [
        "customer_text",
        "team",
        "hits",
        "embedding_model",
        "created_at",
        "expires_at",
    ]
    list_filter = ["team"]
    list_select_related = ["team"]
    readonly_fields = ["embedding_model"]
    search_fields = ["customer_text", "reply"]
    raw_id_fields = ["source_draft"]
    actions = ["purge_expired"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[CachedReply]:
        return selectors.cached_replies_with_hits().select_related("team")

    @admin.display(description="hits", ordering="hits")
    def hits(self, entry: CachedReply) -> int:
        return int(entry.hits)  # type: ignore[attr-defined]

    @admin.action(description="Purge expired entries (of the whole cache)")
    def purge_expired(self, request: HttpRequest, queryset: QuerySet[CachedReply]) -> None:
        count, _ = CachedReply.objects.filter(expires_at__lte=timezone.now()).delete()
        messages.success(request, f"{count} expired cached replies purged.")


@admin.register(ReplyExample)
class ReplyExampleAdmin(RecordAdmin, admin.ModelAdmin[ReplyExample]):
    """Few-shot examples: replies agents used as is, personal data scrubbed. Delete one that
    should no longer be shown to the model (a policy changed, a price is out of date)."""

    deletable = True

    list_display = ["customer_text", "team", "embedding_model", "created_at"]
    list_filter = ["team"]
    list_select_related = ["team"]
    search_fields = ["customer_text", "reply"]
    raw_id_fields = ["source_draft"]
    readonly_fields = ["embedding_model", "created_at"]
