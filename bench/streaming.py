"""Streaming drafts with the local vLLM: time to the first visible text vs to the final draft.

    .venv/bin/python bench/streaming.py [--drafts 20] [--keep]

Steps: create a scratch PostgreSQL database (`csbot_bench_streaming` on the server of
DATABASE_URL), migrate, seed a team whose policy has one tier on the local vLLM server
(LOCAL_LLM_URL, else 127.0.0.1:LOCAL_LLM_PORT; start it with `manage.py local_llm serve
--background`); draft one message untimed (model loads, first request); then for each of N
customer messages, one at a time:
- subscribe as the console's stream view does (`draft_stream_events`, its own connection,
  LISTEN before reading the row) in a thread, and wait for its first event;
- call `draft_generate` (what the worker does once it takes the task: broker time is left
  out, it is the same with or without streaming);
- first_text_ms: from that call to the first `text` event the subscriber receives (what the
  browser would show first); final_ms: to the `final` event (the row is ready).
Prints one JSON object on stdout (p50/p95 of both, their ratio, tokens out); progress on
stderr. Drops the database unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://csbot:csbot@127.0.0.1:5433/csbot"
DB_NAME = "csbot_bench_streaming"

# Customer messages of the demo's kind (none is ever cached: each is drafted by the model).
QUESTIONS = [
    "Hi, my order #{n} has not arrived yet. Where is it?",
    "Can I change the delivery address of order {n}?",
    "I was charged twice for my subscription this month (invoice {n}).",
    "How do I return a jacket that does not fit? Order {n}.",
    "My discount code SPRING{n} is not accepted at checkout.",
]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def database(url: str, *, create: bool) -> None:
    admin_url = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME))
        )
        if create:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drafts", type=int, default=20, help="timed drafts (20)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    server_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    bench_url = urlunsplit(urlsplit(server_url)._replace(path=f"/{DB_NAME}"))
    database(server_url, create=True)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="csbot.settings",
        DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "bench"),
        DATABASE_URL=bench_url,
        LOG_LEVEL="ERROR",
    )
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")
    sys.path.insert(0, str(ROOT))
    try:
        result = run(args)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            database(server_url, create=False)
    print(json.dumps(result))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from csbot.models import Channel, Conversation, Message, Team
    from drafting import services
    from drafting.models import CascadePolicy, CascadeTier, Draft, ModelEndpoint
    from drafting.streaming import StreamEvent, draft_stream_events

    base_url = settings.LOCAL_LLM_URL or f"http://127.0.0.1:{settings.LOCAL_LLM_PORT}/v1"
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=5) as response:  # noqa: S310
            model_name = json.loads(response.read())["data"][0]["id"]
    except OSError as exc:
        raise SystemExit(
            f"no local vLLM at {base_url} ({exc}): `manage.py local_llm serve --background`"
        ) from exc

    log("migrating the scratch database")
    call_command("migrate", verbosity=0)
    team = Team.objects.create(name="Bench")
    channel = Channel.objects.create(team=team, name="bench")
    endpoint = ModelEndpoint.objects.create(
        name="local", kind="local", base_url=base_url, model_name=model_name, timeout_seconds=120
    )
    policy = CascadePolicy.objects.create(
        team=team,
        name="bench",
        system_prompt="You are a concise, friendly support agent. Answer in two sentences.",
    )
    CascadeTier.objects.create(policy=policy, position=1, endpoint=endpoint, threshold=0)

    def new_draft(n: int) -> Draft:
        conversation = Conversation.objects.create(
            team=team, channel=channel, external_id=f"s-{n}", customer_ref=f"Customer {n}"
        )
        message = Message.objects.create(
            conversation=conversation,
            channel=channel,
            direction="in",
            text=QUESTIONS[n % len(QUESTIONS)].format(n=1000 + n),
            channel_message_id=f"s-{n}",
        )
        return Draft.objects.create(message=message, policy=policy)

    def one(n: int) -> dict[str, Any]:
        draft = new_draft(n)
        seen: dict[str, float] = {}
        listening = threading.Event()

        def subscriber() -> None:
            try:
                for event in draft_stream_events(draft_id=draft.pk, timeout=180):
                    listening.set()
                    if isinstance(event, StreamEvent) and event.name not in seen:
                        seen[event.name] = time.perf_counter()
            finally:
                connection.close()

        thread = threading.Thread(target=subscriber, daemon=True)
        thread.start()
        listening.wait(timeout=30)
        started = time.perf_counter()
        services.draft_generate(draft_id=draft.pk)
        stored = time.perf_counter()
        thread.join(timeout=30)
        draft.refresh_from_db()
        attempt = draft.attempts.first()
        ms = {name: (at - started) * 1000 for name, at in seen.items()}
        return {
            "status": draft.status,
            "first_text_ms": ms.get("text"),
            "final_ms": ms.get("final"),
            "stored_ms": (stored - started) * 1000,
            "tokens_out": attempt.tokens_out if attempt else 0,
        }

    log(f"warming up on {model_name} at {base_url}")
    one(-1)
    runs = []
    for n in range(args.drafts):
        runs.append(one(n))
        log(f"draft {n + 1}/{args.drafts}: {runs[-1]}")
    first = [r["first_text_ms"] for r in runs if r["first_text_ms"] is not None]
    final = [r["final_ms"] for r in runs if r["final_ms"] is not None]
    return {
        "bench": "streaming",
        "drafts": args.drafts,
        "ready": sum(r["status"] == "ready" for r in runs),
        "model": model_name,
        "cpus": len(os.sched_getaffinity(0)),
        "first_text_ms": {"p50": percentile(first, 0.5), "p95": percentile(first, 0.95)},
        "final_ms": {"p50": percentile(final, 0.5), "p95": percentile(final, 0.95)},
        "first_text_share_of_final_p50": (
            round(percentile(first, 0.5) / percentile(final, 0.5), 3)  # type: ignore[operator]
            if first and final
            else None
        ),
        "tokens_out_mean": round(sum(r["tokens_out"] for r in runs) / max(1, len(runs)), 1),
        "stream_interval_ms": 100,
    }


if __name__ == "__main__":
    main()
