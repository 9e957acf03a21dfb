"""Benchmark of the ingest endpoint (POST /api/v1/messages) under gunicorn on PostgreSQL.

    .venv/bin/python bench/ingest.py [--duration 20] [--connections 16] [--workers N] ...

What it does:

1. creates its own database (`csbot_bench` next to the one in DATABASE_URL), migrates it and
   seeds a team, channel, agent, an active cascade policy with one local tier and hold-out
   share 0 (so every message gets a queued draft, enqueued to Celery on commit) and a token;
2. starts gunicorn on 127.0.0.1 with DEBUG off and Celery on its own Redis db number (3 by
   default; flushed before and after, and no worker consumes it);
3. drives load with wrk (bench/ingest.lua): a warm-up, then the measured run, each request a
   new channel_message_id in a conversation drawn from a pool (some conversations get several
   messages, so earlier drafts are superseded). Without wrk, a Python thread pool does it;
4. checks in the database and Redis that every 201 stored one inbound message with exactly
   one draft, and that one task per draft reached the queue;
5. prints one JSON object on stdout (progress goes to stderr), stops gunicorn and drops the
   database (unless --keep).

Target (the issue): >= 250 messages/s and p95 <= 50 ms on a 2-core machine.

Worker class: the default is gthread (2 workers per core, 2 threads each). Sync workers do not
do keep-alive: gunicorn closes the connection after each response, so every request pays a
new TCP connection and the arbiter's accept; gthread keeps connections open and its second
thread overlaps one request's PostgreSQL/Redis round trips with another's Python work. See
the module's measurements in the report that came with it; `--worker-class sync` compares.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
LUA_SCRIPT = Path(__file__).resolve().with_suffix(".lua")
BIN = Path(sys.executable).parent

DEFAULT_DATABASE_URL = "postgres://csbot:csbot@127.0.0.1:5432/csbot"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
TARGET_MESSAGES_PER_S = 250.0
TARGET_P95_MS = 50.0
CELERY_QUEUE = "celery"
SEED_FLAG = "--internal-seed"
SEED_OUTPUT_PREFIX = "BENCH_KEY="
WRK_MARKER = "BENCH_JSON "

TEXTS = (
    "Hi, my order hasn't arrived yet and the tracking page has not changed for four days.",
    "I was charged twice for the same order this morning. Please refund one of the payments.",
    "Can I change the delivery address on my order? I'm moving next week.",
    "The shoes I received are one size too small. How do I exchange them for a bigger pair?",
    "The blender arrived with a cracked jug. I would like a replacement, not a refund.",
    "I returned the jacket two weeks ago and still have not received my money back.",
)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- Configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    duration_s: float
    warmup_s: float
    connections: int
    threads: int
    workers: int
    worker_class: str
    worker_threads: int
    conversations: int
    database_url: str
    broker_url: str
    keep: bool
    force_python_load: bool


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_args(argv: list[str]) -> Config:
    cpus = cpu_count()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="Measured seconds (20).")
    parser.add_argument("--warmup", type=float, default=3.0, help="Warm-up seconds (3).")
    parser.add_argument("--connections", type=int, default=16, help="Open connections (16).")
    parser.add_argument("--threads", type=int, default=1, help="Load-generator threads (1).")
    parser.add_argument(
        "--workers", type=int, default=2 * cpus, help=f"gunicorn workers (2 x cores = {2 * cpus})."
    )
    parser.add_argument(
        "--worker-class", choices=("gthread", "sync"), default="gthread", help="(gthread)"
    )
    parser.add_argument(
        "--worker-threads", type=int, default=2, help="Threads per gthread worker (2)."
    )
    parser.add_argument(
        "--conversations", type=int, default=2000, help="Conversation pool size (2000)."
    )
    parser.add_argument(
        "--db-name", default="csbot_bench", help="Scratch database, dropped after (csbot_bench)."
    )
    parser.add_argument(
        "--redis-db", type=int, default=3, help="Redis db number for the broker, flushed (3)."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the bench database.")
    parser.add_argument(
        "--python-load", action="store_true", help="Use the Python load generator, not wrk."
    )
    args = parser.parse_args(argv)
    if min(args.connections, args.threads, args.workers, args.worker_threads) < 1:
        parser.error("--connections, --threads, --workers and --worker-threads must be >= 1")
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections")

    base_db = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    parts = urlsplit(base_db)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        parser.error(f"DATABASE_URL must point to PostgreSQL, not {parts.scheme!r}")
    if parts.path.lstrip("/") == args.db_name:
        parser.error(f"--db-name {args.db_name!r} is the database in DATABASE_URL: pick another")

    broker = urlsplit(os.environ.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL))
    if broker.scheme not in ("redis", "rediss"):
        broker = urlsplit(DEFAULT_BROKER_URL)  # same server as scripts/services.sh starts
    if (broker.path.strip("/") or "0") == str(args.redis_db):
        parser.error(f"--redis-db {args.redis_db} is CELERY_BROKER_URL's db: it would be flushed")

    return Config(
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        threads=args.threads,
        workers=args.workers,
        worker_class=args.worker_class,
        worker_threads=args.worker_threads,
        conversations=args.conversations,
        database_url=urlunsplit(parts._replace(path=f"/{args.db_name}")),
        broker_url=urlunsplit(broker._replace(path=f"/{args.redis_db}")),
        keep=args.keep,
        force_python_load=args.python_load,
    )


def bench_env(config: Config) -> dict[str, str]:
    """The environment of every Django process the bench starts."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="csbot.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="bench",  # noqa: S106 - a throwaway key for a throwaway server
        DATABASE_URL=config.database_url,
        CELERY_BROKER_URL=config.broker_url,
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


