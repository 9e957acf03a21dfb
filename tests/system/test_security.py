"""Security: who may reach which route (a matrix over every URL pattern), another team's data,
CSRF on the console's forms, revocable team-scoped tokens, rate limits, the HTTPS and
browser-policy settings, and API keys kept out of the database, logs, pages and error reports.

The route matrix enumerates the URL resolver: a route that is not in ROUTES (or, under
/admin/, a model that is not in ADMIN_MODELS) fails the test until someone decides who may
reach it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import connection, connections
from django.test import Client
from django.utils import timezone
from django.views.debug import ExceptionReporter
from rest_framework.test import APIClient

from csbot import services
from csbot.admin_records import RecordAdmin
from csbot.models import AgentProfile, Conversation
from drafting import services as drafting_services
from drafting.engine import providers
from drafting.models import (
    AgentAction,
    Draft,
    DraftAttempt,
    Intent,
    KnowledgeArticle,
    Macro,
    ModelEndpoint,
)
from tests.drafting.factories import distill_run
from tests.factories import (
    AgentProfileFactory,
    EndpointFactory,
    TeamSetup,
    UserFactory,
    ingest,
    make_team,
    token_for,
)
from tests.http_stub import Reply, openai_stub
from tests.system.factories import all_routes

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What the Content-Security-Policy blocks: inline scripts (JSON data blocks are not run) and
# event-handler attributes.
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)


@pytest.fixture(autouse=True)
def _fresh_rate_limits(settings: Any) -> Iterator[None]:
    """Rate limits count in the process's cache: every test starts and ends with no counts,
    and the tests that are not about limits (the matrix logs in many times a minute) are not
    held back by them. The rate-limit tests set their own small limits."""
    cache.clear()
    settings.CSBOT_LOGIN_RATE = settings.CSBOT_LOGIN_IP_RATE = "100000/m"
    yield
    # Only the memory cache: a test's Redis cache (or an unreachable one) is its own, and
    # clearing Redis would flush a whole database.
    if settings.CACHES["default"]["BACKEND"].endswith("LocMemCache"):
        cache.clear()


# --- The roles ---------------------------------------------------------------------------------

ROLES = ("anonymous", "no_profile", "agent", "manager", "admin", "token")


@dataclass
class World:
    """Two teams; Acme has one user per role and a conversation with a draft, Globex the
    same conversation shape (another team's data)."""

    acme: TeamSetup
    globex: TeamSetup
    clients: dict[str, Client]
    conversation: Conversation
    draft: Draft
    intent: Intent
    other_conversation: Conversation
    other_draft: Draft
    macro: Macro
    article: KnowledgeArticle


def _conversation_with_draft(setup: TeamSetup) -> tuple[Conversation, Draft]:
    result = ingest(setup, "matrix", "matrix-1", "Where is my parcel?")
    assert result.draft is not None
    return result.message.conversation, result.draft


def _logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def world(db: None) -> World:
    acme, globex = make_team("Acme"), make_team("Globex")
    manager = AgentProfileFactory.create(
        team=acme.team, role=AgentProfile.Role.MANAGER, user__username="acme-manager"
    ).user
    # As `seed_demo` makes it: a superuser who is also the team's admin.
    admin_user = UserFactory.create(username="acme-admin", is_staff=True, is_superuser=True)
    AgentProfileFactory.create(team=acme.team, user=admin_user, role=AgentProfile.Role.ADMIN)
    no_profile = UserFactory.create(username="nobody")
    conversation, draft = _conversation_with_draft(acme)
    other_conversation, other_draft = _conversation_with_draft(globex)
    clients = {
        "anonymous": Client(),
        "no_profile": _logged_in(no_profile),
        "agent": _logged_in(acme.agent),
        "manager": _logged_in(manager),
        "admin": _logged_in(admin_user),
        # Django views ignore the header (the caller is anonymous there); the API reads it.
        "token": Client(HTTP_AUTHORIZATION=f"Token {acme.token}"),
    }
    return World(
        acme=acme,
        globex=globex,
        clients=clients,
        conversation=conversation,
        draft=draft,
        intent=Intent.objects.create(team=acme.team, name="where_is_my_parcel"),
        other_conversation=other_conversation,
        other_draft=other_draft,
        macro=Macro.objects.create(
            team=acme.team,
            external_id="shipping",
            title="Thanks",
            body="Thank you!",
            content_hash="x",
        ),
        article=KnowledgeArticle.objects.create(
            team=acme.team,
            external_id="shipping",
            title="Shipping",
            body="We ship.",
            content_hash="x",
        ),
    )


# --- Expected access ---------------------------------------------------------------------------
# Outcomes: "ok" = 200; "in" = the view ran (2xx, a redirect that is not to a login page, 400
# or 409 for the empty or partial bodies posted here); "login" = redirect to /login/;
# "admin-login" = redirect to the admin's login; "401", "403", "404", "405" = that status.

_CONSOLE_READ = {
    "anonymous": "login",
    "no_profile": "403",
    "agent": "ok",
    "manager": "ok",
    "admin": "ok",
    "token": "login",
}
_CONSOLE_POST = {**_CONSOLE_READ, "agent": "in", "manager": "in", "admin": "in"}
# A wrong method is refused before the team is looked up.
_CONSOLE_GET_ONLY = {
    **_CONSOLE_READ,
    "no_profile": "405",
    "agent": "405",
    "manager": "405",
    "admin": "405",
}
_CONSOLE_POST_ONLY = _CONSOLE_GET_ONLY
_FINANCE_PAGE = {**_CONSOLE_READ, "agent": "403"}
_FINANCE_FILE = {**_FINANCE_PAGE, "manager": "in", "admin": "in"}
_API_READ = {
    "anonymous": "401",
    "no_profile": "403",
    "agent": "ok",
    "manager": "ok",
    "admin": "ok",
    "token": "ok",
}
_API_READ_ONLY_POST = {
    **_API_READ,
    "agent": "405",
    "manager": "405",
    "admin": "405",
    "token": "405",
}
_API_FINANCE = {**_API_READ, "agent": "403", "manager": "in", "admin": "in", "token": "in"}
_API_FINANCE_POST = {**_API_FINANCE, "manager": "405", "admin": "405", "token": "405"}
_KNOWLEDGE_POST = {**_API_READ_ONLY_POST, "agent": "403"}
_PUBLIC = dict.fromkeys(ROLES, "ok")

# route pattern → {method: {role: outcome}}. Every non-admin route of the project.
ROUTES: dict[str, dict[str, dict[str, str]]] = {
    "": {"GET": dict.fromkeys(ROLES, "in")},  # → the queue
    "login/": {"GET": _PUBLIC, "POST": dict.fromkeys(ROLES, "in")},
    # → the login page (checked last: it ends the sessions).
    "logout/": {"GET": dict.fromkeys(ROLES, "405"), "POST": dict.fromkeys(ROLES, "login")},
    "console/": {"GET": _CONSOLE_READ, "POST": _CONSOLE_GET_ONLY},
    "console/c/<int:pk>": {"GET": _CONSOLE_READ, "POST": _CONSOLE_GET_ONLY},
    "console/c/<int:pk>/draft": {"GET": _CONSOLE_READ, "POST": _CONSOLE_GET_ONLY},
    "console/c/<int:pk>/draft/stream": {"GET": _CONSOLE_READ, "POST": _CONSOLE_GET_ONLY},
    "console/c/<int:pk>/reply": {"GET": _CONSOLE_POST_ONLY, "POST": _CONSOLE_POST},
    "console/c/<int:pk>/close": {"GET": _CONSOLE_POST_ONLY, "POST": _CONSOLE_POST},
    "console/c/<int:pk>/intent": {"GET": _CONSOLE_READ, "POST": _CONSOLE_POST},
    # The conversation's claim: the page's renewal, an explicit take-over, a release.
    "console/c/<int:pk>/claim": {"GET": _CONSOLE_POST_ONLY, "POST": _CONSOLE_POST},
    "console/c/<int:pk>/take-over": {"GET": _CONSOLE_POST_ONLY, "POST": _CONSOLE_POST},
    "console/c/<int:pk>/release": {"GET": _CONSOLE_POST_ONLY, "POST": _CONSOLE_POST},
    # The knowledge picker and the read-only article page: the team's agents.
    "console/c/<int:pk>/insert": {"GET": _CONSOLE_READ, "POST": _CONSOLE_GET_ONLY},
    "console/c/<int:pk>/insert/macro/<int:macro_id>": {
        "GET": _CONSOLE_READ,
        "POST": _CONSOLE_GET_ONLY,
    },
    "console/c/<int:pk>/insert/article/<int:article_id>": {
        "GET": _CONSOLE_READ,
        "POST": _CONSOLE_GET_ONLY,
    },
    "console/articles/<int:pk>": {"GET": _CONSOLE_READ, "POST": _CONSOLE_GET_ONLY},
    # The composer tools (an empty post is a 400: no model is asked).
    "console/c/<int:pk>/compose": {"GET": _CONSOLE_POST_ONLY, "POST": _CONSOLE_POST},
    "accounting/": {"GET": _FINANCE_PAGE},
    "accounting/whatif": {"GET": _FINANCE_PAGE},
    "accounting/report.html": {"GET": _FINANCE_FILE},
    "accounting/report.pdf": {"GET": _FINANCE_FILE},
    "accounting/experiments": {"GET": _FINANCE_PAGE},
    "api/v1/messages": {
        "GET": {**_API_READ_ONLY_POST, "token": "405"},
        "POST": {**_API_READ, "agent": "403", "manager": "403", "admin": "403", "token": "in"},
    },
    "api/v1/messages/<int:pk>": {"GET": _API_READ, "POST": _API_READ_ONLY_POST},
    "api/v1/conversations": {"GET": _API_READ, "POST": _API_READ_ONLY_POST},
    "api/v1/conversations/<int:pk>": {"GET": _API_READ, "POST": _API_READ_ONLY_POST},
    "api/v1/conversations/<int:pk>/messages": {"GET": _API_READ, "POST": _API_READ_ONLY_POST},
    "api/v1/drafts/<int:pk>": {"GET": _API_READ, "POST": _API_READ_ONLY_POST},
    "api/v1/drafts/<int:pk>/action": {
        "GET": {**_API_READ_ONLY_POST},
        "POST": {**_API_READ, "agent": "in", "manager": "in", "admin": "in", "token": "in"},
    },
    # Knowledge: the team reads; integrations (a token), managers and admins write (PUT and
    # DELETE on an item, so POST is 405; a list takes no write), a plain agent is refused an
    # item's write first (403). The macro and the article share the external id below.
    "api/v1/knowledge/articles": {"GET": _API_READ, "POST": _API_READ_ONLY_POST},
    "api/v1/knowledge/articles/<path:external_id>": {"GET": _API_READ, "POST": _KNOWLEDGE_POST},
    "api/v1/knowledge/macros": {"GET": _API_READ, "POST": _API_READ_ONLY_POST},
    "api/v1/knowledge/macros/<path:external_id>": {"GET": _API_READ, "POST": _KNOWLEDGE_POST},
    "api/v1/encs": {"GET": _API_FINANCE, "POST": _API_FINANCE_POST},
    "api/v1/encs/knowledge/articles": {"GET": _API_FINANCE, "POST": _API_FINANCE_POST},
    "api/v1/encs/knowledge/macros": {"GET": _API_FINANCE, "POST": _API_FINANCE_POST},
    "api/v1/encs/knowledge/stale": {"GET": _API_FINANCE, "POST": _API_FINANCE_POST},
    "api/v1/encs/knowledge/gaps": {"GET": _API_FINANCE, "POST": _API_FINANCE_POST},
    "api/v1/encs/whatif": {"GET": _API_FINANCE, "POST": _API_FINANCE_POST},
    # The schema and its docs are public: they describe the API, they hold no data.
    "api/schema/": {"GET": _PUBLIC},
    "api/docs/": {"GET": _PUBLIC},
}

# Every model in the admin, and who gets in: admins only (the site's own rule, see
# csbot.admin_site). A model registered without an entry here fails the matrix.
ADMIN_MODELS = {
    "accounting.accountingsettings",
    "accounting.fixedcost",
    "accounting.monthlyreport",
    "auditlog.logentry",
    "auth.group",
    "auth.user",
    "csbot.agentprofile",
    "csbot.apitoken",
    "csbot.channel",
    "csbot.conversation",
    "csbot.message",
    "csbot.team",
    "django_celery_beat.clockedschedule",
    "django_celery_beat.crontabschedule",
    "django_celery_beat.intervalschedule",
    "django_celery_beat.periodictask",
    "django_celery_beat.solarschedule",
    "drafting.agentaction",
    "drafting.cachedreply",
    "drafting.cascadepolicy",
    "drafting.distillrun",
    "drafting.draft",
    "drafting.draftattempt",
    "drafting.experiment",
    "drafting.intent",
    "drafting.intentexample",
    "drafting.knowledgearticle",
    "drafting.macro",
    "drafting.messageintent",
    "drafting.modelendpoint",
    "drafting.replyexample",
    "drafting.trainedclassifier",
}
# Site-level admin routes besides the models' own. Only the login page is open to all.
ADMIN_SITE_ROUTES = {
    "admin/": "admins",
    "admin/login/": "public",
    "admin/logout/": "admins",
    "admin/password_change/": "admins",
    "admin/password_change/done/": "admins",
    "admin/autocomplete/": "admins",
    "admin/jsi18n/": "admins",
    "admin/r/<path:content_type_id>/<path:object_id>/": "admins",
    "admin/<app_label>/": "admins",  # one pattern: a regex of the registered apps
    "admin/(?P<url>.*)$": "catch-all",
}


# Routes of the admin's models look like admin/drafting/modelendpoint/<path:object_id>/change/.
_ADMIN_MODEL_ROUTE = re.compile(r"^admin/(?P<app>[a-z_]+)/(?P<model>[a-z_]+)/(?P<rest>.*)$")


def _site_route(route: str) -> str:
    return "admin/<app_label>/" if route.startswith("admin/^(?P<app_label>") else route


def _admin_model_of(route: str) -> str | None:
    match = _ADMIN_MODEL_ROUTE.match(route)
    return f"{match['app']}.{match['model']}" if match else None


def test_every_route_of_the_project_has_an_expected_access_rule() -> None:
    routes = [route for route, _view in all_routes()]
    unclassified = [
        route
        for route in routes
        if route not in ROUTES
        and _site_route(route) not in ADMIN_SITE_ROUTES
        and _admin_model_of(route) not in ADMIN_MODELS
    ]
    assert unclassified == []
    registered = {model._meta.label_lower for model in admin.site._registry}
    assert registered == ADMIN_MODELS
    # And the table names no route that no longer exists.
    assert set(ROUTES) - set(routes) == set()
    assert len(routes) > 100  # the admin's routes were walked too


def _url(route: str, world: World) -> str:
    pk = {
        "console/c/<int:pk>": world.conversation.pk,
        "api/v1/messages/<int:pk>": world.draft.message_id,
        "api/v1/conversations/<int:pk>": world.conversation.pk,
        "api/v1/drafts/<int:pk>": world.draft.pk,
    }
    route = route.replace("<int:macro_id>", str(world.macro.pk))
    route = route.replace("<int:article_id>", str(world.article.pk))
    route = route.replace("<path:external_id>", "shipping")
    if route.startswith("console/articles/"):
        route = route.replace("<int:pk>", str(world.article.pk))
    for prefix, value in sorted(pk.items(), key=lambda kv: -len(kv[0])):
        if route.startswith(prefix):
            route = route.replace("<int:pk>", str(value))
    assert "<" not in route, route
    return "/" + route


def _post_data(route: str, world: World) -> dict[str, Any]:
    if route.endswith("/reply"):
        return {"text": "Following up on your parcel.", "kind": "none"}
    if route.endswith("/intent"):
        message_id = world.draft.message_id
        return {"message_id": message_id, "intent_id": world.intent.pk}
    if route == "api/v1/messages":
        return {
            "conversation_external_id": "matrix-new",
            "channel_message_id": "matrix-new-1",
            "text": "Hello",
        }
    return {}


def _outcome(response: Any) -> str:
    status = response.status_code
    location = response.get("Location", "")
    if status == 302 and location.startswith("/login/"):
        return "login"
    if status == 302 and location.startswith("/admin/login/"):
        return "admin-login"
    if status in (401, 403, 404, 405):
        return str(status)
    if status == 200:
        return "ok"
    assert status < 500, (status, response.content[:500])
    return "in"


def _matches(expected: str, actual: str) -> bool:
    return actual == expected or (expected == "in" and actual == "ok")


def test_each_role_reaches_exactly_the_routes_it_should(world: World) -> None:
    failures = []
    for route, methods in sorted(ROUTES.items(), key=lambda item: item[0] == "logout/"):
        url = _url(route, world)
        for method, expected in methods.items():
            assert set(expected) == set(ROLES), route
            for role in ROLES:
                client = world.clients[role]
                if method == "GET":
                    response = client.get(url)
                else:
                    response = client.post(url, _post_data(route, world))
                actual = _outcome(response)
                if not _matches(expected[role], actual):
                    failures.append((method, url, role, expected[role], actual))
    assert failures == []


def _admin_urls(world: World) -> list[str]:
    """Concrete URLs for every admin route: models' pages with an existing object (or a
    missing one), site pages as they are."""
    urls = []
    for route, _view in all_routes():
        if not route.startswith("admin/") or route == "admin/(?P<url>.*)$":
            continue
        model_label = _admin_model_of(route)
        if route.startswith("admin/^("):
            urls.append("/admin/drafting/")
            continue
        if route == "admin/r/<path:content_type_id>/<path:object_id>/":
            continue  # a redirect to the object's own site page, for admins only (below)
        if model_label is not None and "<" in route:
            model = next(m for m in admin.site._registry if m._meta.label_lower == model_label)
            obj = model._default_manager.order_by("pk").first()
            route = re.sub(r"<path:object_id>", str(obj.pk if obj else 999999), route)
            route = re.sub(r"<int:pk>", str(obj.pk if obj else 999999), route)
            route = re.sub(r"<str:kind>", "html", route)
            route = re.sub(r"<id>", str(obj.pk if obj else 999999), route)
        assert "<" not in route and "(?P" not in route, route
        urls.append("/" + route)
    return urls


def _switched_off(url: str, status: int) -> bool:
    """Admin pages an admin is refused on purpose: adding reports and classifiers (made, not
    added), changing or deleting the audit log (read-only), deleting a recorded fact
    (csbot.admin_records), autocomplete without its query (403), and pages of an object that
    does not exist (404)."""
    if status == 403:
        return (
            url.endswith("/add/")
            or url.startswith("/admin/auditlog/logentry/")
            or url == "/admin/autocomplete/"
            or (url.endswith("/delete/") and _undeletable_record(url))
        )
    return status == 404 and "/999999/" in url


def _undeletable_record(url: str) -> bool:
    app, model = url.split("/")[2:4]
    model_admin = next(
        (a for m, a in admin.site._registry.items() if m._meta.label_lower == f"{app}.{model}"),
        None,
    )
    return isinstance(model_admin, RecordAdmin) and not model_admin.deletable


@pytest.mark.slow
def test_the_admin_site_is_for_admins_only(world: World) -> None:
    staff_manager = AgentProfileFactory.create(
        team=world.acme.team, role=AgentProfile.Role.MANAGER, user__username="staff-manager"
    ).user
    staff_manager.is_staff = True
    staff_manager.save()
    outsiders = {role: world.clients[role] for role in ROLES if role != "admin"}
    # Staff alone is not enough: the admin configures every team's money.
    outsiders["staff manager"] = _logged_in(staff_manager)
    urls = _admin_urls(world)
    assert len(urls) > 100
    failures = []
    inline: set[str] = set()  # models whose admin pages hold an inline script
    for url in urls:
        for role, client in outsiders.items():
            # Posts where the admin writes: changelists (actions), add, change, delete.
            writes = url.endswith(("/add/", "/change/", "/delete/")) or url.count("/") == 4
            for method in ("get", "post") if writes or url == "/admin/login/" else ("get",):
                actual = _outcome(getattr(client, method)(url))
                expected = "admin-login"
                if url == "/admin/login/":
                    expected = "ok"  # the form (with its errors when posted)
                elif url == "/admin/logout/":
                    expected = "in"  # back to the admin's index, which asks for a login
                if actual != expected:
                    failures.append((method, url, role, expected, actual))
        response = world.clients["admin"].get(url)
        if url in ("/admin/logout/",):
            continue
        refused = response.status_code not in (200, 302) or _outcome(response) == "admin-login"
        if refused and not _switched_off(url, response.status_code):
            failures.append(("get", url, "admin", "in", str(response.status_code)))
        if response.status_code == 200 and response["Content-Type"].startswith("text/html"):
            html = response.content.decode()
            if INLINE_SCRIPT.search(html) or EVENT_HANDLER.search(html):
                inline.add(url.split("/")[3])
    assert failures == [], "\n".join(map(str, failures))
    # The Content-Security-Policy blocks inline scripts. Only django-celery-beat's periodic
    # task form has one: it adds a reading of the crontab to the help text (cosmetic).
    assert inline == {"periodictask"}


def test_a_team_admin_who_is_staff_gets_into_the_admin_site(world: World) -> None:
    team_admin = AgentProfileFactory.create(
        team=world.acme.team, role=AgentProfile.Role.ADMIN, user__username="team-admin"
    ).user
    client = _logged_in(team_admin)
    assert _outcome(client.get("/admin/")) == "admin-login"  # not staff yet
    team_admin.is_staff = True
    team_admin.save()
    assert client.get("/admin/").status_code == 200


ADAPTER_DECISIONS = ("shadow-start", "shadow-stop", "experiment", "promote", "rollback")


def test_adapter_decisions_need_the_change_permission_and_the_csrf_token(world: World) -> None:
    """A run's decisions (drafting.admin.adapters): outsiders get the admin's login; a staff
    team admin needs the change permission on distill runs (403 without it, even to the
    confirmation page); an admin's POST needs the CSRF token. The admin site is not scoped by
    team (its admins configure every team); a run that does not exist is 404."""
    run = distill_run(world.acme)
    urls = [f"/admin/drafting/distillrun/{run.pk}/{key}/" for key in ADAPTER_DECISIONS]
    viewer = AgentProfileFactory.create(
        team=world.acme.team, role=AgentProfile.Role.ADMIN, user__username="adapter-viewer"
    ).user
    viewer.is_staff = True
    viewer.save()
    viewer.user_permissions.add(Permission.objects.get(codename="view_distillrun"))
    csrf_admin = Client(enforce_csrf_checks=True)
    csrf_admin.force_login(get_user_model().objects.get(username="acme-admin"))
    failures = []
    for url in urls:
        for role in ("anonymous", "no_profile", "agent", "manager", "token"):
            for method in ("get", "post"):
                actual = _outcome(getattr(world.clients[role], method)(url, {"share": "0.1"}))
                if actual != "admin-login":
                    failures.append((method, url, role, actual))
        for method in ("get", "post"):
            actual = _outcome(getattr(_logged_in(viewer), method)(url, {"share": "0.1"}))
            if actual != "403":
                failures.append((method, url, "view-only admin", actual))
        if _outcome(csrf_admin.post(url, {"share": "0.1"})) != "403":
            failures.append(("post", url, "admin without CSRF token", "not 403"))
        if _outcome(world.clients["admin"].get(url.replace(f"/{run.pk}/", "/999999/"))) != "404":
            failures.append(("get", url, "admin, missing run", "not 404"))
    assert failures == []
    run.refresh_from_db()
    assert run.stage == run.Stage.CANDIDATE


# --- Another team's data -----------------------------------------------------------------------


def test_another_teams_conversations_and_drafts_are_not_found_on_console_and_api(
    world: World,
) -> None:
    other = world.other_conversation
    draft = world.other_draft
    agent = world.clients["agent"]
    console = [
        ("get", f"/console/c/{other.pk}", {}),
        ("get", f"/console/c/{other.pk}/draft", {}),
        ("get", f"/console/c/{other.pk}/draft/stream", {}),
        ("get", f"/console/c/{other.pk}/intent", {}),
        ("post", f"/console/c/{other.pk}/reply", {"text": "hi", "kind": "none"}),
        ("post", f"/console/c/{other.pk}/close", {}),
        ("post", f"/console/c/{other.pk}/claim", {}),
        ("post", f"/console/c/{other.pk}/take-over", {}),
        ("post", f"/console/c/{other.pk}/release", {}),
        (
            "post",
            f"/console/c/{other.pk}/intent",
            {"message_id": draft.message_id, "intent_id": world.intent.pk},
        ),
        # Their message posted against our conversation is not found either.
        (
            "post",
            f"/console/c/{world.conversation.pk}/reply",
            {"text": "hi", "kind": "use", "inbound_message_id": draft.message_id},
        ),
        ("post", f"/console/c/{other.pk}/compose", {"tool": "shorten", "text": "hi"}),
        (
            "post",
            f"/console/c/{world.conversation.pk}/compose",
            {"tool": "shorten", "text": "hi", "message_id": draft.message_id},
        ),
    ]
    api = [
        ("get", f"/api/v1/conversations/{other.pk}", {}),
        ("get", f"/api/v1/conversations/{other.pk}/messages", {}),
        ("get", f"/api/v1/messages/{draft.message_id}", {}),
        ("get", f"/api/v1/drafts/{draft.pk}", {}),
        ("post", f"/api/v1/drafts/{draft.pk}/action", {"kind": "use", "agent": "x"}),
    ]
    token = world.acme.api()
    session = APIClient()
    session.force_login(world.acme.agent)
    statuses = [getattr(agent, m)(url, data).status_code for m, url, data in console]
    statuses += [getattr(token, m)(url, data, format="json").status_code for m, url, data in api]
    statuses += [getattr(session, m)(url, data, format="json").status_code for m, url, data in api]
    assert statuses == [404] * (len(console) + 2 * len(api))
    other.refresh_from_db()
    assert other.status == Conversation.Status.OPEN  # the close did not happen
    assert other.assigned_to is None  # nor a claim or a take-over
    assert not other.messages.filter(direction="out").exists()
    # Their team's ENCS and policies are not found on the dashboard either.
    manager = world.clients["manager"]
    assert manager.get("/accounting/", {"team": world.globex.team.pk}).status_code == 404
    assert manager.get("/accounting/", {"policy": world.globex.policy.pk}).status_code == 404
    # A token's list holds its own team's conversations only.
    listed = {c["id"] for c in token.get("/api/v1/conversations").json()["results"]}
    assert listed == {world.conversation.pk}


# --- CSRF --------------------------------------------------------------------------------------


def _csrf_token(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.content.decode())
    assert match is not None
    return match.group(1)


def test_console_forms_need_the_csrf_token(world: World) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.acme.agent)
    page = f"/console/c/{world.conversation.pk}"
    base = f"/console/c/{world.conversation.pk}"
    forms: list[tuple[str, dict[str, Any]]] = [
        (f"{base}/intent", {"message_id": world.draft.message_id, "intent_id": world.intent.pk}),
        (f"{base}/reply", {"text": "On its way.", "kind": "none"}),
        (f"{base}/claim", {}),
        (f"{base}/take-over", {}),
        (f"{base}/release", {}),
        (f"{base}/close", {}),
    ]
    assert [client.post(url, data).status_code for url, data in forms] == [403] * 6
    assert not world.conversation.messages.filter(direction="out").exists()
    token = _csrf_token(client, page)
    with_token = [
        client.post(url, {**data, "csrfmiddlewaretoken": token}).status_code for url, data in forms
    ]
    assert with_token == [302, 302, 200, 302, 302, 302]
    world.conversation.refresh_from_db()
    assert world.conversation.status == Conversation.Status.CLOSED
    assert world.conversation.messages.filter(direction="out").count() == 1
    # htmx posts send the token as a header (base.html's hx-headers).
    htmx = client.post(
        f"{base}/intent",
        {"message_id": world.draft.message_id, "intent_id": world.intent.pk},
        HTTP_X_CSRFTOKEN=token,
        HTTP_HX_REQUEST="true",
    )
    assert htmx.status_code == 200


