"""Routing replay: an expectimax cascade router learned on recorded answers (the second
strategy of drafting.evaluation.replay; research in docs/decisions.md, "Routing on FrugalGPT's
OVERRULING answers").

The plain cascade walks a fixed chain of tiers. The router instead chooses, per query, before
the first call and again after each answer, the next model to call or to stop, maximising

    E[quality of the answer finally kept] − λ · E[cost still to pay]

over every sequence of at most `depth` calls (exact expectimax over the answers the called
models may give). Everything is learned on the train half:

- the router's models: the `n_cheap` cheapest models cheaper than the reference (the most
  accurate on train, as in replay) plus every model within `keep_within` of the reference's
  train accuracy (so a change of reference on one split does not drop GPT-4); dominated models
  stay in, since their answers are evidence even where their accuracy is poor;
- query-only guesses G(x) = log P(right answer = c | query): replay's two guessers (TF-IDF
  words, MiniLM PLR) and a third on words plus character n-grams, all cross-fitted;
- posterior P(right = c | x, answers of S): one logistic regression per set S of ≤ depth
  models, on G(x) and a one-hot of each answer in S;
- predictive P(m answers a | x, answers of S): one per (S, m), |S| < depth, m ∉ S: what lets
  the router look ahead ("j1-large will almost surely say No here");
- cost c_m(x): linear in the query's length (the prompt is known before the call).

Stopping keeps the called answer with the highest posterior, not the last one. λ is swept on
out-of-fold train tables and chosen by the budget rule: the most accurate λ whose train cost is
at most `budget_share` of the reference's train cost. A guard then checks that λ on train: if
its train accuracy is more than `guard` below the reference's, routing is not in force and the
caller reports the plain cascade's plan instead.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from drafting.evaluation.replay import (
    OUTER_FOLDS,
    AnswerTable,
    Array,
    Guesses,
    normalise_answer,
)
from drafting.learning.baselines import kfold_splits
from drafting.learning.router_models import Logit, word_char_tfidf_proba

OTHER = -1  # an answer outside the categories (coded as all zeros in the one-hot)
GUESS_FLOOR = 1e-4  # guesses are clipped before the log: one confident guesser must not be −∞
CHAR_C = 10.0  # like replay's TF-IDF guesser: sparse unscaled n-grams want a weak penalty
# λ (quality per USD) from 1 to ~3,162: at OVERRULING's prices this spans "call GPT-4 on
# everything" to "never call past the cheapest model".
LAMBDAS: tuple[float, ...] = tuple(float(x) for x in np.logspace(0, 3.5, 36))

IntArray = npt.NDArray[np.int_]
State = tuple[tuple[int, ...], tuple[int, ...]]  # (models called, their answer codes)
Progress = Callable[[str], None]


def _silent(_message: str) -> None:
    return None


@dataclass(frozen=True)
class RoutingConfig:
    """The router's settings; the defaults are those chosen on dev seeds 0–9."""

    depth: int = 3
    n_cheap: int = 6
    strength_c: float = 1.0
    folds: int = OUTER_FOLDS
    lambdas: tuple[float, ...] = LAMBDAS
    # 95 % saving less half a point for train-to-test drift (FrugalGPT's "quality under a
    # budget", the budget taken from the target).
    budget_share: float = 0.045
    # Routing is in force only if the chosen λ's out-of-fold train accuracy is at most this
    # far below the reference's train accuracy.
    guard: float = 0.005
    # Models this close to the reference's train accuracy stay in the router's set.
    keep_within: float = 0.005
    char_guesser: bool = True


def reference_model(train: AnswerTable) -> str:
    """The most accurate model on train, the cheapest among ties (replay's `best`)."""
    accuracy = train.quality.mean(axis=0)
    cost = train.cost.mean(axis=0)
    j = max(range(len(train.models)), key=lambda k: (accuracy[k], -cost[k]))
    return train.models[j]


