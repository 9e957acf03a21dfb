"""Liveness and readiness.

Liveness (/healthz) is the process answering: no dependency is asked, so a database outage
never gets every web container restarted.

Readiness (/readyz, `manage.py healthcheck`) asks what serving needs:
- the database (`SELECT 1`) and the broker (Redis PING; the filesystem transport's folder)
  are required: without them a message cannot be stored or its draft queued;
- the apps' own dependencies (registered checks; drafting.observability): each enabled model
  endpoint is asked for its model list (GET {base_url}/models: free on
  paid APIs, no tokens spent), all at once with a short timeout, and the answers kept for
  READYZ_ENDPOINT_CACHE_SECONDS so that a load balancer polling every second does not poll
  the providers every second. A policy whose enabled tiers are all unreachable is reported
  as such. It fails readiness only with READYZ_REQUIRE_ENDPOINTS: by default ingest keeps
  accepting messages (their drafts wait in the queue and are retried by the sweeper), since
  taking web out of the load balancer would lose the messages instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import Error as DatabaseError
from django.db import connection

OK, FAIL, SKIPPED = "ok", "fail", "skipped"


@dataclass(frozen=True)
class Check:
    status: str
    latency_ms: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def timed(probe: Callable[[], str], errors: tuple[type[BaseException], ...]) -> Check:
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

    return timed(probe, (DatabaseError, OSError))


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

    return timed(probe, (redis.RedisError, OSError))


@dataclass(frozen=True)
class Readiness:
    """What an app's dependency check adds to the readiness report: its sections, whether
    something answered badly (degraded) and whether serving cannot go on (not ready)."""

    report: dict[str, Any]
    degraded: bool = False
    ready: bool = True


ReadinessCheck = Callable[[], Readiness]
_app_checks: dict[str, ReadinessCheck] = {}


def register_readiness_check(name: str, check: ReadinessCheck) -> None:
    """An app's dependencies beyond the database and broker (drafting: its model endpoints),
    registered from AppConfig.ready; `name` is the report section shown when skipped."""
    _app_checks[name] = check


def readiness(*, endpoints: bool = True) -> tuple[bool, dict[str, Any]]:
    """(ready, report). Steps: database and broker (required); then, unless `endpoints` is
    False, the apps' registered checks (drafting: each enabled endpoint and, per active
    policy, whether any enabled tier answered)."""
    database, broker = check_database(), check_broker()
    ready = database.ok and broker.ok
    report: dict[str, Any] = {
        "checks": {"database": asdict(database), "broker": asdict(broker)},
    }
    degraded = False
    if endpoints and database.ok:
        for check in _app_checks.values():
            part = check()
            report.update(part.report)
            degraded = degraded or part.degraded
            ready = ready and part.ready
    elif not endpoints:
        for name in _app_checks:
            report[name] = SKIPPED
    report["status"] = "fail" if not ready else ("degraded" if degraded else "ok")
    return ready, report