def test_the_login_form_needs_the_csrf_token(world: World) -> None:
    client = Client(enforce_csrf_checks=True)
    credentials = {"username": world.acme.agent.username, "password": "pw-for-tests"}
    assert client.post("/login/", credentials).status_code == 403
    token = _csrf_token(client, "/login/")
    response = client.post("/login/", {**credentials, "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert response["Location"] == "/console/"


def test_the_api_needs_csrf_for_sessions_but_not_for_tokens(world: World) -> None:
    body = {
        "kind": "none",
        "agent": world.acme.agent.username,
        "final_text": "Sorted.",
        "shown_at": timezone.now().isoformat(),
    }
    session = APIClient(enforce_csrf_checks=True)
    session.force_login(world.acme.agent)
    refused = session.post(f"/api/v1/drafts/{world.draft.pk}/action", body, format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    tokened = APIClient(enforce_csrf_checks=True)
    tokened.credentials(HTTP_AUTHORIZATION=f"Token {world.acme.token}")
    response = tokened.post(f"/api/v1/drafts/{world.draft.pk}/action", body, format="json")
    assert response.status_code == 201, response.json()


# --- Tokens ------------------------------------------------------------------------------------


def test_a_revoked_token_is_refused_and_a_new_one_of_the_channel_works(world: World) -> None:
    client = world.acme.api()
    assert client.get("/api/v1/conversations").status_code == 200
    for token in world.acme.channel.tokens.all():
        services.api_token_revoke(token=token)
    refused = client.get("/api/v1/conversations")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == "Token"
    _token, key = services.api_token_create(channel=world.acme.channel, name="replacement")
    fresh = APIClient()
    fresh.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert fresh.get("/api/v1/conversations").status_code == 200


def test_revoking_through_the_admin_stops_the_token(world: World) -> None:
    token = world.acme.channel.tokens.get()
    response = world.clients["admin"].post(
        "/admin/csbot/apitoken/",
        {"action": "revoke", "_selected_action": [token.pk]},
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert world.acme.api().get("/api/v1/conversations").status_code == 401


def test_a_token_revoked_by_another_process_is_refused_on_the_next_request(
    world: World, settings: Any, transactional_db: None
) -> None:
    """Web processes keep the tokens they checked (API_TOKEN_CACHE_SECONDS); a revocation in
    another process reaches them through the shared cache on their very next request."""
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("needs Redis (CELERY_BROKER_URL=redis://…)")
    shared = settings.CELERY_BROKER_URL
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": shared,
            "KEY_PREFIX": "csbot",  # as the settings give every process
        }
    }
    settings.API_TOKEN_CACHE_SECONDS = 3600  # nothing here expires on its own
    client = world.acme.api()
    assert client.get("/api/v1/conversations").status_code == 200  # checked and kept
    token = world.acme.channel.tokens.get()
    db = connection.settings_dict
    revoke = (
        "from csbot import services; from csbot.models import ApiToken; "
        f"services.api_token_revoke(token=ApiToken.objects.get(pk={token.pk}))"
    )
    other = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "manage.py", "shell", "-c", revoke],
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "CACHE_URL": shared,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert other.returncode == 0, other.stderr
    refused = client.get("/api/v1/conversations")
    assert refused.status_code == 401
    assert refused.json()["detail"] == "Invalid or revoked token."


def test_a_key_created_in_the_admin_is_shown_once_in_the_answer_and_never_in_a_cookie(
    world: World,
) -> None:
    admin_client = world.clients["admin"]
    response = admin_client.post(
        "/admin/csbot/apitoken/add/", {"channel": str(world.acme.channel.pk), "name": "bridge"}
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    match = re.search(r'<code id="new-api-key">([^<]+)</code>', response.content.decode())
    assert match, response.content.decode()[:500]
    key = match.group(1)
    # The key works, and it travelled in no cookie (the messages cookie was signed, not
    # encrypted) nor in the session.
    fresh = APIClient()
    fresh.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert fresh.get("/api/v1/conversations").status_code == 200
    assert all(key not in cookie.value for cookie in response.cookies.values())
    session = admin_client.session
    assert all(key not in str(value) for _name, value in session.items())
    assert _rows_containing(key) == {}
    # Not shown again: the token's pages carry its prefix only.
    token = world.acme.channel.tokens.get(name="bridge")
    page = admin_client.get(f"/admin/csbot/apitoken/{token.pk}/change/").content.decode()
    assert token.prefix in page and key not in page
    assert key not in admin_client.get("/admin/csbot/apitoken/").content.decode()


def test_a_token_ingests_into_its_own_channel_and_team_only(world: World) -> None:
    response = world.acme.api().post(
        "/api/v1/messages",
        {"conversation_external_id": "matrix", "channel_message_id": "t-1", "text": "Hello"},
        format="json",
    )
    assert response.status_code == 201
    conversation = Conversation.objects.get(pk=response.json()["conversation"])
    assert (conversation.team, conversation.channel) == (world.acme.team, world.acme.channel)
    # The same external id on Globex's channel stays Globex's conversation.
    assert world.other_conversation.messages.count() == 1


# --- Users -------------------------------------------------------------------------------------


def test_an_inactive_user_is_logged_out_of_the_console(world: World) -> None:
    agent = world.acme.agent
    client = world.clients["agent"]
    assert client.get("/console/").status_code == 200
    get_user_model().objects.filter(pk=agent.pk).update(is_active=False)
    assert _outcome(client.get("/console/")) == "login"


def test_a_draft_of_another_team_cannot_be_claimed_with_our_message(world: World) -> None:
    """The reply form names a draft by id: another team's draft id is not found."""
    response = world.clients["agent"].post(
        f"/console/c/{world.conversation.pk}/reply",
        {
            "text": "Here you go.",
            "kind": "use",
            "inbound_message_id": world.draft.message_id,
            "draft_id": world.other_draft.pk,
        },
    )
    assert response.status_code == 404
    assert not AgentAction.objects.filter(draft=world.other_draft).exists()
    assert not world.conversation.messages.filter(direction="out").exists()


# --- Rate limits -------------------------------------------------------------------------------


def _caches(settings: Any, backend: str) -> None:
    """The default cache as production (Redis, shared) or as `make run` and tests have it.
    A fresh key prefix gives fresh counters without flushing a database others use."""
    if backend == "redis":
        if not settings.CELERY_BROKER_URL.startswith("redis"):
            pytest.skip("needs Redis (CELERY_BROKER_URL=redis://…)")
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": settings.CELERY_BROKER_URL,
                "KEY_PREFIX": f"csbot-test-{secrets.token_hex(4)}",
            }
        }
    else:
        cache.clear()


