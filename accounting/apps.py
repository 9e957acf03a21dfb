from __future__ import annotations

from django.apps import AppConfig


class AccountingConfig(AppConfig):
    name = "accounting"
    verbose_name = "Accounting (ENCS)"

    def ready(self) -> None:
        from accounting import signals  # noqa: F401 - connects the receivers
