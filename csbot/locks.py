"""PostgreSQL advisory locks: "one process at a time" for work that spans a slow call.

A row lock would hold a transaction open across the call (a model's answer, a training run)
and block every writer of that row meanwhile; an advisory lock blocks only those asking for
the same lock, and PostgreSQL releases it when the holder's connection dies.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

_INT64 = 1 << 64


def _key(name: str, key: int) -> int:
    # One bigint: the name's crc32 in the high half, the key's low 32 bits in the low half
    # (keys 2**32 apart share a lock: harmless, the later one only waits its turn or skips).
    value = (zlib.crc32(name.encode()) << 32) | (key & 0xFFFFFFFF)
    return value - _INT64 if value >= _INT64 // 2 else value


@contextmanager
def advisory_lock(name: str, key: int = 0) -> Iterator[bool]:
    """True when this process took the session-level advisory lock (`name`, `key`) without
    waiting, False when another holds it; released when the block ends."""
    lock = _key(name, key)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [lock])
        held = bool(cursor.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [lock])
