"""Readiness from the command line, for containers with no HTTP port (worker, beat).

    manage.py healthcheck                 # database + broker; exit 0 when both answer
    manage.py healthcheck --endpoints     # also the model endpoints, as /readyz does
    manage.py healthcheck --worker        # also this host's Celery worker answers a ping

Prints the JSON report /readyz would serve; exit status 1 when not ready.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from kombu.exceptions import OperationalError as KombuOperationalError

from csbot.observability.health import readiness


class Command(BaseCommand):
    help = "Check the database, the broker (and optionally endpoints and the local worker)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--endpoints", action="store_true", help="Also list each enabled endpoint's models."
        )
        parser.add_argument(
            "--worker",
            nargs="?",
            const=f"celery@{socket.gethostname()}",
            default=None,
            metavar="NODE",
            help="Also ping a Celery worker (default: celery@<this host>, a worker container's "
            "own name).",
        )
        parser.add_argument("--timeout", type=float, default=3.0, help="Worker ping timeout (s).")

    def handle(self, *args: Any, **options: Any) -> None:
        ready, report = readiness(endpoints=options["endpoints"])
        node = options["worker"]
        if node and ready:  # a ping needs the broker, already found down otherwise
            from csbot.celery import app

            try:
                replies = app.control.ping(destination=[node], timeout=options["timeout"])
            except (KombuOperationalError, OSError):
                replies = []
            answered = any(node in reply for reply in replies or [])
            report["checks"]["worker"] = {"status": "ok" if answered else "fail", "node": node}
            ready = ready and answered
            if not answered:
                report["status"] = "fail"
        self.stdout.write(json.dumps(report, sort_keys=True))
        if not ready:
            raise CommandError("not ready", returncode=1)
