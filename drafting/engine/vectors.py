"""Similar-message search in PostgreSQL (pgvector): the semantic cache and few-shot examples.

The database is the truth and the index: a reply one worker process stores is found by every
other process at its next query, and a team keeps all of its history searchable. A search is
one SQL statement that filters by team (and whatever else the caller's queryset says), by the
embedder's name and dimension — vectors of different models are never compared — and orders by
cosine distance on the same expression as the per-dimension HNSW indexes
(drafting.models.vector_indexes), with pgvector's iterative scans (csbot.settings) so the filter
does not starve the result. For a small team the planner may prefer scanning that team's rows
(a btree on team and embedder): exact, and cheap at that size.

Changing the embedder (EMBEDDING_BACKEND) leaves the stored vectors as they are: `reembed`
embeds them again in the background (a beat task, or `manage.py reembed` with progress), and
until a row is done it is simply not found.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import models, transaction
from django.db.models.functions import Cast
from django.utils import timezone
from pgvector.django import CosineDistance, VectorField

from drafting.engine.embeddings import EmbeddingError, Vectors, embedder
from drafting.models import CachedReply, ReplyExample

logger = logging.getLogger(__name__)

Row = TypeVar("Row", bound=models.Model)


class QueryVector:
    """A customer message's embedding, computed at most once and only when a search needs it.
    `get()` is None when embeddings are off or the embedder failed (logged): the semantic
    cache and few-shot examples are then skipped, the draft goes on."""

    def __init__(self, text: str):
        self.text = text
        self._done = False
        self._value: tuple[str, Vectors] | None = None
        self.embed_ms = 0

    def get(self) -> tuple[str, Vectors] | None:
        if not self._done:
            self._done = True
            started = time.monotonic()
            try:
                model = embedder()
                if model is not None:
                    self._value = (model.name, model.embed([self.text])[0])
            except EmbeddingError as exc:
                logger.warning("embedding failed, going on without: %s", exc)
            self.embed_ms = int((time.monotonic() - started) * 1000)
        return self._value


def vector_fields(model: str, vector: Vectors) -> dict[str, object]:
    """The columns a stored vector is written with: itself, its embedder and its dimension."""
    return {
        "embedding": vector,
        "embedding_model": model,
        "embedding_dimensions": int(vector.shape[0]),
    }


def nearest(
    rows: models.QuerySet[Row], *, model: str, vector: Vectors, k: int, min_similarity: float
) -> list[tuple[Row, float]]:
    """Up to `k` of `rows` (already filtered by team) embedded by `model`, nearest to `vector`
    by cosine, with their similarity, best first; those under `min_similarity` dropped. One
    query. The threshold is applied here, not in SQL: a WHERE on the distance would make a miss
    walk the whole index looking for rows that pass it."""
    dimensions = int(vector.shape[0])
    found = (
        rows.filter(embedding_model=model, embedding_dimensions=dimensions)
        # The stored vectors stay in the database: sending and parsing k of them back cost
        # more than the search (bench/cascade.py).
        .defer("embedding")
        .annotate(
            vector_distance=CosineDistance(
                Cast("embedding", VectorField(dimensions=dimensions)), vector
            )
        )
        .order_by("vector_distance")[:k]
    )
    # Iterative scans in relaxed order may return near-ties slightly out of order.
    scored = sorted(
        ((row, 1.0 - float(row.vector_distance)) for row in found),
        key=lambda pair: -pair[1],
    )
    return [(row, similarity) for row, similarity in scored if similarity >= min_similarity]


@dataclass
class ReembedProgress:
    model: str
    total: int
    done: int = 0
    failed: bool = False


def _stale(model_class: type[models.Model], name: str) -> models.QuerySet[Any]:
    """Rows whose vector is not the current embedder's (or missing): expired cache entries
    are left alone, nothing serves them."""
    rows = model_class._default_manager.exclude(embedding_model=name)
    if model_class is CachedReply:
        rows = rows.filter(expires_at__gt=timezone.now())
    return rows


def stale_vector_count() -> int:
    """How many live vectors the configured embedder did not make (0 without an embedder)."""
    model = embedder()
    if model is None:
        return 0
    return sum(_stale(cls, model.name).count() for cls in (CachedReply, ReplyExample))


def reembed(
    *,
    batch_size: int = 64,
    limit: int | None = None,
    progress: Callable[[ReembedProgress], None] | None = None,
) -> ReembedProgress:
    """Embed again, with the configured embedder, every stored question another embedder (or
    none) made, `batch_size` rows at a time, at most `limit` rows. Until a row is done the
    searches skip it (they only compare the current embedder's vectors), so drafting goes on
    meanwhile. Two runs at once share the work: each batch locks its rows and skips locked
    ones."""
    model = embedder()
    if model is None:
        return ReembedProgress(model="", total=0)
    state = ReembedProgress(model=model.name, total=stale_vector_count())
    if limit is not None:
        state.total = min(state.total, limit)
    for model_class in (CachedReply, ReplyExample):
        while limit is None or state.done < limit:
            size = batch_size if limit is None else min(batch_size, limit - state.done)
            with transaction.atomic():
                rows = list(
                    _stale(model_class, model.name)
                    .select_for_update(skip_locked=True)
                    .order_by("pk")
                    .only("pk", "customer_text")[:size]
                )
                if not rows:
                    break
                try:
                    vectors = model.embed([row.customer_text for row in rows])
                except EmbeddingError as exc:
                    logger.warning("re-embedding stopped: %s", exc)
                    state.failed = True
                    return state
                for row, vector in zip(rows, vectors, strict=True):
                    model_class._default_manager.filter(pk=row.pk).update(
                        **vector_fields(model.name, vector)
                    )
            state.done += len(rows)
            if progress is not None:
                progress(state)
    return state
