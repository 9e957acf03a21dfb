from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "too_large"


class _Bounded:
    """Reads at most `limit + 1` bytes so a body without Content-Length is bounded too."""

    def __init__(self, stream: IO[bytes], limit: int):
        self.stream = stream
        self.limit = limit

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(self.limit + 1)
        if len(data) > self.limit:
            raise RequestTooLarge(f"Request body exceeds {self.limit} bytes.")
        return data


class BoundedJSONParser(JSONParser):
    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        if length and length.isdigit() and int(length) > limit:
            raise RequestTooLarge(f"Request body exceeds {limit} bytes.")
        return super().parse(_Bounded(stream, limit), media_type, parser_context)  # type: ignore[arg-type]
