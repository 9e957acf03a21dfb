"""Benchmark of the drafting cascade's own overhead, the cache-hit path and local-vLLM drafts/s.

    .venv/bin/python bench/cascade.py [--drafts 200] [--vllm-drafts 8] [--keep] [--profile F]

Steps: create a scratch PostgreSQL database (`csbot_bench_cascade` on the server of
DATABASE_URL), migrate, seed a team with a two-tier policy on an in-process OpenAI-compatible
stub that answers at once (tier 1 answers with low confidence, so every draft escalates to
tier 2: the full path: trimming, redaction, breaker, spend check, scoring, pricing, storing);
then time `draft_generate` per draft:
- orchestration overhead = wall time of draft_generate − the provider time its attempts
  recorded − the time spent embedding the customer message (model time too, reported apart
  as `embedding_ms`; EMBEDDING_BACKEND=none leaves it out) (target p50 ≤ 15 ms);
- cache-hit path = draft_generate for a first-turn message with an approved cached reply,
  exact match (target p50 ≤ 10 ms), and a reworded one (semantic match, embedding included);
- drafts/s against the local vLLM server (LOCAL_LLM_URL, else 127.0.0.1:LOCAL_LLM_PORT), one
  tier, 4 drafts at a time, when a server answers (else null with the reason).
Prints one JSON object on stdout; progress on stderr. Drops the database unless --keep.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://csbot:csbot@127.0.0.1:5433/csbot"
DB_NAME = "csbot_bench_cascade"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


@contextmanager
def stub_server() -> Iterator[str]:
    """Answers /chat/completions at once: low-confidence text to the `unsure` model."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            logprob = -3.0 if payload["model"] == "unsure" else -0.05
            text = "Thanks for writing! Your refund is on its way and arrives in 3-5 days."
            body = json.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": payload["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": {
                                "content": [
                                    {
                                        "token": w,
                                        "logprob": logprob,
                                        "bytes": None,
                                        "top_logprobs": [],
                                    }
                                    for w in text.split()
                                ]
                            },
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 120, "completion_tokens": 20, "total_tokens": 140},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


