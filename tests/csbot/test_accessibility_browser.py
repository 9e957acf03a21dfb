"""Accessibility of the pages agents and managers live in, in a real browser (headless Debian
Chromium through Playwright) with axe-core (npm, `scripts/axe.sh`) injected: the login page, the
queue, a conversation with a grounded draft and its sources, an article, the ENCS dashboard and
the printable report must have no serious or critical violation of WCAG 2.1 A/AA and axe's best
practices. And the agent's whole flow works from the keyboard alone: log in, pick a conversation
in the queue, accept one draft, edit another, insert a macro, send, back to the queue. Rows are
made directly (factories): no worker, no model."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from csbot.models import Message
from drafting.models import AgentAction
from tests.accounting.factories import make_books, seed_history
from tests.browser import axe_violations, chromium
from tests.csbot.factories import ArticleFactory, Given, MacroFactory, ready_draft
from tests.factories import PASSWORD, make_team

pytestmark = pytest.mark.browser
logger = logging.getLogger(__name__)

NAV_TIMEOUT_MS = 30_000
PASSAGE = "Unworn shoes can be returned within 30 days for a full refund; the label is free."


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    with chromium(monkeypatch) as browser:
        yield browser


def _check(page: Page, name: str, artifacts_dir: Path) -> list[str]:
    """axe's serious and critical findings on the page, each prefixed with the page's name;
    the page is kept as a screenshot for the record."""
    page.screenshot(path=str(artifacts_dir / f"a11y-{name}.png"), full_page=True)
    found = [f"{name}: {v}" for v in axe_violations(page)]
    for line in axe_violations(page, impacts=("moderate", "minor")):
        logger.info("%s (not failed): %s", name, line)
    return found


def _login_with_keyboard(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}{reverse('login')}")
    page.keyboard.press("Tab")
    page.locator("input[name=username]").focus()  # the first field, whatever the skip links
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")


@pytest.mark.django_db(transaction=True)
def test_console_and_dashboard_have_no_serious_accessibility_violation(
    live_server: Any, browser: Browser, artifacts_dir: Path
) -> None:
    setup = make_team("Access Team")
    article = ArticleFactory.create(
        team=setup.team,
        title="Return policy",
        source_url="https://help.example.com/returns",
        body=PASSAGE,
    )
    grounded = ready_draft(
        setup,
        text="You can return unworn shoes within 30 days for a full refund [1].",
        customer_text="Can I send my shoes back?",
        customer_ref="Dana",
        passages=(Given(article, PASSAGE, cited=True, heading="Returns"),),
        knowledge="grounded",
        knowledge_note="1 passage above the relevance floor",
    )
    ready_draft(setup, text="Your order ships tomorrow.", customer_text="Where is my order?")
    books = make_books()
    today = date.today()
    seed_history(books, start=today.replace(day=1) - timedelta(days=40), end=today)

    context = browser.new_context(viewport={"width": 1280, "height": 1000}, bypass_csp=True)
    context.set_default_timeout(NAV_TIMEOUT_MS)
    page = context.new_page()
    base = live_server.url
    found: list[str] = []

    page.goto(f"{base}{reverse('login')}")
    found += _check(page, "login", artifacts_dir)
    _login_with_keyboard(page, base, setup.agent.username)
    page.wait_for_selector("#queue-rows tr[data-href]")
    found += _check(page, "queue", artifacts_dir)
    conversation = grounded.message.conversation
    page.goto(f"{base}{reverse('console:conversation', args=[conversation.pk])}")
    page.wait_for_selector("#draft-text")
    found += _check(page, "conversation", artifacts_dir)
    page.goto(f"{base}{reverse('console:article', args=[article.pk])}")
    found += _check(page, "article", artifacts_dir)

    context.clear_cookies()
    _login_with_keyboard(page, base, books.users["manager"].username)
    page.goto(f"{base}{reverse('accounting:dashboard')}")
    page.wait_for_selector("[data-kpi]")
    found += _check(page, "dashboard", artifacts_dir)
    page.goto(f"{base}{reverse('accounting:report-html')}")
    found += _check(page, "report", artifacts_dir)
    context.close()
    assert found == [], "\n".join(found)


@pytest.mark.django_db(transaction=True)
def test_the_agent_flow_works_from_the_keyboard_alone(
    live_server: Any, browser: Browser, artifacts_dir: Path
) -> None:
    setup = make_team("Keys Team")
    MacroFactory.create(team=setup.team, title="Return label", body="Your return label is here.")
    first = ready_draft(
        setup, text="Your order ships tomorrow.", customer_text="Where is my order?"
    )
    second = ready_draft(
        setup, text="We can change the address.", customer_text="Can I change my address?"
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(NAV_TIMEOUT_MS)
    page = context.new_page()
    base = live_server.url
    _login_with_keyboard(page, base, setup.agent.username)
    page.wait_for_selector("#queue-rows tr[data-href]")

    def open_from_queue(conversation_id: int) -> None:
        """j/k to the row of the conversation, Enter opens it."""
        page.wait_for_selector("#queue-rows tr[data-href]")
        rows = page.locator("#queue-rows tr[data-href]")
        hrefs = [rows.nth(i).get_attribute("data-href") or "" for i in range(rows.count())]
        target = reverse("console:conversation", args=[conversation_id])
        index = next(i for i, h in enumerate(hrefs) if h.endswith(target))
        page.locator("body").focus()
        for _ in range(len(hrefs)):
            page.keyboard.press("k")  # to the top, wherever the selection was
        for _ in range(index):
            page.keyboard.press("j")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        page.wait_for_selector("#draft-text")

    # Accept the first draft with "a": the console moves on to the next waiting conversation,
    # where "q" goes back to the queue.
    open_from_queue(first.message.conversation.pk)
    with page.expect_navigation():
        page.keyboard.press("a")
    page.wait_for_selector("#draft-text")
    with page.expect_navigation():
        page.keyboard.press("q")
    assert page.url.endswith(reverse("console:queue")), page.url

    # Edit the second with "e", insert a macro from the picker, send with Ctrl+Enter.
    open_from_queue(second.message.conversation.pk)
    page.keyboard.press("e")
    expect(page.locator("#reply-text")).to_be_focused()
    page.keyboard.press("Control+End")
    page.keyboard.type(" ")
    # In the textarea "m" is a letter: Tab on to the picker, Enter opens it on its search box.
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.matches('#insert-picker > summary')"):
            break
    page.keyboard.press("Enter")
    expect(page.locator("#insert-q")).to_be_focused()
    page.keyboard.type("label")
    page.wait_for_selector(".insert-choice")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(page.locator("#reply-text")).to_have_value(
        "We can change the address. Your return label is here."
    )
    page.screenshot(path=str(artifacts_dir / "a11y-keyboard-edit.png"), full_page=True)
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    assert page.url.endswith(reverse("console:queue")), page.url  # nothing left to answer
    context.close()

    actions = {
        a.inbound_message_id: a
        for a in AgentAction.objects.filter(inbound_message__conversation__team=setup.team)
    }
    assert actions[first.message.pk].kind == AgentAction.Kind.USE
    edited = actions[second.message.pk]
    assert edited.kind == AgentAction.Kind.EDIT
    assert edited.final_text == "We can change the address. Your return label is here."
    assert Message.objects.filter(
        conversation=second.message.conversation, direction=Message.Direction.OUTBOUND
    ).exists()
