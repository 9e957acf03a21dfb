"""Headless Debian Chromium through Playwright, for the tests marked `browser`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    """The Debian Chromium, launched headless (the test is skipped where it is not installed).

    Playwright's sync API runs an asyncio loop in this thread, and Django refuses ORM calls
    from a thread with a running loop; the test's own DB reads and writes are synchronous, so
    they are allowed here. On the way out the browser closes and so do this thread's DB
    connections: with Playwright's loop running, Django keeps them in a context-local slot
    that its own teardown does not see, and the test database could not be dropped at the end
    of the session.
    """
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()
            connections.close_all()
