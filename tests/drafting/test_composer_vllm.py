"""A composer tool against the real local model (vLLM, SmolLM2-135M): the rewrite goes to the
local tier, is priced by its GPU time and recorded as an attempt of the draft. What a 135M model
makes of the text is recorded as a test property, not judged."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from drafting import services as drafting
from drafting.models import DraftAttempt
from tests.factories import EndpointFactory, ingest, make_team

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TEXT = "Hello, thank you very much for writing to us. Your parcel has left our warehouse."


def test_the_local_model_shortens_a_reply_and_the_use_is_recorded(
    vllm_base_url: str, db: None, record_property: Callable[[str, object], None]
) -> None:
    setup = make_team(
        "Composer vLLM",
        endpoint=EndpointFactory.create(
            base_url=vllm_base_url, timeout_seconds=120, max_output_tokens=64
        ),
    )
    draft = ingest(setup, "c1", "c1-m1", "Where is my parcel?").draft
    assert draft is not None

    result = drafting.composer_rewrite(
        team=setup.team, message_id=draft.message_id, tool="shorten", text=TEXT, user=setup.agent
    )

    attempt = DraftAttempt.objects.get(pk=result.attempt_id)
    assert attempt.outcome == "ok", attempt.error_message
    assert (attempt.purpose, attempt.tier, attempt.draft_id) == ("shorten", 1, draft.pk)
    assert attempt.tokens_in > 0 and attempt.tokens_out > 0
    assert attempt.cost > 0 and result.cost == attempt.cost  # GPU time at the endpoint's price
    draft.refresh_from_db()
    assert draft.total_cost == attempt.cost
    # Either a text to put in the box, or a reason it was not applied (cut off at the limit).
    assert result.text.strip() or result.error
    record_property("rewrite", result.text)
    record_property("error", result.error)
    record_property("latency_ms", result.latency_ms)
