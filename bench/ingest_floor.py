"""The floor of bench/ingest.py: the same ingest with no framework, as a bare WSGI app.

    gunicorn bench.ingest_floor:application   (bench/ingest.py starts it; env below)

What csbot's POST /api/v1/messages must do at the least, done the cheapest honest way, so that
csbot's throughput can be read as a share of it:

1. parse the JSON body (no validation beyond the four fields being there);
2. check the token with one dict look-up (csbot hashes it and keeps a per-process cache);
3. ONE SQL statement, through psycopg on a connection kept per process: a CTE that upserts the
   conversation (ON CONFLICT), supersedes the conversation's unanswered drafts, inserts the
   inbound message and its queued draft, into csbot's real tables;
4. one raw Redis LPUSH of a payload the size of Celery's task message (the doorbell);
5. answer 201 with the body csbot gives (the message and its draft summary).

Supersede is in the statement because csbot has to do it for every message of a known
conversation: without it the floor would skip work the product cannot. No hold-out draw (the
bench's policy has share 0), no idempotency handling (the bench never repeats an id), no rate
limit, no logging. Environment (set by bench/ingest.py): BENCH_FLOOR_DATABASE_URL,
BENCH_FLOOR_REDIS_URL, BENCH_FLOOR_TOKEN, BENCH_FLOOR_CHANNEL, BENCH_FLOOR_TEAM,
BENCH_FLOOR_POLICY.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import redis

FLOOR_QUEUE = "floor"

# Every sub-statement sees the same snapshot: the supersede cannot touch the draft inserted
# beside it, and the conversation row is locked by the upsert before the message goes in.
INGEST_SQL = """
WITH conversation AS (
    INSERT INTO csbot_conversation AS c
           (team_id, channel_id, external_id, customer_ref, status, created_at, updated_at,
            awaiting_reply_since)
    VALUES (%(team)s, %(channel)s, %(conversation)s, %(customer)s, 'open', now(), now(), now())
    ON CONFLICT (channel_id, external_id) DO UPDATE
       SET status = 'open', updated_at = now(),
           awaiting_reply_since = coalesce(c.awaiting_reply_since, now())
    RETURNING id, customer_ref
), superseded AS (
    UPDATE drafting_draft d SET status = 'superseded'
      FROM csbot_message m, conversation
     WHERE d.message_id = m.id AND m.conversation_id = conversation.id
       AND d.status IN ('queued', 'generating', 'ready')
       AND NOT EXISTS (SELECT 1 FROM drafting_agentaction a WHERE a.draft_id = d.id)
), message AS (
    INSERT INTO csbot_message
           (conversation_id, channel_id, direction, text, author, channel_message_id, created_at)
    SELECT id, %(channel)s, 'in', %(text)s, coalesce(nullif(%(customer)s, ''), customer_ref),
           %(message)s, now()
      FROM conversation
    RETURNING id, conversation_id, author, created_at
)
INSERT INTO drafting_draft
       (message_id, policy_id, status, text, total_cost, failure_reason, tries, created_at,
        enqueued_at)
SELECT id, %(policy)s, 'queued', '', 0, '', 0, now(), now() FROM message
RETURNING id, message_id, (SELECT conversation_id FROM message),
          (SELECT author FROM message), (SELECT created_at FROM message), created_at
"""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

_TOKENS = {
    os.environ.get("BENCH_FLOOR_TOKEN", ""): (
        int(os.environ.get("BENCH_FLOOR_CHANNEL", "0")),
        int(os.environ.get("BENCH_FLOOR_TEAM", "0")),
        int(os.environ.get("BENCH_FLOOR_POLICY", "0")),
    )
}
# Per process, opened on the first request: gunicorn forks after loading this module.
_database: psycopg.Connection[Any] | None = None
_redis: redis.Redis | None = None


def _connections() -> tuple[psycopg.Connection[Any], redis.Redis]:
    global _database, _redis
    if _database is None or _database.closed:
        _database = psycopg.connect(
            os.environ["BENCH_FLOOR_DATABASE_URL"], autocommit=True, options="-c timezone=UTC"
        )
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["BENCH_FLOOR_REDIS_URL"])
    return _database, _redis


_ZERO_COST = str(Decimal(0).quantize(Decimal(1).scaleb(-10)))  # DRF's DecimalField, 10 places


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _answer(start_response: StartResponse, status: str, body: bytes) -> Iterable[bytes]:
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] != "POST":
        return _answer(start_response, "405 Method Not Allowed", b'{"detail":"POST only."}')
    key = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Token ")
    principal = _TOKENS.get(key) if key else None
    if principal is None:
        return _answer(start_response, "401 Unauthorized", b'{"detail":"Invalid token."}')
    channel, team, policy = principal
    length = int(environ.get("CONTENT_LENGTH") or 0)
    try:
        data = json.loads(environ["wsgi.input"].read(length))
        params = {
            "team": team,
            "channel": channel,
            "policy": policy,
            "conversation": str(data["conversation_external_id"]),
            "message": str(data["channel_message_id"]),
            "text": str(data["text"]),
            "customer": str(data.get("customer_ref", "")),
        }
    except (ValueError, KeyError, TypeError):
        return _answer(start_response, "400 Bad Request", b'{"detail":"Malformed body."}')
    database, broker = _connections()
    row = database.execute(INGEST_SQL, params).fetchone()
    assert row is not None
    draft_id, message_id, conversation_id, author, message_at, draft_at = row
    # About the size of Celery's protocol-2 message for draft_generate(draft_id).
    task_id = str(uuid.uuid4())
    broker.lpush(
        FLOOR_QUEUE,
        json.dumps(
            {
                "body": json.dumps([[draft_id], {}, {"callbacks": None, "errbacks": None}]),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {
                    "lang": "py",
                    "task": "drafting.tasks.draft_generate",
                    "id": task_id,
                    "root_id": task_id,
                    "argsrepr": f"({draft_id},)",
                    "ignore_result": True,
                    "origin": f"floor@{os.getpid()}",
                },
                "properties": {
                    "correlation_id": task_id,
                    "delivery_mode": 2,
                    "delivery_info": {"exchange": "", "routing_key": "celery"},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": str(uuid.uuid4()),
                },
            }
        ),
    )
    body = {
        "id": message_id,
        "conversation": conversation_id,
        "conversation_external_id": params["conversation"],
        "direction": "in",
        "text": params["text"],
        "author": author,
        "channel_message_id": params["message"],
        "created_at": _iso(message_at),
        "draft": {
            "id": draft_id,
            "status": "queued",
            "text": "",
            "score": None,
            "total_cost": _ZERO_COST,
            "created_at": _iso(draft_at),
            "ready_at": None,
        },
    }
    return _answer(start_response, "201 Created", json.dumps(body).encode())
