"""Typed readers for settings from the environment.

Every reader fails loudly with ImproperlyConfigured: a typo in an env var must stop the
process at start-up, not surface as odd behaviour at 3 a.m.
"""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str:
    """A string setting; `NAME_FILE` (a path) is read when set, for secrets mounted as files."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_path!r} cannot be read: {exc}") from exc
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ImproperlyConfigured(f"The environment variable {name} is required.")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false).")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_float(name: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from exc
    if not minimum <= value <= maximum:
        raise ImproperlyConfigured(f"{name}={value} must be between {minimum} and {maximum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    """A URL whose scheme must be one of `schemes`; an empty default means "not set"."""
    value = env_str(name, default)
    if not value and default:
        # Set but empty: refuse rather than hand "" on (Celery would fall back to amqp://).
        raise ImproperlyConfigured(f"{name} is set but empty; unset it to use {default!r}.")
    if value and value.split("://", 1)[0] not in schemes:
        raise ImproperlyConfigured(
            f"{name}={value!r} must start with one of: {', '.join(s + '://' for s in schemes)}"
        )
    if value and "://" not in value:
        raise ImproperlyConfigured(f"{name}={value!r} is not a URL.")
    if value and value.split("://", 1)[0] in ("http", "https") and not urlsplit(value).hostname:
        raise ImproperlyConfigured(f"{name}={value!r} has no host.")
    return value


def env_choice(name: str, default: str, *, choices: Iterable[str]) -> str:
    value = env_str(name, default)
    allowed = list(choices)
    if value not in allowed:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of: {', '.join(allowed)}.")
    return value


def env_timezone(name: str, default: str) -> str:
    value = env_str(name, default)
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ImproperlyConfigured(f"{name}={value!r} is not a known time zone.") from exc
    return value
