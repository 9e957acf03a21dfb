"""Prometheus metrics, in the text format vLLM's own /metrics speaks (same client library),
so one scrape job covers both.

Two sources, chosen by where the truth lives:

- HTTP requests are events in the web process that serves them: a counter and a latency
  histogram per route name (never the raw path: ids would make a series per conversation),
  method and status. gunicorn runs several processes; with PROMETHEUS_MULTIPROC_DIR set
  each writes its samples to a file there and a scrape of any one of them sums them all.
- Drafts, attempts, escalations, cache hits, provider latency and errors, spend and queue
  depth are read at scrape time from the database rows (and the broker's queue lengths).
  Workers run in other processes and on other machines; the rows they write are the
  record, so every web process reports the same numbers and nothing is lost when a worker
  restarts. Counters here are totals over all rows ever stored (deleting rows, e.g.
  purging old conversations, lowers them: Prometheus reads that as a counter reset). A scrape
  is two grouped aggregate queries and one indexed MIN; its result is kept for
  METRICS_CACHE_SECONDS so that several scrapers (or a curl loop) cost one.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, Min, Q, Sum
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from drafting.models import CascadeTier, Draft, DraftAttempt, ModelEndpoint

# --- HTTP requests (events, per process) ------------------------------------------------------

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Web latency: ingest is a few milliseconds, console pages tens, report PDFs seconds.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

http_requests = Counter(
    "csbot_http_requests",
    "HTTP requests served, by route name, method and status code.",
    ["view", "method", "status"],
)
http_request_duration = Histogram(
    "csbot_http_request_duration_seconds",
    "Time to serve an HTTP request (Django middleware to response), by route name and method.",
    ["view", "method"],
    buckets=HTTP_BUCKETS,
)


# The labelled children per (view, method, status): `labels()` validates and locks on every
# call, a dict look-up does not. Bounded like the labels themselves.
_http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def http_request_observe(*, view: str, method: str, status: int, seconds: float) -> None:
    method = method if method in HTTP_METHODS else "OTHER"  # before keying: any client can
    key = (view, method, status)  # invent methods, and each would be a new entry
    children = _http_children.get(key)
    if children is None:
        children = (
            http_requests.labels(view, method, str(status)),
            http_request_duration.labels(view, method),
        )
        _http_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


# --- Drafting (read from the rows at scrape time) ---------------------------------------------

# Provider latency: a cache-warm local tier answers in well under a second, a paid tier
# in a few, a timeout at the endpoint's limit (30 s by default).
PROVIDER_BUCKETS_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Attempts that asked no provider: latency says nothing about the endpoint.
NOT_CALLS = (DraftAttempt.ErrorKind.CIRCUIT_OPEN, DraftAttempt.ErrorKind.SPEND_CAPPED)
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
            "tier", "endpoint_id", "outcome", "error_kind", "exploratory", "cache_match"
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
        attempts.add_metric(
            [str(row["tier"]), endpoint, row["outcome"], row["error_kind"], exploratory], n
        )
        if row["cache_match"]:
            cache_hits[row["cache_match"]] = cache_hits.get(row["cache_match"], 0.0) + n
            continue
        if row["tier"] >= 2 and not row["exploratory"]:
            escalations[str(row["tier"])] += n
        if row["error_kind"]:
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
        "draft scored below its tier's threshold, or the tier below failed.",
        labels=["to_tier"],
    )
    for tier, n in sorted(escalations.items()):
        family.add_metric([tier], n)
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


# --- Broker queue depth -----------------------------------------------------------------------


def _queue_metrics() -> Iterator[Metric]:
    """Messages waiting in the Celery queues (Redis lists, or files of the filesystem
    transport), and with Redis the messages workers hold unacknowledged (acks_late)."""
    from csbot.celery import app  # the app's queue names, as the worker consumes them

    url = settings.CELERY_BROKER_URL
    names = sorted({queue.name for queue in app.amqp.queues.values()} or {"celery"})
    waiting = GaugeMetricFamily(
        "csbot_celery_queue_length",
        "Tasks waiting in the broker, by queue (a draft's task waits here until a worker "
        "takes it).",
        labels=["queue"],
    )
    up = GaugeMetricFamily("csbot_broker_up", "1 when the broker answered this scrape.")
    if url.startswith(("redis://", "rediss://")):
        import redis

        try:
            client = _redis_client(url)
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.llen(name)
            pipe.hlen("unacked")
            *lengths, unacked = pipe.execute()
        except (redis.RedisError, OSError):
            up.add_metric([], 0)
            yield up
            return
        for name, length in zip(names, lengths, strict=True):
            waiting.add_metric([name], length)
        held = GaugeMetricFamily(
            "csbot_celery_unacked",
            "Tasks delivered to a worker and not yet acknowledged (running or prefetched).",
        )
        held.add_metric([], unacked)
        up.add_metric([], 1)
        yield from (up, waiting, held)
    elif url.startswith("filesystem://"):
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]
        try:
            files = sum(1 for _ in os.scandir(str(folder)))
        except OSError:
            up.add_metric([], 0)
            yield up
            return
        # One folder holds all queues' messages: reported under the default queue.
        waiting.add_metric([names[0]], files)
        up.add_metric([], 1)
        yield from (up, waiting)


_redis_clients: dict[str, Any] = {}


def _redis_client(url: str) -> Any:
    """One client (and connection pool) per URL per process, with short timeouts: a scrape
    must not hang on a broker that is down."""
    import redis

    client = _redis_clients.get(url)
    if client is None:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        _redis_clients[url] = client
    return client


# --- The collector ----------------------------------------------------------------------------


class DraftingCollector:
    """Reads the drafting metrics from the database and broker when scraped, at most once
    per METRICS_CACHE_SECONDS per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._cached_at = float("-inf")

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # one query set at a time; concurrent scrapes share its result
            if time.monotonic() - self._cached_at >= settings.METRICS_CACHE_SECONDS:
                self._cached = self._collect_now()
                self._cached_at = time.monotonic()
            metrics = self._cached
        yield from metrics

    def invalidate(self) -> None:
        with self._lock:
            self._cached_at = float("-inf")

    def _collect_now(self) -> list[Metric]:
        started = time.perf_counter()
        endpoints = dict(ModelEndpoint.objects.values_list("id", "name"))
        metrics: list[Metric] = [
            *_draft_metrics(endpoints),
            *_attempt_metrics(endpoints),
            *_queue_metrics(),
        ]
        took = GaugeMetricFamily(
            "csbot_metrics_collect_seconds",
            "Time the database and broker queries of the last metrics refresh took.",
        )
        took.add_metric([], time.perf_counter() - started)
        metrics.append(took)
        return metrics


drafting_collector = DraftingCollector()


class _Registries:
    """The HTTP metrics (this process's, or all gunicorn workers' in multiprocess mode) and
    the drafting collector, as one collector for the exposition functions."""

    def __init__(self, sources: Iterable[Any]):
        self._sources = list(sources)

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            yield from source.collect()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(accept: str) -> tuple[bytes, str]:
    """The metrics page in the format the scraper asks for (Prometheus text 0.0.4 unless it
    accepts OpenMetrics), and its content type."""
    if multiprocess_dir():
        http: Any = CollectorRegistry()
        MultiProcessCollector(http)
    else:
        http = REGISTRY
    encoder, content_type = choose_encoder(accept)
    return encoder(_Registries([http, drafting_collector])), content_type
