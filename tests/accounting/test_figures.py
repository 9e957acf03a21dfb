"""The typed ENCS figures: one definition of the action shares wherever a person or a program
reads them, and stored reports that read back into the same figures."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client

from accounting import rendering
from accounting.facts import Scope
from accounting.figures import EncsReport
from accounting.models import AccountingSettings, MonthlyReport
from accounting.reports import report_csv, report_email, report_generate
from accounting.selectors import encs_figures, encs_report
from csbot.models import AgentProfile, Message
from drafting.models import AgentAction, Draft
from tests.factories import (
    AgentProfileFactory,
    ConversationFactory,
    MessageFactory,
    TeamSetup,
    make_team,
)

OCTOBER = {"from": "2026-10-01", "to": "2026-10-31"}
CREATED = datetime(2026, 10, 5, 12, tzinfo=UTC)


def draft_for(setup: TeamSetup, *, kind: str | None, handle: int = 60) -> Draft:
    """A ready draft of the team's, answered with `kind` after `handle` s (None: not yet)."""
    conversation = ConversationFactory.create(team=setup.team)
    inbound = MessageFactory.create(conversation=conversation, created_at=CREATED)
    draft = Draft.objects.create(
        message=inbound,
        policy=setup.policy,
        status=Draft.Status.READY,
        text="Draft text",
        final_endpoint=setup.endpoint,
        total_cost=Decimal("0.001"),
        created_at=CREATED,
        ready_at=CREATED,
    )
    if kind is not None:
        AgentAction.objects.create(
            draft=draft,
            inbound_message=inbound,
            outbound_message=MessageFactory.create(
                conversation=conversation, direction=Message.Direction.OUTBOUND
            ),
            agent=setup.agent,
            kind=kind,
            final_text="Reply",
            shown_at=CREATED,
            acted_at=CREATED + timedelta(seconds=handle),
            handle_seconds=Decimal(handle),
        )
    return draft


@pytest.fixture
def five_drafts(db: None) -> TeamSetup:
    """Five drafts: one used, one edited, one ignored, two not answered (yet)."""
    AccountingSettings.objects.create(
        effective_from=date(2026, 1, 1),
        agent_hourly_usd=Decimal(36),
        default_baseline_seconds=Decimal(120),
    )
    setup = make_team("Shares")
    for kind in ("use", "edit", "ignore", None, None):
        draft_for(setup, kind=kind)
    return setup


@pytest.fixture
def manager(client: Client, five_drafts: TeamSetup) -> Client:
    profile = AgentProfileFactory.create(
        team=five_drafts.team,
        role=AgentProfile.Role.MANAGER,
        user__username="shares-manager",
        user__email="manager@example.com",
    )
    client.force_login(profile.user)
    return client


def assert_shows_one_fifth_as_the_use_share(text: str) -> None:
    """Nothing shows a third: P(use) over the 3 answered drafts instead of all 5."""
    assert not re.search(r"\b33(\.3+)?\s?%|0\.3333", text), "a share over answered drafts"