def choose_models(train: AnswerTable, config: RoutingConfig) -> list[str]:
    """The router's models, cheapest first: the `n_cheap` cheapest below the reference's cost,
    every model within `keep_within` of the reference's train accuracy, and the reference."""
    accuracy = train.quality.mean(axis=0)
    cost = train.cost.mean(axis=0)
    best = train.models.index(reference_model(train))
    cheaper = sorted((j for j in range(len(train.models)) if cost[j] < cost[best]), key=cost.item)
    near = [
        j for j in range(len(train.models)) if accuracy[j] >= accuracy[best] - config.keep_within
    ]
    chosen = set(cheaper[: config.n_cheap]) | set(near) | {best}
    return [train.models[j] for j in sorted(chosen, key=lambda j: (cost[j], j))]


# --- The router --------------------------------------------------------------------------------


class Router:
    """Posterior and predictive models over the answers of `models` (fitted on one set of rows,
    applied to another)."""

    def __init__(self, models: Sequence[str], categories: Sequence[str], config: RoutingConfig):
        self.models = list(models)
        self.categories = list(categories)
        self.k = len(categories)
        self.config = config
        self.posterior_models: dict[tuple[int, ...], Logit] = {}
        self.predictive_models: dict[tuple[tuple[int, ...], int], Logit] = {}

    @property
    def answer_values(self) -> list[int]:
        return [*range(self.k), OTHER]

    def codes(self, normalised: dict[str, list[str]]) -> IntArray:
        """(rows, models) answer codes: a category's index, or OTHER."""
        lookup = {c: i for i, c in enumerate(self.categories)}
        return np.column_stack(
            [
                np.asarray([lookup.get(a, OTHER) for a in normalised[m]], dtype=int)
                for m in self.models
            ]
        )

    def features(self, G: Array, A: IntArray, S: tuple[int, ...]) -> Array:
        """G(x) and a one-hot of each answer in S (OTHER is all zeros); only S's columns of A
        are read."""
        blocks = [G]
        for m in S:
            onehot = np.zeros((len(G), self.k))
            rows = np.flatnonzero(A[:, m] >= 0)
            onehot[rows, A[rows, m]] = 1.0
            blocks.append(onehot)
        return np.hstack(blocks)

    def subsets(self, max_size: int) -> list[tuple[int, ...]]:
        out: list[tuple[int, ...]] = []
        for size in range(max_size + 1):
            out.extend(itertools.combinations(range(len(self.models)), size))
        return out

    def fit(self, G: Array, A: IntArray, right: IntArray) -> Router:
        """`right`: per row the right answer's category, OTHER where unknown (those rows still
        teach the predictive models: what a model says needs no right answer)."""
        c, depth = self.config.strength_c, self.config.depth
        known = right >= 0
        for S in self.subsets(depth):
            X = self.features(G[known], A[known], S)
            self.posterior_models[S] = Logit.fit(X, right[known], strength_c=c)
        for S in self.subsets(depth - 1):
            X = self.features(G, A, S)
            for m in range(len(self.models)):
                if m not in S:
                    self.predictive_models[(S, m)] = Logit.fit(X, A[:, m], strength_c=c)
        return self

    def tables(self, G: Array) -> tuple[dict[State, Array], dict[tuple[State, int], Array]]:
        """posterior[(S, answers)] (rows, K) and predictive[((S, answers), m)] (rows, K+1, the
        last column OTHER) for every hypothetical state: the look-ahead needs them all."""
        n, depth = len(G), self.config.depth
        posterior: dict[State, Array] = {}
        predictive: dict[tuple[State, int], Array] = {}
        post_classes = list(range(self.k))
        pred_classes = self.answer_values
        for S in self.subsets(depth):
            for answers in itertools.product(self.answer_values, repeat=len(S)):
                A = np.full((n, len(self.models)), OTHER)
                for m, a in zip(S, answers, strict=True):
                    A[:, m] = a
                X = self.features(G, A, S)
                state = (S, answers)
                posterior[state] = self.posterior_models[S].proba(X, post_classes)
                if len(S) < depth:
                    for m in range(len(self.models)):
                        if m not in S:
                            predictive[(state, m)] = self.predictive_models[(S, m)].proba(
                                X, pred_classes
                            )
        return posterior, predictive


