"""The scikit-learn pieces the offline studies (drafting.evaluation) use besides the PLR: a
TF-IDF text classifier, k-fold splits and the classification scores. They live here so that
scikit-learn is imported in one package only (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline

Indices = npt.NDArray[np.int_]


def tfidf_proba(
    texts: Sequence[str],
    labels: npt.NDArray[np.int_],
    apply: Sequence[str],
    *,
    width: int,
    strength_c: float,
    seed: int,
) -> npt.NDArray[np.float64]:
    """P(class | text) for `apply` from a logistic regression on TF-IDF words and bigrams,
    one column per class 0..width-1 (a class absent from `labels` gets 0). Uniform when no
    word occurs twice: then there is nothing to learn from the text."""
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
        LogisticRegression(C=strength_c, max_iter=1000, random_state=seed),
    )
    try:
        model.fit(list(texts), labels)
    except ValueError:
        return np.full((len(apply), width), 1.0 / width)
    out = np.zeros((len(apply), width))
    out[:, model.classes_] = model.predict_proba(list(apply))
    return out


def kfold_splits(n: int, folds: int, *, seed: int) -> Iterator[tuple[Indices, Indices]]:
    """(outside, inside) index pairs of `folds` shuffled folds over n rows."""
    splitter = KFold(folds, shuffle=True, random_state=seed)
    yield from splitter.split(np.arange(n))


def stratified_splits(
    labels: npt.NDArray[np.str_], folds: int, *, seed: int
) -> Iterator[tuple[Indices, Indices]]:
    """(fit, held-out) index pairs of `folds` shuffled folds keeping each label's share."""
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    yield from splitter.split(np.zeros((len(labels), 1)), labels)


def classification_scores(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the labels present in `truth`, rounded to 4 places."""
    return {
        "accuracy": round(float(accuracy_score(truth, predicted)), 4),
        "macro_f1": round(
            float(
                f1_score(
                    truth, predicted, labels=sorted(set(truth)), average="macro", zero_division=0
                )
            ),
            4,
        ),
    }
