"""The team's needs-knowledge detector, served to the draft path (drafting.services) behind the
engine's `NeedDetector` protocol (drafting.engine.grounding).

A detector is a TrainedClassifier of kind "knowledge" (a PLR on the embedding of the customer
turn; labels "1" = needs the knowledge base, "0" = does not), one active version per team,
loaded once per process like the intent classifier. `knowledge_detector` returns None when the
team has none, or when it was trained on another embedder's vectors: the draft path then falls
back to its documented rule (drafting.engine.grounding.looks_like_question).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from drafting.engine.embeddings import EmbeddingError
from drafting.engine.vectors import QueryVector
from drafting.learning.classifiers import ActiveClassifiers
from drafting.models import TrainedClassifier

if TYPE_CHECKING:
    from drafting.learning.plr import TrainedPLR

logger = logging.getLogger(__name__)

NEEDS, NO_NEED = "1", "0"

active_detectors = ActiveClassifiers(kind=TrainedClassifier.Kind.KNOWLEDGE, owner_field="team")


class LearnedNeedDetector:
    """P(needs knowledge) from the turn's embedding: the draft's own QueryVector, so the turn is
    embedded once for every search and this."""

    def __init__(self, *, classifier_id: int, model: TrainedPLR, embedding_model: str):
        self.classifier_id = classifier_id
        self.model = model
        self.embedding_model = embedding_model

    def probability(self, query: QueryVector) -> float | None:
        try:
            embedded = query.get()
        except EmbeddingError as exc:  # get() logs and returns None; belt and braces
            logger.warning("detector %s: no embedding (%s)", self.classifier_id, exc)
            return None
        if embedded is None:
            return None
        model, vector = embedded
        if model != self.embedding_model:
            logger.warning(
                "detector %s was trained on %s vectors, the turn has %s: not used",
                self.classifier_id,
                self.embedding_model,
                model,
            )
            return None
        return float(self.model.positive_proba(vector.reshape(1, -1), NEEDS)[0])


def knowledge_detector(team_id: int) -> LearnedNeedDetector | None:
    """The team's active detector, or None (see the module docstring)."""
    loaded = active_detectors.get(team_id)
    if loaded is None:
        return None
    return LearnedNeedDetector(
        classifier_id=loaded.classifier_id,
        model=loaded.model,
        embedding_model=loaded.embedding_model,
    )