def _ingest(client: APIClient, message_id: str) -> Any:
    return client.post(
        "/api/v1/messages",
        {"conversation_external_id": "limits", "channel_message_id": message_id, "text": "Hi"},
        format="json",
    )


@pytest.mark.parametrize("backend", ["redis", "locmem"])
def test_ingest_beyond_the_token_rate_is_429_with_retry_after(
    world: World, settings: Any, backend: str
) -> None:
    _caches(settings, backend)
    settings.CSBOT_INGEST_RATE = "3/h"  # an hour's window: no reset in the middle of the test
    client = world.acme.api()
    statuses = [_ingest(client, f"m{i}").status_code for i in range(4)]
    assert statuses == [201, 201, 201, 429]
    refused = _ingest(client, "m5")
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert "throttled" in refused.json()["detail"]
    # The count is per token: another token of the same channel, and another team's, go on.
    second = APIClient()
    second.credentials(HTTP_AUTHORIZATION=f"Token {token_for(world.acme.channel)}")
    assert _ingest(second, "m6").status_code == 201
    assert _ingest(world.globex.api(), "m7").status_code == 201
    # Nothing beyond the limit was stored.
    assert (
        Conversation.objects.get(team=world.acme.team, external_id="limits").messages.count() == 4
    )


def _login(client: Client, username: str, password: str) -> Any:
    return client.post("/login/", {"username": username, "password": password})


