"""Cascade replay: learn a scorer and a cascade on recorded answers, report on held-out rows.

A table of recorded answers (FrugalGPT's format: a `query` column and, per model `m`,
`m_answer`, `m_cost` in USD and `m` = 1 correct / 0 wrong) is split into train and test by the
caller. Steps (`replay`):
1. Candidate models: those no cheaper model beats on train accuracy (the cost/accuracy
   frontier); a dominated model is never worth its place in a chain.
2. A guess of the right answer from the query alone. On train rows the right answer is known
   wherever some model was marked correct (its answer, normalised); two classifiers learn it
   from the query text (stripped of the prompt every query shares): TF-IDF words and bigrams,
   and the query's MiniLM embedding (PLR). They are cheap next to any LLM call and tell the
   scorer whether an answer is the one the query looks like it wants.
3. Scorers: one PLR (`drafting.learning.plr.train_plr`) per chain prefix a → b: g = P(b's answer is
   right | b's answer, a's answer, whether they agree, how likely each answer is under the
   guesses). Agreement is what lets a cascade stop early: two models saying the same thing are
   usually right. Everything is cross-fitted: each train row's guesses and g come from models
   that never saw it (k folds); test rows get models fitted on all of train.
4. Plan: `drafting.learning.optimiser` picks the cheapest chain and thresholds whose out-of-fold train
   accuracy, less `confidence` standard errors of its per-row difference from the best single
   model, still reaches that model's train accuracy (plus `margin`). The chosen plan is the
   cheapest of thousands that clear the bar, so its own train figure is optimistic; the
   standard-error term asks more of a plan the more rows it answers differently from the
   reference. Then a frontier of plans at several budgets.
5. Report: every figure recomputed on the test rows.

No database: the command and bench/replay.py call `replay` with tables read from CSV.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from drafting.learning import optimiser
from drafting.learning.baselines import kfold_splits, stratified_splits, tfidf_proba
from drafting.learning.optimiser import CascadeTable, Chain, Plan
from drafting.learning.plr import train_plr

if TYPE_CHECKING:
    from drafting.evaluation.routing import RoutingConfig

Array = npt.NDArray[np.float64]
EmbeddingChoice = Literal["minilm", "none"]

OUTER_FOLDS = 5
# Standard errors of a plan's per-row difference from the best single model that its train
# accuracy must clear the bar by (two: the conventional "clearly above"), and a fixed margin
# on top (none by default: the standard error already scales with the rows and the plan).
DEFAULT_CONFIDENCE = 2.0
DEFAULT_MARGIN = 0.0
# A narrower grid than plr's default: scorers are trained a hundred times per replay.
SCORER_C_GRID = (0.01, 0.1, 1.0)
MAX_CATEGORIES = 8
# TF-IDF guesser's inverse strength: sparse, unscaled word features want a weak penalty
# (scikit-learn's text-classification examples sit at 1–100).
TFIDF_C = 10.0
PARETO_SHARES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)


class ReplayError(ValueError):
    """The input cannot be replayed (missing columns, no models, bad numbers)."""


# --- Input -------------------------------------------------------------------------------------


@dataclass
class AnswerTable:
    """Recorded answers: queries × models."""

    queries: list[str]
    models: list[str]
    answers: list[list[str]]  # per model, per query
    quality: Array  # (queries, models)
    cost: Array  # (queries, models)

    @property
    def n(self) -> int:
        return len(self.queries)

    def rows(self, index: Sequence[int] | npt.NDArray[Any]) -> AnswerTable:
        idx = np.asarray(index, dtype=int)
        return AnswerTable(
            queries=[self.queries[i] for i in idx],
            models=list(self.models),
            answers=[[column[i] for i in idx] for column in self.answers],
            quality=self.quality[idx],
            cost=self.cost[idx],
        )

    def answer(self, model: str) -> list[str]:
        return self.answers[self.models.index(model)]


def discover_models(columns: Sequence[str]) -> list[str]:
    """Models `m` with all of `m_answer`, `m_cost` and `m` present, in column order."""
    present = set(columns)
    return [
        column[: -len("_answer")]
        for column in columns
        if column.endswith("_answer")
        and column[: -len("_answer")]
        and f"{column[: -len('_answer')]}_cost" in present
        and column[: -len("_answer")] in present
    ]


def _number(text: str | None, *, column: str, line: int) -> float:
    if text is None:
        raise ReplayError(f"data row {line}: too few fields (no {column!r})")
    try:
        value = float(text)
    except ValueError:
        raise ReplayError(f"data row {line}: column {column!r} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ReplayError(f"data row {line}: column {column!r} is not finite: {text!r}")
    return value


def read_answers(path: str | Path) -> AnswerTable:
    """Read a FrugalGPT-format CSV (other columns are ignored)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except OSError as exc:
        raise ReplayError(f"{path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ReplayError(f"{path}: not a readable UTF-8 CSV ({exc})") from exc
    if "query" not in columns:
        raise ReplayError(f"{path}: no 'query' column (columns: {', '.join(columns[:12])})")
    models = discover_models(columns)
    if not models:
        raise ReplayError(
            f"{path}: no models found: each model m needs columns m_answer, m_cost and m"
        )
    if not rows:
        raise ReplayError(f"{path}: no rows")
    quality = np.zeros((len(rows), len(models)))
    cost = np.zeros((len(rows), len(models)))
    for i, row in enumerate(rows):
        for j, model in enumerate(models):
            quality[i, j] = _number(row.get(model), column=model, line=i + 1)
            cost[i, j] = _number(row.get(f"{model}_cost"), column=f"{model}_cost", line=i + 1)
    return AnswerTable(
        queries=[row["query"] or "" for row in rows],
        models=models,
        answers=[[row[f"{m}_answer"] or "" for row in rows] for m in models],
        quality=quality,
        cost=cost,
    )


# --- Features ----------------------------------------------------------------------------------


def _common_prefix(texts: Sequence[str]) -> str:
    """The longest string every text starts with."""
    first, last = min(texts), max(texts)  # the sorted extremes differ first where any pair does
    size = next(
        (i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b),
        min(len(first), len(last)),
    )
    return first[:size]


def shared_affixes(texts: Sequence[str]) -> tuple[str, str]:
    """The prefix and suffix every text shares (cut at whitespace, so no word is split)."""
    if len(texts) < 2:
        return "", ""
    prefix = _common_prefix(texts)
    prefix = prefix[: max(prefix.rfind(" "), prefix.rfind("\n")) + 1]
    reversed_suffix = _common_prefix([text[::-1] for text in texts])
    suffix = reversed_suffix[::-1]
    cut = min((suffix.find(c) for c in " \n" if c in suffix), default=-1)
    suffix = suffix[cut:] if cut >= 0 else ""
    return prefix, suffix


def strip_affixes(text: str, prefix: str, suffix: str) -> str:
    core = text[len(prefix) :] if prefix and text.startswith(prefix) else text
    core = core[: -len(suffix)] if suffix and core.endswith(suffix) else core
    return core.strip() or text


_NON_WORD = re.compile(r"[^\w]+")


def normalise_answer(text: str) -> str:
    """Lower case, punctuation and spacing folded: "No." and " no" are one answer."""
    return _NON_WORD.sub(" ", text.lower()).strip()[:60]


@dataclass
class AnswerCoding:
    """One-hot coding of answers: the most frequent ones (each at least `floor` times), the
    rest 'other' (the last column)."""

    categories: list[str]

    @classmethod
    def fit(cls, answers: Sequence[str | None]) -> AnswerCoding:
        counts = Counter(a for a in answers if a is not None)
        floor = max(3, len(answers) // 100)
        return cls([a for a, c in counts.most_common(MAX_CATEGORIES) if c >= floor])

    @property
    def width(self) -> int:
        return len(self.categories) + 1

    def codes(self, answers: Sequence[str]) -> npt.NDArray[np.int_]:
        lookup = {a: i for i, a in enumerate(self.categories)}
        return np.asarray([lookup.get(a, len(self.categories)) for a in answers], dtype=int)

    def encode(self, answers: Sequence[str]) -> Array:
        out = np.zeros((len(answers), self.width))
        out[np.arange(len(answers)), self.codes(answers)] = 1.0
        return out


def reference_answers(table: AnswerTable) -> list[str | None]:
    """Per row, the right answer as far as the table tells: the most common normalised answer
    among the models marked correct (None where none was)."""
    out: list[str | None] = []
    for i in range(table.n):
        right = [
            normalise_answer(table.answers[j][i])
            for j in range(len(table.models))
            if table.quality[i, j] >= 0.5
        ]
        out.append(Counter(right).most_common(1)[0][0] if right else None)
    return out


@dataclass
class Guesses:
    """Per guesser, P(right answer = category | query) for train rows (out of fold) and test
    rows, over `coding`'s categories."""

    coding: AnswerCoding
    train: list[Array]
    test: list[Array]

    def of(self, answers: Sequence[str], on: Literal["train", "test"]) -> Array:
        """Each guesser's probability of the given answers (one column per guesser)."""
        codes = self.coding.codes(answers)
        tables = self.train if on == "train" else self.test
        rows = np.arange(len(answers))
        return (
            np.column_stack([p[rows, codes] for p in tables])
            if tables
            else np.zeros((len(rows), 0))
        )


def _embedding_proba(
    X: Array, labels: npt.NDArray[np.int_], X_apply: Array, width: int, seed: int
) -> Array:
    model = train_plr(X, [str(c) for c in labels], seed=seed, c_grid=SCORER_C_GRID)
    out = np.zeros((len(X_apply), width))
    out[:, [int(c) for c in model.classes]] = model.predict_proba(X_apply)
    return out


def guess_answers(
    texts_train: Sequence[str],
    texts_test: Sequence[str],
    embedded: tuple[Array, Array] | None,
    reference: Sequence[str | None],
    *,
    seed: int,
) -> Guesses:
    """Cross-fitted guesses of the right answer from the query (TF-IDF, and the embedding when
    given), learned on the train rows whose right answer is known."""
    coding = AnswerCoding.fit(reference)
    known = np.asarray([r is not None for r in reference])
    labels = np.full(len(reference), -1)
    labels[known] = coding.codes([r for r in reference if r is not None])
    width = coding.width
    rows = np.flatnonzero(known)
    uniform_train = np.full((len(reference), width), 1.0 / width)
    uniform_test = np.full((len(texts_test), width), 1.0 / width)
    if len(set(labels[rows].tolist())) < 2 or len(rows) < 2 * OUTER_FOLDS:
        return Guesses(coding, [uniform_train], [uniform_test])

    guessers: list[Callable[[npt.NDArray[np.int_], npt.NDArray[np.int_] | None], Array]] = []
    train_text = np.asarray(texts_train, dtype=object)

    def by_text(fit: npt.NDArray[np.int_], apply: npt.NDArray[np.int_] | None) -> Array:
        target = list(texts_test) if apply is None else list(train_text[apply])
        return tfidf_proba(
            list(train_text[fit]), labels[fit], target, width=width, strength_c=TFIDF_C, seed=seed
        )

    guessers.append(by_text)
    if embedded is not None:
        E_train, E_test = embedded

        def by_embedding(fit: npt.NDArray[np.int_], apply: npt.NDArray[np.int_] | None) -> Array:
            target = E_test if apply is None else E_train[apply]
            if len(set(labels[fit].tolist())) < 2:
                return np.full((len(target), width), 1.0 / width)
            return _embedding_proba(E_train[fit], labels[fit], target, width, seed)

        guessers.append(by_embedding)

    # Folds over all train rows (a row without a known answer is still guessed out of fold);
    # each fold's guesser learns from the known rows outside it.
    train_out, test_out = [], []
    for guesser in guessers:
        out_of_fold = uniform_train.copy()
        for outside, inside in kfold_splits(len(reference), OUTER_FOLDS, seed=seed):
            fit = outside[known[outside]]
            if len(set(labels[fit].tolist())) >= 2:
                out_of_fold[inside] = guesser(fit, inside)
        train_out.append(out_of_fold)
        test_out.append(guesser(rows, None))
    return Guesses(coding, train_out, test_out)


def chain_features(
    prefix: Chain,
    normalised: dict[str, list[str]],
    codings: dict[str, AnswerCoding],
    guesses: Guesses | None = None,
    on: Literal["train", "test"] = "train",
) -> Array:
    """What the scorer of prefix[-1]'s answer may know after the earlier tiers: every answer so
    far (one-hot), whether each earlier answer agrees with the last, and how likely each answer
    is to be right under the query-only guesses."""
    last = normalised[prefix[-1]]
    blocks = [codings[model].encode(normalised[model]) for model in prefix]
    for model in prefix[:-1]:
        agree = [a == b for a, b in zip(normalised[model], last, strict=True)]
        blocks.append(np.asarray(agree, dtype=np.float64).reshape(-1, 1))
    if guesses is not None:
        blocks.extend(guesses.of(normalised[model], on) for model in prefix)
    return np.hstack(blocks)


# --- Scorers -----------------------------------------------------------------------------------


def _fit_score(X_train: Array, labels: npt.NDArray[Any], X_apply: Array, *, seed: int) -> Array:
    """g for X_apply from a PLR fitted on (X_train, labels); a constant when train is one-class."""
    classes = set(labels.tolist())
    if len(classes) < 2:
        return np.full(len(X_apply), 1.0 if classes == {"1"} else 0.0)
    model = train_plr(X_train, labels.tolist(), seed=seed, c_grid=SCORER_C_GRID)
    return model.positive_proba(X_apply)


def cross_fitted_scores(
    X_train: Array, correct: npt.NDArray[np.bool_], X_test: Array, *, seed: int
) -> tuple[Array, Array]:
    """(out-of-fold g on train, g on test from a model fitted on all of train)."""
    labels = np.where(correct, "1", "0")
    out_of_fold = np.zeros(len(labels))
    smallest = min(Counter(labels.tolist()).values()) if len(set(labels)) > 1 else 0
    folds = min(OUTER_FOLDS, smallest)
    if folds >= 2:
        for fit, held in stratified_splits(labels, folds, seed=seed):
            out_of_fold[held] = _fit_score(X_train[fit], labels[fit], X_train[held], seed=seed)
    else:
        out_of_fold[:] = _fit_score(X_train, labels, X_train, seed=seed)
    return out_of_fold, _fit_score(X_train, labels, X_test, seed=seed)


def frontier_models(table: AnswerTable) -> list[str]:
    """Models no cheaper-or-equal model matches in train accuracy, cheapest first."""
    accuracy = table.quality.mean(axis=0)
    cost = table.cost.mean(axis=0)
    order = sorted(range(len(table.models)), key=lambda j: (cost[j], -accuracy[j]))
    kept: list[str] = []
    best = -np.inf
    for j in order:
        if accuracy[j] > best:
            kept.append(table.models[j])
            best = accuracy[j]
    return kept


# --- Replay ------------------------------------------------------------------------------------

Progress = Callable[[str], None]


def _silent(_message: str) -> None:
    return None


def embed_queries(texts: Sequence[str], progress: Progress = _silent) -> Array:
    """MiniLM embeddings, in batches, each distinct text once."""
    distinct = list(dict.fromkeys(texts))
    embedder = _minilm()
    vectors: list[Array] = []
    batch = 256
    for start in range(0, len(distinct), batch):
        vectors.append(np.asarray(embedder.embed(distinct[start : start + batch]), np.float64))
        progress(f"embedded {min(start + batch, len(distinct))}/{len(distinct)} queries")
    lookup = dict(zip(distinct, np.vstack(vectors), strict=True))
    return np.vstack([lookup[text] for text in texts])


_EMBEDDER: Any = None


def _minilm() -> Any:
    global _EMBEDDER  # one model per process: loading costs seconds
    if _EMBEDDER is None:
        from drafting.engine.embeddings import MiniLMEmbedder

        _EMBEDDER = MiniLMEmbedder()
    return _EMBEDDER


def _scored_table(
    table: AnswerTable, scores: dict[Chain, Array], models: Sequence[str]
) -> CascadeTable:
    columns = [table.models.index(m) for m in models]
    return CascadeTable(
        models=list(models),
        quality=table.quality[:, columns],
        cost=table.cost[:, columns],
        scores=scores,
    )


def _single(table: AnswerTable, model: str) -> dict[str, Any]:
    j = table.models.index(model)
    return {
        "model": model,
        "accuracy": round(float(table.quality[:, j].mean()), 6),
        "cost_per_query": round(float(table.cost[:, j].mean()), 8),
    }


Strategy = Literal["cascade", "routing", "both"]
STRATEGIES: tuple[Strategy, ...] = ("cascade", "routing", "both")


@dataclass
class _Prepared:
    """What both strategies learn from the queries alone, computed once per split."""

    texts_train: list[str]
    texts_test: list[str]
    embedded: tuple[Array, Array] | None
    reference: list[str | None]
    guesses: Guesses


def replay(
    train: AnswerTable,
    test: AnswerTable,
    *,
    seed: int = 0,
    embedding: EmbeddingChoice = "minilm",
    margin: float = DEFAULT_MARGIN,
    confidence: float = DEFAULT_CONFIDENCE,
    max_tiers: int = optimiser.MAX_TIERS,
    value: float | None = None,
    progress: Progress = _silent,
    query_vectors: tuple[Array, Array] | None = None,
    strategy: Strategy = "cascade",
    routing_config: RoutingConfig | None = None,
) -> dict[str, Any]:
    """Learn a plan on `train`, report it on `test`.

    strategy "cascade" (the default): scorers and a cascade (steps in the module docstring).
    "routing": the expectimax router of drafting.evaluation.routing, reported in the same shape
    (its plan as `cascade`); when its guard fails on train, the cascade's plan is reported and
    `routing_in_force` is false. "both": {"strategy": "both", "strategies": {"cascade": …,
    "routing": …}}, each in the shape of its own strategy, on the same split and guesses.
    `routing_config`: the router's settings (routing.RoutingConfig's defaults when None).

    `query_vectors` are the (train, test) query embeddings when the caller has them already
    (the bench embeds a data set once for all its splits)."""
    if strategy not in STRATEGIES:
        raise ReplayError(f"unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
    started = time.perf_counter()
    missing = [m for m in train.models if m not in test.models]
    if missing:
        raise ReplayError(f"test rows lack models {missing}")
    test = _reorder(test, train.models)
    if train.n < 2 * OUTER_FOLDS or test.n < 1:
        raise ReplayError(
            f"too few rows: {train.n} train (at least {2 * OUTER_FOLDS}), {test.n} test"
        )
    prepared = _prepare(
        train, test, seed=seed, embedding=embedding, progress=progress, query_vectors=query_vectors
    )

    def cascade() -> dict[str, Any]:
        result = _cascade(
            train,
            test,
            prepared,
            seed=seed,
            embedding=embedding,
            margin=margin,
            confidence=confidence,
            max_tiers=max_tiers,
            value=value,
            progress=progress,
        )
        result["seconds"] = round(time.perf_counter() - started, 2)
        return result

    if strategy == "cascade":
        return cascade()
    if strategy == "routing":
        return routing_result(
            train,
            test,
            prepared,
            seed=seed,
            embedding=embedding,
            config=routing_config,
            cascade=cascade,
            progress=progress,
        )
    by_cascade = cascade()
    routing_started = time.perf_counter()
    by_routing = routing_result(
        train,
        test,
        prepared,
        seed=seed,
        embedding=embedding,
        config=routing_config,
        cascade=lambda: by_cascade,
        progress=progress,
    )
    by_routing["seconds"] = round(time.perf_counter() - routing_started, 2)
    return {
        "strategy": "both",
        "seed": seed,
        "n_train": train.n,
        "n_test": test.n,
        "strategies": {"cascade": by_cascade, "routing": by_routing},
        "seconds": round(time.perf_counter() - started, 2),
    }


def _prepare(
    train: AnswerTable,
    test: AnswerTable,
    *,
    seed: int,
    embedding: EmbeddingChoice,
    progress: Progress,
    query_vectors: tuple[Array, Array] | None,
) -> _Prepared:
    affix = shared_affixes(train.queries)
    texts_train = [strip_affixes(q, *affix) for q in train.queries]
    texts_test = [strip_affixes(q, *affix) for q in test.queries]
    embedded = query_vectors
    if embedded is None and embedding == "minilm":
        vectors = embed_queries(texts_train + texts_test, progress)
        embedded = (vectors[: train.n], vectors[train.n :])
    if embedding == "none":
        embedded = None
    reference = reference_answers(train)
    guesses = guess_answers(texts_train, texts_test, embedded, reference, seed=seed)
    progress("guessed right answers from the queries")
    return _Prepared(texts_train, texts_test, embedded, reference, guesses)


def _cascade(
    train: AnswerTable,
    test: AnswerTable,
    prepared: _Prepared,
    *,
    seed: int,
    embedding: EmbeddingChoice,
    margin: float,
    confidence: float,
    max_tiers: int,
    value: float | None,
    progress: Progress,
) -> dict[str, Any]:
    """Steps 1 and 3–5 of the module docstring (step 2, the guesses, is in `prepared`)."""
    accuracy = train.quality.mean(axis=0)
    candidates = frontier_models(train)
    # The most accurate model on train (the cheapest of those tied): the frontier's last.
    best = candidates[-1]
    progress(f"{len(train.models)} models; frontier: {', '.join(candidates)}; best: {best}")
    if len(candidates) == 1:
        progress("the cheapest model is also the most accurate: nothing to cascade")
    guesses = prepared.guesses
    normalised_train = {m: [normalise_answer(a) for a in train.answer(m)] for m in candidates}
    normalised_test = {m: [normalise_answer(a) for a in test.answer(m)] for m in candidates}
    codings = {m: AnswerCoding.fit(normalised_train[m]) for m in candidates}

    prefixes = _prefixes(candidates, max_tiers)
    train_scores: dict[Chain, Array] = {}
    test_scores: dict[Chain, Array] = {}
    for i, chain in enumerate(prefixes, 1):
        X_train = chain_features(chain, normalised_train, codings, guesses, "train")
        X_test = chain_features(chain, normalised_test, codings, guesses, "test")
        correct = train.quality[:, train.models.index(chain[-1])] >= 0.5
        train_scores[chain], test_scores[chain] = cross_fitted_scores(
            X_train, correct, X_test, seed=seed
        )
        progress(f"scorer {i}/{len(prefixes)}: {' → '.join(chain)}")

    train_table = _scored_table(train, train_scores, candidates)
    test_table = _scored_table(test, test_scores, candidates)
    chains = optimiser.candidate_chains(train_table, max_tiers=max_tiers)
    target = float(accuracy.max()) + margin
    plan = optimiser.optimise(
        train_table,
        objective="cost",
        target_accuracy=target,
        chains=chains,
        value=value,
        reference=best,
        confidence=confidence,
    )
    on_test = optimiser.preview(test_table, plan.tiers, value=value)
    reference = _single(test, best)
    result: dict[str, Any] = {
        "strategy": "cascade",
        "seed": seed,
        "n_train": train.n,
        "n_test": test.n,
        "embedding": embedding if prepared.embedded is not None else "none",
        "models": list(train.models),
        "candidates": candidates,
        "best_single": reference,
        "best_single_train": _single(train, best),
        "singles": [_single(test, m) for m in train.models],
        "cascade": on_test.to_dict(),
        "cascade_train": plan.to_dict(),
        "target_accuracy_train": round(target, 6),
        "confidence": confidence,
        "cost_saving": _saving(on_test.cost_per_query, reference["cost_per_query"]),
        "accuracy_gap": round(on_test.accuracy - reference["accuracy"], 6),
        "lambda": None,
    } | cascade_calls(on_test.to_dict())
    budgets = [share * reference["cost_per_query"] for share in PARETO_SHARES]
    frontier = optimiser.pareto(train_table, budgets, chains=chains, value=value)
    result["pareto"] = [
        {"budget": round(budget, 8)} | _compact(optimiser.preview(test_table, p.tiers, value=value))
        for budget, p in zip(budgets, frontier, strict=True)
    ]
    if value is not None:
        encs = optimiser.optimise(train_table, objective="encs", value=value, chains=chains)
        result["encs_plan"] = optimiser.preview(test_table, encs.tiers, value=value).to_dict()
    return result


def cascade_calls(plan: dict[str, Any]) -> dict[str, Any]:
    """A cascade plan's calls in the routing report's terms: every query asks the first tier;
    a tier is asked by the share of queries no earlier tier kept."""
    tiers = [t["model"] for t in plan["tiers"]]
    stopped = list(plan.get("stop_share") or [])
    reach = [max(0.0, 1.0 - sum(stopped[:i])) for i in range(len(tiers))]
    return {
        "mean_calls": round(sum(reach), 4),
        "first_call_share": {m: (1.0 if i == 0 else 0.0) for i, m in enumerate(tiers)},
        "call_share": {m: round(r, 4) for m, r in zip(tiers, reach, strict=True)},
    }


def routing_result(
    train: AnswerTable,
    test: AnswerTable,
    prepared: _Prepared,
    *,
    seed: int,
    embedding: EmbeddingChoice,
    config: RoutingConfig | None,
    cascade: Callable[[], dict[str, Any]],
    progress: Progress,
) -> dict[str, Any]:
    """The routing strategy's report in the cascade's shape. The plan in force is reported as
    `cascade`; when the router's guard fails on train, that is the cascade's plan (`cascade()`
    is called only then) and `routing_in_force` is false with the reason."""
    # Imported here: routing builds on this module's tables and guessers.
    from drafting.evaluation import routing

    config = config or routing.RoutingConfig()
    started = time.perf_counter()
    outcome = routing.route(
        train,
        test,
        texts=(prepared.texts_train, prepared.texts_test),
        guesses=prepared.guesses,
        reference=prepared.reference,
        seed=seed,
        config=config,
        progress=progress,
    )
    reference = _single(test, outcome.reference)
    on_train = {
        "accuracy": round(outcome.train.accuracy, 6),
        "cost_per_query": round(outcome.train.cost_per_query, 8),
    }
    on_test = {
        "accuracy": round(outcome.test.accuracy, 6),
        "cost_per_query": round(outcome.test.cost_per_query, 8),
    }
    routed: dict[str, Any] = {
        "models": outcome.models,
        "lambda": round(outcome.lam, 6),
        "within_budget": outcome.within_budget,
        "train": on_train | {"accuracy_gap": round(outcome.train_gap, 6)},
        "test": on_test,
        "sweep": [
            {"lambda": round(lam, 6), "accuracy": round(acc, 6), "cost_per_query": round(c, 8)}
            for lam, acc, c in outcome.sweep
        ],
    }
    result: dict[str, Any] = {
        "strategy": "routing",
        "seed": seed,
        "n_train": train.n,
        "n_test": test.n,
        "embedding": embedding if prepared.embedded is not None else "none",
        "models": list(train.models),
        "best_single": reference,
        "best_single_train": _single(train, outcome.reference),
        "singles": [_single(test, m) for m in train.models],
        "routing_in_force": outcome.in_force,
        "routing_not_in_force_because": outcome.reason,
        "budget_share": config.budget_share,
        "routing": routed,
    }
    if outcome.in_force:
        result |= {
            "cascade": on_test,
            "cascade_train": on_train,
            "lambda": routed["lambda"],
        } | routing.call_shares(outcome.models, outcome.test.calls)
    else:
        fallback = cascade()
        result |= {
            "cascade": fallback["cascade"],
            "cascade_train": fallback["cascade_train"],
            "lambda": None,
        } | cascade_calls(fallback["cascade"])
    plan_accuracy = float(result["cascade"]["accuracy"])
    plan_cost = float(result["cascade"]["cost_per_query"])
    result["cost_saving"] = _saving(plan_cost, reference["cost_per_query"])
    result["accuracy_gap"] = round(plan_accuracy - reference["accuracy"], 6)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _compact(plan: Plan) -> dict[str, Any]:
    data = plan.to_dict()
    return {
        "accuracy": data["accuracy"],
        "cost_per_query": data["cost_per_query"],
        "tiers": data["tiers"],
    }


def _saving(cost: float, reference: float) -> float | None:
    return round(1.0 - cost / reference, 6) if reference > 0 else None


def _reorder(table: AnswerTable, models: Sequence[str]) -> AnswerTable:
    columns = [table.models.index(m) for m in models]
    return AnswerTable(
        queries=table.queries,
        models=list(models),
        answers=[table.answers[j] for j in columns],
        quality=table.quality[:, columns],
        cost=table.cost[:, columns],
    )


def _prefixes(candidates: Sequence[str], max_tiers: int) -> list[Chain]:
    """Every chain prefix that is a non-last tier of some chain of ≤ max_tiers models
    (candidates are cheapest first, so a prefix needs a dearer model after it)."""
    out: list[Chain] = []
    for size in range(1, max_tiers):
        out.extend(itertools.combinations(candidates[:-1], size))
    return out


def split_rows(n: int, *, seed: int, train_share: float = 0.5) -> tuple[Array, Array]:
    """A seeded random split of row indices into (train, test)."""
    order = np.random.default_rng(seed).permutation(n)
    cut = round(n * train_share)
    return np.sort(order[:cut]), np.sort(order[cut:])


def progress_to_stderr(message: str) -> None:
    sys.stderr.write(f"[replay] {message}\n")
    sys.stderr.flush()
