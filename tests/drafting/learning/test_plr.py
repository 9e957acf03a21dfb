"""drafting.learning.plr: the penalised logistic regression under the scorer, the intent classifier and
the replay / few-shot commands. Synthetic features with a known answer; no database."""

from __future__ import annotations

import numpy as np
import pytest

from drafting.learning.plr import PENALTIES, explain_words, label_prior_text, train_plr


def separable(n: int, *, dims: int = 20, noise: float = 0.5, seed: int = 0) -> tuple:
    """Two classes told apart by the first dimension only; the rest is noise."""
    rng = np.random.default_rng(seed)
    labels = np.array(["1" if i % 2 else "0" for i in range(n)])
    X = rng.normal(size=(n, dims))
    X[:, 0] += np.where(labels == "1", 2.0, -2.0) + rng.normal(scale=noise, size=n)
    return X.astype(np.float32), labels.tolist()


@pytest.mark.parametrize("penalty", PENALTIES)
def test_each_penalty_learns_the_signal_and_reports_out_of_fold_metrics(penalty: str) -> None:
    X, y = separable(120)
    model = train_plr(X, y, penalty=penalty)  # type: ignore[arg-type]
    assert model.classes == ["0", "1"]
    assert model.metrics["n"] == 120
    assert model.metrics["classes"] == {"0": 60, "1": 60}
    assert model.metrics["evaluated"] == "5-fold out-of-fold"
    assert model.metrics["auc"] > 0.95
    assert model.metrics["accuracy"] > 0.9
    assert 0 <= model.metrics["brier"] < 0.1
    X_new, y_new = separable(200, seed=1)
    assert np.mean(np.array(model.predict(X_new)) == np.array(y_new)) > 0.9
    probabilities = model.predict_proba(X_new)
    assert probabilities.shape == (200, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_l1_puts_its_weight_on_the_informative_dimension() -> None:
    X, y = separable(200, dims=40)
    model = train_plr(X, y, penalty="l1")
    weights = np.abs(model.estimator[-1].coef_[0])
    assert weights.argmax() == 0
    assert np.count_nonzero(weights[1:] > 1e-6) < 39  # some noise dimensions dropped outright


def test_strength_is_chosen_by_cross_validation_from_the_grid() -> None:
    # Pure noise: the least penalised model overfits, so CV picks the strongest penalty.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 30)).astype(np.float32)
    y = ["1" if i % 2 else "0" for i in range(80)]
    model = train_plr(X, y, c_grid=(0.001, 0.1, 10.0))
    assert model.C == 0.001
    assert model.metrics["auc"] < 0.75


def test_calibration_needs_thirty_rows_a_class() -> None:
    assert train_plr(*separable(60)).calibrated  # 30 a class
    assert not train_plr(*separable(40)).calibrated
    assert not train_plr(*separable(60), calibrate=False).calibrated


def test_multiclass_with_temperature_calibration() -> None:
    rng = np.random.default_rng(5)
    centres = rng.normal(scale=3, size=(4, 10))
    labels = [f"intent-{i % 4}" for i in range(160)]
    X = np.array([centres[i % 4] + rng.normal(size=10) for i in range(160)], dtype=np.float32)
    model = train_plr(X, labels)
    assert model.calibrated and model.classes == [f"intent-{i}" for i in range(4)]
    assert model.metrics["accuracy"] > 0.9 and "auc" not in model.metrics
    assert model.predict(centres.astype(np.float32)) == model.classes


def test_a_handful_of_rows_trains_without_cross_validation() -> None:
    X, y = separable(3)  # one "1", two "0": nothing to cross-validate
    model = train_plr(X, y)
    assert model.C == 1.0
    assert "accuracy" not in model.metrics
    assert model.metrics["n"] == 3


def test_the_stored_model_predicts_what_the_trained_one_did() -> None:
    X, y = separable(100)
    model = train_plr(X, y)
    restored = type(model).from_bytes(model.to_bytes())
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
    assert restored.metrics == model.metrics and restored.C == model.C
    with pytest.raises(TypeError):
        type(model).from_bytes(b"\x80\x04K\x01.")  # a pickled 1, not a classifier


@pytest.mark.parametrize(
    ("labels", "message"),
    [(["a", "a", "a"], "two distinct labels"), (["a", "b"], "3 feature rows for 2 labels")],
)
def test_bad_training_input_is_refused(labels: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train_plr(np.zeros((3, 2), dtype=np.float32), labels)


def test_occlusion_weighs_each_word_by_the_score_it_carries() -> None:
    def score(texts: list[str]) -> list[float]:
        # A stand-in scorer: "sorry" costs 0.5, "refund" gives 0.25.
        return [0.5 - 0.5 * ("sorry" in t) + 0.25 * ("refund" in t) for t in texts]

    text = "sorry  no refund today"
    full, words = explain_words(text, score)
    assert full == 0.25
    assert [(w.word, w.weight) for w in words] == [
        ("sorry", -0.5),
        ("no", 0.0),
        ("refund", 0.25),
        ("today", 0.0),
    ]
    assert all(text[w.start : w.end] == w.word for w in words)
    _, first_two = explain_words(text, score, max_words=2)
    assert [w.word for w in first_two] == ["sorry", "no"]


def twins(n_per_class: int, *, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Classes "b" and "c" drawn from one distribution (no labelled row tells them apart),
    "a" apart from both on the first dimension."""
    rng = np.random.default_rng(seed)
    labels = [label for label in "abc" for _ in range(n_per_class)]
    X = rng.normal(size=(len(labels), 6))
    X[:, 0] += np.where(np.array(labels) == "a", 3.0, 0.0)
    return X, labels


def test_prior_rows_are_trained_on_and_never_scored() -> None:
    X, y = twins(8)
    probe = np.zeros((2, 6))
    probe[:, 1] = [4.0, -4.0]
    # "b"'s prior along +dimension 1 and "c"'s along −1, then the other way round: the priors
    # alone decide which twin the probes go to.
    model = train_plr(X, y, priors=(probe, ["b", "c"]))
    swapped = train_plr(X, y, priors=(probe[::-1], ["b", "c"]))

    assert model.predict(probe) == ["b", "c"]
    assert swapped.predict(probe) == ["c", "b"]
    assert model.metrics["n"] == 24  # the labelled rows only
    assert model.metrics["classes"] == {"a": 8, "b": 8, "c": 8}
    assert model.metrics["priors"] == 2
    assert "priors" not in train_plr(X, y).metrics


@pytest.mark.parametrize(
    ("rows", "labels", "message"),
    [
        (np.zeros((1, 6)), ["z"], "Priors for classes without labelled rows: z"),
        (np.zeros((1, 5)), ["a"], "feature columns"),
        (np.zeros((2, 6)), ["a"], "prior rows for 1 labels"),
    ],
)
def test_bad_priors_are_refused(rows: np.ndarray, labels: list[str], message: str) -> None:
    X, y = twins(4)
    with pytest.raises(ValueError, match=message):
        train_plr(X, y, priors=(rows, labels))


def test_a_prior_text_is_the_name_in_words_then_the_description() -> None:
    assert label_prior_text("card_arrival") == "card arrival"
    assert label_prior_text("lost-or-stolen_card", "  ") == "lost or stolen card"
    assert (
        label_prior_text("refund", " Money back for an order ") == "refund: Money back for an order"
    )
