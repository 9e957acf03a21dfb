"""Audit trail of configuration: who changed a price, a threshold, a cap, a labour rate, a
token or a role, with old and new values, whether through the admin's forms or a service."""

from __future__ import annotations

from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import Model
from django.test import Client

from accounting.models import AccountingSettings
from csbot import services
from csbot.models import AgentProfile, ApiToken
from drafting.learning import tuning
from drafting.models import CascadeTier, EndpointPrice
from tests.factories import TeamSetup, UserFactory


class _FormFields(HTMLParser):
    """The fields a browser would submit from the page's main form (the admin's change form):
    inputs, checked boxes, selected options, text areas."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, Any] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.fields[name] = a.get("value") or ("on" if a.get("type") == "checkbox" else "")
        elif tag == "select" and name:
            self._select = name
            self.fields.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in a:
            self.fields[self._select] = a.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.fields[self._textarea] += data.removeprefix("\n")


def admin_form(client: Client, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200
    parser = _FormFields()
    parser.feed(response.content.decode())
    return parser.fields


def admin_post(client: Client, url: str, changes: dict[str, Any]) -> None:
    """Submit the admin page's form at `url` as a browser would, with `changes` typed in."""
    data = {**admin_form(client, url), **changes}
    data.pop("_saveasnew", None)
    data.pop("_addanother", None)
    data.pop("_continue", None)
    response = client.post(url, data)
    assert response.status_code == 302, _errors(response)


def _errors(response: Any) -> str:
    text = response.content.decode()
    start = text.find("errornote")
    return text[start : start + 2000] if start >= 0 else text[:2000]


def entries_for(obj: Model, action: int | None = None) -> list[LogEntry]:
    """The object's audit entries, oldest first; only those of `action` when given (the
    fixtures' own creations are entries too)."""
    entries = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(obj), object_pk=str(obj.pk)
    )
    if action is not None:
        entries = entries.filter(action=action)
    return list(entries.order_by("timestamp", "pk"))


@pytest.fixture
def admin_user(acme: TeamSetup) -> Any:
    user = UserFactory.create(
        username="auditor", is_staff=True, is_superuser=True, email="auditor@example.com"
    )
    AgentProfile.objects.create(user=user, team=acme.team, role=AgentProfile.Role.ADMIN)
    return user


@pytest.fixture
def admin_client(admin_user: Any) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def test_a_tier_threshold_changed_in_the_admin_is_logged_with_who_and_the_values(
    acme: TeamSetup, admin_user: Any, admin_client: Client
) -> None:
    tier = acme.policy.tiers.get()
    assert tier.threshold == Decimal("0")
    url = f"/admin/drafting/cascadepolicy/{acme.policy.pk}/change/"
    fields = admin_form(admin_client, url)
    threshold_field = next(k for k in fields if k.startswith("tiers-0-threshold"))
    admin_post(admin_client, url, {threshold_field: "0.75"})
    tier.refresh_from_db()
    assert tier.threshold == Decimal("0.75")
    (entry,) = entries_for(tier, LogEntry.Action.UPDATE)
    assert entry.actor == admin_user
    # Old as stored, new as typed.
    assert entry.changes_dict == {"threshold": ["0.0000", "0.75"]}
    assert entry.remote_addr == "127.0.0.1"


def test_an_endpoint_price_and_cap_changed_in_the_admin_are_logged(
    acme: TeamSetup, admin_user: Any, admin_client: Client
) -> None:
    endpoint = acme.endpoint
    price = endpoint.prices.get()
    url = f"/admin/drafting/modelendpoint/{endpoint.pk}/change/"
    fields = admin_form(admin_client, url)
    gpu = next(k for k in fields if k.startswith("prices-0-gpu_hour_usd"))
    admin_post(admin_client, url, {gpu: "1.25", "daily_spend_cap": "5.00"})
    price.refresh_from_db()
    assert price.gpu_hour_usd == Decimal("1.25")
    (price_entry,) = entries_for(price, LogEntry.Action.UPDATE)
    assert (price_entry.actor, price_entry.action) == (admin_user, LogEntry.Action.UPDATE)
    assert price_entry.changes_dict == {"gpu_hour_usd": ["0.800000", "1.25"]}
    (endpoint_entry,) = entries_for(endpoint, LogEntry.Action.UPDATE)
    assert endpoint_entry.actor == admin_user
    assert endpoint_entry.changes_dict["daily_spend_cap"] == ["None", "5.00"]
    # A new dated price is a creation with its values.
    fields = admin_form(admin_client, url)
    admin_post(
        admin_client,
        url,
        {
            "prices-TOTAL_FORMS": "2",
            "prices-1-endpoint": str(endpoint.pk),
            "prices-1-effective_from_0": "2030-01-01",
            "prices-1-effective_from_1": "00:00:00",
            "prices-1-input_price_per_mtok": "0",
            "prices-1-output_price_per_mtok": "0",
            "prices-1-request_fee": "0",
            "prices-1-gpu_hour_usd": "0.90",
            "prices-1-note": "new contract",
        },
    )
    new_price = EndpointPrice.objects.get(endpoint=endpoint, note="new contract")
    (created,) = entries_for(new_price)
    assert (created.actor, created.action) == (admin_user, LogEntry.Action.CREATE)
    assert created.changes_dict["gpu_hour_usd"] == ["None", "0.90"]


