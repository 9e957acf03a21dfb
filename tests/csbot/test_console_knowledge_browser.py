"""The console's knowledge through a real browser (headless Debian Chromium, Playwright): a
draft grounded in an article shows that source under it, the agent inserts a macro into the
reply box with the keyboard and sends it, and a macro offer signed `{agent_name}` is accepted as
is. Rows are made directly (tests.csbot.factories): no worker, no model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from csbot.models import Message
from drafting.models import AgentAction
from tests.browser import chromium
from tests.csbot.factories import ArticleFactory, Given, MacroFactory, ready_draft
from tests.factories import PASSWORD, make_team

pytestmark = pytest.mark.browser

NAV_TIMEOUT_MS = 30_000
PASSAGE = "Unworn shoes can be returned within 30 days for a full refund; the label is free."
DRAFT = "You can return unworn shoes within 30 days for a full refund."
MACRO_BODY = "Hi {customer_name}, {agent_name} here: your prepaid return label is attached."


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    with chromium(monkeypatch) as browser:
        yield browser


def _send_and_wait(page: Page, send: Any) -> None:
    with page.expect_navigation(timeout=NAV_TIMEOUT_MS):
        send()
    page.wait_for_load_state("load")
    errors = page.locator(".flash li.error").all_inner_texts()
    assert not errors, f"the console rejected the reply: {errors}"


@pytest.mark.django_db(transaction=True)
def test_agent_sees_a_drafts_source_and_inserts_a_macro_in_the_browser(
    live_server: Any, browser: Browser, artifacts_dir: Path
) -> None:
    setup = make_team("Sources Team")
    setup.agent.first_name, setup.agent.last_name = "Ada", "Lovelace"
    setup.agent.save(update_fields=["first_name", "last_name"])
    article = ArticleFactory.create(
        team=setup.team,
        title="Return policy",
        source_url="https://help.example.com/returns",
        body=PASSAGE,
    )
    macro = MacroFactory.create(team=setup.team, title="Return label", body=MACRO_BODY)
    MacroFactory.create(team=setup.team, title="Greeting", body="Hello {customer_name}!")
    other_team = make_team("Other Team")
    MacroFactory.create(team=other_team.team, title="Other team's return label", body="No.")
    grounded = ready_draft(
        setup,
        text=DRAFT,
        customer_text="Can I send my shoes back?",
        customer_ref="Dana",
        passages=(Given(article, PASSAGE, cited=True, heading="Returns"),),
        knowledge="grounded",
        knowledge_note="1 passage above the relevance floor",
    )
    offer = ready_draft(
        setup,
        text="Hi Bo, {agent_name} here: your prepaid return label is attached.",
        customer_text="I need a return label",
        customer_ref="Bo",
        macro=macro,
    )

    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(NAV_TIMEOUT_MS)
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))

    page.goto(f"{live_server.url}{reverse('login')}")
    page.fill("input[name=username]", setup.agent.username)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")

    # 1. The grounded draft: its source is on screen, title linked, passage shown.
    url = reverse("console:conversation", args=[grounded.message.conversation_id])
    page.goto(f"{live_server.url}{url}")
    sources = page.locator("#draft-sources")
    sources.wait_for(state="visible")
    assert "Grounded in 1 article" in page.locator("#knowledge-state").inner_text()
    link = sources.locator("#source-1 a.source-title")
    assert link.inner_text() == "Return policy"
    assert link.get_attribute("href") == "https://help.example.com/returns"
    passage = sources.locator("#source-1 .passage-text")
    assert passage.is_visible()
    assert passage.inner_text() == PASSAGE
    assert "Unworn shoes" in passage.locator("mark").all_inner_texts()  # shared with the draft

    # 2. Insert a macro with the keyboard: "m" opens the picker on its search box, typing
    # filters (htmx, no reload), the arrow picks, Enter inserts the filled text.
    page.keyboard.press("m")
    search = page.locator("#insert-q")
    search.wait_for(state="visible")
    assert page.evaluate("document.activeElement.id") == "insert-q"
    page.locator("#insert-results .insert-choice").first.wait_for(state="visible")
    search.type("label")
    # "Greeting" is filtered out; the article whose passage mentions the label stays.
    macros = page.locator("#insert-results [aria-labelledby=insert-macros-heading] .insert-choice")
    expect(macros).to_have_count(1)  # (expect: the page's CSP forbids wait_for_function's eval)
    assert "Return label" in macros.first.inner_text()
    articles = page.locator(
        "#insert-results [aria-labelledby=insert-articles-heading] .insert-choice"
    )
    assert articles.all_inner_texts() == ["Return policy https://help.example.com/returns"]
    assert "Other team" not in page.locator("#insert-results").inner_text()
    page.screenshot(path=str(artifacts_dir / "console-insert-picker.png"), full_page=True)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    reply = page.locator("#reply-text")
    filled = "Hi Dana, Ada Lovelace here: your prepaid return label is attached."
    expect(reply).to_have_value(filled)
    assert reply.is_visible()
    assert page.evaluate("document.activeElement.id") == "reply-text"
    assert page.locator("#insert-status").inner_text() == "Inserted Macro “Return label”."
    assert page.url.endswith(url)  # no reload
    page.screenshot(path=str(artifacts_dir / "console-sources.png"), full_page=True)
    _send_and_wait(page, lambda: page.keyboard.press("Control+Enter"))

    # 3. The macro offer, signed with the agent's name, accepted with "a".
    url = reverse("console:conversation", args=[offer.message.conversation_id])
    page.goto(f"{live_server.url}{url}")
    page.locator("#draft-text").wait_for(state="visible")
    assert "Macro: Return label" in page.locator("#draft-panel h2").inner_text()
    assert "Ada Lovelace here" in page.locator("#draft-text").inner_text()
    _send_and_wait(page, lambda: page.keyboard.press("a"))

    context.close()
    assert not page_errors, f"JavaScript errors on the console pages: {page_errors}"

    inserted = AgentAction.objects.get(draft=grounded.draft)
    assert inserted.kind == AgentAction.Kind.IGNORE  # the agent wrote their own reply
    assert inserted.final_text == filled
    assert Message.objects.get(pk=inserted.outbound_message_id).text == filled
    used = AgentAction.objects.get(draft=offer.draft)
    assert used.kind == AgentAction.Kind.USE
    assert used.edit_distance == 0
    assert used.final_text == "Hi Bo, Ada Lovelace here: your prepaid return label is attached."
