"""The learned cascade scorer: labels from agent actions, training, the scorer in force, and why
a draft was escalated.

- Labels: a draft the agent used, or edited by at most SCORER_GOOD_EDIT_PERCENT of its text, is
  good ("1"); a heavier edit or an ignore is bad ("0"). The label judges the draft the agent was
  shown: the cascade's chosen attempt (its last answer), never the escalated ones before it.
- Training (`scorer_train`): a policy's newest SCORER_MAX_LABELS labelled drafts → features
  (FEATURES below) → `drafting.learning.plr.train_plr` → a new `TrainedClassifier` version.
  Too few labels (SCORER_MIN_LABELS, SCORER_MIN_MINORITY of the rarer class): nothing is
  trained. The new version becomes active only if its out-of-fold AUC reaches SCORER_MIN_AUC;
  otherwise it is stored inactive with the reason and whatever was in force stays.
- Serving (`policy_scorer`): the policy's active version, loaded once per process and reloaded
  when another version becomes active; the default scorer when there is none, when embeddings
  are off, or when the model was trained on another embedder's vectors.
- Grounding (drafting.engine.grounding): versions trained since grounded drafts exist add
  GROUNDING_SIGNALS to each row (the best passage's similarity and score, whether the draft
  cites, the overlap of its words with the passages it cites), so an uncited or unsupported
  draft for a knowledge question learns to score low and escalate. A version records its
  feature set (TrainedClassifier.features); an older one, trained without them, keeps being
  served its own rows: the scorer tells them apart by the width its model was fitted on.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import OuterRef, Subquery

from drafting.engine.edits import is_good_edit
from drafting.engine.embeddings import Embedder, EmbeddingError, embedder
from drafting.engine.grounding import GroundingContext, GroundingSignals, grounding_signals
from drafting.engine.providers import Completion
from drafting.engine.scoring import NEUTRAL, DefaultScorer, Scorer, ScoringContext, Verdict
from drafting.learning.classifiers import ActiveClassifiers, classifier_store, training_embedder
from drafting.learning.withholding import action_split_fit
from drafting.models import (
    AgentAction,
    CascadePolicy,
    DraftAttempt,
    DraftPassage,
    TrainedClassifier,
)

if TYPE_CHECKING:
    from drafting.learning.plr import TrainedPLR

logger = logging.getLogger(__name__)

GOOD, BAD = "1", "0"
SCORER = TrainedClassifier.Kind.SCORER


# --- The learned scorer: features, and the model behind the engine's Scorer protocol -----------

# The cheap signals appended to the two embeddings, in order. A signal the training rows cannot
# recover (the default score of a draft a learned scorer judged; an earlier tier's text that no
# explanation kept) is given as unknown: a neutral value and its flag at 0.
SIGNALS = (
    "default_score",
    "default_known",
    "tier",
    "log_words",
    "has_earlier",
    "agreement",
    "agreement_known",
)
# Appended after SIGNALS by versions trained since grounded drafts (see the module docstring);
# a draft without passages has grounded = 0 and the rest neutral.
GROUNDING_SIGNALS = ("grounded", "top_similarity", "top_score", "cited", "overlap", "overlap_known")
# The feature set of the versions before grounding, still served as they were trained.
FEATURES_UNGROUNDED = "customer ⊕ draft embedding; " + ", ".join(SIGNALS)
FEATURES = FEATURES_UNGROUNDED + ", " + ", ".join(GROUNDING_SIGNALS)
# Fused scores (reciprocal rank fusion) are around 1/60: scaled to about 1 for the row.
_SCORE_SCALE = 60.0


def grounding_row(signals: GroundingSignals | None) -> list[float]:
    """The grounding signals of one draft, in GROUNDING_SIGNALS order."""
    if signals is None or not signals.grounded:
        return [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    return [
        1.0,
        signals.top_similarity or 0.0,
        (signals.top_score or 0.0) * _SCORE_SCALE,
        1.0 if signals.cited else 0.0,
        signals.overlap or 0.0,
        0.0 if signals.overlap is None else 1.0,
    ]


def signal_row(
    *,
    draft_text: str,
    default_score: float | None,
    tier: int,
    has_earlier: bool,
    agreement: float | None,
    grounding: GroundingSignals | None = None,
    grounded_features: bool = True,
) -> list[float]:
    """The cheap signals of one draft, in SIGNALS order, then GROUNDING_SIGNALS unless the
    model was trained without them (`grounded_features` off)."""
    extra = grounding_row(grounding) if grounded_features else []
    return [
        NEUTRAL if default_score is None else default_score,
        0.0 if default_score is None else 1.0,
        float(tier),
        math.log1p(len(draft_text.split())),
        1.0 if has_earlier else 0.0,
        0.0 if agreement is None else agreement,
        0.0 if agreement is None else 1.0,
        *extra,
    ]


def feature_rows(
    customer: npt.NDArray[np.float32],
    draft: npt.NDArray[np.float32],
    signals: Sequence[list[float]],
) -> npt.NDArray[np.float64]:
    """One feature row per draft: customer embedding, draft embedding, signals."""
    return np.hstack(
        [
            np.atleast_2d(customer).astype(np.float64),
            np.atleast_2d(draft).astype(np.float64),
            np.asarray(signals, dtype=np.float64).reshape(len(signals), -1),
        ]
    )


class LearnedScorer:
    """g = P(the agent uses the draft or edits it lightly), from one policy's trained model."""

    def __init__(self, *, classifier_id: int, model: TrainedPLR, embedder: Embedder):
        self.classifier_id = classifier_id
        self.model = model
        self.embedder = embedder
        self.fallback = DefaultScorer()
        # Fitted width: two embeddings and the signals of the version's feature set.
        self.width: int | None = getattr(model.estimator, "n_features_in_", None)

    def score(self, *, context: ScoringContext, completion: Completion) -> float:
        return self.judge(context=context, completion=completion).score

    def judge(self, *, context: ScoringContext, completion: Completion) -> Verdict:
        """Embed the customer turn, the draft and the earlier drafts in one batch and predict;
        the default scorer's verdict when the draft is empty or embedding fails."""
        default = self.fallback.score(context=context, completion=completion)
        if not completion.text.strip():
            return Verdict(default)
        try:
            rows = self._rows(context, [completion.text], default_score=default)
        except EmbeddingError as exc:
            logger.warning(
                "learned scorer %s: embedding failed (%s); default scorer used",
                self.classifier_id,
                exc,
            )
            return Verdict(default)
        return Verdict(float(self.model.positive_proba(rows)[0]), scorer_id=self.classifier_id)

    def explain(
        self, *, verdict: Verdict, context: ScoringContext, completion: Completion
    ) -> list[dict[str, Any]] | None:
        """Occlusion weights per word of the draft (weight < 0: the word pulled g down), the
        draft and its one-word-less variants in one embedding batch; None when the default
        scorer judged (embedding failed) or embedding fails now."""
        if verdict.scorer_id is None:
            return None
        from drafting.learning.plr import explain_words

        default = self.fallback.score(context=context, completion=completion)

        def score(variants: list[str]) -> npt.NDArray[np.float64]:
            return self.model.positive_proba(self._rows(context, variants, default_score=default))

        try:
            _full, words = explain_words(completion.text, score)
        except EmbeddingError as exc:
            logger.warning("learned scorer %s: no explanation (%s)", self.classifier_id, exc)
            return None
        return [{"word": w.word, "start": w.start, "end": w.end, "weight": w.weight} for w in words]

    def _rows(
        self, context: ScoringContext, drafts: list[str], *, default_score: float
    ) -> npt.NDArray[np.float64]:
        earlier = list(context.earlier_drafts)
        vectors = self.embedder.embed([context.customer_text, *earlier, *drafts])
        customer, earlier_vectors = vectors[0], vectors[1 : 1 + len(earlier)]
        draft_vectors = vectors[1 + len(earlier) :]
        # A version trained before grounding was fitted on SIGNALS alone: give it those.
        grounded = self.width != 2 * int(vectors.shape[1]) + len(SIGNALS)
        signals = [
            signal_row(
                draft_text=text,
                default_score=default_score,
                tier=context.tier,
                has_earlier=bool(earlier),
                agreement=float((earlier_vectors @ vector).max()) if earlier else None,
                grounding=grounding_signals(context.grounding, text),
                grounded_features=grounded,
            )
            for text, vector in zip(drafts, draft_vectors, strict=True)
        ]
        return feature_rows(np.tile(customer, (len(drafts), 1)), draft_vectors, signals)


