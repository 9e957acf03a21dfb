"""The composer tools through a real browser (headless Debian Chromium, Playwright): on a
ready draft, Alt+1 opens the draft for editing and shortens it through the team's local tier
(an OpenAI-compatible stub: no model), the status line announces the cost, a second tool and
Undo (Alt+Z, then the button) walk the text back, and the reply sent is recorded as an edit.
The attempts and their cost are read back from the database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, expect

from drafting.models import AgentAction, Draft, DraftAttempt
from tests.browser import chromium, sign_in
from tests.csbot.factories import ready_draft
from tests.factories import EndpointFactory, make_team
from tests.http_stub import Reply, chat_completion, openai_stub

pytestmark = pytest.mark.browser

NAV_TIMEOUT_MS = 30_000
DRAFT = "Hello Dana, thank you for your message. Your parcel left our warehouse yesterday and it will be delivered to you tomorrow."
SHORT = "Hi Dana, your parcel shipped yesterday and arrives tomorrow."
FRIENDLY = "Hi Dana! Great news: your parcel shipped yesterday and arrives tomorrow."
FIXED = "Hi Dana, your parcel shipped yesterday and will arrive tomorrow."


def by_tool(payload: dict[str, Any]) -> Reply:
    """The stub answers each tool by its instruction, whatever the order of the clicks."""
    asked = payload["messages"][-1]["content"]
    text = SHORT if "shorter" in asked else FRIENDLY if "warmer" in asked else FIXED
    return Reply(body=chat_completion(text, prompt_tokens=90, completion_tokens=20))


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    with chromium(monkeypatch) as browser:
        yield browser


@pytest.mark.django_db(transaction=True)
def test_a_tool_rewrites_the_reply_its_cost_is_stored_and_undo_restores(
    live_server: Any, browser: Browser, artifacts_dir: Path
) -> None:
    with openai_stub(by_tool) as stub:
        setup = make_team("Composer Team", endpoint=EndpointFactory.create(base_url=stub.base_url))
        console = ready_draft(setup, text=DRAFT, customer_text="Where is my parcel?")
        draft = console.draft
        cost_before = draft.total_cost
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        context.set_default_timeout(NAV_TIMEOUT_MS)
        page = context.new_page()
        page_errors: list[str] = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        sign_in(page, live_server.url, setup.agent.username)
        url = reverse("console:conversation", args=[console.message.conversation_id])
        page.goto(f"{live_server.url}{url}")
        reply = page.locator("#reply-text")
        status = page.locator("#composer-status")
        assert reply.is_hidden()  # a ready draft on screen, no reply box open yet

        # 1. Alt+1 with the draft on screen: opened as Edit opens it, then shortened.
        page.locator("body").press("Alt+1")
        expect(reply).to_have_value(SHORT)
        expect(status).to_have_text(re.compile(r"^Shortened · \$0\.0+\d+ · local$"))
        assert page.locator("#kind").input_value() == "edit"
        assert page.locator("#composer-undo").is_enabled()
        page.screenshot(path=str(artifacts_dir / "console_composer.png"), full_page=True)

        # 2. Friendlier by its button, then Undo twice: Alt+Z, then the button.
        page.get_by_role("button", name="Friendlier").click()
        expect(reply).to_have_value(FRIENDLY)
        reply.press("Alt+z")
        expect(reply).to_have_value(SHORT)
        page.locator("#composer-undo").click()
        expect(reply).to_have_value(DRAFT)
        expect(status).to_have_text("Undone: the text before the last rewrite is back.")
        assert page.locator("#composer-undo").is_disabled()

        # 3. Fix grammar from inside the box (Alt+4), then send: an edit of the draft.
        reply.press("Alt+4")
        expect(reply).to_have_value(FIXED)
        with page.expect_navigation(timeout=NAV_TIMEOUT_MS):
            reply.press("Control+Enter")
        assert page_errors == []
        context.close()

    attempts = list(DraftAttempt.objects.filter(draft=draft).exclude(purpose="").order_by("id"))
    assert [a.purpose for a in attempts] == ["shorten", "friendlier", "grammar"]
    assert all(a.outcome == "ok" and a.cost > 0 and a.tokens_in == 90 for a in attempts)
    draft.refresh_from_db()
    assert draft.total_cost == cost_before + sum((a.cost for a in attempts), Decimal(0))
    assert draft.status == Draft.Status.READY and draft.text == DRAFT  # the draft is untouched
    action = AgentAction.objects.get(draft=draft)
    assert (action.kind, action.final_text) == ("edit", FIXED)
    assert len(stub.requests) == 3
