"""The ids a log line carries, whichever logger writes it.

A context variable (not a thread-local) so that it follows the request or task: each
gunicorn/Celery thread has its own, and it is reset when the request or task ends.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

_EMPTY: Mapping[str, object] = MappingProxyType({})
_fields: ContextVar[Mapping[str, object]] = ContextVar("csbot_log_context", default=_EMPTY)


def log_fields() -> Mapping[str, object]:
    """The ids in force here (read by the logging filter)."""
    return _fields.get()


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add `fields` to every log line written inside the block; the previous ones come back
    after it (also anything `log_bind` added inside)."""
    token = _fields.set(MappingProxyType({**_fields.get(), **fields}))
    try:
        yield
    finally:
        _fields.reset(token)


def log_bind(**fields: object) -> None:
    """Add `fields` until the enclosing context ends (e.g. the message id, once the draft row
    is read). Outside any context (a service called from a shell, a test, a benchmark)
    nothing is bound: nothing would ever clear it."""
    current = _fields.get()
    if current:
        _fields.set(MappingProxyType({**current, **fields}))


def log_context_set(**fields: object) -> None:
    """Replace the ids (Celery's task_prerun, where no `with` block spans the task)."""
    _fields.set(MappingProxyType(fields))


def log_context_clear() -> None:
    _fields.set(_EMPTY)
