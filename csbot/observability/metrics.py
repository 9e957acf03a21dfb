"""Prometheus metrics, in the text format vLLM's own /metrics speaks (same client library),
so one scrape job covers both.

Two sources, chosen by where the truth lives:

- HTTP requests are events in the web process that serves them: a counter and a latency
  histogram per route name (never the raw path: ids would make a series per conversation),
  method and status. gunicorn runs several processes; with PROMETHEUS_MULTIPROC_DIR set
  each writes its samples to a file there and a scrape of any one of them sums them all.
- Drafts, attempts, escalations, cache hits, provider latency and errors, spend and queue
  depth are read at scrape time from the database rows (and the broker's queue lengths). The
  apps that own the rows say what to read (drafting: drafting.observability, registered in
  its AppConfig.ready); this module caches, times and serves it with the broker's queues.
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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

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


# --- Read at scrape time ----------------------------------------------------------------------

ScrapeSource = Callable[[], Iterable[Metric]]
_sources: list[ScrapeSource] = []


def register_scrape_source(source: ScrapeSource) -> None:
    """Metrics an app reads from its own rows when /metrics is scraped (from AppConfig.ready;
    registering twice is harmless)."""
    if source not in _sources:
        _sources.append(source)


class ScrapeCollector:
    """Reads the registered sources and the broker's queues when scraped, at most once per
    METRICS_CACHE_SECONDS per process."""

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
        metrics: list[Metric] = [m for source in _sources for m in source()]
        metrics += _queue_metrics()
        took = GaugeMetricFamily(
            "csbot_metrics_collect_seconds",
            "Time the database and broker queries of the last metrics refresh took.",
        )
        took.add_metric([], time.perf_counter() - started)
        metrics.append(took)
        return metrics


scrape_collector = ScrapeCollector()


class _Registries:
    """The HTTP metrics (this process's, or all gunicorn workers' in multiprocess mode) and
    the scrape-time collector, as one collector for the exposition functions."""

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
    return encoder(_Registries([http, scrape_collector])), content_type
