"""What drafting tells csbot's observability (csbot/observability), registered in
DraftingConfig.ready: the metrics read from its rows at scrape time and the readiness of its
model endpoints. csbot's side caches, times and serves them; it never reads drafting's rows.

- Metrics: drafts by status, tier and endpoint; the oldest queued draft; per attempt:
  outcomes, escalations, cache hits, provider latency, errors, tokens and spend. Two grouped
  aggregate queries and one indexed MIN per refresh.
- Readiness: each enabled endpoint asked for its model list (free on paid APIs), all at once
  with a short timeout, answers kept READYZ_ENDPOINT_CACHE_SECONDS; per active policy whether
  any enabled tier answered. Only READYZ_REQUIRE_ENDPOINTS makes an unreachable policy fail
  readiness: by default ingest keeps accepting messages and their drafts wait in the queue.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Min, Q, Sum
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from csbot.observability.health import Check, Readiness, timed
from drafting.engine.providers import ProviderError, provider_for
from drafting.models import CascadePolicy, CascadeTier, Draft, DraftAttempt, ModelEndpoint

# --- Metrics (read from the rows at scrape time) ---------------------------------------------

# Provider latency: a cache-warm local tier answers in well under a second, a paid tier
# in a few, a timeout at the endpoint's limit (30 s by default).
PROVIDER_BUCKETS_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Attempts that asked no provider: latency says nothing about the endpoint.
NOT_CALLS = (
    DraftAttempt.ErrorKind.CIRCUIT_OPEN,
    DraftAttempt.ErrorKind.SPEND_CAPPED,
    DraftAttempt.ErrorKind.ROUTED,
)
# A tier the router skipped (drafting.engine.routing) by choice: no error of its endpoint, and
# no step of the cascade to it (the tier asked instead is).
ROUTED = DraftAttempt.ErrorKind.ROUTED
CACHE_LABEL = "cache"


def _bucket_key(bound: float) -> str:
    return f"le_{int(bound * 1000)}"


@dataclass
class _Histogram:
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(PROVIDER_BUCKETS_SECONDS))
    count: float = 0.0
    total: float = 0.0


def _draft_metrics(endpoints: dict[int, str]) -> Iterator[Metric]:
    """Drafts by status and by the tier and endpoint that produced their text."""
    tier_of = {
        (policy_id, endpoint_id): position
        for policy_id, endpoint_id, position in CascadeTier.objects.values_list(
            "policy_id", "endpoint_id", "position"
        )
    }
    rows = (
        Draft.objects.values("status", "policy_id", "final_endpoint_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in rows:
        status, endpoint_id = row["status"], row["final_endpoint_id"]
        if endpoint_id is not None:
            position = tier_of.get((row["policy_id"], endpoint_id))
            # .get: an endpoint added since its names were read is named by its id.
            name = endpoints.get(endpoint_id, str(endpoint_id))
            key = (status, "" if position is None else str(position), name)
        elif status == Draft.Status.READY:  # ready with no endpoint: served from the cache
            key = (status, "0", CACHE_LABEL)
        else:
            key = (status, "", "")
        counts[key] += row["n"]
    drafts = GaugeMetricFamily(
        "csbot_drafts",
        "Drafts by status, and for drafts with text the cascade tier and endpoint that wrote "
        "it (tier 0, endpoint 'cache': a completion-cache hit). queued + generating is the "
        "drafting backlog.",
        labels=["status", "tier", "endpoint"],
    )
    for status in Draft.Status.values:  # every status present, zero or not, for alert rules
        counts.setdefault((status, "", ""), 0)
    for (status, tier, endpoint), n in sorted(counts.items()):
        drafts.add_metric([status, tier, endpoint], n)
    yield drafts

    oldest = Draft.objects.filter(status=Draft.Status.QUEUED).aggregate(at=Min("created_at"))["at"]
    age = GaugeMetricFamily(
        "csbot_drafts_oldest_queued_seconds",
        "Age of the oldest queued draft (0 when none): how far behind the workers are.",
    )
    age.add_metric([], (timezone.now() - oldest).total_seconds() if oldest else 0.0)
    yield age


def _attempt_metrics(endpoints: dict[int, str]) -> Iterator[Metric]:
    """Everything per attempt, from one grouped aggregate over the attempts table."""
    buckets = {
        _bucket_key(bound): Count("id", filter=Q(latency_ms__lte=int(bound * 1000)))
        for bound in PROVIDER_BUCKETS_SECONDS
    }
    rows = (
        DraftAttempt.objects.values(
            "tier", "endpoint_id", "outcome", "error_kind", "exploratory", "cache_match", "purpose"
        )
        .annotate(
            n=Count("id"),
            # Named apart from the fields: the bucket filters must see the column.
            cost_sum=Sum("cost"),
            tokens_in_sum=Sum("tokens_in"),
            tokens_out_sum=Sum("tokens_out"),
            latency_ms_sum=Sum("latency_ms"),
            **buckets,
        )
        .order_by()
    )
    attempts = CounterMetricFamily(
        "csbot_draft_attempts",
        "Cascade attempts stored (tier 0: cache hits; exploratory: asked after the draft was "
        "ready, for the optimiser), by outcome and error kind.",
        labels=["tier", "endpoint", "outcome", "error_kind", "exploratory"],
    )
    escalations: dict[str, float] = defaultdict(float)
    composer: dict[tuple[str, str], float] = defaultdict(float)
    cache_hits: dict[str, float] = {"exact": 0.0, "semantic": 0.0}
    errors: dict[tuple[str, str], float] = defaultdict(float)
    spend: dict[tuple[str, str], float] = defaultdict(float)
    tokens: dict[tuple[str, str], float] = defaultdict(float)
    latency: dict[tuple[str, str], _Histogram] = defaultdict(_Histogram)
    for row in rows:
        endpoint_id = row["endpoint_id"]
        endpoint = endpoints.get(endpoint_id, str(endpoint_id)) if endpoint_id else CACHE_LABEL
        exploratory = "true" if row["exploratory"] else "false"
        n = float(row["n"])
        if row["purpose"] in DraftAttempt.COMPOSER_PURPOSES:
            # A composer tool's call: the endpoint's spend, tokens, latency and errors, but no
            # cascade attempt (nor an escalation when a lower tier was cooling down).
            composer[row["purpose"], row["outcome"]] += n
        else:
            attempts.add_metric(
                [str(row["tier"]), endpoint, row["outcome"], row["error_kind"], exploratory], n
            )
        if row["cache_match"]:
            cache_hits[row["cache_match"]] = cache_hits.get(row["cache_match"], 0.0) + n
            continue
        routed = row["error_kind"] == ROUTED
        if row["tier"] >= 2 and not row["exploratory"] and not row["purpose"] and not routed:
            escalations[str(row["tier"])] += n
        if row["error_kind"] and not routed:
            errors[endpoint, row["error_kind"]] += n
        spend[endpoint, exploratory] += float(row["cost_sum"] or Decimal(0))
        tokens[endpoint, "in"] += float(row["tokens_in_sum"] or 0)
        tokens[endpoint, "out"] += float(row["tokens_out_sum"] or 0)
        if row["error_kind"] not in NOT_CALLS:
            histogram = latency[endpoint, row["outcome"]]
            histogram.count += n
            histogram.total += (row["latency_ms_sum"] or 0) / 1000
            for i, bound in enumerate(PROVIDER_BUCKETS_SECONDS):
                histogram.buckets[i] += row[_bucket_key(bound)]
    yield attempts

    family = CounterMetricFamily(
        "csbot_cascade_escalations",
        "Cascade steps past the first tier (non-exploratory attempts at tier 2 and up): a "
        "draft scored below its tier's threshold, the tier below failed, or the router skipped "
        "it (a routed skip is no step of its own).",
        labels=["to_tier"],
    )
    for tier, n in sorted(escalations.items()):
        family.add_metric([tier], n)
    yield family

    family = CounterMetricFamily(
        "csbot_composer_uses",
        "Composer tools used on agents' replies (shorten, friendlier, formal, grammar, "
        "translate), by tool and outcome; their spend is in csbot_spend_usd.",
        labels=["tool", "outcome"],
    )
    for (tool, outcome), n in sorted(composer.items()):
        family.add_metric([tool, outcome], n)
    yield family

    family = CounterMetricFamily(
        "csbot_cache_hits",
        "Drafts served from the completion cache, by match (exact text or semantic).",
        labels=["match"],
    )
    for match, n in sorted(cache_hits.items()):
        family.add_metric([match], n)
    yield family

    histogram_family = HistogramMetricFamily(
        "csbot_provider_request_duration_seconds",
        "Provider call latency as recorded on each attempt, by endpoint and outcome (skips "
        "for an open circuit or a spend cap are not calls and not counted).",
        labels=["endpoint", "outcome"],
    )
    for (endpoint, outcome), h in sorted(latency.items()):
        cumulative = [
            (str(bound), h.buckets[i]) for i, bound in enumerate(PROVIDER_BUCKETS_SECONDS)
        ]
        histogram_family.add_metric(
            [endpoint, outcome], [*cumulative, ("+Inf", h.count)], sum_value=h.total
        )
    yield histogram_family

    family = CounterMetricFamily(
        "csbot_provider_errors",
        "Failed attempts by endpoint and error kind (circuit_open and spend_capped: the tier "
        "was skipped without a call).",
        labels=["endpoint", "error_kind"],
    )
    for (endpoint, kind), n in sorted(errors.items()):
        family.add_metric([endpoint, kind], n)
    yield family

    family = CounterMetricFamily(
        "csbot_provider_tokens",
        "Tokens sent (in) and generated (out), by endpoint.",
        labels=["endpoint", "direction"],
    )
    for (endpoint, direction), n in sorted(tokens.items()):
        family.add_metric([endpoint, direction], n)
    yield family

    family = CounterMetricFamily(
        "csbot_spend_usd",
        "Money spent on provider attempts, USD (GPU time for local tiers), by endpoint; "
        "exploratory spend separate. A float here; the database keeps exact decimals.",
        labels=["endpoint", "exploratory"],
    )
    for (endpoint, exploratory), usd in sorted(spend.items()):
        family.add_metric([endpoint, exploratory], usd)
    yield family


def drafting_metrics() -> Iterator[Metric]:
    """Every drafting metric, for csbot.observability.metrics.register_scrape_source."""
    endpoints = dict(ModelEndpoint.objects.values_list("id", "name"))
    yield from _draft_metrics(endpoints)
    yield from _attempt_metrics(endpoints)


# --- Readiness: the model endpoints ---------------------------------------------------------


def check_endpoint(endpoint: ModelEndpoint) -> Check:
    def probe() -> str:
        timeout = settings.READYZ_ENDPOINT_TIMEOUT_SECONDS
        models = provider_for(endpoint, timeout=timeout).model_names()
        return f"{len(models)} model(s)"

    return timed(probe, (ProviderError,))


class _EndpointChecks:
    """The endpoints' last answers, per process, refreshed at most every
    READYZ_ENDPOINT_CACHE_SECONDS (callers arriving meanwhile wait for the one refresh)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._checks: dict[int, tuple[str, Check]] = {}

    def get(self, endpoints: list[ModelEndpoint]) -> dict[int, tuple[str, Check]]:
        with self._lock:
            fresh = time.monotonic() - self._at < settings.READYZ_ENDPOINT_CACHE_SECONDS
            if not (fresh and set(self._checks) == {e.pk for e in endpoints}):
                self._checks = _check_all(endpoints)
                self._at = time.monotonic()
            return self._checks

    def clear(self) -> None:
        with self._lock:
            self._at = float("-inf")