def _stop_value(posterior: Array, answers: tuple[int, ...]) -> tuple[Array, IntArray]:
    """(quality, category kept) of stopping: the called answer with the highest posterior."""
    present = sorted({a for a in answers if a >= 0})
    n = len(posterior)
    if not present:
        return np.zeros(n), np.full(n, OTHER)
    sub = posterior[:, present]
    best = sub.argmax(axis=1)
    return sub[np.arange(n), best], np.asarray(present)[best]


def _child(S: tuple[int, ...], answers: tuple[int, ...], m: int, a: int) -> State:
    pairs = sorted(zip((*S, m), (*answers, a), strict=True))
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def plan_actions(
    router: Router,
    posterior: dict[State, Array],
    predictive: dict[tuple[State, int], Array],
    cost: Array,
    lam: float,
) -> dict[State, IntArray]:
    """Expectimax, vectorised over rows: per state the model to call next, or −1 to stop.

    V(S, a) = max(stop, max over m ∉ S of −λ·c_m(x) + Σ_a' P(a' | x, S, a)·V(S ∪ m, a ∪ a')),
    computed from the deepest states up; at S = ∅ some model must be called."""
    depth, n_models = router.config.depth, len(router.models)
    n = len(cost)
    value: dict[State, Array] = {}
    action: dict[State, IntArray] = {}
    for size in range(depth, -1, -1):
        for S in itertools.combinations(range(n_models), size):
            for answers in itertools.product(router.answer_values, repeat=size):
                state = (S, answers)
                best_v = _stop_value(posterior[state], answers)[0] if size else np.full(n, -np.inf)
                best_a = np.full(n, -1)
                if size < depth:
                    for m in range(n_models):
                        if m in S:
                            continue
                        p = predictive[(state, m)]
                        v = -lam * cost[:, m]
                        for j, a in enumerate(router.answer_values):
                            v = v + p[:, j] * value[_child(S, answers, m, a)]
                        better = v > best_v
                        best_v = np.where(better, v, best_v)
                        best_a = np.where(better, m, best_a)
                value[state] = best_v
                action[state] = best_a
    return action


@dataclass
class Walk:
    """The policy run with the real answers: per row the quality kept, the cost paid and the
    models called in order."""

    quality: Array
    cost: Array
    calls: list[tuple[int, ...]]

    @property
    def accuracy(self) -> float:
        return float(self.quality.mean())

    @property
    def cost_per_query(self) -> float:
        return float(self.cost.mean())


def walk(
    action: dict[State, IntArray],
    posterior: dict[State, Array],
    A: IntArray,
    quality: Array,
    cost: Array,
) -> Walk:
    """Decide, call (reading the recorded answer), decide again, … then keep the called answer
    with the highest posterior (the first model that gave it)."""
    n = len(A)
    kept, paid = np.zeros(n), np.zeros(n)
    calls: list[tuple[int, ...]] = []
    for i in range(n):
        state: State = ((), ())
        sequence: list[int] = []
        while (m := int(action[state][i])) >= 0:
            sequence.append(m)
            paid[i] += cost[i, m]
            state = _child(*state, m, int(A[i, m]))
        _, chosen = _stop_value(posterior[state][i : i + 1], state[1])
        keep = next((m for m in sequence if A[i, m] == int(chosen[0])), sequence[0])
        kept[i] = quality[i, keep]
        calls.append(tuple(sequence))
    return Walk(kept, paid, calls)


# --- One split ---------------------------------------------------------------------------------


def _length_cost(train: AnswerTable, models: Sequence[str]) -> Callable[[AnswerTable], Array]:
    """Per model, cost linear in the query's length in characters, fitted on train: the prompt
    is known before the call and the answers are one word; the row's recorded cost is not."""
    lengths = np.array([len(q) for q in train.queries], dtype=float)
    coefficients = []
    for m in models:
        y = train.cost[:, train.models.index(m)]
        if len(set(lengths.tolist())) > 1:
            slope, intercept = np.polyfit(lengths, y, 1)
        else:
            slope, intercept = 0.0, float(y.mean())
        coefficients.append((float(slope), float(intercept)))

    def predict(table: AnswerTable) -> Array:
        size = np.array([len(q) for q in table.queries], dtype=float)
        return np.column_stack([np.maximum(s * size + b, 0.0) for s, b in coefficients])

    return predict


