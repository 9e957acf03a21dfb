"""A forgotten tab must not hold a conversation for ever (csbot/static/csbot/claim.js): the open
page renews the agent's claim every third of a lease while the agent is there, and stops once
nobody has touched the page for a whole lease, so the claim runs out; a key press brings the
renewals back. Playwright's clock drives the page's timers; the requests are counted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.urls import reverse
from playwright.sync_api import Browser

from tests.browser import chromium, sign_in
from tests.csbot.factories import ready_draft
from tests.factories import make_team

pytestmark = pytest.mark.browser

NAV_TIMEOUT_MS = 30_000


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    with chromium(monkeypatch) as browser:
        yield browser


@pytest.mark.django_db(transaction=True)
def test_an_idle_tab_stops_renewing_its_claim(live_server: Any, browser: Browser) -> None:
    setup = make_team("Idle Team")
    waiting = ready_draft(setup, text="Your order ships tomorrow.", customer_text="Where is it?")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(NAV_TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, live_server.url, setup.agent.username)

    renewals: list[str] = []
    claim_url = reverse("console:claim", args=[waiting.message.conversation_id])
    page.on(
        "request",
        lambda r: (
            renewals.append(r.url) if r.method == "POST" and r.url.endswith(claim_url) else None
        ),
    )
    page.clock.install()
    page.goto(
        f"{live_server.url}{reverse('console:conversation', args=[waiting.message.conversation_id])}"
    )
    page.wait_for_selector("#claim[data-state=mine]")
    period = max(settings.CONSOLE_CLAIM_SECONDS // 3, 1)

    def run(periods: int) -> None:
        for _ in range(periods):
            page.clock.run_for(period * 1000)
            page.wait_for_timeout(200)  # let the renewal's request go out and come back

    run(2)  # well within a lease of the page opening: each period renews
    assert len(renewals) == 2, renewals
    run(3)  # idle for a whole lease and more: no renewal, the claim is left to run out
    assert len(renewals) == 2, renewals
    page.keyboard.press("Shift")  # the agent is back
    run(1)
    assert len(renewals) == 3, renewals
    context.close()
