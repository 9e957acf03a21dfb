"""Draft previews: the policy's draft for a thread through the worker's own steps (retrieval
from the team's real knowledge base, the prompt sent over HTTP to a recorded provider, the
cascade, citations), with and without passages, storing nothing; the admin's "Try a question"
page."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from csbot.models import Conversation, Message
from drafting import knowledge
from drafting import services as drafting
from drafting.engine.grounding import KNOWLEDGE_HEADER
from drafting.engine.knowledge_files import ArticleInput
from drafting.models import CascadePolicy, CascadeTier, Draft, DraftAttempt, DraftPassage
from tests.drafting.factories import cheap_endpoint, paid_endpoint, two_tier_team
from tests.factories import TeamSetup, UserFactory, make_team
from tests.http_stub import Reply, chat_completion, openai_stub

SHIPPING = (
    "# Shipping\n\n## Countries\n\nWe ship to the United States, Canada and Mexico. Delivery "
    "to Canada takes 5-7 business days."
)
RETURNS = "# Returns\n\nItems can be returned within 30 days of delivery for a full refund."
QUESTION = [{"role": "customer", "text": "Do you ship to Canada?"}]
# The stub's usage (42 in, 17 out) at paid_endpoint's $2.50 / $10 per M tokens.
STUB_COST = Decimal("0.000275")


def with_articles(setup: TeamSetup) -> None:
    for external_id, title, body in (
        ("shipping", "Shipping", SHIPPING),
        ("returns", "Returns", RETURNS),
    ):
        article = knowledge.article_upsert(
            team=setup.team,
            data=ArticleInput(external_id=external_id, title=title, body=body),
            ring=False,
        ).article
        knowledge.chunks_index(article_id=article.pk)


def answer_citing(word: str, text: str) -> Any:
    """A provider answering `text`, citing its prompt's passage that contains `word`."""

    def reply(request: dict[str, Any]) -> Reply:
        system = request["messages"][0]["content"]
        numbers = [n for n, line in re.findall(r"^\[(\d+)\] (.*)$", system, re.M) if word in line]
        cite = f" [{numbers[0]}]" if numbers else ""
        return Reply(body=chat_completion(f"{text}{cite}."))

    return reply


def stored_rows() -> tuple[int, ...]:
    return (
        Conversation.objects.count(),
        Message.objects.count(),
        Draft.objects.count(),
        DraftAttempt.objects.count(),
        DraftPassage.objects.count(),
    )


def test_a_grounded_preview_numbers_the_passages_cites_them_and_stores_nothing(db: None) -> None:
    with openai_stub(
        answer_citing("Canada", "Yes, we ship to Canada in 5-7 business days")
    ) as stub:
        setup = make_team("Preview", endpoint=paid_endpoint(stub.base_url))
        with_articles(setup)
        before = stored_rows()
        preview = drafting.draft_preview(team_id=setup.team.pk, thread=QUESTION)
    assert stored_rows() == before
    assert preview.error == ""
    assert preview.text == "Yes, we ship to Canada in 5-7 business days."  # markers out
    assert preview.grounded and preview.knowledge == Draft.Knowledge.GROUNDED
    system = stub.requests[0]["json"]["messages"][0]["content"]
    assert KNOWLEDGE_HEADER in system
    assert "[1] Shipping — " in system
    (number, passage) = preview.cited_passages[0]
    assert preview.citations == (number,) and "Canada" in passage.text
    (attempt,) = preview.attempts
    assert attempt.tier == 1 and attempt.error == ""
    assert (attempt.tokens_in, attempt.tokens_out) == (42, 17)
    assert attempt.cost == STUB_COST and preview.total_cost == STUB_COST
    assert attempt.latency_ms >= 0 and attempt.score is not None
    assert attempt.passages_shown == len(preview.passages) > 0


