"""Accounting: the money settings ENCS needs (as dated data) and a daily rollup of the facts.

ENCS itself is computed from the support domain's and drafting's rows (accounting.engine);
what accounting owns is what those rows cannot say: what an agent hour costs, how long an
unaided reply takes until the hold-out group has measured it, fixed costs, and the daily
`DailyFact` rollup that keeps month-long reports fast (rebuilt from the raw rows, and
checked against them by the tests).
"""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from drafting.models import MONEY_DIGITS, MONEY_PLACES

ZERO = Decimal(0)


class AccountingSettings(models.Model):
    """The agent cost rate R, the default unaided reply time and the hold-out sample size in
    force from `effective_from` (a date, in the project's time zone) for one team, or for
    every team without its own row (team blank)."""

    team = models.ForeignKey(
        "csbot.Team",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="accounting_settings",
        help_text="Blank: the default for teams without their own settings.",
    )
    effective_from = models.DateField(default=timezone.localdate)
    agent_hourly_usd = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        validators=[MinValueValidator(ZERO)],
        help_text="R: what an hour of agent time costs (wage and overheads), USD.",
    )
    default_baseline_seconds = models.DecimalField(
        max_digits=10,
        decimal_places=3,
        validators=[MinValueValidator(Decimal("0.001"))],
        help_text="T_baseline used until the hold-out group has enough replies: seconds to "
        "write a reply unaided.",
    )
    min_holdout_sample = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(1)],
        help_text="Held-out replies needed in a period before their mean replaces the default.",
    )
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "accounting settings"
        ordering = ["team_id", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "effective_from"], name="accounting_settings_unique_per_team_day"
            ),
            models.UniqueConstraint(
                fields=["effective_from"],
                condition=Q(team__isnull=True),
                name="accounting_default_settings_unique_per_day",
            ),
            models.CheckConstraint(
                condition=Q(agent_hourly_usd__gte=0) & Q(default_baseline_seconds__gt=0),
                name="accounting_settings_positive",
            ),
        ]

    def __str__(self) -> str:
        who = self.team or "all teams"
        return f"{who} from {self.effective_from}: ${self.agent_hourly_usd}/h"


class FixedCost(models.Model):
    """A cost that does not scale with drafts: a one-off (fine-tuning, integration work) or a
    monthly one (a reserved GPU), charged to a cascade policy or a model endpoint for
    break-even."""

    class Kind(models.TextChoices):
        ONE_OFF = "one_off", "One-off"
        MONTHLY = "monthly", "Monthly"

    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    amount_usd = models.DecimalField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, validators=[MinValueValidator(ZERO)]
    )
    policy = models.ForeignKey(
        "drafting.CascadePolicy",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="fixed_costs",
    )
    endpoint = models.ForeignKey(
        "drafting.ModelEndpoint",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="fixed_costs",
    )
    # A fine-tuning run's machine time (drafting.DistillRun.cost_usd), booked when it finished.
    distill_run = models.OneToOneField(
        "drafting.DistillRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="fixed_cost",
    )
    starts_on = models.DateField(
        default=timezone.localdate, help_text="One-off: the day it was incurred."
    )
    ends_on = models.DateField(
        null=True, blank=True, help_text="Monthly costs: the last day charged (blank: ongoing)."
    )

    class Meta:
        ordering = ["starts_on", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(policy__isnull=False) | Q(endpoint__isnull=False),
                name="fixed_cost_charged_to_policy_or_endpoint",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["one_off", "monthly"]), name="fixed_cost_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(amount_usd__gte=0), name="fixed_cost_amount_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(ends_on__isnull=True) | Q(ends_on__gte=models.F("starts_on")),
                name="fixed_cost_ends_after_start",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()}, ${self.amount_usd})"


