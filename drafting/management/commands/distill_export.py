"""`manage.py distill_export --team NAME|ID --out DIR [--since YYYY-MM-DD] [--until YYYY-MM-DD]
[--intent NAME] [--policy ID] [--min-conversations N] [--validation-share F] [--seed S]
[--json]`: write a team's training set from the replies its agents sent (drafting.learning.
distill_data): train/validation chat JSONL, preference pairs of edited drafts, and a manifest
with the data's sha256. Progress on stderr; the counts and the hash on stdout (one JSON object
with --json). Exits non-zero, saying why, on bad input or too few conversations."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from drafting.learning.distill_data import (
    DistillDataError,
    ExportFilters,
    distill_examples,
    write_export,
)
from drafting.management.commands.knowledge_import import team_named
from drafting.models import CascadePolicy, Intent


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"{option} {value!r} is not a date (YYYY-MM-DD)") from exc


class Command(BaseCommand):
    help = "Export a team's sent replies as a scrubbed fine-tuning set (chat JSONL, preferences)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", required=True, help="the team's name or id")
        parser.add_argument("--out", required=True, help="the folder to write the files into")
        parser.add_argument("--since", help="first day of the replies (YYYY-MM-DD, inclusive)")
        parser.add_argument("--until", help="last day of the replies (YYYY-MM-DD, inclusive)")
        parser.add_argument("--intent", help="only messages confidently of this intent (name)")
        parser.add_argument("--policy", type=int, help="only drafts of this policy (id)")
        parser.add_argument("--min-conversations", type=int, default=20)
        parser.add_argument("--validation-share", type=float, default=0.2)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        team = team_named(options["team"])
        policy_id = options["policy"]
        if (
            policy_id is not None
            and not CascadePolicy.objects.filter(pk=policy_id, team=team).exists()
        ):
            raise CommandError(f"team {team.name!r} has no policy with the id {policy_id}")
        intent = options["intent"]
        if intent is not None and not Intent.objects.filter(team=team, name=intent).exists():
            raise CommandError(f"team {team.name!r} has no intent named {intent!r}")
        try:
            filters = ExportFilters(
                team_id=team.pk,
                since=_day(options["since"], "--since"),
                until=_day(options["until"], "--until"),
                intent=intent,
                policy_id=policy_id,
                min_conversations=options["min_conversations"],
                validation_share=options["validation_share"],
                seed=options["seed"],
            )
            self.stderr.write(f"Exporting the replies {team.name}'s agents sent…")
            export = distill_examples(filters, progress=self.stderr.write)
        except DistillDataError as exc:
            raise CommandError(str(exc)) from exc
        out = Path(options["out"])
        manifest = write_export(export, out)
        self.stderr.write(f"Wrote {out}")
        if options["json"]:
            self.stdout.write(json.dumps({"out": str(out), **manifest}, sort_keys=True))
            return
        counts = manifest["counts"]
        self.stdout.write(
            f"train: {counts['n_train']} examples, {counts['n_pairs_train']} preference pairs, "
            f"{counts['n_conversations_train']} conversations"
        )
        self.stdout.write(
            f"validation: {counts['n_validation']} examples, "
            f"{counts['n_pairs_validation']} preference pairs, "
            f"{counts['n_conversations_validation']} conversations"
        )
        self.stdout.write(f"duplicates dropped: {counts['n_duplicates']}")
        self.stdout.write(f"data sha256: {manifest['data_sha256']}")
