"""Few-shot examples (FrugalGPT's prompt selection): instead of a fixed long prompt, each draft
shows the model the k replies agents *used as is* for the customer messages most similar to
the one being answered — few tokens, and the team's own facts and tone.

Examples are per team, scrubbed before they are stored (they are shown while drafting for
other customers, paid tiers included, and a model copies what it is shown): personal data and
customer-specific details become `[EMAIL]`, `[NAME]`, `[NUMBER]`, `[ADDRESS]`…
(drafting.engine.pii.scrub_details), the question is embedded and searched scrubbed as the completion
cache does, by embedding cosine in PostgreSQL (drafting.engine.vectors; DRAFT_FEWSHOT_K,
DRAFT_FEWSHOT_MIN_SIMILARITY).
"""

from __future__ import annotations

from django.conf import settings

from drafting.engine.cache import customer_reference, scrubbed_query
from drafting.engine.pii import scrub_details
from drafting.engine.prompting import Example
from drafting.engine.vectors import QueryVector, nearest, vector_fields
from drafting.models import Draft, ReplyExample

# An example is there to show facts and tone: a long one costs more tokens than it teaches.
EXAMPLE_MAX_CHARS = 600


def examples_similar(*, team_id: int, query: QueryVector, exclude_draft_id: int) -> list[Example]:
    """The team's used replies to the messages most similar to the query, best first."""
    if settings.DRAFT_FEWSHOT_K == 0 or not (embedded := scrubbed_query(query).get()):
        return []
    model, vector = embedded
    found = nearest(
        # Not the message's own earlier draft (a redraft must not be shown its first answer).
        ReplyExample.objects.filter(team_id=team_id).exclude(source_draft_id=exclude_draft_id),
        model=model,
        vector=vector,
        k=settings.DRAFT_FEWSHOT_K,
        min_similarity=settings.DRAFT_FEWSHOT_MIN_SIMILARITY,
    )
    return [
        Example(customer=row.customer_text, reply=row.reply, similarity=similarity)
        for row, similarity in found
    ]


def example_store(*, draft: Draft, final_text: str, query: QueryVector) -> None:
    """Keep a reply the agent used as is (the caller checked) as a few-shot example, both
    texts scrubbed of the customer."""
    reference = customer_reference(draft)
    question = scrubbed_query(query, reference=reference)
    if not (embedded := question.get()):
        return
    model, vector = embedded
    reply = scrub_details(final_text, customer=[query.text], reference=reference)
    ReplyExample.objects.update_or_create(
        source_draft=draft,
        defaults={
            "team_id": draft.policy.team_id,
            "customer_text": question.text[:EXAMPLE_MAX_CHARS],
            "reply": reply[:EXAMPLE_MAX_CHARS],
            **vector_fields(model, vector),
        },
    )
