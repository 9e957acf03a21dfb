"""Celery tasks (doorbells): the work is in accounting.services and accounting.reports.
Scheduled by django-celery-beat; the schedules are rows, editable in the admin."""

from __future__ import annotations

from celery import shared_task

from accounting import reports, services, withholding


@shared_task(name="accounting.tasks.facts_rollup", ignore_result=True)
def facts_rollup_task() -> int:
    return len(services.facts_rollup_due())


@shared_task(name="accounting.tasks.monthly_reports", ignore_result=True)
def monthly_reports_task() -> int:
    return len(reports.reports_monthly())


@shared_task(name="accounting.tasks.action_values_refresh", ignore_result=True)
def action_values_refresh_task() -> int:
    """Hand each team's measured action values to drafting (withholding decides with them)."""
    return len(withholding.action_values_refresh())
