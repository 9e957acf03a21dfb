from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from redis.exceptions import RedisError

from csbot.admin_autocomplete import ValidatedAutocomplete
from drafting import selectors, services
from drafting.engine.breaker import breaker
from drafting.engine.pricing import PriceBook
from drafting.learning import scorer as learning
from drafting.learning import tuning
from drafting.models import (
    AgentAction,
    CachedReply,
    CascadePolicy,
    CascadeTier,
    Draft,
    DraftAttempt,
    EndpointPrice,
    ModelEndpoint,
    ReplyExample,
    TrainedClassifier,
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
        return selectors.endpoints_with_spend(
            super().get_queryset(request).prefetch_related("prices")
        )

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
        spend = selectors.EndpointSpend.of(
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


class CascadeTierInline(ValidatedAutocomplete, admin.TabularInline[CascadeTier, CascadePolicy]):
    model = CascadeTier
    extra = 0
    autocomplete_fields = ["endpoint"]


@admin.register(CascadePolicy)
class CascadePolicyAdmin(admin.ModelAdmin[CascadePolicy]):
    list_display = ["name", "team", "active", "holdout_share", "explore_share", "created_at"]
    list_filter = ["team", "active"]
    search_fields = ["name"]
    inlines = [CascadeTierInline]
    actions = ["train_scorer_now"]

    @admin.action(description="Train the learned draft scorer now (from agent actions)")
    def train_scorer_now(self, request: HttpRequest, queryset: QuerySet[CascadePolicy]) -> None:
        for policy in queryset:
            outcome = learning.scorer_train(
                policy=policy,
                trained_by=request.user if isinstance(request.user, User) else None,
            )
            level = messages.SUCCESS if outcome.activated else messages.WARNING
            self.message_user(request, f"{policy}: {outcome.message}", level)

    # "Optimise thresholds" (the link is in templates/admin/drafting/cascadepolicy/
    # change_form.html): the current vs the optimiser's thresholds on the explored drafts.
    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<int:pk>/tuning/",
                self.admin_site.admin_view(self.tuning_view),
                name="drafting_cascadepolicy_tuning",
            ),
            *super().get_urls(),
        ]

    def tuning_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        policy = get_object_or_404(CascadePolicy.objects.select_related("team"), pk=pk)
        if not self.has_view_permission(request, policy):
            raise PermissionDenied
        form = TuningForm(request.GET or None)
        if request.method == "POST":
            if not self.has_change_permission(request, policy) or not isinstance(
                request.user, User
            ):
                raise PermissionDenied
            prefix = "threshold_"
            try:
                thresholds = {
                    int(key.removeprefix(prefix)): Decimal(request.POST[key])
                    for key in request.POST
                    if key.startswith(prefix)
                }
                changes = tuning.policy_apply_thresholds(
                    policy=policy, thresholds=thresholds, user=request.user
                )
            except (ValueError, ArithmeticError) as exc:  # TuningError is a ValueError
                self.message_user(request, f"Nothing applied: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Thresholds applied: {'; '.join(changes)}."
                    if changes
                    else "Thresholds applied: they were already these.",
                    messages.SUCCESS,
                )
            # The form posts to this page's URL, query included: back to the same preview.
            return redirect(request.get_full_path())
        preview = None
        if form.is_valid():
            preview = tuning.policy_preview(
                policy,
                objective=form.cleaned_data["objective"],
                value_usd=form.cleaned_data["value_usd"],
                budget_usd=form.cleaned_data["budget_usd"],
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": policy,
            "title": f"Optimise thresholds: {policy}",
            "form": form,
            "preview": preview,
            "min_rows": tuning.MIN_ROWS,
        }
        if preview is not None:
            rows = preview.rows
            context["tier_rows"] = list(
                zip(rows.tiers, rows.tier_accuracy, rows.tier_mean_cost, strict=False)
            )
            if preview.current is not None and preview.proposed is not None:
                context["threshold_rows"] = list(
                    zip(
                        rows.tiers,
                        preview.current.thresholds,
                        preview.proposed.thresholds,
                        strict=True,
                    )
                )
        return TemplateResponse(request, "admin/drafting/cascadepolicy/tuning.html", context)


class TuningForm(forms.Form):
    objective = forms.ChoiceField(
        choices=[
            ("encs", "Maximise ENCS per message (value of a good draft − model cost)"),
            ("quality", "Maximise good drafts within a budget per message"),
        ],
        initial="encs",
    )
    value_usd = forms.DecimalField(
        label="Value of a good draft (USD)",
        required=False,
        min_value=Decimal("0"),
        # Finite and bounded: the optimiser computes in floats.
        max_value=Decimal("10000"),
        decimal_places=6,
        help_text="The agent labour a used or lightly edited draft saves, e.g. 0.50.",
    )
    budget_usd = forms.DecimalField(
        label="Budget per message (USD)",
        required=False,
        min_value=Decimal("0"),
        max_value=Decimal("10000"),
        decimal_places=10,
        help_text="For the quality objective: the most a message may cost on average.",
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
    words = learning.explained_words(explanation)
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
class AgentActionAdmin(admin.ModelAdmin[AgentAction]):
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
class CachedReplyAdmin(admin.ModelAdmin[CachedReply]):
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
class ReplyExampleAdmin(admin.ModelAdmin[ReplyExample]):
    """Few-shot examples: replies agents used as is, personal data scrubbed. Delete one that
    should no longer be shown to the model (a policy changed, a price is out of date)."""

    list_display = ["customer_text", "team", "embedding_model", "created_at"]
    list_filter = ["team"]
    list_select_related = ["team"]
    search_fields = ["customer_text", "reply"]
    raw_id_fields = ["source_draft"]
    readonly_fields = ["embedding_model", "created_at"]


@admin.register(TrainedClassifier)
class TrainedClassifierAdmin(admin.ModelAdmin[TrainedClassifier]):
    """Versions of the learned scorers and intent classifiers with their out-of-fold metrics.
    Read-only (training makes them: the policy's "train scorer now" action, the nightly task);
    an admin can only take an active version out of force."""

    list_display = [
        "__str__",
        "kind",
        "policy",
        "team",
        "version",
        "active",
        "n_train",
        "auc",
        "accuracy",
        "embedding_model",
        "trained_at",
        "trained_by",
    ]
    list_filter = ["kind", "active", "policy", "team"]
    list_select_related = ["policy__team", "team", "trained_by"]
    exclude = ["model_blob"]
    actions = ["deactivate"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = [f.name for f in TrainedClassifier._meta.fields if f.name != "model_blob"]
        return [*fields, "model_size"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="AUC (out of fold)")
    def auc(self, classifier: TrainedClassifier) -> Any:
        return classifier.metrics.get("auc", "—")

    @admin.display(description="accuracy (out of fold)")
    def accuracy(self, classifier: TrainedClassifier) -> Any:
        return classifier.metrics.get("accuracy", "—")

    @admin.display(description="stored model")
    def model_size(self, classifier: TrainedClassifier) -> str:
        return f"{len(bytes(classifier.model_blob)):,} bytes (drafting.learning.plr.TrainedPLR)"

    @admin.action(description="Take out of force (back to the default scorer / no intents)")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[TrainedClassifier]) -> None:
        count = queryset.filter(active=True).update(active=False)
        messages.success(request, f"{count} classifier version(s) taken out of force.")


from drafting import admin_intents  # noqa: E402, F401 - registers the intent admin
