"""Reads the ENCS dashboard and the printable report need beside `encs_report`: who may see
which team, model cost per cascade tier, the agent rate in force (for the what-if's
defaults) and the names behind the report's ids."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Case, Count, DecimalField, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce

from accounting.engine import money
from accounting.facts import Scope, day_start
from accounting.figures import TierCost
from accounting.models import AccountingSettings
from csbot.models import AgentProfile, Team
from drafting.models import MONEY_DIGITS, MONEY_PLACES, CascadePolicy, DraftAttempt

# Roles that see money: an agent's own team's savings are not an agent's business.
FINANCE_ROLES = (AgentProfile.Role.MANAGER, AgentProfile.Role.ADMIN)


@dataclass(frozen=True)
class Viewer:
    """Whose ENCS a user may see: one team (a manager or a team admin), or every team
    (`team_id` None: a superuser)."""

    team_id: int | None

    @property
    def team_ids(self) -> tuple[int, ...] | None:
        return None if self.team_id is None else (self.team_id,)

    def teams(self) -> QuerySet[Team]:
        teams = Team.objects.order_by("name")
        return teams if self.team_id is None else teams.filter(pk=self.team_id)

    def policies(self) -> QuerySet[CascadePolicy]:
        policies = CascadePolicy.objects.select_related("team").order_by("team__name", "name")
        return policies if self.team_id is None else policies.filter(team_id=self.team_id)


def dashboard_viewer(*, user: Any) -> Viewer:
    """The scope `user` may see; PermissionDenied for agents and users without a team."""
    if user.is_superuser:
        return Viewer(team_id=None)
    profile = AgentProfile.objects.filter(user_id=user.pk).only("team_id", "role").first()
    if profile is None or profile.role not in FINANCE_ROLES:
        raise PermissionDenied("The ENCS dashboard is for managers and admins.")
    return Viewer(team_id=profile.team_id)


def tier_costs(scope: Scope) -> list[TierCost]:
    """Provider attempts of the drafts created in `scope`, summed per cascade tier (tier 0:
    cache hits): attempts, successful ones, and what they cost. Exploratory
    attempts (asked after the draft was ready, for the optimiser) are a row of their own: the
    money is spent all the same, but they are not escalations. So are the composer tools'
    attempts (an agent's reply rewritten by a tier): model spend on the message, no draft; and
    a candidate adapter's answers in shadow ("Tier 1 (shadow)": drafting.adapters)."""
    money_field: DecimalField[Any, Any] = DecimalField(
        max_digits=MONEY_DIGITS + 6, decimal_places=MONEY_PLACES
    )
    attempts = DraftAttempt.objects.filter(
        draft__created_at__gte=day_start(scope.start), draft__created_at__lt=day_start(scope.end)
    ).exclude(error_kind=DraftAttempt.ErrorKind.ROUTED)  # a tier the router skipped: not asked
    if scope.team_ids is not None:
        attempts = attempts.filter(draft__policy__team_id__in=scope.team_ids)
    if scope.policy_ids is not None:
        attempts = attempts.filter(draft__policy_id__in=scope.policy_ids)
    rows = (
        attempts.annotate(
            composer=Case(
                When(
                    purpose__in=[DraftAttempt.Purpose.DRAFT, DraftAttempt.Purpose.SHADOW],
                    then=Value(False),
                ),
                default=Value(True),
            ),
            # A candidate adapter's answer, asked after the draft was shown: spend of its own.
            shadow=Case(
                When(purpose=DraftAttempt.Purpose.SHADOW, then=Value(True)), default=Value(False)
            ),
        )
        .values("tier", "exploratory", "composer", "shadow")
        .annotate(
            n=Count("id"),
            ok=Count("id", filter=Q(outcome=DraftAttempt.Outcome.OK)),
            spent=Coalesce(Sum("cost"), Value(Decimal(0)), output_field=money_field),
        )
        .order_by("tier", "exploratory", "composer", "shadow")
    )
    return [
        TierCost(
            tier=row["tier"],
            exploratory=row["exploratory"],
            composer=row["composer"],
            shadow=row["shadow"],
            attempts=row["n"],
            ok=row["ok"],
            cost_usd=money(Decimal(row["spent"])),
        )
        for row in rows
    ]


def agent_rate(*, team_id: int | None, day: date) -> AccountingSettings | None:
    """The AccountingSettings row in force on `day` for the team (its own, else the default
    for all teams); the default row when `team_id` is None."""
    rows = AccountingSettings.objects.filter(effective_from__lte=day)
    owners = Q(team__isnull=True) if team_id is None else Q(team_id=team_id) | Q(team__isnull=True)
    # A team's own row sorts before the default (NULLs last), the newest first within each.
    return rows.filter(owners).order_by("team_id", "-effective_from").first()


def names(*, team_ids: list[int] | None, policy_ids: list[int] | None) -> dict[str, dict[int, str]]:
    """Team and policy names for the ids a report is scoped to or has baselines for."""
    return {
        "teams": dict(Team.objects.filter(pk__in=team_ids or []).values_list("pk", "name")),
        "policies": dict(
            CascadePolicy.objects.filter(pk__in=policy_ids or []).values_list("pk", "name")
        ),
    }
