"""The intent classifier: what each inbound customer message is about (card_arrival,
refund_request…), learned per team from a few dozen messages its admins and agents labelled
(penalised logistic regression on sentence embeddings, "tens-of-shot": Buckmann & Hill 2024).

Writes:
- `intent_classifier_train`: embeds the team's labelled examples, fits `drafting.learning.plr`, stores a
  new `TrainedClassifier` version with its out-of-fold metrics and activates it once at least
  two intents have `INTENT_MIN_EXAMPLES` examples each (otherwise it is stored inactive, with
  the reason, so admins can see how the labelling is going).
- `message_intent_classify` / `message_intents_classify_recent`: a `MessageIntent` verdict per
  inbound message, from the team's active version. A message someone labelled gets its label
  as the verdict (confidence 1, no classifier): a person's word beats the model's.

Reads: `intent_training_readiness` (what training would do, without embedding anything). The
console's labelling (`drafting.services.message_intent_label`) and its intent box
(`drafting.selectors.intent_panel`) are plain rows and live with drafting's public face.

Embeddings make intents possible but never anything else: when the embedder fails, a message
simply gets no verdict (logged) and the batch job picks it up later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Count
from django.utils import timezone

from csbot.models import Message, Team
from drafting.engine.embeddings import EmbeddingError, embedder
from drafting.learning.classifiers import ActiveClassifiers, LoadedClassifier, classifier_store
from drafting.models import Draft, Intent, IntentExample, MessageIntent, TrainedClassifier
from drafting.signals import intents_changed

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

INTENT = TrainedClassifier.Kind.INTENT
FEATURES = "sentence embedding of the customer message"
DEFAULT_MIN_EXAMPLES = 5
# Messages embedded per call in the batch job: one call amortises the model, a bounded one
# keeps memory flat.
EMBED_BATCH = 64


def min_examples() -> int:
    return int(getattr(settings, "INTENT_MIN_EXAMPLES", DEFAULT_MIN_EXAMPLES))


# --- Reads --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntentCount:
    intent_id: int
    name: str
    examples: int


@dataclass(frozen=True)
class TrainingReadiness:
    """What training would do with the team's labels as they stand (counts only)."""

    counts: list[IntentCount]
    min_examples: int

    @property
    def ready(self) -> list[IntentCount]:
        """Intents with enough examples to be in an active classifier."""
        return [c for c in self.counts if c.examples >= self.min_examples]

    @property
    def labelled(self) -> list[IntentCount]:
        return [c for c in self.counts if c.examples > 0]

    @property
    def can_activate(self) -> bool:
        return len(self.ready) >= 2

    @property
    def can_train(self) -> bool:
        return len(self.labelled) >= 2

    def reason(self) -> str:
        """Why training would not give an active classifier; empty when it would."""
        if self.can_activate:
            return ""
        have = ", ".join(f"{c.name} ({c.examples})" for c in self.counts) or "no intents"
        return (
            f"needs at least 2 intents with at least {self.min_examples} labelled examples "
            f"each; has {have}"
        )

    def left_out(self) -> list[IntentCount]:
        """Labelled intents an active classifier leaves out for want of examples."""
        return [c for c in self.labelled if c.examples < self.min_examples]


def intent_training_readiness(*, team: Team) -> TrainingReadiness:
    rows = (
        Intent.objects.filter(team=team)
        .annotate(n=Count("examples"))
        .order_by("name")
        .values_list("pk", "name", "n")
    )
    return TrainingReadiness(
        counts=[IntentCount(intent_id=pk, name=name, examples=n) for pk, name, n in rows],
        min_examples=min_examples(),
    )


# --- Training -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntentTraining:
    """The outcome: the stored version (None when nothing could be trained), whether it is
    now the team's active classifier, and if not, why."""

    classifier: TrainedClassifier | None
    activated: bool
    reason: str


