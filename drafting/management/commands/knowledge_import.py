"""`manage.py knowledge_import PATH [PATH…] --team NAME_OR_ID [--index-now] [--dry-run]`: import
knowledge files (.md, .html, .txt, .csv, .json, .zip, or folders of them) into a team's
knowledge base, all or nothing, with a progress bar on stderr. Importing the same files again
changes nothing; an edited file re-chunks its article and only the changed chunks are embedded
again. The worker embeds new chunks; `--index-now` embeds them here instead (demos, the
evaluation command). Bad files: every problem is printed per file, nothing is written, and the
command exits non-zero.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from csbot.models import Team
from drafting import knowledge
from drafting.engine.knowledge_files import EXTENSIONS


def collect(paths: list[str]) -> list[tuple[str, bytes]]:
    """Files named, and the knowledge files under folders named (their names relative to the
    folder, so the external ids stay the same wherever the folder lives). A file over the
    size limit is not read: it becomes an empty stand-in the parser refuses by its size."""
    found: list[tuple[str, Path]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found.extend(
                (child.relative_to(path).as_posix(), child)
                for child in sorted(path.rglob("*"))
                if child.is_file()
                and child.suffix.lower() in EXTENSIONS
                and not any(part.startswith(".") for part in child.relative_to(path).parts)
            )
        elif path.is_file():
            found.append((path.name, path))
        else:
            raise CommandError(f"{given}: no such file or folder")
    files: list[tuple[str, bytes]] = []
    for name, path in found:
        if path.stat().st_size > settings.KNOWLEDGE_IMPORT_MAX_BYTES:
            raise CommandError(
                f"{name}: larger than {settings.KNOWLEDGE_IMPORT_MAX_BYTES} bytes "
                "(KNOWLEDGE_IMPORT_MAX_BYTES); nothing was imported"
            )
        files.append((name, path.read_bytes()))
    return files


def team_named(value: str) -> Team:
    team = Team.objects.filter(pk=int(value)).first() if value.isdigit() else None
    team = team or Team.objects.filter(name=value).first()
    if team is None:
        raise CommandError(f"no team with the name or id {value!r}")
    return team


class Command(BaseCommand):
    help = "Import knowledge files (articles and macros) into a team's knowledge base."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "paths", nargs="+", help="files (.md .html .txt .csv .json .zip) or folders"
        )
        parser.add_argument("--team", required=True, help="the team's name or id")
        parser.add_argument(
            "--index-now",
            action="store_true",
            help="embed the new chunks and macros here instead of in the worker",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="report what would change; write nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        team = team_named(options["team"])
        files = collect(options["paths"])
        if not files:
            raise CommandError("no knowledge files found")
        started = time.monotonic()

        def show(state: knowledge.ImportProgress) -> None:
            share = state.done / max(state.total, 1)
            bar = "#" * int(share * 30)
            self.stderr.write(f"\r[{bar:<30}] {state.done}/{state.total} ({share:.0%}) ", ending="")
            self.stderr.flush()

        report = knowledge.knowledge_import(
            team=team,
            files=files,
            progress=show,
            ring=not options["index_now"],
            dry_run=options["dry_run"],
        )
        self.stderr.write("")
        if not report.ok:
            for error in report.errors:
                self.stderr.write(f"  {error}")
            raise CommandError(
                f"{len(report.errors)} problem(s) in {sum(1 for f in report.files if f.errors)} "
                "file(s); nothing was imported"
            )
        outcome = knowledge.Outcome
        verb = "would import" if options["dry_run"] else "imported"
        self.stdout.write(
            f"{team.name}: {verb} {len(report.files)} file(s): "
            f"{report.total(outcome.CREATED)} created, {report.total(outcome.UPDATED)} updated, "
            f"{report.total(outcome.UNCHANGED)} unchanged in {time.monotonic() - started:.1f} s"
        )
        if options["index_now"] and not options["dry_run"]:
            embedded = sum(knowledge.chunks_index(article_id=pk) for pk in report.articles_to_index)
            if report.macros_to_index:
                embedded += knowledge.macros_index(team_id=team.pk)
            self.stdout.write(f"embedded {embedded} chunk(s) and macro(s)")
