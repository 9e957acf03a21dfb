"""No input reaches a 5xx: every route of the project (the admin's included), as a user of a
role that gets in, with generated query strings and bodies — form-encoded, multipart, JSON
and raw bytes — full of odd values: NaN, infinities, huge and negative numbers and ids, the
ends of the calendar, unicode, control characters, deep nesting, empty and very long
strings. The parameter names come from the project's own forms, serializers and models, so a
new field is fuzzed without anyone listing it here.

Each example runs in a savepoint that is rolled back, so one example's writes (a deleted
object, a closed conversation) do not change what the next one meets. The number of examples
per route is bounded to keep the whole run near a minute on two cores.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from django import forms
from django.apps import apps
from django.contrib import admin
from django.core.cache import cache
from django.db import transaction
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework import serializers

from accounting import api as accounting_api
from accounting import forms as accounting_forms
from accounting.models import AccountingSettings
from csbot.api import serializers as api_serializers
from csbot.console import views as console_views
from csbot.models import AgentProfile
from drafting import admin as drafting_admin
from drafting.models import Draft, Intent
from tests.factories import (
    WHATIF_FORM_PAPER_CASE,
    WHATIF_PAPER_CASE,
    AgentProfileFactory,
    TeamSetup,
    UserFactory,
    ingest,
    make_team,
)
from tests.system.factories import all_routes

# The fuzz run: about two minutes on CI's two cores, left out of `make test-fast`.
pytestmark = pytest.mark.slow


# Who fuzzes a route: the roles that get past its access rule (tests/system/test_security.py
# says who may reach what), so the generated input reaches the view's own code. The first is
# the one the sweep uses: the role that gets furthest (only a channel token posts messages).
def roles_for(route: str) -> list[str]:
    if route.startswith("admin/"):
        return ["admin"]
    if route.startswith("accounting/"):
        return ["manager", "admin"]
    if route.startswith("console/") or route == "":
        return ["agent", "manager"]
    if route.startswith("api/v1/encs"):
        return ["manager", "token"]
    if route.startswith("api/v1/"):
        return ["token", "agent"]
    return ["anonymous", "agent"]


# --- Parameter names: the project's own ------------------------------------------------------


def _form_fields(form_class: type[forms.Form]) -> set[str]:
    prefix = f"{form_class.prefix}-" if form_class.prefix else ""
    return {prefix + name for name in form_class.base_fields}


def _serializer_fields(module: Any) -> set[str]:
    names: set[str] = set()
    for _name, cls in inspect.getmembers(module, inspect.isclass):
        if issubclass(cls, serializers.Serializer) and cls.__module__ == module.__name__:
            try:
                names |= set(cls().get_fields())
            except (AssertionError, TypeError):  # needs a context or instance: skip
                continue
    return names


def parameter_names() -> list[str]:
    names = {
        # Filters, pagination, admin changelists, htmx and auth.
        *("from", "to", "team", "policy", "group_by", "measured", "status", "cursor", "page"),
        *("q", "o", "p", "e", "all", "_changelist_filters", "_popup", "_to_field", "next"),
        *("username", "password", "id", "pk", "format", "limit", "offset"),
        *_form_fields(accounting_forms.WhatIfForm),
        *_form_fields(console_views.ReplyForm),
        *_form_fields(console_views.IntentLabelForm),
        *_form_fields(drafting_admin.policies.TuningForm),
        *_serializer_fields(api_serializers),
        *_serializer_fields(accounting_api),
    }
    for model in apps.get_models():
        names |= {field.name for field in model._meta.get_fields() if field.concrete}
    # A changelist action with selected rows is a write the admin confirms first; a delete
    # page posted with "post" deletes. Both are fine, but not what this test is for.
    return sorted(names - {"post", "action", "_selected_action"})


PARAMETER_NAMES = parameter_names()

ODD_VALUES = [
    *("NaN", "nan", "sNaN", "Infinity", "-Infinity", "inf", "-inf", "1e999999", "-1e999999"),
    *("1e-999999", "1E+308", "0", "-0", "-1", "0.0000000001", "1" * 40, "-" + "9" * 40),
    *(str(2**31), str(2**63), str(2**64), str(-(2**63) - 1), "0x10", "1_000", "١٢٣"),
    *("0001-01-01", "9999-12-31", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00"),
    *("2026-02-30", "2026-13-01", "0000-00-00", "10000-01-01", "-2026-01-01"),
    *("", " ", "\x00", "\t\n", "null", "true", "[]", "{}", "%00", "../..", "<script>"),
    *("é", "😀", "\u202e", "\ud7ff", "a" * 5000, "x" * 70_000),
]


def text_values() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ODD_VALUES),
        st.text(max_size=40),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.decimals(allow_nan=True, allow_infinity=True).map(str),
        st.dates().map(date.isoformat),
        st.datetimes().map(lambda moment: moment.isoformat()),
    )


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=False, allow_infinity=False),
        st.decimals(allow_nan=False, allow_infinity=False).map(str),
        text_values(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=8,
    )


def params(base: dict[str, str]) -> st.SearchStrategy[dict[str, str]]:
    """A route's valid parameters with some replaced or added, or random ones."""
    names = st.sampled_from(PARAMETER_NAMES)
    if base:
        names = st.sampled_from(sorted(base)) | names  # the route's own half the time
    odd = st.dictionaries(names, text_values(), max_size=4)
    return st.one_of(odd.map(lambda changes: {**base, **changes}), odd)


