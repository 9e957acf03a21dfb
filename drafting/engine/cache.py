"""The completion cache (FrugalGPT's "LLM approximation"): exact and semantic.

Rules, each for a reason:
- per team: one team's approved answers are not another's;
- first customer turn only: later turns depend on the conversation so far;
- only replies agents used as is or lightly edited: the cache must not spread bad drafts;
  the agent's final text is stored, which is the approved answer;
- a TTL (DRAFT_CACHE_TTL_SECONDS): stale answers are the known failure of caches;
- exact match first: the key is the customer's text normalised (case, whitespace, surrounding
  punctuation) — no model needed;
- then semantic match: the embedding of the customer's text against the team's cached
  questions, a hit only at cosine ≥ DRAFT_CACHE_SEMANTIC_THRESHOLD (strict: near-identical
  questions, reworded), searched in PostgreSQL (drafting.engine.vectors) so a reply approved
  through one process is found by all at once. Vectors of another embedder are never compared;
- no customer's data, since a hit serves the reply to another customer: a reply that holds
  anything customer-specific (an email, phone, card or IBAN, a name, an identifying number,
  an address: drafting.engine.pii.personal_kinds, which also knows the names the customer gave) is
  not stored at all, and the question is stored, matched and embedded scrubbed
  (drafting.engine.pii.scrub_details: "Hi, I'm [NAME], do you ship to Canada?"), so a question that
  differs from a cached one only in such details still hits. An entry stored before these
  rules is checked again when it hits, and is not served if its reply fails them.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from csbot.models import Message
from drafting.engine.pii import personal_kinds, scrub_details
from drafting.engine.vectors import QueryVector, nearest, vector_fields
from drafting.models import CachedReply, Draft

logger = logging.getLogger(__name__)

_SPACES = re.compile(r"\s+")


def cache_key(text: str) -> str:
    normalised = _SPACES.sub(" ", text.casefold()).strip(" .,!?¿¡\t\n")
    return hashlib.sha256(normalised.encode()).hexdigest()


def is_first_turn(message: Message) -> bool:
    return not Message.objects.filter(
        conversation_id=message.conversation_id, pk__lt=message.pk
    ).exists()


@dataclass(frozen=True)
class CacheHit:
    entry: CachedReply
    match: str  # "exact" or "semantic"
    similarity: float
    # What the top tier alone cost for the source draft: the hit's counterfactual.
    source_counterfactual_cost: Decimal | None


def scrubbed_query(query: QueryVector, *, reference: str = "") -> QueryVector:
    """The customer's message as stored questions are: scrubbed of their data, the names it
    introduces and their `reference` included. The same object when nothing was scrubbed, so
    its embedding is still computed at most once."""
    text = scrub_details(query.text, customer=[query.text], reference=reference)
    return query if text == query.text else QueryVector(text)


def cache_lookup(*, team_id: int, query: QueryVector) -> CacheHit | None:
    """A live cached reply for a first-turn message (the caller checked the turn); None on a
    miss or with the cache off. The caller counts the hit where it records it."""
    if settings.DRAFT_CACHE_TTL_SECONDS == 0:
        return None
    now = timezone.now()
    live = CachedReply.objects.filter(team_id=team_id, expires_at__gt=now).annotate(
        source_counterfactual_cost=F("source_draft__counterfactual_cost")
    )
    query = scrubbed_query(query)
    hit: CacheHit | None = None
    entry = live.filter(key=cache_key(query.text)).first()
    if entry is not None and _servable(entry):
        hit = _hit(entry, "exact", 1.0)
    elif settings.DRAFT_CACHE_SEMANTIC_THRESHOLD <= 1 and (embedded := query.get()):
        model, vector = embedded
        for entry, similarity in nearest(
            live,
            model=model,
            vector=vector,
            k=3,
            min_similarity=settings.DRAFT_CACHE_SEMANTIC_THRESHOLD,
        ):
            if _servable(entry):
                hit = _hit(entry, "semantic", similarity)
                break
    return hit


def _servable(entry: CachedReply) -> bool:
    """An entry from before replies were checked may carry a customer's data: never serve it."""
    kinds = personal_kinds(entry.reply)
    if kinds:
        logger.warning("cache entry %s not served: its reply holds %s", entry.pk, kinds)
    return not kinds


def _hit(entry: CachedReply, match: str, similarity: float) -> CacheHit:
    counterfactual: Decimal | None = entry.source_counterfactual_cost  # type: ignore[attr-defined]
    return CacheHit(
        entry=entry,
        match=match,
        similarity=similarity,
        source_counterfactual_cost=counterfactual,
    )


def customer_reference(draft: Draft) -> str:
    """The reference (often a name or an address) of the customer the draft answers."""
    reference = Message.objects.filter(pk=draft.message_id).values_list(
        "conversation__customer_ref", flat=True
    )
    return reference.first() or ""


def cache_store(*, draft: Draft, final_text: str, query: QueryVector) -> None:
    """Remember an approved reply to a first-turn message (the caller checked the action and
    the turn), with the question's embedding when an embedder is configured; not a reply
    that holds anything of the customer's (see the module docstring)."""
    if settings.DRAFT_CACHE_TTL_SECONDS == 0:
        return
    reference = customer_reference(draft)
    kinds = personal_kinds(final_text, customer=[query.text], reference=reference)
    if kinds:
        logger.info("draft %s: reply not cached, it holds %s", draft.pk, ", ".join(kinds))
        return
    query = scrubbed_query(query, reference=reference)
    now = timezone.now()
    embedded = query.get()
    CachedReply.objects.update_or_create(
        team_id=draft.policy.team_id,
        key=cache_key(query.text),
        defaults={
            "customer_text": query.text,
            "reply": final_text,
            "source_draft": draft,
            "created_at": now,
            "expires_at": now + timedelta(seconds=settings.DRAFT_CACHE_TTL_SECONDS),
            **(
                vector_fields(*embedded)
                if embedded
                else {"embedding": None, "embedding_model": "", "embedding_dimensions": None}
            ),
        },
    )