def test_p_use_is_a_share_of_all_drafts_in_the_figures_and_the_api(
    five_drafts: TeamSetup,
) -> None:
    report = encs_figures(Scope(date(2026, 10, 1), date(2026, 11, 1)))
    assert report.totals.drafts == 5 and report.totals.unanswered_drafts == 2
    assert report.totals.shares == {
        "use": Decimal("0.2"),
        "edit": Decimal("0.2"),
        "ignore": Decimal("0.2"),
    }
    assert report.totals.decomposition is not None
    assert report.totals.decomposition.p["use"] == report.totals.shares["use"]

    response = five_drafts.api().get("/api/v1/encs", {**OCTOBER, "group_by": "model"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["shares"] == {"use": "0.2000", "edit": "0.2000", "ignore": "0.2000"}
    assert body["decomposition"]["p"]["use"] == "0.2000"
    [model] = body["by_model"]
    assert model["shares"]["use"] == "0.2000"
    assert_shows_one_fifth_as_the_use_share(response.content.decode())


def test_p_use_is_a_share_of_all_drafts_on_the_dashboard(manager: Client) -> None:
    response = manager.get("/accounting/", OCTOBER)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-kind="use" data-share="0.2000"' in html
    assert re.search(r'data-kind="use".*?<strong>20\.0%</strong>', html, re.S)
    assert "Used as is 20%" in html  # the chart's label
    assert response.context["whatif_form"].data["w-use_pct"] == Decimal("20.00")
    assert_shows_one_fifth_as_the_use_share(html)


def test_p_use_is_a_share_of_all_drafts_in_the_html_and_pdf_reports(
    manager: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    html = manager.get("/accounting/report.html", OCTOBER).content.decode()
    assert re.search(r"Used as is</td><td class=\"num strong\">20\.0%</td>", html)
    assert "P(a): share of all drafts" in html
    assert_shows_one_fifth_as_the_use_share(html)

    # The PDF is that document printed: what goes to WeasyPrint shows the same shares.
    printed: list[str] = []
    real = rendering.html_to_pdf

    def capture(document: str) -> bytes:
        printed.append(document)
        return real(document)

    monkeypatch.setattr(rendering, "html_to_pdf", capture)
    response = manager.get("/accounting/report.pdf", OCTOBER)
    assert response.status_code == 200 and response.content.startswith(b"%PDF")
    [document] = printed
    assert re.search(r"Used as is</td><td class=\"num strong\">20\.0%</td>", document)
    assert_shows_one_fifth_as_the_use_share(document)


def test_p_use_is_a_share_of_all_drafts_in_the_csv(five_drafts: TeamSetup, tmp_path: Path) -> None:
    output = tmp_path / "october.csv"
    call_command("encs_report", "--month", "2026-10", "--format", "csv", "--output", output)
    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    total = rows[0]
    assert total["section"] == "total" and total["drafts"] == "5"
    assert (total["share_use"], total["share_edit"], total["share_ignore"]) == ("0.2000",) * 3
    assert_shows_one_fifth_as_the_use_share(output.read_text())


def test_a_stored_report_reads_back_into_the_same_figures(five_drafts: TeamSetup) -> None:
    stored = report_generate(month=date(2026, 10, 1), team=five_drafts.team)
    stored = MonthlyReport.objects.get(pk=stored.pk)  # the JSON as the database gives it
    report = EncsReport.from_json(stored.figures)
    assert report.as_json() == encs_report(
        Scope(date(2026, 10, 1), date(2026, 11, 1), (five_drafts.team.pk,)), group_by="day"
    )
    assert stored.figures["team"] == "Shares"
    assert report.totals.shares["use"] == Decimal("0.2")
    assert stored.csv.read().decode() == report_csv(report)


def test_a_report_stored_with_shares_of_answered_drafts_reads_back_with_p_of_all_drafts(
    five_drafts: TeamSetup,
) -> None:
    figures = encs_report(Scope(date(2026, 10, 1), date(2026, 11, 1)))
    # What monthly reports stored before the shares had one definition.
    old = json.loads(json.dumps(figures))
    old["shares"] = {"use": "0.3333", "edit": "0.3333", "ignore": "0.3333"}
    assert EncsReport.from_json(old).totals.shares["use"] == Decimal("0.2")
    assert EncsReport.from_json(old).as_json() == figures


def test_the_report_title_is_one_for_the_page_the_file_and_the_mail(
    five_drafts: TeamSetup, manager: Client
) -> None:
    html = manager.get("/accounting/report.html", OCTOBER).content.decode()
    assert "<title>ENCS report, October 2026 — Shares</title>" in html
    stored = report_generate(month=date(2026, 10, 1), team=five_drafts.team)
    assert "<title>ENCS report, October 2026 — Shares</title>" in stored.html.read().decode()
    assert report_email(stored) == ["manager@example.com"]
    [sent] = mail.outbox
    assert sent.subject == "ENCS report, October 2026 — Shares"
    assert sent.body.startswith("ENCS report, October 2026 — Shares\n")
