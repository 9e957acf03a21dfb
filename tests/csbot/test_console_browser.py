"""End to end through a real browser: headless Debian Chromium (Playwright) logs in as an
agent, waits on the live draft panel for drafts the real Celery worker gets from the real local
vLLM, and accepts, edits and ignores them on three conversations; the stored actions must say
exactly that."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, Response
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from csbot import services
from csbot.models import Conversation, Message
from drafting.models import AgentAction, Draft
from tests.browser import chromium
from tests.factories import PASSWORD, make_team

logger = logging.getLogger(__name__)

pytestmark = [pytest.mark.browser, pytest.mark.vllm]

# CPU vLLM needs about 2 s a draft; the first request after start-up can take much longer.
DRAFT_TIMEOUT_MS = 180_000
NAV_TIMEOUT_MS = 30_000

# Typed with the keyboard: the newline is an Enter in the textarea, which the browser submits as
# CRLF; the console must store it as the LF the draft text uses.
EDIT_ADDITION = "\nThanks for your patience!"
OWN_REPLY = "Hello, a colleague from billing will call you back today."


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    with chromium(monkeypatch) as browser:
        yield browser


def _wait_for_draft(page: Page, artifacts_dir: Path) -> str:
    """Wait, without reloading, until the polled draft panel shows a ready draft; its text.
    On a timeout the page is kept (screenshot and HTML) next to the other artifacts."""
    try:
        page.wait_for_selector(
            "#draft-text, #draft-panel-state[data-status=failed]",
            state="visible",
            timeout=DRAFT_TIMEOUT_MS,
        )
    except PlaywrightTimeoutError:
        page.screenshot(path=str(artifacts_dir / "console-draft-timeout.png"), full_page=True)
        (artifacts_dir / "console-draft-timeout.html").write_text(page.content())
        raise
    panel = page.locator("#draft-panel-state")
    assert panel.get_attribute("data-status") == "ready", panel.inner_text()
    text = page.locator("#draft-text").get_attribute("data-text")
    assert text, "the draft panel shows an empty draft"
    return text


def _send_and_wait(page: Page, send: Callable[[], object]) -> None:
    """Submit the reply through `send()` and wait for the redirect that follows it to load."""
    with page.expect_navigation(timeout=NAV_TIMEOUT_MS):
        send()
    page.wait_for_load_state("load")
    errors = page.locator(".flash li.error").all_inner_texts()
    assert not errors, f"the console rejected the reply: {errors}"


def _log_http_error(response: Response) -> None:
    if response.status >= 400:
        logger.info("HTTP %s %s", response.status, response.url)


@pytest.mark.django_db(transaction=True)
def test_agent_accepts_edits_and_ignores_drafts_in_the_browser(
    celery_worker: None,
    live_server: Any,
    vllm_base_url: str,
    browser: Browser,
    artifacts_dir: Path,
) -> None:
    setup = make_team("Browser Team")
    agent = setup.agent

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(NAV_TIMEOUT_MS)
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("console", lambda msg: logger.info("browser console %s: %s", msg.type, msg.text))
    page.on("requestfailed", lambda req: logger.info("request failed: %s %s", req.url, req.failure))
    page.on("response", _log_http_error)

    # Log in through the form.
    page.goto(f"{live_server.url}{reverse('login')}")
    page.fill("input[name=username]", agent.username)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.endswith(reverse("console:queue")), page.url
    assert agent.username in page.locator(".who").inner_text()

    # Three customers write; each message queues a draft that the worker produces with vLLM.
    customers = [
        ("Ada", "Hi, my order #1042 has not arrived yet. Where is it?"),
        ("Bo", "Can I change the delivery address of my order?"),
        ("Cy", "I was charged twice for my subscription this month."),
    ]
    conversations: list[Conversation] = []
    for i, (name, text) in enumerate(customers):
        result = services.message_ingest(
            channel=setup.channel,
            conversation_external_id=f"browser-{i}",
            channel_message_id=f"browser-msg-{i}",
            text=text,
            customer_ref=name,
        )
        assert result.created and result.draft is not None
        assert result.draft.status == Draft.Status.QUEUED
        conversations.append(result.message.conversation)

    def conversation_url(conversation: Conversation) -> str:
        return f"{live_server.url}{reverse('console:conversation', args=[conversation.pk])}"

    initial_states: list[str | None] = []

    def open_and_wait(conversation: Conversation) -> str:
        page.goto(conversation_url(conversation))
        initial_states.append(page.locator("#draft-panel-state").get_attribute("data-status"))
        return _wait_for_draft(page, artifacts_dir)

    # 1. Accept, by clicking the button. The screenshots are taken with the draft on screen.
    shown: dict[int, str] = {}
    shown[0] = open_and_wait(conversations[0])
    assert page.locator("[data-action=accept]").is_visible()
    assert page.locator("[data-action=edit]").is_visible()
    assert page.locator("[data-action=ignore]").is_visible()
    assert page.locator("#reply-text").is_hidden()  # the composer opens on edit / ignore
    page.screenshot(path=str(artifacts_dir / "console-conversation.png"), full_page=True)

    page.goto(f"{live_server.url}{reverse('console:queue')}")
    page.wait_for_selector("#queue-rows tr[data-href]")
    assert page.locator("#queue-rows tr[data-href]").count() == 3
    page.screenshot(path=str(artifacts_dir / "console-queue.png"), full_page=True)

    shown[0] = open_and_wait(conversations[0])
    _send_and_wait(page, lambda: page.click("[data-action=accept]"))

    # 2. Edit, with the keyboard: "e" opens the draft in the composer, Ctrl+Enter sends.
    shown[1] = open_and_wait(conversations[1])
    page.keyboard.press("e")
    composer = page.locator("#reply-text")
    composer.wait_for(state="visible")
    assert composer.input_value() == shown[1]
    page.keyboard.press("Control+End")  # compose() put the caret there already; make sure
    page.keyboard.type(EDIT_ADDITION)
    assert composer.input_value() == shown[1] + EDIT_ADDITION
    _send_and_wait(page, lambda: page.keyboard.press("Control+Enter"))

    # 3. Ignore with "i", write an own reply, send with the button.
    shown[2] = open_and_wait(conversations[2])
    page.keyboard.press("i")
    composer.wait_for(state="visible")
    assert composer.input_value() == ""
    composer.type(OWN_REPLY)
    _send_and_wait(page, lambda: page.click("#send"))

    context.close()
    assert not page_errors, f"JavaScript errors on the console pages: {page_errors}"
    # Whether the htmx poll had to bring the draft in (queued/generating) or it was ready.
    logger.info("draft panel state when each conversation was opened: %s", initial_states)

    # What was stored.
    assert AgentAction.objects.count() == 3
    expected = [
        (AgentAction.Kind.USE, lambda draft: draft.text),
        (AgentAction.Kind.EDIT, lambda draft: draft.text + EDIT_ADDITION),
        (AgentAction.Kind.IGNORE, lambda draft: OWN_REPLY),
    ]
    for i, (conversation, (kind, final_text_for)) in enumerate(
        zip(conversations, expected, strict=True)
    ):
        inbound = Message.objects.get(
            conversation=conversation, direction=Message.Direction.INBOUND
        )
        draft = Draft.objects.get(message=inbound)
        assert draft.status == Draft.Status.READY
        assert draft.text == shown[i], "the page showed another text than the stored draft"
        action = AgentAction.objects.select_related("outbound_message").get(inbound_message=inbound)
        assert action.draft_id == draft.pk
        assert action.kind == kind
        assert action.final_text == final_text_for(draft)
        assert action.agent_id == agent.pk
        assert draft.first_shown_at is not None
        assert action.shown_at == draft.first_shown_at
        assert action.acted_at >= action.shown_at
        assert action.handle_seconds > 0
        if kind == AgentAction.Kind.USE:
            assert action.edit_distance == 0
        else:
            assert action.edit_distance is not None and action.edit_distance > 0

        outbound = Message.objects.get(
            conversation=conversation, direction=Message.Direction.OUTBOUND
        )
        assert outbound.pk == action.outbound_message_id
        assert outbound.text == action.final_text
        assert outbound.author_user_id == agent.pk
        conversation.refresh_from_db()
        assert conversation.awaiting_reply_since is None