def test_an_ungrounded_preview_sends_no_passages(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("Yes, we ship everywhere."))) as stub:
        setup = make_team("Bare", endpoint=paid_endpoint(stub.base_url))
        with_articles(setup)
        preview = drafting.draft_preview(team_id=setup.team.pk, thread=QUESTION, grounded=False)
    system = stub.requests[0]["json"]["messages"][0]["content"]
    assert KNOWLEDGE_HEADER not in system and "[1]" not in system
    assert not preview.grounded and preview.passages == [] and preview.citations == ()
    assert preview.knowledge == Draft.Knowledge.UNCHECKED
    assert preview.text == "Yes, we ship everywhere." and preview.total_cost == STUB_COST


def test_the_thread_is_the_prompt_up_to_its_last_customer_turn(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("Sure."))) as stub:
        setup = make_team("Thread", endpoint=paid_endpoint(stub.base_url))
        drafting.draft_preview(
            team_id=setup.team.pk,
            thread=[
                {"role": "customer", "text": "Hi, I ordered shoes."},
                {"role": "agent", "text": "Thanks, how can I help?"},
                {"role": "customer", "text": "Can I return them?"},
                {"role": "agent", "text": "A reply typed after: not part of the question."},
            ],
        )
    sent = [(m["role"], m["content"]) for m in stub.requests[0]["json"]["messages"][1:]]
    assert sent == [
        ("user", "Hi, I ordered shoes."),
        ("assistant", "Thanks, how can I help?"),
        ("user", "Can I return them?"),
    ]


@pytest.mark.parametrize(
    ("thread", "message"),
    [
        ([], "no customer turn"),
        ([{"role": "agent", "text": "Hello"}], "no customer turn"),
        ([{"role": "bot", "text": "Hello"}], "not 'bot'"),
        ([{"role": "customer", "text": "  "}], "blank"),
    ],
)
def test_a_malformed_thread_is_refused(
    db: None, thread: list[dict[str, str]], message: str
) -> None:
    setup = make_team("Malformed")
    with pytest.raises(ValueError, match=message):
        drafting.draft_preview(team_id=setup.team.pk, thread=thread)


def test_one_tier_only_is_asked_when_given(db: None) -> None:
    with (
        openai_stub(Reply(body=chat_completion("Cheap answer.", logprob=-5))) as cheap,
        openai_stub(Reply(body=chat_completion("Paid answer."))) as paid,
    ):
        setup = two_tier_team(
            "Tiers", cheap_endpoint(cheap.base_url), paid_endpoint(paid.base_url), threshold="0.99"
        )
        whole = drafting.draft_preview(team_id=setup.team.pk, thread=QUESTION)
        first = drafting.draft_preview(team_id=setup.team.pk, thread=QUESTION, tier=1)
    assert [a.tier for a in whole.attempts] == [1, 2] and whole.text == "Paid answer."
    assert [a.tier for a in first.attempts] == [1] and first.text == "Cheap answer."
    assert len(cheap.requests) == 2 and len(paid.requests) == 1
    assert whole.total_cost == sum((a.cost for a in whole.attempts), Decimal(0)) > first.total_cost


def test_no_enabled_tier_or_a_foreign_policy_is_a_clear_error(db: None) -> None:
    setup = make_team("No tier")
    other = make_team("Other")
    CascadeTier.objects.filter(policy=setup.policy).delete()
    none = drafting.draft_preview(team_id=setup.team.pk, thread=QUESTION)
    missing = drafting.draft_preview(team_id=other.team.pk, thread=QUESTION, tier=7)
    foreign = drafting.draft_preview(
        team_id=other.team.pk, thread=QUESTION, policy_id=setup.policy.pk
    )
    assert none.error == "The policy has no enabled tier." and none.attempts == []
    assert missing.error == "The policy has no enabled tier 7."
    assert foreign.error == "No such policy for this team." and foreign.text == ""


def test_a_failing_provider_is_recorded_in_the_preview(db: None) -> None:
    with openai_stub(Reply(status=401, body={"error": {"message": "bad key"}})) as stub:
        setup = make_team("Failing", endpoint=paid_endpoint(stub.base_url))
        preview = drafting.draft_preview(team_id=setup.team.pk, thread=QUESTION)
    assert preview.text == ""
    (attempt,) = preview.attempts
    assert attempt.error.startswith("permanent: ") and "401" in attempt.error
    assert attempt.cost == 0
    assert preview.error == attempt.error and preview.total_cost == 0


