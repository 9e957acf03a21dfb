"""The demo's past: sixty days of a small support team, so the manager's dashboard, break-even
and the monthly report have something to show on the first run.

Everything is made from the demo's own texts (history.json, beside the articles and macros of
csbot/demo/knowledge that `seed_demo` imports): customers ask the questions of the demo
conversations and a few more of the same shop, drafts cite the demo articles or are the demo
macros, and four demo agents act on them with habits of their own (one accepts a lot and fast,
one edits heavily, one ignores often, one is slow). A share of conversations is held out, as
the product holds them out (per conversation, the policy's `holdout_share`), so T_baseline is
measured. The team drafted with a paid API only ("Paid only (demo history)", no knowledge) until
a switch day, then with the demo's live local-first policy, grounded in the knowledge base and
offering macros; from the switch day a reserved GPU is a monthly fixed cost (the plan is
returned here; accounting writes the row, see accounting's `demo_history` command).

In its last three weeks the team ran a policy experiment, now stopped, so the managers'
experiment page and the dashboard's withholding card have something to show: "Withhold weak
drafts", half of the conversations on the live policy ("control"), half on a copy of it that
withholds drafts worth less than nothing to the agent ("withholding"). The generator knows
which drafts are weak (a question the knowledge base cannot answer, drafted with a low score:
agents mostly ignore those, and reading one before writing unaided costs time); the
withholding arm withholds them, but for a random show share, and its agents write unaided.

Rows are written as the product writes them (the fields `message_ingest`, `draft_request`,
the worker's `_finish`, `reply_send` and `action_record` set), with `bulk_create` in one
transaction: a few thousand messages take seconds. No signal fires for bulk inserts, so the
caller has the days touched rolled up again (`HistorySeeded.days`).

Marked and removable: every row of the past hangs off one channel of the demo team, "Demo
history" (conversations closed and answered, so none of it is in the live queue), or is named
"(demo history)" (the paid policy, the experiment and its withholding policy, the intents'
descriptions), or is a demo agent. Seeding twice adds nothing; `history_remove` deletes exactly
those rows. The texts never come from outside this package: a user's machine has nothing else.
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from csbot.models import AgentProfile, Channel, Conversation, Message, Team
from drafting.models import (
    AgentAction,
    CascadePolicy,
    CascadeTier,
    Draft,
    DraftAttempt,
    DraftPassage,
    EndpointPrice,
    Experiment,
    ExperimentArm,
    Intent,
    KnowledgeArticle,
    KnowledgeChunk,
    Macro,
    MessageIntent,
    ModelEndpoint,
)
from drafting.selectors import agent_display_name, draft_text_for_agent
from drafting.services import edit_distance

HISTORY_CHANNEL = "Demo history"
MARK = "(demo history)"
PAID_POLICY = f"Paid only {MARK}"
FIXED_COST = f"Reserved GPU for the local model {MARK}"
# What the reserved GPU costs a month: sized so that break-even is close on the demo's volume
# (the chart shows both lines meet), not a quote.
FIXED_COST_MONTHLY_USD = Decimal("250.00")
DAYS = 60
SEED = 17
MONEY = Decimal("0.0000000001")
# The experiment of the last weeks (see the module's docstring): its name, the arms' policy
# besides the live one, how many days before today it started (or the switch day, when the
# history is shorter), and the stored salt of the product's assignment hash (unused here: the
# demo's conversations were split by the generator's draws, see _Generator._arm).
EXPERIMENT = f"Withhold weak drafts {MARK}"
WITHHOLDING_POLICY = f"Local-first, withholding {MARK}"
EXPERIMENT_DAYS = 21
EXPERIMENT_SEED = 1801
# A local-first draft for a question the knowledge base cannot answer is weak below this score.
WEAK_SCORE = 0.5
# The demo's agent rate (accounting_defaults' default), USD per hour: what the withholding arm
# prices the actions with when it decides (the action values accounting would have measured;
# the support domain never imports accounting).
DECISION_RATE = Decimal(30)


@dataclass(frozen=True)
class Habit:
    """A demo agent: how often they get a conversation, how they weigh use/edit/ignore
    against the draft's quality, how fast they work (1 = the team's pace)."""

    username: str
    first_name: str
    share: float
    use: float
    edit: float
    ignore: float
    pace: float


AGENTS = (
    Habit("demo-ana", "Ana", 0.32, use=1.6, edit=0.7, ignore=0.5, pace=0.7),
    Habit("demo-ben", "Ben", 0.28, use=0.5, edit=2.0, ignore=0.8, pace=1.0),
    Habit("demo-chloe", "Chloé", 0.22, use=0.7, edit=0.6, ignore=2.4, pace=0.9),
    Habit("demo-dev", "Dev", 0.18, use=1.0, edit=1.0, ignore=1.0, pace=1.7),
)

# Shares of use, edit, ignore by era and by what grounded the draft: the paid model without the
# knowledge base guesses; local-first drafts cite the articles or are the macros; a question
# the knowledge base cannot answer (a content gap) gets a vague draft in both eras.
QUALITY: dict[tuple[str, str], tuple[float, float, float]] = {
    ("paid", "grounded"): (0.36, 0.40, 0.24),
    ("paid", "macro"): (0.40, 0.38, 0.22),
    ("paid", "not_needed"): (0.65, 0.22, 0.13),
    ("paid", "none_found"): (0.12, 0.33, 0.55),
    ("local", "grounded"): (0.56, 0.32, 0.12),
    ("local", "macro"): (0.62, 0.29, 0.09),
    ("local", "not_needed"): (0.70, 0.20, 0.10),
    ("local", "none_found"): (0.08, 0.27, 0.65),
    # A weak draft (none found, low score): read, then nearly always ignored. Worth less than
    # nothing to the agent, which is what the withholding arm withholds.
    ("local", "weak"): (0.02, 0.08, 0.90),
}
# Seconds from opening a conversation to sending the reply, at the team's pace.
HANDLE = {"use": (26.0, 8.0), "edit": (78.0, 22.0), "ignore": (172.0, 38.0), "none": (150.0, 35.0)}
# Conversations per day by weekday (Monday first), before a growth of a third over the period.
VOLUME = (38, 33, 32, 31, 29, 15, 10)
HOURS = (1, 1, 1, 1, 1, 2, 4, 8, 14, 18, 18, 16, 12, 14, 16, 16, 14, 10, 7, 5, 4, 3, 2, 1)
SECOND_TURN = 0.3
FAILED = 0.02
OUTLIER = 0.005
# Share of turns an agent already has open when the message arrives (watching a live chat):
# they open it within seconds and wait for the draft, which the ENCS report prices.
WATCHING = 0.2


@dataclass(frozen=True)
class HistorySeeded:
    created: bool  # False: the demo team already had its history (nothing was written)
    conversations: int
    messages: int
    drafts: int
    days: tuple[date, ...]  # the days whose drafts were written (to roll up again)
    switch_day: date | None  # local-first from this day on (the fixed cost's first day)
    seconds: float


@dataclass(frozen=True)
class HistoryRemoved:
    conversations: int
    messages: int
    drafts: int
    days: tuple[date, ...]


def history_texts() -> dict[str, Any]:
    texts: dict[str, Any] = json.loads(Path(__file__).with_name("history.json").read_text())
    return texts


def history_channel(*, team: Team) -> Channel | None:
    return Channel.objects.filter(team=team, name=HISTORY_CHANNEL).first()


def history_switch_day(*, start: date, today: date) -> date:
    """The day the team moved to local-first: the first of last month when that leaves two
    weeks of paid drafts before it and a week after it (a month of each on the dashboard),
    else two fifths of the way in."""
    candidate = (today - timedelta(days=30)).replace(day=1)
    if (candidate - start).days >= 14 and (today - candidate).days >= 7:
        return candidate
    return start + timedelta(days=max(1, (today - start).days * 2 // 5))


@dataclass
class _Plan:
    """Rows to insert, in insert order; the ids of the ones before are known when a later
    list is built (bulk_create sets them on PostgreSQL)."""

    conversations: list[Conversation]
    threads: list[list[dict[str, Any]]]  # per conversation: its turns (see _turns)


class _Generator:
    def __init__(
        self, *, team: Team, channel: Channel, rng: random.Random, start: date, days: int
    ) -> None:
        self.team, self.channel, self.rng = team, channel, rng
        self._show_position: float | None = None  # see _decide
        self.start, self.days = start, days
        self.today = start + timedelta(days=days)
        self.switch = history_switch_day(start=start, today=self.today)
        self.texts = history_texts()
        self.tz = timezone.get_default_timezone()
        self.live = CascadePolicy.objects.get(team=team, active=True)
        local_tier = self.live.tiers.select_related("endpoint").order_by("position").first()
        if local_tier is None:
            raise ValueError(f"The demo policy {self.live} has no tier.")
        self.local = local_tier.endpoint
        paid = ModelEndpoint.objects.filter(kind=ModelEndpoint.Kind.PAID).order_by("pk").first()
        if paid is None:
            raise ValueError("The demo has no paid endpoint (run seed_demo first).")
        self.paid_endpoint = paid
        self.paid = self._paid_policy()
        # The experiment ran from EXPERIMENT_DAYS days ago (the switch day, when later) until it
        # was stopped at the start of yesterday: yesterday's drafts are the live policy's again.
        first = max(self.today - timedelta(days=EXPERIMENT_DAYS), self.switch)
        last = self.today - timedelta(days=1)
        self.started, self.stopped = self._at(first, 0), self._at(last, 0)
        self.experiment = self._experiment() if (last - first).days >= 2 else None
        self.arms: list[ExperimentArm] = []
        if self.experiment is not None and self.experiment.stopped_at is not None:
            # One left from an earlier history (its conversations removed by hand) keeps its
            # own days: the drafts are assigned by them.
            self.started, self.stopped = self.experiment.started_at, self.experiment.stopped_at
            self.arms = list(self.experiment.arms.select_related("policy").order_by("position"))
        self.prices = {
            e.pk: EndpointPrice.objects.filter(endpoint=e).order_by("-effective_from").first()
            for e in (self.local, self.paid_endpoint)
        }
        self.agents = [self._agent(habit) for habit in AGENTS]
        self.intents = self._intents()
        articles = KnowledgeArticle.objects.filter(team=team)
        self.articles = {a.external_id: a for a in articles}
        self.chunks: dict[int, list[KnowledgeChunk]] = {}
        for chunk in KnowledgeChunk.objects.filter(article__in=articles).order_by(
            "article_id", "position"
        ):
            self.chunks.setdefault(chunk.article_id, []).append(chunk)
        self.macros = {m.external_id: m for m in Macro.objects.filter(team=team)}

    # --- the rows history needs besides its conversations ---------------------------------

    def _paid_policy(self) -> CascadePolicy:
        policy, created = CascadePolicy.objects.get_or_create(
            team=self.team,
            name=PAID_POLICY,
            defaults={
                "active": False,
                "system_prompt": self.live.system_prompt,
                "holdout_share": self.live.holdout_share,
                "grounding": False,
                "created_at": self._at(self.start, 0),
            },
        )
        if created:
            CascadeTier.objects.create(
                policy=policy, position=1, endpoint=self.paid_endpoint, threshold=Decimal(0)
            )
        return policy

    def _experiment(self) -> Experiment:
        """The stopped experiment and its two arms, 50/50: "control", the live policy, and
        "withholding", a copy of it that withholds drafts worth less than nothing. Made as an
        admin makes them (one by one, so the audit log has them), by no one (the demo)."""
        experiment = Experiment.objects.filter(team=self.team, name=EXPERIMENT).first()
        if experiment is not None:
            return experiment
        experiment = Experiment.objects.create(
            team=self.team,
            name=EXPERIMENT,
            seed=EXPERIMENT_SEED,
            status=Experiment.Status.STOPPED,
            started_at=self.started,
            stopped_at=self.stopped,
            note="Does withholding drafts with a negative expected ENCS (a question the "
            "knowledge base cannot answer, drafted with a low score) raise ENCS per message? "
            "Demo data: the conversations were split by the demo's generator.",
        )
        for position, (name, policy) in enumerate(
            (("control", self.live), ("withholding", self._withholding_policy()))
        ):
            ExperimentArm.objects.create(
                experiment=experiment,
                name=name,
                position=position,
                policy=policy,
                share=Decimal("0.5"),
            )
        return experiment

    def _withholding_policy(self) -> CascadePolicy:
        """The live policy's copy (its settings and tiers) that withholds, never active."""
        policy = CascadePolicy.objects.filter(team=self.team, name=WITHHOLDING_POLICY).first()
        if policy is not None:
            return policy
        policy = CascadePolicy.objects.get(pk=self.live.pk)
        policy.pk = None
        policy._state.adding = True
        policy.name = WITHHOLDING_POLICY
        policy.active = False
        policy.withhold_negative = True
        policy.withhold_show_share = Decimal("0.1")
        policy.created_at = self.started
        policy.save(force_insert=True)
        tiers = list(self.live.tiers.order_by("position"))
        for tier in tiers:
            tier.pk = None
            tier.policy = policy
        CascadeTier.objects.bulk_create(tiers)
        return policy

    def _agent(self, habit: Habit) -> User:
        users = get_user_model().objects
        user = users.filter(username=habit.username).first()
        if user is None:
            user = users.create_user(
                habit.username, email=f"{habit.username}@example.com", first_name=habit.first_name
            )
            user.set_unusable_password()  # a name on the history, not a login
            user.save(update_fields=["password"])
        AgentProfile.objects.get_or_create(user=user, defaults={"team": self.team})
        return user

    def _intents(self) -> dict[str, Intent]:
        names = {t["intent"] for t in self.texts["topics"]}
        found = {i.name: i for i in Intent.objects.filter(team=self.team, name__in=names)}
        for name in sorted(names - set(found)):
            found[name] = Intent.objects.create(
                team=self.team, name=name, description=f"Customer questions {MARK}"
            )
        return found

    # --- time --------------------------------------------------------------------------------

    def _at(self, day: date, seconds: float) -> datetime:
        start = datetime(day.year, day.month, day.day, tzinfo=self.tz)
        return start + timedelta(seconds=seconds)

    def _seconds(self, mean: float, spread: float, pace: float) -> float:
        return max(6.0, self.rng.gauss(mean, spread) * pace)

    # --- the plan ----------------------------------------------------------------------------

    def plan(self) -> _Plan:
        conversations: list[Conversation] = []
        threads: list[list[dict[str, Any]]] = []
        topics = self.texts["topics"]
        weights = [t["weight"] for t in topics]
        number = 0
        for offset in range(self.days):
            day = self.start + timedelta(days=offset)
            growth = 0.85 + 0.35 * offset / self.days
            count = round(VOLUME[day.weekday()] * growth * self.rng.uniform(0.85, 1.15))
            for _ in range(count):
                number += 1
                topic = self.rng.choices(topics, weights)[0]
                hour = self.rng.choices(range(24), HOURS)[0]
                opened = self._at(day, hour * 3600 + self.rng.uniform(0, 3599))
                customer = self.rng.choice(self.customers)
                arm = self._arm(opened)
                turns = self._turns(topic, customer, opened, era=self._era(day), arm=arm)
                last = turns[-1]["acted_at"]
                conversations.append(
                    Conversation(
                        team=self.team,
                        channel=self.channel,
                        external_id=f"history-{number}",
                        customer_ref=customer,
                        status=Conversation.Status.CLOSED,
                        created_at=opened,
                        updated_at=last,
                        awaiting_reply_since=None,
                    )
                )
                threads.append(turns)
        return _Plan(conversations=conversations, threads=threads)

    def _era(self, day: date) -> str:
        return "paid" if day < self.switch else "local"

    def _arm(self, opened: datetime) -> ExperimentArm | None:
        """The arm of a conversation opened while the experiment ran, else None. The product
        draws it by a hash of the conversation's id (drafting.experiments.arm_for); a planned
        conversation has no id yet, and the experiment is over, so no conversation will ever
        be assigned by the hash: the generator's own draw splits them, with the arms' shares,
        and the drafts record the arm (Draft.experiment_arm), as the results read it."""
        if self.experiment is None or not self.started <= opened < self.stopped:
            return None
        arm: ExperimentArm = self.rng.choices(self.arms, [float(a.share) for a in self.arms])[0]
        return arm

    @functools.cached_property
    def customers(self) -> list[str]:
        """Who writes: the demo's first names with every last initial (about 500 people), so a
        customer has a few earlier conversations, as in a real shop, not dozens in two months;
        the live demo's customers are among them."""
        firsts = sorted({name.split()[0] for name in self.texts["customers"]})
        return [f"{first} {chr(ord('A') + i)}." for first in firsts for i in range(26)]

    def _turns(
        self,
        topic: dict[str, Any],
        customer: str,
        opened: datetime,
        *,
        era: str,
        arm: ExperimentArm | None,
    ) -> list[dict[str, Any]]:
        """A conversation's customer turns, each with what happened to it: its draft (or the
        hold-out, or the withholding), the agent, what they sent and when. A turn of an arm's
        conversation that arrives after the stop is drafted by the live policy again."""
        policy = self.paid if era == "paid" else arm.policy if arm is not None else self.live
        held_out = self.rng.random() < float(policy.holdout_share)
        agent_index = self.rng.choices(range(len(AGENTS)), [h.share for h in AGENTS])[0]
        first = {"topic": topic, "text": self.rng.choice(topic["questions"]), "kind": None}
        turns = [first]
        if self.rng.random() < SECOND_TURN:
            follow = self.texts["follow_up"]
            second = {**follow, "key": "follow-up", "knowledge": "not_needed", "intent": None}
            turns.append({"topic": second, "text": self.rng.choice(follow["questions"])})
        arrived = opened
        name = customer.split()[0]
        for turn in turns:
            habit = AGENTS[agent_index]
            turn["agent"] = self.agents[agent_index]
            turn["habit"] = habit
            turn["arrived"] = arrived
            turn["era"] = era
            turn["held_out"] = held_out
            turn["arm"] = arm if arm is not None and arrived < self.stopped else None
            turn["policy"] = (
                turn["arm"].policy
                if turn["arm"] is not None
                else self.paid
                if era == "paid"
                else self.live
            )
            opened_after = (
                self.rng.uniform(0.3, 2.0)
                if self.rng.random() < WATCHING
                else self.rng.lognormvariate(5.5, 0.9)
            )
            turn["shown_at"] = arrived + timedelta(seconds=opened_after)
            self._draft_and_action(turn, name=name)
            if turn["outlier"]:
                handle = self.rng.uniform(4000, 9000)
            else:
                mean, spread = HANDLE[turn["kind"]]
                handle = self._seconds(mean, spread, habit.pace)
            turn["acted_at"] = turn["shown_at"] + timedelta(seconds=round(handle, 3))
            arrived = turn["acted_at"] + timedelta(seconds=self.rng.uniform(60, 1800))
        return turns

    def _draft_and_action(self, turn: dict[str, Any], *, name: str) -> None:
        topic, habit, era = turn["topic"], turn["habit"], turn["era"]
        turn["outlier"] = self.rng.random() < OUTLIER
        turn["failed"] = False
        turn["draft_text"] = ""
        turn["score"], turn["decision"] = None, None
        own = topic["own"]
        if turn["held_out"]:
            turn["kind"], turn["final"] = "none", own
            return
        source = "model"
        if era == "local" and topic["knowledge"] == "macro":
            source = "macro"
            body = self.macros[topic["macro"]].body
            turn["draft_text"] = body.replace("{customer_name}", name)
        elif self.rng.random() < FAILED:
            turn["failed"], turn["kind"], turn["final"] = True, "none", own
            turn["source"] = source
            return
        else:
            template = topic.get("draft") or self._macro_as_prose(topic)
            turn["draft_text"] = template.replace("{customer_name}", name)
        turn["source"] = source
        knowledge = topic["knowledge"]
        if source == "model":
            # A local-first draft the knowledge base could not ground scores lower.
            gap = era == "local" and knowledge == "none_found"
            turn["score"] = self.rng.uniform(0.25, 0.65) if gap else self.rng.uniform(0.55, 0.95)
            if gap and turn["score"] < WEAK_SCORE:
                knowledge = "weak"
            turn["decision"] = self._decide(turn, knowledge)
        if turn["decision"] is not None and not turn["decision"]["show"]:
            # Withheld: the agent never saw it and wrote unaided (action `none`).
            turn["kind"], turn["final"] = "none", own
            return
        shares = QUALITY[(era, knowledge)]
        kind = self.rng.choices(
            ("use", "edit", "ignore"),
            (shares[0] * habit.use, shares[1] * habit.edit, shares[2] * habit.ignore),
        )[0]
        shown = draft_text_for_agent(
            text=turn["draft_text"], agent_name=agent_display_name(turn["agent"])
        )
        final = {
            "use": shown,
            "edit": topic["edited"].replace("{customer_name}", name),
            "ignore": own,
        }[kind]
        final = draft_text_for_agent(text=final, agent_name=agent_display_name(turn["agent"]))
        turn["kind"], turn["final"], turn["shown_text"] = kind, final, shown

    def _decide(self, turn: dict[str, Any], quality: str) -> dict[str, Any] | None:
        """Show or withhold a ready model draft, as a withholding policy decides
        (drafting.decisions): the value of showing V = Σ P(action) × S_action, each action's
        saving priced at the demo's rate against an unaided reply, with P from what the
        generator knows of the draft (its quality's shares, which the policy's scorer estimates
        with some noise). V < 0 is withheld, except for a random show share. None (not
        decided) outside a withholding arm."""
        arm: ExperimentArm | None = turn["arm"]
        if arm is None or not arm.policy.withhold_negative:
            return None
        unaided = Decimal(str(HANDLE["none"][0]))
        shares = QUALITY[(turn["era"], quality)]
        value = sum(
            (
                Decimal(str(share)) * DECISION_RATE * (unaided - Decimal(str(HANDLE[kind][0])))
                for share, kind in zip(shares, ("use", "edit", "ignore"), strict=True)
            ),
            Decimal(0),
        ) / Decimal(3600)
        value *= Decimal(f"{self.rng.uniform(0.8, 1.2):.4f}")
        if value >= 0:
            return {"value": value, "show": True, "probability": Decimal(1)}
        show_share = arm.policy.withhold_show_share
        # Systematic sampling from a random start: each negative draft is shown with
        # probability show_share, as the policy draws, but the weeks' few dozen negatives
        # always show some (independent draws showed none of 27 on about one day in 17).
        if self._show_position is None:
            self._show_position = self.rng.random()
        before = math.floor(self._show_position)
        self._show_position += float(show_share)
        show = math.floor(self._show_position) > before
        return {"value": value, "show": show, "probability": show_share if show else 1 - show_share}

    def _macro_as_prose(self, topic: dict[str, Any]) -> str:
        """What the paid model drafted for a question a macro answers (before the switch
        there were no macro offers): the macro's text without its greeting and signature."""
        body: str = self.macros[topic["macro"]].body
        lines = [line for line in body.split("\n\n") if "{" not in line]
        return "Hi {customer_name}, " + " ".join(lines)

    # --- the rows ----------------------------------------------------------------------------

    def cost(self, endpoint: ModelEndpoint, *, tokens_in: int, tokens_out: int, ms: int) -> Decimal:
        """The attempt's cost at the endpoint's demo price, priced as drafting.engine.pricing
        prices (tokens for a paid API, GPU-seconds at the hourly rate for the local server)."""
        price = self.prices[endpoint.pk]
        if price is None:
            return Decimal(0)
        if endpoint.kind == ModelEndpoint.Kind.LOCAL:
            cost = Decimal(ms) / 1000 * price.gpu_hour_usd / 3600
        else:
            cost = (
                tokens_in * price.input_price_per_mtok + tokens_out * price.output_price_per_mtok
            ) / 1_000_000 + price.request_fee
        return cost.quantize(MONEY)

    def passages(self, topic: dict[str, Any]) -> list[tuple[KnowledgeChunk, bool]]:
        """The draft's passages, best first: the chunk the topic's article answers with
        (cited), then two near misses from other articles (not cited)."""
        article = self.articles[topic["article"]]
        chunks = self.chunks.get(article.pk, [])
        cited = next((c for c in chunks if topic["heading"] in c.heading), None) or chunks[0]
        others = [c for a, cs in self.chunks.items() if a != article.pk for c in cs]
        return [(cited, True), *((c, False) for c in self.rng.sample(others, 2))]


