"""Benchmark of ENCS accounting at scale: a year of agent actions, the rollup, month reports.

    .venv/bin/python bench/encs.py [--actions 20000000] [--repeat 20] [--keep | --reuse]

Steps:

1. create a scratch PostgreSQL database (`csbot_bench_encs` on the server of DATABASE_URL),
   migrate it, and seed the small tables with the ORM: 3 teams, their channels and agents
   (60 by default), 3 model endpoints with dated prices, cascade policies and tiers (team 1
   changes policy after five months), accounting settings (the default row, one per team and
   a mid-year raise) and a few fixed costs;
2. stream `--actions` agent actions and everything under them into the database with COPY
   (text format, one transaction per chunk of conversations, on --writers connections at
   once while a thread generates the next chunks): conversations, inbound and outbound
   messages, drafts (ready, failed, held out ~5 % of conversations, superseded, unanswered),
   1–2 attempts per drafted message whose costs sum to the draft's total, and one action per
   answered inbound message, all spread uniformly over the 12 months before the current
   month. Generated in Python with a fixed seed; every constraint, index and (deferred)
   foreign key of the schema stays in place while loading. Then VACUUM ANALYZE (what
   autovacuum does in production);
3. roll the facts up (`accounting.services.facts_rollup_due`, the periodic task's entry
   point) and time it;
4. time, for the last full month: `encs_report` per grouping (p50/p95 over --repeat runs)
   and where its time goes, the monthly report (`accounting.reports.report_generate`:
   figures, HTML, PDF, CSV; without it, the figures of every grouping a report shows), the
   same month read from the raw rows (rollup hidden in a rolled-back transaction: what the
   rollup buys), and `GET /api/v1/encs` over HTTP against gunicorn with a channel token
   (skipped, with the reason, while that route does not answer);
5. print one JSON object on stdout (progress, rows/s and ETA go to stderr) and drop the
   database, unless --keep or --reuse.

`--reuse` keeps the database and, when it already holds a finished seed of the same size and
seed (recorded as the database's comment), skips seeding and the rollup: the timings can be
re-run without reloading 20 million actions.

Targets (issue 4): dashboard/API month p50 ≤ 200 ms; full monthly report ≤ 30 s.
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import json
import logging
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_DATABASE_URL = "postgres://csbot:csbot@127.0.0.1:5433/csbot"
DB_NAME = "csbot_bench_encs"
TARGET_API_P50_MS = 200.0
TARGET_MONTHLY_REPORT_S = 30.0
MONTHS = 12

US = 1_000_000  # microseconds per second: generated times are integer microseconds (UTC)
DAY_US = 86_400 * US
MONEY_UNITS = 10**10  # generated money is integer units of 1e-10 USD (the schema's 10 places)

# Shape of the traffic. Probabilities per conversation, turn or draft.
TEAM_SHARES = (0.5, 0.3, 0.2)
CHANNELS = (("chat", 0.7), ("email", 0.3))
HOLDOUT_SHARE = Decimal("0.05")
MORE_TURNS = 0.6  # after each answered turn, another one (mean 2.5 turns, at most 12)
MAX_TURNS = 12
FOLLOW_UP = 0.08  # the customer writes again before the reply: the first draft is superseded
TRAILING = 0.05  # a last customer message nobody answers (the conversation is closed)
CACHE_HIT = 0.06  # of first turns
FAILED = 0.02  # every tier failed: the agent replies with no draft
ESCALATE = 0.3  # tier 1 scored below its threshold: tier 2 answers
# use / edit share of acted drafts by where the text came from (ignore is the rest).
USE_EDIT = {"local": (0.38, 0.37), "paid": (0.45, 0.35), "cache": (0.7, 0.2)}
# Mean seconds (gamma, shape 2, capped at 4x the mean) of each step.
HANDLE_MEAN_S = {"use": 25.0, "edit": 75.0, "ignore": 140.0, "none": 125.0, "held_out": 118.0}
SHOWN_AFTER_S = 90.0  # inbound message → an agent opens it
THINK_S = 300.0  # agent reply → the customer's next message
FOLLOW_UP_S = 40.0  # first message → the follow-up that supersedes its draft
# Conversations start at least this long before the period ends, so that the longest one
# (12 turns, every wait at its cap) still ends inside the period.
LAST_START_BEFORE_END_US = 12 * 3600 * US

TEXTS = (
    "Hi, my order hasn't arrived yet and the tracking page has not changed for four days.",
    "I was charged twice for the same order this morning. Please refund one of the payments.",
    "Can I change the delivery address on my order? I'm moving next week.",
    "The shoes I received are one size too small. How do I exchange them for a bigger pair?",
    "The blender arrived with a cracked jug. I would like a replacement, not a refund.",
    "I returned the jacket two weeks ago and still have not received my money back.",
)
REPLIES = (
    "Sorry for the wait! Your parcel is with the courier and should arrive within 2 days.",
    "Apologies for the double charge: I have refunded the second payment, 3-5 working days.",
    "Of course. Reply with the new address and I will update the order before it ships.",
    "No problem! I have emailed you a free return label; the bigger pair ships on receipt.",
    "So sorry about the jug. A replacement is on its way and you can keep the broken one.",
    "Your refund was issued today; it reaches your account within 5 working days.",
)
EDIT_SUFFIX = " Anything else I can help with today?"
OWN_REPLY = "Thanks for getting in touch, I am looking into this for you now."


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def summary_ms(values: list[float]) -> dict[str, Any]:
    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "runs": len(values)}


def month_start(day: date, months_back: int = 0) -> date:
    index = day.year * 12 + day.month - 1 - months_back
    return date(index // 12, index % 12 + 1, 1)


def epoch_us(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp()) * US


# --- Scratch database -------------------------------------------------------------------------


def server_conn(url: str) -> psycopg.Connection[Any]:
    """The server's maintenance database: a database cannot create or drop itself."""
    return psycopg.connect(urlunsplit(urlsplit(url)._replace(path="/postgres")), autocommit=True)


def database_create(url: str) -> None:
    with server_conn(url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))


def database_drop(url: str) -> None:
    with server_conn(url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME))
        )


def seed_marker(url: str) -> dict[str, Any] | None:
    """What a finished seed recorded on the scratch database (its comment), if any."""
    with server_conn(url) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (DB_NAME,),
        ).fetchone()
    if row is None or not row[0]:
        return None
    try:
        marker: dict[str, Any] = json.loads(row[0])
    except ValueError:
        return None
    return marker if marker.get("bench") == "encs" else None


def seed_marker_write(bench_url: str, marker: dict[str, Any]) -> None:
    with psycopg.connect(bench_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(DB_NAME), sql.Literal(json.dumps(marker))
            )
        )


