"""A draft preview against the real local model (vLLM, SmolLM2-135M): a question one article
answers is drafted with that article's passages in the prompt, and without. Whether a 135M
model cites is not asserted (it often does not): it is recorded as a test property."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from drafting import knowledge
from drafting import services as drafting
from drafting.engine.knowledge_files import ArticleInput
from tests.factories import EndpointFactory, make_team

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

SHIPPING = (
    "# Shipping\n\n## Countries\n\nWe ship to the United States, Canada and Mexico. Delivery "
    "to Canada takes 5-7 business days and costs $9."
)
RETURNS = "# Returns\n\nItems can be returned within 30 days of delivery for a full refund."


def test_the_local_model_drafts_with_the_articles_passages(
    vllm_base_url: str, db: None, record_property: Callable[[str, object], None]
) -> None:
    setup = make_team(
        "Preview vLLM",
        endpoint=EndpointFactory.create(base_url=vllm_base_url, timeout_seconds=120),
    )
    for external_id, title, body in (
        ("shipping", "Shipping", SHIPPING),
        ("returns", "Returns", RETURNS),
    ):
        article = knowledge.article_upsert(
            team=setup.team,
            data=ArticleInput(external_id=external_id, title=title, body=body),
            ring=False,
        ).article
        knowledge.chunks_index(article_id=article.pk)
    thread = [{"role": "customer", "text": "How long does delivery to Canada take?"}]

    grounded = drafting.draft_preview(team_id=setup.team.pk, thread=thread, tier=1)
    bare = drafting.draft_preview(team_id=setup.team.pk, thread=thread, tier=1, grounded=False)

    assert grounded.error == "", grounded.error
    assert grounded.text.strip()
    (attempt,) = grounded.attempts
    assert attempt.passages_shown > 0 and attempt.tokens_in > 0 and attempt.tokens_out > 0
    assert attempt.cost > 0  # the local tier is priced by its GPU time
    assert any("Canada" in p.text for p in grounded.passages[: attempt.passages_shown])
    assert bare.error == "" and bare.text.strip()
    (bare_attempt,) = bare.attempts
    assert bare_attempt.passages_shown == 0
    # More prompt: the passages were sent.
    assert attempt.tokens_in > bare_attempt.tokens_in
    record_property("cited", list(grounded.citations))
    record_property("grounded_text", grounded.text)
    record_property("ungrounded_text", bare.text)
