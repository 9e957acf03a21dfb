"""A run's admin page in a real browser (headless Debian Chromium through Playwright): an admin
logs in to the admin, opens an adapter that has been in shadow, and sees the loss curve drawn
(an image with its accessible name) and the candidate vs current table; screenshot to
artifacts/adapter-admin.png."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import Browser

from drafting.models import DistillRun, DraftAttempt
from tests.browser import chromium
from tests.drafting.factories import distill_run
from tests.factories import (
    EARLY,
    PASSWORD,
    AgentActionFactory,
    DraftAttemptFactory,
    DraftFactory,
    MessageFactory,
    UserFactory,
    make_team,
)

pytestmark = [pytest.mark.browser]

NAV_TIMEOUT_MS = 30_000
# Training loss over 12 steps and validation before, half-way and after.
CURVE = [
    {"step": 0, "validation_loss": 2.6},
    *({"step": s, "epoch": s / 12, "loss": 2.9 - 0.11 * s + 0.05 * (s % 3)} for s in range(1, 13)),
    {"step": 6, "validation_loss": 2.2},
    {"step": 12, "validation_loss": 1.95},
]
REPLIES = [
    ("Your refund was issued today.", "Your refund was issued today and arrives in 3 days."),
    ("We have sent a new link.", "Thanks, we have sent you a new link."),
    ("Sorry.", "Sorry for the wait, the parcel ships tomorrow."),
]


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    with chromium(monkeypatch) as browser:
        yield browser


@pytest.mark.django_db(transaction=True)
def test_an_admin_reads_an_adapters_curve_and_comparison(
    live_server: Any, browser: Browser, artifacts_dir: Path
) -> None:
    setup = make_team("Acme")
    run = distill_run(
        setup,
        stage=DistillRun.Stage.SHADOW,
        shadow_tier=1,
        loss_curve=CURVE,
        validation={"loss_before": 2.6, "loss": 1.95, "perplexity": 7.03, "rouge_l": 0.41},
        hyperparameters={"rank": 8, "alpha": 16, "epochs": 1, "learning_rate": 0.0002},
        data_sha256="9f" * 32,
        n_train=96,
        n_validation=24,
        n_conversations=60,
        machine_seconds=Decimal("118.2"),
        cost_usd=Decimal("0.026267"),
        device="cpu",
    )
    for current, candidate in REPLIES:
        message = MessageFactory.create(conversation__channel=setup.channel)
        draft = DraftFactory.create(
            message=message, policy=setup.policy, status="ready", ready_at=EARLY
        )
        DraftAttemptFactory.create(
            draft=draft,
            endpoint=setup.endpoint,
            text=current,
            score=Decimal("0.45"),
            latency_ms=900,
        )
        DraftAttemptFactory.create(
            draft=draft,
            endpoint=run.endpoint,
            purpose=DraftAttempt.Purpose.SHADOW,
            exploratory=True,
            text=candidate,
            score=Decimal("0.7"),
            latency_ms=1000,
        )
        AgentActionFactory.create(draft=draft, kind="edit", final_text=candidate)
    UserFactory.create(username="boss", is_staff=True, is_superuser=True)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(NAV_TIMEOUT_MS)
    page.goto(f"{live_server.url}{reverse('admin:login')}")
    page.fill("input[name=username]", "boss")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("input[type=submit]")
    page.goto(f"{live_server.url}{reverse('admin:drafting_distillrun_change', args=[run.pk])}")

    chart = page.get_by_role("img", name="Loss curve of")
    chart.wait_for()
    box = chart.bounding_box()
    assert box is not None and box["width"] > 400 and box["height"] > 150
    assert page.locator("#loss-curve polyline.training-loss").count() == 1
    assert page.locator("#loss-curve circle").count() == 3
    rouge = page.locator("#comparison-table tr.figure-rouge_l td")
    assert rouge.nth(0).inner_text() == "3"  # n
    assert rouge.nth(2).inner_text() == "1.000"  # the candidate wrote what the agent sent
    assert page.locator("#adapter-promote").is_visible()
    page.locator("#adapter-run").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "adapter-admin.png"), full_page=True)
