"""Container health checks for the csbot image: `python deploy/healthcheck.py web|worker|beat`.

Exit 0 when healthy, 1 (with the reason on stderr) when not; Docker and compose.yaml run it.

- web: GET /healthz on this container's gunicorn (liveness: the process answers; it asks no
  dependency, so a database outage does not mark every web container unhealthy). Sent with a
  Host header from DJANGO_ALLOWED_HOSTS, since Django refuses any other host.
- worker: a Celery ping to this container's own worker node, through the broker.
- beat: the draft sweeper's periodic task ran recently, as recorded by beat's database
  scheduler (django-celery-beat writes `last_run_at` back every few minutes). A beat process
  that is alive but no longer scheduling fails this check.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from typing import Any

WEB_URL = "http://127.0.0.1:8000/healthz"
SWEEP_TASK = "sweep-stuck-drafts"
# django-celery-beat saves last_run_at every 3 minutes; the sweep runs every 30 s by default.
BEAT_SYNC_SECONDS = 180


def allowed_host(value: str) -> str:
    """The first concrete host of DJANGO_ALLOWED_HOSTS ("*" and ".example.com" patterns are
    turned into something Django accepts for them), else localhost."""
    for raw in value.split(","):
        host = raw.strip()
        if not host:
            continue
        if host == "*":
            return "localhost"
        return "healthcheck" + host if host.startswith(".") else host
    return "localhost"


def check_web(url: str = WEB_URL) -> str | None:
    host = allowed_host(os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost"))
    # The URL is http:// on this container (the constant, or a test's live server).
    request = urllib.request.Request(url, headers={"Host": host})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=4) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:
        return f"{url}: {error}"
    return None if status == 200 else f"{url} answered {status}"


def check_worker() -> str | None:
    from csbot.celery import app

    node = f"celery@{socket.gethostname()}"
    replies = app.control.ping(destination=[node], timeout=5.0) or []
    if any(node in reply for reply in replies):
        return None
    return f"{node} did not answer a ping"


def check_beat() -> str | None:
    import django

    django.setup()
    return beat_problem()


def beat_problem() -> str | None:
    """None when beat's database scheduler recorded a recent run of the draft sweeper."""
    from django.conf import settings
    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    entry: dict[str, Any] = settings.CELERY_BEAT_SCHEDULE[SWEEP_TASK]
    interval = float(entry["schedule"])
    window = timedelta(seconds=BEAT_SYNC_SECONDS + 3 * interval + 60)
    recent = PeriodicTask.objects.filter(
        name=SWEEP_TASK, enabled=True, last_run_at__gte=timezone.now() - window
    ).exists()
    return None if recent else f"beat has not run {SWEEP_TASK} in the last {window}"


CHECKS: dict[str, Callable[[], str | None]] = {
    "web": check_web,
    "worker": check_worker,
    "beat": check_beat,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in CHECKS:
        sys.stderr.write(f"usage: {argv[0]} {'|'.join(CHECKS)}\n")
        return 2
    problem = CHECKS[argv[1]]()
    if problem:
        sys.stderr.write(f"unhealthy: {problem}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
