"""Drafting write flows.

The support domain calls two functions: `draft_request` for each inbound message and
`action_record` when an agent replies (plus `draft_mark_shown` when the console shows a
draft). Everything else here runs in the Celery worker.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import connection, transaction
from django.db.models import Exists, F, Field, Model, OuterRef, Q, QuerySet
from django.utils import timezone
from kombu import Producer
from kombu.exceptions import LimitExceeded
from kombu.exceptions import OperationalError as KombuOperationalError

from csbot.models import Message, Team
from csbot.observability.context import log_bind
from drafting import adapters, experiments, selectors
from drafting.decisions import decision_columns, draft_decide, withholding_for
from drafting.engine import breaker, cascade, composer, pii, pricing, spend
from drafting.engine.cache import (
    CacheHit,
    cache_lookup,
    cache_store,
    customer_reference,
    is_first_turn,
)
from drafting.engine.cascade import CascadeResult, DraftStream, TierAttempt, run_cascade
from drafting.engine.edits import edit_distance, within_edit
from drafting.engine.embeddings import EmbeddingError
from drafting.engine.examples import example_store, examples_similar
from drafting.engine.grounding import (
    GroundingContext,
    StoredPassage,
    looks_like_question,
    passage_line,
    passage_lines,
    relevant,
)
from drafting.engine.macros import MacroMatch, customer_name, fill, macro_match
from drafting.engine.pii import scrub_details
from drafting.engine.prompting import Example, thread_messages
from drafting.engine.providers import CompletionRequest, ProviderError, provider_for
from drafting.engine.retrieval import Passage, retrieve
from drafting.engine.routing import RoutedPast
from drafting.engine.scoring import Scorer, ScoringContext
from drafting.engine.vectors import QueryVector, reembed, vector_fields
from drafting.learning.intent_rules import intent_route
from drafting.learning.knowledge import knowledge_detector, passage_reranker
from drafting.learning.routing import RouteSignals, policy_router
from drafting.learning.scorer import policy_scorer
from drafting.models import (
    AgentAction,
    CascadePolicy,
    CascadeTier,
    Draft,
    DraftAttempt,
    DraftPassage,
    Intent,
    IntentExample,
    KnowledgeArticle,
    KnowledgeChunk,
    Macro,
    MacroExample,
    MessageIntent,
    ModelEndpoint,
)
from drafting.signals import attempts_added
from drafting.streaming import DraftStreamWriter

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=Model)

PENDING = (Draft.Status.QUEUED, Draft.Status.GENERATING)


class ActionRejected(ValueError):
    """An agent action that cannot be recorded as asked; `field` names the culprit."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _enqueue_explore(draft_id: int) -> None:
    from drafting.tasks import draft_explore_task

    try:
        draft_explore_task.delay(draft_id)
    except (KombuOperationalError, OSError):
        # Only comparison data is lost (the draft itself is ready); nothing re-rings this bell.
        logger.exception("draft %s: could not reach the broker; not explored", draft_id)


# Every ingested message rings this bell. Unless given a producer, Celery takes one from its
# pool and hands it back for each message; each process (each thread: a producer's channel is
# not thread-safe) keeps one across messages instead. One that failed to publish goes back to
# the pool, so the next message starts from a fresh one.
_held = threading.local()


def _held_producer() -> Producer:
    from drafting.tasks import draft_generate_task

    held: tuple[int, Producer] | None = getattr(_held, "producer", None)
    if held is None or held[0] != os.getpid():  # one inherited through a fork is not ours
        app = draft_generate_task.app
        producer = app.producer_pool.acquire(
            block=True, timeout=app.conf.broker_pool_acquire_timeout
        )
        held = _held.producer = (os.getpid(), producer)
    return held[1]


def _held_producer_drop() -> None:
    held: tuple[int, Producer] | None = getattr(_held, "producer", None)
    _held.producer = None
    if held is not None and held[0] == os.getpid():
        held[1].release()


def _enqueue(draft_id: int, *, countdown: float = 0) -> None:
    # Imported late: the tasks module imports this one.
    from drafting.tasks import draft_generate_task

    try:
        draft_generate_task.apply_async(
            args=(draft_id,), countdown=countdown, producer=_held_producer()
        )
    except (KombuOperationalError, LimitExceeded, OSError):
        _held_producer_drop()
        # The row is committed and queued: the sweeper enqueues it once the broker is back.
        # Failing here would turn a stored message into an error response.
        logger.exception("draft %s: could not reach the broker; the sweeper will retry", draft_id)


# --- Requesting a draft (web process) ---------------------------------------------------------


def draft_request(*, message: Message, new_conversation: bool = False) -> Draft | None:
    """Create the draft for a new inbound message, inside the caller's transaction.

    Steps: find the team's active policy (none: no draft); supersede the conversation's
    unfinished or unanswered drafts (the customer wrote again, so they are stale); hold the
    conversation out when it already is, or draw it into the hold-out group on its first
    draft; otherwise queue the draft and ring the worker after commit, with the id only.
    `new_conversation` (the caller just created it) skips the look-ups that cannot find
    anything: ingest is the hot path.
    """
    conversation = message.conversation
    # A running experiment drafts the conversation with its (sticky) arm's policy.
    arm = experiments.conversation_arm(conversation=conversation)
    policy = (
        arm.policy if arm is not None else selectors.active_policy(team_id=conversation.team_id)
    )
    if policy is None:
        return None
    # Hold-out is per conversation, so an agent never sees drafts in a baseline conversation:
    # drawn on the conversation's first draft, inherited after.
    held_out = None
    if not new_conversation:
        superseded = Draft.objects.filter(
            message__conversation_id=conversation.pk,
            status__in=[*PENDING, Draft.Status.READY],
            action__isnull=True,
        ).update(status=Draft.Status.SUPERSEDED)
        if superseded:
            held_out = False  # it had a real draft, so it is not held out
        else:
            first_status = (
                Draft.objects.filter(message__conversation_id=conversation.pk)
                .order_by("created_at", "id")
                .values_list("status", flat=True)
                .first()
            )
            if first_status is not None:
                held_out = first_status == Draft.Status.HELD_OUT
    if held_out is None:
        held_out = random.random() < float(policy.holdout_share)  # noqa: S311 - a draw, not crypto
    if held_out:
        return Draft.objects.create(
            message=message, policy=policy, status=Draft.Status.HELD_OUT, experiment_arm=arm
        )
    draft = Draft.objects.create(
        message=message, policy=policy, enqueued_at=timezone.now(), experiment_arm=arm
    )
    transaction.on_commit(lambda: _enqueue(draft.pk))
    return draft


def draft_mark_shown(*, draft: Draft) -> None:
    """Record when an agent first had the draft (or, held out, the bare message) in front of
    them. Only the first call counts; the clock starts whatever the draft's state, so handle
    time includes any wait for a draft still generating."""
    if draft.first_shown_at is not None or draft.status == Draft.Status.SUPERSEDED:
        return
    now = timezone.now()
    if Draft.objects.filter(pk=draft.pk, first_shown_at__isnull=True).update(first_shown_at=now):
        draft.first_shown_at = now
    else:
        draft.refresh_from_db(fields=["first_shown_at"])


# --- Generating a draft (worker) --------------------------------------------------------------


# One statement claims the draft and reads what drafting it needs (the draft, its message
# and its policy, whether the message opens its conversation, whether the draft is to be
# grounded — the policy grounds and the team has a published article —, whether the team has
# an active macro, and the message's confident intent verdict): the claim is on the path of
# every draft, whose overhead is benchmarked (bench/cascade.py counts the statements), so a
# team without knowledge or macros pays nothing more for them. Only table names are
# formatted in; every value is a parameter.
_CLAIM_SQL = f"""
UPDATE {Draft._meta.db_table} AS d
   SET status = %(generating)s, claimed_at = %(now)s, tries = d.tries + 1
  FROM {CascadePolicy._meta.db_table} AS p, {Message._meta.db_table} AS m
 WHERE d.id = %(draft_id)s AND d.status = %(queued)s
   AND (d.retry_at IS NULL OR d.retry_at <= %(now)s)
   AND p.id = d.policy_id AND m.id = d.message_id
RETURNING d.id, d.tries, d.policy_id, d.message_id,
          p.team_id, p.system_prompt, p.explore_share, p.no_knowledge_rule,
          m.text, m.conversation_id,
          NOT EXISTS (SELECT 1 FROM {Message._meta.db_table} AS e
                       WHERE e.conversation_id = m.conversation_id AND e.id < m.id),
          p.grounding AND EXISTS (SELECT 1 FROM {KnowledgeArticle._meta.db_table} AS a
                                   WHERE a.team_id = p.team_id AND a.published),
          EXISTS (SELECT 1 FROM {Macro._meta.db_table} AS o
                   WHERE o.team_id = p.team_id AND o.active),
          (SELECT i.intent_id FROM {MessageIntent._meta.db_table} AS i
            WHERE i.message_id = m.id AND i.confidence >= %(intent_floor)s)
"""  # noqa: S608


@dataclass(frozen=True)
class Claimed:
    """What the claim learnt besides the rows: see _CLAIM_SQL."""

    first_turn: bool
    grounded: bool  # the policy grounds drafts and the team has a published article
    macros: bool  # the team has an active macro
    intent_id: int | None  # the message's intent, when a verdict is confident enough


