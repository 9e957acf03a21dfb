"""Monthly ENCS reports: figures (JSON), CSV, HTML and PDF; stored, and e-mailed to managers.

The figures are `encs_figures` for the calendar month (grouped by day, for the ENCS-over-time
chart; per model and break-even included). Before a month is reported the fact rollup catches
up, so the report reads the daily rollup rather than millions of raw rows.
"""

from __future__ import annotations

import calendar
import csv
import io
import logging
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.mail import EmailMessage
from django.db import transaction
from django.utils import timezone

from accounting.facts import Scope
from accounting.figures import EncsReport, Figures, plain
from accounting.knowledge import knowledge_report
from accounting.models import MonthlyReport
from accounting.selectors import encs_figures
from accounting.services import facts_rollup_due
from csbot.models import AgentProfile, Team

logger = logging.getLogger(__name__)

CSV_COLUMNS = (
    "messages",
    "drafts",
    "use",
    "edit",
    "ignore",
    "none",
    "outliers",
    "share_use",
    "share_edit",
    "share_ignore",
    "labor_savings_usd",
    "model_cost_usd",
    "encs_usd",
    "encs_per_message_usd",
    "all_paid_cost_usd",
    "cascade_savings_usd",
    "waited_drafts",
    "wait_seconds",
    "wait_cost_usd",
    "encs_if_instant_usd",
)


# The days a report may cover. Nothing is stored before 1970; and the computation steps a day
# and a month past a period's last day (and across time zones), which must still be a date:
# 9999-12-31 is not one a report can end on.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9998, 12, 31)


def month_start(value: str) -> date:
    """'YYYY-MM' → the month's first day (ValueError with a clear message otherwise)."""
    try:
        year, month = (int(part) for part in value.split("-"))
        first = date(year, month, 1)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a month in the form YYYY-MM.") from exc
    if not FIRST_DAY <= first <= LAST_DAY:
        raise ValueError(
            f"{value!r} is not a month between {FIRST_DAY:%Y-%m} and {LAST_DAY:%Y-%m}."
        )
    return first


def next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


def report_figures(*, month: date, team: Team | None) -> EncsReport:
    scope = Scope(
        start=month,
        end=next_month(month),
        team_ids=(team.pk,) if team is not None else None,
    )
    return encs_figures(scope, group_by="day")


def monthly_json(figures: EncsReport, *, team: Team | None) -> dict[str, Any]:
    """A month's figures as stored (MonthlyReport.figures) and printed by `encs_report
    --format json`: the API's JSON and the team's name (None: all teams). Read it back with
    `EncsReport.from_json`."""
    return {**figures.as_json(), "team": team.name if team is not None else None}


def report_title(report: EncsReport, *, team_names: Sequence[str]) -> str:
    """The report's one title: the HTML and PDF documents, the e-mail's subject and body."""
    if report.whole_month:
        period = f"{calendar.month_name[report.start.month]} {report.start.year}"
    else:
        period = f"{report.start.isoformat()} – {report.last.isoformat()}"
    return f"ENCS report, {period} — {', '.join(team_names) or 'all teams'}"


def report_filename(report: EncsReport, extension: str) -> str:
    return f"encs-{report.period.replace('..', '_')}.{extension}"


def _team_names(team: Team | None) -> list[str]:
    return [team.name] if team is not None else []


def _csv_row(section: str, group: str, figures: Figures) -> list[Any]:
    values: dict[str, Any] = {
        "messages": figures.messages,
        "drafts": figures.drafts,
        **figures.actions,
        "outliers": figures.outliers,
        # P(a): shares of all drafts, as everywhere else.
        **{f"share_{k}": str(v) for k, v in figures.shares.items()},
        "labor_savings_usd": plain(figures.labor_savings_usd),
        "model_cost_usd": plain(figures.model_cost_usd),
        "encs_usd": plain(figures.encs_usd),
        "encs_per_message_usd": ""
        if figures.encs_per_message_usd is None
        else plain(figures.encs_per_message_usd),
        "all_paid_cost_usd": plain(figures.all_paid_cost_usd),
        "cascade_savings_usd": plain(figures.cascade_savings_usd),
        # The agent's wait: inside ENCS already; ENCS + its cost is ENCS had drafts been instant.
        "waited_drafts": figures.waited_drafts,
        "wait_seconds": plain(figures.wait_seconds),
        "wait_cost_usd": plain(figures.wait_cost_usd),
        "encs_if_instant_usd": plain(figures.encs_if_instant_usd),
    }
    return [section, group, *(values[c] for c in CSV_COLUMNS)]