def intent_classifier_train(
    team: Team, *, user: User | AnonymousUser | None = None, seed: int = 0
) -> IntentTraining:
    """Train a new version of the team's intent classifier from its labelled examples.

    Steps: count examples per intent; with at least two intents at INTENT_MIN_EXAMPLES, train
    on those (intents below the minimum are left out, and named); with fewer, train on every
    labelled intent to measure progress, stored inactive; embed the examples; fit the PLR
    (cross-validated strength, out-of-fold metrics); store the version, and when it qualifies
    make it the team's one active version. Labels are intent ids, so a renamed intent keeps
    its examples' meaning.
    """
    readiness = intent_training_readiness(team=team)
    if not readiness.can_train:
        return IntentTraining(None, False, f"Nothing trained: {readiness.reason()}.")
    chosen = readiness.ready if readiness.can_activate else readiness.labelled
    rows = list(
        IntentExample.objects.filter(intent_id__in=[c.intent_id for c in chosen])
        .order_by("id")
        .values_list("intent_id", "text")
    )
    model = embedder()
    if model is None:
        return IntentTraining(None, False, "Nothing trained: embeddings are off.")
    from drafting.learning.plr import (
        train_plr,  # scikit-learn: worker-side only, not in web processes
    )

    # Each intent's name (and description) is a prior row: one more clean example per intent,
    # trained on and never scored (plr module docstring; +0.5 point on Banking77 at N = 10).
    prior_ids, prior_texts = _prior_texts(chosen)
    try:
        vectors = model.embed([text for _, text in rows] + prior_texts)
    except EmbeddingError as exc:
        logger.warning("intent training for team %s: embedding failed: %s", team.pk, exc)
        return IntentTraining(None, False, f"Nothing trained: embedding failed ({exc}).")

    plr = train_plr(
        vectors[: len(rows)],
        [str(intent_id) for intent_id, _ in rows],
        seed=seed,
        priors=(vectors[len(rows) :], prior_ids),
    )

    activate = readiness.can_activate
    if activate:
        left_out = readiness.left_out()
        reason = (
            "Left out for want of examples: "
            + ", ".join(f"{c.name} ({c.examples} of {readiness.min_examples})" for c in left_out)
            if left_out
            else ""
        )
    else:
        reason = f"Not activated: {readiness.reason()}."
    metrics: dict[str, Any] = plr.metrics | {"intents": {str(c.intent_id): c.name for c in chosen}}
    if reason:
        metrics["note"] = reason
    classifier = classifier_store(
        owner=team,
        kind=INTENT,
        model=plr,
        embedding_model=model.name,
        features=FEATURES,
        n_train=len(rows),
        metrics=metrics,
        activate=activate,
        trained_by=user if user is not None and user.is_authenticated else None,
    )
    logger.info(
        "intent classifier v%s for team %s: %s rows, accuracy %s, %s",
        classifier.version,
        team.pk,
        len(rows),
        metrics.get("accuracy"),
        "active" if activate else "inactive",
    )
    return IntentTraining(classifier, activate, reason)


def _prior_texts(chosen: Sequence[IntentCount]) -> tuple[list[str], list[str]]:
    """Labels and texts of the prior rows, one per intent trained on: its name and
    description."""
    from drafting.learning.plr import label_prior_text  # worker-side, like train_plr

    descriptions = dict(
        Intent.objects.filter(pk__in=[c.intent_id for c in chosen]).values_list("pk", "description")
    )
    return (
        [str(c.intent_id) for c in chosen],
        [label_prior_text(c.name, descriptions.get(c.intent_id, "")) for c in chosen],
    )


# --- Classifying --------------------------------------------------------------------------------


# The active version per team; a new active version is loaded on the next message.
active_intent_classifiers = ActiveClassifiers(kind=INTENT, owner_field="team")


def _classify(team_id: int, messages: Sequence[tuple[int, str]]) -> list[MessageIntent]:
    """Verdicts for (message id, text) pairs of one team, stored with one upsert: labelled
    messages get their label, the rest the active classifier's most probable intent among
    those that still exist. Messages it cannot judge (no active version, embeddings down or
    from another model) get none."""
    if not messages:
        return []
    now = timezone.now()
    labels = dict(
        IntentExample.objects.filter(
            message_id__in=[pk for pk, _ in messages], intent__team_id=team_id
        )
        .order_by("created_at", "id")
        .values_list("message_id", "intent_id")
    )
    verdicts = [
        MessageIntent(
            message_id=pk,
            intent_id=labels[pk],
            confidence=MessageIntent.LABEL_CONFIDENCE,
            classifier=None,
            classified_at=now,
        )
        for pk, _ in messages
        if pk in labels
    ]
    unlabelled = [(pk, text) for pk, text in messages if pk not in labels]
    loaded = active_intent_classifiers.get(team_id) if unlabelled else None
    if loaded is not None:
        verdicts += _predict(team_id, loaded, unlabelled, now=now)
    if not verdicts:
        return []
    stored = MessageIntent.objects.bulk_create(
        verdicts,
        update_conflicts=True,
        unique_fields=["message"],
        update_fields=["intent", "confidence", "classifier", "classified_at"],
    )
    # A bulk write sends no post_save: say which messages changed (accounting re-sums them).
    intents_changed.send(sender=MessageIntent, message_ids=[v.message_id for v in verdicts])
    return stored


