"""Headless Debian Chromium through Playwright, for the tests marked `browser`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connections
from django.urls import reverse
from playwright.sync_api import Browser, Page, sync_playwright

from tests.factories import PASSWORD

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


AXE_SCRIPT = Path(__file__).resolve().parent / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
# What the accessibility checks fail on: axe-core's two highest impacts. "moderate" and "minor"
# findings are logged, not failed (some are judgement calls, e.g. a region rule on a fragment).
FAILING_IMPACTS = ("serious", "critical")


def axe_violations(page: Page, *, impacts: tuple[str, ...] = FAILING_IMPACTS) -> list[str]:
    """Run axe-core (WCAG 2 A/AA rules and best practices) on the page as it is now; one line
    per violation of the given impacts: rule, impact, help and the first offending nodes.

    The page's context must be made with `bypass_csp=True`: the console's policy allows scripts
    from our own static files only, and axe is injected inline. `scripts/axe.sh` installs it
    (`make test` does); a missing install fails loudly rather than skipping the check."""
    if not AXE_SCRIPT.exists():
        raise AssertionError(f"{AXE_SCRIPT} is missing: run scripts/axe.sh")
    page.add_script_tag(content=AXE_SCRIPT.read_text(encoding="utf-8"))
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {
                runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] },
            });
            return r.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ")),
            }));
        }"""
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {', '.join(v['nodes'])}"
        for v in result
        if v["impact"] in impacts
    ]


def sign_in(page: Page, base_url: str, username: str, password: str = PASSWORD) -> None:
    """Log in through the login form, as a person does, and wait for the page it leads to."""
    page.goto(f"{base_url}{reverse('login')}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("button[type=submit]")
