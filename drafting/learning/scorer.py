"""The learned cascade scorer: labels from agent actions, training, the scorer in force, and why
a draft was escalated (DESIGN §1.3).

- Labels: a draft the agent used, or edited by at most SCORER_GOOD_EDIT_PERCENT of its text, is
  good ("1"); a heavier edit or an ignore is bad ("0"). The label judges the draft the agent was
  shown: the cascade's chosen attempt (its last answer), never the escalated ones before it.
- Training (`scorer_train`): a policy's newest SCORER_MAX_LABELS labelled drafts → features
  (drafting.engine.scoring.FEATURES) → `drafting.learning.plr.train_plr` → a new `TrainedClassifier` version.
  Too few labels (SCORER_MIN_LABELS, SCORER_MIN_MINORITY of the rarer class): nothing is
  trained. The new version becomes active only if its out-of-fold AUC reaches SCORER_MIN_AUC;
  otherwise it is stored inactive with the reason and whatever was in force stays.
- Serving (`policy_scorer`): the policy's active version, loaded once per process and reloaded
  when another version becomes active; the default scorer when there is none, when embeddings
  are off, or when the model was trained on another embedder's vectors.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import OuterRef, Subquery

from drafting.engine.embeddings import Embedder, EmbeddingError, embedder
from drafting.engine.scoring import (
    FEATURES,
    DefaultScorer,
    LearnedScorer,
    Scorer,
    feature_rows,
    signal_row,
)
from drafting.learning.classifiers import classifier_store
from drafting.models import (
    AgentAction,
    CascadePolicy,
    CascadeTier,
    Draft,
    DraftAttempt,
    TrainedClassifier,
)

if TYPE_CHECKING:
    from drafting.learning.plr import TrainedPLR

logger = logging.getLogger(__name__)

GOOD, BAD = "1", "0"
SCORER = TrainedClassifier.Kind.SCORER


# --- Labels -------------------------------------------------------------------------------------


def action_label(*, kind: str, edit_distance: Decimal | None) -> str | None:
    """An agent action's verdict on the draft it was shown; None when it says nothing."""
    if kind == AgentAction.Kind.USE:
        return GOOD
    if kind == AgentAction.Kind.EDIT:
        light = (
            edit_distance is not None and edit_distance * 100 <= settings.SCORER_GOOD_EDIT_PERCENT
        )
        return GOOD if light else BAD
    if kind == AgentAction.Kind.IGNORE:
        return BAD
    return None


@dataclass(frozen=True)
class LabelledDraft:
    customer_text: str
    draft_text: str
    label: str
    tier: int
    default_score: float | None
    earlier_drafts: list[str] = field(default_factory=list)
    has_earlier: bool = False


def _text_of_explanation(words: list[dict[str, Any]]) -> str:
    """An escalated draft's text back from its explanation (words at their offsets): the only
    place an earlier tier's draft is kept. Explanations cover the first words only."""
    text = ""
    for word in words:
        text = text.ljust(int(word["start"])) + str(word["word"])
    return text


def scorer_labels(*, policy_id: int, limit: int) -> list[LabelledDraft]:
    """The policy's newest `limit` drafts an agent acted on, with the shown draft's attempt.
    Cache hits are left out: no scorer judged them. Two queries."""
    actions = list(
        AgentAction.objects.filter(
            draft__policy_id=policy_id,
            kind__in=[AgentAction.Kind.USE, AgentAction.Kind.EDIT, AgentAction.Kind.IGNORE],
        )
        .exclude(draft__text="")
        .order_by("-acted_at", "-id")
        .values_list("draft_id", "kind", "edit_distance", "draft__text", "inbound_message__text")[
            :limit
        ]
    )
    attempts: defaultdict[int, list[Any]] = defaultdict(list)
    for row in (
        DraftAttempt.objects.filter(
            draft_id__in=[a[0] for a in actions],
            outcome=DraftAttempt.Outcome.OK,
            cache_hit=False,
            exploratory=False,  # asked after the draft was shown: not what the agent judged
        )
        .order_by("draft_id", "started_at", "id")
        .values("draft_id", "tier", "score", "scorer_id", "explanation")
    ):
        attempts[row["draft_id"]].append(row)
    labelled = []
    for draft_id, kind, distance, draft_text, customer_text in actions:
        label = action_label(kind=kind, edit_distance=distance)
        answered = attempts.get(draft_id)
        if label is None or not answered:
            continue
        shown, before = answered[-1], answered[:-1]
        # A stored score is the default scorer's only when no learned model judged the draft.
        default = (
            float(shown["score"])
            if shown["scorer_id"] is None and shown["score"] is not None
            else None
        )
        labelled.append(
            LabelledDraft(
                customer_text=customer_text,
                draft_text=draft_text,
                label=label,
                tier=shown["tier"],
                default_score=default,
                earlier_drafts=[
                    _text_of_explanation(a["explanation"]) for a in before if a["explanation"]
                ],
                has_earlier=bool(before),
            )
        )
    return labelled


