"""Benchmark of the learned cascade scorer: training, scoring and the embeddings under them.

    .venv/bin/python bench/learning.py [--drafts 1000] [--single 100] [--seed 0]

Steps (no database: the scorer's own code, with Django settings loaded):
- embedding throughput of the in-process MiniLM embedder (EMBEDDING_THREADS threads): one text
  per call (texts/s, p50 ms) and one batch of every text of the labelled drafts (texts/s);
- features of `--drafts` labelled drafts (customer turn and draft embedded, cheap signals;
  drafting.learning.scorer.scorer_features), timed apart;
- training time: `drafting.learning.plr.train_plr` alone on those pre-computed features (target ≤ 5 s
  for 1,000 drafts), with the model's out-of-fold metrics;
- scoring latency per draft without embedding: `LearnedScorer.judge` on an embedder that
  returns pre-computed vectors (feature row, default scorer, prediction; target p50 ≤ 5 ms),
  then with MiniLM embedding the two texts for comparison, and one escalation explanation
  (occlusion: the draft's words left out one at a time, one embedding batch);
- embedding throughput of the vLLM embedding server (SmolLM2-135M pooled, over HTTP) on the
  same texts, when it answers (`manage.py local_llm serve --embed --background`).

The drafts are synthetic: a customer question and a draft that answers it specifically (used)
or vaguely (ignored, rewritten), with 10 % of labels flipped as agents are not consistent.
Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "Where is my refund for order {n}?",
    "My card ending {n} has not arrived yet, what should I do?",
    "How do I change the address on account {n}?",
    "I was charged twice for order {n}.",
    "Can I cancel subscription {n} today?",
    "Why was my transfer of {n} dollars declined?",
    "How long does delivery to {place} take?",
    "I forgot my password and cannot log in since {n} days.",
    "The app crashes when I open my statement from {place}.",
    "Is there a fee for paying in {place}?",
]
GOOD = [
    "Thanks for reaching out! I have issued your refund today; it reaches you within {n} "
    "business days.",
    "Sorry for the wait. Your new card was posted and should arrive within {n} days; tracking "
    "is in your account.",
    "I have updated your address. A confirmation e-mail follows in {n} minutes.",
    "You were charged twice: I reversed the duplicate charge, it disappears within {n} days.",
    "Done: the subscription is cancelled and you will not be billed again.",
    "Delivery to {place} takes {n} working days; you can follow it in the app.",
    "I have reset your login. Use the link we just e-mailed you within {n} hours.",
    "Payments in {place} are free for the first {n} transactions each month.",
]
BAD = [
    "I am not sure about that. Maybe try again later?",
    "Hmm, I don't really know. You could ask someone else perhaps.",
    "As an assistant I cannot say. Please check the website or wait {n} weeks.",
    "That is a good question! Unfortunately I have no idea about {place}.",
    "Not sure. Possibly it will sort itself out eventually.",
    "I cannot help with this, sorry. Try contacting somebody in {place}.",
]
PLACES = ["Canada", "Mexico", "Spain", "Japan", "Kenya", "Brazil", "Norway", "Peru"]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csbot.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
    os.environ.setdefault("DATABASE_URL", "postgres://csbot:csbot@127.0.0.1:5433/csbot")
    import django

    django.setup()


def synthetic(n: int, seed: int) -> list[Any]:
    from drafting.learning.scorer import LabelledDraft

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = i % 2 == 0
        fill = {"n": rng.randint(2, 999), "place": rng.choice(PLACES)}
        label = "1" if good else "0"
        if rng.random() < 0.1:
            label = "0" if good else "1"
        rows.append(
            LabelledDraft(
                customer_text=rng.choice(QUESTIONS).format(**fill),
                draft_text=rng.choice(GOOD if good else BAD).format(**fill),
                label=label,
                tier=rng.choice([1, 1, 1, 2]),
                default_score=round(rng.uniform(0.3, 0.99), 4),
            )
        )
    return rows


class Precomputed:
    """An embedder that answers from vectors computed beforehand: scoring without the model."""

    def __init__(self, name: str, vectors: dict[str, Any]):
        self.name = name
        self._vectors = vectors

    def embed(self, texts: Sequence[str]) -> Any:
        import numpy as np

        return np.stack([self._vectors[text] for text in texts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drafts", type=int, default=1000)
    parser.add_argument("--single", type=int, default=100, help="texts embedded one at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--vllm-texts",
        type=int,
        default=256,
        help="texts for the vLLM embedding server's throughput (0: skip it)",
    )
    args = parser.parse_args()
    setup_django()

    from django.conf import settings

    from drafting.engine.embeddings import MiniLMEmbedder
    from drafting.engine.providers import Completion
    from drafting.engine.scoring import ScoringContext
    from drafting.learning.plr import train_plr
    from drafting.learning.scorer import LearnedScorer, scorer_features

    rows = synthetic(args.drafts, args.seed)
    minilm = MiniLMEmbedder()
    started = time.perf_counter()
    minilm.embed(["warm-up"])
    load_s = time.perf_counter() - started
    log(f"MiniLM loaded in {load_s:.1f} s")

    texts = sorted({t for r in rows for t in (r.customer_text, r.draft_text)})
    single = []
    for text in texts[: args.single]:
        t0 = time.perf_counter()
        minilm.embed([text])
        single.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    vectors = minilm.embed(texts)
    batch_s = time.perf_counter() - t0
    log(f"embedded {len(texts)} texts in one batch in {batch_s:.1f} s")

    lookup = Precomputed(minilm.name, dict(zip(texts, vectors, strict=True)))
    t0 = time.perf_counter()
    features = scorer_features(rows, using=lookup)
    features_s = time.perf_counter() - t0
    labels = [r.label for r in rows]

    t0 = time.perf_counter()
    model = train_plr(features, labels)
    train_s = time.perf_counter() - t0
    log(f"trained on {len(rows)} drafts in {train_s:.2f} s, C={model.C}")
    blob = model.to_bytes()

    scorer = LearnedScorer(classifier_id=1, model=model, embedder=lookup)
    sample = rows[:200]
    completions = [
        Completion(
            text=r.draft_text,
            tokens_in=100,
            tokens_out=30,
            latency_ms=0,
            model="bench",
            finish_reason="stop",
            token_logprobs=[-0.1] * 10,
        )
        for r in sample
    ]
    contexts = [ScoringContext(customer_text=r.customer_text, tier=r.tier) for r in sample]
    for context, completion in zip(contexts[:10], completions[:10], strict=True):
        scorer.judge(context=context, completion=completion)  # warm-up
    without = []
    for context, completion in zip(contexts, completions, strict=True):
        t0 = time.perf_counter()
        scorer.judge(context=context, completion=completion)
        without.append((time.perf_counter() - t0) * 1000)
    # With the model embedding both texts (fresh texts: MiniLM has no cache of its own).
    live = LearnedScorer(classifier_id=1, model=model, embedder=minilm)
    with_embedding = []
    for context, completion in zip(contexts[:50], completions[:50], strict=True):
        t0 = time.perf_counter()
        live.judge(context=context, completion=completion)
        with_embedding.append((time.perf_counter() - t0) * 1000)
    explain_ms = []
    for context, completion in zip(contexts[:10], completions[:10], strict=True):
        verdict = live.judge(context=context, completion=completion)
        t0 = time.perf_counter()
        live.explain(verdict=verdict, context=context, completion=completion)
        explain_ms.append((time.perf_counter() - t0) * 1000)

    result = {
        "drafts": len(rows),
        "features": features.shape[1],
        "embedding_threads": settings.EMBEDDING_THREADS,
        "cpu_count": os.cpu_count(),
        "training": {
            "train_plr_s": round(train_s, 3),
            "target_s": 5.0,
            "features_from_precomputed_vectors_s": round(features_s, 3),
            "C": model.C,
            "calibrated": model.calibrated,
            "model_bytes": len(blob),
            "metrics": model.metrics,
        },
        "scoring_ms_without_embedding": {
            "p50": percentile(without, 0.5),
            "p95": percentile(without, 0.95),
            "target_p50": 5.0,
            "n": len(without),
        },
        "scoring_ms_with_minilm": {
            "p50": percentile(with_embedding, 0.5),
            "p95": percentile(with_embedding, 0.95),
            "n": len(with_embedding),
        },
        "explanation_ms_with_minilm": {
            "p50": percentile(explain_ms, 0.5),
            "max": round(max(explain_ms), 1),
            "words_p50": statistics.median(len(c.text.split()) for c in completions[:10]),
        },
        "minilm": {
            "load_s": round(load_s, 2),
            "single_texts_per_s": round(1000 / statistics.median(single), 1),
            "single_ms_p50": percentile(single, 0.5),
            "batch_texts_per_s": round(len(texts) / batch_s, 1),
            "batch_size": len(texts),
        },
    }
    if args.vllm_texts:
        result["vllm"] = vllm_throughput(texts[: args.vllm_texts], single=args.single)
    print(json.dumps(result, indent=2))


def vllm_throughput(texts: Sequence[str], *, single: int) -> dict[str, Any]:
    """The other back end: SmolLM2 on the local vLLM embedding server, over HTTP, the same
    texts (one at a time, then in the embedder's batches). Needs the server:
    `manage.py local_llm serve --embed --background` (make bench-learning starts it)."""
    from drafting.engine.embeddings import EmbeddingError, vllm_embedder

    server = vllm_embedder()
    try:
        server.embed(["warm-up"])
        times = []
        for text in texts[:single]:
            t0 = time.perf_counter()
            server.embed([text])
            times.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        server.embed(list(texts))
        batch_s = time.perf_counter() - t0
    except EmbeddingError as error:
        log(f"vLLM embedding server unavailable: {error}")
        return {"error": str(error), "url": server.base_url}
    log(f"vLLM: embedded {len(texts)} texts in {batch_s:.1f} s")
    return {
        "model": server.name,
        "url": server.base_url,
        "single_texts_per_s": round(1000 / statistics.median(times), 1),
        "single_ms_p50": percentile(times, 0.5),
        "batch_texts_per_s": round(len(texts) / batch_s, 1),
        "batch_size": server.batch_size,
        "texts": len(texts),
    }


if __name__ == "__main__":
    main()
