"""Rate limits on login and ingest, the shared cache they need, and request bodies sent
without a length.

Counters are django-ratelimit's fixed windows in the default cache (one `INCR` per request),
so every web process must share that cache in production (CACHE_URL): a web server with
DEBUG off refuses to start without one (`require_shared_cache`). When the cache itself is
down, requests are let through with a warning: the limits are a guard against abuse, and
locking every agent out of the console, or refusing a channel's messages, because Redis is
restarting would be the larger harm.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from django.conf import settings
from django.contrib.auth.views import LoginView
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.debug import SafeExceptionReporterFilter
from django_ratelimit.core import get_usage
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from csbot.models import ApiToken

logger = logging.getLogger(__name__)

Key = Callable[[str, HttpRequest], str]


def limit_hit(
    request: HttpRequest, *, group: str, key: str | Key, rate: str, count: bool = True
) -> int | None:
    """Counts this request against `rate` for `key` in `group`; the seconds until the window
    resets when the limit is exceeded, else None (also when the cache is unreachable)."""
    try:
        usage = get_usage(request, group=group, key=key, rate=rate, increment=count)
    except (RedisError, OSError):
        logger.warning("rate limit %s not checked: the cache is unreachable", group)
        return None
    if usage is None or not usage["should_limit"]:
        return None
    if usage["limit"] == 0:  # the cache answered nothing: not a real hit
        logger.warning("rate limit %s not checked: the cache returned no count", group)
        return None
    return max(1, int(usage["time_left"]))


def client_ip(request: HttpRequest) -> str:
    """The client's address for the per-address login limit (django-ratelimit's
    RATELIMIT_IP_META_KEY). Behind a proxy, CSBOT_CLIENT_IP_HEADER names the request.META key
    the proxy fills (HTTP_X_REAL_IP, HTTP_X_FORWARDED_FOR): its last address is the one our
    own proxy saw, earlier ones the client could have written. Missing or malformed: the
    connection's address, never an error."""
    header = settings.CSBOT_CLIENT_IP_HEADER
    remote = str(request.META.get("REMOTE_ADDR") or "0.0.0.0")  # noqa: S104 - not a bind
    if not header:
        return remote
    candidate = str(request.META.get(header, "")).split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


def _username(group: str, request: HttpRequest) -> str:
    # Case-folded so "Alice" and "alice" share one counter.
    return str(request.POST.get("username", "")).strip().casefold()


def login_wait(request: HttpRequest) -> int | None:
    """Counts a login post against CSBOT_LOGIN_RATE per username and CSBOT_LOGIN_IP_RATE per
    client address (the console's and the admin's login share the counters); the seconds to
    wait when either is exceeded. Both counters move on every post, so guessing one username
    from many addresses and many usernames from one address are both slowed down."""
    waits = [
        limit_hit(request, group="login-ip", key="ip", rate=settings.CSBOT_LOGIN_IP_RATE),
        limit_hit(request, group="login-user", key=_username, rate=settings.CSBOT_LOGIN_RATE),
    ]
    return max((w for w in waits if w is not None), default=None)


def too_many_logins(wait: int) -> HttpResponse:
    """The admin's answer to a login post beyond the limits."""
    response = HttpResponse(
        "Too many login attempts. Wait a minute and try again.",
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(wait)
    return response


class RateLimitedLoginView(LoginView):
    """Django's login view; form posts beyond the login limits (`login_wait`) get 429 with
    Retry-After, whatever the password."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        wait = login_wait(request)
        if wait is not None:
            response = render(
                request,
                "registration/login.html",
                {"form": self.get_form(), "too_many": True, "next": self.get_redirect_url()},
                status=429,
            )
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)


def _token_key(group: str, request: HttpRequest) -> str:
    auth = getattr(request, "auth", None)
    return f"token:{auth.pk}" if isinstance(auth, ApiToken) else "session"


class IngestRateThrottle(BaseThrottle):
    """CSBOT_INGEST_RATE per channel token on message ingest. DRF answers a throttled request
    with 429, a Retry-After header and a JSON `detail`."""

    def __init__(self) -> None:
        self._wait: int | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        # DRF's request (it carries the token) stands in for Django's: it proxies the rest.
        self._wait = limit_hit(
            request,
            group="ingest",
            key=_token_key,
            rate=settings.CSBOT_INGEST_RATE,
        )
        return self._wait is None

    def wait(self) -> float | None:
        return None if self._wait is None else float(self._wait)


class SecretsReporterFilter(SafeExceptionReporterFilter):
    """Django's error page (DEBUG) and error e-mails, with more hidden than Django hides by
    default: the Authorization header (API tokens, provider keys), service URLs (a password
    may sit in DATABASE_URL, CACHE_URL, CELERY_BROKER_URL) and cache locations."""

    hidden_settings = re.compile(
        r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|AUTHORIZATION|_URL$|LOCATION",
        flags=re.IGNORECASE,
    )


@checks.register(checks.Tags.caches, deploy=True)
def check_shared_cache(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """Rate limits count in the cache: a per-process cache multiplies them by the processes."""
    backend = str(settings.CACHES["default"]["BACKEND"])
    if backend.endswith(("LocMemCache", "DummyCache")):
        return [
            checks.Warning(
                "The default cache is not shared between processes, so login and ingest rate "
                "limits are counted per process.",
                hint="Set CACHE_URL=redis://host:6379/2 (a Redis database of its own).",
                id="csbot.W001",
            )
        ]
    return []


def require_shared_cache() -> None:
    """A web server with DEBUG off starts only with CACHE_URL set: behind several processes a
    per-process cache lets each count the login limits on its own (with three gunicorn
    workers, 21 of 30 guesses got through), and API token revocations would not reach the
    other processes. `CACHE_URL=locmem://` says a per-process cache is meant (tests, one
    process); `manage.py check --deploy` still warns about it (csbot.W001)."""
    if settings.DEBUG or settings.CACHE_URL:
        return
    raise ImproperlyConfigured(
        "CACHE_URL is required when DJANGO_DEBUG is off: login and ingest rate limits and API "
        "token revocations live in the cache every web process must share "
        "(CACHE_URL=redis://host:6379/2). Set CACHE_URL=locmem:// to run on a per-process "
        "cache on purpose (tests, a single process)."
    )


def _chunked(environ: WSGIEnvironment) -> bool:
    encoding = str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
    return "chunked" in encoding and not environ.get("CONTENT_LENGTH")


def chunked_bodies(app: WSGIApplication) -> WSGIApplication:
    """Request bodies sent chunked (no Content-Length) reach Django with a length.

    Django reads a body up to CONTENT_LENGTH only, so a chunked one was read as empty and a
    valid message refused with "This field is required". A server that decodes chunked
    bodies and says so (`wsgi.input_terminated`, as gunicorn does) has the body buffered
    here, at most DATA_UPLOAD_MAX_MEMORY_SIZE + 1 bytes, and CONTENT_LENGTH set to what was
    read: a longer body is then refused exactly as one sent with its length (413 on the API).
    Any other server cannot tell where such a body ends: 411, with a message that says why.
    """

    def wrapped(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if _chunked(environ):
            if not environ.get("wsgi.input_terminated"):
                body = json.dumps(
                    {"detail": "Send the request body with a Content-Length header."}
                ).encode()
                start_response(
                    "411 Length Required",
                    [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
                )
                return [body]
            data = environ["wsgi.input"].read(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
            environ["wsgi.input"] = io.BytesIO(data)
            environ["CONTENT_LENGTH"] = str(len(data))
        return app(environ, start_response)

    return wrapped
