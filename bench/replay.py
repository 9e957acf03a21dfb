"""Acceptance bench for the cascade replay on FrugalGPT's recorded OVERRULING answers.

    .venv/bin/python bench/replay.py [--seeds 10] [--first-seed 0] [--train-share 0.5] [--csv PATH]

For each seed the rows are split at random (half to train by default) and `drafting.evaluation.replay`
learns the scorers and the cascade on the train half, exactly as `manage.py cascade_replay`
does; every figure is on the test half. The queries are embedded once (MiniLM) for all seeds,
timed apart. Per seed: the best single model (GPT-4 here) and its test accuracy and cost, the
cascade's tiers, test accuracy, gap to the best model (target ≥ −0.005) and cost saving
(target ≥ 0.733, FrugalGPT's figure), and the replay's time without the embedding. Then the
mean and the worst over seeds, and how many seeds met both targets.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="how many splits")
    parser.add_argument("--first-seed", type=int, default=0, help="splits first … first+N−1")
    parser.add_argument("--train-share", type=float, default=0.5)
    parser.add_argument("--csv", default=None, help="default: the shared OVERRULING rows")
    parser.add_argument("--embedding", choices=("minilm", "none"), default="minilm")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csbot.settings")
    import django

    django.setup()
    import numpy as np

    from drafting.evaluation import datasets, replay

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
        )
        seconds = time.perf_counter() - started
        gap, saving = result["accuracy_gap"], result["cost_saving"]
        seeds.append(
            {
                "seed": seed,
                "best_single": result["best_single"],
                "cascade": {
                    "tiers": result["cascade"]["tiers"],
                    "accuracy": result["cascade"]["accuracy"],
                    "cost_per_query": result["cascade"]["cost_per_query"],
                    "stop_share": result["cascade"]["stop_share"],
                },
                "train_accuracy_gap": round(
                    result["cascade_train"]["accuracy"] - result["best_single_train"]["accuracy"],
                    6,
                ),
                "accuracy_gap": gap,
                "cost_saving": saving,
                "met": gap >= GAP_TARGET and saving >= SAVING_TARGET,
                "replay_s": round(seconds, 2),
            }
        )
        progress(f"seed {seed}: gap {gap:+.4f}, saving {saving:.3f}, {seconds:.1f} s")

    gaps = np.array([s["accuracy_gap"] for s in seeds])
    savings = np.array([s["cost_saving"] for s in seeds])
    times = np.array([s["replay_s"] for s in seeds])
    print(
        json.dumps(
            {
                "data": str(path),
                "rows": table.n,
                "models": table.models,
                "train_share": args.train_share,
                "embedding": args.embedding,
                "targets": {"accuracy_gap_min": GAP_TARGET, "cost_saving_min": SAVING_TARGET},
                "seeds": seeds,
                "summary": {
                    "seeds": len(seeds),
                    "met": int(sum(s["met"] for s in seeds)),
                    "accuracy_gap": {
                        "mean": round(float(gaps.mean()), 6),
                        "worst": float(gaps.min()),
                    },
                    "cost_saving": {
                        "mean": round(float(savings.mean()), 6),
                        "worst": float(savings.min()),
                    },
                },
                "timing_s": {
                    "read_csv": round(read_s, 3),
                    "embed_all_queries": round(embed_s, 2),
                    "replay_per_seed_mean": round(float(times.mean()), 2),
                    "replay_per_seed_max": round(float(times.max()), 2),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