@pytest.mark.parametrize("backend", ["redis", "locmem"])
def test_login_posts_beyond_the_username_rate_are_429_even_with_the_right_password(
    world: World, settings: Any, backend: str
) -> None:
    _caches(settings, backend)
    settings.CSBOT_LOGIN_RATE = "2/h"
    settings.CSBOT_LOGIN_IP_RATE = "100/h"
    username = world.acme.agent.username
    client = Client()
    assert [_login(client, username, "wrong").status_code for _ in range(2)] == [200, 200]
    # Same username in other letters, the right password: refused all the same.
    refused = _login(client, username.upper(), "pw-for-tests")
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert "Too many login attempts" in refused.content.decode()
    refused = _login(client, username, "pw-for-tests")
    assert refused.status_code == 429
    assert _outcome(client.get("/console/")) == "login"  # not logged in
    # Another user from the same address is not held back by this username's count.
    other = AgentProfileFactory.create(team=world.acme.team, user__username="other-agent").user
    assert _login(client, other.username, "pw-for-tests").status_code == 302


def test_login_posts_beyond_the_address_rate_are_429_whatever_the_username(
    world: World, settings: Any
) -> None:
    settings.CSBOT_LOGIN_RATE = "100/h"
    settings.CSBOT_LOGIN_IP_RATE = "3/h"
    client = Client()
    statuses = [_login(client, f"guess-{i}", "password1").status_code for i in range(4)]
    assert statuses == [200, 200, 200, 429]
    # Another address is counted apart.
    elsewhere = Client(REMOTE_ADDR="10.1.2.3")
    assert _login(elsewhere, world.acme.agent.username, "pw-for-tests").status_code == 302


