"""`manage.py knowledge_train --team NAME_OR_ID [--detector] [--reranker] [--seed S]`: train new
versions of a team's needs-knowledge detector and passage re-ranker from its KnowledgeLabel
rows (both when neither flag is given), with progress on stderr and each version's
out-of-fold metrics; a trained version becomes the team's active one
(drafting.learning.knowledge). Exits non-zero when a model could not be trained, saying why."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from drafting.learning.knowledge import knowledge_detector_train, passage_reranker_train
from drafting.management.commands.knowledge_import import team_named


class Command(BaseCommand):
    help = "Train a team's needs-knowledge detector and passage re-ranker from its labels."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", required=True, help="the team's name or id")
        parser.add_argument("--detector", action="store_true", help="train the detector")
        parser.add_argument("--reranker", action="store_true", help="train the re-ranker")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        team = team_named(options["team"])
        both = not options["detector"] and not options["reranker"]
        failed = []
        for wanted, name, train in (
            (options["detector"] or both, "detector", knowledge_detector_train),
            (options["reranker"] or both, "re-ranker", passage_reranker_train),
        ):
            if not wanted:
                continue

            def show(done: int, total: int, name: str = name) -> None:
                share = done / max(total, 1)
                self.stderr.write(
                    f"\r{name:<10} [{'#' * int(share * 30):<30}] {done}/{total} ", ending=""
                )
                if done >= total:
                    self.stderr.write("")
                self.stderr.flush()

            outcome = train(team, seed=options["seed"], progress=show)
            self.stdout.write(f"{team.name}: {outcome.message}")
            if outcome.classifier is not None:
                metrics = outcome.classifier.metrics
                shown = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
                self.stdout.write(f"  metrics: {shown}")
            else:
                failed.append(name)
        if failed:
            raise CommandError(f"not trained: {', '.join(failed)}")
