"""Trained classifiers (a team's intent classifier, a policy's learned scorer) stored and loaded
the same way for both kinds: `classifier_store` keeps version numbers and the one-active rule,
`ActiveClassifiers` holds each owner's active version unpickled once per process."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max

from csbot.memo import Memo
from csbot.models import Team
from drafting.engine.embeddings import Embedder, EmbeddingError, embedder
from drafting.models import CascadePolicy, TrainedClassifier

if TYPE_CHECKING:  # scikit-learn stays out of the web processes that import this module
    from drafting.learning.plr import TrainedPLR


def training_embedder() -> tuple[Embedder | None, str]:
    """The embedder a trainer embeds its rows with, or None and why there is none (the
    reason a training run reports when it trains nothing)."""
    try:
        using = embedder()
    except EmbeddingError as exc:
        return None, f"no embedder: {exc}"
    if using is None:
        return None, "embeddings are off (EMBEDDING_BACKEND=none)"
    return using, ""


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


@dataclass(frozen=True)
class LoadedClassifier:
    classifier_id: int
    embedding_model: str
    model: TrainedPLR


class ActiveClassifiers:
    """One kind's active version per owner (team or policy id), unpickled once per process. Which
    version is active is asked at most every few seconds: a version activated or deactivated
    in this process counts at once (the save clears the memo), in the others within seconds."""

    def __init__(self, *, kind: str, owner_field: str):
        self.kind, self.owner_field = kind, owner_field
        # Which version is active, asked on every draft: remembered a few seconds (csbot.memo).
        self._active_rows: Memo[int, tuple[int, str] | None] = Memo(depends_on=(TrainedClassifier,))
        self._loaded: dict[int, LoadedClassifier] = {}
        self._lock = threading.Lock()

    def get(self, owner_id: int) -> LoadedClassifier | None:
        row = self._active_rows.get(
            owner_id,
            lambda: (
                TrainedClassifier.objects.filter(
                    kind=self.kind, active=True, **{f"{self.owner_field}_id": owner_id}
                )
                .values_list("pk", "embedding_model")
                .first()
            ),
        )
        if row is None:
            return None
        classifier_id, embedding_model = row
        with self._lock:
            loaded = self._loaded.get(owner_id)
        if loaded is not None and loaded.classifier_id == classifier_id:
            return loaded
        blob = (
            TrainedClassifier.objects.filter(pk=classifier_id)
            .values_list("model_blob", flat=True)
            .first()
        )
        if blob is None:  # deactivated and deleted meanwhile
            return None
        # scikit-learn (a second to import) only once a model is in force: in the worker.
        from drafting.learning.plr import TrainedPLR

        loaded = LoadedClassifier(classifier_id, embedding_model, TrainedPLR.from_bytes(blob))
        with self._lock:
            self._loaded[owner_id] = loaded
        return loaded

    def clear(self) -> None:
        self._active_rows.clear()
        with self._lock:
            self._loaded.clear()
