"""The per-endpoint circuit breaker, against the real Redis (and its in-process fallback).

Redis tests use db 9, flushed around each test: db 0 is the Celery broker of the other tests.
The cool-down is 1 s, and waits poll the breaker's state, so no test sleeps longer than the
TTL it waits for. The in-process breaker runs the same tests on a fake clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from drafting.engine.breaker import (
    BaseCircuitBreaker,
    CircuitBreaker,
    LocalCircuitBreaker,
    breaker,
)

REDIS_URL = "redis://127.0.0.1:6379/9"
COOLDOWN = 1
THRESHOLD = 3
ENDPOINT = 7


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """Makes breakers that share one state (two "workers"), and lets time pass for them."""

    make: Callable[[], BaseCircuitBreaker]
    wait_until: Callable[[Callable[[], bool]], None]


def _poll(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the breaker's TTL did not run out in time"
        time.sleep(0.02)


@pytest.fixture(params=["redis", "local"])
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "redis":
        client: redis.Redis = request.getfixturevalue("redis_client")
        return Harness(
            make=lambda: CircuitBreaker(client, failures=THRESHOLD, cooldown=COOLDOWN),
            wait_until=_poll,
        )
    clock = FakeClock()
    local = LocalCircuitBreaker(failures=THRESHOLD, cooldown=COOLDOWN, clock=clock)

    def advance_until(condition: Callable[[], bool]) -> None:
        for _ in range(1000):
            if condition():
                return
            clock.now += 0.02
        raise AssertionError("the condition never held")

    # One process, one breaker: "another worker" is the same object.
    return Harness(make=lambda: local, wait_until=advance_until)


def _fail(b: BaseCircuitBreaker, times: int, kind: str = "unavailable") -> list[bool]:
    return [b.record_failure(ENDPOINT, kind) for _ in range(times)]


def _wait_cooldown(h: Harness, b: BaseCircuitBreaker) -> None:
    h.wait_until(lambda: b.state(ENDPOINT)["state"] != "open")


def test_closed_at_first(harness: Harness) -> None:
    b = harness.make()
    assert not b.is_open(ENDPOINT)
    assert b.state(ENDPOINT) == {"state": "closed", "failures": 0, "seconds_left": 0.0}


def test_opens_after_threshold_counted_failures(harness: Harness) -> None:
    b = harness.make()
    # Every unhealthy kind counts toward the same threshold.
    assert not b.record_failure(ENDPOINT, "rate_limited")
    assert not b.record_failure(ENDPOINT, "timeout")
    assert not b.is_open(ENDPOINT)
    assert b.state(ENDPOINT)["failures"] == 2
    assert b.record_failure(ENDPOINT, "unavailable")  # the third opens it
    assert b.is_open(ENDPOINT)
    state = b.state(ENDPOINT)
    assert state["state"] == "open"
    assert 0 < state["seconds_left"] <= COOLDOWN
    # Other endpoints are not affected.
    assert not b.is_open(ENDPOINT + 1)


def test_context_too_long_and_empty_are_not_counted(harness: Harness) -> None:
    b = harness.make()
    for kind in ("context_too_long", "empty", "context_too_long", "empty", "whatever"):
        assert not b.record_failure(ENDPOINT, kind)
    assert b.state(ENDPOINT) == {"state": "closed", "failures": 0, "seconds_left": 0.0}
    _fail(b, THRESHOLD - 1)
    b.record_failure(ENDPOINT, "context_too_long")
    assert not b.is_open(ENDPOINT)
    assert b.state(ENDPOINT)["failures"] == THRESHOLD - 1


def test_permanent_error_opens_at_once_with_a_warning(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    b = harness.make()
    with caplog.at_level(logging.WARNING, logger="drafting.engine.breaker"):
        assert b.record_failure(ENDPOINT, "permanent")
    assert b.is_open(ENDPOINT)
    assert b.state(ENDPOINT)["state"] == "open"
    assert any(
        r.levelno == logging.WARNING and "configuration" in r.getMessage() for r in caplog.records
    )


def test_success_resets_the_count(harness: Harness) -> None:
    b = harness.make()
    _fail(b, THRESHOLD - 1)
    b.record_success(ENDPOINT)
    assert b.state(ENDPOINT)["failures"] == 0
    _fail(b, THRESHOLD - 1)
    assert not b.is_open(ENDPOINT)


def test_old_failures_age_out(harness: Harness) -> None:
    b = harness.make()
    _fail(b, THRESHOLD - 1)
    harness.wait_until(lambda: b.state(ENDPOINT)["failures"] == 0)
    assert not b.record_failure(ENDPOINT, "timeout")
    assert not b.is_open(ENDPOINT)
    assert b.state(ENDPOINT)["failures"] == 1


def test_stays_open_during_the_cooldown_and_is_not_extended(harness: Harness) -> None:
    b = harness.make()
    _fail(b, THRESHOLD)
    first_left = b.state(ENDPOINT)["seconds_left"]
    # Late failures of calls made before it opened neither extend nor re-open it.
    assert _fail(b, 2 * THRESHOLD) == [False] * (2 * THRESHOLD)
    assert not b.record_failure(ENDPOINT, "permanent")
    state = b.state(ENDPOINT)
    assert state["state"] == "open"
    assert state["seconds_left"] <= first_left
    assert b.is_open(ENDPOINT)
    assert b.is_open(ENDPOINT)


def test_half_open_success_closes_it(harness: Harness) -> None:
    b = harness.make()
    _fail(b, THRESHOLD)
    _wait_cooldown(harness, b)
    assert b.state(ENDPOINT) == {"state": "half-open", "failures": 0, "seconds_left": 0.0}
    assert not b.is_open(ENDPOINT)  # this caller makes the trial call
    b.record_success(ENDPOINT)
    assert b.state(ENDPOINT) == {"state": "closed", "failures": 0, "seconds_left": 0.0}
    assert not b.is_open(ENDPOINT)
    # Closed again for real: it takes a full threshold of failures to open it.
    _fail(b, THRESHOLD - 1)
    assert not b.is_open(ENDPOINT)


@pytest.mark.parametrize("kind", ["timeout", "permanent"])
def test_half_open_failure_reopens_it(harness: Harness, kind: str) -> None:
    b = harness.make()
    _fail(b, THRESHOLD)
    _wait_cooldown(harness, b)
    assert not b.is_open(ENDPOINT)
    assert b.record_failure(ENDPOINT, kind)  # one failure is enough
    assert b.is_open(ENDPOINT)
    state = b.state(ENDPOINT)
    assert state["state"] == "open"
    assert 0 < state["seconds_left"] <= COOLDOWN


def test_half_open_lets_one_trial_through(harness: Harness) -> None:
    worker_a, worker_b = harness.make(), harness.make()
    _fail(worker_a, THRESHOLD)
    _wait_cooldown(harness, worker_a)
    assert not worker_a.is_open(ENDPOINT)  # A makes the trial call…
    assert worker_b.is_open(ENDPOINT)  # …and B keeps skipping the tier meanwhile
    assert worker_a.is_open(ENDPOINT)
    worker_a.record_success(ENDPOINT)
    assert not worker_b.is_open(ENDPOINT)


def test_an_undecided_trial_lets_another_through_later(harness: Harness) -> None:
    b = harness.make()
    _fail(b, THRESHOLD)
    _wait_cooldown(harness, b)
    assert not b.is_open(ENDPOINT)  # the trial's worker dies without reporting
    assert b.is_open(ENDPOINT)
    harness.wait_until(lambda: not b.is_open(ENDPOINT))  # the next trial, a cool-down later
    assert b.state(ENDPOINT)["state"] == "half-open"


def test_reset_closes_it(harness: Harness) -> None:
    b = harness.make()
    _fail(b, THRESHOLD)
    b.reset(ENDPOINT)
    assert not b.is_open(ENDPOINT)
    assert b.state(ENDPOINT) == {"state": "closed", "failures": 0, "seconds_left": 0.0}


def test_two_workers_share_the_state(redis_client: redis.Redis) -> None:
    # Two clients, as two worker processes would have.
    other_client = redis.Redis.from_url(REDIS_URL)
    worker_a = CircuitBreaker(redis_client, failures=THRESHOLD, cooldown=COOLDOWN)
    worker_b = CircuitBreaker(other_client, failures=THRESHOLD, cooldown=COOLDOWN)
    try:
        worker_a.record_failure(ENDPOINT, "timeout")
        worker_b.record_failure(ENDPOINT, "rate_limited")
        assert worker_a.state(ENDPOINT)["failures"] == 2
        assert worker_a.record_failure(ENDPOINT, "unavailable")
        assert worker_b.is_open(ENDPOINT)
        assert worker_b.state(ENDPOINT)["state"] == "open"
        _poll(lambda: worker_b.state(ENDPOINT)["state"] != "open")
        assert not worker_b.is_open(ENDPOINT)  # B's trial
        assert worker_a.is_open(ENDPOINT)
        worker_b.record_success(ENDPOINT)
        assert not worker_a.is_open(ENDPOINT)
        assert worker_a.state(ENDPOINT)["state"] == "closed"
    finally:
        other_client.close()


def test_keys_expire(redis_client: redis.Redis) -> None:
    """No key is left without an expiry, so deleted endpoints leave nothing behind for good."""
    b = CircuitBreaker(redis_client, failures=THRESHOLD, cooldown=COOLDOWN)
    b.record_failure(ENDPOINT, "timeout")
    b.record_failure(ENDPOINT + 1, "permanent")
    b.is_open(ENDPOINT + 2)
    keys = redis_client.keys("csbot:breaker:*")
    names = {k.decode() if isinstance(k, bytes) else k for k in keys}
    assert names == {
        f"csbot:breaker:{ENDPOINT}:failures",
        f"csbot:breaker:{ENDPOINT + 1}:open",
        f"csbot:breaker:{ENDPOINT + 1}:half_open",
    }
    assert all(redis_client.ttl(k) > 0 for k in keys)


def test_redis_down_fails_open_and_fast(settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A Redis outage must not fail drafts, nor hold them up: the breaker reads closed and
    records nothing, at once."""
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/9"  # nothing listens there
    settings.BREAKER_FAILURES = 1
    breaker.cache_clear()
    try:
        b = breaker()
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="drafting.engine.breaker"):
            assert not b.record_failure(ENDPOINT, "timeout")
            assert not b.is_open(ENDPOINT)
            b.record_success(ENDPOINT)
        assert time.monotonic() - started < 1
        assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3
    finally:
        breaker.cache_clear()


