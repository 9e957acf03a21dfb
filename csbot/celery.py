from __future__ import annotations

import os

from celery import Celery

from csbot.observability.worker import connect_signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csbot.settings")

app = Celery("csbot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Worker and beat log like web (JSON lines with task and draft ids): csbot.observability.
connect_signals()
