"""Benchmark of the ingest endpoint (POST /api/v1/messages) under gunicorn on PostgreSQL,
against its floor: the same ingest with no framework (bench/ingest_floor.py).

    .venv/bin/python bench/ingest.py [--duration 20] [--connections 16] [--rate 100] ...

Steps:

1. create a scratch database (`csbot_bench`, on the server of DATABASE_URL), migrate it and
   seed a team, channel, agent, an active cascade policy with one local tier and hold-out
   share 0 (every message gets a queued draft, enqueued to Celery on commit) and a token;
2. for each variant (csbot, then the floor): start gunicorn on 127.0.0.1 with the same
   settings (DEBUG off, the broker on its own Redis db number, 3 by default, flushed before
   and after; no worker consumes it) and run both load shapes against it;
3. each shape is a warm-up, then the measured run, driven by wrk and bench/ingest.lua with
   the same request bodies for both variants. Every request is a new channel_message_id in a
   conversation drawn from a pool, so conversations get several messages and earlier drafts
   are superseded. Without wrk a Python thread pool stands in (and the JSON says so);
4. check, for each run, that every 201 stored one inbound message with exactly one draft and
   that one task per draft reached the Redis queue (csbot: Celery's; the floor: its own list);
5. print one JSON object on stdout (progress goes to stderr): per variant and shape the
   throughput, latency and CPU per message, `ratio` = csbot / floor throughput per shape,
   and `met`; stop gunicorn and drop the database (unless --keep).

Target (csbot issue 15): csbot's throughput >= 0.8 x the floor's at an offered 100
messages/s, with csbot's p95 <= 100 ms there, every check passing. The floor is what the same
work costs with nothing but a JSON parse, a dict look-up for the token, one SQL statement and
one LPUSH: the ratio says how much of the machine the framework takes, whatever the machine.

Load shapes. The closed loop: each of the --connections sends its next message when the
previous answer arrives, which finds the server's capacity. Latency then is queueing plus
service time: by Little's law the mean latency is connections / throughput, so with 16
connections a p95 under 50 ms needs roughly 400 messages/s. The offered load (`--rate`, 100
by default) sends on a schedule instead and measures the latency at that load; its ratio is
1.0 whenever both variants keep up, so the closed loop's ratio is the one that shows the
framework's cost.

Worker class. The default is gunicorn's sync workers, 2 per core. Measured here (2 cores,
16 connections, closed loop) throughput was the same within noise for sync x4, gthread 4x2,
2x4 and 3x3 (~80 messages/s with the app as it is, ~270-320 with a leaner ingest path), but
p95 was lower with sync (215-256 ms vs 420-510 ms for gthread 4x2; 74-84 vs 115-135 with
the leaner path). A sync worker accepts a connection only when it is free, so a message never
waits behind another in a busy process; gthread workers accept while busy and keep-alive pins
a connection to its worker, so requests queue unevenly and share one GIL. What sync gives up
is keep-alive (each message opens a TCP connection), which costs little on loopback or behind
a reverse proxy. `--worker-class gthread --worker-threads N` compares.

CPU accounting. This machine is shared: wall-clock rates move with whatever else runs. The
JSON therefore also gives the CPU milliseconds each message cost in gunicorn, the
PostgreSQL backends, Redis and the load generator, the share of the machine other processes
took meanwhile, and `cpu_bound_messages_per_s`: the rate the measured CPU cost per message
allows when all cores are free (an upper bound; it ignores latency).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
LUA_SCRIPT = Path(__file__).resolve().with_suffix(".lua")
BIN = Path(sys.executable).parent

DEFAULT_DATABASE_URL = "postgres://csbot:csbot@127.0.0.1:5433/csbot"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
TARGET_RATIO = 0.8
TARGET_RATE = 100.0
TARGET_P95_MS = 100.0
PACED_TOLERANCE = 0.99
WSGI_APP = "csbot.wsgi:application"
FLOOR_APP = "bench.ingest_floor:application"
CELERY_QUEUE = "celery"
FLOOR_QUEUE = "floor"  # bench/ingest_floor.py's list (not imported: it reads env at import)
VARIANTS = ("csbot", "floor")
SHAPES = ("closed", "offered")
SEED_FLAG = "--internal-seed"
SEED_OUTPUT_PREFIX = "BENCH_SEED="
WRK_OUTPUT_PREFIX = "BENCH_JSON "
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

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
    rate: float
    workers: int
    worker_class: str
    worker_threads: int
    app: str
    variants: tuple[str, ...]
    shapes: tuple[str, ...]
    conversations: int
    database_url: str
    broker_url: str
    keep: bool
    python_load: bool

    @property
    def database_name(self) -> str:
        return urlsplit(self.database_url).path.lstrip("/")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def parse_args(argv: list[str]) -> Config:
    cpus = cpu_count()
    parser = argparse.ArgumentParser(
        description="Benchmark POST /api/v1/messages under gunicorn on PostgreSQL.",
        epilog="DATABASE_URL and CELERY_BROKER_URL name the servers (default: those of "
        "scripts/services.sh); the bench uses its own database and Redis db on them.",
    )
    add = parser.add_argument
    add("--duration", type=float, default=20.0, help="measured seconds (20)")
    add("--warmup", type=float, default=5.0, help="warm-up seconds, not measured (5)")
    add("--connections", type=int, default=16, help="open connections (16)")
    add("--threads", type=int, default=1, help="wrk threads (1)")
    add("--rate", type=float, default=TARGET_RATE, help="offered messages/s (100)")
    add("--workers", type=int, default=2 * cpus, help=f"gunicorn workers (2 x cores = {2 * cpus})")
    add("--worker-class", choices=("sync", "gthread"), default="sync", help="(sync)")
    add("--worker-threads", type=int, default=2, help="threads per gthread worker (2)")
    add("--app", default=WSGI_APP, help=f"csbot's WSGI application ({WSGI_APP})")
    add("--variants", default=",".join(VARIANTS), help="csbot, floor or both (csbot,floor)")
    add("--shapes", default=",".join(SHAPES), help="closed, offered or both (closed,offered)")
    add("--conversations", type=int, default=2000, help="conversation pool size (2000)")
    add("--db-name", default="csbot_bench", help="scratch database, dropped after (csbot_bench)")
    add("--redis-db", type=int, default=3, help="Redis db number for the broker, flushed (3)")
    add("--keep", action="store_true", help="keep the bench database afterwards")
    add("--python-load", action="store_true", help="use the Python load generator, not wrk")
    args = parser.parse_args(argv)
    if min(args.connections, args.threads, args.workers, args.worker_threads) < 1:
        parser.error("--connections, --threads, --workers and --worker-threads must be >= 1")
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections")
    if args.duration <= 0 or args.warmup < 0 or args.rate <= 0 or args.conversations < 1:
        parser.error("--duration and --rate must be > 0; --warmup >= 0; --conversations >= 1")
    variants = tuple(x for x in VARIANTS if x in args.variants.split(","))
    shapes = tuple(x for x in SHAPES if x in args.shapes.split(","))
    if (
        not variants
        or not shapes
        or len(variants) + len(shapes) != len(args.variants.split(",") + args.shapes.split(","))
    ):
        parser.error(f"--variants: some of {VARIANTS}; --shapes: some of {SHAPES}")

    database = urlsplit(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    if database.scheme not in ("postgres", "postgresql", "pgsql"):
        parser.error(f"DATABASE_URL must point to PostgreSQL, not {database.scheme!r}")
    if database.path.lstrip("/") == args.db_name:
        parser.error(f"--db-name {args.db_name!r} is the database in DATABASE_URL: pick another")

    broker = urlsplit(os.environ.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL))
    if broker.scheme not in ("redis", "rediss"):
        broker = urlsplit(DEFAULT_BROKER_URL)  # the server scripts/services.sh starts
    elif (broker.path.strip("/") or "0") == str(args.redis_db):
        parser.error(f"--redis-db {args.redis_db} is CELERY_BROKER_URL's db: it would be flushed")

    return Config(
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        threads=args.threads,
        rate=args.rate,
        workers=args.workers,
        worker_class=args.worker_class,
        worker_threads=args.worker_threads,
        app=args.app,
        variants=variants,
        shapes=shapes,
        conversations=args.conversations,
        database_url=urlunsplit(database._replace(path=f"/{args.db_name}")),
        broker_url=urlunsplit(broker._replace(path=f"/{args.redis_db}")),
        keep=args.keep,
        python_load=args.python_load,
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
        # As the figures before the shared-cache rule were taken: rate limits per process.
        CACHE_URL=os.environ.get("CACHE_URL") or "locmem://",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


# --- Database, seed and broker ----------------------------------------------------------------


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def _server_conn(config: Config) -> psycopg.Connection[Any]:
    """A connection to the server's maintenance database (a database cannot drop itself)."""
    return _connect(urlunsplit(urlsplit(config.database_url)._replace(path="/postgres")))


