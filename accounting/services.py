"""Accounting write flows: the daily fact rollup."""

from __future__ import annotations

import logging
from datetime import date, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounting.facts import (
    FACT_FIELDS,
    TOTAL_FIELDS,
    drafts_between,
    raw_facts,
    without_agents,
)
from accounting.models import DailyFact, DailyTotal, RolledUpDay

logger = logging.getLogger(__name__)


def settled_before() -> date:
    """The first day whose drafts may still change: a day is rolled up only once every draft
    of it is finished (DRAFT_MAX_AGE_SECONDS after midnight, plus an hour's margin)."""
    settled = timezone.now() - timedelta(seconds=settings.DRAFT_MAX_AGE_SECONDS + 3600)
    return timezone.localtime(settled).date()


def facts_rollup(*, day: date) -> int:
    """Replace the day's DailyFact (and DailyTotal) rows by a fresh sum of its raw rows;
    returns the DailyFact row count.
    Refuses a day that has not settled (see settled_before)."""
    if day >= settled_before():
        raise ValueError(f"{day} has not settled yet; it is read from the raw rows.")
    # Committed before the lock below, so that writers racing this first rollup find a row
    # to mark (RolledUpDay explains the ordering).
    RolledUpDay.objects.get_or_create(day=day, defaults={"rolled_at": None, "stale": True})
    with transaction.atomic():
        RolledUpDay.objects.select_for_update().get(day=day)
        now = timezone.now()
        facts = raw_facts(day, day + timedelta(days=1))
        DailyFact.objects.filter(day=day).delete()
        DailyTotal.objects.filter(day=day).delete()
        DailyFact.objects.bulk_create(
            DailyFact(**{name: getattr(f, name) for name in FACT_FIELDS}) for f in facts
        )
        DailyTotal.objects.bulk_create(
            DailyTotal(**{name: getattr(f, name) for name in TOTAL_FIELDS})
            for f in without_agents(facts)
        )
        RolledUpDay.objects.filter(day=day).update(rolled_at=now, stale=False)
    return len(facts)


def facts_rollup_due(*, limit: int = 62) -> list[date]:
    """Roll up settled days never rolled up (oldest first, at most `limit` per call) and days
    a later write made stale. Returns the days rolled up."""
    first = drafts_between(date(1970, 1, 2), settled_before()).order_by("created_at").first()
    if first is None:
        return []
    start = timezone.localtime(first.created_at).date()
    end = settled_before()
    rows = RolledUpDay.objects.filter(day__gte=start, day__lt=end)
    fresh = set(rows.filter(stale=False, rolled_at__isnull=False).values_list("day", flat=True))
    due = sorted(rows.exclude(day__in=fresh).values_list("day", flat=True))
    day = start
    while day < end and len(due) < limit:
        if day not in fresh and day not in due:
            due.append(day)
        day += timedelta(days=1)
    for day in due[:limit]:
        count = facts_rollup(day=day)
        logger.info("accounting: rolled up %s (%s fact rows)", day, count)
    return due[:limit]