# Raw bodies that are not what their content type says, or hard to parse.
RAW_BODIES = [
    b"[" * 2048 + b"]" * 2048,  # the probe's 2 KB of nested arrays
    b"[" * 100_000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"text": NaN}',
    b'{"text": Infinity}',
    b'{"messages_per_year": 1e999999}',
    b'{"text": "\\ud800"}',
    b"\xff\xfe\x00",
    b"",
    b"null",
    b"[]",
    b'"just a string"',
    b"1" * 5000,
]


@dataclass
class Fuzzed:
    setup: TeamSetup
    users: dict[str, Any]
    draft: Draft
    intent: Intent


@pytest.fixture
def fuzzed(db: None, settings: Any) -> Fuzzed:
    cache.clear()
    # Login posts are many here: the limits have their own tests.
    settings.CSBOT_LOGIN_RATE = settings.CSBOT_LOGIN_IP_RATE = "100000/m"
    setup = make_team("Acme")
    AccountingSettings.objects.create(
        effective_from=date(2020, 1, 1),
        agent_hourly_usd=Decimal(36),
        default_baseline_seconds=Decimal(120),
    )
    manager = AgentProfileFactory.create(
        team=setup.team, role=AgentProfile.Role.MANAGER, user__username="fuzz-manager"
    ).user
    admin_user = UserFactory.create(username="fuzz-admin", is_staff=True, is_superuser=True)
    AgentProfileFactory.create(team=setup.team, user=admin_user, role=AgentProfile.Role.ADMIN)
    result = ingest(setup, "fuzz", "fuzz-1", "Where is my parcel?")
    assert result.draft is not None
    return Fuzzed(
        setup=setup,
        users={"agent": setup.agent, "manager": manager, "admin": admin_user},
        draft=result.draft,
        intent=Intent.objects.create(team=setup.team, name="where_is_my_parcel"),
    )


def client_for(role: str, world: Fuzzed) -> Client:
    if role == "token":
        return Client(
            HTTP_AUTHORIZATION=f"Token {world.setup.token}", raise_request_exception=False
        )
    client = Client(raise_request_exception=False)
    if role != "anonymous":
        client.force_login(world.users[role])
    return client


def concrete(route: str, world: Fuzzed, pk: int | None) -> str:
    """The route with its parameters filled: the world's objects, or a generated id."""
    draft = world.draft
    own = {
        "console/c/": draft.message.conversation_id,
        "api/v1/conversations/": draft.message.conversation_id,
        "api/v1/messages/": draft.message_id,
        "api/v1/drafts/": draft.pk,
    }
    ident: int | None = next((v for prefix, v in own.items() if route.startswith(prefix)), None)
    if route.startswith("admin/drafting/cascadepolicy/<int:pk>"):
        ident = world.setup.policy.pk
    if ident is None and route.startswith("admin/"):
        ident = _admin_object_id(route)
    value = str(pk if pk is not None else ident if ident is not None else 1)
    for placeholder in ("<int:pk>", "<path:object_id>", "<id>"):
        route = route.replace(placeholder, value)
    route = route.replace("<str:kind>", "html").replace("<path:content_type_id>", "1")
    if route.startswith("admin/^("):  # the app index: one pattern for all apps
        route = "admin/drafting/"
    return "/" + route.replace("(?P<url>.*)$", "nowhere/")


def _admin_object_id(route: str) -> int | None:
    parts = route.split("/")
    if len(parts) < 3:
        return None
    for model in admin.site._registry:
        if (model._meta.app_label, model._meta.model_name) == (parts[1], parts[2]):
            first = model._default_manager.order_by("pk").first()
            return None if first is None else int(first.pk)
    return None


