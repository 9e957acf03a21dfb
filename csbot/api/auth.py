"""API authentication: one token per channel/integration, or an agent's session."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.http import Http404
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from csbot.models import ApiToken, Channel, Team
from csbot.tokens import active_token

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntegrationPrincipal:
    """`request.user` for a token-authenticated integration (it is not a person)."""

    token: ApiToken
    is_authenticated: bool = True
    is_staff: bool = False

    def get_username(self) -> str:
        return f"integration:{self.token.name}"


class IntegrationTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[IntegrationPrincipal, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: use 'Token <key>'."
            )
        try:
            key = header[1].decode()
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("Invalid token.") from exc
        token = active_token(ApiToken.hash_key(key))
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return IntegrationPrincipal(token=token), token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


def request_team(request: Request) -> Team:
    """The team whose data this request may see: the token's channel's team, or the agent's."""
    if isinstance(request.auth, ApiToken):
        return request.auth.channel.team
    profile = getattr(request.user, "agent_profile", None)
    if profile is None:
        raise exceptions.PermissionDenied("This user is not an agent of any team.")
    return profile.team


def request_channel(request: Request) -> Channel:
    """Only integrations post inbound messages: they are the channel."""
    if not isinstance(request.auth, ApiToken):
        raise exceptions.PermissionDenied("Posting customer messages needs a channel token.")
    return request.auth.channel


class HasTeam(permissions.BasePermission):
    message = "Authenticate with a channel token or as an agent."

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, ApiToken):
            return True
        user = request.user
        return bool(user and user.is_authenticated and hasattr(user, "agent_profile"))


def not_found() -> Http404:
    # Another team's objects are indistinguishable from missing ones.
    return Http404("Not found.")


class IntegrationTokenScheme(OpenApiAuthenticationExtension):
    """Documents the channel token in the OpenAPI schema."""

    target_class = IntegrationTokenAuthentication
    name = "ChannelToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>`: one key per channel/integration, created in the admin.",
        }
