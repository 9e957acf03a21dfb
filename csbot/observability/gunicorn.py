"""gunicorn settings for metrics shared by all its workers:

    gunicorn -c python:csbot.observability.gunicorn csbot.wsgi:application --bind 0.0.0.0:8000

gunicorn forks several worker processes and a scrape reaches one of them. With
PROMETHEUS_MULTIPROC_DIR set (here, before any worker starts, unless the environment already
says where) each worker writes its HTTP request metrics to files there and /metrics, served by
any of them, adds them all up. The folder is emptied when the master starts: counters begin at
zero with the server, as Prometheus expects of a restarted target. Put it on a tmpfs (it is
written on every request) and give each gunicorn master its own.

Workers are threaded (`gthread`, GUNICORN_THREADS threads each, 8 by default): the console's
draft stream (server-sent events, csbot/console/streaming.py) holds a request open for as long
as a draft is written, up to DRAFT_DEADLINE_SECONDS, which would take a whole sync worker.
Do not add `--max-requests` to them: a gthread worker recycled that way resets the connections
it has already accepted (gunicorn issue 3038).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

multiproc_dir = Path(
    os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR", str(Path(tempfile.gettempdir()) / "csbot-prometheus")
    )
)


def _threads() -> int:
    raw = os.environ.get("GUNICORN_THREADS", "8")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"GUNICORN_THREADS must be a whole number ≥ 1, not {raw!r}")
    return int(raw)


worker_class = "gthread"
threads = _threads()


def on_starting(server: Any) -> None:
    shutil.rmtree(multiproc_dir, ignore_errors=True)
    multiproc_dir.mkdir(parents=True, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    # A dead worker's counts stay in the totals; only its live gauges are dropped.
    multiprocess.mark_process_dead(worker.pid)
