"""Load and fault bench: ingest + console pages + agent actions, with Celery drafting behind.

    .venv/bin/python bench/load.py                 # steady load (make bench-load)
    .venv/bin/python bench/load.py --faults        # faults under load (make bench-faults)

The bench owns every server it uses, so it can restart them without touching anyone else's:
a PostgreSQL cluster (initdb in a temporary folder), a Redis server, gunicorn (sync workers),
one Celery worker (prefork), Celery beat (the sweeper that re-enqueues lost drafts), and two
OpenAI-compatible model servers standing in for the tiers: "local" (LOCAL_LLM_URL, what vLLM
is in production) and "paid" (a paid API). They answer after --llm-delay-ms; the local one
answers with confident tokens except for a share of messages (--escalate-share), which
escalate to the paid tier. `--local-llm-url` points tier 1 at a real vLLM server instead.

Steady run (`--rate`, default 250 messages/s, `--duration` 30 s):
- ingest: wrk (bench/ingest.lua) posts messages on a fixed schedule (open loop), each a new
  channel_message_id, in a pool of `--conversations`;
- console: `--agents` agents (threads here) log in, open the queue, open the first waiting
  conversation nobody else holds (opening claims it, as in the browser) and, when its draft
  is ready, accept it (or edit it) through the reply form, with the CSRF token, as the
  browser does; a conversation found taken meanwhile is left for the queue's next one;
- drafts flow meanwhile: the worker drafts through the cascade;
- afterwards the bench waits until no draft is queued or generating, then counts from the
  database: every stored inbound message must have exactly one draft, in a final state.

Fault run (`--faults`): the same with a retrying Python ingest client (an integration resends
a message until it gets an answer; the server must treat the resend as a duplicate) and, one
after another: Redis restarted (its queue is lost: nothing persists in it), PostgreSQL
restarted, the worker's pool processes killed while drafts are generating, the local model
server stopped for a while. Counted: messages the client saw accepted, messages stored,
messages lost (accepted, not stored), duplicates (one channel message id stored twice, a
message with two drafts, a draft with two actions, an inbound message answered twice).

Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import http.client
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg

# The same customer messages and port picking as the ingest bench (bench/ is on sys.path when
# a bench runs as a script).
from ingest import TEXTS, free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LUA_SCRIPT = ROOT / "bench" / "ingest.lua"
TARGET_MESSAGES_PER_S = 250.0
TARGET_P95_MS = 100.0
AGENT_PASSWORD = "bench-agent-password"  # noqa: S105 - a throwaway user of a throwaway database
SEED_PREFIX = "BENCH_KEY="
REPLY = "Thanks for writing! I have checked your order and a colleague will mail you today."


def log(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)


def percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


# --- Model servers ----------------------------------------------------------------------------


def serve_llm(port: int, delay_ms: float, escalate_share: float) -> None:
    """An OpenAI-compatible chat server (runs as `load.py --internal-llm`, a child process, so
    the fault run can stop it). Confident tokens, except for a share of customer messages
    (chosen by a hash of the text, so a retry gets the same answer)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.endswith("/models"):
                self._send({"object": "list", "data": [{"id": "bench", "object": "model"}]})
            else:  # /health, as vLLM has
                self._send({})

        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(delay_ms / 1000)
            last = str(payload["messages"][-1].get("content", ""))
            unsure = (zlib.crc32(last.encode()) % 1000) / 1000 < escalate_share
            logprob = -3.0 if unsure else -0.05
            tokens: list[dict[str, Any]] = [
                {"token": word, "logprob": logprob, "bytes": None, "top_logprobs": []}
                for word in REPLY.split()
            ]
            self._send(
                {
                    "id": "bench",
                    "object": "chat.completion",
                    "created": 0,
                    "model": payload["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": REPLY},
                            "logprobs": {"content": tokens},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 150, "completion_tokens": 24, "total_tokens": 174},
                }
            )

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


