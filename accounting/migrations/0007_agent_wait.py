"""The agent's wait in the fact rollup (issue 18): DailyFact and DailyTotal sum the answered
drafts an agent opened before they were ready and the seconds waited for them. Days rolled
up before hold no wait: they are marked stale, so the next rollup sums them again (until
then they are read from the raw rows, which have it)."""

from decimal import Decimal
from typing import Any

from django.db import migrations, models


def mark_rolled_days_stale(apps: Any, schema_editor: Any) -> None:
    apps.get_model("accounting", "RolledUpDay").objects.update(stale=True)


class Migration(migrations.Migration):
    dependencies = [("accounting", "0006_restale_days_with_outliers")]

    operations = [
        migrations.AddField(
            model_name="dailyfact",
            name="waited",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyfact",
            name="wait_seconds",
            field=models.DecimalField(decimal_places=3, default=Decimal("0"), max_digits=20),
        ),
        migrations.AddField(
            model_name="dailytotal",
            name="waited",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailytotal",
            name="wait_seconds",
            field=models.DecimalField(decimal_places=3, default=Decimal("0"), max_digits=20),
        ),
        migrations.RunPython(mark_rolled_days_stale, migrations.RunPython.noop),
    ]
