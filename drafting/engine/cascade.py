"""The FrugalGPT cascade: ask tiers in order, stop at the first good-enough draft.

One entry point, `run_cascade`, which returns every attempt it made (the caller stores them).
For each tier in policy order, within the draft's deadline:

1. fit the thread, the few-shot examples and the knowledge passages into the endpoint's
   prompt-token budget (drafting.engine.prompting says what gives way first);
2. skip the tier when its spend cap is reached (recorded as `spend_capped`, alert logged) or
   while its circuit breaker cools down (recorded as a `circuit_open` attempt); with a
   router (drafting.engine.routing), skip it when a later tier is expected to be worth more
   (recorded as a `routed` attempt with the estimates; never the last tier that could answer);
   otherwise ask its endpoint (its timeout shortened to the time left; emails, phone numbers,
   card numbers and IBANs replaced by placeholders for any non-local endpoint and put back,
   where safe, in its draft; cards and IBANs in any tier's draft masked to their last four;
   the passages are the team's own text and go unredacted) and tell the breaker how it went;
3. a provider error is recorded and the next tier is asked: a rate limit, timeout or outage
   there says nothing about the next tier, a context too long may fit a larger one, and an
   auth/bad-request error is this endpoint's problem;
4. a grounded draft's citation markers are parsed and removed (drafting.engine.grounding):
   the attempt keeps the numbers of the passages it was shown and cites, the draft its clean
   text;
5. a draft is scored by the scorer g(context, draft) (its tier and the earlier tiers' drafts
   are part of the context); score ≥ the tier's threshold stops the cascade, otherwise the
   next tier is asked. An escalated draft judged by a learned scorer gets its explanation
   (word weights), computed only then: the hot path stays one embedding batch.

With a `stream` (the worker's, drafting.streaming), the first tier asked is streamed: its
text so far, as the agent would see it (markers cut, placeholders put back, payment data
masked, a number or bracket still being written held back), goes to `stream.text`; when that
draft is not the one kept (escalated, or its tier failed) `stream.improving` says a stronger
tier is being asked. The stream never changes what is stored.

Each answer is costed at its endpoint's prices in force when the attempt started, from a
PriceBook loaded once for all the tiers (drafting.engine.pricing), not one query per attempt.

When no tier reaches its threshold, the draft of the last tier that answered is used (the
strongest model asked, as in FrugalGPT), with its score. When no tier answered, there is no
draft: the result says whether the failure is worth retrying later.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from django.utils import timezone

from drafting.engine.breaker import BaseCircuitBreaker, breaker
from drafting.engine.grounding import KNOWLEDGE_HEADER, cited
from drafting.engine.pii import mask_payment, redact_messages, restore
from drafting.engine.pricing import PriceBook, attempt_cost
from drafting.engine.prompting import Example, trim_to_budget, with_knowledge
from drafting.engine.providers import (
    CircuitOpen,
    Completion,
    CompletionRequest,
    ProviderError,
    ProviderTimeout,
    SpendCapped,
    provider_for,
)
from drafting.engine.routing import RoutedPast, Router, route_with
from drafting.engine.scoring import Scorer, ScoringContext
from drafting.engine.spend import endpoint_spend
from drafting.models import CascadeTier, ModelEndpoint

logger = logging.getLogger(__name__)


def completion_cost(
    endpoint: ModelEndpoint, completion: Completion, *, prices: PriceBook, at: datetime
) -> Decimal:
    """What `endpoint` charges (or would charge) for this completion's tokens and timing, at
    its prices in force at `at`."""
    return attempt_cost(
        endpoint=endpoint,
        price=prices.price_at(endpoint.pk, at),
        tokens_in=completion.tokens_in,
        tokens_out=completion.tokens_out,
        latency_ms=completion.latency_ms,
        server_ms=completion.server_ms,
        concurrency=completion.concurrency,
    )


class DraftStream(Protocol):
    """Where the first tier's draft goes while it is written (drafting.streaming's writer)."""

    def text(self, so_far: str) -> None: ...

    def improving(self) -> None: ...


# The end of a text still being written that may change once the next tokens come: an open
# bracket (a citation marker or placeholder) or a run of digits (a card number or IBAN is
# only recognised, and masked, once it is whole).
_UNSETTLED_TAIL = re.compile(r"(?:\[[^\]\n]{0,40}|[\d(+][\d\s()./+\-]*)$")


def visible_so_far(raw: str, *, placeholders: dict[str, str], shown: int) -> str:
    """What the agent may see of a draft still being written: as the finished draft will be
    shown (citation markers cut, placeholders put back, payment data masked), less its
    unsettled tail."""
    settled = _UNSETTLED_TAIL.sub("", raw)
    text = (cited(settled, shown=shown).text if shown else settled).strip()
    return mask_payment(restore(text, placeholders))


def _on_text(
    stream: DraftStream, *, placeholders: dict[str, str], shown: int
) -> Callable[[str], None]:
    return lambda raw: stream.text(visible_so_far(raw, placeholders=placeholders, shown=shown))


@dataclass(frozen=True)
class TierAttempt:
    tier: int
    endpoint: ModelEndpoint
    started_at: datetime
    completion: Completion | None = None
    error: ProviderError | None = None
    score: float | None = None
    cost: Decimal = Decimal(0)
    tokens_saved: int = 0
    examples: int = 0
    passages_shown: int = 0
    citations: tuple[int, ...] = ()
    scorer_id: int | None = None  # the learned scorer that judged; None: the default scorer
    explanation: list[dict[str, object]] | None = None  # why an escalated draft scored low
    routing: dict[str, object] | None = None  # the router's estimates when it decided (routing)

    @property
    def ok(self) -> bool:
        return self.completion is not None


@dataclass
class CascadeResult:
    prices: PriceBook = field(default_factory=PriceBook)
    attempts: list[TierAttempt] = field(default_factory=list)
    chosen: TierAttempt | None = None
    deadline_hit: bool = False

    @property
    def total_cost(self) -> Decimal:
        return sum((attempt.cost for attempt in self.attempts), Decimal(0))

    @property
    def retryable(self) -> bool:
        """No draft, but a later try may get one (every failure was transient)."""
        errors = [a.error for a in self.attempts if a.error is not None]
        return self.chosen is None and (self.deadline_hit or any(e.transient for e in errors))

    @property
    def retry_after(self) -> float | None:
        hints = [a.error.retry_after for a in self.attempts if a.error and a.error.retry_after]
        return max(hints) if hints else None

    def counterfactual_cost(self, top: CascadeTier) -> Decimal | None:
        """What the top tier alone would have charged: its own attempt when it was asked,
        else its prices in force when the chosen attempt started, applied to the chosen
        draft's tokens (and timing, if it is local)."""
        for attempt in self.attempts:
            if attempt.ok and attempt.endpoint.pk == top.endpoint_id:
                return attempt.cost
        if self.chosen is None or self.chosen.completion is None:
            return None
        return completion_cost(
            top.endpoint, self.chosen.completion, prices=self.prices, at=self.chosen.started_at
        )

    def failure_reason(self) -> str:
        if self.chosen is not None:
            return ""
        if not self.attempts:
            return "deadline: no tier could be asked in time"
        last = self.attempts[-1].error
        reason = f"{last.kind}: {last}" if last is not None else "no draft"
        return ("deadline; " if self.deadline_hit else "") + reason