# --- Labels -------------------------------------------------------------------------------------


def action_label(*, kind: str, edit_distance: Decimal | None) -> str | None:
    """An agent action's verdict on the draft it was shown; None when it says nothing."""
    if kind == AgentAction.Kind.USE:
        return GOOD
    if kind == AgentAction.Kind.EDIT:
        return GOOD if is_good_edit(edit_distance) else BAD
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
    grounding: GroundingSignals | None = None


def _text_of_explanation(words: list[dict[str, Any]]) -> str:
    """An escalated draft's text back from its explanation (words at their offsets): the only
    place an earlier tier's draft is kept. Explanations cover the first words only."""
    text = ""
    for word in words:
        text = text.ljust(int(word["start"])) + str(word["word"])
    return text


def scorer_labels(*, policy_id: int, limit: int) -> list[LabelledDraft]:
    """The policy's newest `limit` drafts an agent acted on, with the shown draft's attempt and
    its grounding (the draft's passages, the attempt's shown passages and citations). Cache
    hits and macro offers are left out: no scorer judged them. Three queries."""
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
            macro__isnull=True,
            exploratory=False,  # asked after the draft was shown: not what the agent judged
            purpose=DraftAttempt.Purpose.DRAFT,  # a composer rewrite of the agent's own text
        )
        .order_by("draft_id", "started_at", "id")
        .values(
            "draft_id", "tier", "score", "scorer_id", "explanation", "passages_shown", "citations"
        )
    ):
        attempts[row["draft_id"]].append(row)
    passages: defaultdict[int, list[tuple[str, float, float | None]]] = defaultdict(list)
    for draft_id, text, score, similarity in (
        DraftPassage.objects.filter(draft_id__in=list(attempts))
        .order_by("draft_id", "number")
        .values_list("draft_id", "text", "score", "vector_similarity")
    ):
        passages[draft_id].append((text, score, similarity))
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
                grounding=grounding_signals(
                    GroundingContext(
                        passages=tuple(passages.get(draft_id, ())),
                        shown=shown["passages_shown"],
                        citations=tuple(shown["citations"] or ()),
                    ),
                    draft_text,
                ),
            )
        )
    return labelled


