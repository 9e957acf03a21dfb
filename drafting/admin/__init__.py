"""drafting's admin pages, one module per subject; importing them registers them (Django's
admin autodiscovery imports this package)."""

from drafting.admin import (
    adapters,
    classifiers,
    drafts,
    endpoints,
    experiments,
    intents,
    knowledge,
    policies,
)

__all__ = [
    "adapters",
    "classifiers",
    "drafts",
    "endpoints",
    "experiments",
    "intents",
    "knowledge",
    "policies",
]
