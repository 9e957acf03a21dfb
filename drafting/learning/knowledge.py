"""The team's tens-of-shot knowledge models, trained from its KnowledgeLabel rows and served to the
draft path (drafting.services): the needs-knowledge detector and the passage re-ranker.

- Detector (TrainedClassifier kind "knowledge"): a PLR on the customer turn's embedding and
  seven cheap signals (drafting.engine.reranking.detector_row; labels "1" = needs the
  knowledge base, "0" = does not), with its decision threshold (DETECTOR_THRESHOLD) stored in
  the model. `knowledge_detector` returns None when the team has none, or when it was trained
  on another embedder's vectors: the draft path then falls back to its documented rule
  (drafting.engine.grounding.looks_like_question). A version stored before the cheap signals
  (an embedding-only PLR) is still served, on the embedding alone, at 0.5.
- Re-ranker (kind "reranker"): a PLR on one row per (labelled knowledge turn, chunk of the
  articles its thread names), label = the chunk is one of the label's relevant chunks
  (drafting.engine.reranking.rerank_rows). The model carries its exemplars (the labelled
  turns' stripped-question vectors and their relevant chunks' vectors) and its threshold
  (RERANKER_THRESHOLD): serving keeps the candidates with P ≥ it, at least the best.

Training and serving compute features with the same functions, from the same retrieval
statements (drafting.engine.retrieval.rerank_candidates, team_nearest), so a label's rows are
what the draft path would have computed for that turn. The method, its choices and its
measured figures: docs/performance.md "Knowledge: DSTC11 track 5".

A label's `text` is the customer turn with the thread before it: the earlier turns, oldest
first, then the turn, joined by TURN_SEPARATOR (`label_text`, `label_turns`); a text without
it is a turn without a thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from django.contrib.auth.models import AnonymousUser, User

from csbot.models import Team
from drafting.engine.embeddings import Embedder, EmbeddingError, embedder
from drafting.engine.reranking import (
    DETECTOR_SIGNALS,
    RERANK_SIGNALS,
    Exemplars,
    detector_row,
    keep,
    rerank_rows,
)
from drafting.engine.retrieval import (
    Candidates,
    Passage,
    rerank_candidates,
    stripped_vector,
    team_articles,
    team_nearest,
)
from drafting.engine.vectors import QueryVector
from drafting.learning.classifiers import ActiveClassifiers, classifier_store
from drafting.models import KnowledgeChunk, KnowledgeLabel, TrainedClassifier

if TYPE_CHECKING:
    from drafting.learning.plr import TrainedPLR

logger = logging.getLogger(__name__)

NEEDS, NO_NEED = "1", "0"
TURN_SEPARATOR = "\x1e"  # ASCII record separator: never in a customer's text
# The research's choices (docs/performance.md): P ≥ 0.6 needs knowledge (0.958 vs 0.953 at
# 0.5 on its dev split); keep passages at P ≥ 0.4 (0.3–0.4 tied on F1, 0.4 more precise).
DETECTOR_THRESHOLD = 0.6
LEGACY_DETECTOR_THRESHOLD = 0.5
RERANKER_THRESHOLD = 0.4
# Candidates per focus article, nearest to the question first. An article of up to this many
# chunks is scored whole, as the research did: the 50 nearest keep only 95 % of the answers
# (research §3); scoring all of DSTC11's ≤ 100-chunk articles gained selection F1 +0.001 on its
# dev half (docs/performance.md). A longer article keeps its 150 nearest, so a long manual
# costs no more than a 150-chunk one (≈ 0.7 MB of features a focus article).
PER_ARTICLE = 150
# The least a team must label before a model is trained: two classes to tell apart.
DETECTOR_MIN_PER_CLASS = 5
RERANKER_MIN_TURNS = 5

DETECTOR_FEATURES = "turn embedding + " + ", ".join(DETECTOR_SIGNALS)
RERANKER_FEATURES = (
    "per candidate: " + ", ".join(RERANK_SIGNALS[:8]) + ", … (engine.reranking), c⊙q, c⊙g, c⊙e"
)[:200]


def label_text(*, thread: Sequence[str], turn: str) -> str:
    """KnowledgeLabel.text for `turn` after `thread` (oldest first)."""
    return TURN_SEPARATOR.join([*thread, turn])


def label_turns(text: str) -> tuple[list[str], str]:
    """(thread, turn) of a KnowledgeLabel.text."""
    *thread, turn = text.split(TURN_SEPARATOR)
    return thread, turn


# --- Models ---------------------------------------------------------------------------------
# Subclasses of the PLR: stored and loaded as every TrainedClassifier (TrainedPLR.from_bytes
# accepts them), with what serving needs beside the fitted coefficients.


def _plr_fields(plr: TrainedPLR) -> dict[str, Any]:
    from drafting.learning.plr import TrainedPLR

    return {f.name: getattr(plr, f.name) for f in fields(TrainedPLR)}


_made: dict[str, type[Any]] = {}


def _classes() -> tuple[type[Any], type[Any]]:
    """DetectorModel and RerankerModel, made on first use: their base's module imports
    scikit-learn, which stays out of processes that only import this one (web). Unpickling a
    stored model finds them through the module's `__getattr__`."""
    if not _made:
        from drafting.learning.plr import TrainedPLR

        @dataclass
        class DetectorModel(TrainedPLR):
            threshold: float = DETECTOR_THRESHOLD

        @dataclass
        class RerankerModel(TrainedPLR):
            threshold: float = RERANKER_THRESHOLD
            per_article: int = PER_ARTICLE
            questions: npt.NDArray[np.float32] = field(
                default_factory=lambda: np.zeros((0, 0), np.float32)
            )
            gold: tuple[npt.NDArray[np.float32], ...] = ()

        for made in (DetectorModel, RerankerModel):
            made.__qualname__ = made.__name__
            _made[made.__name__] = made
    return _made["DetectorModel"], _made["RerankerModel"]