def scorer_features(rows: list[LabelledDraft], *, using: Embedder) -> np.ndarray:
    """Feature rows for labelled drafts (FEATURES below), every text embedded once,
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
                grounding=row.grounding,
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
        using, reason = training_embedder()
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
    # How P(good) splits into use / edit / ignore for this policy: withholding needs the three.
    metrics["action_split"] = action_split_fit(
        policy_id=policy.pk, limit=settings.SCORER_MAX_LABELS
    ).as_json()
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

active_scorers = ActiveClassifiers(kind=SCORER, owner_field="policy")


def policy_scorer(*, policy_id: int) -> Scorer:
    """The scorer in force for the policy: its active learned scorer, else the default one.
    One small query per call; the model itself is loaded once per process and version."""
    loaded = active_scorers.get(policy_id)
    if loaded is None:
        return DefaultScorer()
    try:
        using = embedder()
    except EmbeddingError as exc:
        logger.warning("scorer %s unusable (%s): default scorer", loaded.classifier_id, exc)
        return DefaultScorer()
    if using is None or using.name != loaded.embedding_model:
        logger.warning(
            "scorer %s was trained on %s vectors, the embedder is %s: default scorer",
            loaded.classifier_id,
            loaded.embedding_model,
            using.name if using else "off",
        )
        return DefaultScorer()
    return LearnedScorer(classifier_id=loaded.classifier_id, model=loaded.model, embedder=using)
