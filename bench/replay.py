"""Acceptance bench for the cascade replay on FrugalGPT's recorded OVERRULING answers.

    .venv/bin/python bench/replay.py [--seeds 10] [--first-seed 0] [--train-share 0.5] [--csv PATH]
        [--strategy {cascade,routing,both}] [--task {overruling,overruling-gap5}]

For each seed the rows are split at random (half to train by default) and `drafting.evaluation.replay`
learns the scorers and the cascade on the train half, exactly as `manage.py cascade_replay`
does; every figure is on the test half. The queries are embedded once (MiniLM) for all seeds,
timed apart. Per seed: the best single model (GPT-4 here) and its test accuracy and cost, the
cascade's tiers, test accuracy, gap to the best model (target ≥ −0.005) and cost saving
(target ≥ 0.733, FrugalGPT's figure), and the replay's time without the embedding. Then the
mean and the worst over seeds, and how many seeds met both targets.

`--strategy routing` replays the expectimax router (drafting.evaluation.routing) instead, and
`both` runs the two on the same splits side by side (per seed `strategies: {cascade, routing}`,
per strategy a summary). Besides FrugalGPT's bar, the summary counts the seeds at ≥ 95 % saving
within 0.5 pt (issue 18's target).

`--task overruling-gap5` is a harder task made from the same rows: every model whose accuracy
on all rows is within GAP5 (5 pt) of the most accurate one's is dropped, except that one, so no
cheaper model is close to the best (RouterBench's setting; RouterBench itself is not shipped).
It keeps GPT-4 and the nine models at least 7.4 pt below it; gpt-3.5-turbo (4.5 pt below) and
text-davinci-002 (1.1 pt) are dropped. The target there is ≥ 50 % saving within 1 pt.

Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GAP_TARGET = -0.005
SAVING_TARGET = 0.733
# Issue 18's bar on OVERRULING, and its bar where no cheap model is close to the best.
ROUTING_SAVING_TARGET = 0.95
HARD_GAP_TARGET = -0.01
HARD_SAVING_TARGET = 0.5
# The hard task drops every model this close to the best one (on all rows), that one excepted.
# Fixed before any run: a model's accuracy differs by about 1 pt between two 525-row halves, so
# 5 pt is five of those; and at 3 pt gpt-3.5-turbo (4.5 pt below GPT-4, at 6.7 % of its price)
# would stay, the one cheap model that does most of the work on the full task.
GAP5 = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="how many splits")
    parser.add_argument("--first-seed", type=int, default=0, help="splits first … first+N−1")
    parser.add_argument("--train-share", type=float, default=0.5)
    parser.add_argument("--csv", default=None, help="default: the shared OVERRULING rows")
    parser.add_argument("--embedding", choices=("minilm", "none"), default="minilm")
    parser.add_argument(
        "--strategy",
        choices=("cascade", "routing", "both"),
        default="cascade",
        help="the plain cascade, the expectimax router, or both on the same splits",
    )
    parser.add_argument(
        "--task",
        choices=("overruling", "overruling-gap5"),
        default="overruling",
        help="overruling-gap5: without the models within 5 pt of the best (see the docstring)",
    )
    parser.add_argument(
        "--budget-share",
        type=float,
        default=None,
        help="routing: λ's train cost cap as a share of the reference's (default 0.045)",
    )
    parser.add_argument(
        "--n-cheap",
        type=int,
        default=None,
        help="routing: how many of the cheapest models below the reference it may call (default 6)",
    )
    parser.add_argument("--verbose", action="store_true", help="every replay step on stderr")
    args = parser.parse_args()
    if args.budget_share is not None and not 0 < args.budget_share <= 1:
        parser.error("--budget-share must be in (0, 1]")
    if args.n_cheap is not None and args.n_cheap < 0:
        parser.error("--n-cheap must be at least 0")

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csbot.settings")
    import django

    django.setup()
    import numpy as np

    from drafting.evaluation import datasets, replay
    from drafting.evaluation.routing import RoutingConfig

    defaults = RoutingConfig()
    routing_config = RoutingConfig(
        budget_share=defaults.budget_share if args.budget_share is None else args.budget_share,
        n_cheap=defaults.n_cheap if args.n_cheap is None else args.n_cheap,
    )

    def progress(message: str) -> None:
        sys.stderr.write(f"[bench] {message}\n")
        sys.stderr.flush()

    path = (
        Path(args.csv)
        if args.csv
        else (datasets.shared_data_dir() / "frugalgpt_overruling" / "overruling_dev.csv")
    )
    started = time.perf_counter()
    table = replay.read_answers(path)
    read_s = time.perf_counter() - started

    vectors = None
    embed_s = 0.0
    if args.embedding == "minilm":
        # Embedding is per query, not per split: the prompt every query shares is stripped
        # first, as replay does (the shared affixes of all rows equal those of any half).
        affix = replay.shared_affixes(table.queries)
        texts = [replay.strip_affixes(q, *affix) for q in table.queries]
        started = time.perf_counter()
        vectors = replay.embed_queries(texts, progress)
        embed_s = time.perf_counter() - started

    if args.task == "overruling-gap5":
        table = without_near_peers(table, GAP5)
        progress(f"task overruling-gap5: models {', '.join(table.models)}")
    hard = args.task == "overruling-gap5"
    names = ["cascade", "routing"] if args.strategy == "both" else [args.strategy]
    seeds: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        train_rows, test_rows = replay.split_rows(table.n, seed=seed, train_share=args.train_share)
        started = time.perf_counter()
        result = replay.replay(
            table.rows(train_rows),
            table.rows(test_rows),
            seed=seed,
            embedding=args.embedding,
            query_vectors=None if vectors is None else (vectors[train_rows], vectors[test_rows]),
            strategy=args.strategy,
            routing_config=routing_config,
            progress=progress if args.verbose else _quiet,
        )
        seconds = time.perf_counter() - started
        by_name = result["strategies"] if args.strategy == "both" else {args.strategy: result}
        entries = {name: _entry(by_name[name], hard) for name in names}
        if len(names) == 1:
            entries[names[0]]["replay_s"] = round(seconds, 2)
            seeds.append({"seed": seed} | entries[names[0]])
        else:
            seeds.append({"seed": seed, "strategies": entries})
        progress(
            f"seed {seed}: "
            + "; ".join(
                f"{name} gap {e['accuracy_gap']:+.4f}, saving {e['cost_saving']:.3f}"
                + (f", λ {e['lambda']:.4g}" if e.get("lambda") is not None else "")
                + ("" if e.get("routing_in_force", True) else " (routing not in force)")
                for name, e in entries.items()
            )
            + f", {seconds:.1f} s"
        )
        if args.verbose:  # the seed's record too, so a long run's figures survive a crash
            progress(f"seed {seed} record: {json.dumps(seeds[-1])}")

    def entries_of(name: str) -> list[dict[str, Any]]:
        return [s if len(names) == 1 else s["strategies"][name] for s in seeds]

    summaries = {name: _summary(entries_of(name)) for name in names}
    times = np.array([s["replay_s"] for s in entries_of(names[0])])
    out: dict[str, Any] = {
        "data": str(path),
        "task": args.task,
        "strategy": args.strategy,
        "rows": table.n,
        "models": table.models,
        "train_share": args.train_share,
        "embedding": args.embedding,
        "budget_share": routing_config.budget_share,
        "n_cheap": routing_config.n_cheap,
        "targets": {
            "accuracy_gap_min": GAP_TARGET,
            "cost_saving_min": SAVING_TARGET,
            "issue_18": {"accuracy_gap_min": HARD_GAP_TARGET, "cost_saving_min": HARD_SAVING_TARGET}
            if hard
            else {"accuracy_gap_min": GAP_TARGET, "cost_saving_min": ROUTING_SAVING_TARGET},
        },
        "seeds": seeds,
    }
    if len(names) == 1:
        out["summary"] = summaries[names[0]]
    else:
        out["summary_by_strategy"] = summaries
    out["timing_s"] = {
        "read_csv": round(read_s, 3),
        "embed_all_queries": round(embed_s, 2),
        "replay_per_seed_mean": round(float(times.mean()), 2),
        "replay_per_seed_max": round(float(times.max()), 2),
    }
    print(json.dumps(out, indent=2))


def _quiet(_message: str) -> None:
    return None


def without_near_peers(table: Any, gap: float) -> Any:
    """The table without every model whose accuracy (on all rows) is within `gap` of the most
    accurate model's, that model excepted: a task where no cheaper model is close to the best.
    Chosen on all rows because it defines the task, like picking a data set, not a plan."""
    accuracy = table.quality.mean(axis=0)
    cost = table.cost.mean(axis=0)
    best = max(range(len(table.models)), key=lambda j: (accuracy[j], -cost[j]))
    keep = [j for j in range(len(table.models)) if j == best or accuracy[j] < accuracy[best] - gap]
    return type(table)(
        queries=table.queries,
        models=[table.models[j] for j in keep],
        answers=[table.answers[j] for j in keep],
        quality=table.quality[:, keep],
        cost=table.cost[:, keep],
    )


def _entry(result: dict[str, Any], hard: bool) -> dict[str, Any]:
    """One strategy on one seed, in the replay JSON contract's terms."""
    gap, saving = result["accuracy_gap"], result["cost_saving"]
    plan = result["cascade"]
    entry: dict[str, Any] = {
        "strategy": result["strategy"],
        "best_single": result["best_single"],
        "cascade": {
            "accuracy": plan["accuracy"],
            "cost_per_query": plan["cost_per_query"],
        }
        | ({"tiers": plan["tiers"], "stop_share": plan["stop_share"]} if "tiers" in plan else {}),
        "train_accuracy_gap": round(
            result["cascade_train"]["accuracy"] - result["best_single_train"]["accuracy"], 6
        ),
        "accuracy_gap": gap,
        "cost_saving": saving,
        "lambda": result.get("lambda"),
        "mean_calls": result.get("mean_calls"),
        "first_call_share": result.get("first_call_share"),
        "call_share": result.get("call_share"),
        "met": gap >= GAP_TARGET and saving >= SAVING_TARGET,
        "met_issue_18": (gap >= HARD_GAP_TARGET and saving >= HARD_SAVING_TARGET)
        if hard
        else (gap >= GAP_TARGET and saving >= ROUTING_SAVING_TARGET),
        "replay_s": result.get("seconds"),
    }
    if result["strategy"] == "routing":
        entry["routing_in_force"] = result["routing_in_force"]
        entry["routing_not_in_force_because"] = result["routing_not_in_force_because"]
        entry["routing_models"] = result["routing"]["models"]
        entry["routing_train_accuracy_gap"] = result["routing"]["train"]["accuracy_gap"]
    return entry


def _summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    gaps = np.array([e["accuracy_gap"] for e in entries])
    savings = np.array([e["cost_saving"] for e in entries])
    return {
        "seeds": len(entries),
        "met": int(sum(e["met"] for e in entries)),
        "met_issue_18": int(sum(e["met_issue_18"] for e in entries)),
        "accuracy_gap": {"mean": round(float(gaps.mean()), 6), "worst": float(gaps.min())},
        "cost_saving": {"mean": round(float(savings.mean()), 6), "worst": float(savings.min())},
        "mean_calls": round(float(np.mean([e["mean_calls"] for e in entries])), 4),
    }


if __name__ == "__main__":
    main()
