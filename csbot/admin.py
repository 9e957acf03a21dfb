from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.cache import patch_cache_control

from csbot import services
from csbot.admin_autocomplete import ValidatedAutocomplete
from csbot.admin_records import RecordAdmin
from csbot.models import AgentProfile, ApiToken, Channel, Conversation, Message, Team


class ChannelInline(admin.TabularInline[Channel, Team]):
    model = Channel
    extra = 0


class AgentProfileInline(ValidatedAutocomplete, admin.TabularInline[AgentProfile, Team]):
    model = AgentProfile
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin[Team]):
    list_display = ["name", "created_at"]
    search_fields = ["name"]
    inlines = [ChannelInline, AgentProfileInline]


@admin.register(AgentProfile)
class AgentProfileAdmin(ValidatedAutocomplete, admin.ModelAdmin[AgentProfile]):
    list_display = ["user", "team", "role"]
    list_filter = ["team", "role"]
    search_fields = ["user__username"]
    autocomplete_fields = ["user"]


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin[Channel]):
    list_display = ["name", "team", "created_at"]
    list_filter = ["team"]
    search_fields = ["name"]


# The key of a token created in this request, shown by `response_add` in the page that
# answers the creating request itself: never stored, never in a cookie or a redirect.
_new_keys: WeakKeyDictionary[HttpRequest, str] = WeakKeyDictionary()


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
    list_display = ["name", "channel", "prefix", "created_at", "revoked_at"]
    list_filter = ["channel__team"]
    readonly_fields = ["prefix", "created_at", "revoked_at"]
    fields = ["channel", "name", "prefix", "created_at", "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, key = services.api_token_create(channel=obj.channel, name=obj.name)
        obj.pk = token.pk
        # The key is shown once and never stored: only its hash is.
        _new_keys[request] = key

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        """The new key, once, in the answer to the form that created it (Django's admin
        would redirect, and a message would carry the key in a cookie)."""
        key = _new_keys.pop(request, None)
        if key is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "token": obj,
            "key": key,
            "title": "New API token",
        }
        response = TemplateResponse(request, "admin/csbot/apitoken/created.html", context)
        patch_cache_control(response, no_store=True)  # kept by no browser cache or proxy
        return response

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        tokens = list(queryset.filter(revoked_at__isnull=True))
        for token in tokens:
            services.api_token_revoke(token=token)
        messages.success(request, f"{len(tokens)} token(s) revoked.")


_MESSAGE_FIELDS: tuple[str, ...] = (
    "created_at",
    "direction",
    "author",
    "text",
    "channel_message_id",
)


class MessageInline(admin.TabularInline[Message, Conversation]):
    model = Message
    extra = 0
    fields = readonly_fields = _MESSAGE_FIELDS
    can_delete = False
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(RecordAdmin, admin.ModelAdmin[Conversation]):
    list_display = [
        "external_id",
        "team",
        "channel",
        "customer_ref",
        "status",
        "updated_at",
        "awaiting_reply_since",
    ]
    list_filter = ["team", "status", "channel"]
    search_fields = ["external_id", "customer_ref"]
    list_select_related = ["team", "channel"]
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(RecordAdmin, admin.ModelAdmin[Message]):
    list_display = ["id", "conversation", "direction", "author", "created_at"]
    list_filter = ["direction", "channel__team"]
    search_fields = ["text", "channel_message_id"]
    list_select_related = ["conversation__channel"]
    raw_id_fields = ["conversation", "author_user"]
