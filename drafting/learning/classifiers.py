"""Storing a trained classifier as the next version of its owner's (a team's intent classifier,
a policy's learned scorer): one write flow for both, so version numbers and the one-active rule
are kept the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max

from csbot.models import Team
from drafting.models import CascadePolicy, TrainedClassifier

if TYPE_CHECKING:  # scikit-learn stays out of the web processes that import this module
    from drafting.learning.plr import TrainedPLR


def classifier_store(
    *,
    owner: Team | CascadePolicy,
    kind: str,
    model: TrainedPLR,
    embedding_model: str,
    features: str,
    n_train: int,
    metrics: dict[str, Any],
    activate: bool,
    trained_by: User | None,
) -> TrainedClassifier:
    """The owner's next version; when `activate`, it replaces the active one."""
    owner_field = "team" if isinstance(owner, Team) else "policy"
    with transaction.atomic():
        # The owner's row serialises concurrent trainings: version numbers never collide.
        type(owner).objects.select_for_update().filter(pk=owner.pk).first()
        owned = TrainedClassifier.objects.filter(kind=kind, **{owner_field: owner})
        version = (owned.aggregate(top=Max("version"))["top"] or 0) + 1
        if activate:
            owned.filter(active=True).update(active=False)
        return TrainedClassifier.objects.create(
            kind=kind,
            version=version,
            active=activate,
            embedding_model=embedding_model,
            features=features,
            penalty=model.penalty,
            strength_c=model.C,
            n_train=n_train,
            metrics=metrics,
            model_blob=model.to_bytes(),
            trained_by=trained_by,
            **{owner_field: owner},
        )
