"""Per-endpoint circuit breaker: stop asking an endpoint that keeps failing, for a cool-down.

Semantics (as in LiteLLM's router, kept small):

* closed: calls go through. Failures that say the endpoint is unhealthy (rate limited,
  timeout, unavailable) are counted; a success resets the count. A counted failure older than
  the cool-down ages out, so a failure now and then never opens the breaker.
* open: `BREAKER_FAILURES` consecutive counted failures, or one permanent error (auth or bad
  request: a configuration problem that retrying cannot fix), open the breaker for
  `BREAKER_COOLDOWN_SECONDS`. `is_open` is True and the cascade skips the tier.
* half-open: after the cool-down, one caller gets `is_open() == False` and makes the trial
  call; the others still see it open until the trial is decided. A success closes the
  breaker, a counted or permanent failure reopens it at once. A trial that is never decided
  (worker killed, tier skipped for the deadline) lets another trial through one cool-down
  later.

Context too long and empty completions are not counted: the endpoint answered, the request was
the problem (the cascade sends it to a larger tier).

The state lives in Redis so that every Celery worker sees the same breaker, and its time comes
from Redis TTLs, so clock skew between workers does not matter. `breaker()` gives the process
its breaker; without a Redis broker it is an in-process one (see `breaker`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypedDict

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

# Failure kinds (see drafting.engine.providers) that say the endpoint itself is unhealthy.
COUNTED_KINDS = frozenset({"rate_limited", "timeout", "unavailable"})
# Kinds that open the breaker at once: the endpoint's configuration is wrong (bad key, wrong
# model name), so every call would fail the same way until someone fixes it.
TRIPPING_KINDS = frozenset({"permanent"})

DEFAULT_FAILURES = 3
DEFAULT_COOLDOWN_SECONDS = 30
# The half-open marker outlives the open key so that the first call after the cool-down is a
# trial. It still expires, so that deleted endpoints do not leave keys behind forever; after a
# day without a single call, starting again closed is as good as a trial.
_MARKER_SECONDS = 24 * 3600
# A breaker must never stall a draft: Redis answers in milliseconds or is treated as down.
# One immediate retry covers a pooled connection dropped by a Redis restart; redis-py's default
# (three retries with exponential backoff) would hold every draft for seconds during an outage.
_REDIS_TIMEOUT_SECONDS = 2.0
_REDIS_RETRIES = 1

StateName = Literal["closed", "open", "half-open"]


class BreakerState(TypedDict):
    state: StateName
    failures: int  # counted failures in the current window (0 once open)
    seconds_left: float  # of the cool-down; 0 unless open


class BaseCircuitBreaker(ABC):
    """The breaker's policy; subclasses store its state (Redis, or this process's memory)."""

    def __init__(self, *, failures: int | None = None, cooldown: int | None = None) -> None:
        self.threshold: int = (
            failures
            if failures is not None
            else getattr(settings, "BREAKER_FAILURES", DEFAULT_FAILURES)
        )
        self.cooldown: int = (
            cooldown
            if cooldown is not None
            else getattr(settings, "BREAKER_COOLDOWN_SECONDS", DEFAULT_COOLDOWN_SECONDS)
        )
        if self.threshold < 1:
            raise ValueError(f"The breaker's failure threshold must be ≥ 1, not {self.threshold}.")
        # Whole seconds: Redis `SET … EX` takes an integer ≥ 1.
        if self.cooldown < 1:
            raise ValueError(f"The breaker's cool-down must be ≥ 1 second, not {self.cooldown}.")
        self.marker_seconds = max(_MARKER_SECONDS, 2 * self.cooldown)

    @abstractmethod
    def is_open(self, endpoint_id: int) -> bool:
        """True while the endpoint cools down: skip it. In half-open state, exactly one caller
        per cool-down gets False and must report the outcome (record_success/record_failure)."""

    @abstractmethod
    def record_success(self, endpoint_id: int) -> None:
        """The endpoint answered: close the breaker and forget earlier failures."""

    @abstractmethod
    def state(self, endpoint_id: int) -> BreakerState:
        """The breaker as it stands, without side effects (for the admin)."""

    @abstractmethod
    def reset(self, endpoint_id: int) -> None:
        """Forget everything about the endpoint: closed, no failures."""

    @abstractmethod
    def _count_failure(self, endpoint_id: int) -> tuple[int, bool]:
        """Count one failure: (failures in the window, whether the breaker has tripped and not
        closed since, i.e. is open or half-open)."""

    @abstractmethod
    def _trip(self, endpoint_id: int) -> bool:
        """Open the breaker for the cool-down unless it is open already (an open breaker is
        not extended by the late failures of calls made before it opened). True if opened."""

    def record_failure(self, endpoint_id: int, kind: str) -> bool:
        """Report a failed call of `kind` (a ProviderError.kind). True if this opened it."""
        if kind in TRIPPING_KINDS:
            opened = self._trip(endpoint_id)
            if opened:
                logger.warning(
                    "Circuit breaker opened for endpoint %s for %ss after a %s error: its "
                    "configuration (API key, model name, URL) needs attention.",
                    endpoint_id,
                    self.cooldown,
                    kind,
                )
            return opened
        if kind not in COUNTED_KINDS:
            return False
        count, tripped = self._count_failure(endpoint_id)
        # A tripped breaker that is no longer open is half-open: one failure reopens it.
        if not tripped and count < self.threshold:
            return False
        opened = self._trip(endpoint_id)
        if opened:
            logger.warning(
                "Circuit breaker opened for endpoint %s for %ss after %s (%s).",
                endpoint_id,
                self.cooldown,
                "a failed half-open trial" if tripped else f"{count} failures in a row",
                kind,
            )
        return opened


class CircuitBreaker(BaseCircuitBreaker):
    """The breaker shared by every worker through Redis.

    Keys per endpoint (`csbot:breaker:<id>:…`): `failures` (INCR, expiring one cool-down after
    the last failure), `open` (SET EX cool-down: the breaker is open while it exists),
    `half_open` (set when it trips, deleted by a success: present without `open` means
    half-open) and `trial` (SET NX EX cool-down: the one caller allowed through half-open).

    Redis errors do not fail a draft: the breaker then reads closed and records nothing (the
    cascade behaves as it did before there was a breaker), with a warning in the log.
    `state` and `reset` are for people (admin), who should see the error instead: they raise.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        failures: int | None = None,
        cooldown: int | None = None,
        prefix: str = "csbot:breaker",
    ) -> None:
        super().__init__(failures=failures, cooldown=cooldown)
        self.client = client
        self.prefix = prefix
        # Endpoints this thread last found without any breaker key (is_open → record_success).
        self._clean = threading.local()

    def _clean_ids(self) -> set[int]:
        ids: set[int] | None = getattr(self._clean, "ids", None)
        if ids is None:
            ids = self._clean.ids = set()
        return ids

    def _keys(self, endpoint_id: int) -> tuple[str, str, str, str]:
        base = f"{self.prefix}:{endpoint_id}"
        return f"{base}:failures", f"{base}:open", f"{base}:half_open", f"{base}:trial"

    def is_open(self, endpoint_id: int) -> bool:
        failures_key, open_key, half_open_key, trial_key = self._keys(endpoint_id)
        try:
            pipe = self.client.pipeline()
            pipe.exists(open_key)
            pipe.exists(half_open_key)
            pipe.exists(failures_key)
            is_open, half_open, failures = pipe.execute()
            # Whether this thread's success will have anything to forget (record_success).
            clean = self._clean_ids()
            if is_open or half_open or failures:
                clean.discard(endpoint_id)
            else:
                clean.add(endpoint_id)
            if is_open:
                return True
            if not half_open:
                return False
            # Half-open: SET NX lets exactly one worker through for the trial.
            return not self.client.set(trial_key, 1, ex=self.cooldown, nx=True)
        except redis.RedisError as exc:
            logger.warning(
                "Circuit breaker: Redis failed (%s); endpoint %s treated as closed.",
                exc,
                endpoint_id,
            )
            return False

    def record_success(self, endpoint_id: int) -> None:
        """Forget the endpoint's failures, in one round trip, or in none when this thread
        found no trace of trouble as it asked (the usual case): a failure another worker
        records meanwhile is then left to expire instead of being cleared, so a run of
        failures right after may trip the breaker one failure early."""
        clean = self._clean_ids()
        if endpoint_id in clean:
            clean.discard(endpoint_id)
            return
        try:
            self.client.delete(*self._keys(endpoint_id))
        except redis.RedisError as exc:
            logger.warning(
                "Circuit breaker: Redis failed (%s); success of endpoint %s not recorded.",
                exc,
                endpoint_id,
            )

    def record_failure(self, endpoint_id: int, kind: str) -> bool:
        self._clean_ids().discard(endpoint_id)
        try:
            return super().record_failure(endpoint_id, kind)
        except redis.RedisError as exc:
            logger.warning(
                "Circuit breaker: Redis failed (%s); failure of endpoint %s not recorded.",
                exc,
                endpoint_id,
            )
            return False

    def _count_failure(self, endpoint_id: int) -> tuple[int, bool]:
        failures_key, _, half_open_key, _ = self._keys(endpoint_id)
        # MULTI/EXEC: the count and its expiry are set together, so no worker ever leaves a
        # count that never expires. The expiry restarts with each failure: consecutive
        # failures count as long as none is a cool-down older than the next.
        pipe = self.client.pipeline()
        pipe.incr(failures_key)
        pipe.expire(failures_key, self.cooldown)
        pipe.exists(half_open_key)
        count, _, tripped = pipe.execute()
        return int(count), bool(tripped)

    def _trip(self, endpoint_id: int) -> bool:
        failures_key, open_key, half_open_key, trial_key = self._keys(endpoint_id)
        pipe = self.client.pipeline()
        # NX: of several workers tripping it at once, one opens it (and logs); an open breaker
        # keeps its original end.
        pipe.set(open_key, 1, ex=self.cooldown, nx=True)
        pipe.set(half_open_key, 1, ex=self.marker_seconds)
        pipe.delete(failures_key, trial_key)
        opened, _, _ = pipe.execute()
        return bool(opened)

    def state(self, endpoint_id: int) -> BreakerState:
        failures_key, open_key, half_open_key, _ = self._keys(endpoint_id)
        pipe = self.client.pipeline()
        pipe.pttl(open_key)
        pipe.exists(half_open_key)
        pipe.get(failures_key)
        open_ms, half_open, failures = pipe.execute()
        count = int(failures or 0)
        # PTTL: -2 when the key does not exist; -1 (no expiry) never happens, as it is always
        # set with EX, but would still mean open.
        if open_ms != -2:
            return {"state": "open", "failures": count, "seconds_left": max(open_ms, 0) / 1000}
        if half_open:
            return {"state": "half-open", "failures": count, "seconds_left": 0.0}
        return {"state": "closed", "failures": count, "seconds_left": 0.0}

    def reset(self, endpoint_id: int) -> None:
        self.client.delete(*self._keys(endpoint_id))


