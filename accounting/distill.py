"""A fine-tuning run's machine time, booked as a one-off fixed cost of its policy.

drafting records what a run cost (DistillRun.cost_usd) without knowing that accounting exists;
accounting listens (accounting.signals) and keeps one FixedCost per finished run, so that
break-even (accounting.breakeven) counts what training cost in the month it was spent.
"""

from __future__ import annotations

from django.utils import timezone

from accounting.models import FixedCost
from drafting.models import DistillRun

FINISHED = (DistillRun.Status.SUCCEEDED, DistillRun.Status.FAILED)


def distill_cost_book(*, run: DistillRun) -> FixedCost | None:
    """The run's fixed cost, created or brought up to date; None while it is still training
    or when it cost nothing (no price in force). Saving the run again changes the same row."""
    if run.status not in FINISHED or run.finished_at is None or not run.cost_usd:
        return None
    cost, _created = FixedCost.objects.update_or_create(
        distill_run=run,
        defaults={
            "kind": FixedCost.Kind.ONE_OFF,
            "policy_id": run.policy_id,
            "amount_usd": run.cost_usd,
            "starts_on": timezone.localdate(run.finished_at),
            "name": f"Fine-tuning {run.adapter_name}"[:120],
        },
    )
    return cost