def valid_request(route: str, world: Fuzzed) -> tuple[str, dict[str, str]]:
    """The method and parameters each route accepts, for the fuzz to spoil one at a time."""
    october = {"from": "2026-10-01", "to": "2026-10-31"}
    whatif = {**WHATIF_FORM_PAPER_CASE, "measured": "0.25"}
    api_whatif = dict(WHATIF_PAPER_CASE)
    message_id = str(world.draft.message_id)
    known: dict[str, tuple[str, dict[str, str]]] = {
        "accounting/": (
            "GET",
            {**october, "team": str(world.setup.team.pk), "policy": str(world.setup.policy.pk)},
        ),
        # The dashboard reads the what-if's figures with the same form: swept here (the
        # dashboard draws its charts on every request, too slow to sweep every field).
        "accounting/whatif": ("GET", {**october, **whatif}),
        "accounting/report.html": ("GET", october),
        "accounting/report.pdf": ("GET", october),
        "api/v1/encs": (
            "GET",
            {**october, "group_by": "day", "policy": str(world.setup.policy.pk)},
        ),
        "api/v1/encs/whatif": ("GET", api_whatif),
        "api/v1/conversations": ("GET", {"status": "open"}),
        "api/v1/messages": (
            "POST",
            {
                "conversation_external_id": "fuzz",
                "channel_message_id": "fuzz-2",
                "text": "Hello again",
                "customer_ref": "Dana",
                "sent_at": "2026-10-05T10:00:00Z",
            },
        ),
        "api/v1/drafts/<int:pk>/action": (
            "POST",
            {
                "kind": "edit",
                "final_text": "Your parcel left today.",
                "agent": world.setup.agent.username,
                "shown_at": "2026-10-05T10:00:00Z",
                "acted_at": "2026-10-05T10:01:00Z",
            },
        ),
        "console/c/<int:pk>/reply": (
            "POST",
            {
                "text": "Your parcel left today.",
                "kind": "use",
                "inbound_message_id": message_id,
                "draft_id": str(world.draft.pk),
            },
        ),
        "console/c/<int:pk>/intent": (
            "POST",
            {"message_id": message_id, "intent_id": str(world.intent.pk)},
        ),
        "login/": ("POST", {"username": "fuzz-admin", "password": "pw-for-tests"}),
        "admin/drafting/cascadepolicy/<int:pk>/tuning/": (
            "GET",
            {"objective": "encs", "value_usd": "0.5", "budget_usd": "0.01"},
        ),
    }
    return known.get(route, ("GET", {}))


ROUTES = sorted({route for route, _view in all_routes()})
# The sweep: every route but the admin's model pages, which take no parameters of their own.
SWEPT_ROUTES = [
    route
    for route in ROUTES
    if not route.startswith("admin/") or route == "admin/drafting/cascadepolicy/<int:pk>/tuning/"
]
# The admin has many routes of one kind: fewer examples each keeps the run short.
ADMIN_EXAMPLES, OTHER_EXAMPLES = 2, 8

# One or two of each kind of odd value, for the sweep below.
SWEEP_VALUES = [
    *("NaN", "Infinity", "-Infinity", "1e999999", "-1e-999999", "0.0000000001"),
    *("-1", str(2**63), "9" * 40, "0001-01-01", "9999-12-31", "9999-12-31T23:59:59Z"),
    *("", "\x00", "😀", "a" * 5000, "[]"),
]


def _same_shape(base: dict[str, str]) -> list[list[str]]:
    """Groups of two or more parameters whose valid values look alike (dates, ids)."""
    groups: dict[str, list[str]] = {}
    for key, value in base.items():
        groups.setdefault(re.sub(r"[0-9]", "0", value), []).append(key)
    return [keys for keys in groups.values() if len(keys) > 1]


def _request(client: Client, method: str, url: str, kind: str, data: Any) -> int:
    if method == "GET":
        return int(client.get(url, data).status_code)
    if kind == "form":
        body, content_type = urlencode(data).encode(), "application/x-www-form-urlencoded"
    elif kind == "multipart":
        return int(client.post(url, data).status_code)
    elif kind == "json":
        body, content_type = json.dumps(data).encode(), "application/json"
    else:
        body, content_type = data, kind
    return int(client.generic("POST", url, body, content_type=content_type).status_code)


def _status(world: Fuzzed, role: str, method: str, url: str, kind: str, data: Any) -> int:
    """One request in a savepoint that is rolled back: the world stays as it was."""
    with transaction.atomic():
        status = _request(client_for(role, world), method, url, kind, data)
        transaction.set_rollback(True)
    return status


def _shown(payload: Any) -> Any:
    return payload if len(repr(payload)) < 300 else repr(payload)[:300] + "…"


