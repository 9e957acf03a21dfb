"""Support-domain reads for the console and the API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.contrib.auth.models import User
from django.core.paginator import Page, Paginator
from django.db.models import Case, Exists, OuterRef, Q, QuerySet, Subquery, Value, When
from django.shortcuts import get_object_or_404
from django.utils import timezone

from csbot.models import Conversation, Message, Team
from drafting import selectors as drafting_selectors
from drafting.models import Draft

# --- The queue --------------------------------------------------------------------------------


class Waiting(StrEnum):
    """How long the customer has waited for a reply (the queue's filter)."""

    ANY = ""
    OVER_5_MIN = "5m"
    OVER_1_HOUR = "1h"


WAITING_FOR = {Waiting.OVER_5_MIN: timedelta(minutes=5), Waiting.OVER_1_HOUR: timedelta(hours=1)}


class DraftState(StrEnum):
    """The newest draft's state as the queue groups it."""

    ANY = ""
    READY = "ready"
    PENDING = "pending"  # queued or generating
    FAILED = "failed"
    NONE = "none"  # no draft at all, held out, or withheld (the agent writes unaided)


class Assignment(StrEnum):
    ALL = ""
    MINE = "mine"
    UNASSIGNED = "unassigned"  # nobody's, or a claim that expired


def claim_is_live(*, now: datetime) -> Q:
    """A conversation someone holds right now: the claim is a lease, an expired one is nobody's."""
    return Q(assigned_to__isnull=False, assigned_until__gte=now)


def conversation_queue(
    *,
    team: Team,
    agent: User | None = None,
    q: str = "",
    waiting: Waiting = Waiting.ANY,
    draft_state: DraftState = DraftState.ANY,
    intent: str = "",
    assignment: Assignment = Assignment.ALL,
    now: datetime | None = None,
) -> QuerySet[Conversation]:
    """The team's open conversations, filtered, in one query, each with its last message, its
    newest draft's status, the intent of its newest customer message, and who holds it.

    Order: conversations the agent can take (nobody's, an expired claim, or already theirs)
    before those another agent holds, so agents spread instead of converging on the oldest
    one; then those waiting longest for a reply first (answered ones last); then the most
    recently active.

    `q` matches the customer reference or conversation id, or any message's text
    (case-insensitive, through EXISTS on the thread index: each candidate conversation's own
    messages are looked at, not the whole message table). `intent` is an intent name (the
    classifier's verdict or an agent's label on the newest customer message).
    """
    now = now or timezone.now()
    last_message = Message.objects.filter(conversation_id=OuterRef("pk")).order_by("-id")
    taken_by_other = claim_is_live(now=now)
    if agent is not None:
        taken_by_other &= ~Q(assigned_to=agent)
    conversations = (
        Conversation.objects.filter(team=team, status=Conversation.Status.OPEN)
        .select_related("channel", "assigned_to")
        .annotate(
            last_text=Subquery(last_message.values("text")[:1]),
            last_direction=Subquery(last_message.values("direction")[:1]),
            draft_status=drafting_selectors.latest_draft_status(OuterRef("pk")),
            intent_name=drafting_selectors.latest_inbound_intent_name(OuterRef("pk")),
            claim_live=Case(When(claim_is_live(now=now), then=Value(True)), default=Value(False)),
            taken_by_other=Case(When(taken_by_other, then=Value(True)), default=Value(False)),
        )
    )
    q = q.strip()
    if q:
        mentioned = Message.objects.filter(conversation_id=OuterRef("pk"), text__icontains=q)
        conversations = conversations.filter(
            Q(customer_ref__icontains=q) | Q(external_id__icontains=q) | Exists(mentioned)
        )
    if waiting in WAITING_FOR:
        conversations = conversations.filter(awaiting_reply_since__lte=now - WAITING_FOR[waiting])
    if draft_state == DraftState.PENDING:
        conversations = conversations.filter(
            draft_status__in=[Draft.Status.QUEUED, Draft.Status.GENERATING]
        )
    elif draft_state == DraftState.NONE:
        conversations = conversations.filter(
            Q(draft_status__isnull=True)
            | Q(draft_status__in=[Draft.Status.HELD_OUT, Draft.Status.WITHHELD])
        )
    elif draft_state in (DraftState.READY, DraftState.FAILED):
        conversations = conversations.filter(draft_status=draft_state.value)
    if intent:
        conversations = conversations.filter(intent_name=intent)
    if assignment == Assignment.MINE:
        conversations = conversations.filter(claim_is_live(now=now), assigned_to=agent)
    elif assignment == Assignment.UNASSIGNED:
        conversations = conversations.exclude(claim_is_live(now=now))
    return conversations.order_by("taken_by_other", "awaiting_reply_since", "-updated_at", "-id")


def conversation_queue_page(
    *, conversations: QuerySet[Conversation], page: str | int | None, per_page: int
) -> Page[Conversation]:
    """One page of the queue (a count and one query for the rows). A page number past the
    end or not a number gives the nearest page, as a bookmarked page of a shrinking queue
    should."""
    return Paginator(conversations, per_page).get_page(page)


def next_conversation_for(*, team: Team, agent: User, after: int) -> int | None:
    """The conversation the agent gets after answering `after`: the one waiting longest that
    nobody else holds (the queue's order), or None when none is waiting."""
    now = timezone.now()
    return (
        conversation_queue(team=team, agent=agent, now=now)
        .filter(awaiting_reply_since__isnull=False)
        .exclude(claim_is_live(now=now) & ~Q(assigned_to=agent))
        .exclude(pk=after)
        .values_list("pk", flat=True)
        .first()
    )


# --- A conversation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Thread:
    conversation: Conversation
    messages: list[Message]
    # The customer message waiting for a reply (the newest inbound one to arrive), its draft.
    pending: Message | None
    draft: Draft | None


def conversation_thread(*, team: Team, conversation_id: int) -> Thread:
    """A conversation of the team with its messages and the pending message's draft, in a
    constant number of queries whatever the thread length. Another team's id: 404."""
    conversation = get_object_or_404(
        Conversation.objects.select_related("channel"), pk=conversation_id, team=team
    )
    messages = list(conversation.messages.order_by("id"))  # arrival order
    pending = None
    if conversation.awaiting_reply_since is not None:
        inbound = [m for m in messages if m.direction == Message.Direction.INBOUND]
        pending = inbound[-1] if inbound else None
    draft = drafting_selectors.live_draft_for_message(message_id=pending.pk) if pending else None
    return Thread(conversation=conversation, messages=messages, pending=pending, draft=draft)


@dataclass(frozen=True)
class CustomerHistory:
    """A customer's earlier conversations with the team, newest first (at most `limit`)."""

    conversations: Sequence[Conversation]
    total: int


CUSTOMER_HISTORY_LIMIT = 10


def customer_history(
    *, conversation: Conversation, limit: int = CUSTOMER_HISTORY_LIMIT
) -> CustomerHistory:
    """The same customer's other conversations with the same team (by customer_ref), newest
    activity first, each with its last message; and how many there are in all. A conversation
    without a customer reference has no known history."""
    if not conversation.customer_ref:
        return CustomerHistory(conversations=[], total=0)
    last_message = Message.objects.filter(conversation_id=OuterRef("pk")).order_by("-id")
    others = Conversation.objects.filter(
        team_id=conversation.team_id, customer_ref=conversation.customer_ref
    ).exclude(pk=conversation.pk)
    shown = list(
        others.select_related("channel")
        .annotate(last_text=Subquery(last_message.values("text")[:1]))
        .order_by("-updated_at", "-id")[:limit]
    )
    total = len(shown) if len(shown) < limit else others.count()
    return CustomerHistory(conversations=shown, total=total)


def agent_display_name(user: User) -> str:
    """How an agent signs a reply ({agent_name}); drafting owns the rule, since the draft path
    measures what the agent sent against the draft signed with it."""
    return drafting_selectors.agent_display_name(user)
