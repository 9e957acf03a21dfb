"""The console's knowledge, without a browser: a draft's sources under it, the knowledge
verdict, macro offers, `{agent_name}` filled for the agent who reads (and sends) the draft, and
the picker that inserts the team's macros and article links (never another team's)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from drafting.models import AgentAction, Draft
from tests.csbot.factories import ArticleFactory, Given, MacroFactory, ready_draft
from tests.factories import TeamSetup

RETURNS = "Returns: unworn shoes can be returned within 30 days for a full refund."
SHIPPING = "We ship to Canada and the United States; delivery takes 5 to 8 working days."


def agent_client(client: Client, setup: TeamSetup, full_name: tuple[str, str] = ("", "")) -> Client:
    setup.agent.first_name, setup.agent.last_name = full_name
    setup.agent.save(update_fields=["first_name", "last_name"])
    client.force_login(setup.agent)
    return client


def page(client: Client, draft: Draft) -> str:
    response = client.get(reverse("console:conversation", args=[draft.message.conversation_id]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_grounded_draft_shows_the_passage_it_cites_with_the_article_title_and_link(
    client: Client, acme: TeamSetup
) -> None:
    returns = ArticleFactory.create(
        team=acme.team, title="Return policy", source_url="https://help.acme.test/returns"
    )
    shipping = ArticleFactory.create(team=acme.team, title="Shipping countries")
    unused = ArticleFactory.create(team=acme.team, title="Gift cards")
    made = ready_draft(
        acme,
        text="You can return unworn shoes within 30 days for a full refund.",
        passages=(
            Given(returns, RETURNS, cited=True, heading="Returns"),
            Given(shipping, SHIPPING),
            Given(unused, "Gift cards never expire."),
        ),
        shown=2,  # the third passage was found but did not fit the prompt
        knowledge="grounded",
        knowledge_note="2 passages above the relevance floor",
    )
    html = page(agent_client(client, acme), made.draft)

    assert 'id="draft-sources"' in html
    assert "Grounded in 1 article" in html
    assert "2 passages above the relevance floor" in html
    assert '<a class="source-title" href="https://help.acme.test/returns"' in html
    assert ">Return policy</a>" in html
    assert "— Returns" in html  # the chunk's heading
    # The cited passage is open, with the words the draft shares highlighted.
    assert "<mark>unworn shoes</mark>" in html
    assert "<mark>full refund</mark>" in html
    # The other passage the model was given is folded away; the one it never saw is absent.
    assert "1 other passage the model was given" in html
    assert "Shipping countries" in html and "Canada" in html
    assert "Gift cards" not in html
    assert "changed since" not in html


def test_a_source_without_a_public_url_links_to_the_article_in_the_console(
    client: Client, acme: TeamSetup, globex: TeamSetup
) -> None:
    internal = ArticleFactory.create(
        team=acme.team, title="Refund desk", source_url="", body="Refunds take 3 days."
    )
    made = ready_draft(
        acme,
        text="Refunds take 3 days.",
        passages=(Given(internal, "Refunds take 3 days.", cited=True),),
        knowledge="grounded",
    )
    agent_client(client, acme)
    article_url = reverse("console:article", args=[internal.pk])
    assert f'href="{article_url}"' in page(client, made.draft)

    response = client.get(article_url)
    assert response.status_code == 200
    assert "Refunds take 3 days." in response.content.decode()

    other = Client()
    other.force_login(globex.agent)
    assert other.get(article_url).status_code == 404


def test_a_source_whose_article_changed_since_the_draft_is_marked_stale(
    client: Client, acme: TeamSetup
) -> None:
    article = ArticleFactory.create(team=acme.team, title="Return policy", version=3)
    made = ready_draft(
        acme,
        text="Within 30 days.",
        passages=(Given(article, RETURNS, cited=True),),
        knowledge="grounded",
    )
    article.version = 4
    article.save(update_fields=["version"])
    assert "changed since (v3 → v4)" in page(agent_client(client, acme), made.draft)

    article.published = False
    article.save(update_fields=["published"])
    assert "unpublished since" in page(client, made.draft)

    article.delete()
    html = page(client, made.draft)
    assert "(deleted article)" in html and "deleted since" in html
    assert RETURNS.split(":")[0] in html  # the passage as the model saw it stays readable


def test_a_turn_that_needs_knowledge_none_found_says_so_with_the_reason(
    client: Client, acme: TeamSetup
) -> None:
    made = ready_draft(
        acme,
        text="Thank you for your message. Let me check this with the team.",
        knowledge="none_found",
        knowledge_note="Needs knowledge (a question), none relevant (best 0.31): holding reply.",
    )
    html = page(agent_client(client, acme), made.draft)
    assert "Needs knowledge — none found" in html
    assert "none relevant (best 0.31): holding reply." in html


def test_a_draft_never_checked_for_knowledge_shows_no_sources(
    client: Client, acme: TeamSetup
) -> None:
    made = ready_draft(acme, text="Your order ships tomorrow.")
    html = page(agent_client(client, acme), made.draft)
    assert "Your order ships tomorrow." in html
    assert 'id="draft-sources"' not in html


def test_a_macro_offer_is_labelled_as_such_and_shows_the_agents_name(
    client: Client, acme: TeamSetup
) -> None:
    macro = MacroFactory.create(team=acme.team, title="Return policy")
    made = ready_draft(
        acme,
        text="Hi Dana, this is {agent_name}: returns are free.",
        macro=macro,
        knowledge_note="Macro 'Return policy' matched by intent.",
    )
    html = page(agent_client(client, acme, ("Ada", "Lovelace")), made.draft)
    assert "Macro: Return policy" in html
    assert "matched by intent" in html
    assert "no model cost" in html
    assert "approved earlier (cache)" not in html
    assert 'data-text="Hi Dana, this is Ada Lovelace: returns are free."' in html
    assert "{agent_name}" not in html
    # The polled panel fills it the same way.
    panel = client.get(reverse("console:draft-panel", args=[made.message.conversation_id]))
    assert "this is Ada Lovelace" in panel.content.decode()


def test_sending_a_draft_with_the_agents_name_filled_in_counts_as_a_use(
    client: Client, acme: TeamSetup
) -> None:
    made = ready_draft(acme, text="Hello, {agent_name} here: returns are free.")
    agent_client(client, acme, ("Ada", "Lovelace"))
    page(client, made.draft)  # shown: the handle clock starts
    response = client.post(
        reverse("console:reply", args=[made.message.conversation_id]),
        {
            "text": "Hello, Ada Lovelace here: returns are free.",
            "kind": "use",
            "inbound_message_id": made.message.pk,
            "draft_id": made.draft.pk,
        },
    )
    assert response.status_code == 302
    action = AgentAction.objects.get(draft=made.draft)
    assert action.kind == AgentAction.Kind.USE
    assert action.edit_distance == Decimal("0")
    assert action.final_text == "Hello, Ada Lovelace here: returns are free."
    made.draft.refresh_from_db()
    assert made.draft.text == "Hello, {agent_name} here: returns are free."  # the row keeps it


def test_an_edit_is_measured_against_the_text_with_the_agents_name(
    client: Client, acme: TeamSetup
) -> None:
    made = ready_draft(acme, text="Hello, {agent_name} here: returns are free.")
    agent_client(client, acme)  # no full name: the user name signs
    page(client, made.draft)
    name = acme.agent.get_username()
    client.post(
        reverse("console:reply", args=[made.message.conversation_id]),
        {
            "text": f"Hello, {name} here: returns are free!",
            "kind": "edit",
            "inbound_message_id": made.message.pk,
            "draft_id": made.draft.pk,
        },
    )
    action = AgentAction.objects.get(draft=made.draft)
    assert action.kind == AgentAction.Kind.EDIT
    one_char = Decimal(f"{1 / len(f'Hello, {name} here: returns are free.'):.4f}")
    assert action.edit_distance == one_char


def test_the_picker_offers_only_the_teams_active_macros_and_published_articles(
    client: Client, acme: TeamSetup, globex: TeamSetup
) -> None:
    MacroFactory.create(team=acme.team, title="Return policy", body="Returns are free.")
    MacroFactory.create(team=acme.team, title="Greeting", body="Hello!")
    MacroFactory.create(team=acme.team, title="Old returns", body="Returns", active=False)
    MacroFactory.create(team=globex.team, title="Globex returns", body="Returns")
    ArticleFactory.create(team=acme.team, title="Returns and refunds")
    ArticleFactory.create(team=acme.team, title="Draft returns page", published=False)
    ArticleFactory.create(team=globex.team, title="Globex return policy")
    made = ready_draft(acme, text="Sure.")
    agent_client(client, acme)
    url = reverse("console:insert-search", args=[made.message.conversation_id])

    html = client.get(url, {"q": "return"}, HTTP_HX_REQUEST="true").content.decode()
    assert "Return policy" in html and "Returns and refunds" in html
    assert "Greeting" not in html
    assert "Old returns" not in html and "Draft returns page" not in html
    assert "Globex" not in html

    everything = client.get(url).content.decode()
    assert "Greeting" in everything and "Return policy" in everything
    assert "Globex" not in everything

    other = Client()
    other.force_login(globex.agent)
    assert other.get(url).status_code == 404  # another team's conversation


@pytest.mark.parametrize(
    ("customer_ref", "greeting"),
    [("Dana", "Hi Dana,"), ("dana@example.com", "Hi there,")],  # a name only when it is one
)
def test_an_inserted_macro_has_its_placeholders_filled(
    client: Client, acme: TeamSetup, customer_ref: str, greeting: str
) -> None:
    macro = MacroFactory.create(
        team=acme.team,
        title="Return policy",
        body="Hi {customer_name}, {agent_name} here. Order {order_id}: returns are free.",
    )
    made = ready_draft(acme, text="Sure.", customer_ref=customer_ref)
    agent_client(client, acme, ("Ada", "Lovelace"))
    response = client.get(
        reverse("console:insert-macro", args=[made.message.conversation_id, macro.pk])
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    # What neither the conversation nor the agent knows stays for the agent to fill.
    assert response.content.decode() == (
        f"{greeting} Ada Lovelace here. Order {{order_id}}: returns are free."
    )


def test_an_inserted_article_link_is_its_title_and_url(client: Client, acme: TeamSetup) -> None:
    linked = ArticleFactory.create(
        team=acme.team, title="Return policy", source_url="https://help.acme.test/returns"
    )
    internal = ArticleFactory.create(team=acme.team, title="Refund desk", source_url="")
    made = ready_draft(acme, text="Sure.")
    agent_client(client, acme)
    conversation_id = made.message.conversation_id
    response = client.get(reverse("console:insert-article", args=[conversation_id, linked.pk]))
    assert response.content.decode() == "Return policy: https://help.acme.test/returns"
    response = client.get(reverse("console:insert-article", args=[conversation_id, internal.pk]))
    assert response.content.decode() == "Refund desk"


@pytest.mark.parametrize("what", ["macro", "article"])
def test_another_teams_inactive_or_unpublished_macro_or_article_is_a_404(
    client: Client, acme: TeamSetup, globex: TeamSetup, what: str
) -> None:
    factory = MacroFactory if what == "macro" else ArticleFactory
    hidden = {"active": False} if what == "macro" else {"published": False}
    theirs = factory.create(team=globex.team)
    retired = factory.create(team=acme.team, **hidden)
    ours = factory.create(team=acme.team)
    made = ready_draft(acme, text="Sure.")
    theirs_made = ready_draft(globex, text="Sure.")
    agent_client(client, acme)
    name = f"console:insert-{what}"
    conversation_id = made.message.conversation_id
    assert client.get(reverse(name, args=[conversation_id, ours.pk])).status_code == 200
    assert client.get(reverse(name, args=[conversation_id, theirs.pk])).status_code == 404
    assert client.get(reverse(name, args=[conversation_id, retired.pk])).status_code == 404
    # Our macro through their conversation: 404 too (the conversation is checked first).
    their_conversation = theirs_made.message.conversation_id
    assert client.get(reverse(name, args=[their_conversation, ours.pk])).status_code == 404


def test_the_conversation_page_runs_the_same_queries_whatever_the_number_of_sources(
    client: Client, acme: TeamSetup
) -> None:
    article = ArticleFactory.create(team=acme.team, title="Return policy")
    few = ready_draft(
        acme,
        text="Returns are free.",
        passages=(Given(article, RETURNS, cited=True),),
        knowledge="grounded",
    )
    many = ready_draft(
        acme,
        text="Returns are free.",
        passages=tuple(
            Given(ArticleFactory.create(team=acme.team), f"Passage {n}", cited=n % 2 == 0)
            for n in range(6)
        ),
        knowledge="grounded",
    )
    agent_client(client, acme)

    def count(draft: Draft) -> int:
        url = reverse("console:conversation", args=[draft.message.conversation_id])
        client.get(url)  # the first view writes first_shown_at once
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        return len(queries)

    assert count(few.draft) == count(many.draft)