def _check_all(endpoints: list[ModelEndpoint]) -> dict[int, tuple[str, Check]]:
    if not endpoints:
        return {}
    # In parallel: readiness takes one timeout at worst, not one per endpoint.
    with ThreadPoolExecutor(max_workers=min(8, len(endpoints))) as pool:
        checks = list(pool.map(check_endpoint, endpoints))
    return {e.pk: (e.name, check) for e, check in zip(endpoints, checks, strict=True)}


endpoint_checks = _EndpointChecks()


def endpoints_readiness() -> Readiness:
    """Each enabled endpoint's answer and, per active policy, whether any enabled tier
    answered (a policy with no enabled tier shows as unreachable too)."""
    enabled = list(ModelEndpoint.objects.filter(enabled=True).order_by("pk"))
    checks = endpoint_checks.get(enabled)
    reachable = {
        f"{team} / {name}": False
        for name, team in CascadePolicy.objects.filter(active=True).values_list(
            "name", "team__name"
        )
    }
    tiers = CascadeTier.objects.filter(policy__active=True, endpoint__enabled=True)
    for policy_name, team_name, endpoint_id in tiers.values_list(
        "policy__name", "policy__team__name", "endpoint_id"
    ):
        key = f"{team_name} / {policy_name}"
        reachable[key] = reachable[key] or checks[endpoint_id][1].ok
    unreachable = not all(reachable.values())
    return Readiness(
        report={
            "endpoints": {name: asdict(check) for name, check in checks.values()},
            "policies": {
                name: ("reachable" if ok else "no tier reachable") for name, ok in reachable.items()
            },
        },
        degraded=unreachable or not all(check.ok for _, check in checks.values()),
        ready=not (unreachable and settings.READYZ_REQUIRE_ENDPOINTS),
    )
