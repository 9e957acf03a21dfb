"""The completion cache (FrugalGPT's "LLM approximation"), exact-match part.

Rules, each for a reason:
- per team: one team's approved answers are not another's;
- first customer turn only: later turns depend on the conversation so far;
- only replies agents used as is or lightly edited: the cache must not spread bad drafts;
  the agent's final text is stored, which is the approved answer;
- a TTL (DRAFT_CACHE_TTL_SECONDS): stale answers are the known failure of caches;
- the key is the customer's text normalised (case, whitespace, surrounding punctuation).
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from csbot.models import Message
from drafting.models import CachedReply, Draft

_SPACES = re.compile(r"\s+")


def cache_key(text: str) -> str:
    normalised = _SPACES.sub(" ", text.casefold()).strip(" .,!?¿¡\t\n")
    return hashlib.sha256(normalised.encode()).hexdigest()


def is_first_turn(message: Message) -> bool:
    return not Message.objects.filter(
        conversation_id=message.conversation_id, pk__lt=message.pk
    ).exists()


def cache_lookup(*, draft: Draft) -> CachedReply | None:
    """A live cached reply for this draft's message, counting the hit; None when not cacheable."""
    if settings.DRAFT_CACHE_TTL_SECONDS == 0 or not is_first_turn(draft.message):
        return None
    entry = CachedReply.objects.filter(
        team_id=draft.policy.team_id,
        key=cache_key(draft.message.text),
        expires_at__gt=timezone.now(),
    ).first()
    if entry is not None:
        CachedReply.objects.filter(pk=entry.pk).update(hits=F("hits") + 1)
    return entry


def cache_store(*, draft: Draft, final_text: str) -> None:
    """Remember an approved reply to a first-turn message (the caller checked the action)."""
    if settings.DRAFT_CACHE_TTL_SECONDS == 0 or not is_first_turn(draft.message):
        return
    now = timezone.now()
    CachedReply.objects.update_or_create(
        team_id=draft.policy.team_id,
        key=cache_key(draft.message.text),
        defaults={
            "customer_text": draft.message.text,
            "reply": final_text,
            "source_draft": draft,
            "created_at": now,
            "expires_at": now + timedelta(seconds=settings.DRAFT_CACHE_TTL_SECONDS),
            "hits": 0,
        },
    )
