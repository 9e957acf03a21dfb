"""The accounting schedules as django-celery-beat rows (editable in the admin): the monthly
ENCS report on the 1st at 06:00 (project time zone) and the fact rollup every hour."""

from django.conf import settings
from django.db import migrations

MONTHLY = "ENCS monthly reports"
ROLLUP = "ENCS fact rollup"


def create(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    monthly, _ = CrontabSchedule.objects.get_or_create(
        minute="0",
        hour="6",
        day_of_week="*",
        day_of_month="1",
        month_of_year="*",
        timezone=settings.TIME_ZONE,
    )
    hourly, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    PeriodicTask.objects.get_or_create(
        name=MONTHLY,
        defaults={
            "task": "accounting.tasks.monthly_reports",
            "crontab": monthly,
            "description": "Previous month's ENCS report per team and for all teams, "
            "stored and mailed to managers.",
        },
    )
    PeriodicTask.objects.get_or_create(
        name=ROLLUP,
        defaults={
            "task": "accounting.tasks.facts_rollup",
            "interval": hourly,
            "description": "Sum settled days' drafts into DailyFact for fast reports.",
        },
    )


def remove(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[MONTHLY, ROLLUP]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounting", "0002_monthly_report"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
