"""Admin for intents: each team's intents with their labelled examples, the verdicts on
inbound messages, and the actions that train the classifier and classify recent messages.
Training and classifying embed text, so both run in the worker (Celery): the web process
never loads the embedding model. The trained versions themselves are TrainedClassifier rows,
listed in that model's own admin (this one links to them)."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from kombu.exceptions import OperationalError as KombuOperationalError

from csbot.admin_records import RecordAdmin
from csbot.models import Team
from drafting.learning import intents
from drafting.models import Intent, IntentExample, MessageIntent, TrainedClassifier

logger = logging.getLogger(__name__)

# Newest inbound messages without a verdict classified per team and click.
CLASSIFY_BATCH = 500


class IntentExampleInline(admin.TabularInline[IntentExample, Intent]):
    model = IntentExample
    extra = 1
    fields = ["text", "message", "labelled_by", "created_at"]
    readonly_fields = ["labelled_by", "created_at"]
    raw_id_fields = ["message"]


def _teams(queryset: QuerySet[Intent]) -> list[Team]:
    return list(Team.objects.filter(intents__in=queryset).distinct().order_by("name"))


def _enqueue(request: HttpRequest, task: Any, *args: Any) -> bool:
    try:
        task.delay(*args)
    except (KombuOperationalError, OSError) as exc:
        logger.exception("admin: could not reach the broker")
        messages.error(request, f"The task queue is unreachable ({exc}); nothing was queued.")
        return False
    return True


@admin.register(Intent)
class IntentAdmin(admin.ModelAdmin[Intent]):
    list_display = ["name", "team", "description", "examples", "verdicts", "classifier"]
    list_filter = ["team"]
    list_select_related = ["team"]
    search_fields = ["name", "description"]
    inlines = [IntentExampleInline]
    actions = ["train_classifier", "classify_recent"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Intent]:
        active = TrainedClassifier.objects.filter(
            kind=TrainedClassifier.Kind.INTENT, team_id=OuterRef("team_id"), active=True
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                example_count=Count("examples", distinct=True),
                verdict_count=Count("verdicts", distinct=True),
                active_version=Subquery(active.values("version")[:1]),
                active_metrics=Subquery(active.values("metrics")[:1]),
            )
        )

    @admin.display(description="examples", ordering="example_count")
    def examples(self, intent: Intent) -> int:
        return int(intent.example_count)  # type: ignore[attr-defined]

    @admin.display(description="messages classified", ordering="verdict_count")
    def verdicts(self, intent: Intent) -> int:
        return int(intent.verdict_count)  # type: ignore[attr-defined]

    @admin.display(description="team's active classifier")
    def classifier(self, intent: Intent) -> str:
        version: int | None = intent.active_version  # type: ignore[attr-defined]
        if version is None:
            return "none active: label examples, then run “Train intent classifier”"
        metrics: dict[str, Any] = intent.active_metrics or {}  # type: ignore[attr-defined]
        text = (
            f"v{version}: accuracy {metrics.get('accuracy', '—')}, "
            f"macro-F1 {metrics.get('macro_f1', '—')} (out of fold, n={metrics.get('n')})"
        )
        try:
            url = reverse("admin:drafting_trainedclassifier_changelist")
        except NoReverseMatch:
            return text
        return format_html('<a href="{}?kind=intent&team={}">{}</a>', url, intent.team_id, text)

    def save_formset(
        self, request: HttpRequest, form: ModelForm[Any], formset: BaseInlineFormSet, change: bool
    ) -> None:
        """Examples typed in here are labelled by the admin who typed them."""
        for example in formset.save(commit=False):
            if isinstance(example, IntentExample) and example.labelled_by_id is None:
                example.labelled_by = request.user  # type: ignore[assignment]
            example.save()
        for deleted in formset.deleted_objects:
            deleted.delete()
        formset.save_m2m()

    @admin.action(description="Train intent classifier (the selected intents' teams)")
    def train_classifier(self, request: HttpRequest, queryset: QuerySet[Intent]) -> None:
        from drafting.tasks import intent_classifier_train_task

        for team in _teams(queryset):
            readiness = intents.intent_training_readiness(team=team)
            if not readiness.can_train:
                messages.warning(request, f"{team}: nothing to train: {readiness.reason()}.")
                continue
            if not _enqueue(request, intent_classifier_train_task, team.pk, request.user.pk):
                return
            outcome = (
                "it becomes the active version"
                if readiness.can_activate
                else f"it will be stored inactive: {readiness.reason()}"
            )
            messages.success(
                request,
                f"{team}: training queued on "
                f"{sum(c.examples for c in readiness.labelled)} examples; {outcome}. "
                "The new version appears under Trained classifiers in a minute.",
            )

    @admin.action(description="Classify recent messages that have no intent yet")
    def classify_recent(self, request: HttpRequest, queryset: QuerySet[Intent]) -> None:
        from drafting.tasks import message_intents_classify_recent_task

        for team in _teams(queryset):
            if not _enqueue(request, message_intents_classify_recent_task, team.pk, CLASSIFY_BATCH):
                return
            messages.success(
                request,
                f"{team}: classifying its newest {CLASSIFY_BATCH} messages without an intent.",
            )


@admin.register(IntentExample)
class IntentExampleAdmin(admin.ModelAdmin[IntentExample]):
    list_display = ["text", "intent", "team", "labelled_by", "created_at"]
    list_filter = ["intent__team", "intent"]
    list_select_related = ["intent__team", "labelled_by"]
    search_fields = ["text"]
    raw_id_fields = ["message"]
    readonly_fields = ["labelled_by", "created_at"]

    @admin.display(description="team", ordering="intent__team__name")
    def team(self, example: IntentExample) -> Team:
        return example.intent.team

    def save_model(self, request: HttpRequest, obj: IntentExample, form: Any, change: bool) -> None:
        if obj.labelled_by_id is None:
            obj.labelled_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)


@admin.register(MessageIntent)
class MessageIntentAdmin(RecordAdmin, admin.ModelAdmin[MessageIntent]):
    """Verdicts are written by the classifier (or a label); here they are only read."""

    list_display = ["message", "intent", "confidence", "source", "classified_at"]
    list_filter = ["intent__team", "intent"]
    list_select_related = ["message", "intent", "classifier"]
    raw_id_fields = ["message"]

    @admin.display(description="from")
    def source(self, verdict: MessageIntent) -> str:
        if verdict.classifier is None:
            return "a person's label"
        return f"classifier v{verdict.classifier.version}"
