"""Recorded facts are read-only in the admin (issue 17): messages, drafts, attempts, agent
actions, intent verdicts, classifier versions, monthly reports and audit rows have no "Add"
button and no editable form, and writes to them are refused; cached replies and few-shot
examples, which the model is shown, may still be deleted (csbot.admin_records)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import pytest
from auditlog.models import LogEntry
from django.db import models
from django.test import Client
from django.utils import timezone

from accounting.models import MonthlyReport
from drafting.models import (
    AgentAction,
    CachedReply,
    DraftAttempt,
    Intent,
    MessageIntent,
    ReplyExample,
    TrainedClassifier,
)
from tests.factories import AgentActionFactory, DraftAttemptFactory, EndpointFactory, UserFactory


@dataclass
class Records:
    objects: dict[str, models.Model]


@pytest.fixture
def records(db: None) -> Records:
    """One row of every recorded model, as the code paths that make them would leave it."""
    action: AgentAction = AgentActionFactory.create(draft__text="Ships tomorrow.")
    draft = action.draft
    assert draft is not None
    message = action.inbound_message
    team = message.conversation.team
    attempt: DraftAttempt = DraftAttemptFactory.create(draft=draft)
    intent = Intent.objects.create(team=team, name="shipping")
    classifier = TrainedClassifier.objects.create(
        kind="intent",
        team=team,
        version=1,
        features="minilm",
        penalty="l2",
        strength_c=1.0,
        n_train=40,
        model_blob=b"model",
    )
    verdict = MessageIntent.objects.create(
        message=message, intent=intent, confidence=Decimal("0.9"), classifier=classifier
    )
    report = MonthlyReport.objects.create(
        team=team,
        month=date(2026, 10, 1),
        figures={},
        html="reports/2026/r.html",
        pdf="reports/2026/r.pdf",
        csv="reports/2026/r.csv",
    )
    EndpointFactory.create(name="audited")  # configuration: an audit row of its own
    cached = CachedReply.objects.create(
        team=team,
        key="0" * 64,
        customer_text="Where is my parcel?",
        reply="It ships tomorrow.",
        source_draft=draft,
        expires_at=timezone.now() + timedelta(days=1),
    )
    example = ReplyExample.objects.create(
        team=team,
        customer_text="Where is my parcel?",
        reply="It ships tomorrow.",
        embedding=[0.1, 0.2, 0.3],
        embedding_model="test-3d",
        embedding_dimensions=3,
    )
    return Records(
        objects={
            "csbot.conversation": message.conversation,
            "csbot.message": message,
            "drafting.draft": draft,
            "drafting.draftattempt": attempt,
            "drafting.agentaction": action,
            "drafting.messageintent": verdict,
            "drafting.trainedclassifier": classifier,
            "accounting.monthlyreport": report,
            "auditlog.logentry": LogEntry.objects.order_by("pk").first(),
            "drafting.cachedreply": cached,
            "drafting.replyexample": example,
        }
    )


RECORDS = [
    "csbot.conversation",
    "csbot.message",
    "drafting.draft",
    "drafting.draftattempt",
    "drafting.agentaction",
    "drafting.messageintent",
    "drafting.trainedclassifier",
    "accounting.monthlyreport",
    "auditlog.logentry",
]
# Derived memory the model is shown: not written here either, but an entry may be removed.
DELETABLE = ["drafting.cachedreply", "drafting.replyexample"]


@pytest.fixture
def root(client: Client, db: None) -> Client:
    client.force_login(UserFactory.create(username="root", is_staff=True, is_superuser=True))
    return client


def url(label: str, page: str = "") -> str:
    app, model = label.split(".")
    return f"/admin/{app}/{model}/{page}"


@pytest.mark.parametrize("label", RECORDS + DELETABLE)
def test_a_recorded_model_has_no_add_button_and_no_add_page(
    root: Client, records: Records, label: str
) -> None:
    changelist = root.get(url(label))
    assert changelist.status_code == 200
    body = changelist.content.decode()
    assert url(label, "add/") not in body
    assert root.get(url(label, "add/")).status_code == 403
    assert root.post(url(label, "add/"), {}).status_code == 403


@pytest.mark.parametrize("label", RECORDS + DELETABLE)
def test_a_recorded_row_is_shown_read_only_and_a_change_is_refused(
    root: Client, records: Records, label: str
) -> None:
    row = records.objects[label]
    page = root.get(url(label, f"{row.pk}/change/"))
    assert page.status_code == 200
    body = page.content.decode()
    assert 'name="_save"' not in body  # a view, not a form
    assert "<textarea" not in body
    assert root.post(url(label, f"{row.pk}/change/"), {}).status_code == 403
    before = {f.attname: getattr(row, f.attname) for f in row._meta.concrete_fields}
    row.refresh_from_db()
    assert {f.attname: getattr(row, f.attname) for f in row._meta.concrete_fields} == before


@pytest.mark.parametrize("label", RECORDS)
def test_a_record_cannot_be_deleted_in_the_admin(
    root: Client, records: Records, label: str
) -> None:
    row = records.objects[label]
    assert root.get(url(label, f"{row.pk}/delete/")).status_code == 403
    assert root.post(url(label, f"{row.pk}/delete/"), {"post": "yes"}).status_code == 403
    assert type(row)._default_manager.filter(pk=row.pk).exists()


@pytest.mark.parametrize("label", DELETABLE)
def test_a_cached_reply_or_example_can_still_be_removed(
    root: Client, records: Records, label: str
) -> None:
    row = records.objects[label]
    response = root.post(url(label, f"{row.pk}/delete/"), {"post": "yes"})
    assert response.status_code == 302
    assert not type(row)._default_manager.filter(pk=row.pk).exists()
