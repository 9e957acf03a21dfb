"""The routing strategy of the offline replay (drafting.evaluation.routing, replay(strategy=…),
`cascade_replay --strategy`, bench/replay.py's hard task) on small synthetic tables built so the
right route is obvious, and on hand-made probability tables where only look-ahead finds it."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from drafting.evaluation import replay, routing
from drafting.evaluation.replay import AnswerTable
from drafting.evaluation.routing import OTHER, Router, RoutingConfig

YES_SAYER, NO_SAYER, BIG = "org/yes-sayer", "no.sayer-2", "vendor/big-model.x"
PRICES = {YES_SAYER: 0.0001, NO_SAYER: 0.0002, BIG: 0.01}
PROMPT = "Context: decide whether the case below is an overruling.\n\nSentence: "
YES_WORDS = ("overruled", "disavow", "abrogated", "no longer good law")
NO_WORDS = ("affirmed", "remanded", "the jury found", "we agree with")
NEUTRAL = ("the court", "in this matter", "the parties", "as stated")


def _table(n: int, seed: int, *, telling: bool = True) -> AnswerTable:
    """YES_SAYER ($0.0001) always says "Yes", NO_SAYER ($0.0002) always "No", BIG ($0.01) is
    right 95 % of the time. With `telling` queries, the words give the right answer away: a
    router that reads them asks the sayer that agrees and never BIG. Without, nothing cheap
    can tell the two apart."""
    rng = np.random.default_rng(seed)
    queries, labels = [], []
    for i in range(n):
        label = "Yes" if rng.random() < 0.5 else "No"
        words = (YES_WORDS if label == "Yes" else NO_WORDS) if telling else NEUTRAL
        place = rng.choice(["ohio", "texas", "utah"])
        queries.append(f"{PROMPT}item {i}: {rng.choice(words)} in {place}")
        labels.append(label)
    flip = {"Yes": "No", "No": "Yes"}
    answers = {
        YES_SAYER: ["Yes."] * n,
        NO_SAYER: [" no"] * n,
        BIG: [label if rng.random() < 0.95 else flip[label] for label in labels],
    }
    models = list(PRICES)
    quality = np.column_stack(
        [
            [
                float(replay.normalise_answer(a) == label.lower())
                for a, label in zip(answers[m], labels, strict=True)
            ]
            for m in models
        ]
    )
    cost = np.column_stack([np.full(n, PRICES[m]) for m in models])
    return AnswerTable(queries, models, [answers[m] for m in models], quality, cost)


def _write(table: AnswerTable, path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["query"]
            + [f"{m}{suffix}" for m in table.models for suffix in ("_answer", "_cost", "")]
        )
        for i in range(table.n):
            row: list[Any] = [table.queries[i]]
            for j in range(len(table.models)):
                row += [table.answers[j][i], table.cost[i, j], int(table.quality[i, j])]
            writer.writerow(row)
    return path


FAST = RoutingConfig(lambdas=tuple(float(x) for x in np.logspace(0, 3.5, 12)))


@pytest.mark.slow
def test_router_asks_the_cheap_model_the_guessers_agree_with() -> None:
    train, test = _table(160, seed=1), _table(160, seed=2)
    affix = replay.shared_affixes(train.queries)
    texts = (
        [replay.strip_affixes(q, *affix) for q in train.queries],
        [replay.strip_affixes(q, *affix) for q in test.queries],
    )
    reference = replay.reference_answers(train)
    guesses = replay.guess_answers(texts[0], texts[1], None, reference, seed=0)
    outcome = routing.route(
        train, test, texts=texts, guesses=guesses, reference=reference, seed=0, config=FAST
    )
    assert outcome.reference == BIG
    assert outcome.in_force, outcome.reason
    first = [outcome.models[c[0]] for c in outcome.test.calls]
    said_yes = [any(w in q for w in YES_WORDS) for q in test.queries]
    # Each query goes first to the sayer of the answer its words give away, and BIG is
    # (almost) never paid for: the guessers are right on every row here.
    assert [f == YES_SAYER for f in first] == said_yes
    assert sum(BIG in [outcome.models[m] for m in c] for c in outcome.test.calls) <= 2
    assert outcome.test.accuracy >= 0.98
    assert outcome.test.cost_per_query < 0.05 * PRICES[BIG]


def _hand_tables(
    router: Router,
) -> tuple[dict[routing.State, np.ndarray], dict[tuple[routing.State, int], np.ndarray]]:
    """One row; models 0 (cheap: "yes" 70 % of the time, then right 99 %; its "no" tells
    nothing) and 1 (dear: right 95 % whatever it says). Categories 0 "no", 1 "yes"."""

    def posterior(S: tuple[int, ...], answers: tuple[int, ...]) -> np.ndarray:
        said = dict(zip(S, answers, strict=True))
        p = np.array([0.5, 0.5])
        if said.get(0) == 1:
            p = np.array([0.01, 0.99])
        if said.get(1, OTHER) >= 0:
            p = np.full(2, 0.05)
            p[said[1]] = 0.99 if said.get(0) == said[1] else 0.95
        return p.reshape(1, 2)

    def predictive(m: int) -> np.ndarray:
        return np.array([[0.3, 0.7, 0.0]] if m == 0 else [[0.5, 0.5, 0.0]])

    post, pred = {}, {}
    for S in router.subsets(router.config.depth):
        for answers in itertools.product(router.answer_values, repeat=len(S)):
            post[(S, answers)] = posterior(S, answers)
            for m in (0, 1):
                if m not in S:
                    pred[((S, answers), m)] = predictive(m)
    return post, pred


def test_router_looks_ahead_to_the_dear_model_it_may_not_need() -> None:
    """Alone, the cheap model is worth less than the dear one at this λ (0.833 against
    0.85), so a router that looks one call ahead asks the dear model. Two calls ahead, asking
    the cheap one first and the dear one only after a "no" is worth 0.938."""
    cost = np.array([[0.001, 0.01]])
    lam = 10.0
    actions = {}
    for depth in (1, 2):
        router = Router(["cheap", "dear"], ["no", "yes"], RoutingConfig(depth=depth))
        post, pred = _hand_tables(router)
        actions[depth] = routing.plan_actions(router, post, pred, cost, lam)
    assert int(actions[1][((), ())][0]) == 1
    assert int(actions[2][((), ())][0]) == 0
    # After the cheap model: stop on its "yes", ask the dear one on its "no".
    assert int(actions[2][((0,), (1,))][0]) == -1
    assert int(actions[2][((0,), (0,))][0]) == 1


def test_keeps_every_model_near_the_best_in_the_router_s_set() -> None:
    table = _table(40, seed=3)
    # A fourth model as accurate as BIG but dearer stays in; so does the reference.
    twin = AnswerTable(
        table.queries,
        [*table.models, "twin"],
        [*table.answers, table.answers[2]],
        np.column_stack([table.quality, table.quality[:, 2]]),
        np.column_stack([table.cost, np.full(table.n, 0.02)]),
    )
    assert routing.choose_models(twin, RoutingConfig()) == [YES_SAYER, NO_SAYER, BIG, "twin"]
    assert routing.choose_models(twin, RoutingConfig(keep_within=-1.0)) == [
        YES_SAYER,
        NO_SAYER,
        BIG,
    ]


def _assert_contract(result: dict[str, Any], strategy: str) -> None:
    assert result["strategy"] == strategy
    for key in ("best_single", "cascade"):
        assert {"accuracy", "cost_per_query"} <= set(result[key])
    assert result["best_single"]["model"] == BIG
    for key in ("cost_saving", "accuracy_gap", "lambda", "mean_calls"):
        assert key in result
    assert set(result["first_call_share"]) <= set(result["models"])
    assert sum(result["first_call_share"].values()) == pytest.approx(1.0, abs=1e-3)
    assert result["mean_calls"] >= 1.0
    assert result["accuracy_gap"] == pytest.approx(
        result["cascade"]["accuracy"] - result["best_single"]["accuracy"], abs=1e-6
    )
    assert result["cost_saving"] == pytest.approx(
        1 - result["cascade"]["cost_per_query"] / result["best_single"]["cost_per_query"],
        abs=1e-5,
    )
    json.dumps(result)  # plain JSON all the way down


@pytest.mark.slow
def test_each_strategy_keeps_the_json_contract() -> None:
    train, test = _table(160, seed=4), _table(160, seed=5)
    both = replay.replay(
        train, test, seed=0, embedding="none", strategy="both", routing_config=FAST
    )
    assert both["strategy"] == "both"
    cascade, routed = both["strategies"]["cascade"], both["strategies"]["routing"]
    _assert_contract(cascade, "cascade")
    _assert_contract(routed, "routing")
    assert cascade["lambda"] is None and "tiers" in cascade["cascade"]
    assert routed["routing_in_force"] and routed["lambda"] > 0
    assert routed["cascade"]["cost_per_query"] < 0.05 * PRICES[BIG]
    # One strategy alone gives the same figures as its half of "both" (same split, seed).
    alone = replay.replay(
        train, test, seed=0, embedding="none", strategy="routing", routing_config=FAST
    )
    assert alone["cascade"] == routed["cascade"]


@pytest.mark.slow
def test_guard_reports_the_cascade_when_routing_falls_short_on_train() -> None:
    """Queries that tell nothing and a budget that cannot pay for BIG: the router's train
    accuracy is ~50 % against BIG's 95 %, so routing is not in force and the cascade's plan
    (BIG alone, the only way to its accuracy) is what is reported."""
    train, test = _table(160, seed=6, telling=False), _table(160, seed=7, telling=False)
    result = replay.replay(
        train, test, seed=0, embedding="none", strategy="routing", routing_config=FAST
    )
    _assert_contract(result, "routing")
    assert result["routing_in_force"] is False
    assert "pt below" in result["routing_not_in_force_because"]
    assert result["routing"]["train"]["accuracy_gap"] < -0.3
    assert result["lambda"] is None
    assert [t["model"] for t in result["cascade"]["tiers"]][-1] == BIG
    assert result["accuracy_gap"] > -0.05


def test_unknown_strategy_is_a_replay_error() -> None:
    table = _table(40, seed=8)
    with pytest.raises(replay.ReplayError, match="unknown strategy"):
        replay.replay(table, table, embedding="none", strategy="oracle")  # type: ignore[arg-type]


@pytest.mark.slow
def test_command_takes_the_strategy(tmp_path: Path) -> None:
    train = _write(_table(160, seed=9), tmp_path / "train.csv")
    test = _write(_table(160, seed=10), tmp_path / "test.csv")
    out = StringIO()
    call_command(
        "cascade_replay",
        "--train", str(train), "--test", str(test), "--embedding", "none",
        "--strategy", "routing", "--json", stdout=out, stderr=StringIO(),
    )  # fmt: skip
    result = json.loads(out.getvalue())
    _assert_contract(result, "routing")
    assert result["budget_share"] == RoutingConfig().budget_share
    out = StringIO()
    call_command(
        "cascade_replay",
        "--train", str(train), "--test", str(test), "--embedding", "none",
        "--strategy", "routing", stdout=out, stderr=StringIO(),
    )  # fmt: skip
    assert "routing (λ = " in out.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "oracle"], "invalid choice"),
        (["--budget-share", "0"], "--budget-share"),
    ],
)
def test_bad_strategy_options_are_command_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = _write(_table(20, seed=11), tmp_path / "t.csv")
    with pytest.raises(CommandError, match=message):
        call_command(
            "cascade_replay", "--train", str(path), "--test", str(path), *args, stdout=StringIO()
        )


def test_hard_task_drops_the_models_near_the_best() -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_replay", Path(__file__).resolve().parents[2] / "bench" / "replay.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    table = _table(200, seed=12)
    # A model 3 pt below BIG (dropped at a 5-pt gap) and one 10 pt below (kept).
    rng = np.random.default_rng(0)
    near = table.quality[:, 2] * (rng.random(table.n) > 0.03)
    far = table.quality[:, 2] * (rng.random(table.n) > 0.10)
    grown = AnswerTable(
        table.queries,
        [*table.models, "near", "far"],
        [*table.answers, table.answers[2], table.answers[2]],
        np.column_stack([table.quality, near, far]),
        np.column_stack([table.cost, np.full(table.n, 0.001), np.full(table.n, 0.001)]),
    )
    hard = bench.without_near_peers(grown, bench.GAP5)
    assert BIG in hard.models and "far" in hard.models and "near" not in hard.models
    assert hard.quality.shape == (table.n, len(hard.models))
