"""Celery tasks: doorbells only. Ids in, the services do the work from the database row."""

from __future__ import annotations

from celery import shared_task

from drafting import services


@shared_task(name="drafting.tasks.draft_generate", ignore_result=True)
def draft_generate_task(draft_id: int) -> None:
    services.draft_generate(draft_id=draft_id)


@shared_task(name="drafting.tasks.drafts_sweep", ignore_result=True)
def drafts_sweep_task() -> dict[str, int]:
    result = services.drafts_sweep()
    return {"requeued": result.requeued, "reclaimed": result.reclaimed, "expired": result.expired}


@shared_task(name="drafting.tasks.reply_remember", ignore_result=True)
def reply_remember_task(action_id: int) -> None:
    services.reply_remember(action_id=action_id)
