from __future__ import annotations

from django.apps import AppConfig


class CsbotConfig(AppConfig):
    name = "csbot"
    verbose_name = "Support"
