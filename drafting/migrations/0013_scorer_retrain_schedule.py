"""The learned cascade scorer's nightly retrain as a django-celery-beat row (editable in the
admin): every active policy with new agent actions, at 03:30 (project time zone)."""

from django.conf import settings
from django.db import migrations

NAME = "Cascade scorer retrain"


def create(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    nightly, _ = CrontabSchedule.objects.get_or_create(
        minute="30",
        hour="3",
        day_of_week="*",
        day_of_month="*",
        month_of_year="*",
        timezone=settings.TIME_ZONE,
    )
    PeriodicTask.objects.get_or_create(
        name=NAME,
        defaults={
            "task": "drafting.tasks.scorers_retrain",
            "crontab": nightly,
            "description": "Retrain each active policy's learned draft scorer from its agents' "
            "use/edit/ignore actions; a version goes into force only with enough labels and "
            "a useful out-of-fold AUC.",
        },
    )


def remove(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("drafting", "0012_learned_classifiers_and_intents"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
