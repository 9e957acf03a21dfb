"""python manage.py encs_report --month YYYY-MM --format json|csv|html|pdf [--team T] [--output F]

The month's ENCS report, the same figures as the dashboard, the API and the stored monthly
report. Written to stdout, or to --output (a PDF needs one unless stdout is redirected).
`--store` also stores it as the month's MonthlyReport (and `--email` mails it to managers).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounting.engine import SettingsMissing
from accounting.reports import (
    month_start,
    monthly_json,
    report_csv,
    report_email,
    report_figures,
    report_generate,
    report_title,
)
from csbot.models import Team


class Command(BaseCommand):
    help = "Print or store a month's ENCS report (json, csv, html or pdf)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--month", required=True, help="YYYY-MM")
        parser.add_argument(
            "--format", choices=["json", "csv", "html", "pdf"], default="json", dest="fmt"
        )
        parser.add_argument("--team", help="team id or name (default: all teams)")
        parser.add_argument("--output", type=Path, help="write here instead of stdout")
        parser.add_argument(
            "--store", action="store_true", help="also store it as the month's MonthlyReport"
        )
        parser.add_argument("--email", action="store_true", help="with --store: mail managers")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            month = month_start(options["month"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        team = self._team(options["team"])
        fmt, output = options["fmt"], options["output"]
        if fmt == "pdf" and output is None and sys.stdout.isatty():
            raise CommandError("A PDF is binary: pass --output FILE or redirect stdout.")
        self.stderr.write(f"Computing ENCS for {month:%Y-%m} ({team or 'all teams'}) …")
        try:
            figures = report_figures(month=month, team=team)
        except SettingsMissing as exc:
            raise CommandError(str(exc)) from exc
        content: bytes
        if fmt == "json":
            content = (json.dumps(monthly_json(figures, team=team), indent=2) + "\n").encode()
        elif fmt == "csv":
            content = report_csv(figures).encode()
        else:
            from accounting.rendering import report_html, report_pdf

            title = report_title(figures, team_names=[team.name] if team is not None else [])
            self.stderr.write("Rendering charts …")
            content = (
                report_html(figures, title=title).encode()
                if fmt == "html"
                else report_pdf(figures, title=title)
            )
        if output is not None:
            output.write_bytes(content)
            self.stderr.write(f"Wrote {output} ({len(content)} bytes).")
        else:
            sys.stdout.buffer.write(content)
            sys.stdout.flush()
        if options["store"]:
            report = report_generate(month=month, team=team)
            self.stderr.write(f"Stored {report}.")
            if options["email"]:
                sent = report_email(report)
                self.stderr.write(f"Mailed to {len(sent)} recipient(s).")

    def _team(self, value: str | None) -> Team | None:
        if value is None:
            return None
        team = (
            Team.objects.filter(pk=int(value)).first()
            if value.isdigit()
            else Team.objects.filter(name=value).first()
        )
        if team is None:
            names = ", ".join(Team.objects.order_by("name").values_list("name", flat=True))
            raise CommandError(f"No team {value!r}. Teams: {names or 'none'}.")
        return team
