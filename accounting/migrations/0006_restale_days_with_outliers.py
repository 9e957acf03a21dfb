"""Handle times above ACTION_MAX_HANDLE_SECONDS are outliers now, left out of ENCS (facts kind
`outlier`). Days rolled up before counted them as savings or losses: mark those days stale so
the next rollup recomputes them."""

import zoneinfo
from typing import Any

from django.conf import settings
from django.db import migrations
from django.db.models.functions import TruncDate


def mark_days_with_outliers(apps: Any, schema_editor: Any) -> None:
    RolledUpDay = apps.get_model("accounting", "RolledUpDay")
    AgentAction = apps.get_model("drafting", "AgentAction")
    days = (
        AgentAction.objects.filter(
            handle_seconds__gt=settings.ACTION_MAX_HANDLE_SECONDS, draft__isnull=False
        )
        .annotate(
            draft_day=TruncDate("draft__created_at", tzinfo=zoneinfo.ZoneInfo(settings.TIME_ZONE))
        )
        .values_list("draft_day", flat=True)
        .distinct()
    )
    RolledUpDay.objects.filter(day__in=list(days)).update(stale=True)


class Migration(migrations.Migration):
    dependencies = [
        ("accounting", "0005_rollup_stale_flag"),
        ("drafting", "0015_action_handle_seconds_wider"),
    ]

    operations = [migrations.RunPython(mark_days_with_outliers, migrations.RunPython.noop)]
