"""Tens-of-shot classification, measured: sample N labelled texts per class, embed them, fit the
penalised logistic regression (`drafting.learning.plr.train_plr`), and score it on a held-out test set.

`manage.py fewshot_eval` runs one evaluation from two CSV files; `bench/fewshot.py` runs the
Banking77 and FOMC studies with it. Also here: the readers for those data sets (CSV, and the
FOMC spreadsheets, read with the standard library: an .xlsx is zipped XML).

Method (`evaluate`):
1. Sample: per class, a seeded shuffle of its rows (sorted by text first), then the first N. The same seed gives the
   same rows, and a smaller N is a subset of a larger one (a learning curve compares like with
   like). A class with fewer than N rows gives all it has, and the result says so.
2. Embed train and test texts with one `Embedder` (L2-normalised rows).
3. Features: the embedding, centred on the training rows' mean and L2-normalised again
   ("center" normalisation, the default). Sentence embeddings of one domain share a large
   common component; removing it leaves the directions that tell the classes apart, before
   train_plr standardises each dimension. "none" gives the raw embedding.
4. Label priors (on by default, as in the intent classifier): each class's name as words
   ("card_arrival" → "card arrival", `plr.label_prior_text`), embedded and featurised like a
   training row, joins the fit as a prior row (trained on, never scored).
5. Fit the PLR (L2 penalty, C by cross-validation, balanced class weights), predict the test
   set, report accuracy, macro-F1, per-class counts, C and timings.
"""

from __future__ import annotations

import csv
import random
import re
import time
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree

import numpy as np

from drafting.engine.embeddings import Embedder, Vectors
from drafting.evaluation.datasets import shared_data_dir
from drafting.learning.baselines import classification_scores
from drafting.learning.plr import Penalty, label_prior_text, train_plr

Normalisation = Literal["center", "none"]
NORMALISATIONS: tuple[Normalisation, ...] = ("center", "none")
LABEL_COLUMNS = ("label", "category")  # Banking77's CSVs call the label "category"
# The FOMC data set's label codes (Shah et al., 2023).
FOMC_LABELS = {"0": "dovish", "1": "hawkish", "2": "neutral"}
FOMC_SEEDS = (5768, 78516, 944601)


class FewShotError(ValueError):
    """The data can't be evaluated as asked (a missing file or column, too few classes)."""


@dataclass(frozen=True)
class Example:
    text: str
    label: str


# --- reading data ------------------------------------------------------------------------------


