"""REST API for a help center's sync: articles and macros by external id (PUT creates or
updates, idempotently; DELETE; GET one and the team's list), field errors, size limits, and
another team's knowledge answered as missing."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from drafting.models import Intent, KnowledgeArticle, KnowledgeChunk, Macro
from tests.factories import AgentProfileFactory, TeamSetup

ARTICLES = "/api/v1/knowledge/articles"
MACROS = "/api/v1/knowledge/macros"
CANADA: dict[str, object] = {
    "title": "Shipping",
    "body": "# Shipping\n\n## Canada\n\nWe ship to Canada in 5-7 business days.",
    "tags": ["shipping"],
    "source_url": "https://shop.example/help/shipping",
}


def put(client: APIClient, url: str, payload: dict[str, Any]) -> Any:
    return client.put(url, payload, format="json")


def test_put_creates_then_updates_and_repeats_change_nothing(
    acme: TeamSetup, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    api = acme.api()
    rung: list[int] = []
    monkeypatch.setattr("drafting.tasks.knowledge_index_task.delay", rung.append)
    with django_capture_on_commit_callbacks(execute=True):
        created = put(api, f"{ARTICLES}/shipping", CANADA)
    assert created.status_code == 201, created.json()
    body = created.json()
    assert {
        k: body[k]
        for k in ("external_id", "title", "format", "tags", "language", "published", "version")
    } == {
        "external_id": "shipping",
        "title": "Shipping",
        "format": "markdown",
        "tags": ["shipping"],
        "language": "en",
        "published": True,
        "version": 1,
    }
    assert (body["chunks"], body["chunks_embedded"]) == (1, 0)  # the worker embeds it
    assert rung == [KnowledgeArticle.objects.get().pk]  # the worker's doorbell, id only
    chunk = KnowledgeChunk.objects.get(article__external_id="shipping")

    with django_capture_on_commit_callbacks(execute=True):
        again = put(api, f"{ARTICLES}/shipping", CANADA)
    assert again.status_code == 200
    assert again.json()["version"] == 1 and again.json()["updated_at"] == body["updated_at"]
    assert len(rung) == 1  # nothing new to index
    assert KnowledgeChunk.objects.get(article__external_id="shipping").pk == chunk.pk

    edited = put(
        api, f"{ARTICLES}/shipping", {**CANADA, "body": f"{CANADA['body']}\n\nDuties included."}
    )
    assert edited.status_code == 200
    assert edited.json()["version"] == 2
    assert KnowledgeArticle.objects.get(team=acme.team).body.endswith("Duties included.")


def test_get_lists_only_the_tokens_team_a_page_at_a_time(
    acme: TeamSetup, globex: TeamSetup
) -> None:
    for external_id in ("c", "a", "b"):
        assert put(acme.api(), f"{ARTICLES}/{external_id}", CANADA).status_code == 201
    assert put(globex.api(), f"{ARTICLES}/theirs", CANADA).status_code == 201
    first = acme.api().get(ARTICLES, {"page_size": 2}).json()
    assert [a["external_id"] for a in first["results"]] == ["a", "b"]
    second = acme.api().get(first["next"]).json()
    assert [a["external_id"] for a in second["results"]] == ["c"]
    one = acme.api().get(f"{ARTICLES}/a")
    assert one.status_code == 200 and one.json()["source_url"] == CANADA["source_url"]


def test_another_teams_article_is_not_found_for_any_method(
    acme: TeamSetup, globex: TeamSetup
) -> None:
    put(globex.api(), f"{ARTICLES}/theirs", CANADA)
    assert acme.api().get(f"{ARTICLES}/theirs").status_code == 404
    assert acme.api().delete(f"{ARTICLES}/theirs").status_code == 404
    # A PUT makes Acme's own article with that id; Globex's is untouched.
    assert put(acme.api(), f"{ARTICLES}/theirs", {**CANADA, "title": "Ours"}).status_code == 201
    assert KnowledgeArticle.objects.get(team=globex.team).title == "Shipping"


def test_delete_removes_the_article_and_its_chunks(acme: TeamSetup) -> None:
    put(acme.api(), f"{ARTICLES}/help/shipping.md", CANADA)  # slashes in ids
    assert acme.api().get(f"{ARTICLES}/help/shipping.md").status_code == 200
    assert acme.api().delete(f"{ARTICLES}/help/shipping.md").status_code == 204
    assert not KnowledgeChunk.objects.exists()
    assert acme.api().delete(f"{ARTICLES}/help/shipping.md").status_code == 404


def test_unpublishing_through_the_api_keeps_the_version(acme: TeamSetup) -> None:
    put(acme.api(), f"{ARTICLES}/shipping", CANADA)
    response = put(acme.api(), f"{ARTICLES}/shipping", {**CANADA, "published": False})
    assert response.status_code == 200
    assert (response.json()["published"], response.json()["version"]) == (False, 1)


def test_bad_input_gets_field_errors(acme: TeamSetup) -> None:
    api = acme.api()
    response = put(
        api,
        f"{ARTICLES}/x",
        {
            "title": "",
            "body": "   ",
            "format": "docx",
            "language": "english!",
            "source_url": "ftp://x",
            "colour": "red",
        },
    )
    assert response.status_code == 400
    assert set(response.json()) == {"colour"}  # unknown fields first: a typo is never dropped
    response = put(
        api,
        f"{ARTICLES}/x",
        {"title": "", "body": "b", "format": "docx", "source_url": "not a url"},
    )
    assert response.status_code == 400
    assert set(response.json()) == {"title", "format", "source_url"}
    # What only the service knows: an empty body after trimming, a bad language code, an id
    # too long.
    response = put(api, f"{ARTICLES}/x", {"title": "T", "body": "  \n ", "language": "english!"})
    assert response.status_code == 400
    assert set(response.json()) == {"body", "language"}
    response = put(api, f"{ARTICLES}/{'x' * 201}", {"title": "T", "body": "b"})
    assert response.status_code == 400
    assert response.json() == {"external_id": ["Longer than 200 characters."]}
    assert not KnowledgeArticle.objects.exists()


def test_an_oversized_body_is_refused_with_413(acme: TeamSetup, settings: Any) -> None:
    big = {**CANADA, "body": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}
    assert put(acme.api(), f"{ARTICLES}/big", big).status_code == 413
    assert not KnowledgeArticle.objects.exists()


def test_agents_read_but_only_integrations_and_managers_write(acme: TeamSetup) -> None:
    put(acme.api(), f"{ARTICLES}/shipping", CANADA)
    agent = APIClient()
    agent.force_authenticate(acme.agent)
    assert agent.get(f"{ARTICLES}/shipping").status_code == 200
    assert agent.put(f"{ARTICLES}/shipping", CANADA, format="json").status_code == 403
    assert agent.delete(f"{ARTICLES}/shipping").status_code == 403
    manager = APIClient()
    manager.force_authenticate(AgentProfileFactory.create(team=acme.team, role="manager").user)
    assert manager.put(f"{ARTICLES}/other", CANADA, format="json").status_code == 201
    assert APIClient().get(ARTICLES).status_code in (401, 403)


def test_macros_put_get_delete_with_the_teams_intents(acme: TeamSetup, globex: TeamSetup) -> None:
    Intent.objects.create(team=acme.team, name="where_is_my_order")
    Intent.objects.create(team=globex.team, name="refund")
    macro = {
        "title": "Order status",
        "body": "Hi {customer_name}, it is on its way.",
        "intent": "where_is_my_order",
    }
    created = put(acme.api(), f"{MACROS}/wismo", macro)
    assert created.status_code == 201, created.json()
    assert created.json()["intent"] == "where_is_my_order"
    assert put(acme.api(), f"{MACROS}/wismo", macro).status_code == 200
    assert Macro.objects.get().content_hash
    # Another team's intent is no intent of this team.
    refused = put(acme.api(), f"{MACROS}/refund", {**macro, "intent": "refund"})
    assert refused.status_code == 400
    assert refused.json() == {"intent": ["'refund' is not one of the team's intents."]}
    assert [m["external_id"] for m in acme.api().get(MACROS).json()["results"]] == ["wismo"]
    assert globex.api().get(f"{MACROS}/wismo").status_code == 404
    assert globex.api().get(MACROS).json()["results"] == []
    assert acme.api().delete(f"{MACROS}/wismo").status_code == 204
    assert acme.api().get(f"{MACROS}/wismo").status_code == 404


def test_the_knowledge_routes_are_in_the_schema(db: None, client: Any) -> None:
    paths = client.get("/api/schema/?format=json").json()["paths"]
    assert {
        "/api/v1/knowledge/articles",
        "/api/v1/knowledge/articles/{external_id}",
        "/api/v1/knowledge/macros",
        "/api/v1/knowledge/macros/{external_id}",
    } <= set(paths)
    assert set(paths["/api/v1/knowledge/articles/{external_id}"]) >= {"get", "put", "delete"}