# --- Processes --------------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process the bench starts, stops and restarts (its output goes to a log file)."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_dir: Path
    nice: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log_file = (self.log_dir / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def children(self) -> list[int]:
        if self.process is None:
            return []
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    pids.append(int(stat.parent.name))
            except (OSError, ValueError, IndexError):
                continue
        return pids


def wait_for(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001, S110 - not up yet: any error means "try again"
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user + system CPU seconds) of every process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            table[int(stat.parent.name)] = (
                int(fields[1]),
                (int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
            )
        except (OSError, ValueError, IndexError):
            continue
    return table


def tree_cpu_s(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each named process and its descendants (alive now)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    totals = {}
    for name, root in roots.items():
        seen, stack, total = set(), [root], 0.0
        while stack:
            pid = stack.pop()
            if pid in seen or pid not in table:
                continue
            seen.add(pid)
            total += table[pid][1]
            stack.extend(children.get(pid, []))
        totals[name] = total
    return totals


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores)."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


def http_ok(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status < 500
    finally:
        conn.close()


@dataclass
class Postgres:
    """A throwaway cluster of the embedded PostgreSQL (scripts/postgres.sh, the same binaries
    and settings as `make run` and the tests): its own folder and port, restartable, removed
    afterwards."""

    folder: Path
    port: int = field(default_factory=free_port)

    def _script(self, command: str) -> str:
        environment = {
            **os.environ,
            "CSBOT_PGDATA": str(self.folder / "data"),
            "PGPORT": str(self.port),
            "CSBOT_DB_NAME": "csbot",
        }
        done = subprocess.run(
            [str(ROOT / "scripts" / "postgres.sh"), command],
            env=environment,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    @property
    def url(self) -> str:
        return f"postgres://csbot:csbot@127.0.0.1:{self.port}/csbot"

    def create(self) -> None:
        self.folder.mkdir(parents=True)
        self.start()

    def start(self) -> None:
        self._script("start")

    @property
    def pid(self) -> int:
        return int(self._script("pid"))

    def restart(self) -> None:
        # "fast": what a service manager's restart does: sessions are cut, open transactions
        # roll back, committed rows stay.
        self._script("restart")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._script("stop")
        shutil.rmtree(self.folder, ignore_errors=True)


# --- Seed -------------------------------------------------------------------------------------


def seed(agents: int, paid_url: str) -> None:
    """Runs as `load.py --internal-seed` in the bench environment."""
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
        team = Team.objects.create(name="Load Support")
        channel = Channel.objects.create(team=team, name="load-chat")
        for n in range(agents):
            user = get_user_model().objects.create_user(f"agent{n}", password=AGENT_PASSWORD)
            AgentProfile.objects.create(user=user, team=team)
        local = ModelEndpoint.objects.create(
            name="local", kind=ModelEndpoint.Kind.LOCAL, model_name="bench", max_output_tokens=96
        )
        paid = ModelEndpoint.objects.create(
            name="paid", kind=ModelEndpoint.Kind.PAID, base_url=paid_url, model_name="bench"
        )
        now = timezone.now()
        EndpointPrice.objects.create(
            endpoint=local, effective_from=now, gpu_hour_usd=Decimal("0.8")
        )
        EndpointPrice.objects.create(
            endpoint=paid,
            effective_from=now,
            input_price_per_mtok=Decimal("2.50"),
            output_price_per_mtok=Decimal("10"),
        )
        policy = CascadePolicy.objects.create(
            team=team,
            name="Load cascade",
            active=True,
            system_prompt="You are a concise, friendly customer-support agent.",
            holdout_share=Decimal("0.05"),
        )
        CascadeTier.objects.create(
            policy=policy, position=1, endpoint=local, threshold=Decimal("0.5")
        )
        CascadeTier.objects.create(policy=policy, position=2, endpoint=paid, threshold=Decimal("0"))
        _, key = services.api_token_create(channel=channel, name="load")
    print(f"{SEED_PREFIX}{key}")


# --- Agents (console) -------------------------------------------------------------------------

CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
# A waiting row nobody else holds: another agent's claim adds " taken" to the class.
WAITING_RE = re.compile(r'<tr data-href="/console/c/(\d+)" class="waiting"')
TAKEN_RE = re.compile(r'id="claim" class="claim taken"')
PANEL_RE = re.compile(r'id="draft-panel-state" data-draft-id="(\d*)" data-status="(\w+)"')
TEXT_RE = re.compile(r'id="draft-text" class="draft" data-text="([^"]*)"')
INBOUND_RE = re.compile(r'name="inbound_message_id" value="(\d*)"')


@dataclass
class AgentTally:
    page_s: dict[str, list[float]] = field(
        default_factory=lambda: {"queue": [], "conversation": [], "draft_panel": [], "reply": []}
    )
    errors: dict[str, int] = field(default_factory=dict)
    replies: dict[str, int] = field(default_factory=dict)
    # Conversations an agent opened and found another agent holding (lost the claim race).
    found_taken: int = 0


class Browser:
    """Just enough of a browser: cookies, CSRF header and form posts over one connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.location: str | None = None  # of the last redirect
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Referer"] = f"http://127.0.0.1:{self.port}{path}"
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            text = response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            raise
        self.location = response.getheader("Location")
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0]
        return response.status, text

    def login(self, username: str) -> None:
        _, page = self.request("GET", "/login/")
        token = CSRF_RE.search(page)
        assert token is not None, "no CSRF token on the login page"
        status, _ = self.request(
            "POST",
            "/login/",
            {
                "csrfmiddlewaretoken": token.group(1),
                "username": username,
                "password": AGENT_PASSWORD,
            },
        )
        if status != 302:
            raise RuntimeError(f"login of {username} answered {status}")


def agent_loop(
    port: int,
    number: int,
    stop: threading.Event,
    tally: AgentTally,
    lock: threading.Lock,
    edit_share: float,
    think_s: float,
) -> None:
    browser = Browser(port)
    rng = random.Random(number)
    while not stop.is_set():
        try:
            browser.login(f"agent{number}")
            break
        except (OSError, http.client.HTTPException, RuntimeError):
            time.sleep(1)

    def timed(
        kind: str, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, str]:
        started = time.perf_counter()
        try:
            status, text = browser.request(method, path, form)
        except (OSError, http.client.HTTPException):
            with lock:
                tally.errors[f"{kind}:connection"] = tally.errors.get(f"{kind}:connection", 0) + 1
            raise
        with lock:
            tally.page_s[kind].append(time.perf_counter() - started)
            if status >= 500 or (status >= 400 and status != 404):
                tally.errors[f"{kind}:{status}"] = tally.errors.get(f"{kind}:{status}", 0) + 1
        return status, text

    # As the console works: the queue, then its first waiting conversation nobody holds
    # (opening it claims it: agents spread instead of converging on the oldest one); the
    # draft panel is polled every second while the draft is coming (htmx); the agent reads
    # for --think-ms, sends, and the reply's redirect opens the next waiting conversation
    # nobody else holds (or the queue when none is left).
    path: str | None = None
    while not stop.is_set():
        try:
            if path is None or not path.startswith("/console/c/"):
                status, page = timed("queue", "GET", "/console/")
                waiting = WAITING_RE.findall(page) if status == 200 else []
                if not waiting:
                    time.sleep(think_s)
                    path = None
                    continue
                path = f"/console/c/{waiting[0]}"
            pk = path.removeprefix("/console/c/")
            status, page = timed("conversation", "GET", path)
            panel, csrf, inbound = (
                PANEL_RE.search(page),
                CSRF_RE.search(page),
                INBOUND_RE.search(page),
            )
            if (
                status != 200
                or panel is None
                or csrf is None
                or not inbound
                or not inbound.group(1)
            ):
                path = None
                continue
            if TAKEN_RE.search(page):  # someone opened it between our queue and now
                with lock:
                    tally.found_taken += 1
                path = None
                continue
            draft_id, draft_status = panel.groups()
            polls = 0
            while draft_status in ("queued", "generating") and polls < 10 and not stop.is_set():
                time.sleep(1.0)
                polls += 1
                status, fragment = timed("draft_panel", "GET", f"{path}/draft")
                found = PANEL_RE.search(fragment)
                if found is None:
                    break
                draft_id, draft_status = found.groups()
                page = fragment
            time.sleep(think_s)
            text_match = TEXT_RE.search(page)
            form = {
                "csrfmiddlewaretoken": csrf.group(1),
                "inbound_message_id": inbound.group(1),
                "draft_id": draft_id,
            }
            if draft_status == "ready" and text_match is not None:
                draft_text = html.unescape(text_match.group(1))
                if rng.random() < edit_share:
                    form.update(kind="edit", text=draft_text + " Kind regards, the support team.")
                else:
                    form.update(kind="use", text=draft_text)
            else:  # no draft after ten seconds: the agent writes the reply
                form.update(
                    kind="none", text="Thanks, we are looking into it and will reply today."
                )
            status, _ = timed("reply", "POST", f"/console/c/{pk}/reply", form)
            path = browser.location if status == 302 else None
            with lock:
                tally.replies[form["kind"]] = tally.replies.get(form["kind"], 0) + 1
        except (OSError, http.client.HTTPException):
            path = None
            time.sleep(0.5)


# --- Ingest -----------------------------------------------------------------------------------


def run_wrk(
    port: int,
    token: str,
    rate: float,
    duration: float,
    conversations: int,
    prefix: str,
    connections: int,
) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (scripts/services.sh up installs it)")
    command = [
        wrk,
        "--threads=2",
        f"--connections={connections}",
        f"--duration={max(1, round(duration))}s",
        "--timeout=10s",
        f"--script={LUA_SCRIPT}",
        f"http://127.0.0.1:{port}/api/v1/messages",
        "--",
        token,
        prefix,
        f"{prefix}-conv",
        str(conversations),
    ]
    env = dict(os.environ, BENCH_RATE_PER_THREAD=str(rate / 2))
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    return data


@dataclass
class IngestTally:
    accepted: set[str] = field(default_factory=set)  # channel message ids answered 2xx
    created: int = 0  # 201
    duplicate_answers: int = 0  # 200: the server recognised a resend
    retries: int = 0
    gave_up: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


def ingest_client(
    port: int,
    token: str,
    rate: float,
    stop: threading.Event,
    number: int,
    prefix: str,
    conversations: int,
    tally: IngestTally,
    lock: threading.Lock,
) -> None:
    """An integration that resends a message until it gets an answer (2xx or 4xx), as a
    webhook sender does: what it saw accepted must be stored once."""
    rng = random.Random(number)
    headers = {"Content-Type": "application/json", "Authorization": f"Token {token}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    next_slot = time.monotonic()
    counter = 0
    while not stop.is_set():
        time.sleep(max(0.0, next_slot - time.monotonic()))
        next_slot += 1 / rate
        counter += 1
        message_id = f"{prefix}-{number}-{counter}"
        conversation = rng.randrange(conversations)
        body = json.dumps(
            {
                "conversation_external_id": f"{prefix}-conv-{conversation}",
                "channel_message_id": message_id,
                "text": rng.choice(TEXTS),
                "customer_ref": f"customer-{conversation}",
            }
        )
        give_up_at = time.monotonic() + 120
        while True:
            started = time.perf_counter()
            try:
                conn.request("POST", "/api/v1/messages", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
                status = 0
            with lock:
                tally.latencies_s.append(time.perf_counter() - started)
                tally.statuses[str(status)] = tally.statuses.get(str(status), 0) + 1
                if 200 <= status < 300:
                    tally.accepted.add(message_id)
                    if status == 201:
                        tally.created += 1
                    else:
                        tally.duplicate_answers += 1
            if 200 <= status < 500 and status != 429:
                break
            if time.monotonic() > give_up_at:
                with lock:
                    tally.gave_up.append(message_id)
                break
            with lock:
                tally.retries += 1
            time.sleep(0.5)


# --- Counting ---------------------------------------------------------------------------------


def counts(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        messages = conn.execute(
            "SELECT count(*) FROM csbot_message WHERE direction = 'in'"
        ).fetchone()
        per_message = conn.execute(
            """
            SELECT count(*) FILTER (WHERE n = 0), count(*) FILTER (WHERE n > 1)
              FROM (SELECT m.id, count(d.id) AS n FROM csbot_message m
                      LEFT JOIN drafting_draft d ON d.message_id = m.id
                     WHERE m.direction = 'in' GROUP BY m.id) AS x
            """
        ).fetchone()
        statuses: dict[str, int] = dict(
            conn.execute("SELECT status, count(*) FROM drafting_draft GROUP BY status").fetchall()
        )
        duplicate_ids = conn.execute(
            """SELECT count(*) FROM (SELECT channel_id, channel_message_id FROM csbot_message
                WHERE direction = 'in' GROUP BY 1, 2 HAVING count(*) > 1) AS x"""
        ).fetchone()
        actions = conn.execute("SELECT count(*) FROM drafting_agentaction").fetchone()
        replies = conn.execute(
            "SELECT count(*) FROM csbot_message WHERE direction = 'out'"
        ).fetchone()
        double_actions = conn.execute(
            """SELECT count(*) FROM (SELECT draft_id FROM drafting_agentaction
                WHERE draft_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1) AS x"""
        ).fetchone()
        double_answers = conn.execute(
            """SELECT count(*) FROM (SELECT inbound_message_id FROM drafting_agentaction
                GROUP BY 1 HAVING count(*) > 1) AS x"""
        ).fetchone()
        attempts: dict[str, int] = dict(
            conn.execute(
                """SELECT e.name || ':' || a.outcome, count(*) FROM drafting_draftattempt a
                   JOIN drafting_modelendpoint e ON e.id = a.endpoint_id GROUP BY 1"""
            ).fetchall()
        )
    assert (
        messages and per_message and duplicate_ids and actions and double_actions and double_answers
    )
    return {
        "inbound_messages": messages[0],
        "messages_without_draft": per_message[0],
        "messages_with_several_drafts": per_message[1],
        "drafts_by_status": statuses,
        "duplicate_channel_message_ids": duplicate_ids[0],
        "agent_replies_sent": replies[0] if replies else None,
        "actions": actions[0],
        "drafts_with_several_actions": double_actions[0],
        "messages_answered_twice": double_answers[0],
        "attempts_by_endpoint_status": attempts,
    }


def counts_brief(url: str) -> int:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM csbot_message WHERE direction = 'in'").fetchone()
    assert row is not None
    return int(row[0])


def unfinished(url: str) -> int:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM drafting_draft WHERE status IN ('queued', 'generating')"
        ).fetchone()
    assert row is not None
    return int(row[0])


def drain(url: str, timeout: float) -> float:
    """Seconds until no draft is queued or generating (or the timeout)."""
    started = time.monotonic()
    last_log = 0.0
    while time.monotonic() - started < timeout:
        try:
            left = unfinished(url)
        except psycopg.OperationalError:
            left = -1
        if left == 0:
            return time.monotonic() - started
        if time.monotonic() - last_log > 10:
            log(f"draining: {left} drafts queued or generating")
            last_log = time.monotonic()
        time.sleep(1)
    return float("nan")


def stored_ids(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT channel_message_id FROM csbot_message WHERE direction = 'in'"
        ).fetchall()
    return {str(r[0]) for r in rows}


# --- The run ----------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--internal-llm":
        serve_llm(int(argv[1]), float(argv[2]), float(argv[3]))
        return 0
    if argv and argv[0] == "--internal-seed":
        seed(int(argv[1]), argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--faults", action="store_true", help="faults under load instead of the steady run")
    add("--rate", type=float, default=None, help="offered messages/s (250; faults: 40)")
    add("--duration", type=float, default=None, help="seconds of ingest (30; faults: 100)")
    add("--connections", type=int, default=32, help="wrk connections (32)")
    add("--conversations", type=int, default=20000, help="conversation pool (20000)")
    add("--web-workers", type=int, default=4, help="gunicorn sync workers (4)")
    add("--worker-concurrency", type=int, default=4, help="Celery prefork processes (4)")
    add("--worker-nice", type=int, default=5, help="niceness of the Celery worker (5)")
    add("--agents", type=int, default=4, help="console agents (4)")
    add("--edit-share", type=float, default=0.3, help="share of drafts the agents edit (0.3)")
    add("--think-ms", type=float, default=1000, help="an agent's reading time per reply (1000)")
    add("--llm-delay-ms", type=float, default=150, help="model servers' answer time (150)")
    add("--escalate-share", type=float, default=0.2, help="local drafts scored low (0.2)")
    add("--local-llm-url", default="", help="a real vLLM server for tier 1 (default: stub)")
    add("--drain-timeout", type=float, default=600, help="seconds to wait for drafts (600)")
    add("--keep", action="store_true", help="keep the scratch folder (logs, database)")
    args = parser.parse_args(argv)
    args.rate = args.rate or (40.0 if args.faults else TARGET_MESSAGES_PER_S)
    args.duration = args.duration or (100.0 if args.faults else 30.0)

    scratch = Path(tempfile.mkdtemp(prefix="csbot-load-"))
    scratch.chmod(0o755)  # PostgreSQL's own system account must reach its folder inside
    logs = scratch / "logs"
    logs.mkdir()
    log(f"scratch folder {scratch}")
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        result = run(args, scratch, logs, stack)
    print(json.dumps(result, indent=2))
    return 0


def run(args: argparse.Namespace, scratch: Path, logs: Path, stack: ExitStack) -> dict[str, Any]:
    postgres = Postgres(scratch / "pg")
    log(f"initdb + start the embedded PostgreSQL on port {postgres.port}")
    postgres.create()
    stack.callback(postgres.destroy)

    redis_port = free_port()
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    # No persistence: a restart empties the queue, the harshest case for "lose nothing".
    redis_proc = Proc(
        "redis",
        [redis_server, "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        dict(os.environ),
        logs,
    )
    redis_proc.start()
    stack.callback(redis_proc.stop)

    local_port, paid_port = free_port(), free_port()
    python = sys.executable
    me = str(Path(__file__).resolve())
    local_llm = Proc(
        "llm-local",
        [
            python,
            me,
            "--internal-llm",
            str(local_port),
            str(args.llm_delay_ms),
            str(args.escalate_share),
        ],
        dict(os.environ),
        logs,
    )
    paid_llm = Proc(
        "llm-paid",
        [python, me, "--internal-llm", str(paid_port), str(args.llm_delay_ms * 2), "0"],
        dict(os.environ),
        logs,
    )
    if not args.local_llm_url:
        local_llm.start()
        stack.callback(local_llm.stop)
    paid_llm.start()
    stack.callback(paid_llm.stop)
    local_url = args.local_llm_url or f"http://127.0.0.1:{local_port}/v1"

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="csbot.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="load-bench-" + "x" * 40,
        DATABASE_URL=postgres.url,
        CELERY_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
        # Rate limits and token revocations shared by the web workers, as in production; the
        # fault run restarts this Redis too (both let requests through while it is down).
        CACHE_URL=f"redis://127.0.0.1:{redis_port}/1",
        LOCAL_LLM_URL=local_url,
        EMBEDDING_BACKEND="none",
        LOG_LEVEL="WARNING",
        LOG_FORMAT="plain",
        CSBOT_VAR_DIR=str(scratch / "var"),
        # Recovery quickly enough to see within the run: a lost queue entry is re-enqueued
        # after 20 s, the sweeper looks every 5 s.
        DRAFT_STALE_SECONDS="20",
        DRAFT_SWEEP_INTERVAL_SECONDS="5",
        DRAFT_RETRY_BASE_SECONDS="2",
        BREAKER_COOLDOWN_SECONDS="5",
        API_TOKEN_CACHE_SECONDS="30",  # noqa: S106 - a number of seconds, not a secret
        CSBOT_INGEST_RATE="100000/m",
        PYTHONUNBUFFERED="1",
    )
    log("migrating and seeding")
    subprocess.run(
        [python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    # DEBUG off serves static files from the collected manifest, as in production.
    subprocess.run(
        [python, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    seeded = subprocess.run(
        [python, me, "--internal-seed", str(args.agents), f"http://127.0.0.1:{paid_port}/v1"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    token = next(x for x in seeded.stdout.splitlines() if x.startswith(SEED_PREFIX)).removeprefix(
        SEED_PREFIX
    )

    web_port = free_port()
    web = Proc(
        "web",
        [
            str(BIN / "gunicorn"),
            "csbot.wsgi:application",
            f"--bind=127.0.0.1:{web_port}",
            f"--workers={args.web_workers}",
            "--log-level=warning",
            "--preload",
        ],
        env,
        logs,
    )
    worker = Proc(
        "worker",
        [
            str(BIN / "celery"),
            "-A",
            "csbot",
            "worker",
            "--pool=prefork",
            f"--concurrency={args.worker_concurrency}",
            "--loglevel=WARNING",
            "-n",
            "load@%h",
        ],
        env,
        logs,
        nice=args.worker_nice,
    )
    beat = Proc(
        "beat",
        [
            str(BIN / "celery"),
            "-A",
            "csbot",
            "beat",
            "--loglevel=WARNING",
            "-s",
            str(scratch / "beat-schedule"),
        ],
        env,
        logs,
    )
    for proc in (web, worker, beat):
        proc.start()
        stack.callback(proc.stop)
    wait_for("gunicorn", lambda: http_ok(web_port, "/login/"))
    wait_for("celery worker", lambda: len(worker.children()) >= args.worker_concurrency)
    log(
        f"web on {web_port}, worker x{args.worker_concurrency} (nice {args.worker_nice}), beat, Redis {redis_port}, model servers {local_url} + {paid_port}"
    )

    stop_agents = threading.Event()
    agent_tally, lock = AgentTally(), threading.Lock()
    agents = [
        threading.Thread(
            target=agent_loop,
            args=(
                web_port,
                n,
                stop_agents,
                agent_tally,
                lock,
                args.edit_share,
                args.think_ms / 1000,
            ),
            daemon=True,
        )
        for n in range(args.agents)
    ]
    for thread in agents:
        thread.start()

    result: dict[str, Any] = {
        "bench": "faults" if args.faults else "load",
        "cpus": len(os.sched_getaffinity(0)),
        "offered_messages_per_s": args.rate,
        "duration_s": args.duration,
        "web": f"gunicorn x{args.web_workers} sync",
        "worker": f"celery prefork x{args.worker_concurrency}, nice {args.worker_nice}",
        "agents": args.agents,
        "model_servers": {
            "local": args.local_llm_url or f"stub, {args.llm_delay_ms:.0f} ms",
            "paid": f"stub, {2 * args.llm_delay_ms:.0f} ms",
            "escalate_share": args.escalate_share,
        },
    }

    def roots() -> dict[str, int]:
        named = {"web": web, "worker": worker, "beat": beat, "redis": redis_proc}
        found = {name: proc.process.pid for name, proc in named.items() if proc.process}
        found["postgres"] = postgres.pid
        return found

    cpu_before, busy_before = tree_cpu_s(roots()), machine_busy_s()
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    if args.faults:
        result.update(
            fault_run(args, token, web_port, postgres, redis_proc, worker, local_llm, lock)
        )
    else:
        data = run_wrk(
            web_port, token, args.rate, args.duration, args.conversations, "load", args.connections
        )
        latency = data["latency_us"]
        seconds = data["duration_us"] / 1e6
        result["ingest"] = {
            "generator": "wrk, open loop (bench/ingest.lua)",
            "requests": data["requests"],
            "created_201": data["status_201"],
            "non_2xx": data["non_2xx"],
            "socket_errors": data["socket_errors"],
            "messages_per_s": round(data["status_201"] / seconds, 1),
            "p50_ms": latency["p50"] / 1000,
            "p95_ms": latency["p95"] / 1000,
            "p99_ms": latency["p99"] / 1000,
            "max_ms": latency["max"] / 1000,
        }
    ingest_s = time.monotonic() - started
    cpu_after, busy_after = tree_cpu_s(roots()), machine_busy_s()
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    cpu["bench_agents_and_clients"] = (self_after.ru_utime + self_after.ru_stime) - (
        self_before.ru_utime + self_before.ru_stime
    )
    ours = sum(cpu.values())
    busy = busy_after - busy_before
    cpus = len(os.sched_getaffinity(0))
    stored_during = counts_brief(postgres.url)
    result["cpu_during_ingest"] = {
        "seconds_by_component": {k: round(v, 1) for k, v in cpu.items()},
        "ms_per_stored_message": {
            k: round(1000 * v / max(1, stored_during), 2) for k, v in cpu.items()
        },
        "machine_busy_share": round(busy / (cpus * ingest_s), 3),
        # wrk, the stub model servers and anyone else on the machine.
        "other_processes_share": round(max(0.0, busy - ours) / (cpus * ingest_s), 3),
        # What the machine allows when every core is free for the web, Postgres and Redis
        # alone (the drafting worker elsewhere, as in production): an upper bound.
        "ingest_path_cpu_bound_messages_per_s": round(
            cpus * stored_during / max(1e-9, cpu["web"] + cpu["postgres"] + cpu["redis"]), 1
        ),
    }
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM drafting_draft WHERE status IN ('ready', 'failed', 'held_out')"
        ).fetchone()
    result["drafts_finished_during_ingest_per_s"] = round((row[0] if row else 0) / ingest_s, 1)
    stop_agents.set()
    for thread in agents:
        thread.join(timeout=30)
    result["console"] = {
        kind: {
            "requests": len(values),
            "p50_ms": percentile_ms(values, 0.5),
            "p95_ms": percentile_ms(values, 0.95),
        }
        for kind, values in agent_tally.page_s.items()
    }
    result["console"]["errors"] = agent_tally.errors
    result["console"]["replies"] = agent_tally.replies
    result["console"]["found_taken"] = agent_tally.found_taken
    log("ingest over; waiting for every draft to finish")
    drain_s = drain(postgres.url, args.drain_timeout)
    result["drain_s_after_ingest"] = round(drain_s, 1)
    found = counts(postgres.url)
    result["stored"] = found
    if args.faults:
        accepted = result["ingest"].pop("accepted_ids")
        lost = sorted(accepted - stored_ids(postgres.url))
        result["lost_messages"] = len(lost)
        result["lost_examples"] = lost[:5]
    ok = (
        found["messages_without_draft"] == 0
        and found["messages_with_several_drafts"] == 0
        and found["duplicate_channel_message_ids"] == 0
        and found["drafts_with_several_actions"] == 0
        and found["messages_answered_twice"] == 0
        and found["drafts_by_status"].get("queued", 0) == 0
        and found["drafts_by_status"].get("generating", 0) == 0
        and result.get("lost_messages", 0) == 0
    )
    result["every_message_one_final_draft"] = ok
    if not args.faults:
        ingest = result["ingest"]
        result["target"] = {"messages_per_s": TARGET_MESSAGES_PER_S, "p95_ms": TARGET_P95_MS}
        result["met"] = bool(
            ok
            and ingest["messages_per_s"] >= 0.99 * TARGET_MESSAGES_PER_S
            and ingest["p95_ms"] <= TARGET_P95_MS
        )
    else:
        result["met"] = ok
    return result


def fault_run(
    args: argparse.Namespace,
    token: str,
    port: int,
    postgres: Postgres,
    redis_proc: Proc,
    worker: Proc,
    local_llm: Proc,
    lock: threading.Lock,
) -> dict[str, Any]:
    tally = IngestTally()
    stop = threading.Event()
    clients = 8
    threads = [
        threading.Thread(
            target=ingest_client,
            args=(
                port,
                token,
                args.rate / clients,
                stop,
                n,
                "fault",
                args.conversations,
                tally,
                lock,
            ),
            daemon=True,
        )
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    events: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def at(seconds: float) -> None:
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))

    def note(what: str, **extra: Any) -> None:
        events.append({"t_s": round(time.monotonic() - t0, 1), "event": what, **extra})
        log(f"t={events[-1]['t_s']}s {what} {extra or ''}")

    span = args.duration
    at(0.1 * span)
    note("redis stop")
    redis_proc.stop()
    time.sleep(3)
    redis_proc.start()
    note("redis started (empty)")

    at(0.3 * span)
    note("postgres restart")
    postgres.restart()
    note("postgres up")

    at(0.5 * span)
    deadline = time.monotonic() + 10
    generating = 0
    while time.monotonic() < deadline:  # wait for a moment when drafts are being generated
        try:
            with psycopg.connect(postgres.url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM drafting_draft WHERE status = 'generating'"
                ).fetchone()
            generating = int(row[0]) if row else 0
        except psycopg.OperationalError:
            generating = 0
        if generating:
            break
        time.sleep(0.05)
    children = worker.children()
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    note("worker pool processes killed", processes=len(children), drafts_generating=generating)

    if args.local_llm_url:
        note("local model server is external: not stopped")
    else:
        at(0.7 * span)
        local_llm.stop()
        note("local model server stopped")
        at(0.85 * span)
        local_llm.start()
        note("local model server started")

    at(span)
    stop.set()
    for thread in threads:
        thread.join(timeout=150)
    note("ingest stopped")
    return {
        "events": events,
        "ingest": {
            "generator": f"Python client x{clients}, resends until answered",
            "accepted_ids": tally.accepted,
            "accepted": len(tally.accepted),
            "created_201": tally.created,
            "duplicate_answers_200": tally.duplicate_answers,
            "retries": tally.retries,
            "gave_up": len(tally.gave_up),
            "statuses": tally.statuses,
            "p50_ms": percentile_ms(tally.latencies_s, 0.5),
            "p95_ms": percentile_ms(tally.latencies_s, 0.95),
        },
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
