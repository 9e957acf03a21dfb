"""Builders shared by tests of more than one app: model factories, a team set up as its
integration and its agents see it, and the ENCS paper's case. Builders of one package's tests
live in that package's factories module (tests/accounting/factories.py, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import factory
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from csbot import services
from csbot.models import AgentProfile, Channel, Conversation, Message, Team
from drafting.models import CascadePolicy, CascadeTier, Draft, EndpointPrice, ModelEndpoint


class TeamFactory(factory.django.DjangoModelFactory[Team]):
    class Meta:
        model = Team
        django_get_or_create = ["name"]

    name = factory.Sequence(lambda n: f"Team {n}")


class ChannelFactory(factory.django.DjangoModelFactory[Channel]):
    class Meta:
        model = Channel

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"chat-{n}")


# Every factory-made user's password (the browser tests log in with it).
PASSWORD = "pw-for-tests"


class UserFactory(factory.django.DjangoModelFactory[Any]):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"agent{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def save_password(obj: Any, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create:
            obj.save()


class AgentProfileFactory(factory.django.DjangoModelFactory[AgentProfile]):
    class Meta:
        model = AgentProfile

    user = factory.SubFactory(UserFactory)
    team = factory.SubFactory(TeamFactory)


class ConversationFactory(factory.django.DjangoModelFactory[Conversation]):
    class Meta:
        model = Conversation

    channel = factory.SubFactory(ChannelFactory)
    team = factory.SelfAttribute("channel.team")
    external_id = factory.Sequence(lambda n: f"conv-{n}")
    customer_ref = factory.Sequence(lambda n: f"Customer {n}")


class MessageFactory(factory.django.DjangoModelFactory[Message]):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    channel = factory.SelfAttribute("conversation.channel")
    direction = Message.Direction.INBOUND
    text = factory.Faker("sentence")
    channel_message_id = factory.Sequence(lambda n: f"msg-{n}")


# Before any attempt a test makes: an endpoint's first price is in force for all of them.
EARLY = datetime(2000, 1, 1, tzinfo=UTC)


class EndpointPriceFactory(factory.django.DjangoModelFactory[EndpointPrice]):
    class Meta:
        model = EndpointPrice

    endpoint = factory.SubFactory("tests.factories.EndpointFactory", price=None)
    effective_from = EARLY
    gpu_hour_usd = Decimal("0.80")
    note = "initial"


class EndpointFactory(factory.django.DjangoModelFactory[ModelEndpoint]):
    """An endpoint with one price row in force since EARLY: set its prices with
    `price__input_price_per_mtok=...`, or pass `price=None` for an endpoint with none."""

    class Meta:
        model = ModelEndpoint
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"endpoint-{n}")
    kind = ModelEndpoint.Kind.LOCAL
    model_name = "smollm2-135m-instruct"
    timeout_seconds = 60
    max_output_tokens = 48
    price = factory.RelatedFactory(EndpointPriceFactory, factory_related_name="endpoint")


class PolicyFactory(factory.django.DjangoModelFactory[CascadePolicy]):
    class Meta:
        model = CascadePolicy

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"policy-{n}")
    system_prompt = "You are a concise, friendly support agent. Answer in two sentences."
    holdout_share = Decimal("0")


class TierFactory(factory.django.DjangoModelFactory[CascadeTier]):
    class Meta:
        model = CascadeTier

    policy = factory.SubFactory(PolicyFactory)
    position = 1
    endpoint = factory.SubFactory(EndpointFactory)
    threshold = Decimal("0")


class DraftFactory(factory.django.DjangoModelFactory[Draft]):
    class Meta:
        model = Draft

    message = factory.SubFactory(MessageFactory)
    policy = factory.SubFactory(
        PolicyFactory, team=factory.SelfAttribute("..message.conversation.team")
    )


def token_for(channel: Channel) -> str:
    """A fresh API key for `channel` (the raw key, as an integration would hold it)."""
    _token, key = services.api_token_create(channel=channel, name="tests")
    return key


# --- Drafts an agent acted on (the learned scorer's labels) ------------------------------------


class DraftAttemptFactory(factory.django.DjangoModelFactory[Any]):
    """A tier's answer for a draft (ok, tier 1, on the policy's first tier's endpoint)."""

    class Meta:
        model = "drafting.DraftAttempt"

    draft = factory.SubFactory(DraftFactory)
    tier = 1
    endpoint = factory.SubFactory(EndpointFactory)
    outcome = "ok"
    model_name = "stub-model"
    score = Decimal("0.6")


