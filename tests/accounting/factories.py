"""Builders of the accounting tests: drafts answered (or not) on a given day, the hand-computed
scenario, the case study's agent rate, and the "Hand" team's books for the dashboard."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from accounting.engine import Scope
from accounting.models import AccountingSettings
from csbot.models import AgentProfile, Message, Team
from drafting.models import (
    AgentAction,
    CascadePolicy,
    Draft,
    DraftAttempt,
    DraftPassage,
    Intent,
    KnowledgeArticle,
    KnowledgeChunk,
    Macro,
    MessageIntent,
    ModelEndpoint,
)
from tests.factories import (
    AgentProfileFactory,
    ConversationFactory,
    EndpointFactory,
    MessageFactory,
    PolicyFactory,
    TeamFactory,
    UserFactory,
)

DAY = date(2026, 10, 5)
OCTOBER = Scope(start=date(2026, 10, 1), end=date(2026, 11, 1))


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def drafted(
    policy: CascadePolicy,
    *,
    kind: str | None,
    handle: str = "0",
    cost: str = "0",
    counterfactual: str | None = None,
    day: date = DAY,
    agent: Any = None,
    endpoint: Any = None,
    intent: Intent | None = None,
    text: str | None = None,
    edit_distance: str | None = None,
    knowledge: str = "",
    question: tuple[str, list[float]] | None = None,
    failed: bool | None = None,
    wait: str | None = None,
) -> Draft:
    """A draft of `policy`'s team created on `day`, answered with `kind` after `handle` s
    (kind None: failed and never answered, unless `failed` is False: ready, never answered;
    "none": failed, answered unaided; "held_out": a held-out conversation answered unaided).
    `text` is the customer's, `question` the (embedding model, vector) retrieval used.
    `wait`: seconds from the agent opening the conversation to the draft being ready
    (negative: ready that long before it was opened); the handle time runs from the opening."""
    created = at(day)
    lead = timedelta(seconds=float(wait)) if wait is not None else None
    shown = created + max(-lead, timedelta(0)) if lead is not None else created
    conversation = ConversationFactory.create(team=policy.team)
    inbound = MessageFactory.create(
        conversation=conversation,
        created_at=created,
        **({"text": text} if text is not None else {}),
    )
    if intent is not None:
        MessageIntent.objects.create(message=inbound, intent=intent, confidence=Decimal("0.9"))
    held_out = kind == "held_out"
    if failed is None:
        failed = kind in ("none", None)  # no text: the agent had nothing to use
    draft = Draft.objects.create(
        message=inbound,
        policy=policy,
        status=Draft.Status.HELD_OUT
        if held_out
        else (Draft.Status.FAILED if failed else Draft.Status.READY),
        text="" if held_out or failed else "Draft text",
        final_endpoint=None if held_out or failed else endpoint,
        total_cost=Decimal(cost),
        counterfactual_cost=Decimal(counterfactual) if counterfactual else None,
        created_at=created,
        ready_at=None if held_out or failed else created + max(lead or timedelta(0), timedelta(0)),
        first_shown_at=shown if lead is not None else None,
        knowledge=knowledge,
        question_embedding=question[1] if question else None,
        question_embedding_model=question[0] if question else "",
    )
    if kind is not None:
        outbound = MessageFactory.create(
            conversation=conversation, direction=Message.Direction.OUTBOUND
        )
        AgentAction.objects.create(
            draft=draft,
            inbound_message=inbound,
            outbound_message=outbound,
            agent=agent or UserFactory.create(),
            kind="none" if held_out else kind,
            final_text="Reply",
            shown_at=shown,
            acted_at=shown + timedelta(seconds=float(handle)),
            handle_seconds=Decimal(handle),
            edit_distance=None if edit_distance is None else Decimal(edit_distance),
        )
    return draft


def case_study_settings() -> AccountingSettings:
    """R = $36/h = $0.01/s; T_baseline 120 s until 3 held-out replies are in (from 2026)."""
    return AccountingSettings.objects.create(
        effective_from=date(2026, 1, 1),
        agent_hourly_usd=Decimal(36),
        default_baseline_seconds=Decimal(120),
        min_holdout_sample=3,
    )


def scenario(policy: CascadePolicy) -> None:
    """Drafts of October 5th worked out by hand: used, edited, ignored, one failed and never
    answered, two held out."""
    endpoint = EndpointFactory.create()
    drafted(
        policy, kind="use", handle="30", cost="0.002", counterfactual="0.010", endpoint=endpoint
    )
    drafted(
        policy, kind="edit", handle="60", cost="0.004", counterfactual="0.012", endpoint=endpoint
    )
    drafted(
        policy, kind="ignore", handle="150", cost="0.001", counterfactual="0.009", endpoint=endpoint
    )
    drafted(policy, kind=None, cost="0.003")  # failed, never answered: cost, no saving
    drafted(policy, kind="held_out", handle="100")
    drafted(policy, kind="held_out", handle="140")


def attempt(
    draft: Draft,
    *,
    tier: int,
    cost: str,
    endpoint: ModelEndpoint | None = None,
    ok: bool = True,
) -> DraftAttempt:
    """A tier's attempt for `draft` (tier 0: a cache hit), ok or timed out."""
    return DraftAttempt.objects.create(
        draft=draft,
        tier=tier,
        endpoint=endpoint,
        cache_hit=tier == 0,
        cost=Decimal(cost),
        outcome="ok" if ok else "error",
        error_kind="" if ok else "timeout",
        started_at=draft.created_at,
    )