def test_behind_a_proxy_the_address_limit_counts_the_forwarded_client(
    world: World, settings: Any
) -> None:
    settings.CSBOT_LOGIN_RATE = "100/h"
    settings.CSBOT_LOGIN_IP_RATE = "2/h"
    settings.CSBOT_CLIENT_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    proxy = Client(REMOTE_ADDR="10.0.0.1")

    def attempt(forwarded: str | None) -> int:
        headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
        response = proxy.post("/login/", {"username": "x", "password": "y"}, headers=headers)
        return int(response.status_code)

    # The last address is the one our proxy saw; what the client wrote before it is ignored.
    assert [attempt(f"1.1.1.{i}, 203.0.113.7") for i in range(3)] == [200, 200, 429]
    assert attempt("198.51.100.9") == 200  # another client behind the same proxy
    # No header, or a malformed one: the proxy's own address, counted and never an error.
    assert [attempt(None), attempt("not-an-address"), attempt(None)] == [200, 200, 429]


def test_the_admin_login_shares_the_login_limits(world: World, settings: Any) -> None:
    settings.CSBOT_LOGIN_RATE = "2/h"
    settings.CSBOT_LOGIN_IP_RATE = "100/h"
    client = Client()
    username = "acme-admin"
    # One guess on the console's form, one on the admin's: the third is refused.
    assert _login(client, username, "wrong").status_code == 200
    assert client.post("/admin/login/", {"username": username, "password": "x"}).status_code == 200
    refused = client.post("/admin/login/", {"username": username, "password": "pw-for-tests"})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert _outcome(client.get("/admin/")) == "admin-login"


