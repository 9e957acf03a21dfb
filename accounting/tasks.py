"""Celery tasks (doorbells): the work is in accounting.services and accounting.reports.
Scheduled by django-celery-beat; the schedules are rows, editable in the admin."""

from __future__ import annotations

from celery import shared_task

from accounting import reports, services


@shared_task(name="accounting.tasks.facts_rollup", ignore_result=True)
def facts_rollup_task() -> int:
    return len(services.facts_rollup_due())


@shared_task(name="accounting.tasks.monthly_reports", ignore_result=True)
def monthly_reports_task() -> int:
    return len(reports.reports_monthly())