def history_seed(
    *,
    team: Team,
    days: int = DAYS,
    seed: int = SEED,
    today: date | None = None,
    progress: Callable[[str], None] | None = None,
) -> HistorySeeded:
    """Write the team's past (the demo team's: its active local-first policy, a paid endpoint,
    the demo articles and macros must exist): `days` days up to yesterday, in one transaction.
    Nothing is written when the team's history channel already has conversations.

    Steps: the history channel, the paid policy, the demo agents and the intents; the plan
    (conversations, turns, what each agent did, all dated); then bulk inserts in dependency
    order: conversations, messages (per conversation in arrival order), intents' verdicts,
    drafts, attempts, passages, actions."""
    began = time.monotonic()
    say = progress or (lambda line: None)
    today = today or timezone.localdate()
    start = today - timedelta(days=days)
    with transaction.atomic():
        channel, _ = Channel.objects.get_or_create(
            team=team, name=HISTORY_CHANNEL, defaults={"created_at": timezone.now()}
        )
        if Conversation.objects.filter(channel=channel).exists():
            return HistorySeeded(False, 0, 0, 0, (), None, time.monotonic() - began)
        gen = _Generator(
            team=team,
            channel=channel,
            rng=random.Random(seed),  # noqa: S311 - a demo's draws, not crypto
            start=start,
            days=days,
        )
        plan = gen.plan()
        say(f"demo history: {len(plan.conversations)} conversations planned over {days} days")
        Conversation.objects.bulk_create(plan.conversations, batch_size=1000)
        messages = _messages(plan, gen)
        Message.objects.bulk_create(messages, batch_size=2000)
        _verdicts(plan, gen)
        drafts = _drafts(plan, gen)
        Draft.objects.bulk_create(drafts, batch_size=2000)
        attempts, passages = _attempts_and_passages(plan, gen)
        DraftAttempt.objects.bulk_create(attempts, batch_size=2000)
        DraftPassage.objects.bulk_create(passages, batch_size=2000)
        actions = _actions(plan)
        AgentAction.objects.bulk_create(actions, batch_size=2000)
    seeded_days = tuple(sorted({timezone.localtime(d.created_at).date() for d in drafts}))
    result = HistorySeeded(
        created=True,
        conversations=len(plan.conversations),
        messages=len(messages),
        drafts=len(drafts),
        days=seeded_days,
        switch_day=gen.switch,
        seconds=time.monotonic() - began,
    )
    say(
        f"demo history: {result.messages} messages, {result.drafts} drafts, "
        f"{len(actions)} replies written in {result.seconds:.1f} s"
    )
    return result


