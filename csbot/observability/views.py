"""The probe and metrics pages. Served by ProbeMiddleware (see there for why not urls.py)."""

from __future__ import annotations

import hmac
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse

from csbot.observability import health, metrics


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. Asks nothing else (see csbot.observability.health)."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> HttpResponse:
    ready, report = health.readiness()
    response = JsonResponse(report, status=200 if ready else 503)
    response["Cache-Control"] = "no-store"
    return response


@lru_cache(maxsize=1)
def _allowed_networks(raw: tuple[str, ...]) -> list[IPv4Network | IPv6Network]:
    try:
        return [ip_network(item, strict=False) for item in raw]
    except ValueError as exc:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_IPS: {exc}") from exc


def metrics_allowed(request: HttpRequest) -> bool:
    """A scraper at an allowed address (REMOTE_ADDR: the peer, not a forwarded header a
    client could write), or one presenting METRICS_TOKEN as a bearer token."""
    token: str = settings.METRICS_TOKEN
    if token:
        scheme, _, presented = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            return True
    try:
        peer = ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(peer in net for net in _allowed_networks(tuple(settings.METRICS_ALLOWED_IPS)))


def metrics_page(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        return HttpResponse(
            "Metrics are served to METRICS_ALLOWED_IPS or with the METRICS_TOKEN bearer token.\n",
            status=403,
            content_type="text/plain",
        )
    body, content_type = metrics.exposition(request.META.get("HTTP_ACCEPT", ""))
    return HttpResponse(body, content_type=content_type)
