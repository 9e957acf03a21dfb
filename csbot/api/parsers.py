from __future__ import annotations

import re
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser

# The API's request bodies are flat objects; the cap leaves room for integrations that send
# more than we read. Python's JSON parser recurses per level and gives up with RecursionError
# (a 500) around a thousand levels, which a 2 KB body of `[` reaches: depth is checked first.
MAX_JSON_DEPTH = 32

# What the depth count looks at: brackets, and the quotes and backslashes that say whether a
# bracket is inside a string ("[[[" in a message's text is text, not nesting).
_SIGNIFICANT = re.compile(rb'[\[\]{}"\\]')


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "too_large"


def json_depth(body: bytes) -> int:
    """How deep the arrays and objects of `body` nest (malformed JSON: a best guess, which the
    parser refuses anyway). One pass over the significant bytes only, so a 64 KB body costs
    little and no input makes it slower than linear."""
    depth = deepest = 0
    in_string = False
    skip = -1  # the byte after a backslash in a string is escaped, whatever it is
    for match in _SIGNIFICANT.finditer(body):
        at, char = match.start(), match.group()
        if at == skip:
            continue
        if in_string:
            if char == b"\\":
                skip = at + 1
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in b"]}":
            depth -= 1
    return deepest


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


class _Buffered:
    """The body already read, handed to the JSON parser as the stream it expects."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, size: int = -1) -> bytes:
        data, self.data = self.data, b""
        return data


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser with the body's size (DATA_UPLOAD_MAX_MEMORY_SIZE, 413) and nesting
    depth (MAX_JSON_DEPTH, 400) bounded before it parses."""

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
        body = _Bounded(stream, limit).read()
        # Counting the openings first spares the scan for nearly every body.
        opened = body.count(b"[") + body.count(b"{")
        if opened > MAX_JSON_DEPTH and json_depth(body) > MAX_JSON_DEPTH:
            raise exceptions.ParseError(
                f"JSON parse error - arrays and objects nest deeper than {MAX_JSON_DEPTH} levels."
            )
        return super().parse(_Buffered(body), media_type, parser_context)  # type: ignore[arg-type]
