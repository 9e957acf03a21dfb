"""RolledUpDay.stale: writes mark a day stale as they happen (accounting.signals) instead of
reads searching every action recorded since the oldest rollup (a scan that grew with the
period read). Days the old search would call stale are marked once here."""

import zoneinfo
from typing import Any

from django.conf import settings
from django.db import migrations, models
from django.db.models import Max
from django.db.models.functions import TruncDate


def mark_late_days(apps: Any, schema_editor: Any) -> None:
    RolledUpDay = apps.get_model("accounting", "RolledUpDay")
    AgentAction = apps.get_model("drafting", "AgentAction")
    rolled = dict(RolledUpDay.objects.values_list("day", "rolled_at"))
    if not rolled:
        return
    late = (
        AgentAction.objects.filter(acted_at__gt=min(rolled.values()))
        .annotate(
            draft_day=TruncDate("draft__created_at", tzinfo=zoneinfo.ZoneInfo(settings.TIME_ZONE))
        )
        .values("draft_day")
        .annotate(latest=Max("acted_at"))
        .order_by()
    )
    stale = [
        row["draft_day"]
        for row in late
        if row["draft_day"] in rolled and row["latest"] > rolled[row["draft_day"]]
    ]
    RolledUpDay.objects.filter(day__in=stale).update(stale=True)


class Migration(migrations.Migration):
    dependencies = [
        ("accounting", "0004_daily_totals_and_intents"),
        ("drafting", "0012_learned_classifiers_and_intents"),
    ]

    operations = [
        migrations.AddField(
            model_name="rolledupday",
            name="stale",
            field=models.BooleanField(default=False),
        ),
        migrations.AlterField(
            model_name="rolledupday",
            name="rolled_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(mark_late_days, migrations.RunPython.noop),
    ]