def _messages(plan: _Plan, gen: _Generator) -> list[Message]:
    rows: list[Message] = []
    for conversation, turns in zip(plan.conversations, plan.threads, strict=True):
        for number, turn in enumerate(turns, start=1):
            turn["inbound"] = Message(
                conversation=conversation,
                channel=gen.channel,
                direction=Message.Direction.INBOUND,
                text=turn["text"],
                author=conversation.customer_ref,
                channel_message_id=f"{conversation.external_id}-{number}",
                created_at=turn["arrived"],
            )
            agent = turn["agent"]
            turn["outbound"] = Message(
                conversation=conversation,
                channel=gen.channel,
                direction=Message.Direction.OUTBOUND,
                text=turn["final"],
                author=agent.get_username(),
                author_user=agent,
                created_at=turn["acted_at"],
            )
            rows += [turn["inbound"], turn["outbound"]]
    return rows


def _verdicts(plan: _Plan, gen: _Generator) -> None:
    """The customer turns' intents, as labelled (a person's verdict: full confidence, no
    classifier); a thank-you has none."""
    verdicts = [
        MessageIntent(
            message=turn["inbound"],
            intent=gen.intents[turn["topic"]["intent"]],
            confidence=MessageIntent.LABEL_CONFIDENCE,
            classified_at=turn["arrived"],
        )
        for turns in plan.threads
        for turn in turns
        if turn["topic"].get("intent")
    ]
    MessageIntent.objects.bulk_create(verdicts, batch_size=2000)


