"""Liveness and readiness.

Liveness (/healthz) is the process answering: no dependency is asked, so a database outage
never gets every web container restarted.

Readiness (/readyz, `manage.py healthcheck`) asks what serving needs:
- the database (`SELECT 1`) and the broker (Redis PING; the filesystem transport's folder)
  are required: without them a message cannot be stored or its draft queued;
- each enabled model endpoint is asked for its model list (GET {base_url}/models: free on
  paid APIs, no tokens spent), all at once with a short timeout, and the answers kept for
  READYZ_ENDPOINT_CACHE_SECONDS so that a load balancer polling every second does not poll
  the providers every second. A policy whose enabled tiers are all unreachable is reported
  as such. It fails readiness only with READYZ_REQUIRE_ENDPOINTS: by default ingest keeps
  accepting messages (their drafts wait in the queue and are retried by the sweeper), since
  taking web out of the load balancer would lose the messages instead.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import Error as DatabaseError
from django.db import connection

from drafting.engine.providers import ProviderError, provider_for
from drafting.models import CascadePolicy, CascadeTier, ModelEndpoint

OK, FAIL, SKIPPED = "ok", "fail", "skipped"


@dataclass(frozen=True)
class Check:
    status: str
    latency_ms: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def _timed(probe: Callable[[], str], errors: tuple[type[BaseException], ...]) -> Check:
    started = time.perf_counter()
    try:
        detail = probe()
    except errors as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return Check(FAIL, round(elapsed, 1), f"{type(exc).__name__}: {exc}"[:300])
    return Check(OK, round((time.perf_counter() - started) * 1000, 1), detail)


def check_database() -> Check:
    def probe() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return connection.vendor

    return _timed(probe, (DatabaseError, OSError))


def check_broker(url: str | None = None) -> Check:
    """PING the Redis broker (its own short-timeout connection); for the filesystem
    transport, its folder must be there and writable."""
    import redis

    url = url or settings.CELERY_BROKER_URL

    def probe() -> str:
        if url.startswith(("redis://", "rediss://")):
            client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
            try:
                client.ping()
            finally:
                client.close()
            return "redis"
        if url.startswith("filesystem://"):
            folder = Path(str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]))
            if not (folder.is_dir() and os.access(folder, os.W_OK)):
                raise OSError(f"broker folder {folder} is missing or not writable")
            return "filesystem"
        return url.split("://", 1)[0]  # memory://: in-process, nothing to ask

    return _timed(probe, (redis.RedisError, OSError))


def check_endpoint(endpoint: ModelEndpoint) -> Check:
    def probe() -> str:
        timeout = settings.READYZ_ENDPOINT_TIMEOUT_SECONDS
        models = provider_for(endpoint, timeout=timeout).model_names()
        return f"{len(models)} model(s)"

    return _timed(probe, (ProviderError,))


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


def readiness(*, endpoints: bool = True) -> tuple[bool, dict[str, Any]]:
    """(ready, report). Steps: database and broker (required); then, unless `endpoints` is
    False, each enabled endpoint and, per active policy, whether any enabled tier answered."""
    database, broker = check_database(), check_broker()
    ready = database.ok and broker.ok
    report: dict[str, Any] = {
        "checks": {"database": asdict(database), "broker": asdict(broker)},
    }
    degraded = False
    if endpoints and database.ok:
        enabled = list(ModelEndpoint.objects.filter(enabled=True).order_by("pk"))
        checks = endpoint_checks.get(enabled)
        report["endpoints"] = {name: asdict(check) for name, check in checks.values()}
        # Every active policy, so that one with no enabled tier shows as unreachable too.
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
        report["policies"] = {
            name: ("reachable" if ok else "no tier reachable") for name, ok in reachable.items()
        }
        unreachable = not all(reachable.values())
        degraded = unreachable or not all(check.ok for _, check in checks.values())
        if unreachable and settings.READYZ_REQUIRE_ENDPOINTS:
            ready = False
    elif not endpoints:
        report["endpoints"] = SKIPPED
    report["status"] = "fail" if not ready else ("degraded" if degraded else "ok")
    return ready, report
