from __future__ import annotations

from django.apps import AppConfig


class CsbotConfig(AppConfig):
    name = "csbot"
    verbose_name = "Support"

    def ready(self) -> None:
        # Registers the deployment check for a shared cache (rate limits).
        from csbot import security  # noqa: F401
