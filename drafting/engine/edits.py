"""How far the reply an agent sent is from the draft, and when it still counts as the draft's.

One rule for every place that asks: the distance stored on each AgentAction, the learned
scorer's labels (a good draft: used, or edited by at most SCORER_GOOD_EDIT_PERCENT), the tuning
table's "good answer", and which replies the cache and the few-shot store remember.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from rapidfuzz.distance import Levenshtein


def edit_distance(draft_text: str, final_text: str) -> Decimal:
    """Normalised Levenshtein distance (0 = same text, 1 = nothing in common) of the stripped
    texts, rounded to the 4 places AgentAction.edit_distance stores: a distance recomputed from
    texts and one read from a row compare equal to the last digit."""
    distance = Levenshtein.normalized_distance(draft_text.strip(), final_text.strip())
    return Decimal(f"{distance:.4f}")


def within_edit(distance: Decimal | None, percent: int) -> bool:
    """The reply changed at most `percent` % of the draft (None: there was no draft text)."""
    return distance is not None and distance * 100 <= percent


def is_good_edit(distance: Decimal | None) -> bool:
    """An edit light enough that the draft counts as good (SCORER_GOOD_EDIT_PERCENT)."""
    return within_edit(distance, settings.SCORER_GOOD_EDIT_PERCENT)