def char_guesses(
    texts_train: Sequence[str],
    texts_test: Sequence[str],
    labels: IntArray,
    width: int,
    *,
    seed: int,
) -> tuple[Array, Array]:
    """Cross-fitted P(right answer = c | query) from words and character n-grams, as replay's
    guess_answers: each fold learns from the known rows outside it; test from all known rows.
    `labels`: category code per train row, −1 unknown; `width` counts the categories and other."""
    known = labels >= 0
    texts = np.asarray(texts_train, dtype=object)
    out_of_fold = np.full((len(texts), width), 1.0 / width)
    for outside, inside in kfold_splits(len(texts), OUTER_FOLDS, seed=seed):
        fit = outside[known[outside]]
        out_of_fold[inside] = word_char_tfidf_proba(
            list(texts[fit]), labels[fit], list(texts[inside]), width=width, strength_c=CHAR_C
        )
    test = word_char_tfidf_proba(
        list(texts[known]), labels[known], list(texts_test), width=width, strength_c=CHAR_C
    )
    return out_of_fold, test


def guess_features(
    guesses: Guesses,
    char: tuple[Array, Array] | None,
    n_train: int,
    n_test: int,
) -> tuple[Array, Array]:
    """G(x): per guesser and category, log P(right = c | query), clipped at GUESS_FLOOR."""
    categories = guesses.coding.categories
    out: list[Array] = []
    for on, n in (("train", n_train), ("test", n_test)):
        columns = [guesses.of([c] * n, on) for c in categories]  # type: ignore[arg-type]
        if char is not None:
            columns.append(char[0 if on == "train" else 1][:, : len(categories)])
        stacked = np.hstack(columns) if columns else np.zeros((n, 0))
        out.append(np.log(np.clip(stacked, GUESS_FLOOR, 1.0)))
    return out[0], out[1]


@dataclass
class RoutingOutcome:
    """What the routing strategy learned on train and scored on test."""

    models: list[str]
    reference: str
    lam: float
    train: Walk
    test: Walk
    reference_train_accuracy: float
    reference_train_cost: float
    sweep: list[tuple[float, float, float]]  # (λ, out-of-fold train accuracy, train cost)
    within_budget: bool
    in_force: bool
    reason: str | None
    seconds: float

    @property
    def train_gap(self) -> float:
        return self.train.accuracy - self.reference_train_accuracy


def call_shares(models: Sequence[str], calls: Sequence[tuple[int, ...]]) -> dict[str, Any]:
    """mean_calls, first_call_share (which model is asked first) and call_share (asked at all),
    over the rows."""
    n = max(len(calls), 1)
    first = np.bincount([c[0] for c in calls if c], minlength=len(models)) / n
    return {
        "mean_calls": round(float(np.mean([len(c) for c in calls])) if calls else 0.0, 4),
        "first_call_share": {m: round(float(f), 4) for m, f in zip(models, first, strict=True)},
        "call_share": {m: round(sum(j in c for c in calls) / n, 4) for j, m in enumerate(models)},
    }


