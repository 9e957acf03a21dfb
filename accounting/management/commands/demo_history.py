"""python manage.py demo_history [--remove] [--days N] [--team NAME]

The demo team's past (csbot.demo.history): sixty days of conversations, drafts and what demo
agents did with them, two policies, held-out conversations, and the reserved GPU's monthly
fixed cost, so the ENCS dashboard, break-even and the monthly report show figures on the first
run. `seed_demo` runs it (unless --no-history); `--remove` deletes exactly the demo's past.

A command of accounting, not of the support domain: it writes an accounting row (the fixed
cost) and has accounting roll the days up again, and only accounting may import both sides
(the layers of pyproject.toml). The rows of the past themselves are the support domain's and
drafting's, written by csbot.demo.history.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounting.models import FixedCost, RolledUpDay
from accounting.services import facts_rollup, settled_before
from accounting.withholding import action_values_refresh
from csbot.demo import DEMO_TEAM
from csbot.demo.history import (
    DAYS,
    FIXED_COST,
    FIXED_COST_MONTHLY_USD,
    history_remove,
    history_seed,
)
from csbot.models import Team
from drafting.models import CascadePolicy


class Command(BaseCommand):
    help = "Add (or --remove) the demo team's 60 days of past drafts, actions and costs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--remove", action="store_true", help="Delete the demo's past.")
        parser.add_argument("--days", type=int, default=DAYS, help=f"Days of past ({DAYS}).")
        parser.add_argument("--team", default=DEMO_TEAM, help=f"The team ({DEMO_TEAM!r}).")

    def handle(self, *args: Any, **options: Any) -> None:
        team = Team.objects.filter(name=options["team"]).first()
        if team is None:
            raise CommandError(f"No team {options['team']!r}: run `manage.py seed_demo` first.")
        began = time.monotonic()
        if options["remove"]:
            removed = history_remove(team=team)
            FixedCost.objects.filter(name=FIXED_COST, policy__team=team).delete()
            rolled = _roll_up_again(removed.days)
            self.stdout.write(
                f"Demo history removed: {removed.conversations} conversations, "
                f"{removed.messages} messages, {removed.drafts} drafts; {rolled} days rolled "
                f"up again ({time.monotonic() - began:.1f} s)."
            )
            return
        if options["days"] < 1:
            raise CommandError("--days must be at least 1.")
        if not CascadePolicy.objects.filter(team=team, active=True).exists():
            raise CommandError(f"{team} has no active policy: run `manage.py seed_demo` first.")
        seeded = history_seed(team=team, days=options["days"], progress=self.stdout.write)
        if not seeded.created:
            self.stdout.write("Demo history exists; nothing to do (--remove deletes it).")
            return
        assert seeded.switch_day is not None
        live = CascadePolicy.objects.get(team=team, active=True)
        FixedCost.objects.get_or_create(
            name=FIXED_COST,
            policy=live,
            defaults={
                "kind": FixedCost.Kind.MONTHLY,
                "amount_usd": FIXED_COST_MONTHLY_USD,
                "starts_on": seeded.switch_day,
            },
        )
        rolled = _roll_up_again(seeded.days)
        # What the hourly task would measure: the team's action values, so that a policy
        # switched to withholding (or a router) decides with the demo's own figures at once.
        valued = team.pk in action_values_refresh()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo history (demo data, channel 'Demo history'; `seed_demo --remove-history` "
                f"deletes it): {seeded.conversations} conversations, {seeded.messages} messages, "
                f"{seeded.drafts} drafts over {len(seeded.days)} days, local-first from "
                f"{seeded.switch_day}, a ${FIXED_COST_MONTHLY_USD}/month GPU as fixed cost; "
                f"{rolled} days rolled up"
                f"{', action values measured' if valued else ''} in "
                f"{time.monotonic() - began:.1f} s."
            )
        )


def _roll_up_again(days: Iterable[date]) -> int:
    """The days' facts summed again by accounting's own rollup (what the beat task does for
    settled days): bulk inserts and deletes fire no signal to mark them stale. A day not
    settled yet is read from the raw rows anyway; it is only marked stale."""
    days = sorted(days)
    RolledUpDay.objects.filter(day__in=days).update(stale=True)
    settled = settled_before()
    done = 0
    for day in days:
        if day < settled:
            facts_rollup(day=day)
            done += 1
    return done
