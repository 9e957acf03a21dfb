"""Builders of the cross-cutting tests (tests/system): the project's routes as the URL
configuration lists them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver


def all_routes() -> Iterator[tuple[str, Any]]:
    """(route pattern, view) for every URL pattern, includes flattened."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            else:
                assert isinstance(pattern, URLPattern)
                yield route, pattern.callback

    yield from walk(get_resolver().url_patterns, "")