def report_csv(figures: EncsReport) -> str:
    """The month in one table: the total, then per model, per intent, then per day."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["section", "group", *CSV_COLUMNS])
    writer.writerow(_csv_row("total", figures.period, figures.totals))
    for section, groups in (
        ("model", figures.by_model),
        ("intent", figures.by_intent),
        ("day", figures.groups or ()),
    ):
        for group in groups:
            writer.writerow(_csv_row(section, group.name, group.figures))
    return out.getvalue()


def report_recipients(team: Team | None) -> list[str]:
    """Managers and admins of the team (all teams: superusers), with an e-mail address."""
    users = get_user_model().objects.exclude(email="").filter(is_active=True)
    if team is None:
        users = users.filter(is_superuser=True)
    else:
        users = users.filter(
            agent_profile__team=team,
            agent_profile__role__in=[AgentProfile.Role.MANAGER, AgentProfile.Role.ADMIN],
        )
    return sorted(users.values_list("email", flat=True))


def report_generate(*, month: date, team: Team | None) -> MonthlyReport:
    """Compute, render and store the month's report (replacing an earlier one)."""
    # matplotlib: load on demand
    from accounting.rendering import html_to_pdf, report_html, scope_of

    figures = report_figures(month=month, team=team)
    knowledge = knowledge_report(scope_of(figures), baselines=figures.baselines)
    html = report_html(
        figures, title=report_title(figures, team_names=_team_names(team)), knowledge=knowledge
    )
    pdf = html_to_pdf(html)
    name = f"encs-{month:%Y-%m}-{team.pk if team else 'all'}"
    with transaction.atomic():
        old = MonthlyReport.objects.filter(team=team, month=month).first()
        if old is not None:
            for stored in (old.html, old.pdf, old.csv):
                stored.delete(save=False)
            old.delete()
        report = MonthlyReport(
            team=team,
            month=month,
            # The knowledge beside the figures: what the stored HTML and PDF show.
            figures={**monthly_json(figures, team=team), "knowledge": knowledge.as_json()},
        )
        report.html.save(f"{name}.html", ContentFile(html.encode()), save=False)
        report.pdf.save(f"{name}.pdf", ContentFile(pdf), save=False)
        report.csv.save(f"{name}.csv", ContentFile(report_csv(figures).encode()), save=False)
        report.save()
    return report


def report_email(report: MonthlyReport) -> list[str]:
    """Mail the report (summary in the body, PDF and CSV attached) to its recipients."""
    recipients = report_recipients(report.team)
    if not recipients:
        return []
    figures = EncsReport.from_json(report.figures)
    totals, baseline = figures.totals, figures.baseline_seconds
    title = report_title(figures, team_names=_team_names(report.team))
    per_message = totals.encs_per_message_usd
    body = (
        f"{title}\n\n"
        f"Messages: {totals.messages}  Drafts: {totals.drafts}\n"
        f"Labour savings: ${plain(totals.labor_savings_usd)}\n"
        f"Model cost: ${plain(totals.model_cost_usd)}\n"
        f"ENCS: ${plain(totals.encs_usd)} "
        f"(${'None' if per_message is None else plain(per_message)} per message)\n"
        f"Baseline: {baseline} s ({figures.baseline_source})\n"
    )
    knowledge = report.figures.get("knowledge")  # reports stored before it have none
    if knowledge is not None:
        body += (
            f"Grounded drafts: {knowledge['grounded_drafts']}, "
            f"ENCS ${knowledge['grounded_encs_usd']}; "
            f"stale articles: {len(knowledge['stale_articles'])}; "
            f"content gaps: {len(knowledge['content_gaps']['groups'])} groups of questions\n"
        )
    message = EmailMessage(subject=title, body=body, to=recipients)
    message.attach(report.pdf.name.rsplit("/", 1)[-1], report.pdf.read(), "application/pdf")
    message.attach(report.csv.name.rsplit("/", 1)[-1], report.csv.read(), "text/csv")
    message.send()
    MonthlyReport.objects.filter(pk=report.pk).update(emailed_to="\n".join(recipients))
    return recipients


def reports_monthly(*, today: date | None = None) -> list[MonthlyReport]:
    """Beat's job on the 1st: catch the rollup up, then the previous month's report for every
    team with a cascade policy and for all teams together, each mailed to its managers."""
    today = today or timezone.localdate()
    month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    facts_rollup_due(limit=400)
    reports = []
    teams: list[Team | None] = [
        *Team.objects.filter(cascade_policies__isnull=False).distinct().order_by("pk"),
        None,
    ]
    for team in teams:
        report = report_generate(month=month, team=team)
        recipients = report_email(report)
        logger.info("ENCS report %s generated, mailed to %s", report, len(recipients))
        reports.append(report)
    return reports
