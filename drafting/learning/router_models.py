"""The scikit-learn pieces of the offline routing replay (drafting.evaluation.routing): a
fixed-strength logistic regression that the router fits a few hundred times per split, and the
words-plus-character-n-grams query guesser. They live in learning so that scikit-learn stays in
this package only (docs/architecture.md)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline, make_union

Array = npt.NDArray[np.float64]


@dataclass
class Logit:
    """P(class | x) over integer classes, or a constant where the fit saw one class only (a
    logistic regression cannot be fitted then, and the constant is the right answer)."""

    constant: int | None
    model: Any = None

    @classmethod
    def fit(cls, X: Array, y: npt.NDArray[np.int_], *, strength_c: float) -> Logit:
        """A fixed C, no internal cross-validation: the router fits ~1,300 of these per split
        and C = 0.3 and C = 1 gave the same results in the research (a C grid would multiply
        the time by about 15)."""
        classes = np.unique(y)
        if len(classes) < 2:
            return cls(constant=int(classes[0]) if len(classes) else 0)
        with warnings.catch_warnings():
            # A few hundred tiny fits: an unconverged last digit does not move a plan.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=strength_c, max_iter=500)
            model.fit(X, y)
        return cls(constant=None, model=model)

    def proba(self, X: Array, classes: Sequence[int]) -> Array:
        """One column per entry of `classes`, zero for a class the fit never saw."""
        out = np.zeros((len(X), len(classes)))
        column = {c: j for j, c in enumerate(classes)}
        if self.constant is not None:
            out[:, column[self.constant]] = 1.0
            return out
        proba = self.model.predict_proba(X)
        for j, c in enumerate(self.model.classes_):
            out[:, column[int(c)]] = proba[:, j]
        return out


def word_char_tfidf_proba(
    texts: Sequence[str],
    labels: npt.NDArray[np.int_],
    apply: Sequence[str],
    *,
    width: int,
    strength_c: float,
) -> Array:
    """P(class | text) from TF-IDF words (1–2) and `char_wb` 2–5-grams, one column per class
    0..width-1. Character n-grams catch word forms ("overrul…", "disapprov…") that whole words
    split into many rare features. Uniform when fewer than two classes are present or no
    n-gram occurs twice."""
    uniform = np.full((len(apply), width), 1.0 / width)
    if len(set(labels.tolist())) < 2:
        return uniform
    model = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
        ),
        LogisticRegression(C=strength_c, max_iter=2000),
    )
    try:
        model.fit(list(texts), labels)
    except ValueError:  # an empty vocabulary: nothing to learn from the text
        return uniform
    out = np.zeros((len(apply), width))
    out[:, model.classes_] = model.predict_proba(list(apply))
    return out