def article(team: Team, title: str, *, version: int = 1) -> KnowledgeArticle:
    """A published article of `team` at `version`, one chunk per paragraph of its title."""
    return KnowledgeArticle.objects.create(
        team=team,
        external_id=title.lower().replace(" ", "-"),
        title=title,
        body=f"# {title}\n\nWhat the team says about {title.lower()}.",
        version=version,
        content_hash=title,
        updated_at=at(DAY, 8),
    )


def cite(draft: Draft, *cited: KnowledgeArticle, version: int = 1) -> list[DraftPassage]:
    """The passages `draft`'s shown text cites, numbered in order (an article named twice is
    two of its chunks), plus one passage found but not cited."""
    passages = []
    for number, source in enumerate(cited, start=1):
        chunk, _created = KnowledgeChunk.objects.get_or_create(
            article=source,
            position=sum(1 for a in cited[:number] if a == source) - 1,
            defaults={"team": source.team, "text": source.body, "content_hash": str(number)},
        )
        passages.append(
            DraftPassage.objects.create(
                draft=draft,
                number=number,
                chunk=chunk,
                article=source,
                article_version=version,
                text=chunk.text,
                score=1.0 / number,
                cited=True,
            )
        )
    if cited:
        DraftPassage.objects.create(
            draft=draft,
            number=len(cited) + 1,
            article=cited[0],
            article_version=version,
            text="Found, not cited.",
            score=0.01,
            cited=False,
        )
    return passages


def macro(team: Team, title: str) -> Macro:
    return Macro.objects.create(
        team=team,
        external_id=title.lower().replace(" ", "-"),
        title=title,
        body=f"Hello {{customer_name}}, {title.lower()}. {{agent_name}}",
        content_hash=title,
        updated_at=at(DAY, 8),
    )


def macro_offer(draft: Draft, offered: Macro, *, exploratory: bool = False) -> DraftAttempt:
    """The tier-0 attempt that made `draft`'s text from `offered` (no cost, no endpoint)."""
    return DraftAttempt.objects.create(
        draft=draft,
        tier=0,
        macro=offered,
        cost=Decimal(0),
        outcome="ok",
        exploratory=exploratory,
        started_at=draft.created_at,
    )


@dataclass
class Books:
    team: Team
    policy: CascadePolicy
    local: ModelEndpoint
    paid: ModelEndpoint
    users: dict[str, Any]
    other_team: Team
    other_policy: CascadePolicy


def make_books() -> Books:
    """The "Hand" team with an agent, a manager and an admin, its policy, a local and a paid
    endpoint, and another team with its manager and policy (the case study's rates); no drafts."""
    case_study_settings()
    team = TeamFactory.create(name="Hand")
    other = TeamFactory.create(name="Other")
    users = {
        role: AgentProfileFactory.create(team=team, role=role, user__username=f"hand-{role}").user
        for role in ("agent", "manager", "admin")
    }
    users["other-manager"] = AgentProfileFactory.create(
        team=other, role=AgentProfile.Role.MANAGER, user__username="other-manager"
    ).user
    users["superuser"] = UserFactory.create(username="root", is_superuser=True, is_staff=True)
    return Books(
        team=team,
        policy=PolicyFactory.create(team=team, name="Hand default"),
        local=EndpointFactory.create(name="local-small"),
        paid=EndpointFactory.create(name="paid-large"),
        users=users,
        other_team=other,
        other_policy=PolicyFactory.create(team=other, name="Other default"),
    )


def seed_history(books: Books, *, start: date, end: date) -> None:
    """A few months of a plausible support team: 4–11 drafts a day (fewer at weekends),
    mostly from the cheap local model, some escalated to the paid one, a few cache hits,
    some ignored, a failed one now and then, and a held-out sample for the baseline."""
    rng = random.Random(20261001)
    agents = [books.users["agent"], books.users["admin"]]
    day = start
    while day < end:
        for _ in range(rng.randint(2, 5) if day.weekday() >= 5 else rng.randint(5, 11)):
            agent = rng.choice(agents)
            roll = rng.random()
            if roll < 0.07:
                drafted(
                    books.policy,
                    kind="held_out",
                    handle=str(rng.randint(90, 170)),
                    day=day,
                    agent=agent,
                )
                continue
            if roll < 0.11:
                failed = drafted(books.policy, kind=None, cost="0.0006", day=day)
                attempt(failed, tier=1, cost="0.0006", endpoint=books.local, ok=False)
                continue
            if roll < 0.20:
                hit = drafted(
                    books.policy, kind="use", handle=str(rng.randint(12, 35)), day=day, agent=agent
                )
                attempt(hit, tier=0, cost="0")
                continue
            paid = roll > 0.80
            kind = rng.choices(["use", "edit", "ignore"], weights=[5, 3, 2] if paid else [4, 4, 2])[
                0
            ]
            handle = {"use": (15, 45), "edit": (45, 110), "ignore": (120, 200)}[kind]
            cost = Decimal("0.0042") if paid else Decimal("0.0004")
            draft = drafted(
                books.policy,
                kind=kind,
                handle=str(rng.randint(*handle)),
                cost=str(cost + (Decimal("0.0004") if paid else 0)),
                counterfactual="0.0046",
                endpoint=books.paid if paid else books.local,
                day=day,
                agent=agent,
            )
            attempt(draft, tier=1, cost="0.0004", endpoint=books.local)
            if paid:
                attempt(draft, tier=2, cost="0.0042", endpoint=books.paid)
        day += timedelta(days=1)
