"""The composer tools' endpoint on the console (POST /console/c/<pk>/compose): JSON in the
page's terms — the new text and the status line, field errors (400), another team's
conversation or message (404), no draft to record on (409), a failed model (502, recorded)."""

from __future__ import annotations

import re
from typing import Any

from django.test import Client

from drafting.models import Draft, DraftAttempt
from tests.factories import EndpointFactory, TeamSetup, ingest, make_team
from tests.http_stub import Reply, chat_completion, openai_stub

TEXT = "hi, the parcel left our warehouse yesterday and should be with u tomorow"


def local_team(name: str, base_url: str) -> TeamSetup:
    return make_team(name, endpoint=EndpointFactory.create(base_url=base_url))


def agent_client(setup: TeamSetup) -> Client:
    client = Client()
    client.force_login(setup.agent)
    return client


def waiting(setup: TeamSetup, conversation: str = "c1") -> Draft:
    draft = ingest(setup, conversation, f"{conversation}-m1", "Where is my parcel?").draft
    assert draft is not None
    return draft


def compose(client: Client, draft: Draft, **data: Any) -> Any:
    conversation = draft.message.conversation_id
    return client.post(f"/console/c/{conversation}/compose", data)


def test_a_tool_returns_the_new_text_and_the_cost_it_recorded(db: None) -> None:
    fixed = "Hi, the parcel left our warehouse yesterday and should be with you tomorrow."
    with openai_stub(Reply(body=chat_completion(fixed))) as stub:
        setup = local_team("Acme", stub.base_url)
        draft = waiting(setup)
        response = compose(
            agent_client(setup), draft, tool="grammar", text=TEXT, message_id=draft.message_id
        )
    assert response.status_code == 200
    body = response.json()
    attempt = DraftAttempt.objects.get(pk=body["attempt_id"])
    assert body["text"] == fixed and attempt.purpose == "grammar" and attempt.draft_id == draft.pk
    assert body["cost"] == str(attempt.cost)
    assert re.fullmatch(r"Grammar fixed · \$0\.0+[1-9]\d? · local", body["status"]), body["status"]


def test_without_a_message_id_the_pending_message_is_rewritten_for(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("Shorter."))) as stub:
        setup = local_team("Acme", stub.base_url)
        draft = waiting(setup)
        response = compose(agent_client(setup), draft, tool="shorten", text=TEXT)
    assert response.status_code == 200
    assert draft.attempts.filter(purpose="shorten").count() == 1


def test_bad_input_is_a_400_with_field_errors_and_asks_no_model(db: None, settings: Any) -> None:
    settings.CSBOT_MAX_MESSAGE_CHARS = 50  # the form's limit is read at import: check it too
    with openai_stub() as stub:
        setup = local_team("Acme", stub.base_url)
        draft = waiting(setup)
        client = agent_client(setup)
        unknown = compose(client, draft, tool="summarise", text=TEXT)
        blank = compose(client, draft, tool="shorten", text="   ")
        missing = compose(client, draft)
        too_long = compose(client, draft, tool="shorten", text="x" * 4001)
        service_limit = compose(client, draft, tool="shorten", text="x" * 51)
    assert [r.status_code for r in (unknown, blank, missing, too_long, service_limit)] == [400] * 5
    assert set(unknown.json()["errors"]) == {"tool"}
    assert blank.json()["errors"] == {"text": ["There is no text to rewrite."]}
    assert set(missing.json()["errors"]) == {"tool", "text"}
    assert set(too_long.json()["errors"]) == {"text"}
    assert "longer than 50" in service_limit.json()["error"]
    assert stub.requests == [] and not DraftAttempt.objects.exists()


def test_another_teams_conversation_or_message_is_not_found(db: None) -> None:
    with openai_stub() as stub:
        acme, globex = local_team("Acme", stub.base_url), local_team("Globex", stub.base_url)
        ours, theirs = waiting(acme), waiting(globex)
        client = agent_client(acme)
        other_conversation = compose(client, theirs, tool="shorten", text=TEXT)
        other_message = client.post(
            f"/console/c/{ours.message.conversation_id}/compose",
            {"tool": "shorten", "text": TEXT, "message_id": theirs.message_id},
        )
    assert [other_conversation.status_code, other_message.status_code] == [404, 404]
    assert stub.requests == [] and not DraftAttempt.objects.exists()