@dataclass
class _Entry:
    """One endpoint's keys, each an expiry time on the local clock (0: absent)."""

    failures: int = 0
    failures_until: float = 0.0
    open_until: float = 0.0
    half_open_until: float = 0.0
    trial_until: float = 0.0


class LocalCircuitBreaker(BaseCircuitBreaker):
    """The same breaker in this process's memory, for brokers that are not Redis.

    With the embedded `filesystem://` broker (`make run`) there is no Redis to share state
    through; a breaker per process still protects the worker that calls the endpoints. Each
    process has its own breaker, though: the web process (admin) does not see the worker's.
    Celery's thread pool shares it, hence the lock.
    """

    def __init__(
        self,
        *,
        failures: int | None = None,
        cooldown: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(failures=failures, cooldown=cooldown)
        self.clock = clock
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()

    def _entry(self, endpoint_id: int) -> _Entry:
        return self._entries.setdefault(endpoint_id, _Entry())

    def is_open(self, endpoint_id: int) -> bool:
        with self._lock:
            now = self.clock()
            entry = self._entry(endpoint_id)
            if entry.open_until > now:
                return True
            if entry.half_open_until <= now:
                return False
            if entry.trial_until > now:
                return True
            entry.trial_until = now + self.cooldown
            return False

    def record_success(self, endpoint_id: int) -> None:
        with self._lock:
            self._entries.pop(endpoint_id, None)

    def _count_failure(self, endpoint_id: int) -> tuple[int, bool]:
        with self._lock:
            now = self.clock()
            entry = self._entry(endpoint_id)
            entry.failures = (entry.failures if entry.failures_until > now else 0) + 1
            entry.failures_until = now + self.cooldown
            return entry.failures, entry.half_open_until > now

    def _trip(self, endpoint_id: int) -> bool:
        with self._lock:
            now = self.clock()
            entry = self._entry(endpoint_id)
            opened = entry.open_until <= now
            if opened:
                entry.open_until = now + self.cooldown
            entry.half_open_until = now + self.marker_seconds
            entry.failures = 0
            entry.failures_until = 0.0
            entry.trial_until = 0.0
            return opened

    def state(self, endpoint_id: int) -> BreakerState:
        with self._lock:
            now = self.clock()
            entry = self._entries.get(endpoint_id, _Entry())
            count = entry.failures if entry.failures_until > now else 0
            if entry.open_until > now:
                return {"state": "open", "failures": count, "seconds_left": entry.open_until - now}
            if entry.half_open_until > now:
                return {"state": "half-open", "failures": count, "seconds_left": 0.0}
            return {"state": "closed", "failures": count, "seconds_left": 0.0}

    def reset(self, endpoint_id: int) -> None:
        with self._lock:
            self._entries.pop(endpoint_id, None)


@functools.cache
def breaker() -> BaseCircuitBreaker:
    """This process's breaker (one per process, so one Redis connection pool).

    Redis broker: the shared `CircuitBreaker` on the broker's Redis (its keys are prefixed and
    tiny). Any other broker (`filesystem://`, `memory://`): there is no Redis to share through,
    so `LocalCircuitBreaker`. Tests that change the settings call `breaker.cache_clear()`.
    """
    url: str = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(
            url,
            socket_timeout=_REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), _REDIS_RETRIES),
        )
        return CircuitBreaker(client)
    return LocalCircuitBreaker()
