"""The distillation loop end to end on the real local model: sent replies → the export → a
LoRA adapter trained for two steps (drafting.distillation.distill_run_train) → published into
the running vLLM server → answering in shadow beside the base model (recorded, never shown) →
promoted, so drafts come from it → served merged from a server of its own, then beside the base
again → rolled back, so they come from the base again. A tiny set and two steps: what is checked is
the plumbing (who answered, under which model name, what was recorded), not the adapter's
quality (docs/distillation.md has the figures)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from drafting import adapters, localserver
from drafting import services as drafting
from drafting.distillation import distill_run_train
from drafting.learning.distill import Hyper
from drafting.learning.distill_data import ExportFilters
from drafting.models import DistillRun, Draft, DraftAttempt
from drafting.tasks import draft_shadow_task
from tests.factories import (
    AgentActionFactory,
    EndpointFactory,
    TeamSetup,
    UserFactory,
    ingest,
    make_team,
)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

QUESTIONS = [
    (
        "Where is my parcel?",
        "Your parcel left our warehouse today; the tracking link is on its way.",
    ),
    (
        "Can I change my address?",
        "Yes: reply with the new address and we update it before dispatch.",
    ),
    (
        "How do I return shoes?",
        "Print the free label from your account and drop the box at any post office.",
    ),
    (
        "Is there a discount for students?",
        "Students get 10% off with a valid student email at checkout.",
    ),
    (
        "My card was charged twice.",
        "Sorry about that: the second charge is a hold and drops off in 3 days.",
    ),
]

ITEMS = ["blue jacket", "running shoes", "garden chair", "travel mug"]


@pytest.fixture
def served_names(vllm_base_url: str) -> Iterator[list[str]]:
    """Adapters this test loads, unloaded afterwards: the shared server keeps runtime-loaded
    adapters until it stops."""
    names: list[str] = []
    yield names
    for name in names:
        localserver.unload_adapter(vllm_base_url, name=name)


def sent_replies(setup: TeamSetup, n: int) -> None:
    """`n` conversations whose draft an agent sent as is (the export's raw material)."""
    for i in range(n):
        question, answer = QUESTIONS[i % len(QUESTIONS)]
        item = ITEMS[i // len(QUESTIONS) % len(ITEMS)]
        # Words, not numbers, tell the examples apart: the export scrubs numbers, then drops
        # the repeats.
        question, answer = f"{question} It is about the {item}.", f"{answer} ({item})"
        draft = ingest(setup, f"past-{i}", f"past-{i}-m1", question).draft
        assert draft is not None
        Draft.objects.filter(pk=draft.pk).update(
            status=Draft.Status.READY, text=answer, ready_at=timezone.now()
        )
        draft.refresh_from_db()
        AgentActionFactory.create(
            draft=draft,
            kind="use",
            final_text=answer,
            agent=setup.agent,
            shown_at=timezone.now(),
            acted_at=timezone.now(),
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drafted_now(setup: TeamSetup, conversation: str) -> Draft:
    draft = ingest(setup, conversation, f"{conversation}-m1", "Where is my parcel?").draft
    assert draft is not None
    drafting.draft_generate(draft_id=draft.pk, shadow_draw=lambda: 0.0)
    draft.refresh_from_db()
    assert draft.status == Draft.Status.READY, draft.failure_reason
    return draft


def test_sent_replies_become_an_adapter_that_shadows_then_serves_then_rolls_back(
    vllm_base_url: str,
    db: None,
    tmp_path: Path,
    settings: Any,
    served_names: list[str],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
    record_property: Callable[[str, object], None],
) -> None:
    base = EndpointFactory.create(
        name="local base", base_url=vllm_base_url, timeout_seconds=120, max_output_tokens=32
    )
    setup = make_team("Loop", endpoint=base)
    boss = UserFactory.create(is_staff=True)
    sent_replies(setup, 20)

    settings.DISTILL_ADAPTER_DIR = str(tmp_path)
    run = distill_run_train(
        policy=setup.policy,
        filters=ExportFilters(
            team_id=setup.team.pk, policy_id=setup.policy.pk, min_conversations=20
        ),
        hyper=Hyper(max_steps=2, generate_validation=0, max_length=256, batch_size=4),
        created_by=boss,
    )
    assert run.status == DistillRun.Status.SUCCEEDED, run.error
    assert run.n_train >= 10 and Path(run.adapter_path).is_dir()
    name = run.adapter_name
    # The shared server keeps what it loaded at run time; a test database made afresh reuses
    # names: an adapter of an earlier session's under this name goes first.
    localserver.unload_adapter(vllm_base_url, name=name)
    served_names.append(name)

    endpoint = adapters.adapter_publish(run=run)
    assert name in (localserver.probe(vllm_base_url) or []), (
        "the vLLM server did not load the adapter: one started without LoRA is stopped with "
        "`python -m drafting.localserver stop` and restarted by the next test run"
    )

    adapters.adapter_shadow_start(run=run, share=Decimal("1"), user=boss)
    rung: list[tuple[int, int]] = []
    monkeypatch.setattr(adapters, "shadow_enqueue", lambda d, r: rung.append((d, r)))
    with django_capture_on_commit_callbacks(execute=True):
        draft = drafted_now(setup, "now-1")
    assert rung == [(draft.pk, run.pk)]
    assert draft_shadow_task.apply(args=rung[0]).get() is True  # the worker's doorbell

    shadow = draft.attempts.get(purpose=DraftAttempt.Purpose.SHADOW)
    assert shadow.outcome == DraftAttempt.Outcome.OK, shadow.error_message
    assert shadow.model_name == name and shadow.endpoint == endpoint
    assert shadow.exploratory and shadow.text and shadow.cost > 0
    shown = draft.attempts.get(purpose=DraftAttempt.Purpose.DRAFT)
    assert shown.model_name != name
    record_property("train_seconds", run.validation.get("train_seconds"))
    record_property("latency_ms_base_vs_shadow", (shown.latency_ms, shadow.latency_ms))
    before = draft.text
    draft.refresh_from_db()
    assert draft.text == before and draft.final_endpoint == base  # never shown

    adapters.adapter_promote(run=run, user=boss)
    promoted = drafted_now(setup, "now-2")
    assert promoted.final_endpoint == endpoint
    promoted_attempt = promoted.attempts.get(purpose=DraftAttempt.Purpose.DRAFT)
    assert promoted_attempt.model_name == name
    promoted_latency = promoted_attempt.latency_ms

    # Served merged (the CPU's fast path): the same endpoint, now a server of its own that
    # serves the merged weights under the adapter's name, and nothing else.
    settings.LOCAL_LLM_URL = ""
    settings.DISTILL_MERGED_PORT = free_port()
    try:
        merged_endpoint = adapters.adapter_serve_merged(run=run, user=boss, timeout=600)
        assert merged_endpoint.pk == endpoint.pk
        assert localserver.probe(merged_endpoint.base_url) == [name]
        merged = drafted_now(setup, "now-merged")
        answered = merged.attempts.get(purpose=DraftAttempt.Purpose.DRAFT)
        assert merged.final_endpoint == endpoint and answered.model_name == name
        record_property("latency_ms_lora_vs_merged", (promoted_latency, answered.latency_ms))
        adapters.adapter_serve_lora(run=run, user=boss)
        assert localserver.probe(merged_endpoint.base_url) is None  # stopped
        endpoint.refresh_from_db()
        assert endpoint.resolved_base_url() == vllm_base_url
    finally:
        localserver.stop_server(settings.DISTILL_MERGED_PORT)

    adapters.adapter_rollback(run=run, user=boss)
    back = drafted_now(setup, "now-3")
    assert back.final_endpoint == base
    assert back.attempts.get(purpose=DraftAttempt.Purpose.DRAFT).model_name != name