def _predict(
    team_id: int, loaded: LoadedClassifier, messages: Sequence[tuple[int, str]], *, now: Any
) -> list[MessageIntent]:
    model = embedder()
    if model is None or model.name != loaded.embedding_model:
        logger.warning(
            "team %s: intent classifier %s was trained on %s embeddings, the embedder is %s; "
            "retrain it",
            team_id,
            loaded.classifier_id,
            loaded.embedding_model,
            model.name if model is not None else "off",
        )
        return []
    try:
        vectors = model.embed([text for _, text in messages])
    except EmbeddingError as exc:
        logger.warning("team %s: no intents for %s messages: %s", team_id, len(messages), exc)
        return []
    probabilities = loaded.model.predict_proba(vectors)
    existing = set(Intent.objects.filter(team_id=team_id).values_list("pk", flat=True))
    # Intents deleted since training cannot be a verdict (the row would point nowhere).
    usable = np.array([int(c) in existing for c in loaded.model.classes])
    if not usable.any():
        return []
    masked = np.where(usable, probabilities, -1.0)
    verdicts = []
    for (pk, _), row in zip(messages, masked, strict=True):
        best = int(row.argmax())
        verdicts.append(
            MessageIntent(
                message_id=pk,
                intent_id=int(loaded.model.classes[best]),
                confidence=Decimal(f"{min(max(float(row[best]), 0.0), 1.0):.4f}"),
                classifier_id=loaded.classifier_id,
                classified_at=now,
            )
        )
    return verdicts


def message_intent_classify(message_id: int) -> MessageIntent | None:
    """The verdict for one inbound customer message (stored; None when there is none to give:
    an outbound message, no active classifier, embeddings unavailable). Idempotent."""
    row = (
        Message.objects.filter(pk=message_id, direction=Message.Direction.INBOUND)
        .values_list("conversation__team_id", "text")
        .first()
    )
    if row is None:
        return None
    team_id, text = row
    verdicts = _classify(team_id, [(message_id, text)])
    return verdicts[0] if verdicts else None


def draft_intent_classify(*, draft_id: int) -> MessageIntent | None:
    """The drafting worker's hook: classify the message a draft answers. Runs after the draft
    is stored, so neither its time nor its failures can touch the draft."""
    message_id = Draft.objects.filter(pk=draft_id).values_list("message_id", flat=True).first()
    return None if message_id is None else message_intent_classify(message_id)


def message_intents_classify_recent(*, team: Team, limit: int = 500) -> int:
    """Give the team's newest inbound messages without a verdict one (at most `limit`, in
    batches): held-out conversations, which no draft worker sees, and messages that arrived
    before the classifier or while embeddings were down. Returns the verdicts stored."""
    pending = list(
        Message.objects.filter(
            conversation__team=team,
            direction=Message.Direction.INBOUND,
            intent_verdict__isnull=True,
        )
        .order_by("-created_at", "-id")
        .values_list("pk", "text")[:limit]
    )
    stored = 0
    for start in range(0, len(pending), EMBED_BATCH):
        stored += len(_classify(team.pk, pending[start : start + EMBED_BATCH]))
    return stored


# --- For the Celery tasks (ids in, a line for the worker log out) -------------------------------


def intent_classifier_train_by_id(*, team_id: int, user_id: int | None = None) -> str:
    from django.contrib.auth import get_user_model

    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        return f"team {team_id} no longer exists"
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    result = intent_classifier_train(team, user=user)
    if result.classifier is None:
        return result.reason
    state = "active" if result.activated else "inactive"
    return f"v{result.classifier.version} {state}. {result.reason}".strip()


def message_intents_classify_recent_by_id(*, team_id: int, limit: int = 500) -> int:
    team = Team.objects.filter(pk=team_id).first()
    return 0 if team is None else message_intents_classify_recent(team=team, limit=limit)
