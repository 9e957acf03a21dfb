"""REST API v1: ingest for channels, reads for integrations, actions for external consoles."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, OuterRef, Q, QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.exceptions import APIException
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from csbot import services
from csbot.api import serializers as s
from csbot.api.auth import HasTeam, not_found, request_channel, request_team
from csbot.models import AgentProfile, ApiToken, Conversation, Message, Team
from csbot.security import IngestRateThrottle
from drafting import knowledge
from drafting import selectors as drafting_selectors
from drafting.models import AgentAction, Draft, KnowledgeArticle, Macro
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

    def get_object(self) -> Draft:
        # A withheld draft is listed with its status and cost, never its text.
        return drafting_selectors.draft_as_shown(super().get_object())


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
        "`use`; drafts held out, withheld or without text take `none`. Times are checked: "
        "`shown_at` not before the message arrived, neither time in the future, `acted_at` ≥ "
        "`shown_at`; a handle time above ACTION_MAX_HANDLE_SECONDS is stored but left out of "
        "ENCS. A closed conversation takes no reply (409).",
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
        # A withheld draft has no text to use: the agent wrote the reply (kind `none`).
        draft = drafting_selectors.draft_as_shown(draft)
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
        # A draft used as is is sent as the agent sees it: signed with their name.
        text = data.get("final_text") or (
            drafting_selectors.draft_text_for_agent(
                text=draft.text, agent_name=drafting_selectors.agent_display_name(agent)
            )
            if data["kind"] == AgentAction.Kind.USE
            else ""
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


# --- Knowledge: a help center keeps the team's articles and macros in sync ---------------------


class CanEditKnowledge(permissions.BasePermission):
    """Reads for anyone of the team; writes for integrations (a channel token) and the team's
    managers and admins, not for every agent."""

    message = "Changing the knowledge base needs a channel token or a manager's login."

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS or isinstance(request.auth, ApiToken):
            return True
        profile = getattr(request.user, "agent_profile", None)
        return profile is not None and profile.role in (
            AgentProfile.Role.MANAGER,
            AgentProfile.Role.ADMIN,
        )


class KnowledgePagination(CursorPagination):
    ordering = ("external_id",)  # unique within a team
    page_size_query_param = "page_size"
    max_page_size = 200


def _field_errors(exc: knowledge.KnowledgeInvalid) -> serializers.ValidationError:
    # The service's field for the body's format is the API's `format`.
    return serializers.ValidationError(
        {
            ("format" if name == "body_format" else name): messages
            for name, messages in exc.errors.items()
        }
    )


def _articles(team_id: int) -> QuerySet[KnowledgeArticle]:
    return KnowledgeArticle.objects.filter(team_id=team_id).annotate(
        chunk_count=Count("chunks"),
        embedded_count=Count("chunks", filter=Q(chunks__embedding__isnull=False)),
    )


class KnowledgeArticleListView(generics.ListAPIView[KnowledgeArticle]):
    serializer_class = s.ArticleOut
    pagination_class = KnowledgePagination

    def get_queryset(self) -> QuerySet[KnowledgeArticle]:
        return _articles(request_team(self.request).pk)


EXTERNAL_ID = OpenApiParameter(
    "external_id",
    str,
    OpenApiParameter.PATH,
    description="The article's or macro's id in the help center (at most 200 characters; "
    "slashes allowed).",
)


@extend_schema(parameters=[EXTERNAL_ID])
class KnowledgeArticleDetailView(APIView):
    permission_classes = [HasTeam, CanEditKnowledge]

    @extend_schema(responses={200: s.ArticleOut}, summary="Read one knowledge article")
    def get(self, request: Request, external_id: str) -> Response:
        article = _articles(request_team(request).pk).filter(external_id=external_id).first()
        if article is None:
            raise not_found()
        return Response(s.ArticleOut(article).data)

    @extend_schema(
        request=s.ArticleIn,
        responses={
            201: s.ArticleOut,
            200: OpenApiResponse(s.ArticleOut, description="Updated, or already as sent."),
        },
        summary="Create or update a knowledge article",
        description="Idempotent: the same content changes nothing (no new version, no "
        "re-indexing). Changed content bumps `version`, is found by text search at once and "
        "by meaning once its changed passages are embedded (in the background; "
        "`chunks_embedded`). `published: false` takes the article out of drafts at once.",
    )
    def put(self, request: Request, external_id: str) -> Response:
        team = request_team(request)
        payload = s.ArticleIn(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            result = knowledge.article_upsert(
                team=team,
                data=knowledge.ArticleInput(
                    external_id=external_id,
                    title=data["title"],
                    body=data["body"],
                    body_format=data["format"],
                    tags=tuple(data["tags"]),
                    language=data["language"],
                    source_url=data["source_url"],
                    published=data["published"],
                ),
            )
        except knowledge.KnowledgeInvalid as exc:
            raise _field_errors(exc) from exc
        article = _articles(team.pk).get(pk=result.article.pk)
        created = result.outcome == knowledge.Outcome.CREATED
        return Response(
            s.ArticleOut(article).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(responses={204: None}, summary="Delete a knowledge article")
    def delete(self, request: Request, external_id: str) -> Response:
        if not knowledge.article_delete(team=request_team(request), external_id=external_id):
            raise not_found()
        return Response(status=status.HTTP_204_NO_CONTENT)


class KnowledgeMacroListView(generics.ListAPIView[Macro]):
    serializer_class = s.MacroOut
    pagination_class = KnowledgePagination

    def get_queryset(self) -> QuerySet[Macro]:
        return Macro.objects.filter(team=request_team(self.request)).select_related("intent")


@extend_schema(parameters=[EXTERNAL_ID])
class KnowledgeMacroDetailView(APIView):
    permission_classes = [HasTeam, CanEditKnowledge]

    def _macro(self, team: Team, external_id: str) -> Macro:
        macro = (
            Macro.objects.filter(team=team, external_id=external_id)
            .select_related("intent")
            .first()
        )
        if macro is None:
            raise not_found()
        return macro

    @extend_schema(responses={200: s.MacroOut}, summary="Read one macro")
    def get(self, request: Request, external_id: str) -> Response:
        return Response(s.MacroOut(self._macro(request_team(request), external_id)).data)

    @extend_schema(
        request=s.MacroIn,
        responses={
            201: s.MacroOut,
            200: OpenApiResponse(s.MacroOut, description="Updated, or already as sent."),
        },
        summary="Create or update a macro",
        description="Idempotent on the same content. `intent` names one of the team's intents "
        "(or is empty).",
    )
    def put(self, request: Request, external_id: str) -> Response:
        team = request_team(request)
        payload = s.MacroIn(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            result = knowledge.macro_upsert(
                team=team,
                data=knowledge.MacroInput(
                    external_id=external_id,
                    title=data["title"],
                    body=data["body"],
                    tags=tuple(data["tags"]),
                    intent=data["intent"],
                    language=data["language"],
                    active=data["active"],
                ),
            )
        except knowledge.KnowledgeInvalid as exc:
            raise _field_errors(exc) from exc
        created = result.outcome == knowledge.Outcome.CREATED
        return Response(
            s.MacroOut(self._macro(team, external_id)).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(responses={204: None}, summary="Delete a macro")
    def delete(self, request: Request, external_id: str) -> Response:
        if not knowledge.macro_delete(team=request_team(request), external_id=external_id):
            raise not_found()
        return Response(status=status.HTTP_204_NO_CONTENT)
