"""Drafting reads the support domain and accounting use (never its internals directly)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import (
    Count,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce

from csbot import memo
from csbot.memo import Memo
from csbot.models import Message, Team
from drafting.models import (
    AgentAction,
    CachedReply,
    CascadePolicy,
    CascadeTier,
    Draft,
    DraftAttempt,
    Intent,
    IntentExample,
    MessageIntent,
    ModelEndpoint,
)

# Read on every message (the team's active policy) or every draft (a policy's tiers), changed
# now and then in the admin: each process remembers its answers, "none" included, for a few
# seconds (csbot.memo: a save or delete through the ORM is seen at once by the process that
# made it, by the others, and after a bulk `.update()`, within the seconds).
ACTIVE_POLICY_SECONDS = memo.SECONDS
_active_policies: Memo[int, CascadePolicy | None] = Memo(depends_on=(CascadePolicy,))
_enabled_tiers: Memo[int, list[CascadeTier]] = Memo(
    depends_on=(CascadePolicy, CascadeTier, ModelEndpoint)
)


def active_policy(*, team_id: int) -> CascadePolicy | None:
    """The team's one active policy (None: the team gets no drafts), at most
    ACTIVE_POLICY_SECONDS old. The instance is shared: read it, never change it."""
    return _active_policies.get(
        team_id, lambda: CascadePolicy.objects.filter(team_id=team_id, active=True).first()
    )


def enabled_tiers(*, policy_id: int) -> list[CascadeTier]:
    """The policy's tiers whose endpoint is enabled, in order, with their endpoints, at most
    ACTIVE_POLICY_SECONDS old. Shared between the threads of a process: read them, never
    change them."""
    return _enabled_tiers.get(
        policy_id,
        lambda: list(
            CascadeTier.objects.select_related("endpoint")
            .filter(policy_id=policy_id, endpoint__enabled=True)
            .order_by("position")
        ),
    )


def live_draft_for_message(*, message_id: int) -> Draft | None:
    return (
        Draft.objects.live().select_related("final_endpoint").filter(message_id=message_id).first()
    )


def live_drafts_for_messages(*, message_ids: Iterable[int]) -> dict[int, Draft]:
    """Live drafts keyed by inbound message id: one query, whatever the thread length."""
    drafts = Draft.objects.live().filter(message_id__in=list(message_ids)).select_related("action")
    return {draft.message_id: draft for draft in drafts}


def latest_draft_status(conversation_ref: OuterRef) -> Subquery:
    """Status of a conversation's newest live draft, for annotating conversation querysets."""
    return Subquery(
        Draft.objects.live()
        .filter(message__conversation_id=conversation_ref)
        .order_by("-id")
        .values("status")[:1]
    )


def action_for_reply(*, inbound_message_id: int | None, draft_id: int | None) -> AgentAction | None:
    """The action already recorded for this inbound message or draft (a duplicate submission)."""
    queryset = AgentAction.objects.select_related("outbound_message")
    if inbound_message_id is not None:
        action = queryset.filter(inbound_message_id=inbound_message_id).first()
        if action is not None:
            return action
    if draft_id is not None:
        return queryset.filter(draft_id=draft_id).first()
    return None


def draft_of_message(*, draft_id: int, message_id: int) -> Draft | None:
    """The draft with this id if it answers this message (whatever its status now)."""
    return Draft.objects.filter(pk=draft_id, message_id=message_id).first()


def drafts_for_team(*, team_id: int) -> QuerySet[Draft]:
    return Draft.objects.filter(message__conversation__team_id=team_id).select_related(
        "message", "final_endpoint"
    )


def cached_replies_with_hits() -> QuerySet[CachedReply]:
    """Cached replies with `hits`: cache-hit attempts that reused the entry since it was
    (re)stored."""
    hits = (
        DraftAttempt.objects.filter(
            cache_hit=True,
            cache_source_id=OuterRef("source_draft_id"),
            started_at__gte=OuterRef("created_at"),
        )
        .order_by()
        .values("cache_source_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return CachedReply.objects.annotate(
        hits=Coalesce(Subquery(hits, output_field=IntegerField()), Value(0))
    )


# --- Why a draft was escalated (console, admin) ----------------------------------------------------------


@dataclass(frozen=True)
class ExplainedWord:
    word: str
    weight: float
    strength: float  # |weight| relative to the draft's largest, 0…1: how strongly to highlight
    gap: str  # the whitespace before the word

    @property
    def negative(self) -> bool:
        return self.weight < 0


@dataclass(frozen=True)
class Escalation:
    tier: int
    endpoint: str
    score: Decimal | None
    threshold: Decimal | None
    scorer: str
    words: list[ExplainedWord]


def explained_words(explanation: list[dict[str, Any]]) -> list[ExplainedWord]:
    largest = max((abs(float(w["weight"])) for w in explanation), default=0.0) or 1.0
    words, end = [], 0
    for w in explanation:
        weight = float(w["weight"])
        words.append(
            ExplainedWord(
                word=str(w["word"]),
                weight=weight,
                strength=round(abs(weight) / largest, 2),
                gap=" " if int(w["start"]) > end else "",
            )
        )
        end = int(w["end"])
    return words


def draft_escalations(*, draft: Draft | None) -> list[Escalation]:
    """The draft's escalated attempts that carry an explanation, in tier order, with the
    threshold their tier has now. One query."""
    if draft is None or draft.status != Draft.Status.READY:
        return []
    threshold = CascadeTier.objects.filter(
        policy_id=draft.policy_id, position=OuterRef("tier")
    ).values("threshold")[:1]
    attempts = (
        DraftAttempt.objects.filter(draft_id=draft.pk, explanation__isnull=False, exploratory=False)
        .select_related("endpoint", "scorer")
        .annotate(tier_threshold=Subquery(threshold))
        .order_by("tier", "started_at", "id")
    )
    return [
        Escalation(
            tier=a.tier,
            endpoint=a.endpoint.name if a.endpoint else "cache",
            score=a.score,
            threshold=a.tier_threshold,
            scorer=str(a.scorer) if a.scorer else "default scorer",
            words=explained_words(a.explanation or []),
        )
        for a in attempts
    ]


# --- The console's intent box -------------------------------------------------------------


@dataclass(frozen=True)
class IntentPanel:
    """The console's intent box for one inbound message."""

    message: Message | None
    intents: list[Intent]
    verdict: MessageIntent | None
    label: IntentExample | None


def intent_panel(*, team: Team, message: Message | None) -> IntentPanel:
    intents = list(Intent.objects.filter(team=team).order_by("name"))
    if message is None:
        return IntentPanel(message=None, intents=intents, verdict=None, label=None)
    verdict = (
        MessageIntent.objects.select_related("intent", "classifier")
        .filter(message=message, intent__team=team)
        .first()
    )
    label = (
        IntentExample.objects.select_related("intent", "labelled_by")
        .filter(message=message, intent__team=team)
        .order_by("-created_at", "-id")
        .first()
    )
    return IntentPanel(message=message, intents=intents, verdict=verdict, label=label)