def _loaded(model: type[M], **values: Any) -> M:
    """An instance as the ORM would load it with only these fields (the others load on
    access, as with `.only()`)."""
    fields = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, fields, [values[name] for name in fields])


def draft_claim(*, draft_id: int) -> Draft | None:
    """Take the draft for this worker with one conditional UPDATE, and return it with its
    message and policy (only the fields drafting reads; others load on access), `first_turn`
    and `claimed` (Claimed). None when another worker, or an earlier delivery of the same
    task, has it, or it is no longer wanted."""
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            {
                "draft_id": draft_id,
                "now": timezone.now(),
                "queued": Draft.Status.QUEUED,
                "generating": Draft.Status.GENERATING,
                "intent_floor": Decimal(str(settings.MACRO_MIN_INTENT_CONFIDENCE)),
            },
        )
        row = cursor.fetchone()
    if row is None:
        return None
    pk, tries, policy_id, message_id, team_id, prompt, explore, rule, text, conversation = row[:10]
    first, grounded, macros, intent_id = row[10:]
    draft = _loaded(Draft, id=pk, tries=tries, policy_id=policy_id, message_id=message_id)
    draft.policy = _loaded(
        CascadePolicy,
        id=policy_id,
        team_id=team_id,
        system_prompt=prompt,
        explore_share=explore,
        no_knowledge_rule=rule,
    )
    draft.message = _loaded(Message, id=message_id, text=text, conversation_id=conversation)
    draft.first_turn = first  # type: ignore[attr-defined]
    draft.claimed = Claimed(  # type: ignore[attr-defined]
        first_turn=first, grounded=grounded, macros=macros, intent_id=intent_id
    )
    return draft


# What draft_explore reads of the draft, its message and policy (model instances cost time).
_GENERATE_FIELDS = (
    "id",
    "tries",
    "policy__id",
    "policy__team_id",
    "policy__system_prompt",
    "policy__explore_share",
    "message__id",
    "message__text",
    "message__conversation_id",
)
_earlier_messages = Message.objects.filter(
    conversation_id=OuterRef("message__conversation_id"), pk__lt=OuterRef("message_id")
)


def _thread(draft: Draft, *, first_turn: bool) -> list[tuple[str, str]]:
    """(direction, text) of the thread up to the message being answered, newest N only, in
    arrival order (Message.Meta.ordering: the thread as the agent sees it). No query for a
    first turn."""
    inbound = draft.message
    if first_turn:
        return [(Message.Direction.INBOUND, inbound.text)]
    history = list(
        Message.objects.filter(conversation_id=inbound.conversation_id, pk__lte=inbound.pk)
        .order_by("-id")
        .values_list("direction", "text")[: settings.DRAFT_HISTORY_MESSAGES]
    )
    history.reverse()
    return history


def _prompt_messages(*, system_prompt: str, thread: list[tuple[str, str]]) -> list[dict[str, str]]:
    """The policy's system prompt, then the thread's (direction, text) turns up to the message
    being answered, the newest DRAFT_HISTORY_MESSAGES only: the one prompt of the worker, its
    exploration and the preview (`draft_preview`), before the cascade adds examples and
    passages."""
    return thread_messages(
        system_prompt=system_prompt, thread=thread, history=settings.DRAFT_HISTORY_MESSAGES
    )


def in_exploration_sample(
    *, share: Decimal, enabled_tiers: int, draw: Callable[[], float] = random.random
) -> bool:
    """Whether a draft is one whose remaining tiers are asked too once it is ready. Drawn per
    draft (not per conversation: agents never see exploratory answers); one tier leaves
    nothing to compare."""
    return enabled_tiers >= 2 and share > 0 and draw() < float(share)


@dataclass(frozen=True)
class Knowledge:
    """What grounding decided for one draft (see `_knowledge`): the passages numbered into
    the prompt (best first; also stored as DraftPassage rows), the state and note recorded on
    the draft, the detector's probability (None: the rule decided), and for the scorers."""

    passages: list[Passage]
    state: str
    note: str
    need: float | None
    needs: bool
    rule: str = ""  # the no-knowledge rule applied ("" when none was)

    def scoring(self) -> GroundingContext:
        return GroundingContext(
            needs_knowledge=self.needs,
            passages=tuple((p.text, p.score, p.vector_similarity) for p in self.passages),
        )

    def fields(self, query: QueryVector) -> dict[str, Any]:
        """The draft's knowledge columns; the question's embedding as retrieval used it."""
        embedded = query.get()
        return {
            "knowledge": self.state,
            "knowledge_need": _score(self.need),
            "knowledge_note": self.note[:300],
            "question_embedding": embedded[1] if embedded else None,
            "question_embedding_model": embedded[0] if embedded else "",
        }


_RULE_ACTIONS: dict[str, str] = {
    CascadePolicy.NoKnowledge.ESCALATE: "asked the top tier only, with what was found",
    CascadePolicy.NoKnowledge.HOLDING: "offered the holding reply",
    CascadePolicy.NoKnowledge.NO_DRAFT: "no draft",
}


def _knowledge(
    *, team_id: int, rule: str, query: QueryVector, thread: list[tuple[str, str]]
) -> Knowledge:
    """Retrieve and decide for the turn `query.text`, the thread's last (the team has published
    articles; the caller checked), under the policy's no-knowledge `rule`: the worker's and the
    preview's one grounding decision.

    Steps: retrieve the team's best passages for the turn, the thread's earlier turns given
    for focus and the team's learned re-ranker when it has one; judge whether the turn needs
    knowledge — the team's trained detector at its stored threshold when it has one, else the
    question rule (drafting.engine.grounding); relevant passages (those the re-ranker kept,
    else those at KNOWLEDGE_MIN_SIMILARITY) ground the draft whatever the need; none relevant
    and no need:
    not_needed, no passage in the prompt; none relevant and a need: none_found, under the
    policy's no-knowledge rule, with what was found."""
    earlier = tuple(text for _, text in thread[:-1])
    found = retrieve(
        team_id=team_id, query=query, thread=earlier, reranker=passage_reranker(team_id)
    )
    detector = knowledge_detector(team_id)
    need = detector.probability(query, earlier) if detector is not None else None
    if detector is not None and need is not None:
        needs = detector.needs(need)
        why = f"the detector gives {need:.2f} that it needs knowledge"
    else:
        needs = looks_like_question(query.text)
        why = "a question" if needs else "not a question (no trained detector)"
    floor = settings.KNOWLEDGE_MIN_SIMILARITY
    # A trained re-ranker's cut-off already decided which passages answer the turn (its
    # probability, learned from the team's labels, beats a cosine floor: on DSTC11 the floor
    # dropped selection F1 from 0.70 to 0.62); without one, the similarity floor decides.
    reranked = [p for p in found if p.reranked]
    kept = reranked or relevant(found, min_similarity=floor)
    if kept:
        why_kept = (
            f"{len(kept)} passages kept by the team's re-ranker"
            if reranked
            else f"{len(kept)} of {len(found)} passages found reach similarity {floor}"
        )
        return Knowledge(
            passages=kept,
            state=Draft.Knowledge.GROUNDED,
            note=f"{why_kept}.",
            need=need,
            needs=needs,
        )
    best = max((p.vector_similarity or 0.0 for p in found), default=None)
    nothing = (
        "nothing found"
        if not found
        else f"{len(found)} found, best similarity {best:.2f} under {floor}"
    )
    if not needs:
        return Knowledge(
            passages=[],
            state=Draft.Knowledge.NOT_NEEDED,
            note=f"Needs no knowledge: {why}; {nothing}.",
            need=need,
            needs=False,
        )
    action = _RULE_ACTIONS.get(rule, rule)
    return Knowledge(
        passages=list(found),
        state=Draft.Knowledge.NONE_FOUND,
        note=f"Needs knowledge ({why}), none relevant ({nothing}): {action}.",
        need=need,
        needs=True,
        rule=rule,
    )


def _passage_rows(
    draft_id: int, passages: list[Passage], cited: tuple[int, ...]
) -> list[DraftPassage]:
    return [
        DraftPassage(
            draft_id=draft_id,
            number=number,
            chunk_id=p.chunk_id,
            article_id=p.article_id,
            article_version=p.article_version,
            text=p.text,
            score=p.score,
            vector_similarity=p.vector_similarity,
            text_rank=p.text_rank,
            cited=number in cited,
        )
        for number, p in enumerate(passages, start=1)
    ]


def _cascade(
    *,
    tiers: list[CascadeTier],
    policy: CascadePolicy,
    thread: list[tuple[str, str]],
    query: QueryVector,
    knowledge: Knowledge | None,
    deadline: float,
    exclude_draft_id: int,
    stream: DraftStream | None = None,
    intent_id: int | None = None,
) -> CascadeResult:
    """The policy's cascade for the turn `query.text` (the thread's last): its prompt, the
    team's few-shot examples, the passages numbered best first and the policy's scorer — the
    one call of the worker and the preview (`draft_preview`). `knowledge` None: no grounding
    (the policy does not ground, the team has no article, or a preview without passages);
    `stream`: where the worker publishes the first tier's text as it is written; the policy's
    router, when one is in force, may skip tiers before they are asked (`intent_id`: the
    message's confident intent, one of its signals; drafting.learning.routing)."""
    return run_cascade(
        tiers=tiers,
        messages=_prompt_messages(system_prompt=policy.system_prompt, thread=thread),
        context=ScoringContext(
            customer_text=query.text,
            grounding=knowledge.scoring() if knowledge is not None else None,
        ),
        scorer=policy_scorer(policy_id=policy.pk),
        deadline=deadline,
        examples=examples_similar(
            team_id=policy.team_id, query=query, exclude_draft_id=exclude_draft_id
        ),
        passages=passage_lines(knowledge.passages if knowledge is not None else []),
        stream=stream,
        router=policy_router(
            policy_id=policy.pk,
            tiers=tiers,
            query=query,
            signals=_route_signals(knowledge, intent_id=intent_id),
        ),
    )