class AgentActionFactory(factory.django.DjangoModelFactory[Any]):
    """An agent's reply to a ready draft's message: pass `draft`, `kind`, `final_text` and
    `edit_distance`; the outbound message is created in the same conversation."""

    class Meta:
        model = "drafting.AgentAction"

    draft = factory.SubFactory(DraftFactory, status="ready", ready_at=EARLY)
    inbound_message = factory.SelfAttribute("draft.message")
    outbound_message = factory.SubFactory(
        MessageFactory,
        conversation=factory.SelfAttribute("..draft.message.conversation"),
        direction=Message.Direction.OUTBOUND,
        text=factory.SelfAttribute("..final_text"),
    )
    agent = factory.SubFactory(UserFactory)
    kind = "use"
    final_text = factory.SelfAttribute("draft.text")
    edit_distance = Decimal("0")
    shown_at = EARLY
    acted_at = EARLY
    handle_seconds = Decimal("30")


# The ENCS paper's case study as what-if parameters (the API's names).
WHATIF_PAPER_CASE = {
    "agent_hourly_usd": "36",
    "baseline_seconds": "120",
    "use_seconds": "30",
    "edit_seconds": "60",
    "ignore_seconds": "150",
    "use_share": "0.5",
    "edit_share": "0.3",
    "ignore_share": "0.2",
    "cost_per_response_usd": "0.011",
    "messages_per_year": "500000",
}


# The what-if form's names for the same case (the dashboard's `w-` prefix, shares in percent).
WHATIF_FORM_PAPER_CASE = {
    "w-agent_hourly_usd": "36",
    "w-baseline_seconds": "120",
    "w-use_seconds": "30",
    "w-edit_seconds": "60",
    "w-ignore_seconds": "150",
    "w-use_pct": "50",
    "w-edit_pct": "30",
    "w-ignore_pct": "20",
    "w-cost_per_response_usd": "0.011",
    "w-messages_per_year": "500000",
}


# --- A team as its integration and its agents see it -------------------------------------------


@dataclass
class TeamSetup:
    """What `make_team` made; `api()` is a client with the channel's key."""

    team: Team
    channel: Channel
    agent: Any
    profile: AgentProfile
    policy: CascadePolicy
    endpoint: ModelEndpoint
    token: str

    def api(self) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {self.token}")
        return client


def make_team(name: str, *, endpoint: ModelEndpoint | None = None) -> TeamSetup:
    """A team with a web-chat channel and its API key, an agent, and a policy of one tier on
    `endpoint` (a fresh local one by default)."""
    team = TeamFactory.create(name=name)
    channel = ChannelFactory.create(team=team, name="web-chat")
    profile = AgentProfileFactory.create(
        team=team, user__username=f"{name.lower().replace(' ', '-')}-agent"
    )
    policy = PolicyFactory.create(team=team)
    endpoint = endpoint or EndpointFactory.create()
    TierFactory.create(policy=policy, endpoint=endpoint, position=1)
    return TeamSetup(
        team=team,
        channel=channel,
        agent=profile.user,
        profile=profile,
        policy=policy,
        endpoint=endpoint,
        token=token_for(channel),
    )


def ingest(
    setup: TeamSetup, conversation: str, message_id: str, text: str = "Hi there"
) -> services.IngestResult:
    """A customer message arriving on the team's channel, as the API would store it."""
    return services.message_ingest(
        channel=setup.channel,
        conversation_external_id=conversation,
        channel_message_id=message_id,
        text=text,
        customer_ref="Dana",
    )


# A ready draft's text, for the tests that post actions on it.
DRAFT_TEXT = "Your parcel ships tomorrow morning; you will get a tracking link by email."


def post_action(client: APIClient, draft: Draft, **payload: Any) -> Any:
    """POST an agent action on `draft` to the API (datetimes sent as ISO 8601)."""
    body = {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in payload.items()
    }
    return client.post(f"/api/v1/drafts/{draft.pk}/action", body, format="json")