def __getattr__(name: str) -> Any:
    if name in ("DetectorModel", "RerankerModel"):
        detector, reranker = _classes()
        return detector if name == "DetectorModel" else reranker
    raise AttributeError(name)


# --- Features -------------------------------------------------------------------------------


def detector_rows(
    team_id: int, turns: Sequence[tuple[Sequence[str], str]], vectors: npt.NDArray[Any]
) -> npt.NDArray[np.float32]:
    """The detector's rows for (thread, turn) pairs whose turns' embeddings are `vectors`:
    one statement per turn for the team's nearest chunks (the stripped turn's embedding is
    remembered for the retrieval of the same turn)."""
    articles = team_articles(team_id)
    rows = []
    for (thread, turn), vector in zip(turns, vectors, strict=True):
        in_turn = bool(articles.named_in(turn))
        rows.append(
            detector_row(
                text=turn,
                vector=np.asarray(vector, dtype=np.float32),
                nearest=team_nearest(team_id=team_id, text=turn),
                named_in_thread=in_turn or any(articles.named_in(t) for t in thread),
                named_in_turn=in_turn,
            )
        )
    return np.vstack(rows) if rows else np.zeros((0, 0), dtype=np.float32)


# --- Serving --------------------------------------------------------------------------------

active_detectors = ActiveClassifiers(kind=TrainedClassifier.Kind.KNOWLEDGE, owner_field="team")
active_rerankers = ActiveClassifiers(kind=TrainedClassifier.Kind.RERANKER, owner_field="team")


class LearnedNeedDetector:
    """P(needs knowledge) of a customer turn, from the draft's own QueryVector (the turn is
    embedded once for every search and this) and the thread before it."""

    def __init__(
        self, *, team_id: int, classifier_id: int, model: TrainedPLR, embedding_model: str
    ):
        self.team_id = team_id
        self.classifier_id = classifier_id
        self.model = model
        self.embedding_model = embedding_model
        self.signals = isinstance(model, _classes()[0])
        self.threshold = float(
            getattr(model, "threshold", LEGACY_DETECTOR_THRESHOLD)
            if self.signals
            else LEGACY_DETECTOR_THRESHOLD
        )

    def probability(self, query: QueryVector, thread: Sequence[str] = ()) -> float | None:
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
        if self.signals:
            row = detector_rows(self.team_id, [(thread, query.text)], vector.reshape(1, -1))
        else:
            row = vector.reshape(1, -1)
        return float(self.model.positive_proba(row, NEEDS)[0])

    def needs(self, probability: float) -> bool:
        return probability >= self.threshold


