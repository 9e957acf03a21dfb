"""Admin for model endpoints: connection test, spend and cap state, circuit state."""

from __future__ import annotations

from decimal import Decimal

from django.test import Client

from drafting import services as drafting
from drafting.engine.breaker import breaker
from drafting.models import DraftAttempt, ModelEndpoint
from tests.factories import EndpointFactory, UserFactory, ingest, make_team
from tests.http_stub import Reply, chat_completion, openai_stub


def admin_client(client: Client) -> Client:
    user = UserFactory.create(username="root", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_endpoint_check_lists_models_and_makes_one_tiny_completion(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("OK"))) as stub:
        endpoint = EndpointFactory.create(kind=ModelEndpoint.Kind.PAID, base_url=stub.base_url)
        check = drafting.endpoint_check(endpoint=endpoint)
    assert check.ok
    assert check.models == ["stub-model"]
    assert check.reply == "OK"
    assert stub.requests[0]["json"]["max_tokens"] == 8
    assert DraftAttempt.objects.count() == 0  # a check is not a draft


def test_endpoint_check_reports_an_unreachable_server(db: None) -> None:
    endpoint = EndpointFactory.create(
        kind=ModelEndpoint.Kind.PAID, base_url="http://127.0.0.1:9/v1"
    )
    check = drafting.endpoint_check(endpoint=endpoint)
    assert not check.ok
    assert check.error.startswith("unavailable")


def test_admin_test_connection_action_shows_the_result(client: Client, db: None) -> None:
    with openai_stub(Reply(body=chat_completion("OK"))) as stub:
        endpoint = EndpointFactory.create(
            name="stubbed", kind=ModelEndpoint.Kind.PAID, base_url=stub.base_url
        )
        response = admin_client(client).post(
            "/admin/drafting/modelendpoint/",
            {"action": "test_connection", "_selected_action": [endpoint.pk]},
            follow=True,
        )
    body = response.content.decode()
    assert "Stubbed: OK in" in body  # the admin capitalises messages
    assert "stub-model" in body


def test_admin_endpoint_list_shows_spend_cap_and_circuit_state(client: Client, db: None) -> None:
    endpoint = EndpointFactory.create(
        name="capped", kind=ModelEndpoint.Kind.PAID, daily_spend_cap=Decimal("0.01")
    )
    setup = make_team("Spend", endpoint=endpoint)
    draft = ingest(setup, "c", "m").draft
    assert draft is not None
    DraftAttempt.objects.create(
        draft=draft, tier=1, endpoint=endpoint, cost=Decimal("0.0125"), outcome="ok"
    )
    breaker().record_failure(endpoint.pk, "permanent")
    body = admin_client(client).get("/admin/drafting/modelendpoint/").content.decode()
    assert "0.0125" in body
    assert "daily cap reached" in body
    assert "open (" in body
