"""Rolled-up days go stale when a row they summed changes (see RolledUpDay).

Accounting listens rather than being called: the support domain and drafting record actions
and verdicts without knowing that accounting exists (dependencies run one way). The mark is
one indexed UPDATE inside the writer's transaction; reads then take the day from the raw rows
until the next rollup (`facts_rollup_due`) sums it again."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models.functions import TruncDate
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounting.distill import distill_cost_book
from accounting.facts import local_tz
from accounting.models import RolledUpDay
from drafting.models import AgentAction, DistillRun, Draft, MessageIntent
from drafting.signals import attempts_added, intents_changed


def mark_stale_for_drafts(draft_ids: Iterable[int]) -> int:
    """Marks the rolled-up days of these drafts stale; returns how many were marked."""
    ids = list(draft_ids)
    if not ids:
        return 0
    day_of_draft = (
        Draft.objects.filter(pk__in=ids)
        .annotate(day=TruncDate("created_at", tzinfo=local_tz()))
        .values("day")
    )
    # Updates even rows already stale: the UPDATE's row lock is what orders this write
    # against a rollup of the same day (see RolledUpDay).
    return RolledUpDay.objects.filter(day__in=day_of_draft).update(stale=True)


def mark_stale_for_messages(message_ids: Iterable[int]) -> int:
    ids = list(message_ids)
    if not ids:
        return 0
    return mark_stale_for_drafts(
        Draft.objects.filter(message_id__in=ids).values_list("pk", flat=True)
    )


@receiver([post_save, post_delete], sender=AgentAction, dispatch_uid="accounting_action_stale")
def _action_changed(sender: type[AgentAction], instance: AgentAction, **kwargs: Any) -> None:
    if instance.draft_id is not None:
        mark_stale_for_drafts([instance.draft_id])


@receiver([post_save, post_delete], sender=MessageIntent, dispatch_uid="accounting_verdict_stale")
def _verdict_changed(sender: type[MessageIntent], instance: MessageIntent, **kwargs: Any) -> None:
    mark_stale_for_messages([instance.message_id])


@receiver(intents_changed, dispatch_uid="accounting_verdicts_stale")
def _verdicts_changed(sender: object, message_ids: Iterable[int], **kwargs: Any) -> None:
    mark_stale_for_messages(message_ids)


@receiver(attempts_added, dispatch_uid="accounting_attempts_stale")
def _attempts_added(sender: object, draft_ids: Iterable[int], **kwargs: Any) -> None:
    mark_stale_for_drafts(draft_ids)


@receiver(post_save, sender=DistillRun, dispatch_uid="accounting_distill_cost")
def _distill_run_saved(sender: type[DistillRun], instance: DistillRun, **kwargs: Any) -> None:
    distill_cost_book(run=instance)
