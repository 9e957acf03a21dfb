"""Nearest-neighbour search over stored embeddings, without a vector database.

The semantic cache and the few-shot search compare one customer message with a team's stored
vectors. Reading every vector from the database for every draft would cost more than the rest
of the draft's orchestration, so each process keeps a copy per (table, team, embedder) in
memory: each search first reads only the rows added since (ids above the last one seen), and the
copy is rebuilt from scratch every `rebuild_seconds` so deleted and expired rows drop out.
Callers re-read the rows they pick from the database, which is the truth: a candidate deleted or
expired since the last rebuild is simply skipped.

Exact search (a matrix-vector product) is plenty at support-team scale: 20 000 vectors of 384
floats take well under a millisecond.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drafting.engine.embeddings import EmbeddingError, Vectors, embedder, from_bytes

logger = logging.getLogger(__name__)

# (team id, embedder name, after this id) → (id, vector bytes) rows in id order.
RowLoader = Callable[[int, str, int], Iterable[tuple[int, Any]]]


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


@dataclass
class _Copy:
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    last_id: int = 0
    built_at: float = 0.0


class VectorIndex:
    def __init__(self, load: RowLoader, *, max_rows: int = 20_000, rebuild_seconds: float = 60):
        self.load = load
        self.max_rows = max_rows
        self.rebuild_seconds = rebuild_seconds
        self._copies: dict[tuple[int, str], _Copy] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._copies.clear()

    def search(
        self, *, team_id: int, model: str, vector: Vectors, k: int, min_similarity: float
    ) -> list[tuple[int, float]]:
        """Up to `k` (id, cosine similarity) pairs at or above `min_similarity`, best first."""
        copy = self._refreshed(team_id, model)
        if not len(copy.ids) or copy.vectors.shape[1] != vector.shape[0]:
            return []
        similarities = copy.vectors @ vector
        order = np.argsort(-similarities)[:k]
        return [
            (int(copy.ids[i]), float(similarities[i]))
            for i in order
            if similarities[i] >= min_similarity
        ]

    def _refreshed(self, team_id: int, model: str) -> _Copy:
        key = (team_id, model)
        with self._lock:
            copy = self._copies.get(key)
            if copy is None or time.monotonic() - copy.built_at > self.rebuild_seconds:
                copy = _Copy(built_at=time.monotonic())
            rows = list(self.load(team_id, model, copy.last_id))
            if rows:
                ids = np.array([pk for pk, _ in rows], dtype=np.int64)
                vectors = np.stack([from_bytes(blob) for _, blob in rows])
                if copy.vectors.size:
                    ids = np.concatenate([copy.ids, ids])
                    vectors = np.vstack([copy.vectors, vectors])
                copy.ids, copy.vectors = ids[-self.max_rows :], vectors[-self.max_rows :]
                copy.last_id = int(ids[-1])
            self._copies[key] = copy
            return copy