def _route_signals(knowledge: Knowledge | None, *, intent_id: int | None) -> RouteSignals:
    """What the router knows of the turn besides its embedding: the grounding decision, the
    detector's probability and the best passage's similarity (the passages the draft keeps,
    as stored with it and read back for training), and the confident intent."""
    if knowledge is None:
        return RouteSignals(intent_id=intent_id)
    similarities = [
        p.vector_similarity for p in knowledge.passages if p.vector_similarity is not None
    ]
    return RouteSignals(
        intent_id=intent_id,
        knowledge=knowledge.state,
        need=knowledge.need,
        best_similarity=max(similarities) if similarities else None,
    )


def _asked_through(result: CascadeResult) -> int:
    """The tier position up to which the cascade asked every tier; exploration asks those
    after it (a tier routed past was not asked: its answer is what the router learns from)."""
    routed = [a.tier for a in result.attempts if isinstance(a.error, RoutedPast)]
    return min(routed) - 1 if routed else max((a.tier for a in result.attempts), default=0)


def draft_generate(
    *,
    draft_id: int,
    explore_draw: Callable[[], float] = random.random,
    withhold_draw: Callable[[], float] = random.random,
    shadow_draw: Callable[[], float] = random.random,
) -> None:
    """Claim the draft, run the policy's cascade, store every attempt, finish the draft.

    Steps: claim (or leave quietly); a first turn may be answered by the cache (tier 0); a
    confident macro match makes the draft the macro (tier 0, drafting.engine.macros); when the
    policy grounds drafts and the team has published articles, retrieve the passages and decide
    what the turn needs (`_knowledge`): the no-knowledge rule may ask the top tier only, offer
    the holding reply (no model asked, no attempt) or give no draft (failed, the reason
    recorded); run the enabled tiers in order within the draft deadline
    (drafting.engine.cascade), the passages numbered in the prompt; store each attempt with
    its tokens, latency, cost, score or error, passages shown and citations, the passages
    (the chosen attempt's cited) and the draft's knowledge, in one statement; add their cost
    to the draft (spent even if the customer wrote again meanwhile); a chosen draft makes a
    generating draft ready. Without one, a transient failure puts the draft back in the queue
    with a backoff (the sweeper is the safety net) and anything else fails it. A draft in the
    exploration sample (`explore_draw` < the policy's explore_share) keeps each attempt's
    text, and once ready rings `draft_explore` for the tiers the cascade did not ask. The
    console sees the first tier's text while it is written (drafting.streaming), and a last
    "settled" event whatever the outcome: the row says what it is. A policy that withholds
    drafts worth less than nothing (drafting.decisions) decides when the draft is ready:
    withheld instead of ready (`withhold_draw` draws the share still shown); its drafts are
    not streamed. A policy with an adapter in shadow (drafting.adapters) has it answer too,
    once the draft is ready and shown, for the share `shadow_draw` draws (the attempts' text
    kept for the comparison).
    """
    stream = DraftStreamWriter(draft_id=draft_id)
    try:
        _draft_generate(
            draft_id=draft_id,
            explore_draw=explore_draw,
            withhold_draw=withhold_draw,
            shadow_draw=shadow_draw,
            stream=stream,
        )
    finally:
        stream.settled()


def _draft_generate(
    *,
    draft_id: int,
    explore_draw: Callable[[], float],
    stream: DraftStreamWriter,
    withhold_draw: Callable[[], float] = random.random,
    shadow_draw: Callable[[], float] = random.random,
) -> None:
    draft = draft_claim(draft_id=draft_id)
    if draft is None:
        logger.info("draft %s not claimable (taken, done or not due); skipping", draft_id)
        return
    deadline = time.monotonic() + settings.DRAFT_DEADLINE_SECONDS
    # The cache answers first turns only, and a first turn has no history to read.
    log_bind(message_id=draft.message.pk)  # the worker's log lines name the message too
    claimed: Claimed = draft.claimed  # type: ignore[attr-defined]
    first_turn = claimed.first_turn
    team_id = draft.policy.team_id
    # Embedded at most once, and only if the exact cache misses: every search shares it.
    query = QueryVector(draft.message.text)
    if first_turn:
        hit = cache_lookup(team_id=team_id, query=query)
        if hit is not None:
            _draft_from_cache(draft, hit)
            return
    if claimed.macros:
        match = macro_match(team_id=team_id, query=query, intent_id=claimed.intent_id)
        if match is not None:
            _draft_from_macro(draft, match, query=query)
            return
    tiers = selectors.enabled_tiers(policy_id=draft.policy_id)
    if not tiers:
        _draft_fail(draft_id, reason="The policy has no enabled tier.")
        return
    thread = _thread(draft, first_turn=first_turn)
    knowledge = (
        _knowledge(
            team_id=team_id, rule=str(draft.policy.no_knowledge_rule), query=query, thread=thread
        )
        if claimed.grounded
        else None
    )
    if knowledge is not None and knowledge.rule == CascadePolicy.NoKnowledge.HOLDING:
        _draft_holding(draft, knowledge, query=query)
        return
    if knowledge is not None and knowledge.rule == CascadePolicy.NoKnowledge.NO_DRAFT:
        _draft_without_knowledge(draft, knowledge, query=query)
        return
    if knowledge is not None and knowledge.rule == CascadePolicy.NoKnowledge.ESCALATE:
        tiers = tiers[-1:]
    exploring = in_exploration_sample(
        share=draft.policy.explore_share, enabled_tiers=len(tiers), draw=explore_draw
    )
    # The message's intent may have its own thresholds and routes (drafting.learning.
    # intent_rules); the full list still decides exploration and the counterfactual.
    route = intent_route(tiers=tiers, intent_id=claimed.intent_id)
    passages = knowledge.passages if knowledge is not None else []
    # A policy that may withhold the draft does not stream it: the agent would read a draft
    # before it is known to be worth showing (drafting.decisions).
    withholding = withholding_for(policy_id=draft.policy_id)
    result = _cascade(
        tiers=route.tiers,
        policy=draft.policy,
        thread=thread,
        query=query,
        knowledge=knowledge,
        deadline=deadline,
        exclude_draft_id=draft.pk,
        stream=stream if withholding is None else None,
        intent_id=claimed.intent_id,
    )
    result.attempts[:0] = route.routed
    chosen = result.chosen
    decision = (
        draft_decide(
            withholding=withholding,
            score=chosen.score,
            scorer_id=chosen.scorer_id,
            cost=result.total_cost,
            draw=withhold_draw,
        )
        if chosen is not None and chosen.completion is not None
        else None
    )
    shadow = adapters.shadow_sample(policy_id=draft.policy_id, draw=shadow_draw)
    made_ready = _finish(
        draft_id,
        attempts=_with_propensity(
            [
                attempt_row(draft_id, a, keep_text=exploring or shadow is not None)
                for a in result.attempts
            ],
            draft.policy.explore_share if exploring else None,
        ),
        spent=result.total_cost,
        ready=(
            {
                "text": chosen.completion.text,
                "final_endpoint_id": chosen.endpoint.pk,
                "score": _score(chosen.score),
                "counterfactual_cost": result.counterfactual_cost(tiers[-1]),
                **decision_columns(decision),
            }
            if chosen is not None and chosen.completion is not None
            else None
        ),
        passages=_passage_rows(draft_id, passages, chosen.citations if chosen else ()),
        knowledge=knowledge.fields(query) if knowledge is not None else None,
    )
    asked = _asked_through(result)
    shown = decision is None or decision.show  # a withheld draft is never explored
    if made_ready and shown and exploring and asked < tiers[-1].position:
        transaction.on_commit(lambda: _enqueue_explore(draft_id))
    if made_ready and shown and shadow is not None:
        transaction.on_commit(lambda: adapters.shadow_enqueue(draft_id, shadow.run_id))
    if chosen is None:
        for attempt in result.attempts:
            if attempt.error is not None:
                logger.warning(
                    "draft %s: %s failed (%s): %s",
                    draft_id,
                    attempt.endpoint.name,
                    attempt.error.kind,
                    attempt.error,
                )
        _draft_after_failure(draft_id, result, tries=draft.tries)


def _with_propensity(
    attempts: list[DraftAttempt], propensity: Decimal | None
) -> list[DraftAttempt]:
    """A draft drawn into the exploration sample: each attempt records the probability it was
    drawn with (the explore share then), which off-policy estimates divide by
    (drafting.learning.offpolicy)."""
    for attempt in attempts:
        attempt.propensity = propensity
    return attempts


@functools.cache
def _attempt_columns() -> tuple[list[Field[Any, Any]], str]:
    """DraftAttempt's columns but the id, and their quoted names: worked out once."""
    fields = [f for f in DraftAttempt._meta.concrete_fields if not f.primary_key]
    return fields, ", ".join(connection.ops.quote_name(f.column) for f in fields)


def _column(model: type[Model], name: str) -> Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return field


