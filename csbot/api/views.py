"""REST API v1: ingest for channels, reads for integrations, actions for external consoles."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import OuterRef, QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from csbot import services
from csbot.api import serializers as s
from csbot.api.auth import not_found, request_channel, request_team
from csbot.models import Conversation, Message
from csbot.security import IngestRateThrottle
from drafting import selectors as drafting_selectors
from drafting.models import AgentAction, Draft
from drafting.services import ActionRejected


class ConversationClosedError(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conversation_closed"


class ConversationPagination(CursorPagination):
    ordering = ("-updated_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = 200


class MessagePagination(CursorPagination):
    ordering = ("id",)  # arrival order: Message.Meta.ordering
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500


class MessageIngestView(APIView):
    throttle_classes = [IngestRateThrottle]  # CSBOT_INGEST_RATE per channel token

    @extend_schema(
        request=s.InboundMessageIn,
        responses={
            201: s.MessageOut,
            200: OpenApiResponse(s.MessageOut, description="Already ingested: the first result."),
        },
        summary="Post an inbound customer message",
        description="Creates the conversation when its external id is new and queues a reply "
        "draft. Idempotent on `channel_message_id` within the channel. Messages are ordered by "
        "arrival: the newest message to arrive is the one drafted for and shown to agents, and "
        "supersedes earlier unanswered drafts; `sent_at` is kept as the message's time.",
    )
    def post(self, request: Request) -> Response:
        channel = request_channel(request)
        payload = s.InboundMessageIn(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        result = services.message_ingest(
            channel=channel,
            conversation_external_id=data["conversation_external_id"],
            channel_message_id=data["channel_message_id"],
            text=data["text"],
            customer_ref=data["customer_ref"],
            sent_at=data.get("sent_at"),
        )
        return Response(
            s.message_out(result.message, result.draft),
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


class ConversationListView(generics.ListAPIView[Conversation]):
    serializer_class = s.ConversationOut
    pagination_class = ConversationPagination

    def get_queryset(self) -> QuerySet[Conversation]:
        queryset = (
            Conversation.objects.filter(team=request_team(self.request))
            .select_related("channel")
            .annotate(draft_status=drafting_selectors.latest_draft_status(OuterRef("pk")))
        )
        wanted = self.request.query_params.get("status")
        if wanted:
            if wanted not in Conversation.Status.values:
                raise serializers.ValidationError(
                    {"status": [f"One of {Conversation.Status.values}."]}
                )
            queryset = queryset.filter(status=wanted)
        return queryset


class ConversationDetailView(generics.RetrieveAPIView[Conversation]):
    serializer_class = s.ConversationOut

    def get_queryset(self) -> QuerySet[Conversation]:
        return (
            Conversation.objects.filter(team=request_team(self.request))
            .select_related("channel")
            .annotate(draft_status=drafting_selectors.latest_draft_status(OuterRef("pk")))
        )


class ConversationMessagesView(generics.ListAPIView[Message]):
    serializer_class = s.MessageOut
    pagination_class = MessagePagination

    def get_queryset(self) -> QuerySet[Message]:
        team = request_team(self.request)
        if not Conversation.objects.filter(pk=self.kwargs["pk"], team=team).exists():
            raise not_found()
        return Message.objects.filter(conversation_id=self.kwargs["pk"]).select_related(
            "conversation"
        )

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        assert page is not None
        drafts = drafting_selectors.live_drafts_for_messages(message_ids=[m.pk for m in page])
        data = self.get_serializer(page, many=True, context={"drafts": drafts}).data
        return self.get_paginated_response(data)


class MessageDetailView(generics.RetrieveAPIView[Message]):
    serializer_class = s.MessageOut

    def get_queryset(self) -> QuerySet[Message]:
        return Message.objects.filter(conversation__team=request_team(self.request)).select_related(
            "conversation"
        )

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        message = self.get_object()
        draft = drafting_selectors.live_draft_for_message(message_id=message.pk)
        drafts = {message.pk: draft} if draft is not None else {}
        return Response(s.MessageOut(message, context={"drafts": drafts}).data)


class DraftDetailView(generics.RetrieveAPIView[Draft]):
    serializer_class = s.DraftOut

    def get_queryset(self) -> QuerySet[Draft]:
        return drafting_selectors.drafts_for_team(
            team_id=request_team(self.request).pk
        ).prefetch_related("attempts__endpoint")


class DraftActionView(APIView):
    @extend_schema(
        request=s.ActionIn,
        responses={
            201: s.ActionOut,
            200: OpenApiResponse(s.ActionOut, description="Already recorded: the first action."),
            409: OpenApiResponse(description="The conversation is closed: nothing was sent."),
        },
        summary="Record what an agent did with a draft (external consoles)",
        description="Stores the reply as an outbound message and the agent action with its "
        "handle time. `use` sends the draft as is; an `edit` that changes nothing counts as "
        "`use`; drafts held out or without text take `none`. Times are checked: `shown_at` not "
        "before the message arrived, neither time in the future, `acted_at` ≥ `shown_at`; a "
        "handle time above ACTION_MAX_HANDLE_SECONDS is stored but left out of ENCS. A closed "
        "conversation takes no reply (409).",
    )
    def post(self, request: Request, pk: int) -> Response:
        team = request_team(request)
        draft = (
            drafting_selectors.drafts_for_team(team_id=team.pk)
            .select_related("message__conversation")
            .filter(pk=pk)
            .first()
        )
        if draft is None:
            raise not_found()
        payload = s.ActionIn(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        agent = (
            get_user_model()
            .objects.filter(username=data["agent"], agent_profile__team=team, is_active=True)
            .first()
        )
        if agent is None:
            raise serializers.ValidationError(
                {"agent": ["No active agent of this team has that username."]}
            )
        text = data.get("final_text") or (
            draft.text if data["kind"] == AgentAction.Kind.USE else ""
        )
        if not text:
            raise serializers.ValidationError(
                {"final_text": ["This field is required for this kind."]}
            )
        try:
            result = services.reply_send(
                conversation=draft.message.conversation,
                agent=agent,
                text=text,
                inbound_message=draft.message,
                draft=draft,
                kind=data["kind"],
                shown_at=data.get("shown_at"),
                acted_at=data.get("acted_at") or timezone.now(),
            )
        except ActionRejected as exc:
            raise serializers.ValidationError({exc.field: [str(exc)]}) from exc
        except services.ConversationClosed as exc:
            raise ConversationClosedError(str(exc)) from exc
        assert result.action is not None
        return Response(
            s.ActionOut(result.action).data,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )
