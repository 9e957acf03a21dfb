"""The draft panel's live stream: server-sent events of a draft while it is written.

`GET /console/c/<pk>/draft/stream` sends the conversation's pending draft as it grows
(drafting.streaming): its state first (a late subscriber is right at once), then its text so
far, "improving" when a stronger tier is asked, and "final" when the row is done, after which
the browser loads the final panel (`draft-panel`: score, escalations, sources). Bounded by
DRAFT_DEADLINE_SECONDS; the browser falls back to polling the panel when a stream fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, StreamingHttpResponse
from django.views.decorators.http import require_GET

from csbot import selectors
from csbot.console.views import agent_team
from drafting.streaming import StreamEvent, draft_stream_events

# How long the browser waits before it reconnects by itself: never, in practice; conversation.js
# closes a stream that ends or fails and polls instead.
_RETRY_MS = 60_000


def _sse(event: StreamEvent | None) -> bytes:
    if event is None:
        return b": keep-alive\n\n"  # a comment: proxies see bytes, the browser ignores it
    return f"event: {event.name}\ndata: {json.dumps(event.data)}\n\n".encode()


def _frames(draft_id: int | None) -> Iterator[bytes]:
    yield f"retry: {_RETRY_MS}\n\n".encode()
    if draft_id is None:  # nothing to wait for: no pending message or no draft for it
        yield _sse(StreamEvent("final", {"status": "none"}))
        return
    for event in draft_stream_events(draft_id=draft_id):
        yield _sse(event)


@login_required
@require_GET
def draft_stream(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    """The conversation's current draft as server-sent events; another team's conversation
    is not found (404), as on every console page."""
    thread = selectors.conversation_thread(team=agent_team(request), conversation_id=pk)
    draft = thread.draft
    response = StreamingHttpResponse(
        _frames(draft.pk if draft is not None else None), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx would hold the events back otherwise
    return response