def scorer_features(rows: list[LabelledDraft], *, using: Embedder) -> np.ndarray:
    """Feature rows for labelled drafts (drafting.engine.scoring.FEATURES), every text embedded once,
    in one batch."""
    texts = sorted({t for r in rows for t in (r.customer_text, r.draft_text, *r.earlier_drafts)})
    index = {text: i for i, text in enumerate(texts)}
    vectors = using.embed(texts)
    signals = []
    for row in rows:
        draft = vectors[index[row.draft_text]]
        earlier = [vectors[index[t]] for t in row.earlier_drafts]
        signals.append(
            signal_row(
                draft_text=row.draft_text,
                default_score=row.default_score,
                tier=row.tier,
                has_earlier=row.has_earlier,
                agreement=float(np.max(np.stack(earlier) @ draft)) if earlier else None,
            )
        )
    customers = vectors[[index[r.customer_text] for r in rows]]
    drafts = vectors[[index[r.draft_text] for r in rows]]
    return feature_rows(customers, drafts, signals)


# --- Training -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScorerTraining:
    """What a training run did: `classifier` is the stored version (None: nothing trained),
    `activated` whether it is now in force, `reason` why not (or what happened)."""

    policy_id: int
    labels: dict[str, int]
    classifier: TrainedClassifier | None = None
    activated: bool = False
    reason: str = ""

    @property
    def message(self) -> str:
        counts = f"{self.labels.get(GOOD, 0)} good / {self.labels.get(BAD, 0)} bad labels"
        if self.classifier is None:
            return f"policy {self.policy_id}: not trained ({counts}): {self.reason}"
        auc = self.classifier.metrics.get("auc")
        state = "active" if self.activated else f"stored, not active: {self.reason}"
        return f"policy {self.policy_id}: scorer v{self.classifier.version} ({counts}, out-of-fold AUC {auc}) {state}"


def _too_few(labels: dict[str, int]) -> str:
    total, minority = sum(labels.values()), min(labels.get(GOOD, 0), labels.get(BAD, 0))
    if total < settings.SCORER_MIN_LABELS:
        return f"{total} labelled drafts, {settings.SCORER_MIN_LABELS} needed"
    if minority < settings.SCORER_MIN_MINORITY:
        return f"the rarer class has {minority} labels, {settings.SCORER_MIN_MINORITY} needed"
    return ""


def scorer_train(*, policy: CascadePolicy, trained_by: User | None = None) -> ScorerTraining:
    """Train a new scorer version for `policy` from its agents' actions.

    Steps: read the labelled drafts; stop (nothing stored) below the label minimums or without
    an embedder; embed and train; store the version with its out-of-fold metrics; make it the
    policy's active scorer if its AUC reaches SCORER_MIN_AUC, else record why not.
    """
    rows = scorer_labels(policy_id=policy.pk, limit=settings.SCORER_MAX_LABELS)
    labels = dict(Counter(r.label for r in rows))
    reason = _too_few(labels)
    using: Embedder | None = None
    if not reason:
        try:
            using = embedder()
        except EmbeddingError as exc:
            reason = f"no embedder: {exc}"
        if using is None and not reason:
            reason = "embeddings are off (EMBEDDING_BACKEND=none)"
    if reason or using is None:
        logger.info("scorer for policy %s not trained: %s", policy.pk, reason)
        return ScorerTraining(policy_id=policy.pk, labels=labels, reason=reason)
    try:
        features = scorer_features(rows, using=using)
    except EmbeddingError as exc:
        reason = f"embedding failed: {exc}"
        logger.warning("scorer for policy %s not trained: %s", policy.pk, reason)
        return ScorerTraining(policy_id=policy.pk, labels=labels, reason=reason)
    from drafting.learning.plr import (
        train_plr,  # scikit-learn: worker-side only, not in web processes
    )

    model = train_plr(features, [r.label for r in rows])
    auc = model.metrics.get("auc")
    good_enough = auc is not None and auc >= settings.SCORER_MIN_AUC
    reason = "" if good_enough else f"out-of-fold AUC {auc} below {settings.SCORER_MIN_AUC}"
    metrics = dict(model.metrics)
    if reason:
        metrics["not_activated"] = reason
    classifier = classifier_store(
        owner=policy,
        kind=SCORER,
        model=model,
        embedding_model=using.name,
        features=FEATURES[:200],
        n_train=len(rows),
        metrics=metrics,
        activate=good_enough,
        trained_by=trained_by,
    )
    outcome = ScorerTraining(
        policy_id=policy.pk,
        labels=labels,
        classifier=classifier,
        activated=good_enough,
        reason=reason,
    )
    logger.info("%s", outcome.message)
    return outcome


def scorers_retrain() -> list[ScorerTraining]:
    """The scheduled retrain: every active policy with labels newer than its latest scorer
    version (a policy below the label minimums is reported, not trained)."""
    outcomes = []
    newest = (
        TrainedClassifier.objects.filter(kind=SCORER, policy_id=OuterRef("pk"))
        .order_by("-trained_at")
        .values("trained_at")[:1]
    )
    for policy in CascadePolicy.objects.filter(active=True).annotate(last=Subquery(newest)):
        last = policy.last
        fresh = AgentAction.objects.filter(draft__policy_id=policy.pk)
        if last is not None:
            fresh = fresh.filter(acted_at__gt=last)
        if not fresh.exists():
            continue
        outcomes.append(scorer_train(policy=policy))
    return outcomes


# --- Serving ------------------------------------------------------------------------------------

_loaded: dict[int, tuple[int, TrainedPLR]] = {}
_loaded_lock = threading.Lock()


def policy_scorer(*, policy_id: int) -> Scorer:
    """The scorer in force for the policy: its active learned scorer, else the default one.
    One small query per call; the model itself is loaded once per process and version."""
    active = (
        TrainedClassifier.objects.filter(kind=SCORER, policy_id=policy_id, active=True)
        .values_list("pk", "embedding_model")
        .first()
    )
    if active is None:
        return DefaultScorer()
    classifier_id, embedding_model = active
    try:
        using = embedder()
    except EmbeddingError as exc:
        logger.warning("scorer %s unusable (%s): default scorer", classifier_id, exc)
        return DefaultScorer()
    if using is None or using.name != embedding_model:
        logger.warning(
            "scorer %s was trained on %s vectors, the embedder is %s: default scorer",
            classifier_id,
            embedding_model,
            using.name if using else "off",
        )
        return DefaultScorer()
    with _loaded_lock:
        cached = _loaded.get(policy_id)
    if cached is None or cached[0] != classifier_id:
        from drafting.learning.plr import TrainedPLR  # scikit-learn: only once a model is in force

        blob = TrainedClassifier.objects.values_list("model_blob", flat=True).get(pk=classifier_id)
        cached = (classifier_id, TrainedPLR.from_bytes(blob))
        with _loaded_lock:
            _loaded[policy_id] = cached
    return LearnedScorer(classifier_id=classifier_id, model=cached[1], embedder=using)


# --- Explanations (console, admin) ----------------------------------------------------------


@dataclass(frozen=True)
class ExplainedWord:
    word: str
    weight: float
    strength: float  # |weight| relative to the draft's largest, 0…1: how strongly to highlight
    gap: str  # the whitespace before the word

    @property
    def negative(self) -> bool:
        return self.weight < 0


@dataclass(frozen=True)
class Escalation:
    tier: int
    endpoint: str
    score: Decimal | None
    threshold: Decimal | None
    scorer: str
    words: list[ExplainedWord]


def explained_words(explanation: list[dict[str, Any]]) -> list[ExplainedWord]:
    largest = max((abs(float(w["weight"])) for w in explanation), default=0.0) or 1.0
    words, end = [], 0
    for w in explanation:
        weight = float(w["weight"])
        words.append(
            ExplainedWord(
                word=str(w["word"]),
                weight=weight,
                strength=round(abs(weight) / largest, 2),
                gap=" " if int(w["start"]) > end else "",
            )
        )
        end = int(w["end"])
    return words


def draft_escalations(*, draft: Draft | None) -> list[Escalation]:
    """The draft's escalated attempts that carry an explanation, in tier order, with the
    threshold their tier has now. One query."""
    if draft is None or draft.status != Draft.Status.READY:
        return []
    threshold = CascadeTier.objects.filter(
        policy_id=draft.policy_id, position=OuterRef("tier")
    ).values("threshold")[:1]
    attempts = (
        DraftAttempt.objects.filter(draft_id=draft.pk, explanation__isnull=False, exploratory=False)
        .select_related("endpoint", "scorer")
        .annotate(tier_threshold=Subquery(threshold))
        .order_by("tier", "started_at", "id")
    )
    return [
        Escalation(
            tier=a.tier,
            endpoint=a.endpoint.name if a.endpoint else "cache",
            score=a.score,
            threshold=a.tier_threshold,
            scorer=str(a.scorer) if a.scorer else "default scorer",
            words=explained_words(a.explanation or []),
        )
        for a in attempts
    ]
