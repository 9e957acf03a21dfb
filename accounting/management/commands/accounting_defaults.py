"""python manage.py accounting_defaults [--rate USD] [--baseline SECONDS]

ENCS needs an agent cost rate and an unaided reply time (used until the hold-out group has
measured one). This creates the default-for-all-teams row when there is none, so a fresh
install has a working dashboard; admins then edit it (or add dated rows) in the admin.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounting.models import AccountingSettings


class Command(BaseCommand):
    help = "Create default accounting settings (agent rate, baseline) when none exist."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rate", default="30", help="agent cost, USD per hour (30)")
        parser.add_argument("--baseline", default="120", help="unaided reply, seconds (120)")

    def handle(self, *args: Any, **options: Any) -> None:
        if AccountingSettings.objects.filter(team__isnull=True).exists():
            self.stdout.write("Default accounting settings exist; nothing to do.")
            return
        try:
            rate, baseline = Decimal(options["rate"]), Decimal(options["baseline"])
        except InvalidOperation as exc:
            raise CommandError("--rate and --baseline must be numbers.") from exc
        AccountingSettings.objects.create(
            effective_from=date(2000, 1, 1),
            agent_hourly_usd=rate,
            default_baseline_seconds=baseline,
            note="defaults (manage.py accounting_defaults)",
        )
        self.stdout.write(
            self.style.SUCCESS(f"Default accounting settings: ${rate}/h, baseline {baseline} s.")
        )
