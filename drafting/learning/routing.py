"""The cascade router: per tier, P(good draft | what is known before any call), learned from
explored drafts and agent actions; in force only once it beats the plain cascade on held-out
drafts (drafting.engine.routing decides with it).

- Labels (`router_rows`): an acted-on draft of the policy labels each tier that answered it.
  A draft in the exploration sample (every tier's text kept) labels every tier: good when the
  tier's text is within SCORER_GOOD_EDIT_PERCENT edit distance of what the agent sent (the
  tuning table's rule, drafting.learning.tuning); any other draft labels the tier that was
  shown, by the agent's action (the learned scorer's rule, drafting.learning.scorer).
- Features before any call (`route_features`): the customer message's embedding (the query
  vector the worker computes anyway), its confident intent one-hot (the intents seen in
  training), the grounding decision (grounded / none found / not needed), the knowledge
  detector's probability and the best passage's similarity, each with a known-flag.
- Models: one PLR per tier (`drafting.learning.plr.train_plr`); a tier whose labels are all
  of one class gets its smoothed base rate. Cost and latency per tier: its mean over the
  training drafts' answers (a tier's price and speed change slowly; the prompt length varies
  less than the tiers' prices do).
- Held-out check (`router_train`): on the drafts where every tier answered, out-of-fold
  estimates (5 folds: a draft's estimates come from models that never saw it) drive the
  routed policy through the recorded scores, costs and latencies, beside the plain cascade
  (the policy's tiers and thresholds on the same scores). Value per draft = good-draft value ×
  whether the kept draft was good − the cost of the tiers asked − their latency × wait per
  second. The new version is active only when the routed value beats the plain one; otherwise
  it is stored inactive with the reason. Both values are in TrainedClassifier.metrics.
- Values: the team's ActionValues (good draft = s_use − s_ignore, wait_per_second) when
  measured, else DEFAULT_GOOD_DRAFT_USD and DEFAULT_WAIT_PER_SECOND_USD; the version keeps the
  values it was checked with and routes with them.
- Serving (`policy_router`): the policy's active router when CascadePolicy.routing is on, the
  message was embedded by the router's embedder, and the router knows every tier asked (same
  position and endpoint); otherwise None and the cascade runs plain.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import numpy.typing as npt
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max, OuterRef, Subquery

from csbot.memo import Memo
from drafting.engine.edits import edit_distance, is_good_edit
from drafting.engine.embeddings import Embedder, EmbeddingError
from drafting.engine.routing import RouteValues, TierEstimate, route
from drafting.engine.vectors import QueryVector
from drafting.learning.classifiers import training_embedder
from drafting.learning.scorer import BAD, GOOD, action_label
from drafting.learning.shadowed import shadow_only_drafts
from drafting.models import (
    ActionValues,
    AgentAction,
    CascadePolicy,
    CascadeTier,
    Draft,
    DraftAttempt,
    DraftPassage,
    MessageIntent,
    TrainedClassifier,
)

if TYPE_CHECKING:
    from drafting.learning.plr import TrainedPLR

logger = logging.getLogger(__name__)

ROUTER = TrainedClassifier.Kind.ROUTER
# Without the team's measured ActionValues: an agent at $30/h saves about a minute with a good
# draft over a bad one (docs/decisions.md, "Routing before generation"), and a second of their
# wait costs $30/3600.
DEFAULT_GOOD_DRAFT_USD = Decimal("0.50")
DEFAULT_WAIT_PER_SECOND_USD = Decimal("0.0083")
# Fewer drafts with every tier's answer than this and the held-out comparison is noise (the
# tuning table's minimum, drafting.learning.tuning.MIN_ROWS).
MIN_EXPLORED = 30
HELD_OUT_FOLDS = 5
SEED = 0
KNOWLEDGE_STATES = (
    Draft.Knowledge.GROUNDED,
    Draft.Knowledge.NONE_FOUND,
    Draft.Knowledge.NOT_NEEDED,
)
FEATURES = (
    "message embedding; intent one-hot; knowledge grounded/none_found/not_needed; "
    "need, need_known, best_similarity, similarity_known"
)
LABELLED_KINDS = (AgentAction.Kind.USE, AgentAction.Kind.EDIT, AgentAction.Kind.IGNORE)


# --- Features -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteSignals:
    """What is known about a message before any tier is asked, besides its embedding."""

    intent_id: int | None = None
    knowledge: str = ""  # Draft.Knowledge ("" unchecked)
    need: float | None = None  # the knowledge detector's probability
    best_similarity: float | None = None  # the best passage's cosine with the message


def route_features(
    vectors: npt.NDArray[np.float32], signals: Sequence[RouteSignals], *, intents: Sequence[int]
) -> npt.NDArray[np.float64]:
    """One row per message: embedding, intent one-hot (`intents` order; an intent the router
    never saw is all zeros), knowledge state one-hot, need and similarity with known-flags."""
    index = {intent: i for i, intent in enumerate(intents)}
    extra = np.zeros((len(signals), len(intents) + len(KNOWLEDGE_STATES) + 4))
    for row, signal in enumerate(signals):
        if signal.intent_id in index:
            extra[row, index[signal.intent_id]] = 1.0
        if signal.knowledge in KNOWLEDGE_STATES:
            extra[row, len(intents) + KNOWLEDGE_STATES.index(signal.knowledge)] = 1.0
        base = len(intents) + len(KNOWLEDGE_STATES)
        if signal.need is not None:
            extra[row, base : base + 2] = (signal.need, 1.0)
        if signal.best_similarity is not None:
            extra[row, base + 2 : base + 4] = (signal.best_similarity, 1.0)
    return np.hstack([np.atleast_2d(vectors).astype(np.float64), extra])


# --- The model ------------------------------------------------------------------------------------


@dataclass
class TierModel:
    """One tier's estimator: a PLR, or the smoothed base rate when its labels were one class."""

    position: int
    endpoint_id: int
    base_rate: float
    cost: Decimal
    latency_s: float
    n_labels: int
    plr: TrainedPLR | None = None

    def p_good(self, rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if self.plr is None:
            return np.full(len(rows), self.base_rate)
        return self.plr.positive_proba(rows, positive=GOOD)


@dataclass
class RouterModel:
    """A policy's router version: per tier its model, cost and latency; the intents of the
    one-hot; the values it was checked with."""

    tiers: list[TierModel]
    intents: list[int]
    values: RouteValues
    metrics: dict[str, Any] = field(default_factory=dict)

    def covers(self, tiers: Sequence[CascadeTier]) -> bool:
        known = {(t.position, t.endpoint_id) for t in self.tiers}
        return all((t.position, t.endpoint_id) in known for t in tiers)

    def estimates(
        self, rows: npt.NDArray[np.float64], positions: Sequence[int]
    ) -> list[list[TierEstimate]]:
        """Per row, the estimates of the tiers at `positions`, in that order."""
        by_position = {t.position: t for t in self.tiers}
        chosen = [by_position[p] for p in positions]
        p = np.column_stack([t.p_good(rows) for t in chosen])
        return [
            [
                TierEstimate(
                    tier=t.position, p_good=float(p[r, i]), cost=t.cost, latency_s=t.latency_s
                )
                for i, t in enumerate(chosen)
            ]
            for r in range(len(rows))
        ]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        joblib.dump(self, buffer, compress=3)
        return buffer.getvalue()

    @staticmethod
    def from_bytes(blob: bytes | memoryview) -> RouterModel:
        model = joblib.load(io.BytesIO(bytes(blob)))
        if not isinstance(model, RouterModel):
            raise TypeError(f"Not a router: {type(model).__name__}")
        return model


class LearnedRouter:
    """drafting.engine.routing.Router for one message: its feature row computed once."""

    def __init__(self, *, router_id: int, model: RouterModel, row: npt.NDArray[np.float64]):
        self._router_id = router_id
        self.model = model
        self.row = np.atleast_2d(row)

    @property
    def router_id(self) -> int | None:
        return self._router_id

    @property
    def values(self) -> RouteValues:
        return self.model.values

    def estimates(self, tiers: Sequence[int], *, scores: Sequence[float]) -> list[TierEstimate]:
        # The scores so far are not used yet: the tiers that remain are re-estimated as they
        # are (every answer before them fell short of its threshold).
        return self.model.estimates(self.row, tiers)[0]


# --- Labels ---------------------------------------------------------------------------------------


@dataclass
class RouterRow:
    """One acted-on draft: its message and signals, a label per tier slot that has one, and
    (complete rows: every tier answered) each tier's score, cost and latency."""

    draft_id: int
    text: str
    signals: RouteSignals
    labels: dict[int, str]  # slot → GOOD/BAD
    scores: dict[int, float] = field(default_factory=dict)
    costs: dict[int, float] = field(default_factory=dict)
    latency_s: dict[int, float] = field(default_factory=dict)
    complete: bool = False


def router_rows(
    *, policy: CascadePolicy, tiers: Sequence[CascadeTier], limit: int
) -> list[RouterRow]:
    """The policy's newest `limit` acted-on drafts, labelled per tier slot (`tiers` order; an
    answer from another position or endpoint is left out). Four queries."""
    slot = {(t.position, t.endpoint_id): i for i, t in enumerate(tiers)}
    actions = list(
        AgentAction.objects.filter(draft__policy=policy, kind__in=LABELLED_KINDS)
        .exclude(draft__text="")
        .order_by("-acted_at", "-id")
        .values_list(
            "draft_id",
            "kind",
            "edit_distance",
            "final_text",
            "draft__message__text",
            "draft__message_id",
            "draft__knowledge",
            "draft__knowledge_need",
        )[:limit]
    )
    draft_ids = [a[0] for a in actions]
    answers: defaultdict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    shown: dict[int, int] = {}
    for attempt in (
        DraftAttempt.objects.filter(
            draft_id__in=draft_ids,
            outcome=DraftAttempt.Outcome.OK,
            cache_hit=False,
            macro__isnull=True,
            purpose=DraftAttempt.Purpose.DRAFT,
        )
        .order_by("draft_id", "started_at", "id")
        .values(
            "draft_id", "tier", "endpoint_id", "text", "score", "cost", "latency_ms", "exploratory"
        )
    ):
        i = slot.get((attempt["tier"], attempt["endpoint_id"]))
        if i is None:
            continue
        answers[attempt["draft_id"]][i] = dict(attempt)  # a retried tier's later answer wins
        if not attempt["exploratory"]:
            shown[attempt["draft_id"]] = i  # the last answer of the cascade is the one shown
    similarity = dict(
        DraftPassage.objects.filter(draft_id__in=draft_ids)
        .values("draft_id")
        .annotate(best=Max("vector_similarity"))
        .values_list("draft_id", "best")
    )
    floor = Decimal(str(settings.MACRO_MIN_INTENT_CONFIDENCE))
    intents = dict(
        MessageIntent.objects.filter(
            message_id__in=[a[5] for a in actions], confidence__gte=floor
        ).values_list("message_id", "intent_id")
    )
    rows = []
    k = len(tiers)
    shadowed = shadow_only_drafts(answers)  # texts kept for a shadow answer: not explored
    for draft_id, kind, distance, final_text, text, message_id, knowledge, need in actions:
        answered = answers.get(draft_id, {})
        labels: dict[int, str] = {}
        complete = len(answered) == k and all(a["text"] for a in answered.values())
        if complete and draft_id not in shadowed:
            for i, a in answered.items():
                good = is_good_edit(edit_distance(a["text"], final_text))
                labels[i] = GOOD if good else BAD
        elif draft_id in shown:
            label = action_label(kind=kind, edit_distance=distance)
            if label is not None:
                labels[shown[draft_id]] = label
        if not labels:
            continue
        best = similarity.get(draft_id)
        row = RouterRow(
            draft_id=draft_id,
            text=text,
            signals=RouteSignals(
                intent_id=intents.get(message_id),
                knowledge=knowledge,
                need=None if need is None else float(need),
                best_similarity=None if best is None else float(best),
            ),
            labels=labels,
        )
        if len(labels) == k and all(answered[i]["score"] is not None for i in range(k - 1)):
            row.complete = True
            row.scores = {i: float(a["score"] or 0) for i, a in answered.items()}
            row.costs = {i: float(a["cost"]) for i, a in answered.items()}
            row.latency_s = {i: (a["latency_ms"] or 0) / 1000 for i, a in answered.items()}
        rows.append(row)
    return rows


# --- Training ---------------------------------------------------------------------------------


def route_values(team_id: int) -> RouteValues:
    """The team's measured values (a good draft over a bad one: s_use − s_ignore), else the
    documented defaults; a measured good-draft value of zero or less says nothing to route by."""
    measured = ActionValues.objects.filter(team_id=team_id).first()
    if measured is None or measured.s_use - measured.s_ignore <= 0:
        wait = DEFAULT_WAIT_PER_SECOND_USD if measured is None else measured.wait_per_second
        return RouteValues(good_draft=DEFAULT_GOOD_DRAFT_USD, wait_per_second=wait)
    return RouteValues(
        good_draft=measured.s_use - measured.s_ignore, wait_per_second=measured.wait_per_second
    )


def _fit(
    X: npt.NDArray[np.float64],
    rows: Sequence[RouterRow],
    tiers: Sequence[CascadeTier],
    *,
    intents: list[int],
    values: RouteValues,
) -> RouterModel:
    """Per tier slot: a PLR on the rows it has labels for (base rate when one class), and its
    mean cost and latency over those rows' answers where known."""
    from drafting.learning.plr import train_plr  # scikit-learn: worker-side only

    models = []
    for i, tier in enumerate(tiers):
        picked = [r for r, row in enumerate(rows) if i in row.labels]
        labels = [rows[r].labels[i] for r in picked]
        counts = Counter(labels)
        plr = (
            train_plr(X[picked], labels, seed=SEED)
            if min(counts.get(GOOD, 0), counts.get(BAD, 0)) >= 2
            else None
        )
        costs = [row.costs[i] for row in rows if i in row.costs]
        latency = [row.latency_s[i] for row in rows if i in row.latency_s]
        models.append(
            TierModel(
                position=tier.position,
                endpoint_id=tier.endpoint_id,
                base_rate=(counts.get(GOOD, 0) + 1) / (len(labels) + 2),
                cost=Decimal(f"{np.mean(costs) if costs else 0.0:.10f}"),
                latency_s=float(np.mean(latency)) if latency else 0.0,
                n_labels=len(labels),
                plr=plr,
            )
        )
    return RouterModel(tiers=models, intents=intents, values=values)


@dataclass(frozen=True)
class Simulated:
    """Mean value per draft of a policy walked through recorded answers, and what it asked."""

    value: float
    good: float
    cost: float
    asked: list[float]  # share of drafts that asked each tier
    skipped: list[float]  # share of drafts that routed past each tier


def simulate(
    rows: Sequence[RouterRow],
    thresholds: Sequence[Decimal],
    values: RouteValues,
    estimates: Sequence[list[TierEstimate]] | None,
) -> Simulated:
    """The cascade on complete rows (`estimates` None: plain; else routed with each row's
    estimates of every tier, as the engine's `route` decides). A tier stops the cascade when
    its recorded score reaches its threshold; the last tier asked that answered is kept."""
    k = len(thresholds)
    v, w = float(values.good_draft), float(values.wait_per_second)
    total = good = cost = 0.0
    asked, skipped = [0.0] * k, [0.0] * k
    for r, row in enumerate(rows):
        spent = waited = 0.0
        kept = k - 1
        for i in range(k):
            if estimates is not None and i < k - 1:
                decision = route(estimates[r][i:], values=values)
                if decision.skip:
                    skipped[i] += 1
                    continue
            asked[i] += 1
            spent += row.costs[i]
            waited += row.latency_s[i]
            if i == k - 1 or Decimal(f"{row.scores[i]:.4f}") >= thresholds[i]:
                kept = i
                break
        quality = 1.0 if row.labels[kept] == GOOD else 0.0
        good += quality
        cost += spent
        total += quality * v - spent - waited * w
    n = max(len(rows), 1)
    return Simulated(
        value=total / n,
        good=good / n,
        cost=cost / n,
        asked=[a / n for a in asked],
        skipped=[s / n for s in skipped],
    )


def _held_out(
    X: npt.NDArray[np.float64],
    rows: list[RouterRow],
    tiers: Sequence[CascadeTier],
    *,
    intents: list[int],
    values: RouteValues,
) -> tuple[list[RouterRow], list[list[TierEstimate]]]:
    """Out-of-fold estimates for the complete rows: each fold's from models fitted on every
    other labelled row (the non-explored drafts included)."""
    complete = [r for r, row in enumerate(rows) if row.complete]
    order = np.random.default_rng(SEED).permutation(len(complete))
    folds = np.array_split(np.asarray(complete)[order], min(HELD_OUT_FOLDS, len(complete)))
    positions = [t.position for t in tiers]
    estimates: dict[int, list[TierEstimate]] = {}
    for fold in folds:
        held = set(fold.tolist())
        train = [r for r in range(len(rows)) if r not in held]
        model = _fit(X[train], [rows[r] for r in train], tiers, intents=intents, values=values)
        for r, row_estimates in zip(
            fold.tolist(), model.estimates(X[fold], positions), strict=True
        ):
            estimates[r] = row_estimates
    return [rows[r] for r in complete], [estimates[r] for r in complete]


@dataclass(frozen=True)
class RouterTraining:
    """What a training run did (like drafting.learning.scorer.ScorerTraining)."""

    policy_id: int
    explored: int
    labelled: int
    classifier: TrainedClassifier | None = None
    activated: bool = False
    reason: str = ""

    @property
    def message(self) -> str:
        counts = f"{self.explored} explored / {self.labelled} labelled drafts"
        if self.classifier is None:
            return f"policy {self.policy_id}: router not trained ({counts}): {self.reason}"
        metrics = self.classifier.metrics
        compared = (
            f"held-out value per draft ${metrics.get('routed_value_usd')} routed vs "
            f"${metrics.get('plain_value_usd')} plain"
        )
        state = "active" if self.activated else f"stored, not active: {self.reason}"
        return f"policy {self.policy_id}: router v{self.classifier.version} ({counts}, {compared}) {state}"


def _store(
    *,
    policy: CascadePolicy,
    model: RouterModel,
    embedding_model: str,
    n_train: int,
    metrics: dict[str, Any],
    activate: bool,
    trained_by: User | None,
) -> TrainedClassifier:
    """The policy's next router version (drafting.learning.classifiers.classifier_store's
    rules: the policy's row serialises trainings; an activated version replaces the active)."""
    with transaction.atomic():
        CascadePolicy.objects.select_for_update().filter(pk=policy.pk).first()
        owned = TrainedClassifier.objects.filter(kind=ROUTER, policy=policy)
        version = (owned.aggregate(top=Max("version"))["top"] or 0) + 1
        if activate:
            owned.filter(active=True).update(active=False)
        plrs = [t.plr for t in model.tiers if t.plr is not None]
        return TrainedClassifier.objects.create(
            kind=ROUTER,
            policy=policy,
            version=version,
            active=activate,
            embedding_model=embedding_model,
            features=FEATURES[:200],
            penalty=plrs[0].penalty if plrs else "l2",
            strength_c=plrs[0].C if plrs else 1.0,
            n_train=n_train,
            metrics=metrics,
            model_blob=model.to_bytes(),
            trained_by=trained_by,
        )


def router_train(*, policy: CascadePolicy, trained_by: User | None = None) -> RouterTraining:
    """Train a new router version for `policy` and put it in force only if it beats the plain
    cascade on held-out drafts.

    Steps: the policy's enabled tiers (two or more: one tier leaves nothing to route); the
    labelled rows (`router_rows`); stop below MIN_EXPLORED complete rows or without an
    embedder; embed the messages; simulate plain and routed on out-of-fold estimates; fit on
    every row; store with the comparison in its metrics, active when routed > plain."""
    tiers = list(
        CascadeTier.objects.filter(policy=policy, endpoint__enabled=True).order_by("position")
    )
    rows = (
        router_rows(policy=policy, tiers=tiers, limit=settings.SCORER_MAX_LABELS)
        if len(tiers) >= 2
        else []
    )
    explored = sum(row.complete for row in rows)
    reason = ""
    if len(tiers) < 2:
        reason = "the policy has fewer than two enabled tiers"
    elif explored < MIN_EXPLORED:
        reason = f"{explored} drafts with every tier's answer, {MIN_EXPLORED} needed"
    using: Embedder | None = None
    if not reason:
        using, reason = training_embedder()
    if reason or using is None:
        logger.info("router for policy %s not trained: %s", policy.pk, reason)
        return RouterTraining(policy.pk, explored, len(rows), reason=reason)
    try:
        texts = sorted({row.text for row in rows})
        index = {text: i for i, text in enumerate(texts)}
        vectors = using.embed(texts)[[index[row.text] for row in rows]]
    except EmbeddingError as exc:
        reason = f"embedding failed: {exc}"
        logger.warning("router for policy %s not trained: %s", policy.pk, reason)
        return RouterTraining(policy.pk, explored, len(rows), reason=reason)
    intents = sorted({r.signals.intent_id for r in rows if r.signals.intent_id is not None})
    X = route_features(vectors, [r.signals for r in rows], intents=intents)
    values = route_values(policy.team_id)
    thresholds = [t.threshold for t in tiers]
    held_rows, held_estimates = _held_out(X, rows, tiers, intents=intents, values=values)
    plain = simulate(held_rows, thresholds, values, None)
    routed = simulate(held_rows, thresholds, values, held_estimates)
    model = _fit(X, rows, tiers, intents=intents, values=values)
    beats = routed.value > plain.value
    reason = (
        ""
        if beats
        else f"held-out value per draft ${routed.value:.6f} routed, not above ${plain.value:.6f} plain"
    )
    metrics: dict[str, Any] = {
        "evaluated": f"{len(held_rows)} explored drafts, "
        f"{min(HELD_OUT_FOLDS, len(held_rows))}-fold out-of-fold",
        "explored": explored,
        "labelled": len(rows),
        "plain_value_usd": round(plain.value, 6),
        "routed_value_usd": round(routed.value, 6),
        "plain_good": round(plain.good, 4),
        "routed_good": round(routed.good, 4),
        "plain_cost_usd": round(plain.cost, 8),
        "routed_cost_usd": round(routed.cost, 8),
        "routed_skip_share": [round(s, 4) for s in routed.skipped],
        "routed_ask_share": [round(s, 4) for s in routed.asked],
        "good_draft_usd": str(values.good_draft),
        "wait_per_second_usd": str(values.wait_per_second),
        "tiers": [
            {
                "position": t.position,
                "endpoint": t.endpoint_id,
                "labels": t.n_labels,
                "base_rate": round(t.base_rate, 4),
                "auc": t.plr.metrics.get("auc") if t.plr is not None else None,
                "cost_usd": str(t.cost),
                "latency_s": round(t.latency_s, 3),
            }
            for t in model.tiers
        ],
    }
    if reason:
        metrics["not_activated"] = reason
    model.metrics = metrics
    classifier = _store(
        policy=policy,
        model=model,
        embedding_model=using.name,
        n_train=len(rows),
        metrics=metrics,
        activate=beats,
        trained_by=trained_by,
    )
    outcome = RouterTraining(
        policy.pk, explored, len(rows), classifier=classifier, activated=beats, reason=reason
    )
    logger.info("%s", outcome.message)
    return outcome


def routers_retrain() -> list[RouterTraining]:
    """The scheduled retrain: every active policy with routing on and agent actions newer than
    its latest router version."""
    newest = (
        TrainedClassifier.objects.filter(kind=ROUTER, policy_id=OuterRef("pk"))
        .order_by("-trained_at")
        .values("trained_at")[:1]
    )
    outcomes = []
    for policy in CascadePolicy.objects.filter(active=True, routing=True).annotate(
        last=Subquery(newest)
    ):
        fresh = AgentAction.objects.filter(draft__policy_id=policy.pk)
        if policy.last is not None:
            fresh = fresh.filter(acted_at__gt=policy.last)
        if fresh.exists():
            outcomes.append(router_train(policy=policy))
    return outcomes


# --- Serving ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    classifier_id: int
    embedding_model: str
    model: RouterModel


class ActiveRouters:
    """Each policy's active router while its routing switch is on, unpickled once per process
    (drafting.learning.classifiers.ActiveClassifiers' rules: which version is in force is
    asked at most every few seconds, at once after a save in this process)."""

    def __init__(self) -> None:
        self._active: Memo[int, tuple[int, str] | None] = Memo(
            depends_on=(TrainedClassifier, CascadePolicy)
        )
        self._loaded: dict[int, _Loaded] = {}
        self._lock = threading.Lock()

    def get(self, policy_id: int) -> _Loaded | None:
        row = self._active.get(
            policy_id,
            lambda: (
                TrainedClassifier.objects.filter(
                    kind=ROUTER, active=True, policy_id=policy_id, policy__routing=True
                )
                .values_list("pk", "embedding_model")
                .first()
            ),
        )
        if row is None:
            return None
        with self._lock:
            loaded = self._loaded.get(policy_id)
        if loaded is not None and loaded.classifier_id == row[0]:
            return loaded
        blob = (
            TrainedClassifier.objects.filter(pk=row[0]).values_list("model_blob", flat=True).first()
        )
        if blob is None:
            return None
        loaded = _Loaded(row[0], row[1], RouterModel.from_bytes(blob))
        with self._lock:
            self._loaded[policy_id] = loaded
        return loaded

    def clear(self) -> None:
        self._active.clear()
        with self._lock:
            self._loaded.clear()


active_routers = ActiveRouters()


def policy_router(
    *,
    policy_id: int,
    tiers: Sequence[CascadeTier],
    query: QueryVector,
    signals: RouteSignals,
) -> LearnedRouter | None:
    """The router in force for this message, or None (the plain cascade): no active router,
    the policy's routing switch off, fewer than two tiers, a tier the router does not know,
    or the message not embedded by the router's embedder. The message is embedded (once, shared
    with the cache and the few-shot search) only when a router is in force."""
    if len(tiers) < 2:
        return None
    loaded = active_routers.get(policy_id)
    if loaded is None:
        return None
    if not loaded.model.covers(tiers):
        logger.warning(
            "router %s does not know the policy's tiers now: plain cascade", loaded.classifier_id
        )
        return None
    embedded = query.get()
    if embedded is None or embedded[0] != loaded.embedding_model:
        logger.warning(
            "router %s was trained on %s vectors, the message has %s: plain cascade",
            loaded.classifier_id,
            loaded.embedding_model,
            embedded[0] if embedded else "none",
        )
        return None
    row = route_features(embedded[1], [signals], intents=loaded.model.intents)
    return LearnedRouter(router_id=loaded.classifier_id, model=loaded.model, row=row[0])
