from __future__ import annotations

from django.apps import AppConfig


class DraftingConfig(AppConfig):
    name = "drafting"
    verbose_name = "Drafting"

    def ready(self) -> None:
        # csbot's /metrics and /readyz ask drafting through these hooks: csbot's observability
        # never imports drafting (docs/architecture.md).
        from csbot.observability import health, metrics
        from drafting import observability

        metrics.register_scrape_source(observability.drafting_metrics)
        health.register_readiness_check("endpoints", observability.endpoints_readiness)
