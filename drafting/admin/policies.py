"""Admin for cascade policies and their tiers, with the threshold tuning page (preview on the
exploration table, apply the chosen thresholds)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from csbot.admin_autocomplete import ValidatedAutocomplete
from drafting.admin.preview import try_question_urls
from drafting.learning import intent_rules, offpolicy, tuning
from drafting.learning.routing import router_train
from drafting.learning.scorer import scorer_train
from drafting.models import (
    CascadePolicy,
    CascadeTier,
)


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
    actions = ["train_scorer_now", "train_router_now"]

    @admin.action(description="Train the learned draft scorer now (from agent actions)")
    def train_scorer_now(self, request: HttpRequest, queryset: QuerySet[CascadePolicy]) -> None:
        for policy in queryset:
            outcome = scorer_train(
                policy=policy,
                trained_by=request.user if isinstance(request.user, User) else None,
            )
            level = messages.SUCCESS if outcome.activated else messages.WARNING
            self.message_user(request, f"{policy}: {outcome.message}", level)

    @admin.action(description="Train the cascade router now (from explored drafts)")
    def train_router_now(self, request: HttpRequest, queryset: QuerySet[CascadePolicy]) -> None:
        for policy in queryset:
            trained = router_train(
                policy=policy,
                trained_by=request.user if isinstance(request.user, User) else None,
            )
            level = messages.SUCCESS if trained.activated else messages.WARNING
            self.message_user(request, f"{policy}: {trained.message}", level)

    # "Optimise thresholds" (the link is in templates/admin/drafting/cascadepolicy/
    # change_form.html): the current vs the optimiser's thresholds on the explored drafts.
    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<int:pk>/tuning/",
                self.admin_site.admin_view(self.tuning_view),
                name="drafting_cascadepolicy_tuning",
            ),
            *try_question_urls(self),  # "Try a question" (drafting.admin.preview)
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
            if "intent" in request.POST:
                self._apply_intent_rules(request, policy, request.user)
                return redirect(request.get_full_path())
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
        estimates: dict[str, object] = {}
        if form.is_valid():
            preview = tuning.policy_preview(
                policy,
                objective=form.cleaned_data["objective"],
                value_usd=form.cleaned_data["value_usd"],
                budget_usd=form.cleaned_data["budget_usd"],
            )
            estimates = _estimates(policy, preview, form.cleaned_data)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": policy,
            "title": f"Optimise thresholds: {policy}",
            "form": form,
            "preview": preview,
            "min_rows": tuning.MIN_ROWS,
            **estimates,
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

    def _apply_intent_rules(self, request: HttpRequest, policy: CascadePolicy, user: User) -> None:
        """The per-intent form: intent, and per tier `intent_threshold_<id>` and, when routed
        past, `intent_skip_<id>`."""
        prefix = "intent_threshold_"
        try:
            rules = {
                int(key.removeprefix(prefix)): (
                    Decimal(request.POST[key]),
                    f"intent_skip_{key.removeprefix(prefix)}" in request.POST,
                )
                for key in request.POST
                if key.startswith(prefix)
            }
            changes = intent_rules.intent_rules_apply(
                policy=policy, intent_id=int(request.POST["intent"]), rules=rules, user=user
            )
        except (ValueError, ArithmeticError) as exc:  # TuningError is a ValueError
            self.message_user(request, f"Nothing applied: {exc}", messages.ERROR)
            return
        self.message_user(
            request,
            f"Intent rules applied: {'; '.join(changes)}."
            if changes
            else "Intent rules applied: they were already these.",
            messages.SUCCESS,
        )


def _estimates(
    policy: CascadePolicy, preview: tuning.TuningPreview, data: dict[str, Any]
) -> dict[str, object]:
    """The off-policy estimates shown before "apply" (drafting.learning.offpolicy): the
    policy-wide proposal's and each intent's, against the policy in force, on one log."""
    log = offpolicy.policy_log(policy)
    context: dict[str, object] = {}
    if preview.proposed is not None:
        context["offpolicy"] = offpolicy.proposal_estimate(
            policy,
            thresholds={
                tier.tier_id: threshold
                for tier, threshold in zip(
                    preview.rows.tiers, preview.proposed.thresholds, strict=True
                )
            },
            log=log,
        )
    intents = intent_rules.intent_proposals(
        policy,
        objective=data["objective"],
        value_usd=data["value_usd"],
        budget_usd=data["budget_usd"],
    )
    for proposal in intents.proposals:
        proposal.estimate = offpolicy.proposal_estimate(
            policy, intent=proposal.intent_id, intent_setting=proposal.rules, log=log
        )
    context["intents"] = intents
    return context


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