class Traffic:
    """What the timed calls send to PostgreSQL and Redis, counted per call.

    Statements: every one Django executes (its execute wrapper sees each, savepoints too).
    Round trips: each statement, plus the BEGIN psycopg sends before a transaction's first
    statement and the COMMIT (or ROLLBACK) that ends it; a statement in autocommit mode is its
    own transaction and costs one. Redis: commands sent one at a time, and pipelines as one.
    """

    def __init__(self, *, show: bool = False) -> None:
        self.show = show  # log the first call's statements (--show-sql)
        self.calls = 0
        self.statements = 0
        self.transactions = 0
        self.redis = 0

    @contextmanager
    def measure(self) -> Iterator[None]:
        import redis
        from django.db import connection

        def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            self.statements += 1
            if self.show and self.calls == 1:
                log(f"sql: {sql[:160]}")
            return execute(sql, params, many, context)

        commit, rollback = connection._commit, connection._rollback  # type: ignore[attr-defined]

        def counted(method: Any) -> Any:
            def call() -> Any:
                self.transactions += 1
                return method()

            return call

        send, pipeline = redis.Redis.execute_command, redis.client.Pipeline.execute

        def redis_send(client: Any, *args: Any, **kwargs: Any) -> Any:
            self.redis += 1
            return send(client, *args, **kwargs)

        def redis_pipeline(pipe: Any, *args: Any, **kwargs: Any) -> Any:
            self.redis += 1
            return pipeline(pipe, *args, **kwargs)

        connection._commit, connection._rollback = counted(commit), counted(rollback)  # type: ignore[attr-defined]
        redis.Redis.execute_command = redis_send  # type: ignore[method-assign,assignment]
        redis.client.Pipeline.execute = redis_pipeline  # type: ignore[method-assign,assignment]
        self.calls += 1
        try:
            with connection.execute_wrapper(count):
                yield
        finally:
            del connection._commit, connection._rollback  # type: ignore[attr-defined]  # the class methods again
            redis.Redis.execute_command = send  # type: ignore[method-assign]
            redis.client.Pipeline.execute = pipeline  # type: ignore[method-assign]

    def per_call(self) -> dict[str, float]:
        calls = max(self.calls, 1)
        return {
            "db_statements": round(self.statements / calls, 2),
            "db_round_trips": round((self.statements + 2 * self.transactions) / calls, 2),
            "redis_round_trips": round(self.redis / calls, 2),
        }


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
    parser.add_argument("--drafts", type=int, default=200, help="drafts per timed path (200)")
    parser.add_argument("--vllm-drafts", type=int, default=8, help="drafts against local vLLM (8)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--show-sql", action="store_true", help="log the statements of one draft of each path"
    )
    parser.add_argument(
        "--profile", metavar="PATH", help="write cProfile stats of the timed loops to PATH"
    )
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
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/4")
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
    from datetime import timedelta
    from decimal import Decimal

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from csbot.models import AgentProfile, Channel, Conversation, Message, Team
    from drafting import services
    from drafting.engine import embeddings, vectors
    from drafting.engine.cache import cache_key
    from drafting.models import (
        CachedReply,
        CascadePolicy,
        CascadeTier,
        Draft,
        EndpointPrice,
        ModelEndpoint,
    )

    def timed_embeddings() -> list[float]:
        """Wrap the configured embedder so each call's time lands in the returned list."""
        inner = embeddings.embedder()
        spent: list[float] = []
        if inner is None:
            return spent

        model = inner

        class Timed:
            name = model.name

            def embed(self, texts: Any) -> Any:
                started = time.perf_counter()
                try:
                    return model.embed(texts)
                finally:
                    spent.append((time.perf_counter() - started) * 1000)

        timed = Timed()
        vectors.embedder = lambda: timed  # type: ignore[assignment]
        return spent

    log("migrating the scratch database")
    call_command("migrate", verbosity=0)
    team = Team.objects.create(name="Bench")
    channel = Channel.objects.create(team=team, name="bench")
    agent = get_user_model().objects.create_user("bench-agent")
    AgentProfile.objects.create(user=agent, team=team)

    def new_draft(policy: CascadePolicy, n: int, text: str) -> Draft:
        conversation = Conversation.objects.create(
            team=team, channel=channel, external_id=f"{policy.pk}-{n}"
        )
        message = Message.objects.create(
            conversation=conversation,
            channel=channel,
            direction="in",
            text=text,
            channel_message_id=f"{policy.pk}-{n}",
        )
        return Draft.objects.create(message=message, policy=policy)

    result: dict[str, Any] = {
        "bench": "cascade",
        "drafts": args.drafts,
        "cpus": len(os.sched_getaffinity(0)),
    }
    with stub_server() as stub_url:
        cheap = ModelEndpoint.objects.create(
            name="unsure", kind="paid", base_url=stub_url, model_name="unsure"
        )
        paid = ModelEndpoint.objects.create(
            name="sure", kind="paid", base_url=stub_url, model_name="sure"
        )
        # Priced before the first draft: each draft's cascade loads these (one query).
        EndpointPrice.objects.create(endpoint=cheap, effective_from=timezone.now())
        EndpointPrice.objects.create(
            endpoint=paid, effective_from=timezone.now(), input_price_per_mtok=Decimal("2.5")
        )
        policy = CascadePolicy.objects.create(
            team=team, name="two tiers", system_prompt="Be brief.", holdout_share=0
        )
        CascadeTier.objects.create(
            policy=policy, position=1, endpoint=cheap, threshold=Decimal("0.5")
        )
        CascadeTier.objects.create(policy=policy, position=2, endpoint=paid, threshold=Decimal("0"))

        # Embedding time is model time, like the provider's: timed apart and reported apart.
        embed_ms = timed_embeddings()
        log(
            f"timing {args.drafts} escalating two-tier drafts (embedder: {settings.EMBEDDING_BACKEND})"
        )
        profiler = cProfile.Profile() if args.profile else None
        overheads, embeds = [], []

        def traffic_of(texts: list[tuple[int, str]]) -> dict[str, float]:
            """Statements and round trips per draft_generate, counted on drafts of their own
            after the timed ones (counting costs time)."""
            traffic = Traffic(show=args.show_sql)
            for n, text in texts:
                draft = new_draft(policy, n, text)
                with traffic.measure():
                    services.draft_generate(draft_id=draft.pk)
            return traffic.per_call()

        for n in range(args.drafts + 10):
            draft = new_draft(
                policy, n, f"Where is my refund for order {n}? Mail me at a{n}@example.com"
            )
            embed_ms.clear()
            started = time.perf_counter()
            if profiler and n >= 10:
                profiler.runcall(services.draft_generate, draft_id=draft.pk)
            else:
                services.draft_generate(draft_id=draft.pk)
            elapsed_ms = (time.perf_counter() - started) * 1000
            provider_ms = sum(draft.attempts.values_list("latency_ms", flat=True))
            if n >= 10:  # warm-up
                overheads.append(elapsed_ms - provider_ms - sum(embed_ms))
                embeds.append(sum(embed_ms))
        result["orchestration_overhead_ms"] = {
            "p50": percentile(overheads, 0.5),
            "p95": percentile(overheads, 0.95),
            "target_p50": 15,
            "excludes": "provider calls (attempt latency) and embedding the customer message",
            **traffic_of(
                [
                    (400_000 + n, f"Where is my refund for order {n}? Mail me at b{n}@example.com")
                    for n in range(10)
                ]
            ),
        }
        result["embedding_ms"] = {
            "backend": settings.EMBEDDING_BACKEND,
            "p50": percentile(embeds, 0.5),
            "p95": percentile(embeds, 0.95),
        }

        log(f"timing {args.drafts} cache hits")
        question = "Do you ship to Canada?"
        embedder = embeddings.embedder()
        vector = embedder.embed([question])[0] if embedder is not None else None
        CachedReply.objects.create(
            team=team,
            key=cache_key(question),
            customer_text=question,
            reply="Yes, in 5-7 days.",
            expires_at=timezone.now() + timedelta(days=1),
            **(
                vectors.vector_fields(embedder.name, vector)
                if embedder is not None and vector is not None
                else {}
            ),
        )
        hits = []
        for n in range(args.drafts + 10):
            draft = new_draft(policy, 100_000 + n, "Do you ship to Canada?")
            started = time.perf_counter()
            if profiler and n >= 10:
                profiler.runcall(services.draft_generate, draft_id=draft.pk)
            else:
                services.draft_generate(draft_id=draft.pk)
            if n >= 10:
                hits.append((time.perf_counter() - started) * 1000)
        assert Draft.objects.get(pk=draft.pk).attempts.get().cache_hit
        if profiler:
            profiler.dump_stats(args.profile)
        result["cache_hit_ms"] = {
            "match": "exact",
            "p50": percentile(hits, 0.5),
            "p95": percentile(hits, 0.95),
            "target_p50": 10,
            **traffic_of([(500_000 + n, question) for n in range(10)]),
        }
        if embedder is not None:
            log(f"timing {args.drafts} semantic cache hits (reworded question)")
            semantic, semantic_embed = [], []
            for n in range(args.drafts + 10):
                # Trailing spaces: the same words (and vector) but a new text to embed, as a
                # real rewording would be.
                draft = new_draft(policy, 300_000 + n, "Do you ship to canada please" + " " * n)
                embed_ms.clear()
                started = time.perf_counter()
                services.draft_generate(draft_id=draft.pk)
                if n >= 10:
                    semantic.append((time.perf_counter() - started) * 1000)
                    semantic_embed.append(sum(embed_ms))
            assert Draft.objects.get(pk=draft.pk).attempts.get().cache_match == "semantic"
            result["semantic_cache_hit_ms"] = {
                "p50": percentile(semantic, 0.5),
                "p95": percentile(semantic, 0.95),
                "p50_excluding_embedding": percentile(
                    [t - e for t, e in zip(semantic, semantic_embed, strict=True)], 0.5
                ),
                **traffic_of(
                    [
                        (600_000 + n, "Do you ship to canada please" + " " * (400 + n))
                        for n in range(10)
                    ]
                ),
            }

    base = settings.LOCAL_LLM_URL or f"http://127.0.0.1:{settings.LOCAL_LLM_PORT}/v1"
    if args.vllm_drafts <= 0:
        result["local_vllm"] = {"drafts_per_s": None, "reason": "--vllm-drafts 0"}
        return result
    try:
        urllib.request.urlopen(f"{base}/models", timeout=3).read()  # noqa: S310 - our own server
    except OSError as exc:
        result["local_vllm"] = {"drafts_per_s": None, "reason": f"no server at {base}: {exc}"}
        return result
    local = ModelEndpoint.objects.create(
        name="local",
        kind="local",
        base_url=base,
        model_name="smollm2-135m-instruct",
        max_output_tokens=48,
    )
    EndpointPrice.objects.create(endpoint=local, effective_from=timezone.now())
    local_policy = CascadePolicy.objects.create(
        team=team, name="local", system_prompt="Be brief.", active=False
    )
    CascadeTier.objects.create(policy=local_policy, position=1, endpoint=local)
    drafts = [
        new_draft(local_policy, 200_000 + n, f"My parcel {n} is late, can you check?")
        for n in range(args.vllm_drafts)
    ]
    log(f"{args.vllm_drafts} drafts against the local vLLM at {base}, 4 at a time")

    def generate(draft_id: int) -> None:
        from django.db import connection

        try:
            services.draft_generate(draft_id=draft_id)
        finally:
            connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(generate, [d.pk for d in drafts]))
    seconds = time.perf_counter() - started
    ready = Draft.objects.filter(pk__in=[d.pk for d in drafts], status="ready").count()
    result["local_vllm"] = {
        "url": base,
        "drafts": len(drafts),
        "ready": ready,
        "seconds": round(seconds, 2),
        "drafts_per_s": round(ready / seconds, 3),
        "max_output_tokens": 48,
    }
    return result


if __name__ == "__main__":
    main()
