"""Feature rows of the learned knowledge models: the needs-knowledge detector's per turn, the
passage re-ranker's per (turn, candidate chunk). Pure numpy; the learning layer
(drafting.learning.knowledge) fits and serves the models on exactly these rows, in training and
in the draft path alike (one function each, so the two can never drift apart).

The method and its measurements are docs/performance.md "Knowledge: DSTC11 track 5" (the
research behind it: DSTC11 track 5's hotels and restaurants, ≤ 100 labelled turns, MiniLM).

Detector (`detector_row`): the turn's embedding (384) and seven cheap signals: the best and
the mean of the five best similarities of the stripped turn to any chunk of the team, a
question mark, length (words / 20), an article named in the thread, an article named in the
turn, a digit.

Re-ranker (`rerank_rows`): for every candidate c of the focus articles, with q the stripped
question's vector, t the turn's own, g the team's "aspect" (the normalised centroid of the
TEAM_NEAREST chunks nearest to q, whatever their article) and e the exemplars' centroid (the
gold chunks of the labelled turns nearest to q):
- similarity: cos(q, c), cos(t, c), cos − the best, its z-score among the candidates,
  log(1 + rank);
- text: ts_rank_cd of the OR of the question's lexemes, log(1 + its rank), matched or not,
  60 × reciprocal rank fusion of the vector and text orders (k = 60);
- question-like chunk (an FAQ: it contains "?"), × cos, × (cos − best);
- pseudo-relevance feedback: cos(c, centroid of the five nearest candidates) and cos(c, g),
  each also minus its best;
- the chunk's article's place among the focus articles, how many there are, whether the turn
  itself names it;
- exemplars (`Exemplars`): cos(c, e) and minus its best, the best cos(c, any of their gold
  chunks) and minus its best, the nearest labelled question's similarity, and cos(c, e) × that;
- the element-wise products c ⊙ q, c ⊙ g, c ⊙ e (3 × the dimension): a learned weighting of
  what a match on each dimension is worth, the largest single gain of the research.

Left out for their serving cost (each measured at ≤ 0.01 of selection F1 on the research's
dev split, together 0.008): per-word embeddings of the question (an embedding call per word),
IDF-weighted lexeme overlap (the team's document frequencies), the neighbouring sentence's
similarity, and the word-vector aspect.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drafting.engine.retrieval import Candidates

Array = npt.NDArray[np.float32]

# How many of the team's nearest chunks' similarities the detector averages.
DETECTOR_TOP = 5
# How many candidates' centroid is the in-article pseudo-relevance feedback.
PRF_TOP = 5
# How many labelled turns nearest to the question lend their gold chunks (the research: 3 and
# 10 scored alike).
EXEMPLARS_NEAREST = 3
# Reciprocal rank fusion's constant (as drafting.engine.retrieval).
RRF_K = 60

DETECTOR_SIGNALS = (
    "best_similarity",
    "top5_similarity",
    "question_mark",
    "words_20",
    "article_in_thread",
    "article_in_turn",
    "digit",
)
RERANK_SIGNALS = (
    "cos",
    "cos_turn",
    "cos_rel",
    "cos_z",
    "log_rank",
    "text_rank",
    "text_log_rank",
    "text_hit",
    "rrf",
    "question_like",
    "question_like_cos",
    "question_like_rel",
    "prf",
    "prf_rel",
    "aspect",
    "aspect_rel",
    "article_place",
    "articles",
    "article_in_turn",
    "ex_centroid",
    "ex_centroid_rel",
    "ex_max",
    "ex_max_rel",
    "ex_question_similarity",
    "ex_centroid_x_similarity",
)

_DIGIT = re.compile(r"\d")


def _unit(vector: npt.NDArray[np.floating]) -> Array:
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > 0 else vector).astype(np.float32)


def detector_row(
    *,
    text: str,
    vector: Array,
    nearest: Array | None,
    named_in_thread: bool,
    named_in_turn: bool,
) -> Array:
    """The detector's feature row for a customer turn: its embedding `vector`, then
    DETECTOR_SIGNALS; `nearest` is the similarities of the team's chunks nearest to the
    stripped turn, best first (None or empty: no chunk embedded, both 0)."""
    top = np.zeros(0, dtype=np.float32) if nearest is None else nearest[:DETECTOR_TOP]
    signals = [
        float(top[0]) if len(top) else 0.0,
        float(top.mean()) if len(top) else 0.0,
        float("?" in text),
        len(text.split()) / 20,
        float(named_in_thread),
        float(named_in_turn),
        float(bool(_DIGIT.search(text))),
    ]
    return np.concatenate([np.asarray(vector, dtype=np.float32), np.asarray(signals, np.float32)])


@dataclass(frozen=True)
class Exemplars:
    """The labelled knowledge turns a re-ranker was trained on: their stripped questions'
    vectors (one row each) and their gold chunks' vectors (`gold[i]`: rows of turn i)."""

    questions: Array
    gold: tuple[Array, ...]

    def __post_init__(self) -> None:
        if len(self.questions) != len(self.gold):
            raise ValueError(f"{len(self.questions)} questions for {len(self.gold)} gold sets")

    @property
    def centroids(self) -> Array:
        return np.stack([_unit(g.mean(axis=0)) for g in self.gold])

    def nearest(self, vector: Array, *, leave_out: int | None = None) -> tuple[list[int], Array]:
        """The EXEMPLARS_NEAREST turns nearest to `vector` (one left out: a training turn is
        not its own exemplar), and their similarities."""
        similarities = self.questions @ vector
        if leave_out is not None:
            similarities = similarities.copy()
            similarities[leave_out] = -np.inf
        order = [int(i) for i in np.argsort(-similarities) if np.isfinite(similarities[i])]
        chosen = order[:EXEMPLARS_NEAREST]
        return chosen, similarities[chosen]


