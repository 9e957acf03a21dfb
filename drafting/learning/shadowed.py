"""Which drafts' tiers' texts were kept only for a shadow comparison (drafting.adapters).

A draft drawn for a candidate adapter's shadow answer keeps its own attempts' texts, as a draft
in the exploration sample does, so that the adapter's answer can be compared with the tier's
on the same message. The learners that read those texts (tuning's table, the router's labels,
the off-policy log) took a kept text to mean "explored": a random draft with every tier asked.
A shadow draft is random too, but only the tiers its cascade asked have a text, and a lower
tier only when it escalated: complete rows among them are the escalated drafts, a biased
sample. Those readers leave these texts out, as if they had not been kept.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Exists, OuterRef, Q

from drafting.models import DraftAttempt


def shadow_only_drafts(draft_ids: Iterable[int]) -> set[int]:
    """Of `draft_ids`, those with a shadow answer that were not drawn for exploration (no
    draft attempt of theirs is exploratory or carries a propensity). One query."""
    explored = DraftAttempt.objects.filter(
        draft_id=OuterRef("draft_id"), purpose=DraftAttempt.Purpose.DRAFT
    ).filter(Q(exploratory=True) | Q(propensity__isnull=False))
    return set(
        DraftAttempt.objects.filter(
            draft_id__in=list(draft_ids), purpose=DraftAttempt.Purpose.SHADOW
        )
        .filter(~Exists(explored))
        .values_list("draft_id", flat=True)
    )