class DailyFact(models.Model):
    """Drafts of one day, summed per (team, policy, model, agent, outcome): exactly what
    accounting.engine computes ENCS from, so a month reads ~thousands of rows instead of
    millions. Rebuilt per day from the raw rows (accounting.services.facts_rollup)."""

    day = models.DateField()
    team_id = models.BigIntegerField()
    policy_id = models.BigIntegerField()
    # Final endpoint of a ready draft; null for a cache hit or no draft (see `source`).
    endpoint_id = models.BigIntegerField(null=True)
    source = models.CharField(max_length=8)  # "model", "cache" or "none"
    agent_id = models.BigIntegerField(null=True)
    kind = models.CharField(max_length=16)
    drafts = models.PositiveIntegerField()
    handle_seconds = models.DecimalField(max_digits=20, decimal_places=3)
    handle_seconds_sq = models.DecimalField(max_digits=30, decimal_places=6)
    cost = models.DecimalField(max_digits=MONEY_DIGITS + 6, decimal_places=MONEY_PLACES)
    counterfactual_cost = models.DecimalField(
        max_digits=MONEY_DIGITS + 6, decimal_places=MONEY_PLACES
    )
    # The customer message's intent (drafting.MessageIntent) when it was classified.
    intent_id = models.BigIntegerField(null=True)
    # The agent's wait (accounting.facts): answered drafts opened before they were ready, and
    # the seconds waited for them, a part of handle_seconds.
    waited = models.PositiveIntegerField(default=0)
    wait_seconds = models.DecimalField(max_digits=20, decimal_places=3, default=ZERO)

    class Meta:
        indexes = [models.Index(fields=["day", "team_id"], name="daily_fact_day_team_idx")]

    def __str__(self) -> str:
        return f"{self.day} team {self.team_id} {self.kind} ×{self.drafts}"


class DailyTotal(models.Model):
    """DailyFact summed over agents, written with it: every figure but a per-agent one reads
    these, ~1/agents as many rows (a year of break-even history is ~20 k rows, not 250 k)."""

    day = models.DateField()
    team_id = models.BigIntegerField()
    policy_id = models.BigIntegerField()
    endpoint_id = models.BigIntegerField(null=True)
    source = models.CharField(max_length=8)
    kind = models.CharField(max_length=16)
    intent_id = models.BigIntegerField(null=True)
    drafts = models.PositiveIntegerField()
    handle_seconds = models.DecimalField(max_digits=20, decimal_places=3)
    handle_seconds_sq = models.DecimalField(max_digits=30, decimal_places=6)
    cost = models.DecimalField(max_digits=MONEY_DIGITS + 6, decimal_places=MONEY_PLACES)
    counterfactual_cost = models.DecimalField(
        max_digits=MONEY_DIGITS + 6, decimal_places=MONEY_PLACES
    )
    waited = models.PositiveIntegerField(default=0)
    wait_seconds = models.DecimalField(max_digits=20, decimal_places=3, default=ZERO)

    class Meta:
        indexes = [models.Index(fields=["day", "team_id"], name="daily_total_day_team_idx")]

    def __str__(self) -> str:
        return f"{self.day} team {self.team_id} {self.kind} ×{self.drafts}"


class RolledUpDay(models.Model):
    """A day whose drafts are summed in DailyFact, and when. A row changed afterwards for a
    draft of that day (an action recorded or edited, a message's intent reclassified) marks it
    `stale` (accounting.signals): it is read raw until rolled up again.

    Marking is an UPDATE of this row inside the writer's transaction, and the rollup holds the
    row FOR UPDATE while it reads, so a write racing a rollup is either in what it read or
    marks the day stale after it; the rollup inserts the row (stale) before taking the lock so
    that a day's first rollup is covered too."""

    day = models.DateField(primary_key=True)
    rolled_at = models.DateTimeField(null=True, blank=True)  # None: being rolled up first time
    stale = models.BooleanField(default=False)

    def __str__(self) -> str:
        if self.rolled_at is None:
            return f"{self.day} (not rolled up yet)"
        state = ", stale" if self.stale else ""
        return f"{self.day} (rolled up {self.rolled_at:%Y-%m-%d %H:%M}{state})"


class MonthlyReport(models.Model):
    """A month's ENCS report, as generated (on the 1st by beat, or on demand): the figures as
    JSON and the rendered files. Regenerating a month replaces its row."""

    team = models.ForeignKey(
        "csbot.Team",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="monthly_reports",
        help_text="Blank: all teams together.",
    )
    month = models.DateField(help_text="The month's first day.")
    figures = models.JSONField()
    html = models.FileField(upload_to="reports/%Y/")
    pdf = models.FileField(upload_to="reports/%Y/")
    csv = models.FileField(upload_to="reports/%Y/")
    generated_at = models.DateTimeField(default=timezone.now)
    emailed_to = models.TextField(blank=True, help_text="Recipients, one per line.")

    class Meta:
        ordering = ["-month", "team_id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "month"], name="monthly_report_unique"),
            models.UniqueConstraint(
                fields=["month"],
                condition=Q(team__isnull=True),
                name="monthly_report_all_teams_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"ENCS {self.month:%Y-%m} — {self.team or 'all teams'}"
