"""Seed a demo team, logins, a cascade policy on the local vLLM, a small knowledge base
(csbot/demo/knowledge: articles and macros, imported as any team's files are), a few
conversations, and sixty days of past (accounting's `demo_history`: demo agents, drafts, two
policies, a fixed cost) so the ENCS dashboard has figures on the first run.

Idempotent: running it again keeps what exists (and does not duplicate conversations or the
past). `--remove-history` deletes the past only; `--no-history` seeds without it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from csbot import services
from csbot.demo import DEMO_TEAM, demo_conversations, demo_knowledge_files
from csbot.models import AgentProfile, Channel, Team
from drafting import knowledge
from drafting.models import CascadePolicy, CascadeTier, EndpointPrice, ModelEndpoint

# Demo prices are in force from long before any demo draft (the data migration's instant too).
DEMO_PRICES_FROM = datetime(2000, 1, 1, tzinfo=UTC)
SYSTEM_PROMPT = (
    "You are a friendly, concise customer-support agent for an online shop. Answer the "
    "customer's last message in two to four sentences. Do not invent order details; ask for "
    "what you need."
)


class Command(BaseCommand):
    help = "Create the demo team, agent login, local-vLLM cascade policy and demo conversations."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--password", default="csbot-demo", help="Password for the demo logins."
        )
        parser.add_argument(
            "--no-conversations",
            action="store_true",
            help="Skip demo conversations (the live ones and the past).",
        )
        parser.add_argument(
            "--no-history", action="store_true", help="Skip the demo's 60 days of past."
        )
        parser.add_argument(
            "--remove-history",
            action="store_true",
            help="Only delete the demo's past (its channel, agents, paid policy, fixed cost).",
        )
        parser.add_argument(
            "--holdout-share", default="0.10", help="Share of conversations held out."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["remove_history"]:
            # By name: the past writes accounting's rows, and the support domain's commands
            # sit below accounting (pyproject.toml's layers); accounting's command owns it.
            call_command("demo_history", "--remove", stdout=self.stdout)
            return
        with transaction.atomic():
            team, _ = Team.objects.get_or_create(name=DEMO_TEAM)
            channel, _ = Channel.objects.get_or_create(team=team, name="web-chat")
            users = get_user_model().objects
            agent = users.filter(username="agent").first() or users.create_user(
                "agent", email="agent@example.com"
            )
            agent.set_password(options["password"])
            agent.save()
            AgentProfile.objects.get_or_create(user=agent, defaults={"team": team})
            manager = users.filter(username="manager").first() or users.create_user(
                "manager", email="manager@example.com"
            )
            manager.set_password(options["password"])
            manager.save()
            AgentProfile.objects.get_or_create(
                user=manager, defaults={"team": team, "role": AgentProfile.Role.MANAGER}
            )
            admin = users.filter(username="admin").first() or users.create_superuser(
                "admin", email="admin@example.com"
            )
            admin.set_password(options["password"])
            admin.save()
            AgentProfile.objects.get_or_create(
                user=admin, defaults={"team": team, "role": AgentProfile.Role.ADMIN}
            )

            local, _ = ModelEndpoint.objects.get_or_create(
                name="local-smollm2",
                defaults={
                    "kind": ModelEndpoint.Kind.LOCAL,
                    "model_name": "smollm2-135m-instruct",
                    "timeout_seconds": 60,
                    "max_output_tokens": 96,
                },
            )
            paid, _ = ModelEndpoint.objects.get_or_create(
                name="openai-gpt-4o-mini",
                defaults={
                    "kind": ModelEndpoint.Kind.PAID,
                    "base_url": "https://api.openai.com/v1",
                    "model_name": "gpt-4o-mini",
                    "api_key_env": "OPENAI_API_KEY",
                    "enabled": False,
                },
            )
            # A first price only: a price an admin added since is theirs to keep.
            if not local.prices.exists():
                EndpointPrice.objects.create(
                    endpoint=local, effective_from=DEMO_PRICES_FROM, gpu_hour_usd=Decimal("0.80")
                )
            if not paid.prices.exists():
                EndpointPrice.objects.create(
                    endpoint=paid,
                    effective_from=DEMO_PRICES_FROM,
                    input_price_per_mtok=Decimal("0.15"),
                    output_price_per_mtok=Decimal("0.60"),
                )
            policy, created = CascadePolicy.objects.get_or_create(
                team=team,
                name="Demo cascade",
                defaults={
                    "system_prompt": SYSTEM_PROMPT,
                    "holdout_share": Decimal(options["holdout_share"]),
                },
            )
            if created:
                CascadeTier.objects.create(
                    policy=policy, position=1, endpoint=local, threshold=Decimal("0")
                )

        # Before the conversations, so their drafts can be grounded; the worker embeds it.
        imported = knowledge.knowledge_import(team=team, files=demo_knowledge_files())
        if not imported.ok:
            raise CommandError("; ".join(str(error) for error in imported.errors))
        seeded = 0
        if not options["no_conversations"]:
            for number, conversation in enumerate(demo_conversations(), start=1):
                for turn, text in enumerate(conversation["messages"], start=1):
                    result = services.message_ingest(
                        channel=channel,
                        conversation_external_id=f"demo-{number}",
                        channel_message_id=f"demo-{number}-{turn}",
                        text=text,
                        customer_ref=conversation["customer"],
                    )
                    seeded += int(result.created)
            if not options["no_history"]:
                call_command("demo_history", stdout=self.stdout)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo team {team.name!r} ready: {seeded} new demo messages, "
                f"{imported.total(knowledge.Outcome.CREATED)} new knowledge articles and macros.\n"
                f"  Agent login: agent / {options['password']}\n"
                f"  Manager login (ENCS dashboard): manager / {options['password']}\n"
                f"  Admin login: admin / {options['password']}"
            )
        )