def test_a_message_without_a_draft_is_refused_with_a_clear_message(db: None) -> None:
    with openai_stub() as stub:
        setup = local_team("Acme", stub.base_url)
        setup.policy.active = False
        setup.policy.save()
        message = ingest(setup, "c1", "c1-m1", "Where is my parcel?").message
        response = agent_client(setup).post(
            f"/console/c/{message.conversation_id}/compose", {"tool": "shorten", "text": TEXT}
        )
    assert response.status_code == 409
    assert "no draft record" in response.json()["error"]
    assert stub.requests == []


def test_a_held_out_conversation_has_no_tools_and_a_rewrite_is_refused(db: None) -> None:
    """The held-out sample measures replies written with no model help (the ENCS baseline):
    no tool on its page, and a request anyway is refused before any model is asked."""
    with openai_stub() as stub:
        setup = local_team("Acme", stub.base_url)
        draft = waiting(setup)
        Draft.objects.filter(pk=draft.pk).update(status=Draft.Status.HELD_OUT)
        client = agent_client(setup)
        page = client.get(f"/console/c/{draft.message.conversation_id}")
        response = compose(client, draft, tool="shorten", text=TEXT)
    assert page.status_code == 200 and b'id="composer-tools"' not in page.content
    assert response.status_code == 409
    assert "held-out sample" in response.json()["error"]
    assert stub.requests == [] and not DraftAttempt.objects.exists()


def test_a_model_failure_is_a_502_the_attempt_recorded(db: None) -> None:
    with openai_stub(Reply(status=500, body={"error": {"message": "boom"}})) as stub:
        setup = local_team("Acme", stub.base_url)
        draft = waiting(setup)
        response = compose(agent_client(setup), draft, tool="formal", text=TEXT)
    assert response.status_code == 502
    body = response.json()
    assert "could not rewrite" in body["error"] and "text" not in body
    attempt = DraftAttempt.objects.get(pk=body["attempt_id"])
    assert attempt.outcome == "error" and attempt.purpose == "formal"


def test_the_endpoint_needs_the_csrf_token_as_the_script_sends_it(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("Shorter."))) as stub:
        setup = local_team("Acme", stub.base_url)
        draft = waiting(setup)
        client = Client(enforce_csrf_checks=True)
        client.force_login(setup.agent)
        url = f"/console/c/{draft.message.conversation_id}"
        refused = client.post(f"{url}/compose", {"tool": "shorten", "text": TEXT})
        page = client.get(url).content.decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token is not None
        # composer.js sends the form's token as a header.
        allowed = client.post(
            f"{url}/compose", {"tool": "shorten", "text": TEXT}, HTTP_X_CSRFTOKEN=token.group(1)
        )
    assert (refused.status_code, allowed.status_code) == (403, 200)
    assert draft.attempts.filter(purpose="shorten").count() == 1


def test_the_page_offers_every_tool_with_its_shortcut_and_loads_the_script(db: None) -> None:
    with openai_stub() as stub:
        setup = local_team("Acme", stub.base_url)
        draft = waiting(setup)
        page = agent_client(setup).get(f"/console/c/{draft.message.conversation_id}").content
    html = page.decode()
    tools = re.findall(r'data-tool="(\w+)"[^>]*aria-keyshortcuts="Alt\+(\d)"', html)
    assert tools == [
        ("shorten", "1"),
        ("friendlier", "2"),
        ("formal", "3"),
        ("grammar", "4"),
        ("translate", "5"),
    ]
    # Every purpose is a tool but the draft's own and a candidate adapter's shadow answer.
    shadow = DraftAttempt.Purpose.SHADOW
    assert {t for t, _ in tools} == {
        v for v, _ in DraftAttempt.Purpose.choices if v not in ("", shadow)
    }
    assert 'id="composer-undo"' in html and 'aria-live="polite"' in html
    assert "csbot/composer.js" in html
