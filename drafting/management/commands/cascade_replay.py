"""`manage.py cascade_replay --train A.csv --test B.csv [--json] [--seed S]
[--strategy {cascade,routing,both}]`: learn a scorer and a cascade (or the expectimax router of
drafting.evaluation.routing, or both side by side) on recorded LLM answers, report it on
held-out rows (see drafting.evaluation.replay).

A CSV has a `query` column and, per model `m`, `m_answer`, `m_cost` (USD) and `m` (1 correct,
0 wrong) — FrugalGPT's format. Progress goes to stderr, the result to stdout.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from drafting.engine.embeddings import EmbeddingError
from drafting.evaluation import replay
from drafting.evaluation.routing import RoutingConfig
from drafting.learning import optimiser


class Command(BaseCommand):
    help = (
        "Learn answer scorers and the cheapest cascade that matches the most accurate single "
        "model on a training CSV of recorded LLM answers; report accuracy, cost and savings "
        "on a test CSV."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--train", required=True, help="CSV: query, m_answer, m_cost, m")
        parser.add_argument("--test", required=True, help="CSV with the same models")
        parser.add_argument("--seed", type=int, default=0, help="cross-fitting seed")
        parser.add_argument(
            "--embedding",
            choices=("minilm", "none"),
            default="minilm",
            help="query embedding for the answer guesses: minilm (in process) or none "
            "(TF-IDF words only)",
        )
        parser.add_argument(
            "--confidence",
            type=float,
            default=replay.DEFAULT_CONFIDENCE,
            help="standard errors of its difference from the best model a plan's train "
            "accuracy must clear the target by (default %(default)s)",
        )
        parser.add_argument(
            "--margin",
            type=float,
            default=replay.DEFAULT_MARGIN,
            help="extra train accuracy above the best model's (default %(default)s)",
        )
        parser.add_argument(
            "--max-tiers", type=int, default=optimiser.MAX_TIERS, help="longest chain"
        )
        parser.add_argument(
            "--value",
            type=float,
            default=None,
            help="labour value (USD) of a right answer: also report the ENCS-optimal plan",
        )
        parser.add_argument(
            "--strategy",
            choices=replay.STRATEGIES,
            default="cascade",
            help="cascade (a fixed chain of tiers), routing (per query, the next model or stop, "
            "by expectimax), or both on the same split (default %(default)s)",
        )
        parser.add_argument(
            "--budget-share",
            type=float,
            default=RoutingConfig.budget_share,
            help="routing: λ is the most accurate whose train cost is at most this share of "
            "the best model's (default %(default)s)",
        )
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        def progress(message: str) -> None:
            self.stderr.write(f"[replay] {message}")
            self.stderr.flush()

        if options["max_tiers"] < 1:
            raise CommandError("--max-tiers must be at least 1")
        if not 0 < options["budget_share"] <= 1:
            raise CommandError("--budget-share must be in (0, 1]")
        try:
            train = replay.read_answers(options["train"])
            test = replay.read_answers(options["test"])
            progress(f"{train.n} train rows, {test.n} test rows, {len(train.models)} models")
            result = replay.replay(
                train,
                test,
                seed=options["seed"],
                embedding=options["embedding"],
                margin=options["margin"],
                confidence=options["confidence"],
                max_tiers=options["max_tiers"],
                value=options["value"],
                progress=progress,
                strategy=options["strategy"],
                routing_config=RoutingConfig(budget_share=options["budget_share"]),
            )
        except replay.ReplayError as exc:
            raise CommandError(str(exc)) from exc
        except EmbeddingError as exc:
            raise CommandError(f"embedding failed: {exc}") from exc

        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
            return
        results = result["strategies"] if result["strategy"] == "both" else {"": result}
        for name, one in results.items():
            if name:
                self.stdout.write(f"== {name}")
            self._describe(one)

    def _describe(self, result: dict[str, Any]) -> None:
        best, cascade = result["best_single"], result["cascade"]
        if "tiers" in cascade:
            plan = "cascade: " + " → ".join(
                f"{t['model']} (≥ {t['threshold']:.3f})" for t in cascade["tiers"]
            )
        else:
            plan = f"routing (λ = {result['lambda']:.4g}, {result['mean_calls']:.2f} calls/query)"
        if result["strategy"] == "routing" and not result["routing_in_force"]:
            plan += f"\n  routing not in force: {result['routing_not_in_force_because']}"
        self.stdout.write(
            f"best single: {best['model']}: accuracy {best['accuracy']:.4f}, "
            f"${best['cost_per_query']:.6f}/query\n"
            f"{plan}\n"
            f"  accuracy {cascade['accuracy']:.4f} ({result['accuracy_gap']:+.4f}), "
            f"${cascade['cost_per_query']:.6f}/query, saving {result['cost_saving']:.1%}"
        )
        for point in result.get("pareto", []):
            self.stdout.write(
                f"  budget ${point['budget']:.6f}: accuracy {point['accuracy']:.4f} "
                f"at ${point['cost_per_query']:.6f}"
            )
