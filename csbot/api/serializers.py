from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from csbot.models import Conversation, Message
from drafting.models import (
    MONEY_DIGITS,
    MONEY_PLACES,
    AgentAction,
    Draft,
    DraftAttempt,
    KnowledgeArticle,
    Macro,
)


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know: a typo must not be silently dropped."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


def _text_field(**kwargs: Any) -> serializers.CharField:
    return serializers.CharField(
        max_length=settings.CSBOT_MAX_MESSAGE_CHARS, trim_whitespace=True, **kwargs
    )


# Older times are typos or placeholders (0001-01-01), and would not survive time zone arithmetic.
EARLIEST_SENT_AT = datetime(1970, 1, 1, tzinfo=UTC)


class InboundMessageIn(StrictSerializer):
    conversation_external_id = serializers.CharField(
        max_length=200,
        help_text="The channel's id for the conversation; new ids open a conversation.",
    )
    channel_message_id = serializers.CharField(
        max_length=200, help_text="The channel's id for this message; posting it again is a no-op."
    )
    text = _text_field(help_text=f"At most {settings.CSBOT_MAX_MESSAGE_CHARS} characters.")
    customer_ref = serializers.CharField(
        max_length=200, required=False, default="", allow_blank=True
    )
    sent_at = serializers.DateTimeField(
        required=False,
        help_text="When the customer sent it (default: now). Shown as the message's time; the "
        "order of a conversation's messages is their arrival.",
    )

    def validate_sent_at(self, value: datetime) -> datetime:
        latest = timezone.now() + timedelta(seconds=settings.CSBOT_CLOCK_SKEW_SECONDS)
        if value > latest:
            raise serializers.ValidationError("sent_at is in the future.")
        if value < EARLIEST_SENT_AT:
            raise serializers.ValidationError(
                f"sent_at is before {EARLIEST_SENT_AT.date().isoformat()}."
            )
        return value


# The ingest response is on the hot path: plain serializers with declared fields, because a
# ModelSerializer rebuilds its fields from the model on every instance (measured: ~10% of an
# ingest request's CPU).
class DraftSummaryOut(serializers.Serializer[Draft]):
    id = serializers.IntegerField(read_only=True)
    status = serializers.ChoiceField(choices=Draft.Status.choices, read_only=True)
    text = serializers.CharField(read_only=True)
    score = serializers.DecimalField(
        max_digits=5, decimal_places=4, read_only=True, allow_null=True
    )
    total_cost = serializers.DecimalField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, read_only=True
    )
    created_at = serializers.DateTimeField(read_only=True)
    ready_at = serializers.DateTimeField(read_only=True, allow_null=True)


class MessageOut(serializers.Serializer[Message]):
    id = serializers.IntegerField(read_only=True)
    conversation = serializers.IntegerField(source="conversation_id", read_only=True)
    conversation_external_id = serializers.CharField(
        source="conversation.external_id", read_only=True
    )
    direction = serializers.ChoiceField(choices=Message.Direction.choices, read_only=True)
    text = serializers.CharField(read_only=True)
    author = serializers.CharField(read_only=True)
    channel_message_id = serializers.CharField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    draft = serializers.SerializerMethodField()

    @extend_schema_field(DraftSummaryOut(allow_null=True))
    def get_draft(self, message: Message) -> dict[str, Any] | None:
        drafts: dict[int, Draft] = self.context.get("drafts", {})
        draft = drafts.get(message.pk)
        return DraftSummaryOut(draft).data if draft is not None else None


# Ingest answers every message with MessageOut's shape, built here without a serializer
# instance: each instance deep-copies its declared fields (MessageOut's, then DraftSummaryOut's
# for the draft). The values go through the same DRF fields, so the body is the same (a test
# compares the two).
_DATETIME = serializers.DateTimeField()
_SCORE = serializers.DecimalField(max_digits=5, decimal_places=4)
_COST = serializers.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)


def message_out(message: Message, draft: Draft | None) -> dict[str, Any]:
    """`MessageOut(message, context={"drafts": {message.pk: draft}}).data`, faster."""
    return {
        "id": message.pk,
        "conversation": message.conversation_id,
        "conversation_external_id": message.conversation.external_id,
        "direction": str(message.direction),
        "text": message.text,
        "author": message.author,
        "channel_message_id": message.channel_message_id,
        "created_at": _DATETIME.to_representation(message.created_at),
        "draft": None
        if draft is None
        else {
            "id": draft.pk,
            "status": str(draft.status),
            "text": draft.text,
            "score": None if draft.score is None else _SCORE.to_representation(draft.score),
            "total_cost": _COST.to_representation(draft.total_cost),
            "created_at": _DATETIME.to_representation(draft.created_at),
            "ready_at": None
            if draft.ready_at is None
            else _DATETIME.to_representation(draft.ready_at),
        },
    }


