"""Schemathesis against the published OpenAPI schema: no generated request may cause a 5xx.

Every operation of `/api/schema/` is called in process (WSGI) with inputs Hypothesis derives
from the schema (valid and invalid ones: wrong types, missing fields, huge numbers, odd
unicode), authenticated as a channel's integration token whose team owns a conversation, an
inbound message and a ready draft, so the read and action routes meet real rows as well as
missing ones. The API's contract is 2xx or a 4xx with field errors; a 5xx is a bug.

Runs on the `db` fixture: ingest's on-commit Celery send is captured, never sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from tests.factories import (
    ChannelFactory,
    ConversationFactory,
    DraftFactory,
    MessageFactory,
    token_for,
)

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


@pytest.fixture
def _keep_the_test_connection() -> Iterator[None]:
    """Calls go through the real WSGI handler, whose request signals close a connection that
    is inside a transaction, i.e. the test's. Django's test client disconnects them too."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def auth_headers(db: Any, _keep_the_test_connection: None) -> dict[str, str]:
    channel = ChannelFactory.create()
    conversation = ConversationFactory.create(channel=channel)
    message = MessageFactory.create(conversation=conversation)
    DraftFactory.create(message=message)
    return {"Authorization": f"Token {token_for(channel)}"}


def test_the_schema_covers_the_api() -> None:
    """The generated test below is only as wide as the schema: every v1 route must be in it."""
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    paths = {operation.path for operation in operations}
    assert {
        "/api/v1/messages",
        "/api/v1/messages/{id}",
        "/api/v1/conversations",
        "/api/v1/conversations/{id}",
        "/api/v1/conversations/{id}/messages",
        "/api/v1/drafts/{id}",
        "/api/v1/drafts/{id}/action",
        "/api/v1/encs",
        "/api/v1/knowledge/articles",
        "/api/v1/knowledge/articles/{external_id}",
        "/api/v1/knowledge/macros",
        "/api/v1/knowledge/macros/{external_id}",
    } <= paths


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_error_on_any_generated_input(case: Any, auth_headers: dict[str, str]) -> None:
    response = case.call(headers=auth_headers)
    case.validate_response(response, checks=[not_a_server_error])
