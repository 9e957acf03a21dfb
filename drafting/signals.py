"""Signals drafting sends for writes that bypass model signals (bulk writes), so that apps
depending on drafting's rows (accounting's rollups) can react without drafting importing them."""

from __future__ import annotations

from django.dispatch import Signal

# Sent after intent verdicts were stored in bulk; keyword argument `message_ids` (list of int).
intents_changed = Signal()

# Sent after attempts were added to drafts already finished (exploration asks the skipped tiers
# later, and adds their cost to the draft); keyword argument `draft_ids` (list of int).
attempts_added = Signal()