# DraftPassage's columns, in insert order; chunk and article are checked at insert (below).
_PASSAGE_COLUMNS = (
    "draft_id",
    "number",
    "chunk_id",
    "article_id",
    "article_version",
    "text",
    "score",
    "vector_similarity",
    "text_rank",
    "cited",
)


def _passages_cte(passages: list[DraftPassage], params: list[Any]) -> str:
    """The INSERT of a draft's passages, as a CTE of `_finish`. A chunk or article deleted since
    retrieval found it (an editor at work) is stored as null, as its foreign key would later
    set it, instead of failing the statement that stores the draft's attempts."""
    quote = connection.ops.quote_name
    fields = [_column(DraftPassage, name.removesuffix("_id")) for name in _PASSAGE_COLUMNS]
    casts = [f"%s::{f.db_type(connection)}" for f in fields]
    rows = ", ".join("(" + ", ".join(casts) + ")" for _ in passages)
    for passage in passages:
        params += [f.get_db_prep_save(f.pre_save(passage, True), connection) for f in fields]
    names = ", ".join(_PASSAGE_COLUMNS)
    chunks = quote(KnowledgeChunk._meta.db_table)
    articles = quote(KnowledgeArticle._meta.db_table)
    selected = ", ".join(
        {"chunk_id": "c.id", "article_id": "a.id"}.get(name, f"v.{name}")
        for name in _PASSAGE_COLUMNS
    )
    return (
        f"passages AS (INSERT INTO {quote(DraftPassage._meta.db_table)} ({names}) "  # noqa: S608
        f"SELECT {selected} FROM (VALUES {rows}) AS v ({names}) "
        f"LEFT JOIN {chunks} AS c ON c.id = v.chunk_id "
        f"LEFT JOIN {articles} AS a ON a.id = v.article_id RETURNING 1)"
    )


def _finish(
    draft_id: int,
    *,
    attempts: list[DraftAttempt],
    spent: Decimal,
    ready: dict[str, Any] | None,
    passages: list[DraftPassage] | None = None,
    knowledge: dict[str, Any] | None = None,
) -> bool:
    """Store the cascade's attempts and finish the draft in one statement (so in one round
    trip, and atomic without a transaction of its own): `ready` (text, endpoint, score,
    counterfactual; and, when withholding decided, status, value_of_showing and
    decision_probability: drafting.decisions.decision_columns) makes a generating draft ready
    (or withheld); the money is added to its total in any
    case, since it was spent even when the draft failed or was superseded meanwhile; the
    draft's `passages` (DraftPassage rows) are stored and its `knowledge` columns (Knowledge.
    fields) set in the same statement. Whether the draft was made ready."""
    quote = connection.ops.quote_name
    params: list[Any] = []
    parts: list[str] = []
    if attempts:
        fields, columns = _attempt_columns()
        rows = ", ".join("(" + ", ".join(["%s"] * len(fields)) + ")" for _ in attempts)
        for attempt in attempts:
            params += [f.get_db_prep_save(f.pre_save(attempt, True), connection) for f in fields]
        parts.append(
            # Formatted in are names from the model's metadata and placeholders; values are
            # parameters (here and below).
            f"attempts AS (INSERT INTO {quote(DraftAttempt._meta.db_table)} ({columns}) "  # noqa: S608
            f"VALUES {rows} RETURNING 1)"
        )
    if passages:
        parts.append(_passages_cte(passages, params))
    # The knowledge columns, set whether or not the draft is made ready (what grounding found
    # is so either way): "name = %s, " each, before total_cost in both updates.
    known, known_params = "", []
    for name, value in (knowledge or {}).items():
        field = _column(Draft, name)
        known += f"{quote(field.column)} = %s, "
        known_params.append(field.get_db_prep_save(value, connection))
    values = ready or {}
    table = quote(Draft._meta.db_table)
    parts.append(
        f"ready AS (UPDATE {table} SET status = %s, text = %s, final_endpoint_id = %s, "  # noqa: S608
        f"score = %s, counterfactual_cost = %s, ready_at = %s, failure_reason = '', {known}"
        # Withholding (drafting.decisions): expected ENCS = value of showing − the draft's
        # total cost, this run's included; null when nothing was decided.
        "decision_probability = %s, expected_encs = CAST(%s AS numeric) - (total_cost + %s), "
        "total_cost = total_cost + %s WHERE id = %s AND status = %s AND %s RETURNING id)"
    )
    params += [
        values.get("status", Draft.Status.READY),
        values.get("text", ""),
        values.get("final_endpoint_id"),
        values.get("score"),
        values.get("counterfactual_cost"),
        timezone.now(),
        *known_params,
        values.get("decision_probability"),
        values.get("value_of_showing"),
        spent,
        spent,
        draft_id,
        Draft.Status.GENERATING,
        ready is not None,
    ]
    parts.append(
        f"spent AS (UPDATE {table} SET {known}total_cost = total_cost + %s "  # noqa: S608
        "WHERE id = %s AND NOT EXISTS (SELECT 1 FROM ready) RETURNING id)"
    )
    params += [*known_params, spent, draft_id]
    sql = "WITH " + ", ".join(parts) + " SELECT EXISTS (SELECT 1 FROM ready)"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return bool(row and row[0])


def _draft_from_cache(draft: Draft, hit: CacheHit) -> None:
    """A cache hit is an attempt too: tier 0, no endpoint, no cost, its source recorded. The
    counterfactual (what the top tier alone would have cost) is the source draft's: the same
    question, answered by the same reply."""
    cached = hit.entry
    attempt = DraftAttempt(
        draft_id=draft.pk,
        tier=0,
        cache_hit=True,
        cache_match=hit.match,
        cache_similarity=_score(hit.similarity),
        cache_source_id=cached.source_draft_id,
        outcome=DraftAttempt.Outcome.OK,
    )
    ready = {"text": cached.reply, "counterfactual_cost": hit.source_counterfactual_cost}
    _finish(draft.pk, attempts=[attempt], spent=Decimal(0), ready=ready)


def _draft_from_macro(draft: Draft, match: MacroMatch, *, query: QueryVector) -> None:
    """A macro offer is an attempt too, like a cache hit: tier 0, no endpoint, no cost, the
    macro recorded (its similarity in cache_similarity when matched by similarity). The draft
    is the macro's body with {customer_name} filled and {agent_name} kept for the console
    (drafting.engine.macros). The question's embedding is stored with the draft: agents' use of
    the offer teaches the matcher from it (reply_remember), with no second embedding."""
    name = customer_name(customer_reference(draft))
    attempt = DraftAttempt(
        draft_id=draft.pk,
        tier=0,
        macro_id=match.macro.pk,
        cache_similarity=_score(match.similarity),
        outcome=DraftAttempt.Outcome.OK,
    )
    embedded = query.get()
    ready = {"text": fill(match.macro.body, name=name), "counterfactual_cost": None}
    _finish(
        draft.pk,
        attempts=[attempt],
        spent=Decimal(0),
        ready=ready,
        knowledge={
            "knowledge_note": f"Macro {match.macro.title!r} matched by {match.by}."[:300],
            "question_embedding": embedded[1] if embedded else None,
            "question_embedding_model": embedded[0] if embedded else "",
        },
    )


def _draft_holding(draft: Draft, knowledge: Knowledge, *, query: QueryVector) -> None:
    """The holding rule: the policy's holding reply, placeholders filled, is the draft. No
    model is asked, so there is no attempt row (an attempt is a call to a provider, a cache hit
    or a macro, and each is counted as one); the draft's knowledge note says why its text is
    the holding reply."""
    holding = CascadePolicy.objects.filter(pk=draft.policy_id).values_list(
        "holding_reply", flat=True
    )
    text = fill(holding.first() or "", name=customer_name(customer_reference(draft)))
    if not text.strip():
        _draft_without_knowledge(draft, knowledge, query=query, reason="the holding reply is empty")
        return
    _finish(
        draft.pk,
        attempts=[],
        spent=Decimal(0),
        ready={"text": text, "counterfactual_cost": None},
        passages=_passage_rows(draft.pk, knowledge.passages, ()),
        knowledge=knowledge.fields(query),
    )


def _draft_without_knowledge(
    draft: Draft, knowledge: Knowledge, *, query: QueryVector, reason: str = ""
) -> None:
    """The no-draft rule: the draft fails with the reason; the message stays in the queue for
    an agent, and what was found is stored with the draft."""
    _finish(
        draft.pk,
        attempts=[],
        spent=Decimal(0),
        ready=None,
        passages=_passage_rows(draft.pk, knowledge.passages, ()),
        knowledge=knowledge.fields(query),
    )
    why = f"No knowledge: {knowledge.note}" + (f" ({reason})" if reason else "")
    _draft_fail(draft.pk, reason=why[:200])


