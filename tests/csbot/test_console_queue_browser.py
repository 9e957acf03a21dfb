"""The queue and the claim through a real browser (headless Debian Chromium, Playwright): an
agent searches the queue and filters it without a reload (the URL keeps the filters), opens a
conversation and so claims it; a second agent, in a second browser context, sees it taken in
the queue and on its page, with the reply locked until they take it over. Rows are made
directly (factories): no worker, no model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Browser, BrowserContext, Page, expect

from csbot.models import Conversation
from drafting.models import Draft
from tests.browser import chromium, sign_in
from tests.factories import (
    AgentProfileFactory,
    ConversationFactory,
    DraftFactory,
    MessageFactory,
    TeamSetup,
    make_team,
)

pytestmark = pytest.mark.browser

NAV_TIMEOUT_MS = 30_000


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    with chromium(monkeypatch) as browser:
        yield browser


def _waiting(setup: TeamSetup, customer: str, text: str, minutes: int, ready: bool) -> Conversation:
    since = timezone.now() - timedelta(minutes=minutes)
    conversation = ConversationFactory.create(
        channel=setup.channel, customer_ref=customer, awaiting_reply_since=since
    )
    message = MessageFactory.create(conversation=conversation, text=text, created_at=since)
    DraftFactory.create(
        message=message,
        policy=setup.policy,
        **(
            {"status": Draft.Status.READY, "text": "We are on it.", "ready_at": since}
            if ready
            else {"status": Draft.Status.FAILED}
        ),
    )
    return conversation


def _logged_in(browser: Browser, live_server: Any, username: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(NAV_TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, live_server.url, username)
    return context, page


@pytest.mark.django_db(transaction=True)
def test_search_filter_and_a_second_agent_sees_the_conversation_taken(
    live_server: Any, browser: Browser, artifacts_dir: Path
) -> None:
    setup = make_team("Queue Team")
    setup.agent.first_name, setup.agent.last_name = "Ada", "Lovelace"
    setup.agent.save(update_fields=["first_name", "last_name"])
    bo = AgentProfileFactory.create(team=setup.team, user__username="bo").user
    blender = _waiting(setup, "Zoe", "My blender arrived broken, can I get a new one?", 90, True)
    _waiting(setup, "Yann", "The blender lid is missing", 60, False)
    for n in range(4):
        _waiting(setup, f"Customer {n}", f"Where is parcel {n}?", 30 + n, n % 2 == 0)

    errors: list[str] = []
    ada_context, ada = _logged_in(browser, live_server, setup.agent.username)
    ada.on("pageerror", lambda exc: errors.append(str(exc)))
    rows = ada.locator("#queue-rows tr[data-href]")
    expect(rows).to_have_count(6)

    # Search: typing filters the rows without a reload; the URL carries the search.
    ada.keyboard.press("/")
    assert ada.evaluate("document.activeElement.id") == "queue-q"
    ada.keyboard.type("blender")
    expect(rows).to_have_count(2)
    expect(ada.locator("#queue-summary")).to_contain_text("2 conversations match")
    assert "q=blender" in ada.url
    # A filter: only ready drafts.
    ada.select_option("#id_draft", "ready")
    expect(rows).to_have_count(1)
    assert "draft=ready" in ada.url and "q=blender" in ada.url
    expect(rows.first).to_contain_text("Zoe")
    ada.screenshot(path=str(artifacts_dir / "console_queue.png"), full_page=True)
    # The bookmark gives the same list.
    ada.goto(ada.url)
    expect(rows).to_have_count(1)
    assert ada.locator("#id_draft").input_value() == "ready"

    # Opening the conversation claims it.
    with ada.expect_navigation():
        ada.keyboard.press("Enter")
    expect(ada.locator("#claim")).to_have_attribute("data-state", "mine")
    expect(ada.locator("#claim")).to_contain_text("You hold this conversation until")

    # A second agent in another browser sees it taken: in the queue and on its page.
    bo_context, bo_page = _logged_in(browser, live_server, bo.username)
    bo_page.on("pageerror", lambda exc: errors.append(str(exc)))
    row = bo_page.locator(f"#queue-rows tr[data-conversation='{blender.pk}']")
    expect(row).to_contain_text("Ada Lovelace")
    expect(row).to_have_class("waiting taken")
    bo_page.goto(f"{live_server.url}{reverse('console:conversation', args=[blender.pk])}")
    banner = bo_page.locator("#claim")
    expect(banner).to_have_attribute("data-state", "taken")
    expect(banner).to_contain_text("Taken by Ada Lovelace until")
    expect(bo_page.locator("#take-over")).to_be_focused()
    # The reply is locked: inert, and its shortcuts do nothing.
    assert bo_page.evaluate("document.querySelector('#conversation .reply').inert") is True
    bo_page.keyboard.press("e")
    expect(bo_page.locator("#reply-text")).to_be_hidden()
    bo_page.screenshot(path=str(artifacts_dir / "console_taken.png"), full_page=True)

    # Taking over is explicit: after it, Bo holds it and may answer.
    with bo_page.expect_navigation():
        bo_page.keyboard.press("Enter")  # the focused Take over button
    expect(bo_page.locator("#claim")).to_have_attribute("data-state", "mine")
    assert bo_page.evaluate("document.querySelector('#conversation .reply').inert") is False
    bo_page.keyboard.press("e")
    expect(bo_page.locator("#reply-text")).to_be_visible()
    blender.refresh_from_db()
    assert blender.assigned_to_id == bo.pk

    ada_context.close()
    bo_context.close()
    assert errors == [], f"JavaScript errors on the console pages: {errors}"
