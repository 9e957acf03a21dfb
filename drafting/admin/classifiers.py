"""Admin for trained classifiers (learned scorers and intent classifiers): every version with
its out-of-fold metrics, which one is active, and why a version was not activated."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from csbot.admin_records import RecordAdmin
from drafting.models import (
    TrainedClassifier,
)


@admin.register(TrainedClassifier)
class TrainedClassifierAdmin(RecordAdmin, admin.ModelAdmin[TrainedClassifier]):
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
