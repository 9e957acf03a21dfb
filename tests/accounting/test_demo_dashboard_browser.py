"""What a manager evaluating csbot sees on the first run: `seed_demo` (as `make run` calls it)
with its 60 days of demo history, then the ENCS dashboard in a real browser (headless Debian
Chromium through Playwright). Use, edit and ignore must all have non-zero shares, ENCS must be
positive and the break-even chart drawn; screenshots to artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Browser

from tests.browser import chromium, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NAV_TIMEOUT_MS = 30_000
DEMO_PASSWORD = "demo-password"


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    with chromium(monkeypatch) as browser:
        yield browser


@pytest.mark.django_db(transaction=True)
def test_the_demo_dashboard_shows_what_csbot_is_for(
    live_server: Any, browser: Browser, artifacts_dir: Path
) -> None:
    # As scripts/run.sh does it.
    call_command("accounting_defaults")
    call_command("seed_demo", "--password", DEMO_PASSWORD)

    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(NAV_TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, live_server.url, "manager", DEMO_PASSWORD)

    # The last 30 full days: history whatever the day of the month the test runs on.
    today = timezone.localdate()
    start, end = today - timedelta(days=30), today - timedelta(days=1)
    page.goto(
        f"{live_server.url}{reverse('accounting:dashboard')}"
        f"?from={start.isoformat()}&to={end.isoformat()}"
    )
    try:
        page.wait_for_selector("#action-shares")
    except Exception:
        page.screenshot(path=str(artifacts_dir / "demo-dashboard-failed.png"), full_page=True)
        raise
    shares = {
        kind: float(
            page.locator(f'#action-shares [data-kind="{kind}"]').get_attribute("data-share") or 0
        )
        for kind in ("use", "edit", "ignore")
    }
    assert all(share > 0 for share in shares.values()), shares
    encs = page.locator('[data-kpi="encs_usd"]').get_attribute("data-value")
    assert encs is not None and float(encs) > 0, encs
    chart = page.locator(".break-even figure svg")
    assert chart.count() >= 1, "no break-even chart on the demo dashboard"
    chart.first.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "demo-dashboard.png"), full_page=True)

    # The demo's finished experiment, from the dashboard's link: both arms with intervals.
    page.click("#open-experiments")
    page.wait_for_selector("#experiment #arms")
    arms = page.locator("#arms tbody tr")
    assert arms.count() == 2
    assert "Withhold weak drafts" in page.locator("#experiment h2").inner_text()
    page.screenshot(path=str(artifacts_dir / "demo-experiment.png"), full_page=True)
    context.close()
