"""`manage.py distill_serve --team NAME|ID --adapter-version N (--merged | --lora)`: how a trained
adapter is served (drafting.adapters).

`--merged` folds the adapter into the base's weights and serves that copy on a vLLM server of
its own (as fast as the base on a CPU, where LoRA beside the base doubles each decoding step);
the adapter's endpoint then points there. `--lora` goes back to the adapter beside the base
and stops the merged server. Progress on stderr; the endpoint's URL on stdout.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from drafting import adapters, localserver
from drafting.management.commands.knowledge_import import team_named
from drafting.models import DistillRun


class Command(BaseCommand):
    help = "Serve a trained adapter merged into the base's weights, or back beside the base."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", required=True, help="the team's name or id")
        parser.add_argument(
            "--adapter-version",
            type=int,
            required=True,
            help="the adapter's version (Django keeps --version for its own)",
        )
        how = parser.add_mutually_exclusive_group(required=True)
        how.add_argument(
            "--merged", action="store_true", help="merged weights on a server of its own"
        )
        how.add_argument("--lora", action="store_true", help="LoRA beside the base model")
        parser.add_argument(
            "--timeout", type=float, default=600, help="seconds to wait for the server"
        )

    def _say(self, message: str) -> None:
        self.stderr.write(message)
        self.stderr.flush()

    def handle(self, *args: Any, **options: Any) -> None:
        team = team_named(options["team"])
        run = DistillRun.objects.filter(team=team, version=options["adapter_version"]).first()
        if run is None:
            raise CommandError(f"team {team.name!r} has no adapter v{options['adapter_version']}")
        try:
            if options["merged"]:
                endpoint = adapters.adapter_serve_merged(
                    run=run, user=None, progress=self._say, timeout=options["timeout"]
                )
            else:
                endpoint = adapters.adapter_serve_lora(run=run, user=None)
        except (adapters.AdapterStageError, localserver.LocalLLMError) as error:
            raise CommandError(str(error)) from error
        self._say(f"{endpoint.name}: {run.get_serving_display()}")
        self.stdout.write(endpoint.resolved_base_url())
