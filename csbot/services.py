"""Support-domain write flows: ingesting customer messages and sending agent replies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from auditlog.models import LogEntry
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from csbot.models import ApiToken, Channel, Conversation, Message
from csbot.tokens import forget_token
from drafting import selectors as drafting_selectors
from drafting import services as drafting

if TYPE_CHECKING:
    from drafting.models import AgentAction, Draft


@dataclass(frozen=True)
class IngestResult:
    message: Message
    draft: Draft | None
    created: bool


def message_ingest(
    *,
    channel: Channel,
    conversation_external_id: str,
    channel_message_id: str,
    text: str,
    customer_ref: str = "",
    sent_at: datetime | None = None,
) -> IngestResult:
    """Store an inbound customer message and request its draft, in one transaction.

    Idempotent on (channel, channel_message_id): the unique constraint decides, also when two
    copies race; a repeat rolls back and returns the first message and draft (created=False).
    There is no look-up first: duplicates are rare and this is the hot path.

    Messages of a conversation are ordered by arrival (Message.Meta.ordering): the conversation
    row is locked (its upsert) before the message is inserted, so two messages arriving at once
    get ids, and supersede each other's drafts, in one order. `sent_at`, the sender's clock,
    is kept as the message's time and decides nothing (README, "Message order").
    """
    now = timezone.now()
    try:
        with transaction.atomic():
            conversation, new_conversation = _conversation_upsert(
                channel=channel,
                external_id=conversation_external_id,
                customer_ref=customer_ref,
                now=now,
            )
            message = Message.objects.create(
                conversation=conversation,
                channel=channel,
                direction=Message.Direction.INBOUND,
                text=text,
                author=customer_ref or conversation.customer_ref,
                channel_message_id=channel_message_id,
                created_at=sent_at or now,
            )
            draft = drafting.draft_request(message=message, new_conversation=new_conversation)
    except IntegrityError:
        existing = _existing(channel=channel, channel_message_id=channel_message_id)
        if existing is None:
            raise
        return existing
    return IngestResult(message=message, draft=draft, created=True)


_CONVERSATION_TABLE = Conversation._meta.db_table
_CONVERSATION_FIELDS = [f.attname for f in Conversation._meta.concrete_fields]
# `xmax = 0` tells a row this statement inserted from one it updated: an updated row carries
# the updating transaction in xmax. Interpolated are only names from the model's metadata.
_CONVERSATION_UPSERT = f"""
    INSERT INTO {_CONVERSATION_TABLE}
           (team_id, channel_id, external_id, customer_ref, status, created_at, updated_at,
            awaiting_reply_since)
    VALUES (%(team)s, %(channel)s, %(external_id)s, %(customer_ref)s, %(open)s, %(now)s,
            %(now)s, %(now)s)
    ON CONFLICT (channel_id, external_id) DO UPDATE
       SET status = %(open)s, updated_at = %(now)s,
           awaiting_reply_since = coalesce({_CONVERSATION_TABLE}.awaiting_reply_since, %(now)s)
    RETURNING {", ".join(f.column for f in Conversation._meta.concrete_fields)}, xmax = 0