def test_thresholds_applied_by_the_tuning_service_are_logged_under_its_user(
    acme: TeamSetup, admin_user: Any, admin_client: Client
) -> None:
    tier = acme.policy.tiers.get()
    # Outside any request (a shell, a task): the service names the actor itself.
    tuning.policy_apply_thresholds(
        policy=acme.policy, thresholds={tier.pk: Decimal("0.4")}, user=admin_user
    )
    # Through the admin's "Optimise thresholds" page: the same, from the request.
    response = admin_client.post(
        f"/admin/drafting/cascadepolicy/{acme.policy.pk}/tuning/",
        {f"threshold_{tier.pk}": "0.55"},
    )
    assert response.status_code == 302
    entries = entries_for(tier, LogEntry.Action.UPDATE)
    assert [(e.actor, e.changes_dict) for e in entries] == [
        (admin_user, {"threshold": ["0.0000", "0.4000"]}),
        (admin_user, {"threshold": ["0.4000", "0.5500"]}),
    ]


def test_labour_rates_tokens_and_roles_are_logged(
    acme: TeamSetup, admin_user: Any, admin_client: Client
) -> None:
    # A labour rate added in the admin.
    admin_post(
        admin_client,
        "/admin/accounting/accountingsettings/add/",
        {
            "team": str(acme.team.pk),
            "effective_from": "2026-01-01",
            "agent_hourly_usd": "32.50",
            "default_baseline_seconds": "240",
            "min_holdout_sample": "30",
        },
    )
    rate = AccountingSettings.objects.get(team=acme.team)
    (created,) = entries_for(rate)
    assert (created.actor, created.action) == (admin_user, LogEntry.Action.CREATE)
    assert created.changes_dict["agent_hourly_usd"] == ["None", "32.50"]

    # A token created and revoked in the admin: logged, the key's hash not. (Creating it
    # answers with the key itself, not a redirect.)
    created_page = admin_client.post(
        "/admin/csbot/apitoken/add/", {"channel": str(acme.channel.pk), "name": "helpdesk bridge"}
    )
    assert created_page.status_code == 200
    token = ApiToken.objects.get(name="helpdesk bridge")
    response = admin_client.post(
        "/admin/csbot/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}
    )
    assert response.status_code == 302
    created, revoked = entries_for(token)
    assert (created.actor, created.action) == (admin_user, LogEntry.Action.CREATE)
    assert "key_hash" not in created.changes_dict
    assert token.key_hash not in str(created.changes)
    assert revoked.actor == admin_user
    assert list(revoked.changes_dict) == ["revoked_at"]
    assert revoked.changes_dict["revoked_at"][0] == "None"

    # A role raised in the admin.
    profile = acme.profile
    url = f"/admin/csbot/agentprofile/{profile.pk}/change/"
    admin_post(admin_client, url, {"role": AgentProfile.Role.MANAGER})
    (role_change,) = entries_for(profile, LogEntry.Action.UPDATE)
    assert role_change.actor == admin_user
    assert role_change.changes_dict == {"role": ["agent", "manager"]}


def test_a_token_revoked_by_the_service_outside_a_request_is_logged_without_an_actor(
    acme: TeamSetup,
) -> None:
    token = acme.channel.tokens.get()
    services.api_token_revoke(token=token)
    services.api_token_revoke(token=token)  # twice: one change
    updates = entries_for(token, LogEntry.Action.UPDATE)
    assert len(updates) == 1
    assert updates[0].actor is None


def test_the_audit_log_is_read_only_in_the_admin(
    acme: TeamSetup, admin_client: Client, admin_user: Any
) -> None:
    tier: CascadeTier = acme.policy.tiers.get()
    tuning.policy_apply_thresholds(
        policy=acme.policy, thresholds={tier.pk: Decimal("0.3")}, user=admin_user
    )
    (entry,) = entries_for(tier, LogEntry.Action.UPDATE)
    listing = admin_client.get("/admin/auditlog/logentry/")
    assert listing.status_code == 200
    assert "auditor" in listing.content.decode()
    page = admin_client.get(f"/admin/auditlog/logentry/{entry.pk}/change/")
    assert page.status_code == 200
    assert "0.3000" in page.content.decode()
    assert admin_client.post(f"/admin/auditlog/logentry/{entry.pk}/delete/").status_code == 403
    assert admin_client.get("/admin/auditlog/logentry/add/").status_code == 403
    changed = admin_client.post(f"/admin/auditlog/logentry/{entry.pk}/change/", {"changes": "{}"})
    assert changed.status_code == 403
    entry.refresh_from_db()
    assert entry.changes_dict == {"threshold": ["0.0000", "0.3000"]}
