"""`manage.py fewshot_eval --train A.csv --test B.csv --per-class N [--json]`: how well a
tens-of-shot classifier does on a labelled set (see drafting.evaluation.fewshot for the method).

Both CSVs have a `text,label` header. Progress goes to stderr, the result to stdout.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from drafting.engine.embeddings import EMBEDDER_NAMES, EmbeddingError, embedder_named
from drafting.evaluation import fewshot
from drafting.learning.plr import PENALTIES


class Command(BaseCommand):
    help = (
        "Sample N examples per class from a training CSV (text,label), fit the penalised "
        "logistic regression on their embeddings, and report accuracy and macro-F1 on a test CSV."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--train", required=True, help="CSV with text,label columns")
        parser.add_argument("--test", required=True, help="CSV with text,label columns")
        parser.add_argument("--per-class", type=int, required=True, help="examples per class")
        parser.add_argument("--seed", type=int, default=0, help="sampling and CV seed")
        # By default the back end the product uses (EMBEDDING_BACKEND), when it is one of ours.
        backend = settings.EMBEDDING_BACKEND
        parser.add_argument(
            "--embedding",
            choices=EMBEDDER_NAMES,
            default=backend if backend in EMBEDDER_NAMES else "minilm",
            help="minilm (in process), vllm (the vLLM embedding server), or both joined; "
            "default: EMBEDDING_BACKEND if it is one of these, else minilm",
        )
        parser.add_argument(
            "--normalisation",
            choices=fewshot.NORMALISATIONS,
            default="center",
            help="center: subtract the training mean and renormalise (default); none: raw",
        )
        parser.add_argument("--penalty", choices=PENALTIES, default="l2")
        parser.add_argument(
            "--no-label-priors",
            action="store_true",
            help="leave out the class names as prior rows (the intent classifier uses them)",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="fail when a class has fewer than N training rows (default: use them all)",
        )
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        def progress(message: str) -> None:
            self.stderr.write(f"[fewshot] {message}")
            self.stderr.flush()

        per_class = options["per_class"]
        if per_class < 1:
            raise CommandError("--per-class must be at least 1")
        try:
            train = fewshot.read_examples(options["train"])
            test = fewshot.read_examples(options["test"])
            _, short = fewshot.sample_per_class(train, per_class, seed=options["seed"])
            if short and options["strict"]:
                listed = ", ".join(f"{label} ({count})" for label, count in short.items())
                raise CommandError(
                    f"{len(short)} classes have fewer than {per_class} training rows: {listed}"
                )
            result = fewshot.evaluate(
                train=train,
                test=test,
                embedder=embedder_named(options["embedding"]),
                per_class=per_class,
                seed=options["seed"],
                normalisation=options["normalisation"],
                penalty=options["penalty"],
                label_priors=not options["no_label_priors"],
                progress=progress,
            )
        except fewshot.FewShotError as error:
            raise CommandError(str(error)) from error
        except EmbeddingError as error:
            raise CommandError(
                f"embedding with {options['embedding']} failed: {error}"
                + (
                    " (start the server: manage.py local_llm serve --embed --background)"
                    if "vllm" in options["embedding"]
                    else ""
                )
            ) from error
        if short:
            progress(
                f"{len(short)} classes had fewer than {per_class} training rows; all of their "
                f"rows were used: {short}"
            )
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write(
            f"accuracy {result['accuracy']:.4f}  macro-F1 {result['macro_f1']:.4f}  "
            f"n_train {result['n_train']}  n_test {result['n_test']}  classes {result['classes']}"
            f"  C {result['C']}  embedding {result['embedding']}  {result['seconds']['total']} s"
        )