def _drop(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def database_create(config: Config) -> None:
    with _server_conn(config) as conn:
        _drop(conn, config.database_name)  # a leftover from an interrupted run
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config.database_name)))


def database_drop(config: Config) -> None:
    with _server_conn(config) as conn:
        _drop(conn, config.database_name)


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
    from django.utils import timezone

    from csbot import services
    from csbot.models import AgentProfile, Channel, Team
    from drafting.models import CascadePolicy, CascadeTier, EndpointPrice, ModelEndpoint

    with transaction.atomic():
        team = Team.objects.create(name="Bench Support")
        channel = Channel.objects.create(team=team, name="bench-chat")
        agent = get_user_model().objects.create_user("bench-agent", email="agent@example.com")
        AgentProfile.objects.create(user=agent, team=team)
        endpoint = ModelEndpoint.objects.create(
            name="bench-local",
            kind=ModelEndpoint.Kind.LOCAL,
            model_name="smollm2-135m-instruct",
            max_output_tokens=96,
        )
        EndpointPrice.objects.create(
            endpoint=endpoint, effective_from=timezone.now(), gpu_hour_usd=Decimal("0.80")
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
    seeded = {"token": key, "channel": channel.pk, "team": team.pk, "policy": policy.pk}
    print(f"{SEED_OUTPUT_PREFIX}{json.dumps(seeded)}")


@dataclass(frozen=True)
class Seeded:
    """What the seed made that the load generator and the floor need."""

    token: str
    channel: int
    team: int
    policy: int


def prepare(config: Config) -> Seeded:
    """Create, migrate and seed the bench database."""
    log(f"creating database {config.database_name}")
    database_create(config)
    log("migrating")
    run_django(config, sys.executable, "manage.py", "migrate", "--noinput", "-v", "0")
    log("seeding team, channel, agent, policy (hold-out 0) and token")
    out = run_django(config, sys.executable, str(Path(__file__).resolve()), SEED_FLAG)
    for line in out.splitlines():
        if line.startswith(SEED_OUTPUT_PREFIX):
            return Seeded(**json.loads(line.removeprefix(SEED_OUTPUT_PREFIX)))
    raise RuntimeError(f"the seed printed no key:\n{out}")


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
            SELECT count(*), coalesce(sum(n), 0), count(*) FILTER (WHERE n <> 1),
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


def draft_ids(config: Config, message_prefix: str) -> set[int]:
    with _connect(config.database_url) as conn:
        rows = conn.execute(
            "SELECT d.id FROM drafting_draft d JOIN csbot_message m ON m.id = d.message_id"
            " WHERE m.channel_message_id LIKE %s",
            (message_prefix + "-%",),
        ).fetchall()
    return {int(draft_id) for (draft_id,) in rows}


def queued_tasks(broker: redis.Redis, queue: str) -> list[int]:
    """The draft id of every task message in the queue (Celery's protocol 2 headers; the
    floor writes the same)."""
    return [
        int(json.loads(raw)["headers"]["argsrepr"].strip("(),"))
        for raw in broker.lrange(queue, 0, -1)
    ]


def settle(config: Config, message_prefix: str, timeout_s: float = 15.0) -> None:
    """Wait for requests the load generator abandoned at its deadline to finish server-side."""
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        now = stored_counts(config, message_prefix).messages
        if now == last:
            return
        last = now
        time.sleep(0.5)


def database_backends(config: Config) -> set[int]:
    """PIDs of the PostgreSQL backends serving the bench database (gunicorn's connections)."""
    with _connect(config.database_url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return {int(pid) for (pid,) in rows}


# --- CPU accounting ---------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process; 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def child_pids(parent: int) -> set[int]:
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                pids.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def machine_jiffies() -> tuple[int, int, int]:
    """(busy, iowait, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle, iowait = values[3], values[4]
    return sum(values) - idle - iowait, iowait, sum(values)


def own_children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


@dataclass(frozen=True)
class CpuSample:
    gunicorn: float
    postgres: float
    redis: float
    load_generator: float
    machine_busy: float
    machine_iowait: float
    machine_total: float


@dataclass
class CpuMeter:
    """CPU seconds spent by each part of the bench between two samples."""

    config: Config
    broker: redis.Redis
    gunicorn_pid: int
    gunicorn_pids: set[int] = field(default_factory=set)
    backend_pids: set[int] = field(default_factory=set)

    def sample(self) -> CpuSample:
        # Workers and backends persist (CONN_MAX_AGE); sampled pids accumulate over the run.
        self.gunicorn_pids |= {self.gunicorn_pid, *child_pids(self.gunicorn_pid)}
        self.backend_pids |= database_backends(self.config)
        busy, iowait, total = machine_jiffies()
        return CpuSample(
            gunicorn=sum(process_cpu_s(pid) for pid in self.gunicorn_pids),
            postgres=sum(process_cpu_s(pid) for pid in self.backend_pids),
            redis=redis_cpu_s(self.broker),
            # wrk is a waited-for child; the Python generator runs in this process.
            load_generator=own_children_cpu_s() + own_cpu_s(),
            machine_busy=busy / CLOCK_TICKS,
            machine_iowait=iowait / CLOCK_TICKS,
            machine_total=total / CLOCK_TICKS,
        )


def cpu_report(before: CpuSample, after: CpuSample, messages: int, cpus: int) -> dict[str, Any]:
    parts = {
        "gunicorn": after.gunicorn - before.gunicorn,
        "postgres": after.postgres - before.postgres,
        "redis": after.redis - before.redis,
        "load_generator": after.load_generator - before.load_generator,
    }
    ours = sum(parts.values())
    busy = after.machine_busy - before.machine_busy
    iowait = after.machine_iowait - before.machine_iowait
    total = after.machine_total - before.machine_total
    per_message = {name: 1000 * seconds / max(messages, 1) for name, seconds in parts.items()}
    per_message["total"] = 1000 * ours / max(messages, 1)
    return {
        "cpu_ms_per_message": {name: round(ms, 2) for name, ms in per_message.items()},
        "cpu_bound_messages_per_s": round(cpus * 1000 / per_message["total"], 1)
        if per_message["total"]
        else None,
        "other_processes_cpu_share": round(max(0.0, busy - ours) / total, 3) if total else None,
        # CPUs idle while waiting for the disk (e.g. PostgreSQL's commit fsync under I/O load).
        "iowait_share": round(iowait / total, 3) if total else None,
    }


# --- gunicorn ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    config: Config
    log_file: IO[bytes]
    app: str
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def description(self) -> str:
        version = importlib.metadata.version("gunicorn")
        kind = self.config.worker_class
        if kind == "gthread":
            kind = f"gthread x{self.config.worker_threads} threads"
        return f"gunicorn {version} {self.app}, {self.config.workers} {kind} workers"

    def start(self) -> None:
        command = [
            str(BIN / "gunicorn"),
            self.app,
            f"--bind=127.0.0.1:{self.port}",
            f"--workers={self.config.workers}",
            f"--worker-class={self.config.worker_class}",
            "--log-level=warning",
            # Load Django once before forking: workers are ready together and quickly, so
            # the warm-up is not spent booting 2 x cores Django processes on 2 cores.
            "--preload",
        ]
        if self.config.worker_class == "gthread":
            command.append(f"--threads={self.config.worker_threads}")
        log(f"starting {self.description} on port {self.port}")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=self.log_file,
            stderr=self.log_file,
        )
        self._wait_until_answering()

    def _wait_until_answering(self, timeout_s: float = 60.0) -> None:
        """Until every worker is forked and one answers HTTP (any status will do)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            if len(child_pids(self.pid)) >= self.config.workers and self._answers():
                return
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within {timeout_s:.0f}s")

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/api/v1/messages")
            conn.getresponse().read()
            return True
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # graceful: workers finish their request
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        self.log_file.flush()
        text = Path(self.log_file.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


# --- Load generation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One load run: its own channel_message_id prefix; conversations shared across phases."""

    name: str
    duration_s: float
    message_prefix: str
    conv_prefix: str
    rate: float  # offered messages/s; 0: closed loop


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


def run_wrk(config: Config, port: int, token: str, phase: Phase) -> LoadResult:
    wrk = shutil.which("wrk")
    assert wrk is not None
    command = [
        wrk,
        f"--threads={config.threads}",
        f"--connections={config.connections}",
        f"--duration={max(1, round(phase.duration_s))}s",
        "--timeout=10s",
        f"--script={LUA_SCRIPT}",
        f"http://127.0.0.1:{port}/api/v1/messages",
        "--",
        token,
        phase.message_prefix,
        phase.conv_prefix,
        str(config.conversations),
    ]
    env = dict(os.environ, BENCH_RATE_PER_THREAD=str(phase.rate / config.threads))
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    line = next((x for x in done.stdout.splitlines() if x.startswith(WRK_OUTPUT_PREFIX)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix(WRK_OUTPUT_PREFIX))
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
    config: Config, port: int, token: str, phase: Phase, number: int, stop_at: float, tally: _Tally
) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Token {token}"}
    interval = config.connections / phase.rate if phase.rate else 0.0
    next_slot = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    counter = 0
    while time.monotonic() < stop_at:
        if interval:
            time.sleep(max(0.0, next_slot - time.monotonic()))
            next_slot += interval
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
    rank = min(len(ordered) - 1, max(0, int(percent / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank] * 1000


def run_python_load(config: Config, port: int, token: str, phase: Phase) -> LoadResult:
    """Fallback without wrk: one thread per connection, http.client with keep-alive. The GIL
    and its own CPU use (on the server's cores) make it pessimistic: compare with care."""
    tallies = [_Tally() for _ in range(config.connections)]
    started = time.monotonic()
    stop_at = started + phase.duration_s
    clients = [
        threading.Thread(
            target=_python_client,
            args=(config, port, token, phase, number, stop_at, tally),
            daemon=True,
        )
        for number, tally in enumerate(tallies, start=1)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    elapsed = time.monotonic() - started
    latencies = sorted(x for tally in tallies for x in tally.latencies_s)
    return LoadResult(
        generator="python http.client threads",
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


def use_wrk(config: Config) -> bool:
    return not config.python_load and shutil.which("wrk") is not None


def run_load(config: Config, port: int, token: str, phase: Phase) -> LoadResult:
    rate = f"{phase.rate:g} messages/s offered" if phase.rate else "closed loop"
    log(f"{phase.name}: {phase.duration_s:g}s, {config.connections} connections, {rate}")
    if use_wrk(config):
        return run_wrk(config, port, token, phase)
    return run_python_load(config, port, token, phase)


# --- Main -------------------------------------------------------------------------------------


@contextmanager
def bench_database(config: Config) -> Iterator[Seeded]:
    try:
        yield prepare(config)
    finally:
        if config.keep:
            log(f"keeping database {config.database_name}")
        else:
            log(f"dropping database {config.database_name}")
            database_drop(config)


def server_for(config: Config, variant: str, seeded: Seeded, log_file: IO[bytes]) -> Server:
    """csbot as configured, or the floor (same gunicorn settings) with what it must know."""
    env = bench_env(config)
    if variant == "csbot":
        return Server(config, log_file, app=config.app, env=env)
    env.update(
        BENCH_FLOOR_DATABASE_URL=config.database_url,
        BENCH_FLOOR_REDIS_URL=config.broker_url,
        BENCH_FLOOR_TOKEN=seeded.token,
        BENCH_FLOOR_CHANNEL=str(seeded.channel),
        BENCH_FLOOR_TEAM=str(seeded.team),
        BENCH_FLOOR_POLICY=str(seeded.policy),
    )
    return Server(config, log_file, app=FLOOR_APP, env=env)


@contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.start()
        yield server
    except BaseException:
        log(f"gunicorn log (last lines):\n{server.log_tail()}")
        raise
    finally:
        log("stopping gunicorn")
        server.stop()


@dataclass(frozen=True)
class Measurement:
    variant: str
    shape: str
    rate: float
    load: LoadResult
    stored: StoredCounts
    tasks: list[int]  # the draft id of each task in the queue, repeats included
    phase_drafts: set[int]
    cpu: dict[str, Any]


def measure(
    config: Config, server: Server, token: str, broker: redis.Redis, variant: str, shape: str
) -> Measurement:
    rate = config.rate if shape == "offered" else 0.0
    run_id = f"{variant}-{shape}-{int(time.time())}"
    # Shared by both shapes of a variant: the offered run meets conversations the closed
    # loop opened, as a second run against a live server would.
    conversations = f"{variant}-conv"
    if config.warmup_s > 0:
        warmup = Phase("warm-up", config.warmup_s, f"{run_id}-warm", conversations, rate)
        run_load(config, server.port, token, warmup)
        settle(config, warmup.message_prefix)
    broker.flushdb()  # count only the measured run's tasks
    measured = Phase(f"{variant} {shape}", config.duration_s, f"{run_id}-main", conversations, rate)
    meter = CpuMeter(config, broker, server.pid)
    before = meter.sample()
    load = run_load(config, server.port, token, measured)
    after = meter.sample()
    settle(config, measured.message_prefix)
    stored = stored_counts(config, measured.message_prefix)
    tasks = queued_tasks(broker, CELERY_QUEUE if variant == "csbot" else FLOOR_QUEUE)
    phase_drafts = draft_ids(config, measured.message_prefix)
    if load.non_2xx or load.socket_errors:
        log(f"errors during the run; gunicorn log (last lines):\n{server.log_tail()}")
    cpu = cpu_report(before, after, stored.messages, cpu_count())
    return Measurement(
        variant,
        shape,
        rate,
        load=load,
        stored=stored,
        tasks=tasks,
        phase_drafts=phase_drafts,
        cpu=cpu,
    )


def measurement_json(config: Config, result: Measurement) -> dict[str, Any]:
    load, stored = result.load, result.stored
    messages_per_s = load.status_201 / load.duration_s if load.duration_s else 0.0
    # wrk stops at its deadline without waiting for the requests in flight: the server still
    # stores those (at most one per connection), so they are messages without a counted 201.
    unanswered = stored.messages - load.status_201
    checks = {
        "messages_match_201s": 0 <= unanswered <= config.connections,
        "one_draft_per_message": stored.messages_without_one_draft == 0
        and stored.drafts == stored.messages,
        # By draft id: a warm-up message still publishing when the queue was emptied (its
        # commit counted, its task not yet sent) must not pass for one of the measured run's.
        "one_task_per_draft": sorted(t for t in result.tasks if t in result.phase_drafts)
        == sorted(result.phase_drafts),
        "no_holdouts": stored.drafts_by_status.get("held_out", 0) == 0,
        "no_errors": load.non_2xx == 0 and load.socket_errors == 0,
    }
    return {
        "load": f"{result.rate:g} messages/s offered" if result.rate else "closed loop",
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
        "tasks_enqueued": len(result.tasks),
        "tasks_for_this_run": sum(t in result.phase_drafts for t in result.tasks),
        "checks": checks,
        **result.cpu,
    }


def _ratio(csbot: dict[str, Any] | None, floor: dict[str, Any] | None) -> float | None:
    if csbot is None or floor is None or not floor["messages_per_s"]:
        return None
    return round(csbot["messages_per_s"] / floor["messages_per_s"], 3)


def report(
    config: Config, servers: dict[str, str], results: list[Measurement], load_avg: list[float]
) -> dict[str, Any]:
    runs = {(r.variant, r.shape): measurement_json(config, r) for r in results}
    variants: dict[str, Any] = {
        variant: {"server": servers[variant]}
        | {shape: runs[variant, shape] for shape in config.shapes}
        for variant in config.variants
    }
    ratio = {
        shape: _ratio(runs.get(("csbot", shape)), runs.get(("floor", shape)))
        for shape in config.shapes
    }
    offered = runs.get(("csbot", "offered"))
    offered_ratio = ratio.get("offered")
    met = (
        offered is not None
        and offered_ratio is not None
        and config.rate >= TARGET_RATE
        and offered_ratio >= TARGET_RATIO
        and offered["latency_ms"]["p95"] <= TARGET_P95_MS
        and all(offered["checks"].values())
        and all(runs["csbot", shape]["checks"].values() for shape in config.shapes)
    )
    summary = {
        f"{variant} {shape}": {
            "messages_per_s": runs[variant, shape]["messages_per_s"],
            "p50_ms": runs[variant, shape]["latency_ms"]["p50"],
            "p95_ms": runs[variant, shape]["latency_ms"]["p95"],
            "cpu_ms_per_message": runs[variant, shape]["cpu_ms_per_message"]["total"],
        }
        for variant, shape in runs
    }
    return {
        "bench": "ingest",
        "summary": summary,
        "ratio": ratio,
        "targets": {"ratio": TARGET_RATIO, "rate": TARGET_RATE, "p95_ms": TARGET_P95_MS},
        "met": met,
        "worker_class": config.worker_class,
        "workers": config.workers,
        "worker_threads": config.worker_threads if config.worker_class == "gthread" else 1,
        "load_generator": results[0].load.generator
        + ("" if use_wrk(config) else " (wrk not used)"),
        "connections": config.connections,
        "offered_rate": config.rate,
        "variants": variants,
        "machine": {
            "cpus": cpu_count(),
            "load_avg_1m_at_start": round(load_avg[0], 2),
            "load_avg_1m_at_end": round(load_avg[-1], 2),
            "python": sys.version.split()[0],
        },
    }


def main(argv: list[str]) -> int:
    if argv == [SEED_FLAG]:
        seed()
        return 0
    config = parse_args(argv)
    load_avg = [os.getloadavg()[0]]
    broker = redis.Redis.from_url(config.broker_url)
    broker.flushdb()
    results: list[Measurement] = []
    servers: dict[str, str] = {}
    try:
        with bench_database(config) as seeded:
            for variant in config.variants:
                with (
                    tempfile.NamedTemporaryFile(prefix="bench-gunicorn-", suffix=".log") as log,
                    running(server_for(config, variant, seeded, log)) as server,
                ):
                    servers[variant] = server.description
                    for shape in config.shapes:
                        results.append(
                            measure(config, server, seeded.token, broker, variant, shape)
                        )
    finally:
        broker.flushdb()
    load_avg.append(os.getloadavg()[0])
    print(json.dumps(report(config, servers, results, load_avg)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