def _score(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(f"{value:.4f}")


def attempt_row(
    draft_id: int, attempt: TierAttempt, *, keep_text: bool = False, exploratory: bool = False
) -> DraftAttempt:
    completion, error = attempt.completion, attempt.error
    if completion is not None:
        return DraftAttempt(
            draft_id=draft_id,
            tier=attempt.tier,
            endpoint=attempt.endpoint,
            model_name=completion.model,
            tokens_in=completion.tokens_in,
            tokens_out=completion.tokens_out,
            latency_ms=completion.latency_ms,
            cost=attempt.cost,
            score=_score(attempt.score),
            scorer_id=attempt.scorer_id,
            explanation=attempt.explanation,
            routing=attempt.routing,
            prompt_tokens_saved=attempt.tokens_saved,
            fewshot_examples=attempt.examples,
            passages_shown=attempt.passages_shown,
            citations=list(attempt.citations),
            outcome=DraftAttempt.Outcome.OK,
            exploratory=exploratory,
            text=completion.text if keep_text else "",
            started_at=attempt.started_at,
        )
    assert error is not None
    return DraftAttempt(
        draft_id=draft_id,
        tier=attempt.tier,
        endpoint=attempt.endpoint,
        model_name=attempt.endpoint.model_name,
        latency_ms=error.latency_ms,
        outcome=DraftAttempt.Outcome.ERROR,
        error_kind=error.kind,
        error_message=str(error)[:500],
        routing=attempt.routing,
        prompt_tokens_saved=attempt.tokens_saved,
        fewshot_examples=attempt.examples,
        passages_shown=attempt.passages_shown,
        exploratory=exploratory,
        started_at=attempt.started_at,
    )


def ready_drafts_to_replay() -> QuerySet[Draft]:
    """Ready drafts with what asking a tier again for one needs (exploration, an adapter in
    shadow: drafting.adapters): its message, policy, knowledge columns and whether its
    message opened the conversation."""
    return (
        Draft.objects.select_related("message", "policy")
        .only(*_GENERATE_FIELDS, "status", "knowledge", "knowledge_need")
        .annotate(first_turn=~Exists(_earlier_messages))
        .filter(status=Draft.Status.READY)
    )


@dataclass(frozen=True)
class ReplayPrompt:
    """What a ready draft's cascade sent a tier, rebuilt to ask another one the same."""

    messages: list[dict[str, str]]
    context: ScoringContext
    passages: list[str]
    examples: list[Example]
    scorer: Scorer

    def ask(self, tier: CascadeTier, *, earlier: list[str]) -> CascadeResult:
        """Ask one tier this prompt through the cascade, with a fresh deadline; `earlier`: the
        answers already given to it (what an escalation would have shown the scorer)."""
        return run_cascade(
            tiers=[tier],
            messages=self.messages,
            context=self.context,
            scorer=self.scorer,
            deadline=time.monotonic() + settings.DRAFT_DEADLINE_SECONDS,
            examples=self.examples,
            earlier_drafts=earlier,
            passages=self.passages,
        )


def draft_replay_prompt(draft: Draft) -> ReplayPrompt:
    """A draft of `ready_drafts_to_replay`'s prompt as its cascade sent it: the policy's system
    prompt and the thread, the passages stored with the draft (numbered as the cascade
    numbered them), the scorer's context, the team's few-shot examples and the policy's
    scorer."""
    query = QueryVector(draft.message.text)
    messages = _prompt_messages(
        system_prompt=draft.policy.system_prompt,
        thread=_thread(draft, first_turn=draft.first_turn),  # type: ignore[attr-defined]
    )
    stored = list(
        DraftPassage.objects.filter(draft_id=draft.pk)
        .order_by("number")
        .values_list(
            "number", "text", "score", "vector_similarity", "article__title", "chunk__heading"
        )
    )
    passages = [
        passage_line(number, StoredPassage(title or "", heading or "", text, score, similarity))
        for number, text, score, similarity, title, heading in stored
    ]
    grounding = (
        GroundingContext(
            needs_knowledge=(
                draft.knowledge_need >= Decimal("0.5")
                if draft.knowledge_need is not None
                else looks_like_question(draft.message.text)
            ),
            passages=tuple(
                (text, score, similarity) for _, text, score, similarity, _, _ in stored
            ),
        )
        if draft.knowledge
        else None
    )
    return ReplayPrompt(
        messages=messages,
        context=ScoringContext(customer_text=draft.message.text, grounding=grounding),
        passages=passages,
        examples=examples_similar(
            team_id=draft.policy.team_id, query=query, exclude_draft_id=draft.pk
        ),
        scorer=policy_scorer(policy_id=draft.policy_id),
    )


def draft_explore(*, draft_id: int) -> int:
    """Ask a ready exploration draft's remaining tiers, so that every tier's answer to the
    same message is on record (the optimiser compares tiers from these rows). Returns how
    many tiers were asked.

    Steps: leave quietly unless the draft is ready; ask each enabled tier above the highest
    tier already attempted for it, and each tier routed past (cascade or exploration: a
    redelivered task resumes and a repeated one asks nothing), one at a time through the
    cascade with the draft's prompt, passages (as stored with the draft, numbered as the
    cascade numbered them), few-shot examples and scorer, the answered lower tiers' drafts as
    earlier drafts, and a fresh deadline each; spend caps and the circuit breaker apply as to
    any attempt. Each attempt (errors too) is stored as exploratory with its text, and its
    cost added to the draft's total (money spent). The draft's status, text, endpoint and score never change.
    """
    draft = ready_drafts_to_replay().filter(pk=draft_id).first()
    if draft is None:
        return 0
    done = list(
        DraftAttempt.objects.filter(
            draft_id=draft_id,
            cache_hit=False,
            macro__isnull=True,
            purpose=DraftAttempt.Purpose.DRAFT,  # composer rewrites are no tier's draft
        )
        .order_by("tier", "started_at", "id")
        .values_list("tier", "text", "error_kind")
    )
    if not done:
        return 0  # a cache hit, a macro or attempts gone: nothing to compare against
    # A tier routed past was not asked; the router learns from its answer (routing's labels).
    asked = {tier for tier, _, kind in done if kind != DraftAttempt.ErrorKind.ROUTED}
    routed = {tier for tier, _, kind in done if kind == DraftAttempt.ErrorKind.ROUTED} - asked
    highest = max(asked, default=0)
    earlier = [text for _, text, _ in done if text]
    tiers = list(
        CascadeTier.objects.select_related("endpoint")
        .filter(policy_id=draft.policy_id, endpoint__enabled=True)
        .filter(Q(position__gt=highest) | Q(position__in=routed))
        .order_by("position")
    )
    if not tiers:
        return 0
    replay = draft_replay_prompt(draft)
    # The probability this draft was drawn into the sample with, as its cascade recorded it
    # (the policy's share now for a draft from before propensities were recorded).
    drawn = (
        DraftAttempt.objects.filter(draft_id=draft_id, propensity__isnull=False)
        .values_list("propensity", flat=True)
        .first()
    ) or draft.policy.explore_share
    for tier in tiers:
        result = replay.ask(tier, earlier=earlier)
        with transaction.atomic():
            DraftAttempt.objects.bulk_create(
                _with_propensity(
                    [
                        attempt_row(draft_id, a, keep_text=True, exploratory=True)
                        for a in result.attempts
                    ],
                    drawn,
                )
            )
            Draft.objects.filter(pk=draft_id).update(total_cost=F("total_cost") + result.total_cost)
            # A bulk write sends no post_save: say so (accounting re-sums a rolled-up day).
            attempts_added.send(sender=DraftAttempt, draft_ids=[draft_id])
        earlier += [a.completion.text for a in result.attempts if a.completion is not None]
    return len(tiers)


def _draft_after_failure(draft_id: int, result: CascadeResult, *, tries: int) -> None:
    reason = result.failure_reason()
    if not result.retryable:
        _draft_fail(draft_id, reason=reason[:200])
        return
    if tries >= settings.DRAFT_MAX_TRIES:
        _draft_fail(draft_id, reason=f"{reason} (after {tries} tries)"[:200])
        return
    delay = result.retry_after
    if delay is None:
        delay = settings.DRAFT_RETRY_BASE_SECONDS * 2 ** (tries - 1)
    due = timezone.now() + timedelta(seconds=delay)
    requeued = Draft.objects.filter(pk=draft_id, status=Draft.Status.GENERATING).update(
        status=Draft.Status.QUEUED,
        retry_at=due,
        enqueued_at=due,
        failure_reason=f"{reason}; retrying"[:200],
    )
    if requeued:
        _enqueue(draft_id, countdown=delay)


def _draft_fail(draft_id: int, *, reason: str) -> None:
    Draft.objects.filter(pk=draft_id, status__in=PENDING).update(
        status=Draft.Status.FAILED, failure_reason=reason
    )


@dataclass(frozen=True)
class SweepResult:
    requeued: int
    reclaimed: int
    expired: int


def drafts_sweep(*, now: datetime | None = None) -> SweepResult:
    """Re-ring the bell for drafts whose task got lost.

    Steps: drafts older than DRAFT_MAX_AGE_SECONDS are worthless to an agent → failed;
    generating drafts whose worker went silent for DRAFT_STALE_SECONDS → back to queued
    (or failed when out of tries); queued drafts due and not picked up for that long →
    enqueued again. A re-enqueued task that finds its draft already claimed does nothing.
    """
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.DRAFT_STALE_SECONDS)
    expired = Draft.objects.filter(
        status__in=PENDING, created_at__lt=now - timedelta(seconds=settings.DRAFT_MAX_AGE_SECONDS)
    ).update(status=Draft.Status.FAILED, failure_reason="expired: no draft in time")
    Draft.objects.filter(
        status=Draft.Status.GENERATING,
        claimed_at__lt=stale_before,
        tries__gte=settings.DRAFT_MAX_TRIES,
    ).update(status=Draft.Status.FAILED, failure_reason="worker lost, out of tries")
    reclaimed = Draft.objects.filter(
        status=Draft.Status.GENERATING, claimed_at__lt=stale_before
    ).update(status=Draft.Status.QUEUED, retry_at=None, enqueued_at=None)
    due = list(
        Draft.objects.filter(status=Draft.Status.QUEUED)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale_before))
        .filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now))
        .values_list("pk", flat=True)[:1000]
    )
    for draft_id in due:
        # Mark first so two sweepers racing do not both enqueue (either would be harmless).
        if Draft.objects.filter(pk=draft_id, status=Draft.Status.QUEUED).update(enqueued_at=now):
            _enqueue(draft_id)
    if expired or reclaimed or due:
        logger.info("sweep: %s requeued, %s reclaimed, %s expired", len(due), reclaimed, expired)
    return SweepResult(requeued=len(due), reclaimed=reclaimed, expired=expired)


