"""Penalised logistic regression: the tens-of-shot classifier behind the learned cascade scorer,
the intent classifier and the replay / few-shot commands (Buckmann & Hill 2024).

One function trains (`train_plr`), one object predicts and explains (`TrainedPLR`). Features are
whatever the caller builds (embeddings, plus cheap signals); they are standardised, so an
embedding dimension and a log-probability weigh alike before the penalty.

- Penalty: L2 (default), L1 or elastic-net, as scikit-learn's `l1_ratio` (0, 1, between).
- Strength: C chosen by stratified cross-validation on log-loss over a log grid; with fewer
  than two rows of some class there is nothing to cross-validate and C = 1.
- Class weights: "balanced" by default — the rare class (a bad draft, a small intent) counts.
- Calibration: Platt scaling (two classes) or temperature scaling (more), fitted on the
  out-of-fold decision values, once every class has `CALIBRATE_MIN_PER_CLASS` rows; below that
  the calibration would be fitted to a handful of rows and do more harm than good.
- Metrics: computed on out-of-fold predictions (never on rows the model saw): n, accuracy,
  macro-F1, AUC (binary), Brier score (binary), log-loss.
- Priors (optional): rows that are always trained on and never scored, such as the embedding
  of each intent's name (`label_prior_text`). With ten examples per class a class's name is an
  eleventh, clean example: on Banking77 (77 intents, N = 10) it moved accuracy by about half a
  point (docs/decisions.md, "Tens-of-shot quality against SetFit"). They join every fold's
  training part and the final fit, so the out-of-fold metrics still measure labelled rows only.

Explanations are occlusion: the score change when each word is left out, one batch of
variants through the same features (`explain_words`).
"""

from __future__ import annotations

import io
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import joblib
import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

Penalty = Literal["l2", "l1", "elasticnet"]
Array = npt.NDArray[Any]

PENALTIES: tuple[Penalty, ...] = ("l2", "l1", "elasticnet")
L1_RATIO: dict[Penalty, float] = {"l2": 0.0, "l1": 1.0, "elasticnet": 0.5}
# Inverse strengths tried by cross-validation. Standardised 384–1,000-dimensional embeddings
# with tens of rows want strong penalties; the top end serves thousands of labels.
C_GRID: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
CALIBRATE_MIN_PER_CLASS = 30
MAX_FOLDS = 5


@dataclass
class Calibration:
    """Maps the classifier's decision values to calibrated probabilities, fitted on
    out-of-fold decision values: Platt scaling (a·d + b) for two classes, one temperature for
    more."""

    slope: float
    intercept: float = 0.0

    def apply(self, decision: Array) -> npt.NDArray[np.float64]:
        values = np.asarray(decision, dtype=np.float64)
        if values.ndim == 1:
            positive = 1.0 / (1.0 + np.exp(-(self.slope * values + self.intercept)))
            return np.column_stack([1.0 - positive, positive])
        return _softmax(values * self.slope)


@dataclass
class TrainedPLR:
    """A fitted classifier with what it was trained on and how well it did out of fold."""

    estimator: Pipeline  # StandardScaler → LogisticRegression
    classes: list[str]
    penalty: Penalty
    C: float
    calibration: Calibration | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    def predict_proba(self, features: Array) -> npt.NDArray[np.float64]:
        """One row per sample, one column per class (in `classes` order)."""
        X = _2d(features)
        if self.calibration is not None:
            return self.calibration.apply(self.estimator.decision_function(X))
        return np.asarray(self.estimator.predict_proba(X), dtype=np.float64)

    def predict(self, features: Array) -> list[str]:
        probabilities = self.predict_proba(features)
        return [self.classes[i] for i in probabilities.argmax(axis=1)]

    def positive_proba(self, features: Array, positive: str = "1") -> npt.NDArray[np.float64]:
        """P(positive class) for a binary model (the scorer's g)."""
        return self.predict_proba(features)[:, self.classes.index(positive)]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        joblib.dump(self, buffer, compress=3)
        return buffer.getvalue()

    @staticmethod
    def from_bytes(blob: bytes | memoryview) -> TrainedPLR:
        model = joblib.load(io.BytesIO(bytes(blob)))
        if not isinstance(model, TrainedPLR):
            raise TypeError(f"Not a trained classifier: {type(model).__name__}")
        return model


def _2d(features: Array) -> Array:
    array = np.asarray(features, dtype=np.float64)
    return array.reshape(1, -1) if array.ndim == 1 else array


def _softmax(values: Array) -> npt.NDArray[np.float64]:
    shifted = values - values.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float64)