def _rel(values: Array) -> Array:
    return values - values.max()


def _ranks(scores: Array) -> Array:
    """0-based rank of each score, highest first (ties in input order)."""
    ranks = np.empty(len(scores), dtype=np.float32)
    ranks[np.argsort(-scores, kind="stable")] = np.arange(len(scores), dtype=np.float32)
    return ranks


def rerank_rows(
    candidates: Candidates, exemplars: Exemplars | None, *, leave_out: int | None = None
) -> Array:
    """One feature row per candidate passage (RERANK_SIGNALS, then c ⊙ q, c ⊙ g, c ⊙ e); see
    the module docstring. `leave_out` is the exemplar that is the turn itself (training)."""
    C = candidates.vectors
    n, dims = C.shape
    if n == 0:
        return np.zeros((0, len(RERANK_SIGNALS) + 3 * dims), dtype=np.float32)
    q = candidates.vector
    cos = C @ q
    turn = candidates.turn_vector
    cos_turn = C @ turn if turn is not None else cos
    rank = _ranks(cos)
    text = np.asarray([p.text_rank or 0.0 for p in candidates.passages], dtype=np.float32)
    text_rank = _ranks(text)
    hit = text > 0
    # Fusion of the vector order and the text order (only matching chunks are in the latter).
    rrf = 1.0 / (RRF_K + rank + 1) + np.where(hit, 1.0 / (RRF_K + text_rank + 1), 0.0)
    question_like = np.asarray(["?" in p.text for p in candidates.passages], dtype=np.float32)
    prf = C @ _unit(C[np.argsort(-cos)[:PRF_TOP]].mean(axis=0))
    aspect = _unit(candidates.team_vectors.mean(axis=0)) if len(candidates.team_vectors) else q
    gp = C @ aspect
    place = {article_id: i for i, article_id in enumerate(candidates.focus)}
    article_place = np.asarray(
        [place.get(p.article_id, 0) for p in candidates.passages], dtype=np.float32
    )
    in_turn = np.asarray(
        [p.article_id in candidates.named_in_query for p in candidates.passages],
        dtype=np.float32,
    )
    if exemplars is not None and len(exemplars.questions) > (leave_out is not None):
        chosen, similarities = exemplars.nearest(q, leave_out=leave_out)
        weights = np.maximum(similarities, 0) + 1e-6
        centroids = exemplars.centroids[chosen]
        e = _unit((weights[:, None] * centroids).sum(axis=0))
        golds = np.vstack([exemplars.gold[i] for i in chosen])
        ex_centroid = C @ e
        ex_max = (C @ golds.T).max(axis=1)
        ex_similarity = np.full(n, float(similarities[0]), dtype=np.float32)
    else:
        e = np.zeros(dims, dtype=np.float32)
        ex_centroid = ex_max = ex_similarity = np.zeros(n, dtype=np.float32)
    signals = np.column_stack(
        [
            cos,
            cos_turn,
            _rel(cos),
            (cos - cos.mean()) / (cos.std() + 1e-6),
            np.log1p(rank),
            text,
            np.log1p(text_rank),
            hit.astype(np.float32),
            rrf * RRF_K,
            question_like,
            question_like * cos,
            question_like * _rel(cos),
            prf,
            _rel(prf),
            gp,
            _rel(gp),
            article_place,
            np.full(n, len(candidates.focus), dtype=np.float32),
            in_turn,
            ex_centroid,
            _rel(ex_centroid),
            ex_max,
            _rel(ex_max),
            ex_similarity,
            ex_centroid * ex_similarity,
        ]
    ).astype(np.float32)
    return np.hstack([signals, C * q, C * aspect, C * e]).astype(np.float32)


def keep(
    probabilities: Sequence[float] | npt.NDArray[np.floating], *, threshold: float
) -> list[int]:
    """The candidates to keep, best first: those with P ≥ `threshold`, at least the best one
    (a turn that needs knowledge gets a passage whenever there is one)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) == 0:
        return []
    order = [int(i) for i in np.argsort(-p, kind="stable")]
    return [i for i in order if p[i] >= threshold] or order[:1]