def test_with_the_cache_down_ingest_and_login_go_on_and_say_so(
    world: World, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
        }
    }
    settings.CSBOT_INGEST_RATE = "1/h"
    with caplog.at_level(logging.WARNING, logger="csbot.security"):
        assert [_ingest(world.acme.api(), f"d{i}").status_code for i in range(2)] == [201, 201]
        assert _login(Client(), world.acme.agent.username, "pw-for-tests").status_code == 302
    assert "rate limit ingest not checked: the cache is unreachable" in caplog.text
    assert "rate limit login-user not checked" in caplog.text


# --- HTTPS, cookies and browser policies -------------------------------------------------------


def _manage(tmp_path: Path, *args: str, **changes: str | None) -> subprocess.CompletedProcess[str]:
    """`manage.py` in a fresh interpreter with a production-like environment plus `changes`
    (None removes a variable): the settings module is read exactly as at start-up."""
    ours = ("CSBOT_", "DJANGO_", "CACHE_URL")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    environment.update(
        DJANGO_SETTINGS_MODULE="csbot.settings",
        DJANGO_DEBUG="0",
        # Long and varied, as `check --deploy` wants a production key.
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="csbot.example.com",
        CSBOT_VAR_DIR=str(tmp_path),
        CSBOT_HTTPS="1",
        CACHE_URL="redis://127.0.0.1:6379/2",
    )
    for key, value in changes.items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.slow