def read_examples(path: Path | str) -> list[Example]:
    """Rows of a CSV with a `text` column and a `label` (or `category`) column; blank texts
    are skipped."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            label_column = next((name for name in LABEL_COLUMNS if name in columns), None)
            if "text" not in columns or label_column is None:
                raise FewShotError(
                    f"{path}: needs a header with `text` and `label` columns; found "
                    f"{', '.join(columns) or 'no header'}"
                )
            reader.fieldnames = columns
            rows = [
                Example(text=row["text"].strip(), label=(row[label_column] or "").strip())
                for row in reader
                if (row.get("text") or "").strip()
            ]
    except FileNotFoundError as exc:
        raise FewShotError(f"{path}: no such file") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FewShotError(f"{path}: not a readable UTF-8 CSV ({exc})") from exc
    unlabelled = sum(1 for row in rows if not row.label)
    if unlabelled:
        raise FewShotError(f"{path}: {unlabelled} rows have text but no label")
    if not rows:
        raise FewShotError(f"{path}: no rows")
    return rows


def write_examples(path: Path, examples: Sequence[Example]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([example.text, example.label] for example in examples)


_XLSX = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def read_xlsx(path: Path) -> list[dict[str, str]]:
    """The first sheet of an .xlsx as dicts keyed by the header row (cell values as text).

    The standard library's parser is fine here (S314): it reads the public data sets in
    shared/data, never an uploaded file, and it expands no external entities."""
    with zipfile.ZipFile(path) as book:
        shared: list[str] = []
        if "xl/sharedStrings.xml" in book.namelist():
            root = ElementTree.fromstring(book.read("xl/sharedStrings.xml"))  # noqa: S314
            shared = ["".join(t.text or "" for t in item.iter(f"{_XLSX}t")) for item in root]
        sheet = ElementTree.fromstring(book.read("xl/worksheets/sheet1.xml"))  # noqa: S314
    table: list[dict[int, str]] = []
    for row in sheet.iter(f"{_XLSX}row"):
        cells: dict[int, str] = {}
        for cell in row.iter(f"{_XLSX}c"):
            column = _column_index(cell.get("r", ""))
            kind = cell.get("t")
            if kind == "inlineStr":
                value = "".join(t.text or "" for t in cell.iter(f"{_XLSX}t"))
            else:
                raw = cell.findtext(f"{_XLSX}v") or ""
                value = shared[int(raw)] if kind == "s" and raw else raw
            cells[column] = value
        table.append(cells)
    if not table:
        return []
    header = table[0]
    return [{name: cells.get(i, "") for i, name in header.items()} for cells in table[1:]]


def _column_index(reference: str) -> int:
    letters = re.match(r"[A-Z]+", reference)
    index = 0
    for letter in letters.group(0) if letters else "A":
        index = index * 26 + ord(letter) - ord("A") + 1
    return index - 1


def chatgpt_label(text_output: str) -> str | None:
    """ChatGPT's zero-shot answer ("HAWKISH\\n\\nThe sentence…") as a label, None if it named
    no class first."""
    match = re.search(r"\b(hawkish|dovish|neutral)\b", text_output, re.IGNORECASE)
    return match.group(1).lower() if match else None


@dataclass(frozen=True)
class FomcSplit:
    seed: int
    train: list[Example]
    test: list[Example]
    chatgpt: list[str | None]  # ChatGPT's zero-shot label per test row


def load_fomc(seed: int, folder: Path | None = None) -> FomcSplit:
    """One of the data set's three splits: train from its spreadsheet, test = the sentences
    ChatGPT answered zero-shot, with its answers."""
    folder = folder or shared_data_dir() / "fomc_hawkish_dovish"
    train = [
        Example(text=row["sentence"].strip(), label=FOMC_LABELS[row["label"].split(".")[0]])
        for row in read_xlsx(folder / f"lab-manual-combine-train-{seed}.xlsx")
        if row.get("sentence", "").strip()
    ]
    with (folder / f"chatgpt_lab-manual-combine_{seed}.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    test = [
        Example(text=row["original_sent"], label=FOMC_LABELS[row["true_label"]]) for row in rows
    ]
    return FomcSplit(
        seed=seed,
        train=train,
        test=test,
        chatgpt=[chatgpt_label(row["text_output"]) for row in rows],
    )


# --- the evaluation ----------------------------------------------------------------------------


def sample_per_class(
    examples: Sequence[Example], per_class: int, *, seed: int
) -> tuple[list[Example], dict[str, int]]:
    """Up to `per_class` rows of each class (seeded; nested in `per_class`), and the classes
    that had fewer, with how many they had."""
    if per_class < 1:
        raise FewShotError("per_class must be at least 1")
    by_class: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_class[example.label].append(example)
    chosen: list[Example] = []
    short: dict[str, int] = {}
    for label in sorted(by_class):
        # Sorted first, so the draw depends on the rows, not on their order in the file.
        rows = sorted(by_class[label], key=lambda example: example.text)
        # One generator per class, seeded by (seed, label): adding a class to the file doesn't
        # change which rows the others get.
        random.Random(f"{seed}:{label}").shuffle(rows)  # noqa: S311 - a seeded draw, not crypto
        chosen += rows[:per_class]
        if len(rows) < per_class:
            short[label] = len(rows)
    return chosen, short


def features(
    train: Vectors, test: Vectors, normalisation: Normalisation
) -> tuple[Vectors, Vectors]:
    """See the module docstring, step 3. The mean comes from the training rows only."""
    if normalisation == "none":
        return train, test
    mean = train.mean(axis=0, keepdims=True)

    def centred(rows: Vectors) -> Vectors:
        shifted = rows - mean
        norms = np.linalg.norm(shifted, axis=1, keepdims=True)
        return (shifted / np.where(norms == 0, 1, norms)).astype(np.float32)

    return centred(train), centred(test)


def evaluate(
    *,
    train: Sequence[Example],
    test: Sequence[Example],
    embedder: Embedder,
    per_class: int,
    seed: int = 0,
    normalisation: Normalisation = "center",
    penalty: Penalty = "l2",
    label_priors: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Sample, embed, fit, score (module docstring). Test rows of classes absent from the
    training file count as errors: the classifier can't name them."""
    say = progress or (lambda message: None)
    sample, short = sample_per_class(train, per_class, seed=seed)
    classes = sorted({example.label for example in sample})
    if len(classes) < 2:
        raise FewShotError(f"the training file has {len(classes)} class; at least 2 are needed")
    unknown = sorted({example.label for example in test} - set(classes))
    started = time.perf_counter()
    say(f"embedding {len(sample)} training and {len(test)} test texts with {embedder.name}")
    train_vectors = embedder.embed([example.text for example in sample])
    prior_vectors = embedder.embed([label_prior_text(label) for label in classes if label_priors])
    test_vectors = embedder.embed([example.text for example in test])
    embedded = time.perf_counter()
    X_train, X_test = features(train_vectors, test_vectors, normalisation)
    priors = None
    if label_priors:
        # The same transform as the training rows (centred on their mean, not the priors').
        priors = (features(train_vectors, prior_vectors, normalisation)[1], classes)
    say(f"fitting the PLR on {len(sample)} rows, {len(classes)} classes")
    # train_plr fits on one BLAS thread (8× faster here on two busy cores, see plr.py).
    model = train_plr(
        X_train,
        [example.label for example in sample],
        penalty=penalty,
        seed=seed,
        priors=priors,
    )
    fitted = time.perf_counter()
    predicted = model.predict(X_test)
    truth = [example.label for example in test]
    return {
        **classification_scores(truth, list(predicted)),
        "n_train": len(sample),
        "n_test": len(test),
        "per_class": per_class,
        "seed": seed,
        "embedding": embedder.name,
        "normalisation": normalisation,
        "penalty": penalty,
        "label_priors": label_priors,
        "C": model.C,
        "classes": len(classes),
        "train_counts": dict(sorted(Counter(example.label for example in sample).items())),
        "test_counts": dict(sorted(Counter(truth).items())),
        "short_classes": short,
        "unknown_test_classes": unknown,
        "cv_accuracy": model.metrics.get("accuracy"),
        "seconds": {
            "embed": round(embedded - started, 2),
            "fit": round(fitted - embedded, 2),
            "total": round(time.perf_counter() - started, 2),
        },
    }