# --- Database and broker ----------------------------------------------------------------------


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def _server_conn(config: Config) -> psycopg.Connection[Any]:
    """A connection to the server's maintenance database (a database cannot drop itself)."""
    return _connect(urlunsplit(urlsplit(config.database_url)._replace(path="/postgres")))


def _drop(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_create(config: Config) -> None:
    name = urlsplit(config.database_url).path.lstrip("/")
    with _server_conn(config) as conn:
        _drop(conn, name)  # a leftover from an interrupted run
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_drop(config: Config) -> None:
    with _server_conn(config) as conn:
        _drop(conn, urlsplit(config.database_url).path.lstrip("/"))


def broker_client(config: Config) -> redis.Redis:
    return redis.Redis.from_url(config.broker_url)


def run_django(config: Config, *args: str) -> str:
    done = subprocess.run(
        args, cwd=ROOT, env=bench_env(config), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def seed() -> None:
    """Runs in a child process with the bench environment (`ingest.py --internal-seed`)."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.db import transaction

    from csbot import services
    from csbot.models import AgentProfile, Channel, Team
    from drafting.models import CascadePolicy, CascadeTier, ModelEndpoint

    with transaction.atomic():
        team = Team.objects.create(name="Bench Support")
        channel = Channel.objects.create(team=team, name="bench-chat")
        agent = get_user_model().objects.create_user("bench-agent", email="agent@example.com")
        AgentProfile.objects.create(user=agent, team=team)
        endpoint = ModelEndpoint.objects.create(
            name="bench-local",
            kind=ModelEndpoint.Kind.LOCAL,
            model_name="smollm2-135m-instruct",
            gpu_hour_usd=Decimal("0.80"),
            max_output_tokens=96,
        )
        policy = CascadePolicy.objects.create(
            team=team,
            name="Bench cascade",
            active=True,
            system_prompt="You are a concise, friendly customer-support agent.",
            holdout_share=Decimal("0"),
        )
        CascadeTier.objects.create(policy=policy, position=1, endpoint=endpoint)
        _, key = services.api_token_create(channel=channel, name="bench")
    print(f"{SEED_OUTPUT_PREFIX}{key}")


def prepare(config: Config) -> str:
    """Create, migrate and seed the bench database; returns the channel token."""
    log(f"creating database {urlsplit(config.database_url).path.lstrip('/')}")
    database_create(config)
    log("migrating")
    run_django(config, sys.executable, "manage.py", "migrate", "--noinput", "-v", "0")
    log("seeding team, channel, agent, policy (hold-out 0) and token")
    out = run_django(config, sys.executable, str(Path(__file__).resolve()), SEED_FLAG)
    for line in out.splitlines():
        if line.startswith(SEED_OUTPUT_PREFIX):
            return line.removeprefix(SEED_OUTPUT_PREFIX).strip()
    raise RuntimeError(f"the seed printed no token:\n{out}")


@dataclass(frozen=True)
class StoredCounts:
    messages: int
    drafts: int
    messages_without_one_draft: int
    drafts_by_status: dict[str, int]
    conversations: int


def stored_counts(config: Config, message_prefix: str) -> StoredCounts:
    """What the phase whose channel_message_ids start with `message_prefix` stored."""
    like = message_prefix + "-%"
    with _connect(config.database_url) as conn:
        row = conn.execute(
            """
            SELECT count(*),
                   coalesce(sum(n), 0),
                   count(*) FILTER (WHERE n <> 1),
                   count(DISTINCT conversation_id)
              FROM (SELECT m.id, m.conversation_id, count(d.id) AS n
                      FROM csbot_message m
                      LEFT JOIN drafting_draft d ON d.message_id = m.id
                     WHERE m.direction = 'in' AND m.channel_message_id LIKE %s
                     GROUP BY m.id, m.conversation_id) AS per_message
            """,
            (like,),
        ).fetchone()
        statuses = conn.execute(
            """
            SELECT d.status, count(*)
              FROM drafting_draft d JOIN csbot_message m ON m.id = d.message_id
             WHERE m.channel_message_id LIKE %s
             GROUP BY d.status ORDER BY d.status
            """,
            (like,),
        ).fetchall()
    assert row is not None
    return StoredCounts(
        messages=int(row[0]),
        drafts=int(row[1]),
        messages_without_one_draft=int(row[2]),
        conversations=int(row[3]),
        drafts_by_status={str(status): int(n) for status, n in statuses},
    )


def settle(config: Config, message_prefix: str, timeout_s: float = 10.0) -> None:
    """Wait for requests the load generator abandoned at its deadline to finish server-side."""
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        now = stored_counts(config, message_prefix).messages
        if now == last:
            return
        last = now
        time.sleep(0.5)


# --- gunicorn ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    config: Config
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def description(self) -> str:
        version = importlib.metadata.version("gunicorn")
        kind = self.config.worker_class
        if kind == "gthread":
            kind = f"gthread x{self.config.worker_threads} threads"
        return f"gunicorn {version} csbot.wsgi:application ({self.config.workers} {kind} workers)"

    def start(self) -> None:
        command = [
            str(BIN / "gunicorn"),
            "csbot.wsgi:application",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.config.workers),
            "--worker-class",
            self.config.worker_class,
            "--log-level",
            "warning",
            # Above the load generator's connection count, so no connection waits for a slot.
            "--backlog",
            "2048",
        ]
        if self.config.worker_class == "gthread":
            command += ["--threads", str(self.config.worker_threads)]
        log(f"starting {self.description} on port {self.port}")
        self.process = subprocess.Popen(command, cwd=ROOT, env=bench_env(self.config))
        self._wait_until_answering()

    def _wait_until_answering(self, timeout_s: float = 60.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/api/v1/messages")
                conn.getresponse().read()  # any status: a worker answered
                return
            except OSError:
                time.sleep(0.2)
            finally:
                conn.close()
        raise RuntimeError(f"gunicorn did not answer within {timeout_s:.0f}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # graceful: workers finish their request
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- Load generation --------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    generator: str
    requests: int
    duration_s: float
    status_201: int
    status_other_2xx: int
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


@dataclass(frozen=True)
class Phase:
    """One load run: its own channel_message_id prefix, shared conversations."""

    name: str
    duration_s: float
    message_prefix: str
    conv_prefix: str


def run_wrk(config: Config, server: Server, token: str, phase: Phase) -> LoadResult:
    wrk = shutil.which("wrk")
    assert wrk is not None
    command = [
        wrk,
        "--threads",
        str(config.threads),
        "--connections",
        str(config.connections),
        "--duration",
        f"{max(1, round(phase.duration_s))}s",
        "--timeout",
        "10s",
        "--script",
        str(LUA_SCRIPT),
        f"http://127.0.0.1:{server.port}/api/v1/messages",
        "--",
        token,
        phase.message_prefix,
        phase.conv_prefix,
        str(config.conversations),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith(WRK_MARKER)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix(WRK_MARKER))
    latency = data["latency_us"]
    version = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return LoadResult(
        generator=" ".join(version.stdout.split()[:2]) or "wrk",
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        status_201=data["status_201"],
        status_other_2xx=data["status_other_2xx"],
        non_2xx=data["non_2xx"],
        socket_errors=sum(data["socket_errors"].values()),
        p50_ms=latency["p50"] / 1000,
        p95_ms=latency["p95"] / 1000,
        p99_ms=latency["p99"] / 1000,
        mean_ms=latency["mean"] / 1000,
        max_ms=latency["max"] / 1000,
    )


@dataclass
class _Tally:
    latencies_s: list[float] = field(default_factory=list)
    status_201: int = 0
    status_other_2xx: int = 0
    non_2xx: int = 0
    socket_errors: int = 0


def _python_client(
    port: int, token: str, phase: Phase, config: Config, number: int, stop_at: float, tally: _Tally
) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Token {token}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    counter = 0
    while time.monotonic() < stop_at:
        counter += 1
        conversation = 1 + secrets.randbelow(config.conversations)
        body = json.dumps(
            {
                "conversation_external_id": f"{phase.conv_prefix}-{conversation}",
                "channel_message_id": f"{phase.message_prefix}-{number}-{counter}-"
                f"{secrets.randbelow(10**9)}",
                "text": TEXTS[secrets.randbelow(len(TEXTS))],
                "customer_ref": f"customer-{conversation}",
            }
        )
        started = time.perf_counter()
        try:
            conn.request("POST", "/api/v1/messages", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            tally.socket_errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            continue
        tally.latencies_s.append(time.perf_counter() - started)
        if response.status == 201:
            tally.status_201 += 1
        elif 200 <= response.status < 300:
            tally.status_other_2xx += 1
        else:
            tally.non_2xx += 1
    conn.close()


def _percentile_ms(ordered: list[float], percent: float) -> float:
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(percent / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank] * 1000


def run_python_load(config: Config, server: Server, token: str, phase: Phase) -> LoadResult:
    """Fallback without wrk: one thread per connection, http.client with keep-alive. The GIL
    and the client's own CPU use (on the same cores as the server) make it pessimistic."""
    tallies = [_Tally() for _ in range(config.connections)]
    started = time.monotonic()
    stop_at = started + phase.duration_s
    workers = [
        threading.Thread(
            target=_python_client,
            args=(server.port, token, phase, config, number, stop_at, tally),
            daemon=True,
        )
        for number, tally in enumerate(tallies, start=1)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    latencies = sorted(x for tally in tallies for x in tally.latencies_s)
    return LoadResult(
        generator="python http.client threads (wrk not found)",
        requests=len(latencies),
        duration_s=elapsed,
        status_201=sum(t.status_201 for t in tallies),
        status_other_2xx=sum(t.status_other_2xx for t in tallies),
        non_2xx=sum(t.non_2xx for t in tallies),
        socket_errors=sum(t.socket_errors for t in tallies),
        p50_ms=_percentile_ms(latencies, 50),
        p95_ms=_percentile_ms(latencies, 95),
        p99_ms=_percentile_ms(latencies, 99),
        mean_ms=sum(latencies) / len(latencies) * 1000 if latencies else 0.0,
        max_ms=latencies[-1] * 1000 if latencies else 0.0,
    )


def run_load(config: Config, server: Server, token: str, phase: Phase) -> LoadResult:
    log(f"{phase.name}: {phase.duration_s:g}s, {config.connections} connections")
    if config.force_python_load or shutil.which("wrk") is None:
        return run_python_load(config, server, token, phase)
    return run_wrk(config, server, token, phase)


# --- Main -------------------------------------------------------------------------------------


@contextmanager
def bench_database(config: Config) -> Iterator[str]:
    try:
        yield prepare(config)
    finally:
        if config.keep:
            log(f"keeping database {urlsplit(config.database_url).path.lstrip('/')}")
        else:
            log("dropping the bench database")
            database_drop(config)


@contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.start()
        yield server
    finally:
        log("stopping gunicorn")
        server.stop()


def report(
    config: Config, server: Server, load: LoadResult, stored: StoredCounts, tasks: int
) -> dict[str, Any]:
    messages_per_s = load.status_201 / load.duration_s if load.duration_s else 0.0
    # wrk stops at its deadline without waiting for the requests in flight: the server still
    # stores those (at most one per connection), so they are messages without a counted 201.
    unanswered = stored.messages - load.status_201
    checks = {
        "messages_match_201s": 0 <= unanswered <= config.connections,
        "one_draft_per_message": stored.messages_without_one_draft == 0
        and stored.drafts == stored.messages,
        "one_task_per_draft": tasks == stored.drafts,
        "no_holdouts": stored.drafts_by_status.get("held_out", 0) == 0,
    }
    latency_met = load.p95_ms <= TARGET_P95_MS
    throughput_met = messages_per_s >= TARGET_MESSAGES_PER_S
    return {
        "bench": "ingest",
        "server": server.description,
        "worker_class": config.worker_class,
        "workers": config.workers,
        "worker_threads": config.worker_threads if config.worker_class == "gthread" else 1,
        "load_generator": load.generator,
        "connections": config.connections,
        "duration_s": round(load.duration_s, 2),
        "requests": load.requests,
        "messages_per_s": round(messages_per_s, 1),
        "latency_ms": {
            "p50": round(load.p50_ms, 2),
            "p95": round(load.p95_ms, 2),
            "p99": round(load.p99_ms, 2),
            "mean": round(load.mean_ms, 2),
            "max": round(load.max_ms, 2),
        },
        "status_201": load.status_201,
        "status_other_2xx": load.status_other_2xx,
        "non_2xx": load.non_2xx,
        "socket_errors": load.socket_errors,
        "messages": stored.messages,
        "unanswered_at_stop": unanswered,
        "conversations": stored.conversations,
        "drafts": stored.drafts,
        "drafts_by_status": stored.drafts_by_status,
        "tasks_enqueued": tasks,
        "checks": checks,
        "targets": {"messages_per_s": TARGET_MESSAGES_PER_S, "p95_ms": TARGET_P95_MS},
        "met": throughput_met
        and latency_met
        and load.non_2xx == 0
        and load.socket_errors == 0
        and all(checks.values()),
        "machine": {"cpus": cpu_count(), "python": sys.version.split()[0]},
    }


def main(argv: list[str]) -> int:
    if argv == [SEED_FLAG]:
        seed()
        return 0
    config = parse_args(argv)
    broker = broker_client(config)
    broker.flushdb()
    run_id = f"b{int(time.time())}"
    warmup = Phase("warm-up", config.warmup_s, f"{run_id}-warm", f"{run_id}-conv")
    measured = Phase("measured run", config.duration_s, f"{run_id}-main", f"{run_id}-conv")
    try:
        with bench_database(config) as token, running(Server(config)) as server:
            if warmup.duration_s > 0:
                run_load(config, server, token, warmup)
                settle(config, warmup.message_prefix)
            broker.flushdb()  # count only the measured run's tasks
            load = run_load(config, server, token, measured)
            settle(config, measured.message_prefix)
            stored = stored_counts(config, measured.message_prefix)
            tasks = int(broker.llen(CELERY_QUEUE))
    finally:
        broker.flushdb()
    result = report(config, server, load, stored, tasks)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