# --- The small tables (ORM) -------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    from_us: int
    in_units: int  # per input token, 1e-10 USD
    out_units: int  # per output token
    gpu_units_per_hour: int


@dataclass(frozen=True)
class Endpoint:
    id: int
    kind: str  # "local" or "paid"
    model_name: str
    prices: tuple[Price, ...]  # oldest first
    ms_per_token: int
    base_ms: int

    def cost(self, at_us: int, tokens_in: int, tokens_out: int, latency_ms: int) -> int:
        price = self.prices[0]
        for candidate in self.prices:
            if candidate.from_us <= at_us:
                price = candidate
        return (
            tokens_in * price.in_units
            + tokens_out * price.out_units
            + latency_ms * price.gpu_units_per_hour // 3_600_000
        )


@dataclass(frozen=True)
class Policy:
    id: int
    from_us: int
    tiers: tuple[Endpoint, ...]


@dataclass(frozen=True)
class TeamWorld:
    id: int
    channels: tuple[tuple[int, float], ...]  # (channel id, share)
    agents: tuple[tuple[int, str], ...]  # (user id, username)
    policies: tuple[Policy, ...]  # oldest first

    def policy_at(self, at_us: int) -> Policy:
        chosen = self.policies[0]
        for policy in self.policies:
            if policy.from_us <= at_us:
                chosen = policy
        return chosen


@dataclass(frozen=True)
class World:
    teams: tuple[TeamWorld, ...]
    start: date  # first day of the period
    end: date  # first day after it (the current month's first day)