def knowledge_detector(team_id: int) -> LearnedNeedDetector | None:
    """The team's active detector, or None (see the module docstring)."""
    loaded = active_detectors.get(team_id)
    if loaded is None:
        return None
    return LearnedNeedDetector(
        team_id=team_id,
        classifier_id=loaded.classifier_id,
        model=loaded.model,
        embedding_model=loaded.embedding_model,
    )


class LearnedReranker:
    """The team's passage re-ranker behind drafting.engine.retrieval.CandidateReranker: P(the
    chunk answers the turn) for every candidate, the kept ones best first, P their score."""

    def __init__(self, *, classifier_id: int, model: Any):
        self.classifier_id = classifier_id
        self.model = model
        self.threshold = float(model.threshold)
        self.per_article = int(model.per_article)
        self.exemplars = (
            Exemplars(questions=model.questions, gold=tuple(model.gold))
            if len(model.gold)
            else None
        )

    def probabilities(self, candidates: Candidates) -> npt.NDArray[np.float64]:
        if not candidates.passages:
            return np.zeros(0)
        rows = rerank_rows(candidates, self.exemplars)
        return np.asarray(self.model.positive_proba(rows, "1"), dtype=np.float64)

    def rerank_candidates(self, candidates: Candidates) -> list[Passage]:
        p = self.probabilities(candidates)
        return [
            replace(candidates.passages[i], score=float(p[i]), reranked=True)
            for i in keep(p, threshold=self.threshold)
        ]


def passage_reranker(team_id: int) -> LearnedReranker | None:
    """The team's active re-ranker (loaded once per process and version, like the scorer),
    or None: none trained, or trained on another embedder's vectors than the one in force."""
    loaded = active_rerankers.get(team_id)
    if loaded is None:
        return None
    try:
        using = embedder()
    except EmbeddingError as exc:
        logger.warning("re-ranker %s unusable (%s)", loaded.classifier_id, exc)
        return None
    if using is None or using.name != loaded.embedding_model:
        logger.warning(
            "re-ranker %s was trained on %s vectors, the embedder is %s: not used",
            loaded.classifier_id,
            loaded.embedding_model,
            using.name if using else "off",
        )
        return None
    if not isinstance(loaded.model, _classes()[1]):
        return None
    return LearnedReranker(classifier_id=loaded.classifier_id, model=loaded.model)


# --- Training -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnowledgeTraining:
    """What a training run did: the stored version (None: nothing trained), whether it is in
    force now, and why not (or what happened)."""

    kind: str
    classifier: TrainedClassifier | None
    activated: bool
    reason: str = ""

    @property
    def message(self) -> str:
        if self.classifier is None:
            return f"{self.kind}: not trained: {self.reason}"
        m = self.classifier.metrics
        state = "active" if self.activated else "stored, not active"
        figures = ", ".join(
            f"{k} {m[k]}" for k in ("n", "auc", "macro_f1", "seconds") if m.get(k) is not None
        )
        return f"{self.kind} v{self.classifier.version} ({figures}) {state}. {self.reason}".strip()


Progress = Callable[[int, int], None]


def _user(user: User | AnonymousUser | None) -> User | None:
    return user if isinstance(user, User) and user.is_authenticated else None


def _embedder_or_reason() -> tuple[Embedder | None, str]:
    try:
        using = embedder()
    except EmbeddingError as exc:
        return None, f"no embedder: {exc}"
    return (using, "") if using is not None else (None, "embeddings are off")