"""  # noqa: S608


def _conversation_upsert(
    *, channel: Channel, external_id: str, customer_ref: str, now: datetime
) -> tuple[Conversation, bool]:
    """The conversation, opened or reopened (status open, awaiting a reply since its first
    unanswered message), and whether this call created it, in one statement: get_or_create's
    SELECT (plus a savepoint and an INSERT when new) and the UPDATE of a known conversation
    were three to four ORM statements on ingest's hot path. The row stays locked until the
    caller's transaction ends, as with the UPDATE: messages get ids in arrival order."""
    params: dict[str, int | str | datetime] = {
        "team": channel.team_id,
        "channel": channel.pk,
        "external_id": external_id,
        "customer_ref": customer_ref,
        "open": Conversation.Status.OPEN,
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(_CONVERSATION_UPSERT, params)
        *values, created = cursor.fetchone()
    conversation = Conversation.from_db(connection.alias, _CONVERSATION_FIELDS, values)
    conversation.channel = channel
    return conversation, created


def _existing(*, channel: Channel, channel_message_id: str) -> IngestResult | None:
    message = (
        Message.objects.select_related("conversation")
        .filter(channel=channel, channel_message_id=channel_message_id)
        .first()
    )
    if message is None:
        return None
    draft = drafting_selectors.live_draft_for_message(message_id=message.pk)
    return IngestResult(message=message, draft=draft, created=False)


class ConversationClosed(Exception):
    """A reply to a closed conversation: nothing is sent or recorded. The customer's next
    message reopens the conversation; closing is the agent's word that it needs no answer."""

    def __init__(self, conversation_id: int):
        super().__init__(
            f"Conversation {conversation_id} is closed: the reply was not sent. It reopens "
            "when the customer writes again."
        )
        self.conversation_id = conversation_id


@dataclass(frozen=True)
class ReplyResult:
    message: Message
    action: AgentAction | None
    created: bool


def reply_send(
    *,
    conversation: Conversation,
    agent: User,
    text: str,
    inbound_message: Message | None = None,
    draft: Draft | None = None,
    kind: str = "none",
    shown_at: datetime | None = None,
    acted_at: datetime | None = None,
) -> ReplyResult:
    """Send an agent's reply and record the action on the draft it answers.

    `inbound_message` is the customer message being answered (none: a follow-up with no
    action). A second submission for the same inbound message returns the first reply
    unchanged (created=False) instead of sending twice. A closed conversation takes no
    reply: ConversationClosed, with nothing written.
    """
    acted_at = acted_at or timezone.now()
    try:
        with transaction.atomic():
            # Locked first, like ingest: the reply's id orders it after every message that
            # arrived before it, and a conversation closed meanwhile is seen closed.
            status, holder_id = (
                Conversation.objects.select_for_update()
                .filter(pk=conversation.pk)
                .values_list("status", "assigned_to_id")
                .get()
            )
            if status == Conversation.Status.CLOSED:
                previous = _previous_reply(inbound_message=inbound_message, draft=draft)
                if previous is not None:  # a repeat of a reply sent before closing
                    return previous
                raise ConversationClosed(conversation.pk)
            message = Message.objects.create(
                conversation=conversation,
                channel_id=conversation.channel_id,
                direction=Message.Direction.OUTBOUND,
                text=text,
                author=agent.get_username(),
                author_user=agent,
                created_at=acted_at,
            )
            # Answering ends the agent's claim (the row is locked: no one changed it since).
            released = (
                {"assigned_to": None, "assigned_until": None} if holder_id == agent.pk else {}
            )
            Conversation.objects.filter(pk=conversation.pk).update(
                updated_at=acted_at, awaiting_reply_since=None, **released
            )
            action = None
            if inbound_message is not None:
                action = drafting.action_record(
                    draft=draft,
                    inbound_message=inbound_message,
                    outbound_message=message,
                    agent=agent,
                    kind=kind,
                    shown_at=shown_at,
                    acted_at=acted_at,
                )
    except IntegrityError:
        previous = _previous_reply(inbound_message=inbound_message, draft=draft)
        if previous is None:
            raise
        return previous
    return ReplyResult(message=message, action=action, created=True)


def _previous_reply(*, inbound_message: Message | None, draft: Draft | None) -> ReplyResult | None:
    action = drafting_selectors.action_for_reply(
        inbound_message_id=inbound_message.pk if inbound_message is not None else None,
        draft_id=draft.pk if draft is not None else None,
    )
    if action is None:
        return None
    return ReplyResult(message=action.outbound_message, action=action, created=False)


def conversation_close(*, conversation: Conversation) -> None:
    """Take a conversation off the queue (and out of anyone's hands). The customer's next
    message reopens it."""
    Conversation.objects.filter(pk=conversation.pk).update(
        status=Conversation.Status.CLOSED,
        awaiting_reply_since=None,
        updated_at=timezone.now(),
        assigned_to=None,
        assigned_until=None,
    )


# --- Claims: who is answering a conversation ----------------------------------------------------
#
# Opening a conversation in the console claims it for CONSOLE_CLAIM_SECONDS: a lease, renewed
# by the open page, ended by a reply or a release, and over by itself when the page is gone. A
# claim is taken with one conditional UPDATE (free, expired, or already the agent's), never a
# read and then a write, so two agents opening the same conversation at once cannot both get
# it. Someone else's live claim is only ever overridden by an explicit take-over, which the
# audit log records.


@dataclass(frozen=True)
class Claim:
    """Who holds a conversation now, as one agent sees it."""

    holder: User | None  # None: nobody (free, expired, or the conversation is closed)
    until: datetime | None
    mine: bool

    @property
    def taken(self) -> bool:
        """Someone else holds it: the agent must take it over before answering."""
        return self.holder is not None and not self.mine


def _claimable_by(agent: User, now: datetime) -> Q:
    return (
        Q(assigned_to__isnull=True)
        | Q(assigned_until__isnull=True)
        | Q(assigned_until__lt=now)
        | Q(assigned_to=agent)
    )


def conversation_claim(
    *, conversation: Conversation, agent: User, now: datetime | None = None
) -> Claim:
    """Claim (or renew the agent's claim on) an open conversation, unless another agent holds
    it. Steps: one conditional UPDATE; when it changed no row, read who holds it."""
    now = now or timezone.now()
    until = now + timedelta(seconds=settings.CONSOLE_CLAIM_SECONDS)
    won = (
        Conversation.objects.filter(pk=conversation.pk, status=Conversation.Status.OPEN)
        .filter(_claimable_by(agent, now))
        .update(assigned_to=agent, assigned_until=until)
    )
    if won:
        return Claim(holder=agent, until=until, mine=True)
    return conversation_claim_state(conversation=conversation, agent=agent, now=now)


def conversation_claim_state(
    *, conversation: Conversation, agent: User, now: datetime | None = None
) -> Claim:
    """Who holds the conversation now, without claiming it."""
    now = now or timezone.now()
    row = (
        Conversation.objects.select_related("assigned_to")
        .only("assigned_to", "assigned_until")
        .get(pk=conversation.pk)
    )
    if row.assigned_to is None or row.assigned_until is None or row.assigned_until < now:
        return Claim(holder=None, until=None, mine=False)
    return Claim(
        holder=row.assigned_to, until=row.assigned_until, mine=row.assigned_to_id == agent.pk
    )


def conversation_take_over(
    *, conversation: Conversation, agent: User, now: datetime | None = None
) -> Claim:
    """Take an open conversation from whoever holds it: the agent asked for it explicitly.
    Taking it from another agent's live claim is written to the audit log (who, from whom);
    a free or expired one is simply claimed."""
    now = now or timezone.now()
    until = now + timedelta(seconds=settings.CONSOLE_CLAIM_SECONDS)
    with transaction.atomic():
        row = (
            Conversation.objects.select_for_update()
            .select_related("channel")
            .filter(pk=conversation.pk, status=Conversation.Status.OPEN)
            .first()
        )
        if row is None:  # closed meanwhile: nothing to take
            return Claim(holder=None, until=None, mine=False)
        previous = (
            row.assigned_to_id
            if row.assigned_to_id is not None
            and row.assigned_until is not None
            and row.assigned_until >= now
            else None
        )
        Conversation.objects.filter(pk=row.pk).update(assigned_to=agent, assigned_until=until)
        if previous is not None and previous != agent.pk:
            previous_name = User.objects.filter(pk=previous).values_list("username", flat=True)
            LogEntry.objects.log_create(
                row,
                force_log=True,
                action=LogEntry.Action.UPDATE,
                actor=agent,
                changes={"assigned_to": [previous_name.first(), agent.get_username()]},
                additional_data={"console": "take over"},
            )
    return Claim(holder=agent, until=until, mine=True)


def conversation_release(*, conversation: Conversation, agent: User) -> None:
    """Give the agent's claim up (leaving the page); someone else's claim is left alone."""
    Conversation.objects.filter(pk=conversation.pk, assigned_to=agent).update(
        assigned_to=None, assigned_until=None
    )


def api_token_create(*, channel: Channel, name: str) -> tuple[ApiToken, str]:
    """A new integration token for `channel`. Returns the row and the key, which is not
    stored (only its hash) and so can be shown exactly once."""
    key = ApiToken.generate_key()
    token = ApiToken.objects.create(
        channel=channel, name=name, key_hash=ApiToken.hash_key(key), prefix=key[:8]
    )
    return token, key


def api_token_revoke(*, token: ApiToken) -> None:
    """Revoke a token. Every web process refuses it from its next request on, once the
    revocation is committed (csbot.tokens)."""
    # A save, not an UPDATE, so the audit log records who revoked it and when.
    with transaction.atomic():
        row = ApiToken.objects.select_for_update().get(pk=token.pk)
        if row.revoked_at is None:
            row.revoked_at = timezone.now()
            row.save(update_fields=["revoked_at"])
    forget_token(token.key_hash)
