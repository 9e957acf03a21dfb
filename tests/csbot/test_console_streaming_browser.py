"""A draft visibly streams in a real browser: headless Chromium on the conversation page, the
worker (in this process) drafting through a recorded server that sends its answer word by word.
Partial text shows before the final draft, and the buttons and shortcuts wait for the final."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.urls import reverse
from playwright.sync_api import Browser

from drafting import services as drafting
from drafting.models import AgentAction, Draft
from tests.browser import chromium, sign_in
from tests.factories import EndpointFactory, ingest, make_team
from tests.http_stub import Reply, chat_completion, openai_stub

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FINAL = (
    "Hello Dana, thanks for your patience! Your parcel left our warehouse this morning and "
    "should reach you by Friday; the tracking link is on its way by email."
)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    with chromium(monkeypatch) as browser:
        yield browser


def test_a_draft_streams_into_the_panel_and_can_be_used_only_once_final(
    live_server: Any, browser: Browser, artifacts_dir: Path
) -> None:
    # 27 words, one every 0.2 s: about five seconds of visible writing.
    reply = Reply(body=chat_completion(FINAL, logprob=-0.05), stream=True, chunk_delay=0.2)
    with openai_stub(reply) as stub:
        setup = make_team("Stream Team", endpoint=EndpointFactory.create(base_url=stub.base_url))
        draft = ingest(setup, "stream-1", "stream-1-m1", "Where is my parcel?").draft
        assert draft is not None and draft.status == Draft.Status.QUEUED

        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        sign_in(page, live_server.url, setup.agent.username)
        conversation_url = reverse("console:conversation", args=[draft.message.conversation_id])
        page.goto(f"{live_server.url}{conversation_url}")
        # The page is subscribed (it got the draft's state) before the worker starts.
        page.wait_for_selector("#draft-panel-state[data-stream=open]")

        failures: list[BaseException] = []

        def work() -> None:
            try:
                drafting.draft_generate(draft_id=draft.pk)
            except BaseException as exc:  # noqa: BLE001 (re-raised below, in the test thread)
                failures.append(exc)
            finally:
                connection.close()

        worker = threading.Thread(target=work, daemon=True)
        worker.start()

        stream = page.locator("#draft-stream")
        stream.wait_for(state="visible")
        # A few words in, well before the last (no page script: the console's CSP forbids eval).
        partial = stream.inner_text()
        while len(partial.split()) < 5:
            page.wait_for_timeout(50)
            partial = stream.inner_text()
        assert stream.get_attribute("aria-live") == "polite"
        assert stream.get_attribute("aria-busy") == "true"
        for action in ("accept", "edit", "ignore"):
            assert page.locator(f"[data-action={action}]").is_disabled()
        page.screenshot(path=str(artifacts_dir / "console_streaming.png"), full_page=True)
        # The accept shortcut does nothing while the draft is being written.
        page.locator("body").press("a")
        assert page.locator("#draft-text").count() == 0

        page.wait_for_selector("#draft-text", timeout=60_000)
        worker.join(timeout=60)
        if failures:
            raise failures[0]
    final = page.locator("#draft-text").get_attribute("data-text")
    assert final == FINAL
    assert partial and FINAL.startswith(partial) and len(partial) < len(FINAL)
    assert page.locator("#draft-panel-state").get_attribute("data-status") == "ready"
    assert not page.locator("[data-action=accept]").is_disabled()
    assert "score" in page.locator("#draft-panel h2").inner_text()
    page.screenshot(path=str(artifacts_dir / "console_streaming_final.png"), full_page=True)
    assert not AgentAction.objects.exists()  # the `a` pressed while streaming sent nothing
    assert errors == []