def route(
    train: AnswerTable,
    test: AnswerTable,
    *,
    texts: tuple[list[str], list[str]],
    guesses: Guesses,
    reference: Sequence[str | None],
    seed: int,
    config: RoutingConfig | None = None,
    progress: Progress = _silent,
) -> RoutingOutcome:
    """Learn the router on `train` (guesses cross-fitted by the caller, replay.guess_answers),
    choose λ, and walk the test rows. `reference`: the right answers of train's rows."""
    config = config or RoutingConfig()
    started = time.perf_counter()
    models = choose_models(train, config)
    best = reference_model(train)
    progress(f"routing over {', '.join(models)}; reference {best}")
    categories = guesses.coding.categories
    lookup = {c: i for i, c in enumerate(categories)}
    right = np.asarray([lookup.get(r, OTHER) if r is not None else OTHER for r in reference])
    char = None
    if config.char_guesser:
        labels = np.asarray(
            [lookup.get(r, len(categories)) if r is not None else -1 for r in reference]
        )
        char = char_guesses(texts[0], texts[1], labels, len(categories) + 1, seed=seed)
    G_train, G_test = guess_features(guesses, char, train.n, test.n)
    progress("routing: query guesses ready")

    router = Router(models, categories, config)
    A_train = router.codes({m: [normalise_answer(a) for a in train.answer(m)] for m in models})
    A_test = router.codes({m: [normalise_answer(a) for a in test.answer(m)] for m in models})
    columns = [train.models.index(m) for m in models]
    test_columns = [test.models.index(m) for m in models]
    Q_train, C_train = train.quality[:, columns], train.cost[:, columns]
    Q_test, C_test = test.quality[:, test_columns], test.cost[:, test_columns]
    estimate = _length_cost(train, models)
    cost_train, cost_test = estimate(train), estimate(test)

    # Out-of-fold tables on train: each row's posterior and predictive come from a router that
    # never saw it, so the λ sweep's train figures are honest.
    post_train: dict[State, Array] = {}
    pred_train: dict[tuple[State, int], Array] = {}
    folds = list(kfold_splits(train.n, config.folds, seed=seed))
    for i, (outside, inside) in enumerate(folds, 1):
        fold = Router(models, categories, config).fit(
            G_train[outside], A_train[outside], right[outside]
        )
        post, pred = fold.tables(G_train[inside])
        for key, values in post.items():
            post_train.setdefault(key, np.zeros((train.n, values.shape[1])))[inside] = values
        for pkey, values in pred.items():
            pred_train.setdefault(pkey, np.zeros((train.n, values.shape[1])))[inside] = values
        progress(f"routing: fold {i}/{len(folds)} fitted")
    router.fit(G_train, A_train, right)
    post_test, pred_test = router.tables(G_test)

    best_column = models.index(best)
    reference_accuracy = float(Q_train[:, best_column].mean())
    reference_cost = float(C_train[:, best_column].mean())
    walks: list[tuple[float, Walk]] = []
    for lam in config.lambdas:
        actions = plan_actions(router, post_train, pred_train, cost_train, lam)
        walks.append((lam, walk(actions, post_train, A_train, Q_train, C_train)))
    progress(f"routing: swept {len(walks)} values of λ on train")

    cap = config.budget_share * reference_cost
    feasible = [(lam, w) for lam, w in walks if w.cost_per_query <= cap]
    if feasible:
        lam, on_train = max(feasible, key=lambda lw: (lw[1].accuracy, -lw[1].cost_per_query))
    else:  # nothing fits the budget: the cheapest plan (the guard below will judge it)
        lam, on_train = min(walks, key=lambda lw: lw[1].cost_per_query)
    shortfall = reference_accuracy - on_train.accuracy
    in_force = bool(feasible) and shortfall <= config.guard + 1e-12
    reason = None
    if not feasible:
        reason = (
            f"no λ keeps the train cost within {config.budget_share:.1%} of {best}'s "
            f"(${cap:.8f}/query)"
        )
    elif not in_force:
        reason = (
            f"at λ = {lam:.4g} the out-of-fold train accuracy {on_train.accuracy:.4f} is "
            f"{shortfall * 100:.2f} pt below {best}'s {reference_accuracy:.4f} "
            f"(guard: {config.guard * 100:.1f} pt)"
        )
    actions = plan_actions(router, post_test, pred_test, cost_test, lam)
    on_test = walk(actions, post_test, A_test, Q_test, C_test)
    progress(
        f"routing: λ {lam:.4g}, train accuracy {on_train.accuracy:.4f} vs {reference_accuracy:.4f}"
        f", {'in force' if in_force else 'NOT in force: ' + str(reason)}"
    )
    return RoutingOutcome(
        models=models,
        reference=best,
        lam=float(lam),
        train=on_train,
        test=on_test,
        reference_train_accuracy=reference_accuracy,
        reference_train_cost=reference_cost,
        sweep=[(lam_i, w.accuracy, w.cost_per_query) for lam_i, w in walks],
        within_budget=bool(feasible),
        in_force=in_force,
        reason=reason,
        seconds=time.perf_counter() - started,
    )