# --- Agent actions ----------------------------------------------------------------------------


def action_record(
    *,
    draft: Draft | None,
    inbound_message: Message,
    outbound_message: Message,
    agent: User,
    kind: str,
    acted_at: datetime,
    shown_at: datetime | None = None,
) -> AgentAction:
    """Record what the agent did with the draft for `inbound_message`, in the caller's
    transaction (the reply and its action are stored together or not at all).

    The kind is normalised from what happened, not only what was clicked: a draft never
    shown with text (failed, held out, or withheld: drafting.decisions) is `none`; an "edit"
    that changed nothing is a `use`. A second action on the same draft or inbound message
    violates a unique constraint (the caller treats that as a duplicate submission).
    """
    final_text = outbound_message.text
    # A withheld draft keeps its text but was never shown: the agent wrote unaided (`none`).
    has_text = draft is not None and bool(draft.text) and draft.status != Draft.Status.WITHHELD
    if kind not in AgentAction.Kind.values:
        raise ActionRejected("kind", f"Unknown action kind {kind!r}.")
    if not has_text:
        kind = AgentAction.Kind.NONE
    elif kind == AgentAction.Kind.NONE:
        raise ActionRejected("kind", "This draft has text: the action is use, edit or ignore.")
    # What the agent had in front of them: a macro draft's `{agent_name}` signed with their
    # name (the console shows it so; an integration sending a draft as is gets it so too).
    shown_text = (
        selectors.draft_text_for_agent(
            text=draft.text, agent_name=selectors.agent_display_name(agent)
        )
        if draft is not None and has_text
        else ""
    )
    distance = edit_distance(shown_text, final_text) if draft is not None and has_text else None
    if kind == AgentAction.Kind.USE and distance != 0:
        raise ActionRejected(
            "final_text", "A used draft is sent as is; send changed text as an edit."
        )
    if kind == AgentAction.Kind.EDIT and distance == 0:
        kind = AgentAction.Kind.USE

    shown_at = shown_at or (draft.first_shown_at if draft is not None else None)
    if shown_at is None:
        raise ActionRejected(
            "shown_at", "When the agent first saw the message is unknown; send shown_at."
        )
    _check_action_times(
        arrived_at=draft.created_at if draft is not None else inbound_message.created_at,
        shown_at=shown_at,
        acted_at=acted_at,
    )
    action = AgentAction.objects.create(
        draft=draft,
        inbound_message=inbound_message,
        outbound_message=outbound_message,
        agent=agent,
        kind=kind,
        final_text=final_text,
        edit_distance=distance,
        shown_at=shown_at,
        acted_at=acted_at,
        handle_seconds=Decimal(f"{(acted_at - shown_at).total_seconds():.3f}"),
    )
    if _worth_remembering(action) or _maybe_macro(draft):
        # Embedding belongs in the worker (a model load, tens of milliseconds): ring its bell.
        transaction.on_commit(lambda: _enqueue_remember(action.pk))
    return action


def _maybe_macro(draft: Draft | None) -> bool:
    """Whether the draft may be a macro offer, without a query: it has text and no endpoint
    (a cache hit, a macro or the holding reply). Whether it is one is the worker's to find."""
    return draft is not None and bool(draft.text) and draft.final_endpoint_id is None


def _check_action_times(*, arrived_at: datetime, shown_at: datetime, acted_at: datetime) -> None:
    """Times sent by an external console are claims, checked before anything is written: the
    agent cannot have seen the message before it reached csbot (the draft is created as it
    arrives), nor act in the future (beyond CSBOT_CLOCK_SKEW_SECONDS of clock drift), nor act
    before seeing it. Within these bounds a long handle time is stored as measured; accounting
    leaves those above ACTION_MAX_HANDLE_SECONDS out of ENCS (AgentAction.is_outlier)."""
    latest = timezone.now() + timedelta(seconds=settings.CSBOT_CLOCK_SKEW_SECONDS)
    if shown_at < arrived_at:
        raise ActionRejected(
            "shown_at",
            f"shown_at is before the message reached csbot ({arrived_at.isoformat()}): "
            "the agent cannot have seen it earlier.",
        )
    if shown_at > latest:
        raise ActionRejected("shown_at", "shown_at is in the future.")
    if acted_at > latest:
        raise ActionRejected("acted_at", "acted_at is in the future.")
    if acted_at < shown_at:
        raise ActionRejected("acted_at", "acted_at is before shown_at.")


def _approved(action: AgentAction) -> bool:
    """The agent sent the draft as is or lightly edited (within DRAFT_CACHE_MAX_EDIT_PERCENT)."""
    lightly_edited = action.kind == AgentAction.Kind.EDIT and within_edit(
        action.edit_distance, settings.DRAFT_CACHE_MAX_EDIT_PERCENT
    )
    return action.kind == AgentAction.Kind.USE or lightly_edited


def _worth_remembering(action: AgentAction) -> bool:
    return action.draft_id is not None and _approved(action)


def _enqueue_remember(action_id: int) -> None:
    from drafting.tasks import reply_remember_task

    try:
        reply_remember_task.delay(action_id)
    except (KombuOperationalError, OSError):
        # Only an optimisation is lost (one cache entry or example); the reply itself is stored.
        logger.exception("action %s: could not reach the broker; reply not remembered", action_id)


def reply_remember(*, action_id: int) -> None:
    """Learn from an agent's reply (worker): what the agent did with a macro offer teaches
    the macro matcher (`macro_example_store`); a reply to a first-turn message that the agent
    used or lightly edited goes into the completion cache; one used as is becomes a few-shot
    example. Idempotent: a redelivered task rewrites the same rows."""
    action = (
        AgentAction.objects.select_related("draft__policy", "inbound_message")
        .filter(pk=action_id)
        .first()
    )
    if action is None or action.draft is None:
        return
    if _maybe_macro(action.draft):
        macro_example_store(action=action)
    if not _worth_remembering(action):
        return
    draft, message = action.draft, action.inbound_message
    query = QueryVector(message.text)
    if is_first_turn(message):
        cache_store(draft=draft, final_text=action.final_text, query=query)
    if action.kind == AgentAction.Kind.USE:
        example_store(draft=draft, final_text=action.final_text, query=query)


def macro_example_store(*, action: AgentAction) -> MacroExample | None:
    """Remember the customer turn a macro was offered for, and whether the agent used it (sent
    as is or lightly edited: `_approved`), so the matcher offers it for similar turns, or not
    (drafting.engine.macros). The turn is stored scrubbed of the customer's details, as few-shot
    examples are; its vector is the one the draft stored when nothing was scrubbed, else the
    scrubbed text's. None when the draft was no macro offer or there is no embedder."""
    draft, message = action.draft, action.inbound_message
    if draft is None:
        return None
    macro_id = (
        DraftAttempt.objects.filter(draft_id=draft.pk, macro__isnull=False)
        .values_list("macro_id", flat=True)
        .first()
    )
    if macro_id is None:
        return None
    reference = customer_reference(draft)
    text = scrub_details(message.text, customer=[message.text], reference=reference)
    stored = (
        Draft.objects.filter(pk=draft.pk)
        .values_list("question_embedding", "question_embedding_model")
        .first()
    )
    if text == message.text and stored and stored[0] is not None and stored[1]:
        model, vector = stored[1], stored[0]
    elif embedded := QueryVector(text).get():
        model, vector = embedded
    else:
        return None
    example, _ = MacroExample.objects.update_or_create(
        source_draft=draft,
        defaults={
            "macro_id": macro_id,
            "customer_text": text,
            "used": _approved(action),
            **vector_fields(model, vector),
        },
    )
    return example


def vectors_reembed_stale(*, limit: int = 5_000) -> int:
    """The beat's share of re-embedding after an embedder change (drafting.engine.vectors):
    at most `limit` rows a run, so a large backlog is worked off over several runs without
    holding a worker for long. The number of rows done."""
    try:
        return reembed(limit=limit).done
    except EmbeddingError as exc:
        logger.warning("re-embedding skipped: %s", exc)
        return 0


# --- Intent labels (console) ----------------------------------------------------------------------------------


