"""The ENCS dashboard in a real browser (headless Debian Chromium through Playwright): a
manager logs in, reads this month, switches to last month with the filters, asks the what-if
calculator about faster edits, and opens the printable report. The page must show what
`encs_report` and `whatif` compute; screenshots go to artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Browser, Page

from accounting.engine import whatif
from accounting.facts import Scope
from accounting.forms import this_month
from accounting.models import FixedCost
from accounting.selectors import encs_report
from tests.accounting.factories import make_books, seed_history
from tests.browser import chromium
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser]

NAV_TIMEOUT_MS = 30_000


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    with chromium(monkeypatch) as browser:
        yield browser


def _login(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}{reverse('login')}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")


def _kpi(page: Page, key: str) -> str | None:
    return page.locator(f'[data-kpi="{key}"]').get_attribute("data-value")


@pytest.mark.django_db(transaction=True)
def test_a_manager_reads_the_encs_dashboard_in_the_browser(
    live_server: Any, browser: Browser, artifacts_dir: Path
) -> None:
    books = make_books()
    today = timezone.localdate()
    first, last = this_month(today)
    previous_last = first - timedelta(days=1)
    previous_first = previous_last.replace(day=1)
    history_start = (previous_first - timedelta(days=70)).replace(day=1)
    seed_history(books, start=history_start, end=today + timedelta(days=1))
    FixedCost.objects.create(
        name="Integration",
        kind="one_off",
        amount_usd=Decimal(60),
        policy=books.policy,
        starts_on=history_start,
    )
    FixedCost.objects.create(
        name="GPU share",
        kind="monthly",
        amount_usd=Decimal(25),
        policy=books.policy,
        starts_on=history_start,
    )
    FixedCost.objects.create(
        name="Fine-tuning",
        kind="one_off",
        amount_usd=Decimal(40),
        endpoint=books.paid,
        starts_on=history_start,
    )
    team = (books.team.pk,)

    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(NAV_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _login(page, live_server.url, books.users["manager"].username)

    # This month by default.
    page.goto(f"{live_server.url}/accounting/")
    now = encs_report(Scope(start=first, end=last + timedelta(days=1), team_ids=team))
    assert page.input_value("input[name=from]") == first.isoformat()
    assert _kpi(page, "encs_usd") == now["encs_usd"]

    # Last month, through the filter form (htmx swaps the page body in place).
    page.fill("input[name=from]", previous_first.isoformat())
    page.fill("input[name=to]", previous_last.isoformat())
    page.click("#apply-filters")
    page.wait_for_url(f"**from={previous_first.isoformat()}**")
    scope = Scope(start=previous_first, end=first, team_ids=team)
    report = encs_report(scope, group_by="day")
    page.wait_for_function(
        "v => document.querySelector('[data-kpi=encs_usd]').dataset.value === v",
        arg=report["encs_usd"],
    )
    assert _kpi(page, "labor_savings_usd") == report["labor_savings_usd"]
    assert _kpi(page, "model_cost_usd") == report["model_cost_usd"]
    for name in ("timeline", "shares", "tiers", "models"):
        assert page.locator(f"svg.chart-{name}").is_visible(), name

    # What if edits took 40 s and the paid model were never needed (local cost only)?
    page.fill("input[name=w-edit_seconds]", "40")
    page.fill("input[name=w-cost_per_response_usd]", "0.0004")
    page.click("#whatif-submit")
    values = {
        name: Decimal(page.input_value(f"input[name=w-{name}]"))
        for name in (
            "agent_hourly_usd",
            "baseline_seconds",
            "use_seconds",
            "edit_seconds",
            "ignore_seconds",
            "use_pct",
            "edit_pct",
            "ignore_pct",
            "cost_per_response_usd",
            "messages_per_year",
        )
    }
    expected = whatif(
        agent_hourly_usd=values["agent_hourly_usd"],
        baseline_seconds=values["baseline_seconds"],
        handle_seconds={k: values[f"{k}_seconds"] for k in ("use", "edit", "ignore")},
        shares={k: values[f"{k}_pct"] / 100 for k in ("use", "edit", "ignore")},
        cost_per_response_usd=Decimal("0.0004"),
        messages_per_year=int(values["messages_per_year"]),
    )
    result = page.locator("#whatif-result strong").first
    page.wait_for_function(
        "v => document.querySelector('#whatif-result strong').dataset.value === v",
        arg=expected.as_json()["encs_per_message_usd"],
    )
    assert result.get_attribute("data-value") == expected.as_json()["encs_per_message_usd"]
    assert values["edit_seconds"] == 40
    page.screenshot(path=str(artifacts_dir / "encs-dashboard.png"), full_page=True)

    # The printable report for the same filters opens in a new tab.
    with context.expect_page() as opened:
        page.click("#open-report")
    report_page = opened.value
    report_page.wait_for_load_state("load")
    assert report_page.title().startswith("ENCS report")
    assert (
        report_page.locator('[data-kpi="encs_usd"]').get_attribute("data-value")
        == report["encs_usd"]
    )
    assert report_page.locator("svg.chart").count() >= 5
    report_page.screenshot(path=str(artifacts_dir / "encs-report.png"), full_page=True)

    # And the PDF downloads.
    with page.expect_download() as download:
        page.click("#download-pdf")
    assert download.value.suggested_filename.startswith("encs-")
    download.value.save_as(artifacts_dir / "encs-report.pdf")
    with Path(download.value.path()).open("rb") as pdf:
        assert pdf.read(4) == b"%PDF"

    context.close()
    assert not errors, f"JavaScript errors on the dashboard: {errors}"