def run_cascade(
    *,
    tiers: list[CascadeTier],
    messages: list[dict[str, str]],
    context: ScoringContext,
    scorer: Scorer,
    deadline: float,
    guard: BaseCircuitBreaker | None = None,
    examples: Sequence[Example] = (),
    prices: PriceBook | None = None,
    earlier_drafts: Sequence[str] = (),
    passages: Sequence[str] = (),
    stream: DraftStream | None = None,
    router: Router | None = None,
) -> CascadeResult:
    """Ask `tiers` in order until one's draft scores at least its threshold; `deadline` is a
    time.monotonic() value after which no tier is asked; `guard` defaults to the shared
    per-endpoint circuit breaker; `examples` are few-shot examples, best first, fitted into
    each tier's prompt budget; `prices` defaults to the tiers' price rows, loaded here;
    `earlier_drafts` are lower tiers' drafts already answered elsewhere (exploration asks one
    tier at a time and its scorer should see what an escalation would have shown it);
    `passages` are the knowledge passages as the model sees them (`[n] Title — heading: text`),
    best first, fitted into each tier's budget like the examples; `stream` gets the first
    asked tier's text as it is written (see the module docstring); `router` (None: the plain
    cascade) may skip a tier before it is asked (drafting.engine.routing, `_route`)."""
    guard = guard or breaker()
    if prices is None:
        prices = PriceBook.load(endpoint_ids=[tier.endpoint_id for tier in tiers])
    result = CascadeResult(prices=prices)
    answered: list[str] = list(earlier_drafts)
    streamed = False  # only the first tier asked is streamed
    for tier in tiers:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            result.deadline_hit = True
            break
        endpoint = tier.endpoint
        started_at = timezone.now()
        spend = endpoint_spend(endpoint=endpoint) if endpoint.has_spend_cap else None
        if spend is not None and spend.capped:
            logger.warning(
                "spend cap: %s reached its %s cap (today $%s, month $%s); tier skipped",
                endpoint.name,
                spend.capped,
                spend.today,
                spend.month,
            )
            capped = SpendCapped(f"{endpoint.name} reached its {spend.capped} spend cap.")
            result.attempts.append(
                TierAttempt(
                    tier=tier.position, endpoint=endpoint, started_at=started_at, error=capped
                )
            )
            continue
        if guard.is_open(endpoint.pk):
            skipped = CircuitOpen(f"{endpoint.name} is cooling down after repeated failures.")
            result.attempts.append(
                TierAttempt(
                    tier=tier.position, endpoint=endpoint, started_at=started_at, error=skipped
                )
            )
            continue
        routing = _route(router, tiers, tier, result=result, guard=guard, started_at=started_at)
        if isinstance(routing, TierAttempt):
            result.attempts.append(routing)
            continue
        trimmed = trim_to_budget(
            messages,
            budget=endpoint.prompt_token_budget,
            examples=examples,
            passages=passages,
            passages_header=KNOWLEDGE_HEADER,
        )
        sent, placeholders = trimmed.messages, dict[str, str]()
        if endpoint.kind != ModelEndpoint.Kind.LOCAL:
            # Personal data never leaves for a third party's API; the local tier sees it all.
            # The passages are the team's own (its support address is no customer's): added
            # after redaction, as written.
            sent, placeholders = redact_messages(trimmed.without_passages or sent)
            sent = with_knowledge(sent, trimmed.knowledge)
        request = CompletionRequest(messages=sent, max_tokens=endpoint.max_output_tokens)
        on_text = (
            _on_text(stream, placeholders=placeholders, shown=trimmed.passages)
            if stream is not None and not streamed
            else None
        )
        streamed = streamed or on_text is not None
        try:
            completion = provider_for(endpoint, timeout=remaining).complete(
                request, on_text=on_text
            )
        except ProviderError as exc:
            if on_text is not None and stream is not None and tier is not tiers[-1]:
                stream.improving()
            cut_by_deadline = (
                isinstance(exc, ProviderTimeout) and remaining < endpoint.timeout_seconds
            )
            if not cut_by_deadline:  # our deadline, not the endpoint's health
                guard.record_failure(endpoint.pk, exc.kind)
            result.attempts.append(
                TierAttempt(
                    tier=tier.position,
                    endpoint=endpoint,
                    started_at=started_at,
                    error=exc,
                    tokens_saved=trimmed.tokens_saved,
                    examples=trimmed.examples,
                    passages_shown=trimmed.passages,
                    routing=routing,
                )
            )
            continue
        guard.record_success(endpoint.pk)
        citations: tuple[int, ...] = ()
        if trimmed.passages:
            # The agent gets the draft without markers; the numbers are kept beside it.
            marked = cited(completion.text, shown=trimmed.passages)
            citations = marked.citations
            if marked.text != completion.text:
                completion = replace(completion, text=marked.text)
        tier_context = replace(context, tier=tier.position, earlier_drafts=tuple(answered))
        if context.grounding is not None:
            tier_context = replace(
                tier_context,
                grounding=replace(context.grounding, shown=trimmed.passages, citations=citations),
            )
        verdict = scorer.judge(context=tier_context, completion=completion)
        score = verdict.score
        escalated = Decimal(f"{score:.4f}") < tier.threshold and tier is not tiers[-1]
        explanation = (
            scorer.explain(verdict=verdict, context=tier_context, completion=completion)
            if escalated
            else None
        )
        if escalated and on_text is not None and stream is not None:
            stream.improving()
        answered.append(completion.text)
        # Whichever tier wrote it, a draft never shows a card number or IBAN in full: a paid
        # tier's placeholders come back masked, and the local tier may echo the raw text.
        text = mask_payment(restore(completion.text, placeholders))
        if text != completion.text:
            completion = replace(completion, text=text)
        attempt = TierAttempt(
            tier=tier.position,
            endpoint=endpoint,
            started_at=started_at,
            completion=completion,
            score=score,
            tokens_saved=trimmed.tokens_saved,
            examples=trimmed.examples,
            passages_shown=trimmed.passages,
            citations=citations,
            cost=completion_cost(endpoint, completion, prices=prices, at=started_at),
            scorer_id=verdict.scorer_id,
            explanation=explanation,
            routing=routing,
        )
        result.attempts.append(attempt)
        result.chosen = attempt
        if Decimal(f"{score:.4f}") >= tier.threshold:
            break
    return result


