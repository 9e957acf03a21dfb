"""Post a stream of demo customer messages through the real HTTP API."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import httpx
from django.core.management.base import BaseCommand, CommandError, CommandParser

from csbot import services
from csbot.demo import demo_conversations
from csbot.models import Channel


class Command(BaseCommand):
    help = "Post demo customer messages to the ingest API (a fresh channel token is created)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000", help="Where csbot's web server runs."
        )
        parser.add_argument("--team", default="Demo Support")
        parser.add_argument("--channel", default="web-chat")
        parser.add_argument("--count", type=int, default=10, help="Messages to post.")
        parser.add_argument(
            "--interval", type=float, default=3.0, help="Mean seconds between messages."
        )
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        channel = Channel.objects.filter(
            team__name=options["team"], name=options["channel"]
        ).first()
        if channel is None:
            raise CommandError(
                f"No channel {options['channel']!r} in team {options['team']!r}: run seed_demo."
            )
        _, key = services.api_token_create(channel=channel, name=f"simulate-{uuid.uuid4().hex[:6]}")
        rng = random.Random(options["seed"])
        catalogue = demo_conversations()
        open_threads: list[tuple[str, str, list[str]]] = []
        with httpx.Client(
            base_url=options["url"], headers={"Authorization": f"Token {key}"}, timeout=10
        ) as client:
            for number in range(1, options["count"] + 1):
                if open_threads and rng.random() < 0.3:
                    external_id, customer, remaining = open_threads.pop(
                        rng.randrange(len(open_threads))
                    )
                    text = remaining.pop(0)
                else:
                    pick = rng.choice(catalogue)
                    external_id, customer = f"sim-{uuid.uuid4().hex[:10]}", pick["customer"]
                    text, remaining = pick["messages"][0], list(pick["messages"][1:])
                if remaining:
                    open_threads.append((external_id, customer, remaining))
                response = client.post(
                    "/api/v1/messages",
                    json={
                        "conversation_external_id": external_id,
                        "channel_message_id": uuid.uuid4().hex,
                        "text": text,
                        "customer_ref": customer,
                    },
                )
                if response.status_code >= 400:
                    raise CommandError(
                        f"POST failed ({response.status_code}): {response.text[:300]}"
                    )
                body = response.json()
                draft = body.get("draft") or {}
                self.stdout.write(
                    f"[{number}/{options['count']}] {customer}: {text[:60]!r} → message {body['id']}, "
                    f"draft {draft.get('status', 'none')}"
                )
                if number < options["count"]:
                    time.sleep(
                        rng.expovariate(1 / options["interval"]) if options["interval"] > 0 else 0
                    )