def _drafts(plan: _Plan, gen: _Generator) -> list[Draft]:
    rows: list[Draft] = []
    for turns in plan.threads:
        for turn in turns:
            policy = turn["policy"]
            arrived = turn["arrived"]
            if turn["held_out"]:
                draft = Draft(
                    message=turn["inbound"],
                    policy=policy,
                    status=Draft.Status.HELD_OUT,
                    created_at=arrived,
                    first_shown_at=turn["shown_at"],
                )
            else:
                draft = _model_draft(turn, gen, policy)
            draft.experiment_arm = turn["arm"]
            turn["draft"] = draft
            rows.append(draft)
    return rows


def _model_draft(turn: dict[str, Any], gen: _Generator, policy: CascadePolicy) -> Draft:
    """A draft as the worker leaves it: ready (from the model or a macro) or failed, with what
    the knowledge step found in the local-first era (the paid policy does not ground)."""
    arrived, topic = turn["arrived"], turn["topic"]
    endpoint = gen.paid_endpoint if turn["era"] == "paid" else gen.local
    ms = round(gen.rng.uniform(700, 2200) if turn["era"] == "paid" else gen.rng.uniform(900, 3200))
    grounded = turn["era"] == "local" and topic["knowledge"] == "grounded"
    tokens_in = gen.rng.randint(650, 1100) if grounded else gen.rng.randint(300, 620)
    tokens_out = max(20, len(turn["draft_text"]) // 4 + gen.rng.randint(-8, 8))
    macro = turn["source"] == "macro"
    cost = (
        Decimal(0)
        if macro
        else gen.cost(endpoint, tokens_in=tokens_in, tokens_out=tokens_out, ms=ms)
    )
    turn["attempt"] = {
        "endpoint": endpoint,
        "ms": ms,
        "in": tokens_in,
        "out": tokens_out,
        "cost": cost,
    }
    claimed = arrived + timedelta(milliseconds=gen.rng.randint(40, 400))
    done = claimed + timedelta(milliseconds=0 if macro else ms)
    # A macro has no score; a failed draft none either (nothing was judged).
    score = None if turn["score"] is None else Decimal(f"{turn['score']:.4f}")
    draft = Draft(
        message=turn["inbound"],
        policy=policy,
        total_cost=cost,
        created_at=arrived,
        enqueued_at=arrived,
        claimed_at=claimed,
        tries=1,
        first_shown_at=turn["shown_at"],
    )
    if turn["era"] == "local":
        knowledge = topic["knowledge"]
        if knowledge == "grounded":
            draft.knowledge = Draft.Knowledge.GROUNDED
            draft.knowledge_need = Decimal(f"{gen.rng.uniform(0.75, 0.98):.4f}")
            draft.knowledge_note = "Grounded in the passages the re-ranker kept."
        elif knowledge == "none_found":
            draft.knowledge = Draft.Knowledge.NONE_FOUND
            draft.knowledge_need = Decimal(f"{gen.rng.uniform(0.65, 0.92):.4f}")
            draft.knowledge_note = "Needs knowledge, none found: drafted by the top tier."
        elif knowledge == "not_needed":
            draft.knowledge = Draft.Knowledge.NOT_NEEDED
            draft.knowledge_need = Decimal(f"{gen.rng.uniform(0.02, 0.3):.4f}")
        elif macro:
            title = gen.macros[topic["macro"]].title
            draft.knowledge_note = f"Macro {title!r} matched by intent."
    if turn["failed"]:
        draft.status = Draft.Status.FAILED
        draft.failure_reason = "every tier failed (timeout)"
        return draft
    decision = turn["decision"]
    shown = decision is None or decision["show"]
    # A withheld draft is finished as a ready one (text, time, score) but never shown.
    draft.status = Draft.Status.READY if shown else Draft.Status.WITHHELD
    draft.text = turn["draft_text"]
    draft.ready_at = done
    draft.score = score
    if decision is not None:
        # As `_finish` records a decision: expected ENCS = the value of showing − the cost.
        draft.expected_encs = (decision["value"] - cost).quantize(MONEY)
        draft.decision_probability = decision["probability"]
    if not macro:
        draft.final_endpoint = endpoint
        # The policies have one tier each: their top tier alone is what answered.
        draft.counterfactual_cost = cost
    return draft


def _attempts_and_passages(
    plan: _Plan, gen: _Generator
) -> tuple[list[DraftAttempt], list[DraftPassage]]:
    attempts: list[DraftAttempt] = []
    passages: list[DraftPassage] = []
    for turns in plan.threads:
        for turn in turns:
            draft = turn["draft"]
            if turn["held_out"]:
                continue
            started = draft.claimed_at
            if turn["source"] == "macro":
                macro = gen.macros[turn["topic"]["macro"]]
                attempts.append(
                    DraftAttempt(
                        draft=draft,
                        tier=0,
                        macro=macro,
                        outcome=DraftAttempt.Outcome.OK,
                        started_at=started,
                    )
                )
                continue
            spec = turn["attempt"]
            endpoint = spec["endpoint"]
            found = (
                gen.passages(turn["topic"]) if draft.knowledge == Draft.Knowledge.GROUNDED else []
            )
            common = {
                "draft": draft,
                "tier": 1,
                "endpoint": endpoint,
                "model_name": endpoint.model_name,
                "tokens_in": spec["in"],
                "latency_ms": spec["ms"],
                "cost": spec["cost"],
                "passages_shown": len(found),
                "started_at": started,
            }
            if turn["failed"]:
                attempts.append(
                    DraftAttempt(
                        **common,
                        tokens_out=0,
                        outcome=DraftAttempt.Outcome.ERROR,
                        error_kind=DraftAttempt.ErrorKind.TIMEOUT,
                        error_message="Request timed out.",
                    )
                )
            else:
                attempts.append(
                    DraftAttempt(
                        **common,
                        tokens_out=spec["out"],
                        score=draft.score,
                        citations=[1] if found else [],
                        outcome=DraftAttempt.Outcome.OK,
                    )
                )
            for number, (chunk, cited) in enumerate(found, start=1):
                passages.append(
                    DraftPassage(
                        draft=draft,
                        number=number,
                        chunk=chunk,
                        article_id=chunk.article_id,
                        article_version=1,
                        text=chunk.text,
                        score=round(0.82 - 0.18 * number + gen.rng.uniform(-0.05, 0.05), 4),
                        cited=cited,
                    )
                )
    return attempts, passages


def _actions(plan: _Plan) -> list[AgentAction]:
    rows: list[AgentAction] = []
    for turns in plan.threads:
        for turn in turns:
            draft = turn["draft"]
            shown = turn.get("shown_text", "")
            distance = (
                edit_distance(shown, turn["final"])
                if turn["kind"] in ("use", "edit", "ignore")
                else None
            )
            kind = turn["kind"]
            if kind == "edit" and distance == 0:
                kind = "use"  # action_record's rule: an edit that changed nothing is a use
            handle = turn["acted_at"] - turn["shown_at"]
            rows.append(
                AgentAction(
                    draft=draft,
                    inbound_message=turn["inbound"],
                    outbound_message=turn["outbound"],
                    agent=turn["agent"],
                    kind=kind,
                    final_text=turn["final"],
                    edit_distance=distance,
                    shown_at=turn["shown_at"],
                    acted_at=turn["acted_at"],
                    handle_seconds=Decimal(f"{handle.total_seconds():.3f}"),
                )
            )
    return rows


def history_remove(*, team: Team) -> HistoryRemoved:
    """Delete the team's past: the history channel and everything on it (conversations,
    messages, drafts with their attempts and passages, actions, verdicts), the experiment with
    its arms, the paid and the withholding policy (unless one was made active since), the demo
    agents and the intents the history made. Returns what went and the days whose
    drafts went (to roll up again). Nothing else of the team is touched."""
    with transaction.atomic():
        channel = history_channel(team=team)
        drafts = Draft.objects.filter(message__channel=channel) if channel else Draft.objects.none()
        gone_days = tuple(
            sorted(
                {
                    timezone.localtime(at).date()
                    for at in drafts.values_list("created_at", flat=True)
                }
            )
        )
        removed = HistoryRemoved(
            conversations=Conversation.objects.filter(channel=channel).count() if channel else 0,
            messages=Message.objects.filter(channel=channel).count() if channel else 0,
            drafts=drafts.count(),
            days=gone_days,
        )
        if channel is not None:
            AgentAction.objects.filter(inbound_message__channel=channel).delete()
            drafts.delete()
            Message.objects.filter(channel=channel).delete()
            Conversation.objects.filter(channel=channel).delete()
            channel.delete()
        # After the drafts (which keep their arm and policy): the arms go with the experiment.
        Experiment.objects.filter(team=team, name=EXPERIMENT).delete()
        CascadePolicy.objects.filter(
            team=team, name__in=[PAID_POLICY, WITHHOLDING_POLICY], active=False
        ).delete()
        get_user_model().objects.filter(
            username__in=[h.username for h in AGENTS], agent_profile__team=team
        ).delete()
        Intent.objects.filter(team=team, description__endswith=MARK).delete()
    return removed
