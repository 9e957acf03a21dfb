"""API authentication: one token per channel/integration, or an agent's session."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import Http404
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from redis.exceptions import RedisError
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from csbot.models import ApiToken, Channel, Team

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntegrationPrincipal:
    """`request.user` for a token-authenticated integration (it is not a person)."""

    token: ApiToken
    is_authenticated: bool = True
    is_staff: bool = False

    def get_username(self) -> str:
        return f"integration:{self.token.name}"


@dataclass(frozen=True)
class _Cached:
    token: ApiToken
    generation: str
    expires: float


# Ingest is the hot path and every request looks its token up: positive look-ups are kept
# per process for API_TOKEN_CACHE_SECONDS, each stamped with the revocation generation it was
# read under. The generation is one value in the shared cache (CACHE_URL) that every
# revocation replaces, so a revoked token is refused by every process on its next request;
# checking it is one cache GET, cheaper than the token's query with its joins.
_token_cache: dict[str, _Cached] = {}
_TOKEN_CACHE_MAX = 1024
_GENERATION_KEY = "api-token-generation"


def _generation() -> str | None:
    """The revocation generation, or None when the cache cannot tell (then nothing cached is
    trusted). A generation lost from the cache (evicted, Redis restarted) is replaced by a
    new one, which retires what processes cached under the old."""
    try:
        value = cache.get(_GENERATION_KEY)
        if value is None:
            cache.add(_GENERATION_KEY, secrets.token_hex(8), timeout=None)
            value = cache.get(_GENERATION_KEY)
    except (RedisError, OSError):
        return None
    return None if value is None else str(value)


def _active_token(key_hash: str) -> ApiToken | None:
    ttl = settings.API_TOKEN_CACHE_SECONDS
    # Read before the database: a revocation committed after this read replaces the
    # generation, so what is cached below is not trusted past it.
    generation = _generation() if ttl > 0 else None
    now = time.monotonic()
    cached = _token_cache.get(key_hash)
    if (
        cached is not None
        and generation is not None
        and cached.generation == generation
        and cached.expires > now
    ):
        return cached.token
    token = (
        ApiToken.objects.active().select_related("channel__team").filter(key_hash=key_hash).first()
    )
    if token is not None and generation is not None:
        if len(_token_cache) >= _TOKEN_CACHE_MAX:
            _token_cache.clear()
        _token_cache[key_hash] = _Cached(token=token, generation=generation, expires=now + ttl)
    return token


def forget_token(key_hash: str) -> None:
    """With a revocation: this process forgets the token at once, every other process once
    the revocation is committed (a new generation makes them ask the database again).
    Announced after the commit: a process that re-read the token before it would otherwise
    cache it as active under the new generation."""
    _token_cache.pop(key_hash, None)
    transaction.on_commit(_new_generation)


def _new_generation() -> None:
    try:
        cache.set(_GENERATION_KEY, secrets.token_hex(8), timeout=None)
    except (RedisError, OSError):
        # Other processes cannot read the old generation either while the cache is down, so
        # they ask the database; only a cache that comes back with the old value lets them
        # trust their copies again, for at most API_TOKEN_CACHE_SECONDS.
        logger.warning("token revocation not announced: the cache is unreachable")


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
        token = _active_token(ApiToken.hash_key(key))
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