def knowledge_detector_train(
    team: Team,
    *,
    user: User | AnonymousUser | None = None,
    seed: int = 0,
    activate: bool = True,
    progress: Progress | None = None,
) -> KnowledgeTraining:
    """Train a new version of the team's needs-knowledge detector from its labels.

    Steps: read the labels (both classes need DETECTOR_MIN_PER_CLASS); embed the turns; their
    feature rows (`detector_rows`, as served); fit the PLR (L2, balanced, C by
    cross-validation, out-of-fold metrics); store it with DETECTOR_THRESHOLD; make it the
    team's active detector when `activate`.
    """
    kind = TrainedClassifier.Kind.KNOWLEDGE
    labels = list(
        KnowledgeLabel.objects.filter(team=team)
        .order_by("id")
        .values_list("text", "needs_knowledge")
    )
    counts = {NEEDS: sum(n for _, n in labels), NO_NEED: sum(not n for _, n in labels)}
    if min(counts.values()) < DETECTOR_MIN_PER_CLASS:
        return KnowledgeTraining(
            kind,
            None,
            False,
            f"{counts[NEEDS]} turns needing knowledge and {counts[NO_NEED]} not; "
            f"{DETECTOR_MIN_PER_CLASS} of each needed",
        )
    using, reason = _embedder_or_reason()
    if using is None:
        return KnowledgeTraining(kind, None, False, reason)
    started = time.monotonic()
    turns = [label_turns(text) for text, _ in labels]
    try:
        vectors = using.embed([turn for _, turn in turns])
    except EmbeddingError as exc:
        return KnowledgeTraining(kind, None, False, f"embedding failed ({exc})")
    rows = []
    for i, pair in enumerate(turns):
        rows.append(detector_rows(team.pk, [pair], vectors[i : i + 1]))
        if progress is not None:
            progress(i + 1, len(turns))
    from drafting.learning.plr import train_plr  # scikit-learn: worker-side only

    plr = train_plr(np.vstack(rows), [NEEDS if n else NO_NEED for _, n in labels], seed=seed)
    detector_class, _ = _classes()
    model = detector_class(**_plr_fields(plr), threshold=DETECTOR_THRESHOLD)
    metrics = dict(plr.metrics) | {
        "threshold": DETECTOR_THRESHOLD,
        "seconds": round(time.monotonic() - started, 1),
    }
    classifier = classifier_store(
        owner=team,
        kind=kind,
        model=model,
        embedding_model=using.name,
        features=DETECTOR_FEATURES[:200],
        n_train=len(labels),
        metrics=metrics,
        activate=activate,
        trained_by=_user(user),
    )
    outcome = KnowledgeTraining(kind, classifier, activate)
    logger.info("team %s: %s", team.pk, outcome.message)
    return outcome


@dataclass
class _LabelledTurn:
    thread: list[str]
    turn: str
    relevant: set[int]


def _relevant_labels(team: Team) -> list[_LabelledTurn]:
    rows = (
        KnowledgeLabel.objects.filter(team=team, needs_knowledge=True)
        .prefetch_related("relevant_chunks")
        .order_by("id")
    )
    out = []
    for label in rows:
        relevant = {c.pk for c in label.relevant_chunks.all() if c.team_id == team.pk}
        if relevant:
            thread, turn = label_turns(label.text)
            out.append(_LabelledTurn(thread, turn, relevant))
    return out


def _chunk_vectors(ids: set[int], model: str) -> dict[int, npt.NDArray[np.float32]]:
    rows = KnowledgeChunk.objects.filter(pk__in=ids, embedding_model=model).values_list(
        "pk", "embedding"
    )
    return {pk: np.asarray(vector, dtype=np.float32) for pk, vector in rows if vector is not None}


