"""drafting's admin pages, one module per subject; importing them registers them (Django's
admin autodiscovery imports this package)."""

from drafting.admin import (
    classifiers,
    drafts,
    endpoints,
    experiments,
    intents,
    knowledge,
    policies,
)

__all__ = [
    "classifiers",
    "drafts",
    "endpoints",
    "experiments",
    "intents",
    "knowledge",
    "policies",
]
