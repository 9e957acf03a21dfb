"""The Celery worker's side: the same logging as web, and task ids on its log lines.

`connect_signals()` is called where the Celery app is made (csbot.celery), before a worker
starts.
"""

from __future__ import annotations

import logging.config
from typing import Any

from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun

from csbot.observability.context import log_context_clear, log_context_set, log_fields

# Tasks whose first argument is a draft id: their log lines carry it.
DRAFT_TASKS = frozenset({"drafting.tasks.draft_generate", "drafting.tasks.draft_explore"})


def _logging_from_settings(**_: Any) -> None:
    """Celery configures no logging of its own once this receiver is connected: the worker
    and beat log through settings.LOGGING, like web (JSON lines, ids, redaction)."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


def _task_publishing(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """A task sent while serving a request carries its id: the draft worker's lines for a
    message name the ingest request that stored it."""
    request_id = log_fields().get("request_id")
    if request_id and headers is not None:
        headers.setdefault("request_id", request_id)


def _task_started(
    task_id: str | None = None,
    task: Any = None,
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    name = getattr(task, "name", "")
    fields: dict[str, object] = {"task_id": task_id, "task": name}
    draft_id = (kwargs or {}).get("draft_id")
    if draft_id is None and name in DRAFT_TASKS and args:
        draft_id = args[0]
    if draft_id is not None:
        fields["draft_id"] = draft_id
    request_id = getattr(getattr(task, "request", None), "request_id", None)
    if request_id:
        fields["request_id"] = request_id
    log_context_set(**fields)


def _task_finished(**_: Any) -> None:
    log_context_clear()


def connect_signals() -> None:
    setup_logging.connect(_logging_from_settings, weak=False)
    before_task_publish.connect(_task_publishing, weak=False)
    task_prerun.connect(_task_started, weak=False)
    task_postrun.connect(_task_finished, weak=False)
