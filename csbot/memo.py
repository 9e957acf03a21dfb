"""Rows read on every message or draft that change rarely, kept briefly in each process.

A team's active policy (every ingested message), a policy's tiers and their endpoints, the
endpoints' prices and the active scorer (every draft) are edited by an admin now and then but
read thousands of times a minute. A `Memo` keeps each answer for a few seconds: an edit takes
effect in every process within that time, and at once in the process that made it (the memo
forgets everything when one of the models it depends on is saved or deleted through the ORM,
and again after that transaction commits, so a thread that read the old row meanwhile does not
keep it). A bulk `.update()` sends no signal: it too is seen within the memo's seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from django.db import models, transaction
from django.db.models.signals import post_delete, post_save

# How long every memo of csbot keeps an answer (the docs promise it: configuration.md).
SECONDS = 5.0

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class Memo(Generic[Key, Value]):
    def __init__(
        self,
        *,
        seconds: float = SECONDS,
        depends_on: tuple[type[models.Model], ...] = (),
        max_size: int = 1024,
    ) -> None:
        self.seconds = seconds
        self.max_size = max_size
        self._values: dict[Key, tuple[float, Value]] = {}
        self._lock = threading.Lock()
        for model in depends_on:
            uid = f"memo-{id(self)}-{model._meta.label}"
            post_save.connect(self._changed, sender=model, dispatch_uid=uid, weak=False)
            post_delete.connect(self._changed, sender=model, dispatch_uid=uid, weak=False)

    def get(self, key: Key, load: Callable[[], Value]) -> Value:
        """The remembered value of `key`, or `load()`'s (then remembered) if older than the
        memo's seconds. Values are shared between threads: read them, never change them."""
        now = time.monotonic()
        with self._lock:
            found = self._values.get(key)
        if found is not None and found[0] > now:
            return found[1]
        value = load()
        with self._lock:
            if len(self._values) >= self.max_size:
                self._values.clear()
            self._values[key] = (now + self.seconds, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def _changed(self, **kwargs: Any) -> None:
        self.clear()
        transaction.on_commit(self.clear)