def seed_small(*, start: date, end: date, agents: int) -> World:
    """Teams, channels, agents, endpoints and prices, policies and tiers, accounting settings
    and fixed costs, with the ORM (a few hundred rows)."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from accounting.models import AccountingSettings, FixedCost
    from csbot.models import AgentProfile, Channel, Team
    from drafting.models import CascadePolicy, CascadeTier, EndpointPrice, ModelEndpoint

    def at(day: date) -> datetime:
        return datetime.combine(day, datetime.min.time(), tzinfo=UTC)

    switch = month_start(end, MONTHS - 5)  # team 1's second policy, and the price cut
    raise_day = month_start(end, MONTHS - 7)
    price_specs: dict[str, list[tuple[date, Decimal, Decimal, Decimal]]] = {
        # name: [(from, input $/Mtok, output $/Mtok, GPU $/h)]
        "local-smollm": [(start - timedelta(days=30), Decimal(0), Decimal(0), Decimal("0.80"))],
        "paid-mini": [(start - timedelta(days=30), Decimal("0.15"), Decimal("0.60"), Decimal(0))],
        "paid-large": [
            (start - timedelta(days=30), Decimal("2.50"), Decimal("10.00"), Decimal(0)),
            (switch, Decimal("2.00"), Decimal("8.00"), Decimal(0)),
        ],
    }
    speeds = {"local-smollm": (8, 200), "paid-mini": (5, 300), "paid-large": (10, 500)}
    user_model = get_user_model()
    with transaction.atomic():
        endpoints: dict[str, Endpoint] = {}
        for name, prices in price_specs.items():
            kind = "local" if name.startswith("local") else "paid"
            row = ModelEndpoint.objects.create(
                name=name,
                kind=kind,
                base_url="" if kind == "local" else "http://127.0.0.1:9/v1",
                model_name=name,
                api_key_env="" if kind == "local" else "BENCH_API_KEY",
            )
            for day, price_in, price_out, gpu in prices:
                EndpointPrice.objects.create(
                    endpoint=row,
                    effective_from=at(day),
                    input_price_per_mtok=price_in,
                    output_price_per_mtok=price_out,
                    gpu_hour_usd=gpu,
                )
            endpoints[name] = Endpoint(
                id=row.pk,
                kind=kind,
                model_name=name,
                prices=tuple(
                    # $/Mtok → 1e-10 USD per token is × 1e4; $/h → 1e-10 USD per hour × 1e10.
                    Price(
                        from_us=epoch_us(day),
                        in_units=int(price_in * 10_000),
                        out_units=int(price_out * 10_000),
                        gpu_units_per_hour=int(gpu * MONEY_UNITS),
                    )
                    for day, price_in, price_out, gpu in prices
                ),
                ms_per_token=speeds[name][0],
                base_ms=speeds[name][1],
            )
        # Per team: [(policy name, tier endpoint names, in force from)]; the last is active.
        policy_specs = (
            [
                ("mini then large", ("paid-mini", "paid-large"), start),
                ("local then large", ("local-smollm", "paid-large"), switch),
            ],
            [("local then mini", ("local-smollm", "paid-mini"), start)],
            [("mini then large", ("paid-mini", "paid-large"), start)],
        )
        AccountingSettings.objects.create(
            team=None,
            effective_from=start - timedelta(days=30),
            agent_hourly_usd=Decimal("30"),
            default_baseline_seconds=Decimal("120"),
            note="bench default",
        )
        rates = (Decimal("32"), Decimal("28"), Decimal("35"))
        teams = []
        for number, specs in enumerate(policy_specs, start=1):
            team = Team.objects.create(name=f"Bench team {number}")
            channels = tuple(
                (Channel.objects.create(team=team, name=name).pk, share) for name, share in CHANNELS
            )
            staff = []
            for n in range(1, max(1, agents // len(policy_specs)) + 1):
                user = user_model.objects.create_user(f"agent-{number}-{n:02d}")
                AgentProfile.objects.create(user=user, team=team)
                staff.append((user.pk, user.get_username()))
            policies = []
            for position, (name, tier_names, since) in enumerate(specs):
                policy = CascadePolicy.objects.create(
                    team=team,
                    name=name,
                    active=position == len(specs) - 1,
                    system_prompt="You are a concise, friendly customer-support agent.",
                    holdout_share=HOLDOUT_SHARE,
                )
                for tier, endpoint_name in enumerate(tier_names, start=1):
                    CascadeTier.objects.create(
                        policy=policy,
                        position=tier,
                        endpoint_id=endpoints[endpoint_name].id,
                        threshold=Decimal("0.7") if tier < len(tier_names) else Decimal(0),
                    )
                policies.append(
                    Policy(
                        id=policy.pk,
                        from_us=epoch_us(since),
                        tiers=tuple(endpoints[n] for n in tier_names),
                    )
                )
            AccountingSettings.objects.create(
                team=team,
                effective_from=start - timedelta(days=30),
                agent_hourly_usd=rates[number - 1],
                default_baseline_seconds=Decimal(100 + 10 * number),
            )
            teams.append(
                TeamWorld(
                    id=team.pk, channels=channels, agents=tuple(staff), policies=tuple(policies)
                )
            )
        first_team = teams[0].id
        AccountingSettings.objects.create(
            team_id=first_team,
            effective_from=raise_day,
            agent_hourly_usd=Decimal("34"),
            default_baseline_seconds=Decimal("110"),
            note="mid-year raise",
        )
        FixedCost.objects.create(
            name="Reserved GPU",
            kind=FixedCost.Kind.MONTHLY,
            amount_usd=Decimal("450"),
            endpoint_id=endpoints["local-smollm"].id,
            starts_on=start,
        )
        FixedCost.objects.create(
            name="Fine-tuning the local model",
            kind=FixedCost.Kind.ONE_OFF,
            amount_usd=Decimal("2000"),
            policy_id=teams[0].policies[-1].id,
            starts_on=switch,
        )
        FixedCost.objects.create(
            name="Helpdesk integration",
            kind=FixedCost.Kind.ONE_OFF,
            amount_usd=Decimal("1200"),
            policy_id=teams[1].policies[0].id,
            starts_on=start,
        )
    return World(teams=tuple(teams), start=start, end=end)


# --- The bulk rows (COPY) ---------------------------------------------------------------------

# Column order of each COPY, in load order (parents first: the foreign keys are deferred to
# the chunk's commit anyway, but this is also the order a reader expects).
COLUMNS = {
    "csbot_conversation": (
        "id, team_id, channel_id, external_id, customer_ref, status, created_at, updated_at, "
        "awaiting_reply_since"
    ),
    "csbot_message": (
        "id, conversation_id, channel_id, direction, text, author, author_user_id, "
        "channel_message_id, created_at"
    ),
    "drafting_draft": (
        "id, message_id, policy_id, status, text, final_endpoint_id, score, total_cost, "
        "counterfactual_cost, failure_reason, tries, retry_at, created_at, enqueued_at, "
        "claimed_at, ready_at, first_shown_at"
    ),
    "drafting_draftattempt": (
        "id, draft_id, tier, endpoint_id, prompt_tokens_saved, cache_hit, cache_match, "
        "cache_similarity, fewshot_examples, cache_source_id, model_name, tokens_in, tokens_out, "
        "latency_ms, cost, score, outcome, error_kind, error_message, started_at"
    ),
    "drafting_agentaction": (
        "id, draft_id, inbound_message_id, outbound_message_id, agent_id, kind, final_text, "
        "edit_distance, shown_at, acted_at, handle_seconds"
    ),
}
TABLES = tuple(COLUMNS)


@dataclass
class Chunk:
    lines: dict[str, list[str]] = field(default_factory=lambda: {t: [] for t in TABLES})
    actions: int = 0

    def payload(self, table: str) -> bytes:
        rows = self.lines[table]
        return ("\n".join(rows) + "\n").encode() if rows else b""


def plan_turns(*, actions: int, seed: int) -> array[int]:
    """Answered turns per conversation, summing to exactly `actions` (drawn up front, so the
    conversations can be spread evenly over the period before any is generated)."""
    rng = random.Random(seed)
    turns: array[int] = array("B")
    total = 0
    while total < actions:
        n = 1
        while n < MAX_TURNS and rng.random() < MORE_TURNS:
            n += 1
        n = min(n, actions - total)
        turns.append(n)
        total += n
    return turns


def money(units: int) -> str:
    return f"{units // MONEY_UNITS}.{units % MONEY_UNITS:010d}"


class Generator:
    """Rows of whole conversations, in time order, as COPY text lines.

    Conversation i of M starts at a uniformly drawn instant of the i-th of M equal slots of
    the period, so ids grow with time as in production and the load is even over the year.
    Within a conversation, per turn: maybe a follow-up whose first draft is superseded, the
    inbound message, its draft and attempts, the agent's action and outbound reply; maybe a
    trailing unanswered message. Times are integer microseconds, money integer 1e-10 USD:
    attempt costs sum exactly to the draft's total.
    """

    def __init__(self, world: World, *, actions: int, seed: int, held_out_open: bool) -> None:
        from drafting.engine.edits import edit_distance

        self.world = world
        self.turns = plan_turns(actions=actions, seed=seed)
        self.held_out_open = held_out_open
        self.rng = random.Random(seed + 1)
        self.start_us = epoch_us(world.start)
        self.end_us = epoch_us(world.end)
        self.slot_us = (self.end_us - LAST_START_BEFORE_END_US - self.start_us) / len(self.turns)
        first_day = self.start_us // DAY_US
        self.days = {
            first_day + n: (world.start + timedelta(days=n)).isoformat()
            for n in range((world.end - world.start).days + 2)
        }
        self.ids = dict.fromkeys(TABLES, 0)  # the last id given: the tables start empty
        self.minutes: dict[int, str] = {}
        self.max_us = 0  # the latest time generated (roughly: the end of a conversation)
        cumulative, shares = 0.0, []
        for share in TEAM_SHARES:
            cumulative += share
            shares.append(cumulative)
        self.team_cut = tuple(shares)
        # The agent's reply per (reply template, action kind) and its distance to the draft,
        # computed by the one rule the product uses.
        self.finals: dict[tuple[int, str], tuple[str, str]] = {}
        for n, reply in enumerate(REPLIES):
            for kind, final in (
                ("use", reply),
                ("edit", reply + EDIT_SUFFIX),
                ("ignore", OWN_REPLY),
            ):
                self.finals[n, kind] = (final, str(edit_distance(reply, final)))
        # Per team: the last first-turn draft an agent used as is, and its counterfactual:
        # what a later cache hit reuses.
        self.cache_source: dict[int, tuple[int, int]] = {}

    @property
    def conversations(self) -> int:
        return len(self.turns)

    def ts(self, us: int) -> str:
        """A timestamptz literal; the text up to the minute is cached (a third of the
        generator's time went to formatting times)."""
        minute, rest = divmod(us, 60 * US)
        prefix = self.minutes.get(minute)
        if prefix is None:
            day, rest_minutes = divmod(minute, 24 * 60)
            hours, minutes = divmod(rest_minutes, 60)
            prefix = self.minutes[minute] = f"{self.days[day]} {hours:02d}:{minutes:02d}:"
        seconds, fraction = divmod(rest, US)
        return f"{prefix}{seconds:02d}.{fraction:06d}+00"

    def next_id(self, table: str) -> int:
        self.ids[table] += 1
        return self.ids[table]

    def wait_us(self, mean_s: float) -> int:
        """An exponential wait, capped at 4x its mean (keeps conversations inside the period)."""
        return int(min(self.rng.expovariate(1 / mean_s), 4 * mean_s) * US) + US

    def handle_ms(self, kind: str) -> int:
        mean = HANDLE_MEAN_S[kind]
        return int(min(self.rng.gammavariate(2.0, mean / 2), 4 * mean) * 1000) + 500

    def chunks(self, size: int) -> Iterator[Chunk]:
        chunk = Chunk()
        for index, turns in enumerate(self.turns):
            start = self.start_us + int((index + self.rng.random()) * self.slot_us)
            chunk.actions += self.conversation(chunk, start, turns)
            if (index + 1) % size == 0:
                yield chunk
                chunk = Chunk()
                self.minutes.clear()  # a chunk spans about a day: keep the cache small
                # A cache hit's source draft is in its own chunk: chunks commit in any order.
                self.cache_source.clear()
        if chunk.actions or chunk.lines[TABLES[0]]:
            yield chunk

    def conversation(self, chunk: Chunk, t: int, turns: int) -> int:
        rng, out, ts = self.rng, chunk.lines, self.ts
        teams = self.world.teams
        team = teams[min(bisect_right(self.team_cut, rng.random()), len(teams) - 1)]
        channel = team.channels[0][0] if rng.random() < team.channels[0][1] else team.channels[1][0]
        agent_id, agent_name = rng.choice(team.agents)
        policy = team.policy_at(t)
        held_out = rng.random() < float(HOLDOUT_SHARE)
        conversation_id = self.next_id("csbot_conversation")
        customer = f"customer-{conversation_id}"
        created = t
        topic = int(rng.random() * len(TEXTS))
        text = TEXTS[topic]
        first_turn = True

        def inbound(at: int) -> int:
            message_id = self.next_id("csbot_message")
            out["csbot_message"].append(
                f"{message_id}\t{conversation_id}\t{channel}\tin\t{text}\t{customer}"
                f"\t\\N\tm{message_id}\t{ts(at)}"
            )
            return message_id

        def draft(message_id: int, at: int, fate: str, shown: int | None = None) -> Drafted:
            return self.draft(
                chunk,
                policy=policy,
                team_id=team.id,
                message_id=message_id,
                at=at,
                reply=topic,
                held_out=held_out,
                first_turn=first_turn,
                fate=fate,
                shown=shown,
            )

        for _ in range(turns):
            # Held out, an unanswered message is a `held_out_open` fact, which only a rollup
            # able to store that kind gets (see rollup_stores_every_kind).
            if rng.random() < FOLLOW_UP and (self.held_out_open or not held_out):
                # The customer writes again before anyone replied: the first message's draft
                # is superseded (held out, it stays held out, unanswered).
                draft(inbound(t), t, "stale")
                t += self.wait_us(FOLLOW_UP_S)
                first_turn = False
            message_id = inbound(t)
            shown = t + self.wait_us(SHOWN_AFTER_S)
            drafted = draft(message_id, t, "answered", shown)
            if drafted.source == "none":
                kind, final, distance = "none", OWN_REPLY, "\\N"
                handle = self.handle_ms("held_out" if held_out else "none")
            else:
                use, edit = USE_EDIT[drafted.source]
                pick = rng.random()
                kind = "use" if pick < use else "edit" if pick < use + edit else "ignore"
                final, distance = self.finals[topic, kind]
                handle = self.handle_ms(kind)
                if kind == "use" and first_turn and drafted.source != "cache":
                    self.cache_source[team.id] = (drafted.id, drafted.counterfactual)
            t = shown + handle * 1000  # acted_at: the reply is sent as the agent acts
            outbound_id = self.next_id("csbot_message")
            out["csbot_message"].append(
                f"{outbound_id}\t{conversation_id}\t{channel}\tout\t{final}\t{agent_name}"
                f"\t{agent_id}\t\\N\t{ts(t)}"
            )
            action_id = self.next_id("drafting_agentaction")
            out["drafting_agentaction"].append(
                f"{action_id}\t{drafted.id}\t{message_id}\t{outbound_id}\t{agent_id}\t{kind}"
                f"\t{final}\t{distance}\t{ts(shown)}\t{ts(t)}\t{handle // 1000}.{handle % 1000:03d}"
            )
            first_turn = False
            last = t
            t += self.wait_us(THINK_S)
        if rng.random() < TRAILING and (self.held_out_open or not held_out):
            # "Thanks, bye" that nobody answers: a draft that cost money and saved nothing.
            draft(inbound(t), t, "unanswered")
            last = t
        # The latest time of the conversation, give or take a draft's attempts after `last`.
        self.max_us = max(self.max_us, last + 60 * US)
        out["csbot_conversation"].append(
            f"{conversation_id}\t{team.id}\t{channel}\tc{conversation_id}\t{customer}\tclosed"
            f"\t{ts(created)}\t{ts(last)}\t\\N"
        )
        return turns

    def draft(
        self,
        chunk: Chunk,
        *,
        policy: Policy,
        team_id: int,
        message_id: int,
        at: int,
        reply: int,
        held_out: bool,
        first_turn: bool,
        fate: str,
        shown: int | None,
    ) -> Drafted:
        """The draft row and its attempts for an inbound message received at `at`. `fate`:
        "answered" (an action follows), "stale" (superseded by a follow-up) or "unanswered"."""
        rng, out, ts = self.rng, chunk.lines, self.ts
        draft_id = self.next_id("drafting_draft")
        created = at + 5_000
        created_at = ts(created)
        shown_at = ts(shown) if shown is not None else "\\N"
        if held_out:
            out["drafting_draft"].append(
                f"{draft_id}\t{message_id}\t{policy.id}\theld_out\t\t\\N\t\\N\t0\t\\N\t\t0\t\\N"
                f"\t{created_at}\t\\N\t\\N\t\\N\t{shown_at}"
            )
            return Drafted(draft_id, "none", 0)
        claimed = created + 40_000 + rng.randrange(200_000)
        started = claimed + 10_000
        pick = rng.random()
        if fate != "stale" and first_turn and pick < CACHE_HIT and team_id in self.cache_source:
            # A cache hit: tier 0, no endpoint, no cost; the source draft's counterfactual.
            source_id, counterfactual = self.cache_source[team_id]
            exact = rng.random() < 0.7
            similarity = "\\N" if exact else f"0.{9000 + int(rng.random() * 1000)}"
            out["drafting_draftattempt"].append(
                f"{self.next_id('drafting_draftattempt')}\t{draft_id}\t0\t\\N\t0\tt"
                f"\t{'exact' if exact else 'semantic'}\t{similarity}\t0\t{source_id}\t\t0\t0\t0"
                f"\t{money(0)}\t\\N\tok\t\t\t{ts(started)}"
            )
            out["drafting_draft"].append(
                f"{draft_id}\t{message_id}\t{policy.id}\tready\t{REPLIES[reply]}\t\\N\t\\N"
                f"\t{money(0)}\t{money(counterfactual)}\t\t1\t\\N\t{created_at}\t{created_at}"
                f"\t{ts(claimed)}\t{ts(started + 20_000)}\t{shown_at}"
            )
            return Drafted(draft_id, "cache", counterfactual)
        low, top = policy.tiers[0], policy.tiers[-1]
        if fate == "answered" and pick > 1 - FAILED:
            # Every tier failed: tier 1 timed out, tier 2 was unavailable; nothing charged.
            out["drafting_draftattempt"].append(
                f"{self.next_id('drafting_draftattempt')}\t{draft_id}\t1\t{low.id}\t0\tf\t\t\\N"
                f"\t0\t\\N\t\t0\t0\t30000\t{money(0)}\t\\N\terror\ttimeout\tRequest timed out."
                f"\t{ts(started)}"
            )
            out["drafting_draftattempt"].append(
                f"{self.next_id('drafting_draftattempt')}\t{draft_id}\t2\t{top.id}\t0\tf\t\t\\N"
                f"\t0\t\\N\t\t0\t0\t50\t{money(0)}\t\\N\terror\tunavailable"
                f"\tService unavailable (503).\t{ts(started + 30 * US)}"
            )
            out["drafting_draft"].append(
                f"{draft_id}\t{message_id}\t{policy.id}\tfailed\t\t\\N\t\\N\t{money(0)}\t\\N"
                f"\tall tiers failed: timeout, unavailable\t1\t\\N\t{created_at}\t{created_at}"
                f"\t{ts(claimed)}\t\\N\t{shown_at}"
            )
            return Drafted(draft_id, "none", 0)
        # The cascade: tier 1, and tier 2 when tier 1 scored below its threshold.
        tokens_in = 300 + int(rng.random() * 1200)
        tokens_out = 30 + int(rng.random() * 150)
        asked = policy.tiers if rng.random() < ESCALATE else policy.tiers[:1]
        total = cost = latency = 0
        score = ""
        for position, endpoint in enumerate(asked, start=1):
            latency = (
                endpoint.base_ms + tokens_out * endpoint.ms_per_token + int(rng.random() * 300)
            )
            cost = endpoint.cost(started, tokens_in, tokens_out, latency)
            total += cost
            low_score = position < len(asked)  # it escalated: below tier 1's 0.7 threshold
            score = f"0.{2000 + int(rng.random() * 4900) if low_score else 7000 + int(rng.random() * 2900)}"
            out["drafting_draftattempt"].append(
                f"{self.next_id('drafting_draftattempt')}\t{draft_id}\t{position}\t{endpoint.id}"
                f"\t0\tf\t\t\\N\t{int(rng.random() * 4)}\t\\N\t{endpoint.model_name}\t{tokens_in}"
                f"\t{tokens_out}\t{latency}\t{money(cost)}\t{score}\tok\t\t\t{ts(started)}"
            )
            started += latency * 1000
        chosen = asked[-1]
        # What the top tier alone would have charged: its own attempt when it was asked, else
        # its price for the chosen draft's tokens (drafting.engine.cascade.counterfactual_cost).
        counterfactual = cost if chosen is top else top.cost(at, tokens_in, tokens_out, latency)
        status = "superseded" if fate == "stale" else "ready"
        out["drafting_draft"].append(
            f"{draft_id}\t{message_id}\t{policy.id}\t{status}\t{REPLIES[reply]}\t{chosen.id}"
            f"\t{score}\t{money(total)}\t{money(counterfactual)}\t\t1\t\\N\t{created_at}"
            f"\t{created_at}\t{ts(claimed)}\t{ts(started + 20_000)}\t{shown_at}"
        )
        return Drafted(draft_id, chosen.kind, counterfactual)


@dataclass(frozen=True)
class Drafted:
    id: int
    source: str  # "local" or "paid" (a model's text), "cache", or "none" (no text)
    counterfactual: int


@dataclass
class LoadStats:
    """Shared by the writer threads (under `lock`)."""

    actions: int
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    copy_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TABLES, 0.0))
    commit_s: float = 0.0  # the deferred foreign-key checks run at commit
    waited_s: float = 0.0  # for the generator: the load is Python-bound when this is large
    loaded: int = 0
    started: float = field(default_factory=time.perf_counter)
    last_log: float = field(default_factory=time.perf_counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def chunk_done(self, chunk: Chunk, copy_s: dict[str, float], commit_s: float) -> None:
        with self.lock:
            for table in TABLES:
                self.rows[table] += len(chunk.lines[table])
                self.copy_s[table] += copy_s[table]
            self.commit_s += commit_s
            self.loaded += chunk.actions
            now = time.perf_counter()
            if now - self.last_log < 10 and self.loaded < self.actions:
                return
            self.last_log = now
            elapsed = now - self.started
            eta = elapsed / self.loaded * (self.actions - self.loaded)
            log(
                f"{self.loaded:,}/{self.actions:,} actions "
                f"({100 * self.loaded / self.actions:.1f} %), "
                f"{sum(self.rows.values()) / elapsed:,.0f} rows/s, "
                f"{elapsed:.0f} s elapsed, ETA {eta:.0f} s"
            )


def bulk_load(
    world: World,
    *,
    bench_url: str,
    actions: int,
    seed: int,
    chunk: int,
    writers: int,
    held_out_open: bool,
) -> dict[str, Any]:
    """COPY the generated rows, one transaction per chunk of conversations, on `writers`
    connections at once, while a thread generates the next chunks.

    Chunks are independent (their own ids; parents in the same chunk or in the small
    tables), so they can commit in any order. Most of a chunk's time is PostgreSQL's: index
    entries, and at commit the deferred foreign-key checks (one look-up and row lock per
    reference), so two writers keep both cores busy."""
    generator = Generator(world, actions=actions, seed=seed, held_out_open=held_out_open)
    log(
        f"loading {actions:,} actions in {generator.conversations:,} conversations "
        f"({world.start} .. {world.end - timedelta(days=1)}), {chunk:,} conversations a "
        f"chunk, {writers} writer(s)"
    )
    chunks: queue.Queue[Chunk | None] = queue.Queue(maxsize=writers + 1)
    failures: list[BaseException] = []
    stop = threading.Event()  # set on the first failure: every thread then returns
    stats = LoadStats(actions=actions)

    def put(item: Chunk | None) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in generator.chunks(chunk):
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised by bulk_load
            failures.append(exc)
            stop.set()
        for _ in range(writers):
            put(None)

    def write() -> None:
        try:
            with psycopg.connect(bench_url, autocommit=True) as conn:
                # A scratch database: a crash loses it anyway, commits need not wait for disk.
                conn.execute("SET synchronous_commit = off")
                while not stop.is_set():
                    before = time.perf_counter()
                    try:
                        item = chunks.get(timeout=1)
                    except queue.Empty:
                        continue
                    finally:
                        with stats.lock:
                            stats.waited_s += time.perf_counter() - before
                    if item is None:
                        return
                    copy_s = dict.fromkeys(TABLES, 0.0)
                    with conn.transaction():
                        with conn.cursor() as cursor:
                            for table in TABLES:
                                before = time.perf_counter()
                                if item.lines[table]:
                                    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                                        sql.Identifier(table), sql.SQL(COLUMNS[table])
                                    )
                                    with cursor.copy(statement) as copy:
                                        copy.write(item.payload(table))
                                copy_s[table] = time.perf_counter() - before
                        before = time.perf_counter()
                    stats.chunk_done(item, copy_s, time.perf_counter() - before)
        except BaseException as exc:  # noqa: BLE001 - re-raised by bulk_load
            failures.append(exc)
            stop.set()

    threading.Thread(target=produce, name="generate", daemon=True).start()
    threads = [threading.Thread(target=write, name=f"write-{n}") for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    seconds = time.perf_counter() - stats.started
    assert generator.max_us < epoch_us(world.end), "a generated time is past the period"
    with psycopg.connect(bench_url, autocommit=True) as conn:
        for table in TABLES:
            # The ids were given explicitly: move each identity sequence past them.
            conn.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence({name}, 'id'), coalesce(max(id), 1), "
                    "max(id) IS NOT NULL) FROM {table}"
                ).format(name=sql.Literal(table), table=sql.Identifier(table))
            )
    return {
        "rows": stats.rows,
        "actions": stats.loaded,
        "seconds": round(seconds, 1),
        "rows_per_s": round(sum(stats.rows.values()) / seconds),
        "writers": writers,
        # Summed over the writers: where PostgreSQL spent its time.
        "copy_s": {table: round(value, 1) for table, value in stats.copy_s.items()},
        "commit_s": round(stats.commit_s, 1),
        "waited_for_generator_s": round(stats.waited_s, 1),
    }


