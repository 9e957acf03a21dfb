"""API token look-ups for the integration API: kept per process for API_TOKEN_CACHE_SECONDS
and retired everywhere at once by a revocation. Here, below the API and the services, so that
revoking a token (csbot.services) and authenticating with one (csbot.api.auth) share it without
the services importing the API layer."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from redis.exceptions import RedisError

from csbot.models import ApiToken

logger = logging.getLogger(__name__)


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


def active_token(key_hash: str) -> ApiToken | None:
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
