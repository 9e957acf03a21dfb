"""Log lines: one JSON object per line (or plain text for a terminal), with the request or
draft ids in force, and no secrets.

Settings build their LOGGING from `logging_config`; the Celery worker applies the same dict
(csbot.celery), so web and worker lines look alike. Redaction runs on the finished line
(message, exception text and extras alike): the last place a secret can be caught.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any
from urllib.parse import urlsplit

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from csbot.observability.context import log_fields

REDACTED = "[REDACTED]"

# Environment variables whose values are secrets by their name (API keys are named by the
# endpoint's api_key_env: OPENAI_API_KEY and the like).
_SECRET_ENV_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_FILE)?$")
# Values too short to be a secret would redact ordinary words ("x" as a dev SECRET_KEY).
_MIN_SECRET_LENGTH = 8
# Secrets by their shape, whatever produced them: `Authorization: Bearer …`, `Token …`,
# `api_key=…`, `password: …`, OpenAI-style `sk-…` keys, `user:password@` in URLs. Each with
# the (lower-case) words a line must contain for it to match: plain substring tests are
# cheap, and a pattern runs only on the rare line that has its words.
_SECRET_PATTERNS = [
    (
        ("bearer", "basic", "token"),
        re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{16,}"),
    ),
    (
        ("authoriz", "key", "token", "secret", "passw"),
        re.compile(
            r"(?i)\b(authorization|api[_-]?key|access[_-]?token|secret|password|passwd|"
            r"x-api-key)(['\"]?\s*[:=]\s*['\"]?)(?!\[REDACTED\]|(?:bearer|basic|token)\s)"
            r"[^\s'\",;&}]+"
        ),
    ),
    (("sk-",), re.compile(r"\b()()sk-[A-Za-z0-9_-]{16,}")),
    (("@",), re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*)(:)[^\s@/]+(?=@)")),
]


def _secret_values() -> list[str]:
    """Values of the environment's secret variables and passwords in its service URLs,
    longest first (so a secret containing another is replaced whole)."""
    values: set[str] = set()
    for name, value in os.environ.items():
        if _SECRET_ENV_NAME.search(name) and not name.endswith("_FILE"):
            values.add(value.strip())
        elif name.endswith("_URL") and "@" in value:
            password = urlsplit(value).password
            if password:
                values.add(password)
    return sorted((v for v in values if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True)


class Redactor:
    """Replaces secrets in finished log lines. The environment's secret values are read
    once, when logging is configured (the process's secrets do not change while it runs)."""

    def __init__(self, values: list[str] | None = None):
        self._values = _secret_values() if values is None else values

    def __call__(self, text: str) -> str:
        # Every request writes an access line: substring tests first, patterns rarely.
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        lowered = text.lower()
        for hints, pattern in _SECRET_PATTERNS:
            if any(hint in lowered for hint in hints):
                text = pattern.sub(rf"\1\2{REDACTED}", text)
        return text


_redact = Redactor(values=[])


def redact(text: str) -> str:
    return _redact(text)


class ContextFilter(logging.Filter):
    """Puts the ids in force (request_id, task_id, draft_id, message_id) on each record:
    JSON lines carry them as fields, plain lines as `key=value` after the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = log_fields()
        for key, value in fields.items():
            setattr(record, key, value)
        record.context = "".join(f" {k}={v}" for k, v in fields.items())
        return True


class CsbotJsonFormatter(JsonFormatter):
    """timestamp, level, logger, message, the context ids and any `extra`, as one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(levelname)s %(name)s %(message)s")
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", True)
        # `request` (Django's request logging): its repr holds the query string; `context`:
        # the plain format's rendering of the ids that are fields here already.
        kwargs.setdefault("reserved_attrs", [*RESERVED_ATTRS, "request", "context"])
        super().__init__(*args, **kwargs)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # The timestamp first, as a reader scans a log.
        return {"timestamp": log_data.pop("timestamp", None), **log_data}

    def format(self, record: logging.LogRecord) -> str:
        return _redact(super().format(record))


class PlainFormatter(logging.Formatter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s%(context)s")
        super().__init__(*args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "context"):  # a handler configured without ContextFilter
            record.context = ""
        return _redact(super().format(record))


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """The LOGGING dict: every logger (Django's request and runserver logs, Celery's, ours)
    goes to stderr through one handler in `log_format` ("json" or "plain")."""
    global _redact
    _redact = Redactor()
    formatter = "csbot.observability.logs.CsbotJsonFormatter"
    if log_format == "plain":
        formatter = "csbot.observability.logs.PlainFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"csbot": {"()": formatter}},
        "filters": {"context": {"()": "csbot.observability.logs.ContextFilter"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "csbot",
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # runserver's own access log would otherwise bypass the formatter.
            "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }
