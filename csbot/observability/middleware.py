"""Request ids, request metrics and the access log; the probe paths.

Both classes go first in MIDDLEWARE (see settings), probes before everything else.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed

from csbot.observability import views
from csbot.observability.context import log_context
from csbot.observability.metrics import http_request_observe

access_log = logging.getLogger("csbot.access")

# A caller's X-Request-ID is kept when it looks like an id (a proxy's UUID, a trace id);
# anything else (too long, spaces, control characters that would forge log lines) is replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": views.healthz,
    "/readyz": views.readyz,
    "/metrics": views.metrics_page,
}


class ProbeMiddleware:
    """Answers /healthz, /readyz and /metrics before the rest of the stack.

    Load balancers, Docker and Prometheus call these by container IP over plain HTTP: host
    validation (ALLOWED_HOSTS) would answer 400 and the HTTPS redirect 301, and neither
    sessions nor CSRF mean anything here. Nor are probes counted or access-logged: a probe
    every second would drown the requests that matter.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = PROBES.get(request.path_info)
        if view is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        return view(request)


def request_id_for(request: HttpRequest) -> str:
    incoming = request.META.get("HTTP_X_REQUEST_ID", "")
    if incoming and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return os.urandom(16).hex()  # a random UUID's worth of bits, without building a UUID


def route_name(request: HttpRequest) -> str:
    """The matched URL pattern's name (bounded: one per route, never per id)."""
    match = request.resolver_match
    if match is not None:
        return match.view_name or match.route or "unnamed"
    if request.path_info.startswith("/" + settings.STATIC_URL.lstrip("/")):
        return "static"
    return "unmatched"


class RequestContextMiddleware:
    """Gives each request an id (the caller's X-Request-ID when sane), puts it on every log
    line written while serving it and on the response, and records the request's route,
    status and duration as metrics and as one access log line."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.log_requests: bool = settings.LOG_REQUESTS

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_for(request)
        request.request_id = request_id  # type: ignore[attr-defined]
        started = time.perf_counter()
        with log_context(request_id=request_id):
            # An exception in a view is already a 500 response here (Django converts it
            # around each middleware), so every request is counted.
            response = self.get_response(request)
            seconds = time.perf_counter() - started
            view = route_name(request)
            method = request.method or "OTHER"
            http_request_observe(
                view=view, method=method, status=response.status_code, seconds=seconds
            )
            if self.log_requests:
                access_log.info(
                    "%s %s %s %.1fms",
                    method,
                    request.path,
                    response.status_code,
                    seconds * 1000,
                    extra={
                        "method": method,
                        "path": request.path,
                        "view": view,
                        "status": response.status_code,
                        "duration_ms": round(seconds * 1000, 2),
                    },
                )
        response["X-Request-ID"] = request_id
        return response
