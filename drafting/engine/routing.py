"""Routing before generation: skip a tier the router expects to be worth less than a later one.

A router (drafting.learning.routing trains one per policy) estimates, before any call, each
tier's probability of a good draft for this message, its cost and its latency. The cascade
asks it before each tier (`route`). A tier's expected net value is

    V = p_good · value of a good draft − expected cost − expected latency · wait per second

(the agent's wait is money too: ActionValues.wait_per_second); the tier about to be asked is
skipped when asking a later tier next is worth more, each counted with the cascade after it as
its fall-back (`plan_values`). A later tier asked instead still gets the cascade's threshold
check, and when its draft falls short the decision is made again with the tiers that remain
(and the scores so far, which a router may use as evidence). The last
remaining tier is never skipped: routing chooses among tiers, it never leaves a draft unasked.

A skip is recorded as an attempt of the skipped tier (`RoutedPast`, error kind "routed"): no
call, no cost, no effect on the circuit breaker, with the estimates that decided it
(`RouteDecision.record`, stored in DraftAttempt.routing). Pure: no Django, no learning; the
held-out simulation of the training and the cascade call the same `route`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from drafting.engine.providers import ProviderError


class RoutedPast(ProviderError):
    """Not a call: the router expected a later tier to be worth more (DraftAttempt.ErrorKind.
    ROUTED). Not transient: a later try would route the same way; the tiers asked instead
    decide whether the draft is worth retrying."""

    kind = "routed"
    transient = False


@dataclass(frozen=True)
class RouteValues:
    """What a good draft is worth over a bad one, and a second of the agent's wait, in USD."""

    good_draft: Decimal
    wait_per_second: Decimal


@dataclass(frozen=True)
class TierEstimate:
    """A router's estimate for one tier (by position), before it is asked."""

    tier: int
    p_good: float
    cost: Decimal
    latency_s: float

    def value(self, values: RouteValues) -> float:
        """Expected net value V of asking this tier (USD; a float: it is only compared)."""
        return (
            self.p_good * float(values.good_draft)
            - float(self.cost)
            - self.latency_s * float(values.wait_per_second)
        )


class Router(Protocol):
    """Per-tier estimates for one message, computed from what is known before any call."""

    @property
    def router_id(self) -> int | None: ...

    @property
    def values(self) -> RouteValues: ...

    def estimates(self, tiers: Sequence[int], *, scores: Sequence[float]) -> list[TierEstimate]:
        """Estimates for `tiers` (positions, in cascade order); `scores` are the scores of the
        drafts already answered for this message, lowest tier first (evidence a router may use:
        they all fell short of their thresholds)."""
        ...


@dataclass(frozen=True)
class RouteDecision:
    """Whether to skip the first of the remaining tiers, and the estimates that said so."""

    skip: bool
    tier: int
    best: int  # the remaining tier with the highest expected value (the tier itself if kept)
    estimates: tuple[TierEstimate, ...]
    values: RouteValues
    router_id: int | None = None
    plan: tuple[float, ...] = ()  # plan_values: each tier's value if asked next

    def record(self) -> dict[str, Any]:
        """The JSON stored with the attempt (DraftAttempt.routing): why it was skipped or asked."""
        return {
            "router": self.router_id,
            "decision": "skip" if self.skip else "ask",
            "tier": self.tier,
            "best": self.best,
            "good_draft_usd": str(self.values.good_draft),
            "wait_per_second_usd": str(self.values.wait_per_second),
            "estimates": [
                {
                    "tier": e.tier,
                    "p_good": round(e.p_good, 4),
                    "cost_usd": str(e.cost),
                    "latency_s": round(e.latency_s, 3),
                    "value_usd": round(e.value(self.values), 6),
                    "if_asked_next_usd": round(look, 6),
                }
                for e, look in zip(
                    self.estimates,
                    self.plan or plan_values(self.estimates, values=self.values),
                    strict=True,
                )
            ],
        }


def plan_values(estimates: Sequence[TierEstimate], *, values: RouteValues) -> list[float]:
    """For each remaining tier j (in cascade order), the expected value of asking it next, with
    the tiers before it skipped and the cascade going on after it should its draft fall short:

        L(j) = V(j) + (1 − p_good(j)) · F(j + 1),   F(k) = max over j ≥ k of L(j),   F(end) = 0

    Asking a cheap tier first keeps the stronger ones as a fall-back, so a tier is worth asking
    even when a later one alone is worth more: comparing V alone would skip it too often. The
    tiers' outcomes are taken as independent (the scores so far are not used as evidence), and
    a draft that falls short is taken to be caught by its threshold."""
    after = 0.0  # F(j + 1), from the last tier backwards
    looks = [0.0] * len(estimates)
    for j in range(len(estimates) - 1, -1, -1):
        estimate = estimates[j]
        looks[j] = estimate.value(values) + (1 - estimate.p_good) * after
        after = max(after, looks[j]) if j < len(estimates) - 1 else looks[j]
    return looks


def route(estimates: Sequence[TierEstimate], *, values: RouteValues) -> RouteDecision:
    """Skip the first of the remaining tiers (`estimates`, in cascade order) when asking a later
    one next is worth strictly more (`plan_values`: each with the cascade as its fall-back);
    never when it is the only one left (a tie keeps the cheaper, earlier tier: the plain
    cascade's order)."""
    if not estimates:
        raise ValueError("Routing needs at least one remaining tier.")
    looks = plan_values(estimates, values=values)
    best_index = 0
    for index, look in enumerate(looks):
        if look > looks[best_index]:
            best_index = index
    first = estimates[0]
    return RouteDecision(
        skip=best_index != 0,
        tier=first.tier,
        best=estimates[best_index].tier,
        estimates=tuple(estimates),
        values=values,
        plan=tuple(looks),
    )


def route_with(
    router: Router, remaining: Sequence[int], *, scores: Sequence[float]
) -> RouteDecision:
    """`route` on the router's estimates for the `remaining` tiers."""
    decision = route(router.estimates(remaining, scores=scores), values=router.values)
    return RouteDecision(
        skip=decision.skip,
        tier=decision.tier,
        best=decision.best,
        estimates=decision.estimates,
        values=decision.values,
        router_id=router.router_id,
        plan=decision.plan,
    )
