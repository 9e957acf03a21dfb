"""Recorded facts are read in the admin, never written there.

Settings (teams, prices, policies, thresholds, labour rates…) are edited in the admin. Records
are what happened: messages, drafts and their provider attempts, agent actions, intent
verdicts, trained classifier versions, monthly reports. ENCS and the reports already mailed are
computed from them, so an edited handle time or cost would silently rewrite money figures; they
are written only by the code paths that make them (ingest, the worker, the console and the API,
beat). Their admin pages therefore offer no "Add" button and no editable form: the change page
is a read-only view, and a POST to it or to the add page is refused (403).

Deletion: none for records. The schema says so too (an agent action PROTECTs its draft and its
messages), and there is no removal flow yet that would keep the figures while erasing a
customer's text. Derived memory is different: a cached reply or a few-shot example is something
the model is shown, and removing one that should not be shown any more is a supported use
(`deletable = True`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.admin.options import BaseModelAdmin
from django.http import HttpRequest


class RecordAdmin(BaseModelAdmin[Any]):
    """Read-only admin for recorded facts. Mix in before ModelAdmin / an inline."""

    # Derived entries that may be removed (cached replies, few-shot examples); records may not.
    deletable: ClassVar[bool] = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.deletable and super().has_delete_permission(request, obj)
