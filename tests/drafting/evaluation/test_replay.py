"""Cascade replay (drafting.evaluation.replay, manage.py cascade_replay) on a synthetic table built so the
right cascade is obvious, on a slice of FrugalGPT's recorded OVERRULING answers, and on bad
input."""

from __future__ import annotations

import csv
import json
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from drafting.evaluation import datasets, replay

OVERRULING = datasets.shared_data_dir() / "frugalgpt_overruling" / "overruling_dev.csv"
# Names with the characters real model names carry.
CHEAP, MID, BIG = "org/cheap-1.0", "mid.v2", "vendor/big-model.x"
PROMPT = "Context: decide whether the case below is an overruling.\n\nSentence: "


def _synthetic(path: Path, n: int, seed: int) -> None:
    """Queries whose right answer shows in their words ("overruled" → yes). CHEAP ($0.0001)
    always says "Yes"; MID ($0.001) is right 80 % of the time; BIG ($0.01) 95 %. A cascade that
    learns the words can let CHEAP answer the yes-queries and send the rest up."""
    rng = np.random.default_rng(seed)
    yes_words = ["overruled", "disavow", "abrogated", "no longer good law"]
    no_words = ["affirmed", "remanded", "the jury found", "we agree with"]
    rows = []
    for i in range(n):
        label = "Yes" if rng.random() < 0.5 else "No"
        words = yes_words if label == "Yes" else no_words
        query = f"{PROMPT}item {i}: {rng.choice(words)} in {rng.choice(['ohio', 'texas', 'utah'])}"
        answers = {CHEAP: "Yes"}
        for model, accuracy in ((MID, 0.8), (BIG, 0.95)):
            right = rng.random() < accuracy
            answers[model] = label if right else ("No" if label == "Yes" else "Yes")
        row: dict[str, object] = {"query": query}
        for model, cost in ((CHEAP, 0.0001), (MID, 0.001), (BIG, 0.01)):
            row[f"{model}_answer"] = answers[model] + ("." if rng.random() < 0.3 else "")
            row[f"{model}_cost"] = cost
            row[model] = int(answers[model] == label)
        rows.append(row)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def tables(tmp_path: Path) -> tuple[Path, Path]:
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    _synthetic(train, 240, seed=1)
    _synthetic(test, 240, seed=2)
    return train, test


def test_read_answers_finds_models_whose_names_hold_slashes_dots_and_dashes(
    tables: tuple[Path, Path],
) -> None:
    table = replay.read_answers(tables[0])
    assert table.models == [CHEAP, MID, BIG]
    assert table.n == 240
    assert table.cost[:, 0] == pytest.approx(0.0001)
    assert set(table.answer(CHEAP)) <= {"Yes", "Yes."}
    # "Yes." and "yes" are one answer once normalised.
    assert replay.normalise_answer(" Yes.") == replay.normalise_answer("yes") == "yes"


def test_reference_answers_come_from_the_models_marked_right(tables: tuple[Path, Path]) -> None:
    table = replay.read_answers(tables[0])
    reference = replay.reference_answers(table)
    yes_words = ("overruled", "disavow", "abrogated", "no longer good law")
    expected = [
        "yes" if any(w in q[len(PROMPT) :] for w in yes_words) else "no" for q in table.queries
    ]
    known = [(r, e) for r, e in zip(reference, expected, strict=True) if r is not None]
    # Some row has every model wrong (then it is unknown); every known one is right.
    assert len(known) > 0.95 * table.n
    assert all(r == e for r, e in known)


def test_replay_lets_the_cheap_model_answer_what_the_words_give_away(
    tables: tuple[Path, Path],
) -> None:
    train, test = (replay.read_answers(path) for path in tables)
    result = replay.replay(train, test, seed=0, embedding="none")
    assert result["best_single"]["model"] == BIG
    big_accuracy = float(test.quality[:, 2].mean())
    assert result["best_single"]["accuracy"] == pytest.approx(big_accuracy, abs=1e-6)
    tiers = [tier["model"] for tier in result["cascade"]["tiers"]]
    assert tiers[0] == CHEAP
    # CHEAP's "Yes" is kept on about half of the queries (the yes-words): the cascade costs
    # well under BIG's and, with the word guesses, is at least as accurate.
    assert result["cascade"]["stop_share"][0] > 0.35
    assert result["cost_saving"] > 0.3
    assert result["cascade"]["accuracy"] >= big_accuracy - 0.01
    # The frontier: more budget never buys less accuracy on train; on test every point is a
    # real plan with a cost and an accuracy.
    assert len(result["pareto"]) == len(replay.PARETO_SHARES)
    assert all(0 <= p["accuracy"] <= 1 and p["cost_per_query"] > 0 for p in result["pareto"])


@pytest.mark.slow
def test_command_prints_the_issue_s_json(tables: tuple[Path, Path]) -> None:
    out, err = StringIO(), StringIO()
    call_command(
        "cascade_replay",
        "--train", str(tables[0]),
        "--test", str(tables[1]),
        "--json",
        "--seed", "3",
        stdout=out,
        stderr=err,
    )  # fmt: skip
    result = json.loads(out.getvalue())
    assert set(result["best_single"]) >= {"model", "accuracy", "cost_per_query"}
    assert set(result["cascade"]) >= {"tiers", "accuracy", "cost_per_query"}
    assert all(set(t) == {"model", "threshold"} for t in result["cascade"]["tiers"])
    assert result["cost_saving"] == pytest.approx(
        1 - result["cascade"]["cost_per_query"] / result["best_single"]["cost_per_query"],
        abs=1e-5,
    )
    assert all({"accuracy", "cost_per_query"} <= set(p) for p in result["pareto"])
    assert result["seed"] == 3
    assert result["embedding"] == "minilm"  # the default: MiniLM guesses beside TF-IDF
    assert "scorer" in err.getvalue()  # progress on stderr, not in the JSON


@pytest.mark.slow
def test_overruling_slice() -> None:
    """300 recorded rows, half to train, chains of two: the cascade keeps GPT-4-level accuracy
    for a fraction of its cost (the acceptance run — all rows, three tiers, MiniLM, several
    seeds — is bench/replay.py)."""
    table = replay.read_answers(OVERRULING)
    rows = table.rows(np.arange(300))
    train_rows, test_rows = replay.split_rows(rows.n, seed=0)
    train, test = rows.rows(train_rows), rows.rows(test_rows)
    result = replay.replay(train, test, seed=0, embedding="none", max_tiers=2)
    accuracy = train.quality.mean(axis=0)
    assert result["best_single"]["model"] == train.models[int(np.argmax(accuracy))]
    assert result["cost_saving"] > 0.6
    assert result["accuracy_gap"] > -0.02
    assert result["cascade"]["tiers"][-1]["threshold"] == 0.0


def test_when_the_cheapest_model_is_the_best_there_is_nothing_to_cascade(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    _synthetic(path, 60, seed=5)
    table = replay.read_answers(path)
    table.quality[:, 0] = 1.0  # CHEAP is now always right
    result = replay.replay(table.rows(range(30)), table.rows(range(30, 60)), embedding="none")
    assert result["candidates"] == [CHEAP]
    assert result["cascade"]["tiers"] == [{"model": CHEAP, "threshold": 0.0}]
    assert result["cost_saving"] == 0.0
    assert result["accuracy_gap"] == 0.0


def test_split_rows_is_a_seeded_partition() -> None:
    train, test = replay.split_rows(101, seed=4)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(101))
    assert len(train) == 50 or len(train) == 51
    again, _ = replay.split_rows(101, seed=4)
    assert (again == train).all()
    assert not (replay.split_rows(101, seed=5)[0] == train).all()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,2\n", "no 'query' column"),
        ("query,m_answer,m_cost\nq,Yes,0.1\n", "no models found"),
        ("query,m_answer,m_cost,m\n", "no rows"),
        ("query,m_answer,m_cost,m\nq,Yes,cheap,1\n", "'m_cost' is not a number: 'cheap'"),
        ("query,m_answer,m_cost,m\nq,Yes,nan,1\n", "not finite"),
        ("query,m_answer,m_cost,m\nq,Yes\n", "too few fields"),
    ],
)
def test_bad_csv_is_a_command_error(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("cascade_replay", "--train", str(bad), "--test", str(bad), "--json")


def test_missing_file_and_mismatched_models_are_command_errors(
    tmp_path: Path, tables: tuple[Path, Path]
) -> None:
    with pytest.raises(CommandError, match="No such file"):
        call_command("cascade_replay", "--train", str(tmp_path / "nope.csv"), "--test", "x")
    other = tmp_path / "other.csv"
    other.write_text("query,z_answer,z_cost,z\nq,Yes,0.1,1\n")
    with pytest.raises(CommandError, match="lack models"):
        call_command(
            "cascade_replay", "--train", str(tables[0]), "--test", str(other), "--embedding", "none"
        )