def test_settings_and_factory(settings: Any, redis_client: redis.Redis) -> None:
    settings.BREAKER_FAILURES = 2
    settings.BREAKER_COOLDOWN_SECONDS = 1
    settings.CELERY_BROKER_URL = REDIS_URL
    breaker.cache_clear()
    try:
        b = breaker()
        assert isinstance(b, CircuitBreaker)
        assert breaker() is b  # one per process
        assert (b.threshold, b.cooldown) == (2, 1)
        b.record_failure(ENDPOINT, "timeout")
        assert b.record_failure(ENDPOINT, "timeout")
        assert redis_client.exists(f"csbot:breaker:{ENDPOINT}:open")  # on the broker's Redis

        settings.CELERY_BROKER_URL = "filesystem://"
        breaker.cache_clear()
        local = breaker()
        assert isinstance(local, LocalCircuitBreaker)
        assert (local.threshold, local.cooldown) == (2, 1)
    finally:
        breaker.cache_clear()


def test_defaults_without_settings(settings: Any, redis_client: redis.Redis) -> None:
    for name in ("BREAKER_FAILURES", "BREAKER_COOLDOWN_SECONDS"):
        if hasattr(settings, name):
            delattr(settings, name)
    b = CircuitBreaker(redis_client)
    assert (b.threshold, b.cooldown) == (3, 30)


@pytest.mark.parametrize(("failures", "cooldown"), [(0, 30), (3, 0)])
def test_invalid_configuration(failures: int, cooldown: int) -> None:
    with pytest.raises(ValueError, match="breaker"):
        LocalCircuitBreaker(failures=failures, cooldown=cooldown)