def message_intent_label(
    *, message: Message, intent: Intent, user: User | AnonymousUser | None
) -> IntentExample:
    """Label an inbound message with one of its team's intents: it becomes a training example
    and, at once, the message's verdict. A message has one label: relabelling replaces it."""
    if message.direction != Message.Direction.INBOUND:
        raise ValueError("Only customer messages have an intent.")
    if message.conversation.team_id != intent.team_id:
        raise ValueError("The intent belongs to another team.")
    labelled_by = user if user is not None and user.is_authenticated else None
    with transaction.atomic():
        IntentExample.objects.filter(message=message, intent__team_id=intent.team_id).exclude(
            intent=intent
        ).delete()
        example, created = IntentExample.objects.get_or_create(
            intent=intent,
            message=message,
            defaults={"text": message.text, "labelled_by": labelled_by},
        )
        if not created and labelled_by is not None and example.labelled_by_id != labelled_by.pk:
            example.labelled_by = labelled_by
            example.save(update_fields=["labelled_by"])
        MessageIntent.objects.update_or_create(
            message=message,
            defaults={
                "intent": intent,
                "confidence": MessageIntent.LABEL_CONFIDENCE,
                "classifier": None,
                "classified_at": timezone.now(),
            },
        )
    return example


# --- Admin checks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointCheck:
    ok: bool
    models: list[str]
    latency_ms: int
    reply: str
    error: str


def endpoint_check(*, endpoint: ModelEndpoint) -> EndpointCheck:
    """Test an endpoint the way drafting uses it: list its models, then one tiny completion.
    Nothing is recorded (it is not a draft); the result says what happened."""
    try:
        provider = provider_for(endpoint, timeout=15)
        models = provider.model_names()
        completion = provider.complete(
            CompletionRequest(messages=[{"role": "user", "content": "Say OK."}], max_tokens=8)
        )
    except ProviderError as exc:
        return EndpointCheck(
            ok=False, models=[], latency_ms=exc.latency_ms, reply="", error=f"{exc.kind}: {exc}"
        )
    return EndpointCheck(
        ok=True, models=models, latency_ms=completion.latency_ms, reply=completion.text, error=""
    )


# --- Draft previews (admin, evaluation) -----------------------------------------------------------

# A preview's thread names its speakers as people do; the worker's thread has directions.
PREVIEW_ROLES: dict[str, str] = {
    "customer": Message.Direction.INBOUND,
    "agent": Message.Direction.OUTBOUND,
}


@dataclass(frozen=True)
class PreviewAttempt:
    """One tier asked for a preview: its draft (or error), its score and what it spent."""

    tier: int
    endpoint: str
    model: str
    text: str
    score: float | None
    tokens_in: int
    tokens_out: int
    cost: Decimal
    latency_ms: int
    passages_shown: int
    citations: tuple[int, ...]
    error: str  # "kind: message"; "" when the tier answered

    @classmethod
    def of(cls, attempt: TierAttempt) -> PreviewAttempt:
        completion, error = attempt.completion, attempt.error
        return cls(
            tier=attempt.tier,
            endpoint=attempt.endpoint.name,
            model=completion.model if completion is not None else attempt.endpoint.model_name,
            text=completion.text if completion is not None else "",
            score=attempt.score,
            tokens_in=completion.tokens_in if completion is not None else 0,
            tokens_out=completion.tokens_out if completion is not None else 0,
            cost=attempt.cost,
            latency_ms=(
                completion.latency_ms
                if completion is not None
                else (error.latency_ms if error is not None else 0)
            ),
            passages_shown=attempt.passages_shown,
            citations=attempt.citations,
            error=f"{error.kind}: {error}" if error is not None else "",
        )


@dataclass(frozen=True)
class DraftPreview:
    """What the policy would draft for a thread's last customer turn, and what asking cost.

    `passages` are numbered as in the prompt (1 = first); `citations` are the chosen attempt's
    numbers into them. `grounded` says whether passages were looked for (the caller asked for
    them, the policy grounds drafts and the team has a published article); `knowledge` and
    `knowledge_note` are the grounding decision as a draft would record it. `error` says why
    there is no draft ("" when there is one)."""

    text: str
    passages: list[Passage]
    citations: tuple[int, ...]
    knowledge: str
    knowledge_note: str
    attempts: list[PreviewAttempt]
    grounded: bool
    policy_id: int | None = None
    error: str = ""

    @property
    def total_cost(self) -> Decimal:
        return sum((attempt.cost for attempt in self.attempts), Decimal(0))

    @property
    def cited_passages(self) -> list[tuple[int, Passage]]:
        return [(n, self.passages[n - 1]) for n in self.citations if n <= len(self.passages)]


def _preview_turns(thread: list[dict[str, str]]) -> list[tuple[str, str]]:
    """The thread as the worker reads one, (direction, text), up to its last customer turn
    (later agent turns are not part of what is answered). ValueError for an unknown role, a
    blank turn or no customer turn."""
    turns: list[tuple[str, str]] = []
    for number, turn in enumerate(thread, start=1):
        role, text = turn.get("role", ""), turn.get("text", "")
        if role not in PREVIEW_ROLES:
            raise ValueError(f"Turn {number}: the role is 'customer' or 'agent', not {role!r}.")
        if not text.strip():
            raise ValueError(f"Turn {number} is blank.")
        turns.append((PREVIEW_ROLES[role], text.strip()))
    inbound = [
        i for i, (direction, _) in enumerate(turns) if direction == Message.Direction.INBOUND
    ]
    if not inbound:
        raise ValueError("The thread has no customer turn to answer.")
    return turns[: inbound[-1] + 1]


def preview_messages(*, system_prompt: str, thread: list[dict[str, str]]) -> list[dict[str, str]]:
    """The prompt the worker would send for a preview thread (`draft_preview`'s turns, up to
    the last customer turn), before the cascade adds examples and passages: for benches and
    evaluations that build the drafting path's prompts from outside data. ValueError as for
    `draft_preview`'s thread."""
    return _prompt_messages(system_prompt=system_prompt, thread=_preview_turns(thread))


def draft_preview(
    *,
    team_id: int,
    thread: list[dict[str, str]],
    grounded: bool = True,
    policy_id: int | None = None,
    tier: int | None = None,
) -> DraftPreview:
    """The draft the team's active policy (or `policy_id`, one of the team's) would write for
    the last customer turn of `thread` (`[{"role": "customer" | "agent", "text": ...}]`),
    through the worker's own steps, storing nothing (no draft, message or attempt).

    Steps: the policy and its enabled tiers (only position `tier` when given); none: the
    preview says so. With `grounded` (and the policy grounding, the team having a published
    article) retrieve and decide as the worker does (`_knowledge`): the no-knowledge rule
    gives the holding reply (no model asked), no draft (the reason), or the top tier only.
    Then the worker's cascade (`_cascade`: its prompt, few-shot examples, passages, scorer,
    prompt adaptation, redaction for paid tiers, citations parsed and the text cleaned).
    `grounded=False` runs the same without passages, as for a team without knowledge.

    Not the worker's: the completion cache and macros (tier 0) are not consulted, nothing is
    explored. Spend caps and the circuit breakers apply as to any attempt, and each preview's
    calls tell the breakers how the endpoints did; its cost is not stored, so it does not count
    towards the caps. ValueError for a malformed thread (see `_preview_turns`).
    """
    turns = _preview_turns(thread)
    policies = CascadePolicy.objects.filter(team_id=team_id)
    policy = (
        policies.filter(pk=policy_id).first()
        if policy_id is not None
        else selectors.active_policy(team_id=team_id)
    )

    def asking_none(error: str, knowledge: Knowledge | None = None, text: str = "") -> DraftPreview:
        """A preview that asks no model: `text` (the holding reply) or none, and why."""
        return DraftPreview(
            text=text,
            passages=knowledge.passages if knowledge is not None else [],
            citations=(),
            knowledge=knowledge.state if knowledge is not None else Draft.Knowledge.UNCHECKED,
            knowledge_note=knowledge.note if knowledge is not None else "",
            attempts=[],
            grounded=knowledge is not None,
            policy_id=policy.pk if policy is not None else None,
            error=error,
        )

    if policy is None:
        return asking_none(
            "No such policy for this team." if policy_id is not None else "No active policy."
        )
    tiers = selectors.enabled_tiers(policy_id=policy.pk)
    if tier is not None:
        tiers = [t for t in tiers if t.position == tier]
    if not tiers:
        return asking_none(
            f"The policy has no enabled tier {tier}."
            if tier is not None
            else "The policy has no enabled tier."
        )
    query = QueryVector(turns[-1][1])
    knowledge = None
    if (
        grounded
        and policy.grounding
        and KnowledgeArticle.objects.filter(team_id=team_id, published=True).exists()
    ):
        knowledge = _knowledge(
            team_id=team_id, rule=str(policy.no_knowledge_rule), query=query, thread=turns
        )
    if knowledge is not None and knowledge.rule == CascadePolicy.NoKnowledge.HOLDING:
        text = fill(policy.holding_reply, name="")
        if not text.strip():
            return asking_none(
                f"No knowledge: {knowledge.note} (the holding reply is empty)", knowledge
            )
        return asking_none("", knowledge, text=text)
    if knowledge is not None and knowledge.rule == CascadePolicy.NoKnowledge.NO_DRAFT:
        return asking_none(f"No knowledge: {knowledge.note}", knowledge)
    if knowledge is not None and knowledge.rule == CascadePolicy.NoKnowledge.ESCALATE:
        tiers = tiers[-1:]
    result = _cascade(
        tiers=tiers,
        policy=policy,
        thread=turns,
        query=query,
        knowledge=knowledge,
        deadline=time.monotonic() + settings.DRAFT_DEADLINE_SECONDS,
        exclude_draft_id=0,  # no draft of its own to leave out (ids start at 1)
    )
    chosen = result.chosen
    return DraftPreview(
        text=chosen.completion.text if chosen is not None and chosen.completion else "",
        passages=knowledge.passages if knowledge is not None else [],
        citations=chosen.citations if chosen is not None else (),
        knowledge=knowledge.state if knowledge is not None else Draft.Knowledge.UNCHECKED,
        knowledge_note=knowledge.note if knowledge is not None else "",
        attempts=[PreviewAttempt.of(a) for a in result.attempts],
        grounded=knowledge is not None,
        policy_id=policy.pk,
        error=result.failure_reason(),
    )


