"""Support-domain reads for the console and the API."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db.models import OuterRef, QuerySet, Subquery
from django.shortcuts import get_object_or_404

from csbot.models import Conversation, Message, Team
from drafting import selectors as drafting_selectors
from drafting.models import Draft


def conversation_queue(*, team: Team) -> QuerySet[Conversation]:
    """The team's open conversations, those waiting longest for a reply first, each with its
    last message and its newest draft's status (one query)."""
    last_message = Message.objects.filter(conversation_id=OuterRef("pk")).order_by("-id")
    return (
        Conversation.objects.filter(team=team, status=Conversation.Status.OPEN)
        .select_related("channel")
        .annotate(
            last_text=Subquery(last_message.values("text")[:1]),
            last_direction=Subquery(last_message.values("direction")[:1]),
            draft_status=drafting_selectors.latest_draft_status(OuterRef("pk")),
        )
        .order_by("awaiting_reply_since", "-updated_at")
    )


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


def agent_display_name(user: User) -> str:
    """How an agent signs a reply ({agent_name}); drafting owns the rule, since the draft path
    measures what the agent sent against the draft signed with it."""
    return drafting_selectors.agent_display_name(user)