def folds_for(labels: Sequence[str]) -> int:
    """Stratified folds the rarest class allows (0 when it has a single row)."""
    smallest = min(Counter(labels).values())
    return min(MAX_FOLDS, smallest) if smallest >= 2 else 0


def _estimator(penalty: Penalty, C: float, class_weight: str | None, seed: int) -> Pipeline:
    solver = "lbfgs" if penalty == "l2" else "saga"
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(
            C=C,
            l1_ratio=L1_RATIO[penalty],
            solver=solver,
            class_weight=class_weight,
            max_iter=3000 if solver == "saga" else 500,
            warm_start=True,
            random_state=seed,
        ),
    )


def _decision_path(
    X: Array,
    y: Array,
    folds: int,
    *,
    penalty: Penalty,
    class_weight: str | None,
    seed: int,
    c_grid: Sequence[float],
    priors: tuple[Array, Array] | None = None,
) -> list[Array]:
    """Out-of-fold decision values for every C of the grid. Each fold walks the grid from the
    strongest penalty to the weakest, warm-starting every fit from the previous solution: the
    whole path costs a few cold fits."""
    paths: list[Array] = [np.zeros(0)] * len(c_grid)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train, held in splitter.split(X, y):
        X_fold, y_fold = _with_priors(X[train], y[train], priors)
        scaler = StandardScaler().fit(X_fold)
        X_train, X_held = scaler.transform(X_fold), scaler.transform(X[held])
        model = _estimator(penalty, c_grid[0], class_weight, seed)[-1]
        for i, C in enumerate(c_grid):
            model.set_params(C=C)
            model.fit(X_train, y_fold)
            decision = model.decision_function(X_held)
            if paths[i].size == 0:
                shape = (len(y),) if decision.ndim == 1 else (len(y), decision.shape[1])
                paths[i] = np.zeros(shape)
            paths[i][held] = decision
    return paths


def _with_priors(X: Array, y: Array, priors: tuple[Array, Array] | None) -> tuple[Array, Array]:
    if priors is None:
        return X, y
    return np.vstack([X, priors[0]]), np.concatenate([y, priors[1]])


def label_prior_text(name: str, description: str = "") -> str:
    """The text whose embedding stands for a class as a prior row: its name as words
    ("card_arrival" → "card arrival"), then its description when it has one."""
    words = re.sub(r"[_\-]+", " ", name).strip()
    return f"{words}: {description.strip()}" if description.strip() else words


def _proba(decision: Array) -> npt.NDArray[np.float64]:
    if decision.ndim == 1:
        positive = 1.0 / (1.0 + np.exp(-decision))
        return np.column_stack([1.0 - positive, positive])
    return _softmax(decision)


def _fit_calibration(decision: Array, y: Array, classes: list[str]) -> Calibration:
    if decision.ndim == 1:
        platt = LogisticRegression(C=1e4).fit(decision.reshape(-1, 1), y == classes[1])
        return Calibration(slope=float(platt.coef_[0, 0]), intercept=float(platt.intercept_[0]))
    index = np.searchsorted(classes, y)

    def loss(temperature_inverse: float) -> float:
        proba = _softmax(decision * temperature_inverse)
        return float(-np.log(np.clip(proba[np.arange(len(y)), index], 1e-12, 1.0)).mean())

    best = minimize_scalar(loss, bounds=(0.01, 10.0), method="bounded")
    return Calibration(slope=float(best.x))