class ConversationOut(serializers.ModelSerializer[Conversation]):
    channel = serializers.CharField(source="channel.name", read_only=True)
    draft_status = serializers.CharField(read_only=True, allow_null=True)

    class Meta:
        model = Conversation
        fields = [
            "id",
            "channel",
            "external_id",
            "customer_ref",
            "status",
            "created_at",
            "updated_at",
            "awaiting_reply_since",
            "draft_status",
        ]


class DraftAttemptOut(serializers.ModelSerializer[DraftAttempt]):
    endpoint = serializers.CharField(source="endpoint.name", read_only=True, allow_null=True)

    class Meta:
        model = DraftAttempt
        fields = [
            "tier",
            "endpoint",
            "model_name",
            "tokens_in",
            "tokens_out",
            "latency_ms",
            "cost",
            "outcome",
            "error_kind",
            "cache_hit",
            "exploratory",  # asked after the draft was ready, for the optimiser; never shown
            # "" the draft's own; "shadow" a candidate adapter's answer (its text never shown);
            # else a composer tool's rewrite of the agent's text
            "purpose",
            "started_at",
        ]


class DraftOut(serializers.ModelSerializer[Draft]):
    final_endpoint = serializers.CharField(
        source="final_endpoint.name", read_only=True, allow_null=True
    )
    attempts = DraftAttemptOut(many=True, read_only=True)

    class Meta:
        model = Draft
        fields = [
            "id",
            "message",
            "status",
            "text",
            "final_endpoint",
            "score",
            "total_cost",
            "failure_reason",
            "created_at",
            "ready_at",
            "first_shown_at",
            "attempts",
        ]


class ActionIn(StrictSerializer):
    kind = serializers.ChoiceField(choices=AgentAction.Kind.choices)
    final_text = _text_field(
        required=False, help_text="The reply sent. Omit with kind=use to send the draft as is."
    )
    agent = serializers.CharField(max_length=150, help_text="Username of the agent (same team).")
    shown_at = serializers.DateTimeField(
        required=False,
        help_text="When the agent first saw the draft (default: as recorded by csbot).",
    )
    acted_at = serializers.DateTimeField(
        required=False, help_text="When the reply was sent (default: now)."
    )


class ActionOut(serializers.ModelSerializer[AgentAction]):
    agent = serializers.CharField(source="agent.username", read_only=True)

    class Meta:
        model = AgentAction
        fields = [
            "id",
            "draft",
            "inbound_message",
            "outbound_message",
            "agent",
            "kind",
            "final_text",
            "edit_distance",
            "shown_at",
            "acted_at",
            "handle_seconds",
        ]


# --- Knowledge (a help center's sync) ---------------------------------------------------------
# Field types and limits for the schema; what an article or macro must be is checked in one
# place (drafting.engine.knowledge_files.article_errors / macro_errors, through the service).


class ArticleIn(StrictSerializer):
    title = serializers.CharField(max_length=300)
    body = serializers.CharField(
        trim_whitespace=False,
        help_text="Markdown, HTML or plain text (`format`); the request body is at most "
        f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes (413 beyond).",
    )
    format = serializers.ChoiceField(
        choices=KnowledgeArticle.Format.choices, default=KnowledgeArticle.Format.MARKDOWN
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=60), required=False, default=list, max_length=100
    )
    language = serializers.CharField(
        max_length=12, default="en", help_text="ISO 639-1 code; picks the text-search stemmer."
    )
    source_url = serializers.URLField(max_length=500, required=False, default="", allow_blank=True)
    published = serializers.BooleanField(
        default=True, help_text="Only published articles are retrieved for drafts."
    )


class ArticleOut(serializers.ModelSerializer[KnowledgeArticle]):
    format = serializers.CharField(source="body_format", read_only=True)
    chunks = serializers.IntegerField(
        source="chunk_count", read_only=True, help_text="Passages the article is split into."
    )
    chunks_embedded = serializers.IntegerField(
        source="embedded_count",
        read_only=True,
        help_text="Of those, how many have their vector yet (the rest are found by text only).",
    )

    class Meta:
        model = KnowledgeArticle
        fields = [
            "external_id",
            "title",
            "body",
            "format",
            "tags",
            "language",
            "source_url",
            "published",
            "version",
            "chunks",
            "chunks_embedded",
            "created_at",
            "updated_at",
        ]


class MacroIn(StrictSerializer):
    title = serializers.CharField(max_length=200)
    body = serializers.CharField(
        trim_whitespace=False,
        help_text="The reply, with placeholders such as {customer_name} and {agent_name}.",
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=60), required=False, default=list, max_length=100
    )
    intent = serializers.CharField(
        max_length=80,
        required=False,
        default="",
        allow_blank=True,
        help_text="The name of one of the team's intents: offer the macro for messages of it.",
    )
    language = serializers.CharField(max_length=12, default="en")
    active = serializers.BooleanField(default=True)


class MacroOut(serializers.ModelSerializer[Macro]):
    intent = serializers.CharField(source="intent.name", read_only=True, allow_null=True)

    class Meta:
        model = Macro
        fields = [
            "external_id",
            "title",
            "body",
            "tags",
            "intent",
            "language",
            "active",
            "created_at",
            "updated_at",
        ]
