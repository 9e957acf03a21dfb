"""ENCS outside the dashboard: the REST API, the `encs_report` command, stored monthly
reports mailed to managers, and the beat schedules."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask

from accounting.facts import Scope
from accounting.models import AccountingSettings, MonthlyReport
from accounting.reports import reports_monthly
from accounting.selectors import encs_report
from csbot.models import AgentProfile
from drafting.models import CascadePolicy
from tests.accounting.factories import OCTOBER, case_study_settings, scenario
from tests.factories import WHATIF_PAPER_CASE, PolicyFactory, TeamSetup, UserFactory, make_team


@pytest.fixture
def team(db: None) -> TeamSetup:
    case_study_settings()
    setup = make_team("Reports")
    scenario(CascadePolicy.objects.get(team=setup.team))
    return setup


# --- API ---------------------------------------------------------------------------------------


def test_the_api_gives_the_teams_figures(team: TeamSetup) -> None:
    response = team.api().get(
        "/api/v1/encs", {"from": "2026-10-01", "to": "2026-10-31", "group_by": "model"}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["encs_usd"] == "1.1900000000"
    assert body["period"] == "2026-10"
    assert body == json.loads(
        json.dumps(
            encs_report(Scope(OCTOBER.start, OCTOBER.end, (team.team.pk,)), group_by="model")
        )
    )


def test_the_api_sees_only_the_callers_team(team: TeamSetup) -> None:
    other = make_team("Elsewhere")
    body = other.api().get("/api/v1/encs", {"from": "2026-10-01", "to": "2026-10-31"}).json()
    assert body["messages"] == 0 and body["encs_usd"] == "0.0000000000"
    foreign_policy = CascadePolicy.objects.get(team=team.team).pk
    response = other.api().get("/api/v1/encs", {"policy": foreign_policy})
    assert response.status_code == 400
    assert "policy" in response.json()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-13-01"}, "from"),
        ({"from": "2026-10-31", "to": "2026-10-01"}, "to"),
        ({"from": "2025-01-01", "to": "2026-10-01"}, "to"),
        ({"group_by": "colour"}, "group_by"),
        ({"period": "october"}, "period"),
    ],
)
def test_bad_queries_are_400_with_the_field_named(
    team: TeamSetup, params: dict[str, str], field: str
) -> None:
    response = team.api().get("/api/v1/encs", params)
    assert response.status_code == 400
    assert field in response.content.decode()


def test_the_api_needs_a_token(client: Any, db: None) -> None:
    assert client.get("/api/v1/encs").status_code in (401, 403)


def test_the_whatif_calculator_over_the_api(team: TeamSetup) -> None:
    params = dict(WHATIF_PAPER_CASE)
    response = team.api().get("/api/v1/encs/whatif", params)
    assert response.status_code == 200, response.content
    assert response.json()["encs_per_message_usd"] == "0.5590000000"
    too_much = team.api().get("/api/v1/encs/whatif", {**params, "ignore_share": "0.5"})
    assert too_much.status_code == 400 and "ignore_share" in too_much.content.decode()


def test_the_schema_documents_the_encs_routes(client: Any, db: None) -> None:
    schema = client.get("/api/schema/", {"format": "json"}).json()
    assert "/api/v1/encs" in schema["paths"]
    names = {p["name"] for p in schema["paths"]["/api/v1/encs"]["get"]["parameters"]}
    assert {"from", "to", "group_by", "policy"} <= names


# --- Command -----------------------------------------------------------------------------------


def test_the_command_prints_json_with_the_documented_keys(
    team: TeamSetup, capsysbinary: Any
) -> None:
    call_command("encs_report", "--month", "2026-10", "--format", "json", "--team", "Reports")
    figures = json.loads(capsysbinary.readouterr().out)
    for key in (
        "period",
        "messages",
        "drafts",
        "actions",
        "shares",
        "baseline_seconds",
        "baseline_source",
        "handle_seconds",
        "labor_savings_usd",
        "model_cost_usd",
        "encs_usd",
        "encs_per_message_usd",
        "by_model",
        "break_even",
    ):
        assert key in figures, key
    assert set(figures["actions"]) == {"use", "edit", "ignore", "none"}
    assert figures["encs_usd"] == "1.1900000000" and figures["team"] == "Reports"


def test_the_command_writes_csv_html_and_pdf(team: TeamSetup, tmp_path: Path) -> None:
    for fmt in ("csv", "html", "pdf"):
        call_command(
            "encs_report", "--month", "2026-10", "--format", fmt, "--output", tmp_path / f"r.{fmt}"
        )
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert rows[0]["section"] == "total" and rows[0]["encs_usd"] == "1.1900000000"
    assert {r["section"] for r in rows} == {"total", "model", "intent", "day"}
    assert "<svg" in (tmp_path / "r.html").read_text()
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")


def test_the_command_explains_bad_arguments(team: TeamSetup) -> None:
    with pytest.raises(CommandError, match="YYYY-MM"):
        call_command("encs_report", "--month", "October")
    with pytest.raises(CommandError, match="No team 'Nobody'"):
        call_command("encs_report", "--month", "2026-10", "--team", "Nobody")


# --- Stored monthly reports --------------------------------------------------------------------


@pytest.mark.slow
def test_the_monthly_job_stores_and_mails_the_previous_month(team: TeamSetup) -> None:
    manager = UserFactory.create(username="boss", email="boss@example.com")
    AgentProfile.objects.create(user=manager, team=team.team, role=AgentProfile.Role.MANAGER)
    UserFactory.create(username="root", email="root@example.com", is_superuser=True)
    PolicyFactory.create()  # another team with a policy gets its own report
    reports = reports_monthly(today=date(2026, 11, 1))
    assert len(reports) == 3  # two teams and all teams together
    ours = MonthlyReport.objects.get(team=team.team, month=date(2026, 10, 1))
    assert ours.figures["encs_usd"] == "1.1900000000"
    assert ours.pdf.read().startswith(b"%PDF")
    assert ours.emailed_to == "boss@example.com"
    sent = {tuple(m.to): m for m in mail.outbox}
    assert ("boss@example.com",) in sent and ("root@example.com",) in sent
    message = sent[("boss@example.com",)]
    assert "ENCS: $1.1900000000" in message.body
    assert {name.rsplit(".", 1)[1] for name, *_ in message.attachments} == {"pdf", "csv"}
    # Regenerating replaces the month's row.
    reports_monthly(today=date(2026, 11, 1))
    assert MonthlyReport.objects.filter(team=team.team).count() == 1


def test_the_schedules_are_editable_rows(db: None) -> None:
    monthly = PeriodicTask.objects.get(task="accounting.tasks.monthly_reports")
    assert monthly.crontab is not None
    assert (monthly.crontab.day_of_month, monthly.crontab.hour) == ("1", "6")
    assert PeriodicTask.objects.get(task="accounting.tasks.facts_rollup").interval is not None


def test_accounting_defaults_are_created_once(db: None) -> None:
    call_command("accounting_defaults", "--rate", "42")
    call_command("accounting_defaults", "--rate", "99")
    assert AccountingSettings.objects.get(team=None).agent_hourly_usd == Decimal(42)