def train_plr(
    features: Array,
    labels: Sequence[str],
    *,
    penalty: Penalty = "l2",
    class_weight: str | None = "balanced",
    calibrate: bool | None = None,
    seed: int = 0,
    c_grid: Sequence[float] = C_GRID,
    priors: tuple[Array, Sequence[str]] | None = None,
) -> TrainedPLR:
    """Fit a PLR on `features` (rows) → `labels` (strings, ≥ 2 distinct values).

    `priors` = (rows, labels): rows trained on everywhere and never scored (module docstring);
    their labels must be among `labels`, so a prior can't invent a class.

    One cross-validation serves three purposes: it picks C (lowest out-of-fold log-loss), its
    out-of-fold predictions at that C are the model's metrics, and they fit the calibration.
    `calibrate=None` calibrates when the sample allows (see the module docstring).
    """
    X = _2d(features)
    y = np.asarray([str(label) for label in labels])
    if len(X) != len(y):
        raise ValueError(f"{len(X)} feature rows for {len(y)} labels")
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise ValueError("Training needs at least two distinct labels.")
    prior_rows: tuple[Array, Array] | None = None
    if priors is not None and len(priors[1]):
        prior_rows = (_2d(priors[0]), np.asarray([str(label) for label in priors[1]]))
        if len(prior_rows[0]) != len(prior_rows[1]) or prior_rows[0].shape[1] != X.shape[1]:
            raise ValueError(
                f"{prior_rows[0].shape} prior rows for {len(prior_rows[1])} labels and "
                f"{X.shape[1]} feature columns"
            )
        unknown = sorted(set(prior_rows[1].tolist()) - set(classes))
        if unknown:
            raise ValueError(f"Priors for classes without labelled rows: {', '.join(unknown)}")
    folds = folds_for(y.tolist())
    smallest = min(Counter(y.tolist()).values())
    grid = sorted(c_grid)
    metrics: dict[str, Any] = {"n": len(y), "classes": dict(sorted(Counter(y.tolist()).items()))}
    if prior_rows is not None:
        metrics["priors"] = len(prior_rows[1])
    C, calibration = 1.0, None
    # One BLAS thread: these are small problems (hundreds to thousands of rows), where threads
    # cost more than they give, and in a worker beside torch's own threads (MiniLM) they spin
    # against each other: 1,000 × 775 took 16.6 s with the default threads on a busy 2-core
    # machine, 2.1 s with one (bench/learning.py measured 194 s beside MiniLM).
    with threadpool_limits(limits=1), warnings.catch_warnings():
        # A tight penalty on few rows converges fine for prediction's purposes; saga's
        # warnings on small grids say nothing actionable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if folds >= 2:
            paths = _decision_path(
                X,
                y,
                folds,
                penalty=penalty,
                class_weight=class_weight,
                seed=seed,
                c_grid=grid,
                priors=prior_rows,
            )
            losses = [log_loss(y, np.clip(_proba(d), 1e-12, 1), labels=classes) for d in paths]
            best = int(np.argmin(losses))
            C = grid[best]
            if calibrate is None:
                calibrate = smallest >= CALIBRATE_MIN_PER_CLASS
            if calibrate:
                calibration = _fit_calibration(paths[best], y, classes)
                out_of_fold = calibration.apply(paths[best])
            else:
                out_of_fold = _proba(paths[best])
            metrics |= evaluate(y.tolist(), out_of_fold, classes) | {
                "evaluated": f"{folds}-fold out-of-fold"
            }
        estimator = _estimator(penalty, C, class_weight, seed).fit(*_with_priors(X, y, prior_rows))
    return TrainedPLR(
        estimator=estimator,
        classes=classes,
        penalty=penalty,
        C=C,
        calibration=calibration,
        metrics=metrics,
    )


def evaluate(
    labels: Sequence[str], probabilities: Array, classes: Sequence[str]
) -> dict[str, float | None]:
    """Accuracy, macro-F1 and log-loss; AUC and Brier score for two classes."""
    y = np.asarray([str(label) for label in labels])
    proba = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    predicted = np.asarray(classes)[proba.argmax(axis=1)]
    result: dict[str, float | None] = {
        "accuracy": round(float(accuracy_score(y, predicted)), 4),
        "macro_f1": round(float(f1_score(y, predicted, average="macro", zero_division=0)), 4),
        "log_loss": round(float(log_loss(y, proba, labels=list(classes))), 4),
    }
    if len(classes) == 2:
        positive = (y == classes[1]).astype(int)
        single_class = positive.min() == positive.max()
        result["auc"] = (
            None if single_class else round(float(roc_auc_score(positive, proba[:, 1])), 4)
        )
        result["brier"] = round(float(brier_score_loss(positive, proba[:, 1])), 4)
    return result


# --- Explanations -------------------------------------------------------------------------------

_WORD = re.compile(r"\S+")
MAX_EXPLAINED_WORDS = 60


@dataclass(frozen=True)
class WordWeight:
    word: str
    start: int
    end: int
    weight: float  # score with the word − score without it: > 0 the word helped


def explain_words(
    text: str,
    score: Callable[[list[str]], Sequence[float] | Array],
    *,
    max_words: int = MAX_EXPLAINED_WORDS,
) -> tuple[float, list[WordWeight]]:
    """Occlusion: score `text` and each variant with one word left out, in one call of
    `score` (so the embedder sees one batch). Returns the full score and a weight per word, in
    text order. Texts longer than `max_words` words are explained on their first `max_words`."""
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)][:max_words]
    variants = [text] + [
        (text[:start] + text[end:]).replace("  ", " ").strip() for start, end in spans
    ]
    scores = [float(value) for value in score(variants)]
    full = scores[0]
    return full, [
        WordWeight(word=text[start:end], start=start, end=end, weight=round(full - without, 4))
        for (start, end), without in zip(spans, scores[1:], strict=True)
    ]