def _route(
    router: Router | None,
    tiers: list[CascadeTier],
    tier: CascadeTier,
    *,
    result: CascadeResult,
    guard: BaseCircuitBreaker,
    started_at: datetime,
) -> TierAttempt | dict[str, object] | None:
    """Routing before `tier` is asked: a skip's attempt (`RoutedPast`, no call, no cost, no
    breaker effect), or the estimates that kept it (stored with its attempt), or None without a
    router or when `tier` is the last that could still answer (later tiers cooling down are no
    alternative). Decided again before every tier, the answers' scores so far as evidence."""
    if router is None:
        return None
    later = tiers[tiers.index(tier) + 1 :]
    remaining = [tier, *(t for t in later if not guard.is_open(t.endpoint_id))]
    if len(remaining) < 2:
        return None
    scores = [a.score for a in result.attempts if a.score is not None]
    decision = route_with(router, [t.position for t in remaining], scores=scores)
    if not decision.skip:
        return decision.record()
    endpoint = tier.endpoint
    skipped = RoutedPast(
        f"{endpoint.name} routed past: tier {decision.best} expected to be worth more."
    )
    return TierAttempt(
        tier=tier.position,
        endpoint=endpoint,
        started_at=started_at,
        error=skipped,
        routing=decision.record(),
    )