# --- Composer tools (console) -----------------------------------------------------------------


class ComposerRefused(ValueError):
    """A composer request that asks no model: `reason` is "invalid" (a bad tool or text; `field`
    names it), "no_draft" (the message has no draft row to record the spend on), "held_out"
    (the message is in the held-out sample: no model help) or "unavailable" (every tier of the
    policy is cooling down or capped)."""

    def __init__(self, reason: str, message: str, *, field: str = ""):
        super().__init__(message)
        self.reason = reason
        self.field = field


@dataclass(frozen=True)
class ComposerResult:
    """What a composer tool made of the agent's text: the new `text` ("" when `error` says why
    there is none), the last recorded attempt, the tier that answered it, and what all the
    tiers asked cost and took together."""

    text: str
    attempt_id: int
    cost: Decimal
    tier: int
    endpoint: str
    endpoint_kind: str
    latency_ms: int
    error: str = ""
    language: str = ""  # translate: the customer's language, when it was recognised
    tiers_asked: int = 1  # a tier that could not do it hands over to the next (cost: all)


def _composer_tiers(tiers: list[CascadeTier]) -> list[CascadeTier]:
    """The tiers that can take a rewrite now, cheapest first: the policy's tiers in order,
    those whose circuit is closed and whose spend cap allows, as the cascade decides. Skipped
    tiers are not recorded: no call was made."""
    guard = breaker.breaker()
    open_tiers = []
    for tier in tiers:
        endpoint = tier.endpoint
        if guard.is_open(endpoint.pk):
            continue
        if endpoint.has_spend_cap and spend.endpoint_spend(endpoint=endpoint).capped:
            continue
        open_tiers.append(tier)
    return open_tiers


def composer_rewrite(
    *, team: Team, message_id: int, tool: str, text: str, user: User | AnonymousUser
) -> ComposerResult:
    """Apply a composer `tool` (a DraftAttempt.Purpose but the draft's own) to the agent's
    reply `text` for the team's inbound message `message_id`, through the cheapest tier that
    can do it, and record every tier asked as an attempt of the message's draft.

    Steps: check the tool and text (ComposerRefused "invalid"); find the message's live draft
    (none, e.g. the team has no policy: "no_draft" — the attempt needs a draft to belong to,
    and none is made for it); the tiers that can answer now (`_composer_tiers`; none:
    "unavailable"); ask them cheapest first (`_composer_ask`) until one gives a usable rewrite:
    a provider failure, or an answer cut off at the token limit, empty or longer than a message
    may be, is recorded and the next tier is asked, as the cascade escalates a draft (a small
    local model often cannot do a rewrite a bigger one can). Each attempt's cost is added to
    the draft's total (model spend on this message: it counts in ENCS). When no tier gave a
    usable rewrite the last one's error is returned and the agent's text stays as it was.
    """
    tools = composer.TOOLS
    if tool not in tools:
        raise ComposerRefused("invalid", f"Unknown composer tool {tool!r}.", field="tool")
    limit = settings.CSBOT_MAX_MESSAGE_CHARS
    if not text.strip():
        raise ComposerRefused("invalid", "There is no text to rewrite.", field="text")
    if len(text) > limit:
        raise ComposerRefused(
            "invalid", f"The text is longer than {limit} characters.", field="text"
        )
    message = (
        Message.objects.filter(
            pk=message_id, conversation__team_id=team.pk, direction=Message.Direction.INBOUND
        )
        .only("id", "text")
        .first()
    )
    draft = (
        Draft.objects.live().filter(message_id=message.pk).only("id", "policy_id", "status").first()
        if message is not None
        else None
    )
    if message is None or draft is None:
        raise ComposerRefused(
            "no_draft",
            "This message has no draft record (drafts are off for this team), so the "
            "composer tools cannot record what they cost: write the reply yourself.",
        )
    if draft.status == Draft.Status.HELD_OUT:
        # The held-out sample measures how long a reply takes with no model help at all (the
        # ENCS baseline): a rewrite there would be model help, and bias it.
        raise ComposerRefused(
            "held_out",
            "This conversation is in the held-out sample, which measures replies written "
            "without any model help: the composer tools are off here so that it stays honest.",
        )
    tiers = _composer_tiers(selectors.enabled_tiers(policy_id=draft.policy_id))
    if not tiers:
        raise ComposerRefused(
            "unavailable",
            "No model can take a rewrite now (every tier is cooling down after failures or "
            "has reached its spend cap). Try again in a minute.",
        )
    language = composer.detect_language(message.text) if tool == "translate" else None
    asked: list[ComposerResult] = []
    for tier in tiers:
        result = _composer_ask(
            tier=tier,
            draft_id=draft.pk,
            tool=tool,
            text=text,
            customer_text=message.text,
            language=language,
        )
        asked.append(result)
        logger.info(
            "composer: %s by user %s on message %s via %s: %s, $%s",
            tool,
            user.pk,
            message.pk,
            result.endpoint,
            result.error or "ok",
            result.cost,
        )
        if not result.error:
            break
    # What the agent paid for, and waited for, in all: every tier asked.
    return replace(
        asked[-1],
        cost=sum((r.cost for r in asked), Decimal(0)),
        latency_ms=sum(r.latency_ms for r in asked),
        tiers_asked=len(asked),
    )


def _composer_ask(
    *,
    tier: CascadeTier,
    draft_id: int,
    tool: str,
    text: str,
    customer_text: str,
    language: str | None,
) -> ComposerResult:
    """One tier's rewrite, recorded: build the tool's prompt (drafting.engine.composer;
    translate targets `language`); for a paid tier mask personal data as drafts are (and put
    it back in the answer), the local tier gets the text as is; ask, telling the breaker how it
    went; price the answer at the endpoint's prices in force; store the attempt (purpose = the
    tool, so it is never taken for the draft's answer) and add its cost to the draft's total in
    one transaction, and tell accounting. `error` says why the answer is not usable."""
    limit = settings.CSBOT_MAX_MESSAGE_CHARS
    endpoint = tier.endpoint
    prompt = composer.composer_messages(
        tool=tool, text=text, customer_text=customer_text, language=language
    )
    placeholders: dict[str, str] = {}
    if endpoint.kind != ModelEndpoint.Kind.LOCAL:
        # Personal data never leaves for a third party's API (as with drafts).
        prompt, placeholders = pii.redact_messages(prompt)
    request = CompletionRequest(
        messages=prompt,
        max_tokens=composer.output_budget(text, floor=endpoint.max_output_tokens),
        temperature=0.2,
        logprobs=False,
    )
    guard = breaker.breaker()
    started_at = timezone.now()
    attempt = DraftAttempt(
        draft_id=draft_id,
        tier=tier.position,
        purpose=tool,
        endpoint=endpoint,
        model_name=endpoint.model_name,
        started_at=started_at,
    )
    new_text, error = "", ""
    try:
        completion = provider_for(endpoint).complete(request)
    except ProviderError as exc:
        guard.record_failure(endpoint.pk, exc.kind)
        attempt.outcome = DraftAttempt.Outcome.ERROR
        attempt.error_kind = exc.kind
        attempt.error_message = str(exc)[:500]
        attempt.latency_ms = exc.latency_ms
        error = f"{endpoint.name} could not rewrite the text ({exc.kind}): {exc}"
    else:
        guard.record_success(endpoint.pk)
        prices = pricing.PriceBook.load(endpoint_ids=[endpoint.pk])
        attempt.outcome = DraftAttempt.Outcome.OK
        attempt.model_name = completion.model
        attempt.tokens_in = completion.tokens_in
        attempt.tokens_out = completion.tokens_out
        attempt.latency_ms = completion.latency_ms
        attempt.cost = cascade.completion_cost(endpoint, completion, prices=prices, at=started_at)
        answer = composer.clean_rewrite(completion.text, original=text)
        # Cards and IBANs come back masked to their last four, whichever tier wrote it.
        new_text = pii.mask_payment(pii.restore(answer, placeholders))
        if completion.finish_reason == "length":
            error = "The rewrite was cut off at the model's length limit: your text is unchanged."
        elif not new_text:
            error = "The model answered with no text: your text is unchanged."
        elif len(new_text) > limit:
            error = f"The rewrite is longer than {limit} characters: your text is unchanged."
        if error:
            attempt.error_message = error[:500]  # the call went well; its answer was not used
            new_text = ""
    with transaction.atomic():
        attempt.save()
        Draft.objects.filter(pk=draft_id).update(total_cost=F("total_cost") + attempt.cost)
        # Accounting re-sums the draft's rolled-up day (its cost changed).
        attempts_added.send(sender=DraftAttempt, draft_ids=[draft_id])
    return ComposerResult(
        text=new_text,
        attempt_id=attempt.pk,
        cost=attempt.cost,
        tier=tier.position,
        endpoint=endpoint.name,
        endpoint_kind=endpoint.kind,
        latency_ms=attempt.latency_ms,
        error=error,
        language=composer.LANGUAGE_NAMES.get(language or "", ""),
    )