def test_check_deploy_passes_with_https_on_and_a_shared_cache(tmp_path: Path) -> None:
    result = _manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.slow
def test_check_deploy_names_what_production_still_lacks(tmp_path: Path) -> None:
    result = _manage(
        tmp_path, "check", "--deploy", "--fail-level", "WARNING", CSBOT_HTTPS=None, CACHE_URL=None
    )
    assert result.returncode != 0
    found = set(re.findall(r"\(([a-z_]+\.[A-Z]\d{3})\)", result.stdout + result.stderr))
    # HSTS, the HTTPS redirect, secure session and CSRF cookies, and the per-process cache.
    assert found == {
        "security.W004",
        "security.W008",
        "security.W012",
        "security.W016",
        "csbot.W001",
    }


@pytest.mark.slow
def test_https_settings_follow_csbot_https(tmp_path: Path) -> None:
    report = (
        "import json, django; django.setup(); from django.conf import settings as s; print(json."
        "dumps([s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "list(getattr(s, 'SECURE_PROXY_SSL_HEADER', None) or []), s.CACHES['default']['BACKEND']]))"
    )
    on = _manage(tmp_path, "shell", "-c", report, CSBOT_PROXY_SSL_HEADER="X-Forwarded-Proto")
    assert on.returncode == 0, on.stderr
    assert json.loads(on.stdout.strip().splitlines()[-1]) == [
        True,
        True,
        True,
        31536000,
        True,
        ["HTTP_X_FORWARDED_PROTO", "https"],
        "django.core.cache.backends.redis.RedisCache",
    ]
    off = _manage(tmp_path, "shell", "-c", report, CSBOT_HTTPS=None, CACHE_URL=None)
    assert json.loads(off.stdout.strip().splitlines()[-1]) == [
        False,
        False,
        False,
        0,
        True,
        [],
        "django.core.cache.backends.locmem.LocMemCache",
    ]
    bad = _manage(tmp_path, "check", CSBOT_INGEST_RATE="lots")
    assert bad.returncode != 0
    assert "CSBOT_INGEST_RATE='lots' is not a rate" in bad.stderr