def passage_reranker_train(
    team: Team,
    *,
    user: User | AnonymousUser | None = None,
    seed: int = 0,
    activate: bool = True,
    progress: Progress | None = None,
) -> KnowledgeTraining:
    """Train a new version of the team's passage re-ranker from its labels with relevant chunks.

    Steps: read the knowledge-seeking labels that name relevant chunks (RERANKER_MIN_TURNS
    needed); their exemplars (stripped question's vector, the relevant chunks' vectors); per
    label, the candidates the draft path would score (`rerank_candidates`) and their rows
    (`rerank_rows`, the label itself left out of the exemplars), label "1" for a relevant
    chunk; fit the PLR (L2, no class weights, C by cross-validation); store it with its
    exemplars and RERANKER_THRESHOLD; make it the team's active re-ranker when `activate`.
    """
    kind = TrainedClassifier.Kind.RERANKER
    labelled = _relevant_labels(team)
    if len(labelled) < RERANKER_MIN_TURNS:
        return KnowledgeTraining(
            kind,
            None,
            False,
            f"{len(labelled)} labelled turns with relevant chunks, {RERANKER_MIN_TURNS} needed",
        )
    using, reason = _embedder_or_reason()
    if using is None:
        return KnowledgeTraining(kind, None, False, reason)
    started = time.monotonic()
    articles = team_articles(team.pk)
    vectors = _chunk_vectors(set().union(*(t.relevant for t in labelled)), using.name)
    questions: list[npt.NDArray[np.float32]] = []
    gold: list[npt.NDArray[np.float32]] = []
    owner: dict[int, int] = {}  # labelled turn -> its exemplar
    for i, t in enumerate(labelled):
        found = [vectors[c] for c in sorted(t.relevant) if c in vectors]
        stripped = stripped_vector(articles.without_titles(t.turn) or t.turn)
        if found and stripped is not None:
            owner[i] = len(questions)
            questions.append(stripped[1])
            gold.append(np.vstack(found))
    if not questions:
        return KnowledgeTraining(kind, None, False, "no labelled chunk is embedded yet")
    exemplars = Exemplars(questions=np.vstack(questions), gold=tuple(gold))
    X, y, turns_used = [], [], 0
    for i, t in enumerate(labelled):
        candidates = rerank_candidates(
            team_id=team.pk, query=QueryVector(t.turn), thread=t.thread, per_article=PER_ARTICLE
        )
        if candidates is not None and candidates.passages:
            X.append(rerank_rows(candidates, exemplars, leave_out=owner.get(i)))
            y += [NEEDS if p.chunk_id in t.relevant else NO_NEED for p in candidates.passages]
            turns_used += 1
        if progress is not None:
            progress(i + 1, len(labelled))
    if NEEDS not in y or NO_NEED not in y:
        return KnowledgeTraining(
            kind, None, False, "no relevant chunk is among the candidates of the labelled turns"
        )
    from drafting.learning.plr import train_plr  # scikit-learn: worker-side only

    plr = train_plr(np.vstack(X), y, seed=seed, class_weight=None)
    _, reranker_class = _classes()
    model = reranker_class(
        **_plr_fields(plr),
        threshold=RERANKER_THRESHOLD,
        per_article=PER_ARTICLE,
        questions=exemplars.questions,
        gold=exemplars.gold,
    )
    metrics = dict(plr.metrics) | {
        "threshold": RERANKER_THRESHOLD,
        "turns": turns_used,
        "exemplars": len(questions),
        "seconds": round(time.monotonic() - started, 1),
    }
    classifier = classifier_store(
        owner=team,
        kind=kind,
        model=model,
        embedding_model=using.name,
        features=RERANKER_FEATURES,
        n_train=len(y),
        metrics=metrics,
        activate=activate,
        trained_by=_user(user),
    )
    outcome = KnowledgeTraining(kind, classifier, activate)
    logger.info("team %s: %s", team.pk, outcome.message)
    return outcome


def knowledge_models_train_by_id(*, team_id: int, user_id: int | None = None) -> list[str]:
    """The worker's task: both models of the team, what each did."""
    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        return [f"team {team_id} no longer exists"]
    user = User.objects.filter(pk=user_id).first() if user_id else None
    return [
        knowledge_detector_train(team, user=user).message,
        passage_reranker_train(team, user=user).message,
    ]