@pytest.mark.parametrize("route", SWEPT_ROUTES)
def test_each_parameter_spoiled_with_each_kind_of_odd_value_gives_no_server_error(
    fuzzed: Fuzzed, route: str
) -> None:
    """The systematic half: every valid parameter of the route in turn takes each odd value
    (as query, form and JSON), and every hard-to-parse body is posted as JSON and as a form."""
    method, base = valid_request(route, fuzzed)
    role = roles_for(route)[0]
    url = concrete(route, fuzzed, None)
    failures: list[tuple[Any, ...]] = []
    kinds = ["query"] if method == "GET" else ["form", "json"]
    for value in SWEEP_VALUES:
        # Each parameter alone, then those of one shape together (a period from 9999-12-31
        # to 9999-12-31 is short enough to get past the span check), then all of them.
        spoilt = [{**base, key: value} for key in base]
        for keys in _same_shape(base):
            spoilt.append({**base, **dict.fromkeys(keys, value)})
        spoilt.append(dict.fromkeys(base, value))
        for data in spoilt if base else []:
            for kind in kinds:
                status = _status(fuzzed, role, method, url, kind, data)
                if status >= 500:
                    changed = sorted(k for k in data if data[k] != base.get(k))
                    failures.append((method, url, kind, changed, _shown(value), status))
    for body in RAW_BODIES:
        for content_type in ("application/json", "application/x-www-form-urlencoded"):
            status = _status(fuzzed, role, "POST", url, content_type, body)
            if status >= 500:
                failures.append(("POST", url, content_type, _shown(body), status))
    assert failures == []


def _fuzz(route: str, world: Fuzzed, data: st.DataObject) -> None:
    method, base = valid_request(route, world)
    role = data.draw(st.sampled_from(roles_for(route)), label="role")
    pk = data.draw(st.none() | st.sampled_from([0, -1, 2**31, 2**63, 10**30]), label="id")
    url = concrete(route, world, pk if "<" in route else None)
    method = data.draw(st.sampled_from([method, "GET", "POST"]), label="method")
    kind = "query"
    payload: Any
    if method == "GET":
        payload = data.draw(params(base), label="query")
    else:
        kind = data.draw(
            st.sampled_from(["form", "multipart", "json", "raw-json", "raw-form"]), label="body"
        )
        if kind == "json":
            payload = data.draw(
                params(base) | st.dictionaries(st.sampled_from(PARAMETER_NAMES), json_values()),
                label="json",
            )
        elif kind.startswith("raw"):
            kind = "application/json" if kind == "raw-json" else "application/x-www-form-urlencoded"
            payload = data.draw(st.sampled_from(RAW_BODIES) | st.binary(max_size=64), label="raw")
        else:
            payload = data.draw(params(base), label="form")
    status = _status(world, role, method, url, kind, payload)
    assert status < 500, (method, url, role, kind, _shown(payload))


@pytest.mark.parametrize("route", ROUTES)
def test_generated_queries_and_bodies_give_no_server_error(fuzzed: Fuzzed, route: str) -> None:
    """The generated half: random parameter names and values, combinations, generated ids in
    the URL, every role that gets in, every body encoding."""
    examples = ADMIN_EXAMPLES if route.startswith("admin/") else OTHER_EXAMPLES

    # No example database: this inner function is the same for every route, so examples
    # saved for one route would be replayed on all. A failure prints its blob instead.
    # On CI the draw is fixed (a gate must not fail on luck); on a developer's machine every
    # run explores new inputs, which is how the autocomplete 500 below was found.
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=bool(os.environ.get("CI")),
        print_blob=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        _fuzz(route, fuzzed, data)

    run()


def test_every_route_is_fuzzed() -> None:
    """The list is the resolver's own: a new route is fuzzed without being named anywhere."""
    assert "api/v1/messages" in ROUTES and "accounting/whatif" in ROUTES
    assert len(ROUTES) > 100  # the admin's too


@pytest.mark.parametrize("value", ["NaN", "2000-01-01T00:00:01", "99999999999999999999", "-1"])
def test_admin_autocomplete_fields_refuse_values_their_key_cannot_hold(
    db: None, client: Client, value: str
) -> None:
    """Found by the fuzz run: Django's autocomplete widget looked such values up and raised
    while rendering the add page (query-string initial data) or a refused form."""
    setup = make_team("Autocomplete")
    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))

    initial = client.get("/admin/csbot/agentprofile/add/", {"user": value})
    refused = client.post(
        "/admin/csbot/agentprofile/add/", {"user": value, "team": setup.team.pk, "role": "agent"}
    )
    tier = client.post(
        f"/admin/drafting/cascadepolicy/{setup.policy.pk}/change/",
        {
            "tiers-TOTAL_FORMS": "1",
            "tiers-INITIAL_FORMS": "0",
            "tiers-0-endpoint": value,
            "tiers-0-position": "2",
        },
    )

    assert initial.status_code == 200
    assert refused.status_code == 200  # the form again, with its error
    assert "Select a valid choice" in refused.content.decode()
    assert tier.status_code == 200