def test_pages_carry_the_browser_policies(world: World) -> None:
    response = world.clients["agent"].get(f"/console/c/{world.conversation.pk}")
    assert response.status_code == 200
    policy = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    assert policy["script-src"] == "'self'"  # no inline script, no eval
    assert policy["default-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_with_https_on_cookies_are_secure_hsts_is_sent_and_http_is_redirected(
    world: World, settings: Any
) -> None:
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    client = Client()
    plain = client.get("/login/")
    assert plain.status_code == 301
    assert plain["Location"] == "https://testserver/login/"
    page = client.get("/login/", secure=True)
    assert page["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert page.cookies["csrftoken"]["secure"] is True
    logged_in = client.post(
        "/login/",
        {"username": world.acme.agent.username, "password": "pw-for-tests"},
        secure=True,
    )
    assert logged_in.status_code == 302
    assert logged_in.cookies["sessionid"]["secure"] is True
    assert logged_in.cookies["sessionid"]["httponly"] is True


def test_console_dashboard_login_and_api_docs_have_no_inline_script(world: World) -> None:
    """The Content-Security-Policy forbids inline scripts: the pages must not need any."""
    pages = {
        "agent": [
            "/console/",
            f"/console/c/{world.conversation.pk}",
            f"/console/c/{world.conversation.pk}/draft",
            f"/console/c/{world.conversation.pk}/intent",
        ],
        "manager": ["/accounting/"],
        "anonymous": ["/login/", "/api/docs/"],
    }
    for role, urls in pages.items():
        for url in urls:
            response = world.clients[role].get(url)
            assert response.status_code == 200, url
            html = response.content.decode()
            assert INLINE_SCRIPT.findall(html) == [], url
            assert EVENT_HANDLER.findall(html) == [], url


# --- API keys stay out of the database, logs, pages and error reports --------------------------

KEY_ENV = "CSBOT_TEST_PAID_API_KEY"


def _rows_containing(text: str) -> dict[str, int]:
    """Every table of the database, each row cast to text: where `text` occurs."""
    found = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            quoted = connection.ops.quote_name(table)
            cursor.execute(
                f"SELECT count(*) FROM {quoted} AS t WHERE t::text LIKE %s",  # noqa: S608 - table names from the schema
                [f"%{text}%"],
            )
            count = cursor.fetchone()[0]
            if count:
                found[table] = count
    return found


def test_an_api_key_echoed_by_a_failing_provider_is_stored_logged_and_shown_nowhere(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.EMBEDDING_BACKEND = "none"  # no few-shot search: the provider call is the point
    secret = "sk-test-" + secrets.token_urlsafe(32)
    monkeypatch.setenv(KEY_ENV, secret)
    # A provider that refuses the key and, as some gateways do, repeats it in the error.
    refusal = Reply(
        status=401,
        body={"error": {"message": f"Incorrect API key provided: {secret}.", "code": "bad_key"}},
    )
    with openai_stub(refusal) as paid, caplog.at_level(logging.DEBUG):
        endpoint = EndpointFactory.create(
            name="paid-secret",
            kind=ModelEndpoint.Kind.PAID,
            base_url=paid.base_url,
            model_name="gpt-stub",
            api_key_env=KEY_ENV,
        )
        setup = make_team("Keys", endpoint=endpoint)
        result = ingest(setup, "keys", "keys-1", "Where is my refund?")
        assert result.draft is not None
        drafting_services.draft_generate(draft_id=result.draft.pk)
        # The admin's connection check meets the same refusal.
        admin_client = world.clients["admin"]
        checked = admin_client.post(
            "/admin/drafting/modelendpoint/",
            {"action": "test_connection", "_selected_action": [endpoint.pk]},
            follow=True,
        )
    # The key was sent (this is the path under test) and refused.
    assert paid.requests[0]["headers"]["Authorization"] == f"Bearer {secret}"
    attempt = DraftAttempt.objects.get(draft=result.draft)
    assert attempt.error_kind == "permanent"
    assert "Incorrect API key provided" in attempt.error_message
    assert "failed" in checked.content.decode()
    # Nowhere in the database, whatever the table (attempts, drafts, audit log, admin log…).
    assert _rows_containing(secret) == {}
    assert _rows_containing(KEY_ENV) != {}  # the scan does find what is stored: the name
    # Nowhere in the log records, nor in the pages that show the endpoint and the attempt.
    assert secret not in caplog.text
    pages = [
        checked.content.decode(),
        admin_client.get(f"/admin/drafting/modelendpoint/{endpoint.pk}/change/").content.decode(),
        admin_client.get(f"/admin/drafting/draftattempt/{attempt.pk}/change/").content.decode(),
        admin_client.get(f"/admin/drafting/draft/{result.draft.pk}/change/").content.decode(),
        setup.api().get(f"/api/v1/drafts/{result.draft.pk}").content.decode(),
    ]
    assert [secret in page for page in pages] == [False] * len(pages)
    assert KEY_ENV in pages[1]  # the endpoint names its variable


def _error_report(endpoint: ModelEndpoint, request: Any) -> str:
    """Django's error report (text and HTML) of `provider_for` failing for `endpoint`. A
    function of its own: the test's frame, which holds the key, is not in the traceback."""
    try:
        providers.provider_for(endpoint)
    except RuntimeError:
        reporter = ExceptionReporter(request, *sys.exc_info())
        return reporter.get_traceback_text() + reporter.get_traceback_html()
    raise AssertionError("provider_for did not fail")


def test_error_reports_hide_the_key_and_secret_settings(
    rf: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """Django's error page (DEBUG) and error e-mails show local variables and settings: the
    key read by `provider_for` and URLs with passwords must be hidden there."""
    secret = "sk-test-" + secrets.token_urlsafe(32)
    monkeypatch.setenv(KEY_ENV, secret)
    password = secrets.token_hex(8)
    settings.CACHE_URL = f"redis://:{password}@redis.internal:6379/2"
    endpoint = ModelEndpoint(
        name="p", kind=ModelEndpoint.Kind.PAID, base_url="https://x.example/v1", api_key_env=KEY_ENV
    )
    # Fail after the key was read, inside the function that holds it.
    monkeypatch.setattr(
        ModelEndpoint, "resolved_base_url", lambda self: (_ for _ in ()).throw(RuntimeError("boom"))
    )
    report = _error_report(endpoint, rf.get("/console/", HTTP_AUTHORIZATION=f"Bearer {secret}"))
    assert "provider_for" in report  # the frame is in the report…
    assert secret not in report  # …without the key
    assert password not in report
    assert "HTTP_AUTHORIZATION" in report  # the header is listed, its value hidden


# --- The policies in a real browser ------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_console_and_api_docs_work_under_the_content_security_policy(
    live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headless Chromium enforces the policy: the console's keyboard scripts, htmx (intent
    box, CSRF header) and the Swagger UI must run, with no violation reported."""
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS
    from tests.factories import PASSWORD

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    acme = make_team("Acme")
    conversation, draft = _conversation_with_draft(acme)
    draft.status, draft.text, draft.ready_at = Draft.Status.READY, "It ships today.", timezone.now()
    draft.save()
    Intent.objects.create(team=acme.team, name="where_is_my_parcel")
    violations: list[str] = []
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            page.goto(f"{live_server.url}/login/")
            page.fill("input[name=username]", acme.agent.username)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{live_server.url}/console/")
            # queue.js: Enter opens the selected conversation.
            page.wait_for_selector("#queue-rows tr.selected")
            page.keyboard.press("Enter")
            page.wait_for_url(f"{live_server.url}/console/c/{conversation.pk}")
            # htmx loads the intent box and posts a label with the CSRF header.
            page.wait_for_selector("#intent-id")
            page.click(".intent-form button[type=submit]")
            page.wait_for_selector("text=Labelled where_is_my_parcel")
            # conversation.js: "a" accepts the draft and sends it.
            page.locator("body").click()
            with page.expect_navigation():
                page.keyboard.press("a")
            assert conversation.messages.filter(direction="out").get().text == "It ships today."
            # The API docs: Swagger UI renders the schema from its own script file.
            page.goto(f"{live_server.url}/api/docs/")
            page.wait_for_selector(".swagger-ui .info .title")
            assert "csbot API" in page.inner_text(".swagger-ui .info .title")
            browser.close()
        finally:
            # Playwright's loop holds this thread's connections in its own slot (see
            # tests/browser.py): closed here, or the test database cannot be dropped.
            connections.close_all()
    assert violations == []
