"""Benchmark of observability's costs: per-request middleware overhead and /metrics scrape time.

    .venv/bin/python bench/observability.py [--drafts 100000] [--repeat 20] [--keep]

Steps:

1. middleware overhead: a trivial view called bare, then through RequestContextMiddleware
   (request id, context, HTTP counter and histogram) without and with the JSON access log
   line (written to /dev/null through the configured handler), and through ProbeMiddleware
   (a path that is not a probe); microseconds per request, median of --repeat rounds. The
   same again in a child process with PROMETHEUS_MULTIPROC_DIR set (gunicorn's mode: samples
   written to memory-mapped files);
2. scrape time: a scratch database (`csbot_bench_observability` on the server of
   DATABASE_URL) is migrated and seeded with --drafts drafts in a realistic mix (ready on
   tier 1 / tier 2 / from the cache, failed, superseded, held out, queued, generating) and
   their attempts; then the drafting collector's queries (the database and Redis part of a
   scrape, uncached) and a whole GET /metrics through Django are timed, p50/p95;
3. print one JSON object on stdout and drop the database unless --keep.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB_NAME = "csbot_bench_observability"


def overhead(repeat: int) -> dict[str, float]:
    """Microseconds per request added by the middleware (median of `repeat` rounds)."""
    from django.conf import settings
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory
    from django.urls import resolve

    from csbot.observability import middleware

    devnull = Path(os.devnull).open("w")  # noqa: SIM115 - open for the whole run
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)
    match = resolve("/api/v1/messages")

    def view(request: HttpRequest) -> HttpResponse:
        request.resolver_match = match  # as URL resolution would, inside the stack
        return HttpResponse(b"{}", status=201)

    factory = RequestFactory()
    request = factory.post("/api/v1/messages", data=b"{}", content_type="application/json")

    def per_call(handler: Any, number: int = 5000) -> float:
        rounds = timeit.repeat(lambda: handler(request), number=number, repeat=repeat)
        return statistics.median(rounds) / number * 1e6

    settings.LOG_REQUESTS = False
    quiet = middleware.RequestContextMiddleware(view)
    settings.LOG_REQUESTS = True
    logged = middleware.RequestContextMiddleware(view)
    probe = middleware.ProbeMiddleware(view)
    bare = per_call(view)
    return {
        "bare_view_us": round(bare, 2),
        "request_context_no_access_log_us": round(per_call(quiet) - bare, 2),
        "request_context_with_json_access_log_us": round(per_call(logged) - bare, 2),
        "probe_passthrough_us": round(per_call(probe) - bare, 2),
    }


def server_url(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def database_recreate(url: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url(url, "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))


def database_drop(url: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url(url, "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME))
        )


def seed(drafts: int) -> dict[str, int]:
    """`drafts` drafts, one per inbound message, one conversation per 2 messages, with the
    attempts each status implies. Deterministic (a draft's kind is its index modulo 100)."""
    from decimal import Decimal

    from django.db import connection, transaction
    from django.utils import timezone

    from csbot.models import Channel, Conversation, Message, Team
    from drafting.models import CascadePolicy, CascadeTier, Draft, DraftAttempt, ModelEndpoint

    team = Team.objects.create(name="Bench")
    channel = Channel.objects.create(team=team, name="web")
    policy = CascadePolicy.objects.create(team=team, name="bench", system_prompt="Be brief.")
    local = ModelEndpoint.objects.create(name="local-vllm", kind="local", model_name="m")
    paid = ModelEndpoint.objects.create(
        name="paid-api", kind="paid", model_name="m", base_url="http://x/v1"
    )
    CascadeTier.objects.create(policy=policy, position=1, endpoint=local)
    CascadeTier.objects.create(policy=policy, position=2, endpoint=paid)
    now = timezone.now()
    attempts = 0
    batch = 5000
    for start in range(0, drafts, batch):
        n = min(batch, drafts - start)
        with transaction.atomic():
            conversations = Conversation.objects.bulk_create(
                [
                    Conversation(team=team, channel=channel, external_id=f"c{start + i}")
                    for i in range(0, n, 2)
                ]
            )
            messages = Message.objects.bulk_create(
                [
                    Message(
                        conversation=conversations[i // 2],
                        channel=channel,
                        direction="in",
                        text=f"Question {start + i}",
                    )
                    for i in range(n)
                ]
            )
            rows: list[Draft] = []
            kinds: list[int] = []
            for i, message in enumerate(messages):
                kind = (start + i) % 100
                kinds.append(kind)
                endpoint: ModelEndpoint | None
                status, endpoint = "ready", local
                if kind >= 70:
                    status, endpoint = "ready", paid
                if kind >= 80:
                    status, endpoint = "ready", None  # cache
                if kind >= 85:
                    status, endpoint = "failed", None
                if kind >= 90:
                    status, endpoint = "superseded", local
                if kind >= 95:
                    status, endpoint = "held_out", None
                if kind >= 98:
                    status, endpoint = "queued", None
                if kind >= 99:
                    status, endpoint = "generating", None
                rows.append(
                    Draft(
                        message=message,
                        policy=policy,
                        status=status,
                        final_endpoint=endpoint,
                        ready_at=now if status == "ready" else None,
                        total_cost=Decimal("0.0001"),
                    )
                )
            created = Draft.objects.bulk_create(rows)
            tries: list[DraftAttempt] = []
            for draft, kind in zip(created, kinds, strict=True):
                latency = 100 + (kind * 37) % 3000
                if kind < 80 or 90 <= kind < 95:
                    tries.append(
                        DraftAttempt(
                            draft=draft,
                            tier=1,
                            endpoint=local,
                            outcome="ok",
                            latency_ms=latency,
                            cost=Decimal("0.000002"),
                            tokens_in=300,
                            tokens_out=60,
                        )
                    )
                if 70 <= kind < 80:
                    tries.append(
                        DraftAttempt(
                            draft=draft,
                            tier=2,
                            endpoint=paid,
                            outcome="ok",
                            latency_ms=latency * 2,
                            cost=Decimal("0.0024"),
                            tokens_in=300,
                            tokens_out=60,
                        )
                    )
                if 80 <= kind < 85:
                    tries.append(
                        DraftAttempt(
                            draft=draft,
                            tier=0,
                            cache_hit=True,
                            cache_match="exact" if kind < 83 else "semantic",
                            outcome="ok",
                        )
                    )
                if 85 <= kind < 90:
                    tries.append(
                        DraftAttempt(
                            draft=draft,
                            tier=1,
                            endpoint=local,
                            outcome="error",
                            error_kind="timeout",
                            latency_ms=30000,
                        )
                    )
                    tries.append(
                        DraftAttempt(
                            draft=draft,
                            tier=2,
                            endpoint=paid,
                            outcome="error",
                            error_kind="rate_limited",
                            latency_ms=200,
                        )
                    )
            DraftAttempt.objects.bulk_create(tries)
            attempts += len(tries)
        print(f"seeded {start + n}/{drafts} drafts", file=sys.stderr)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # what autovacuum does in production
    return {"drafts": drafts, "attempts": attempts}


def scrape_times(repeat: int) -> dict[str, Any]:
    from django.test import Client

    from csbot.observability.metrics import scrape_collector

    def percentiles(samples: list[float]) -> dict[str, float]:
        ordered = sorted(samples)
        return {
            "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[max(0, round(0.95 * len(ordered)) - 1)] * 1000, 1),
        }

    collect: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        list(scrape_collector._collect_now())
        collect.append(time.perf_counter() - started)
    client = Client()
    page: list[float] = []
    size = 0
    for _ in range(repeat):
        scrape_collector.invalidate()
        started = time.perf_counter()
        response = client.get("/metrics")
        page.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
        size = len(response.content)
    return {"collector": percentiles(collect), "get_metrics": percentiles(page), "page_bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drafts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--overhead-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csbot.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only")
    os.environ["LOG_FORMAT"] = "json"
    os.environ["METRICS_CACHE_SECONDS"] = "0"
    base_url = os.environ.get("DATABASE_URL", "postgres://csbot:csbot@127.0.0.1:5433/csbot")
    if args.overhead_only:
        import django

        django.setup()
        print(json.dumps(overhead(args.repeat)))
        return

    with tempfile.TemporaryDirectory() as folder:
        child = subprocess.run(
            [sys.executable, __file__, "--overhead-only", f"--repeat={args.repeat}"],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder},
            capture_output=True,
            text=True,
            check=True,
        )
    multiprocess = json.loads(child.stdout)

    database_recreate(base_url)
    os.environ["DATABASE_URL"] = server_url(base_url, DB_NAME)
    import django
    from django.core.management import call_command

    django.setup()
    result: dict[str, Any] = {
        "middleware_overhead_per_request": overhead(args.repeat),
        "middleware_overhead_per_request_multiprocess": multiprocess,
    }
    try:
        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        result["rows"] = seed(args.drafts)
        result["seed_seconds"] = round(time.perf_counter() - started, 1)
        result["scrape"] = scrape_times(args.repeat)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            database_drop(base_url)
    result["cpus"] = os.cpu_count()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