def vacuum_analyze(bench_url: str) -> float:
    """What autovacuum does to freshly loaded tables in production: statistics for the
    planner and the visibility map for index-only scans."""
    started = time.perf_counter()
    with psycopg.connect(bench_url, autocommit=True) as conn:
        for table in TABLES:
            log(f"VACUUM ANALYZE {table}")
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
    return round(time.perf_counter() - started, 1)


def table_sizes(bench_url: str) -> dict[str, int]:
    """Megabytes on disk per bulk table, indexes included."""
    with psycopg.connect(bench_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname::text, pg_total_relation_size(oid) FROM pg_class "
            "WHERE relname = ANY(%s) AND relkind = 'r'",
            (list(TABLES),),
        ).fetchall()
    return {str(name): int(size) // 2**20 for name, size in rows}


def attempts_sum_to_drafts(bench_url: str, first_drafts: int = 20_000) -> bool:
    """The first drafts' attempt costs add up to their total_cost, exactly."""
    with psycopg.connect(bench_url, autocommit=True) as conn:
        row = conn.execute(
            """
            SELECT count(*)
              FROM drafting_draft d
              LEFT JOIN (SELECT draft_id, sum(cost) AS spent
                           FROM drafting_draftattempt
                          WHERE draft_id <= %(n)s
                          GROUP BY draft_id) a ON a.draft_id = d.id
             WHERE d.id <= %(n)s AND d.total_cost <> coalesce(a.spent, 0)
            """,
            {"n": first_drafts},
        ).fetchone()
    return row is not None and row[0] == 0


# --- Rollup and measurements ------------------------------------------------------------------


class RollupProgress(logging.Handler):
    """Counts the days accounting.services logs as rolled up; prints progress and ETA."""

    def __init__(self, total_days: int) -> None:
        super().__init__(logging.INFO)
        self.total = max(1, total_days)
        self.done = 0
        self.started = self.last = time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith("accounting: rolled up"):
            return
        self.done += 1
        now = time.perf_counter()
        if now - self.last >= 10 or self.done == self.total:
            self.last = now
            elapsed = now - self.started
            eta = elapsed / self.done * max(0, self.total - self.done)
            log(f"rollup: {self.done}/{self.total} days, {elapsed:.0f} s elapsed, ETA {eta:.0f} s")


def rollup_facts(world_start: date) -> dict[str, Any]:
    """Roll up every settled day through the periodic task's entry point, timed."""
    from accounting import services
    from accounting.models import DailyFact

    total_days = (services.settled_before() - world_start).days
    log(f"rolling up ~{total_days} days (facts_rollup_due)")
    progress = RollupProgress(total_days)
    logger = logging.getLogger("accounting.services")
    level = logger.level
    propagate = logger.propagate
    logger.addHandler(progress)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # one progress line every 10 s, not a log line per day
    try:
        started = time.perf_counter()
        days = services.facts_rollup_due(limit=400)
        seconds = time.perf_counter() - started
    finally:
        logger.removeHandler(progress)
        logger.setLevel(level)
        logger.propagate = propagate
    return {
        "seconds": round(seconds, 1),
        "days": len(days),
        "seconds_per_day": round(seconds / max(1, len(days)), 3),
        "fact_rows": DailyFact.objects.count(),
    }


def rollup_stores_every_kind() -> bool:
    """Whether DailyFact.kind can hold every fact kind accounting.facts produces."""
    from accounting.facts import KINDS
    from accounting.models import DailyFact

    max_length = DailyFact._meta.get_field("kind").max_length
    return max_length is None or max_length >= max(len(kind) for kind in KINDS)


def timed_ms(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def monthly_report_s(*, start: date, end: date, runs: int) -> dict[str, Any]:
    """The monthly report for all teams: `accounting.reports.report_generate` (figures,
    HTML, PDF, CSV, stored) when it exists and works, else the figures it is made of
    (encs_report for every grouping a monthly report shows)."""
    from functools import partial

    from accounting.facts import Scope
    from accounting.selectors import encs_report

    target = {"target_s": TARGET_MONTHLY_REPORT_S, "runs": runs}
    try:
        reports: Any = importlib.import_module("accounting.reports")
    except ModuleNotFoundError:
        reports = None
    failure = "accounting.reports.report_generate does not exist yet"
    if reports is not None and hasattr(reports, "report_generate"):
        try:
            seconds = [
                timed_ms(partial(reports.report_generate, month=start, team=None)) / 1000
                for _ in range(runs)
            ]
            figures_s = timed_ms(partial(reports.report_figures, month=start, team=None)) / 1000
        except Exception as exc:  # noqa: BLE001 - code being written meanwhile: report, go on
            failure = f"report_generate failed: {type(exc).__name__}: {exc}"
        else:
            return target | {
                "what": "accounting.reports.report_generate(month, team=None): figures, "
                "HTML, PDF (charts), CSV, stored",
                "p50": round(sorted(seconds)[len(seconds) // 2], 2),
                "max": round(max(seconds), 2),
                "figures_s": round(figures_s, 2),
            }
    groupings = ("model", "day", "agent", "policy")
    scope = Scope(start=start, end=end)

    def figures() -> None:
        for group_by in groupings:
            encs_report(scope, group_by=group_by)

    seconds = [timed_ms(figures) / 1000 for _ in range(runs)]
    return target | {
        "what": f"figures only ({failure}): encs_report for the month grouped by "
        + ", ".join(groupings),
        "p50": round(sorted(seconds)[len(seconds) // 2], 2),
        "max": round(max(seconds), 2),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def gunicorn() -> Iterator[int]:
    """One sync worker serving the bench database (the environment already names it)."""
    port = free_port()
    with tempfile.NamedTemporaryFile(prefix="bench-encs-gunicorn-", suffix=".log") as log_file:
        process = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "csbot.wsgi:application",
                f"--bind=127.0.0.1:{port}",
                "--workers=1",
                "--timeout=600",
                "--log-level=warning",
            ],
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            stdout=log_file,
            stderr=log_file,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"gunicorn exited ({process.returncode}): "
                        + Path(log_file.name).read_text(errors="replace")[-2000:]
                    )
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield port
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def http_get(port: int, path: str, authorization: str) -> tuple[int, bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        started = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": authorization})
        response = conn.getresponse()
        body = response.read()
        return response.status, body, (time.perf_counter() - started) * 1000
    finally:
        conn.close()


def api_month_ms(*, team_id: int, start: date, last: date, repeat: int) -> dict[str, Any]:
    """GET /api/v1/encs for the month over HTTP (gunicorn, one sync worker), with a channel
    token of one team (the API shows a token its own team's figures)."""
    from csbot.models import Channel
    from csbot.services import api_token_create

    channel = Channel.objects.filter(team_id=team_id).order_by("pk").first()
    assert channel is not None
    _token, key = api_token_create(channel=channel, name="bench-encs")
    path = f"/api/v1/encs?from={start.isoformat()}&to={last.isoformat()}&group_by=model"
    with gunicorn() as port:
        status, body, _ = http_get(port, path, f"Token {key}")
        authorization = f"Token {key}"
        if status in (401, 403):
            authorization = f"Bearer {key}"
            status, body, _ = http_get(port, path, authorization)
        if status != 200:
            reason = (
                "route /api/v1/encs does not exist yet (404)"
                if status == 404
                else f"HTTP {status}: {body[:200].decode(errors='replace')}"
            )
            return {"skipped": reason, "path": path}
        http_get(port, path, authorization)  # warm-up: the worker's first queries
        timings = []
        for _ in range(repeat):
            status, body, ms = http_get(port, path, authorization)
            assert status == 200, status
            timings.append(ms)
    return {
        **summary_ms(timings),
        "path": path,
        "scope": f"team {team_id} (the token's)",
        "server": "gunicorn, 1 sync worker",
        "response_bytes": len(body),
        "target_p50_ms": TARGET_API_P50_MS,
    }


def measure(*, world_start: date, world_end: date, args: argparse.Namespace) -> dict[str, Any]:
    from functools import partial

    from django.db import transaction

    from accounting.facts import Scope, raw_facts, scope_facts
    from accounting.models import RolledUpDay
    from accounting.selectors import encs_report
    from csbot.models import Team

    start = month_start(world_end, 1)
    last = world_end - timedelta(days=1)
    scope = Scope(start=start, end=world_end)
    result: dict[str, Any] = {"month": start.strftime("%Y-%m")}
    rolled = RolledUpDay.objects.filter(day__gte=start, day__lt=world_end).count()
    result["month_days_rolled_up"] = rolled

    log(f"timing encs_report for {result['month']} ({args.repeat} runs per grouping)")
    report = encs_report(scope, group_by="model")  # warm-up, and the month's figures
    result["month_figures"] = {
        key: report[key] for key in ("messages", "drafts", "held_out", "actions", "encs_usd")
    } | {"models": [g["group"] for g in report["groups"]]}
    timings: dict[str, Any] = {}
    for group_by in (None, "model", "day", "agent"):
        runs = [
            timed_ms(partial(encs_report, scope, group_by=group_by)) for _ in range(args.repeat)
        ]
        timings[group_by or "total"] = summary_ms(runs)
    result["report_month_ms"] = timings
    # Where a report's time goes: reading the month's facts, break-even (it reads every month
    # since the first fixed cost), the rest is accounting.engine.summarise in Python.
    samples = min(args.repeat, 5)
    breakdown: dict[str, Any] = {
        "month_fact_rows": len(scope_facts(scope)),
        "read_month_facts_ms_p50": percentile(
            [timed_ms(partial(scope_facts, scope)) for _ in range(samples)], 0.5
        ),
    }
    try:
        breakeven: Any = importlib.import_module("accounting.breakeven")
    except ModuleNotFoundError:
        breakeven = None
    if breakeven is not None:
        breakdown["break_even_ms_p50"] = percentile(
            [timed_ms(partial(breakeven.break_even, end=world_end)) for _ in range(samples)], 0.5
        )
    result["report_month_breakdown"] = breakdown
    first_team = Team.objects.order_by("pk").values_list("pk", flat=True).first()
    assert first_team is not None
    team_scope = Scope(start=start, end=world_end, team_ids=(first_team,))
    result["report_month_one_team_ms"] = summary_ms(
        [timed_ms(partial(encs_report, team_scope, group_by="model")) for _ in range(args.repeat)]
    )

    log(f"timing the monthly report ({args.monthly_repeat} runs)")
    result["monthly_report_s"] = monthly_report_s(
        start=start, end=world_end, runs=args.monthly_repeat
    )

    log(f"timing the month from the raw rows ({args.raw_repeat} runs)")
    with transaction.atomic():
        # Hide the month's rollup (rolled back below): encs_report then reads the raw rows,
        # through the same code path, as it does for days not rolled up yet.
        RolledUpDay.objects.filter(day__gte=start, day__lt=world_end).delete()
        raw_runs = [
            timed_ms(partial(encs_report, scope, group_by="model")) for _ in range(args.raw_repeat)
        ]
        transaction.set_rollback(True)
    query_runs = [timed_ms(partial(raw_facts, start, world_end)) for _ in range(args.raw_repeat)]
    result["raw_month_ms"] = summary_ms(raw_runs) | {
        "raw_facts_query_ms_p50": percentile(query_runs, 0.5),
        "what": "encs_report(group_by='model') with the month's rollup hidden",
    }

    log(f"timing GET /api/v1/encs ({args.repeat} requests)")
    result["api_month_ms"] = api_month_ms(
        team_id=first_team, start=start, last=last, repeat=args.repeat
    )
    return result


# --- Main -------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--actions", type=int, default=20_000_000, help="agent actions to seed (20,000,000)")
    add("--agents", type=int, default=60, help="agents, split over the 3 teams (60)")
    add("--seed", type=int, default=4, help="random seed of the generated rows (4)")
    add("--chunk", type=int, default=20_000, help="conversations per COPY transaction (20,000)")
    add("--writers", type=int, default=2, help="connections loading chunks at once (2)")
    add("--repeat", type=int, default=20, help="runs per timed report / API request (20)")
    add("--monthly-repeat", type=int, default=3, help="runs of the monthly report (3)")
    add("--raw-repeat", type=int, default=3, help="runs of the month from raw rows (3)")
    add("--keep", action="store_true", help="keep the scratch database")
    add(
        "--reseed",
        action="store_true",
        help="with --reuse: replace a kept database seeded differently (else stop)",
    )
    add(
        "--reuse",
        action="store_true",
        help="keep the scratch database, and skip seeding when it holds this seed already",
    )
    args = parser.parse_args()
    if min(args.actions, args.agents, args.chunk, args.writers, args.repeat) < 1:
        parser.error("--actions, --agents, --chunk, --writers and --repeat must be >= 1")
    if min(args.monthly_repeat, args.raw_repeat) < 1:
        parser.error("--monthly-repeat and --raw-repeat must be >= 1")
    return args


def main() -> None:
    args = parse_args()
    server_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    bench_url = urlunsplit(urlsplit(server_url)._replace(path=f"/{DB_NAME}"))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="csbot.settings",
        DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "bench"),
        DATABASE_URL=bench_url,
        DJANGO_DEBUG="0",
        LOG_LEVEL="ERROR",
    )
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/6")
    # One sync gunicorn worker: a per-process cache is the shared one (csbot.wsgi asks).
    os.environ.setdefault("CACHE_URL", "locmem://")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()  # connects to no database: the scratch one may not exist yet
    wanted = {
        "actions": args.actions,
        "seed": args.seed,
        "agents": args.agents,
        "held_out_open": rollup_stores_every_kind(),
    }
    marker = seed_marker(server_url) if args.reuse else None
    if marker is not None and any(marker.get(k) != v for k, v in wanted.items()):
        differs = {k: (marker.get(k), v) for k, v in wanted.items() if marker.get(k) != v}
        if not args.reseed:
            # A 20 M-action seed is an hour's work: never drop it behind the caller's back.
            sys.exit(
                f"bench: {DB_NAME} holds another seed (kept → wanted: {differs}); "
                "pass --reseed to replace it"
            )
        log(f"the kept database holds another seed ({differs}): seeding afresh")
        marker = None
    if marker is None:
        database_create(server_url)
    try:
        result = run(args, bench_url=bench_url, marker=marker, wanted=wanted)
    finally:
        from django.db import connections

        connections.close_all()
        if args.keep or args.reuse:
            log(f"keeping database {DB_NAME}")
        else:
            log(f"dropping database {DB_NAME}")
            database_drop(server_url)
    print(json.dumps(result))


def run(
    args: argparse.Namespace,
    *,
    bench_url: str,
    marker: dict[str, Any] | None,
    wanted: dict[str, Any],
) -> dict[str, Any]:
    """Seed (unless `marker` says the kept database holds this seed), roll up, measure."""
    from django.core.management import call_command
    from django.utils import timezone

    load_avg = os.getloadavg()[0]
    log("migrating the scratch database")
    call_command("migrate", verbosity=0)
    reused = marker is not None
    warnings = []
    held_out_open = bool(wanted["held_out_open"])
    if not held_out_open:
        warnings.append(
            "DailyFact.kind is shorter than the fact kind 'held_out_open': the rollup fails on "
            "any day with a held-out customer message nobody answered, so this seed has none "
            "(held-out conversations get no follow-up and no trailing message)"
        )
    if marker is None:
        end = month_start(timezone.localdate())
        start = month_start(end, MONTHS)
        log("seeding the small tables with the ORM")
        world = seed_small(start=start, end=end, agents=args.agents)
        load = bulk_load(
            world,
            bench_url=bench_url,
            actions=args.actions,
            seed=args.seed,
            chunk=args.chunk,
            writers=args.writers,
            held_out_open=held_out_open,
        )
        marker = {
            "bench": "encs",
            **wanted,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "rows": load["rows"],
            "seed_s": load["seconds"],
            "seed_rows_per_s": load["rows_per_s"],
            "seed_writers": load["writers"],
            "seed_copy_s": load["copy_s"],
            "seed_commit_s": load["commit_s"],
            "seed_waited_for_generator_s": load["waited_for_generator_s"],
            "vacuum_analyze_s": vacuum_analyze(bench_url),
        }
        seed_marker_write(bench_url, marker)
    start, end = date.fromisoformat(marker["from"]), date.fromisoformat(marker["to"])
    if "rollup" not in marker:
        marker["rollup"] = rollup_facts(start)
        seed_marker_write(bench_url, marker)
        rollup = marker["rollup"] | {"measured": "this run"}
    else:
        rollup = marker["rollup"] | {"measured": "the run that seeded the kept database"}
    result: dict[str, Any] = {
        "bench": "encs",
        "actions": args.actions,
        "seed": args.seed,
        "agents": args.agents,
        "period": {"from": start.isoformat(), "to": (end - timedelta(days=1)).isoformat()},
        "reused_database": reused,
        "rows": marker["rows"],
        "disk_mb": table_sizes(bench_url),
        "seed_s": marker["seed_s"],
        "seed_rows_per_s": marker["seed_rows_per_s"],
        "seed_writers": marker.get("seed_writers"),
        "seed_copy_s": marker.get("seed_copy_s"),
        "seed_commit_s": marker.get("seed_commit_s"),
        "seed_waited_for_generator_s": marker.get("seed_waited_for_generator_s"),
        "vacuum_analyze_s": marker["vacuum_analyze_s"],
        "rollup": rollup,
        "checks": {"attempt_costs_sum_to_draft_cost": attempts_sum_to_drafts(bench_url)},
        "held_out_open_generated": marker["held_out_open"],
        "warnings": warnings,
    }
    result.update(measure(world_start=start, world_end=end, args=args))
    api = result["api_month_ms"]
    monthly = result["monthly_report_s"]
    result["targets"] = {
        "api_month_p50_ms": TARGET_API_P50_MS,
        "monthly_report_s": TARGET_MONTHLY_REPORT_S,
    }
    result["met"] = {
        "api_month_p50": api["p50"] <= TARGET_API_P50_MS if "p50" in api else None,
        "report_month_p50": result["report_month_ms"]["model"]["p50"] <= TARGET_API_P50_MS,
        "monthly_report": monthly["p50"] <= TARGET_MONTHLY_REPORT_S if "p50" in monthly else None,
    }
    result["cpus"] = len(os.sched_getaffinity(0))
    result["load_avg_1m_at_start"] = round(load_avg, 2)
    return result


if __name__ == "__main__":
    main()
