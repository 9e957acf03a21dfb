"""The support domain: teams, agents, channels, conversations and messages."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Team(models.Model):
    name = models.CharField(max_length=120, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class AgentProfile(models.Model):
    """Links a Django user to the team whose conversations they work on."""

    class Role(models.TextChoices):
        AGENT = "agent", "Agent"
        MANAGER = "manager", "Manager"
        ADMIN = "admin", "Admin"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_profile"
    )
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="agents")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.AGENT)

    def __str__(self) -> str:
        return f"{self.user} @ {self.team}"


class Channel(models.Model):
    """Where messages come from (chat widget, email bridge, helpdesk integration…)."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="channels")
    name = models.CharField(max_length=120)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="channel_name_unique_per_team")
        ]

    def __str__(self) -> str:
        return f"{self.team} / {self.name}"


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    """A per-channel integration token. Only a SHA-256 of the key is stored.

    The key is long and random, so a fast hash is enough (no password-style stretching, which
    would cost milliseconds on every ingest request).
    """

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=120)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(
        max_length=8, editable=False, help_text="First characters, to tell keys apart."
    )
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @staticmethod
    def generate_key() -> str:
        return secrets.token_urlsafe(32)


class Conversation(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="conversations")
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="conversations")
    external_id = models.CharField(max_length=200)
    customer_ref = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # Set on each inbound message and cleared when an agent replies: the queue shows these.
    awaiting_reply_since = models.DateTimeField(null=True, blank=True)
    # Opening a conversation claims it for CONSOLE_CLAIM_SECONDS, so two agents do not answer
    # the same message; the claim is a lease (expires by itself), not a lock to release.
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    assigned_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "external_id"],
                name="conversation_external_id_unique_per_channel",
            )
        ]
        indexes = [
            models.Index(fields=["team", "status", "-updated_at"], name="conversation_queue_idx")
        ]

    def __str__(self) -> str:
        return f"{self.channel.name}:{self.external_id}"


class Message(models.Model):
    class Direction(models.TextChoices):
        INBOUND = "in", "Inbound"
        OUTBOUND = "out", "Outbound"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    # Denormalised from the conversation so the idempotency key can be a plain constraint.
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="+")
    direction = models.CharField(max_length=3, choices=Direction.choices)
    text = models.TextField()
    author = models.CharField(
        max_length=200, blank=True, help_text="Customer reference or agent name."
    )
    author_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # NULL (not ""), so outbound messages without a channel id stay outside the unique key.
    channel_message_id = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "channel_message_id"],
                condition=Q(channel_message_id__isnull=False),
                name="message_channel_id_unique_per_channel",
            ),
            models.CheckConstraint(
                condition=Q(direction__in=["in", "out"]), name="message_direction_valid"
            ),
        ]
        # Arrival order, the one order of a conversation's messages: what the agent and the
        # drafter saw, in that order. Ids follow arrival because message_ingest and reply_send
        # lock the conversation row before inserting. `created_at` is the sender's clock
        # (a customer's sent_at) and may run backwards when a message is delivered late.
        indexes = [models.Index(fields=["conversation", "id"], name="message_thread_idx")]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.direction} #{self.pk}"