def test_the_no_knowledge_rule_applies_to_a_grounded_preview(db: None) -> None:
    with openai_stub() as stub:
        setup = make_team("Holding", endpoint=paid_endpoint(stub.base_url))
        CascadePolicy.objects.filter(pk=setup.policy.pk).update(
            no_knowledge_rule=CascadePolicy.NoKnowledge.HOLDING,
            holding_reply="Hi {customer_name}, let me check with the team.",
        )
        with_articles(setup)
        thread = [{"role": "customer", "text": "Which payment cards do you take?"}]
        held = drafting.draft_preview(team_id=setup.team.pk, thread=thread)
    assert stub.requests == []
    assert held.text == "Hi there, let me check with the team." and held.attempts == []
    assert held.knowledge == Draft.Knowledge.NONE_FOUND and "holding reply" in held.knowledge_note


# --- The admin page ----------------------------------------------------------------------------


def test_the_admin_page_shows_both_drafts_their_sources_and_costs(client: Client, db: None) -> None:
    with openai_stub(answer_citing("Canada", "Yes, we ship to Canada")) as stub:
        setup = make_team("Admin try", endpoint=paid_endpoint(stub.base_url))
        with_articles(setup)
        client.force_login(UserFactory.create(username="root", is_staff=True, is_superuser=True))
        assert client.get("/admin/drafting/cascadepolicy/try/").status_code == 200
        response = client.post(
            "/admin/drafting/cascadepolicy/try/",
            {
                "team": setup.team.pk,
                "earlier": "Customer: Hello\nAgent: Hi, how can I help?",
                "question": "Do you ship to Canada?",
            },
        )
    assert response.status_code == 200
    body = response.content.decode()
    assert "With the knowledge base" in body and "Without it" in body
    assert body.count("Yes, we ship to Canada.") == 2
    assert "Cited sources" in body and "Delivery to Canada takes 5-7 business days" in body
    assert body.count(f"Total cost: ${STUB_COST}") == 2
    assert len(stub.requests) == 2
    assert [m["content"] for m in stub.requests[0]["json"]["messages"][1:3]] == [
        "Hello",
        "Hi, how can I help?",
    ]


def test_the_admin_page_shows_a_policy_without_tiers_as_an_error(client: Client, db: None) -> None:
    setup = make_team("Admin no tier")
    CascadeTier.objects.filter(policy=setup.policy).delete()
    client.force_login(UserFactory.create(username="root", is_staff=True, is_superuser=True))
    response = client.post(
        "/admin/drafting/cascadepolicy/try/",
        {"team": setup.team.pk, "question": "Do you ship to Canada?"},
    )
    assert response.status_code == 200
    assert response.content.decode().count("The policy has no enabled tier.") == 2


def test_the_admin_form_refuses_another_teams_policy_and_bad_turns(
    client: Client, db: None
) -> None:
    setup, other = make_team("Form a"), make_team("Form b")
    client.force_login(UserFactory.create(username="root", is_staff=True, is_superuser=True))
    response = client.post(
        "/admin/drafting/cascadepolicy/try/",
        {
            "team": setup.team.pk,
            "policy": other.policy.pk,
            "earlier": "hello without a speaker",
            "question": "Do you ship to Canada?",
        },
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert "is not a policy of" in body and "Start each turn with" in body
    assert "With the knowledge base" not in body


def test_the_admin_page_refuses_non_admins(client: Client, db: None) -> None:
    make_team("Refused")
    client.force_login(UserFactory.create(username="staff", is_staff=True))  # not an admin
    response = client.get("/admin/drafting/cascadepolicy/try/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(UserFactory.create(username="agent"))
    response = client.post("/admin/drafting/cascadepolicy/try/", {"question": "Hi?"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
