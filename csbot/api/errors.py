from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from csbot.api.parsers import RequestTooLarge


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, with every error body an object (field errors or `detail`)."""
    if isinstance(exc, RequestDataTooBig):
        # DRF reads `request.body` (Django's own size check) before a JSON parser sees the
        # stream, so an oversized body surfaces here rather than in BoundedJSONParser: 413.
        exc = RequestTooLarge()
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, list):
        response.data = {"non_field_errors": response.data}
    return response
