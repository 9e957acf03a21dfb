"""A draft while it is written: the worker publishes its text so far, the console listens.

Best effort and never the truth: the draft row is. The worker streams the first tier it asks
and publishes what the agent may see of it (drafting.engine.cascade decides that) through
PostgreSQL's LISTEN/NOTIFY, which `make run` (no Redis) and production share; after the
draft is stored it rings once more ("settled"), and the web side reads the row.

Events on the channel `draft_stream_<id>`, JSON payloads under PostgreSQL's 8000-byte limit:
- `text`: the visible text so far (`at` > 0: only its tail from that character on, when the
  whole would not fit), at most one per STREAM_INTERVAL seconds, the newest always sent last;
- `improving`: that text was not good enough (or its tier failed): a stronger tier is asked;
- `settled`: the worker is done with this draft for now (ready, failed, or back in the queue).

`draft_stream_events` is the web side: the events one conversation page needs, starting with
the row's state, ending when the draft is final or after DRAFT_DEADLINE_SECONDS.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection
from psycopg import sql

from drafting.models import Draft

logger = logging.getLogger(__name__)

# Publishing every token would be one NOTIFY per token per draft; ten a second reads as live.
STREAM_INTERVAL = 0.1
# PostgreSQL refuses payloads of 8000 bytes or more; keep room for the JSON around the text.
_PAYLOAD_LIMIT = 7900
# How often the web side looks at the row when no event came (a worker that died, a missed
# event), and how often it sends a comment so proxies (nginx: 60 s) keep the stream open.
_ROW_CHECK_SECONDS = 2.0
_KEEPALIVE_SECONDS = 15.0

PENDING = (Draft.Status.QUEUED, Draft.Status.GENERATING)


def _channel(draft_id: int) -> str:
    return f"draft_stream_{int(draft_id)}"


def _payload(event: str, seq: int, text: str | None) -> str:
    """The JSON payload; a text too long for NOTIFY is cut from the front (`at` says where)."""
    body: dict[str, Any] = {"e": event, "seq": seq}
    if text is None:
        return json.dumps(body)
    at = 0
    while True:
        encoded = json.dumps({**body, "at": at, "text": text[at:]}, ensure_ascii=False)
        excess = len(encoded.encode()) - _PAYLOAD_LIMIT
        if excess <= 0:
            return encoded
        at += max(1, excess // 6)  # a character is at most 6 bytes in JSON (\uXXXX)


def draft_stream_publish(
    *, draft_id: int, event: str, seq: int = 0, text: str | None = None
) -> None:
    """Publish one event of draft `draft_id` (see the module docstring). A database error is
    logged and swallowed: the stream is a view, the draft must not fail for it. Inside a
    transaction PostgreSQL delivers the event at commit."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_notify(%s, %s)", [_channel(draft_id), _payload(event, seq, text)]
            )
    except DatabaseError:
        logger.warning("draft %s: could not publish its %s event", draft_id, event, exc_info=True)


@dataclass
class DraftStreamWriter:
    """The worker's side for one draft: what drafting.engine.cascade calls while the first
    tier writes (`text`, `improving`), throttled to one `text` event per STREAM_INTERVAL."""

    draft_id: int
    interval: float = STREAM_INTERVAL
    _seq: int = 0
    _sent_at: float = field(default=float("-inf"))
    _pending: str | None = None
    _last: str = ""

    def text(self, so_far: str) -> None:
        if so_far == self._last:
            return  # a chunk that only added text held back (a number being written)
        self._pending = so_far
        if time.monotonic() - self._sent_at >= self.interval:
            self._flush()

    def improving(self) -> None:
        self._flush()
        self._publish("improving")

    def settled(self) -> None:
        self._publish("settled")

    def _flush(self) -> None:
        if self._pending is None:
            return
        text, self._pending = self._pending, None
        self._last = text
        self._sent_at = time.monotonic()
        self._publish("text", text)

    def _publish(self, event: str, text: str | None = None) -> None:
        self._seq += 1
        draft_stream_publish(draft_id=self.draft_id, event=event, seq=self._seq, text=text)


@dataclass(frozen=True)
class StreamEvent:
    """One event for the browser: `name` (state, text, improving, final, timeout) and its data."""

    name: str
    data: dict[str, Any]


def _listener() -> psycopg.Connection[Any]:
    """A connection of its own (autocommit): LISTEN holds it for the whole stream, and
    Django's connection of this thread must stay free for the request's other queries."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, autocommit=True)


def _status(draft_id: int) -> str | None:
    return Draft.objects.filter(pk=draft_id).values_list("status", flat=True).first()


def draft_stream_events(
    *, draft_id: int, timeout: float | None = None, keepalive: float = _KEEPALIVE_SECONDS
) -> Generator[StreamEvent | None, None, None]:
    """The events of draft `draft_id` for one subscriber; None: nothing new (a keep-alive).

    Steps: LISTEN first, then read the row, so nothing published in between is lost; send the
    row's state (`state`); a final draft ends at once (`final`). Then pass on `text` and
    `improving` events as they come; on `settled`, and every few seconds without events, read
    the row again: final → `final` and the end; back in the queue → `state` (the browser
    clears its partial text). After `timeout` (default DRAFT_DEADLINE_SECONDS) → `timeout`:
    the browser falls back to polling the panel."""
    deadline = time.monotonic() + (timeout or settings.DRAFT_DEADLINE_SECONDS)
    with _listener() as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(_channel(draft_id))))
        status = _status(draft_id)
        yield StreamEvent("state", {"status": status})
        if status not in PENDING:
            yield StreamEvent("final", {"status": status})
            return
        checked = idle_since = time.monotonic()
        while (now := time.monotonic()) < deadline:
            wait = min(deadline - now, _ROW_CHECK_SECONDS, max(0.0, idle_since + keepalive - now))
            settled = False
            for notify in listener.notifies(timeout=wait, stop_after=1):
                event = json.loads(notify.payload)
                idle_since = time.monotonic()
                if event["e"] == "settled":
                    settled = True
                elif event["e"] == "text":
                    yield StreamEvent("text", {"text": event["text"], "at": event["at"]})
                elif event["e"] == "improving":
                    yield StreamEvent("improving", {})
            now = time.monotonic()
            if settled or now - checked >= _ROW_CHECK_SECONDS:
                checked = now
                new = _status(draft_id)
                if new not in PENDING:
                    yield StreamEvent("final", {"status": new})
                    return
                if new != status or settled:
                    yield StreamEvent("state", {"status": new})
                status = new
            if now - idle_since >= keepalive:
                idle_since = now
                yield None
        yield StreamEvent("timeout", {})
