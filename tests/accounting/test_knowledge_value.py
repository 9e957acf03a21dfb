"""What managers see about the knowledge: ENCS per article and per macro, stale articles and
content gaps, against a scenario worked out by hand; team isolation; the API, the dashboard
and the monthly report show it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.core import mail as django_mail
from django.test import Client

from accounting.facts import Scope
from accounting.knowledge import KnowledgeReport, content_gaps, knowledge_report
from accounting.reports import report_email, report_generate
from accounting.selectors import encs_figures
from drafting.models import Draft, KnowledgeArticle, Macro
from tests.accounting.factories import (
    DAY,
    OCTOBER,
    Books,
    article,
    cite,
    drafted,
    macro,
    macro_offer,
    make_books,
)
from tests.factories import ChannelFactory, token_for

D = Decimal
EMBEDDER = "test-embedder"
PERIOD = {"from": "2026-10-01", "to": "2026-10-31"}


@dataclass
class Knowledge:
    books: Books
    shipping: KnowledgeArticle
    returns: KnowledgeArticle
    warranty: KnowledgeArticle
    greeting: Macro


def scenario(books: Books) -> Knowledge:
    """The "Hand" team's knowledge in October 2026, worked out by hand.

    R = $36/h = $0.01/s; no held-out reply, so T_baseline is the default 120 s; a draft's
    saving is 0.01 × (120 − handle), 0 when never answered or answered after more than
    ACTION_MAX_HANDLE_SECONDS (an outlier). Articles: Shipping (A), Returns (B), Warranty (C,
    now at version 2; its drafts cited version 1). Drafts on Oct 5 (saving, cost):

    1. cites A;       used after 20 s     → +1.00, 0.004, edit distance 0
    2. cites A (two chunks) and B; edited after 60 s → +0.60, 0.006, edit distance 0.2
    3. cites B;       ignored after 150 s → −0.30, 0.002, edit distance 1
    4. cites A and B; ready, never answered → 0, 0.008
    5. cites A;       used after 4000 s (outlier) → 0, 0.010, edit distance 0
    Oct 6: five drafts citing C, edited after 90 s → +0.30 each, 0.001 each, edit distances
    0.6, 0.6, 0.6, 0.2, 0.2.

    A, drafts citing it (1, 2, 4, 5): labour 1.60, cost 0.028, ENCS 1.572; use 1, edit 1,
      ignore 0. Shared (1/n of a draft citing n articles): 0.996 + (0.60 − 0.006)/2
      + (0 − 0.008)/2 − 0.010 = 0.996 + 0.297 − 0.004 − 0.010 = 1.279 over 1 + ½ + ½ + 1 = 3
      drafts; labour 1.00 + 0.30 + 0 + 0 = 1.30, cost 0.004 + 0.003 + 0.004 + 0.010 = 0.021.
      Reviewed (used or edited, outliers included) 1, 2, 5: mean edit distance 0.2/3 =
      0.0667, no heavy edit.
    B, drafts citing it (2, 3, 4): labour 0.30, cost 0.016, ENCS 0.284; use 0, edit 1,
      ignore 1. Shared: 0.297 + (−0.30 − 0.002) − 0.004 = −0.009 over ½ + 1 + ½ = 2 drafts.
      Reviewed: 2 only (mean 0.2).
    C: 5 × (0.30 − 0.001) = 1.495, unshared = shared. Mean edit distance 2.2/5 = 0.44
      ≥ 0.35 and 3 of 5 heavy (≥ 0.5): stale, with a newer version (2 > 1).
    Grounded drafts: 1-5 and C's five = 10; their ENCS 1.30 − 0.030 + 1.495 = 2.765 =
      1.279 − 0.009 + 1.495.

    Macro "Greeting" (tier-0 attempt, cost 0): used after 10 s (+1.10, edit distance 0),
    ignored after 130 s (−0.10): ENCS 1.00, use 1, ignore 1; a model-written draft whose
    macro attempt did not give the final text is not the macro's.
    """
    team, policy, endpoint = books.team, books.policy, books.local
    shipping = article(team, "Shipping")
    returns = article(team, "Returns")
    warranty = article(team, "Warranty", version=2)

    def model_draft(kind: str | None, **fields: Any) -> Draft:
        return drafted(policy, kind=kind, endpoint=endpoint, failed=False, **fields)

    cite(model_draft("use", handle="20", cost="0.004", edit_distance="0"), shipping)
    cite(
        model_draft("edit", handle="60", cost="0.006", edit_distance="0.2"),
        shipping,
        returns,
        shipping,
    )
    cite(model_draft("ignore", handle="150", cost="0.002", edit_distance="1"), returns)
    cite(model_draft(None, cost="0.008"), shipping, returns)
    outlier = str(settings.ACTION_MAX_HANDLE_SECONDS + 400)
    cite(model_draft("use", handle=outlier, cost="0.010", edit_distance="0"), shipping)
    for distance in ("0.6", "0.6", "0.6", "0.2", "0.2"):
        cite(
            model_draft(
                "edit", handle="90", cost="0.001", edit_distance=distance, day=DAY + timedelta(1)
            ),
            warranty,
        )
    # A draft whose passages were found but not cited counts for no article.
    uncited = model_draft("use", handle="10", cost="0.5")
    cite(uncited, shipping)
    uncited.passages.update(cited=False)

    greeting = macro(team, "Greeting")
    for kind, handle in (("use", "10"), ("ignore", "130")):
        offered = drafted(policy, kind=kind, handle=handle, edit_distance="0")
        macro_offer(offered, greeting)
    escalated = model_draft("use", handle="5", cost="0.3")
    macro_offer(escalated, greeting)
    return Knowledge(books, shipping, returns, warranty, greeting)


def gaps_scenario(books: Books) -> None:
    """Customer turns for content gaps (4-dimensional vectors of `EMBEDDER`), cosine 0.75:

    - "Canada": three turns that found nothing, [1,0,0,0], [0.95,0.1,0,0], [0.9,0.2,0.1,0]
      (cosines to the first 0.9945 and 0.9707): one group of 3, all none_found (Oct 3-5).
    - "Invoice": [0,1,0,0] grounded but ignored (Oct 5), then [0,0.9,0.3,0] found nothing
      and was ignored too (cosine 0.9487; Oct 6): one group of 2, 1 none_found, 1 ignored.
    - [0,0,0,1] ignored (Oct 7): a group of its own (cosine 0 to the others).
    - [1,0,0,0] found nothing, but embedded by another model (Oct 6): its own group.
    Not gaps: a used grounded turn, a turn that found nothing but has no vector, and the other
    team's turn that found nothing. Groups: Canada (3), Invoice (2), then the two singles,
    the latest first.
    """
    policy = books.policy
    none_found = Draft.Knowledge.NONE_FOUND
    grounded = Draft.Knowledge.GROUNDED
    for n, (vector, day) in enumerate(
        (
            ([1.0, 0, 0, 0], date(2026, 10, 3)),
            ([0.95, 0.1, 0, 0], date(2026, 10, 4)),
            ([0.9, 0.2, 0.1, 0], date(2026, 10, 5)),
        )
    ):
        drafted(
            policy,
            kind="none",
            handle="100",
            day=day,
            knowledge=none_found,
            text=f"Do you ship to Canada? ({n})",
            question=(EMBEDDER, vector),
        )
    invoice: dict[str, Any] = {"kind": "ignore", "handle": "140", "endpoint": books.local}
    drafted(
        policy,
        **invoice,
        knowledge=grounded,
        text="Can I change the invoice address?",
        question=(EMBEDDER, [0, 1.0, 0, 0]),
    )
    drafted(
        policy,
        **invoice,
        day=date(2026, 10, 6),
        knowledge=none_found,
        text="Invoice address is wrong",
        question=(EMBEDDER, [0, 0.9, 0.3, 0]),
    )
    drafted(
        policy,
        **invoice,
        day=date(2026, 10, 7),
        knowledge=grounded,
        text="Where is the gift wrap?",
        question=(EMBEDDER, [0, 0, 0, 1.0]),
    )
    drafted(
        policy,
        kind="none",
        handle="100",
        day=date(2026, 10, 6),
        knowledge=none_found,
        text="Shipping to Canada, please",
        question=("other-embedder", [1.0, 0, 0, 0]),
    )
    drafted(
        policy,
        kind="use",
        handle="10",
        endpoint=books.local,
        knowledge=grounded,
        text="Thanks!",
        question=(EMBEDDER, [1.0, 0, 0, 0]),
    )
    drafted(policy, kind="none", handle="100", knowledge=none_found, text="No vector")
    drafted(
        books.other_policy,
        kind="none",
        handle="100",
        knowledge=none_found,
        text="Other team's question",
        question=(EMBEDDER, [1.0, 0, 0, 0]),
    )


@pytest.fixture
def knowledge(db: None) -> Knowledge:
    books = make_books()
    found = scenario(books)
    gaps_scenario(books)
    # The other team's grounded draft: never in the Hand team's figures.
    theirs = article(books.other_team, "Other shipping")
    cite(drafted(books.other_policy, kind="use", handle="0", cost="0.1", failed=False), theirs)
    return found


def hand_report(k: Knowledge) -> KnowledgeReport:
    return knowledge_report(
        Scope(start=OCTOBER.start, end=OCTOBER.end, team_ids=(k.books.team.pk,))
    )


# --- ENCS per article and per macro ---------------------------------------------------------------


def test_encs_per_article_equals_the_hand_computed_scenario(knowledge: Knowledge) -> None:
    value = hand_report(knowledge).value
    by_title = {a.title: a for a in value.articles}
    assert [a.title for a in value.articles] == ["Warranty", "Shipping", "Returns"]
    shipping, returns, warranty = by_title["Shipping"], by_title["Returns"], by_title["Warranty"]

    assert shipping.citing.drafts == 4
    assert dict(shipping.citing.actions) == {"use": 1, "edit": 1, "ignore": 0, "none": 0}
    assert shipping.citing.outliers == 1 and shipping.citing.unanswered_drafts == 1
    assert shipping.citing.labor_savings_usd == D("1.60")
    assert shipping.citing.model_cost_usd == D("0.028")
    assert shipping.citing.encs_usd == D("1.572")
    assert shipping.shared_drafts == D(3)
    assert shipping.shared_labor_savings_usd == D("1.30")
    assert shipping.shared_model_cost_usd == D("0.021")
    assert shipping.shared_encs_usd == D("1.279")
    assert shipping.edits.reviewed == 3 and shipping.edits.heavy == 0
    assert shipping.edits.mean_edit_distance == D("0.0667")
    assert not shipping.edits.stale

    assert returns.citing.drafts == 3
    assert dict(returns.citing.actions) == {"use": 0, "edit": 1, "ignore": 1, "none": 0}
    assert returns.citing.encs_usd == D("0.284")
    assert returns.shared_drafts == D(2)
    assert returns.shared_encs_usd == D("-0.009")
    assert returns.edits.mean_edit_distance == D("0.2")

    assert warranty.citing.encs_usd == warranty.shared_encs_usd == D("1.495")
    assert warranty.edits.stale and warranty.edits.heavy_share == D("0.6")
    assert warranty.edits.mean_edit_distance == D("0.44")
    assert (warranty.version, warranty.seen_version, warranty.newer_version) == (2, 1, True)

    assert value.grounded_drafts == 10
    assert value.grounded_encs_usd == D("2.765") == sum(a.shared_encs_usd for a in value.articles)
    assert [a.title for a in value.stale] == ["Warranty"]


def test_encs_per_macro_counts_the_drafts_the_macro_wrote(knowledge: Knowledge) -> None:
    value = hand_report(knowledge).value
    (greeting,) = value.macros
    assert greeting.id == knowledge.greeting.pk and greeting.kind == "macro"
    assert greeting.citing.drafts == 2
    assert dict(greeting.citing.actions) == {"use": 1, "edit": 0, "ignore": 1, "none": 0}
    assert greeting.citing.labor_savings_usd == D("1.00")
    assert greeting.citing.model_cost_usd == D(0)
    assert greeting.shared_encs_usd == greeting.citing.encs_usd == D("1.00")
    assert greeting.edits.reviewed == 1 and greeting.edits.mean_edit_distance == D(0)
    assert value.macro_drafts == 2 and value.macro_encs_usd == D("1.00")


def test_per_article_encs_uses_the_scopes_measured_baseline(knowledge: Knowledge) -> None:
    """Three held-out replies of 100, 140 and 150 s: T_baseline is measured, 130 s, for every
    figure. A's drafts citing it: labour 0.01 × (130−20 + 130−60) = 1.80; cost 0.028."""
    for handle in ("100", "140", "150"):
        drafted(knowledge.books.policy, kind="held_out", handle=handle)
    scope = Scope(start=OCTOBER.start, end=OCTOBER.end, team_ids=(knowledge.books.team.pk,))
    report = encs_figures(scope)
    assert report.baselines[knowledge.books.team.pk].seconds == D(130)
    by_title = {a.title: a for a in knowledge_report(scope).value.articles}
    assert by_title["Shipping"].citing.labor_savings_usd == D("1.80")
    passed = knowledge_report(scope, baselines=report.baselines).value.articles
    assert {a.title: a for a in passed}["Shipping"].citing.encs_usd == D("1.772")


# --- Content gaps ---------------------------------------------------------------------------------


def test_content_gaps_group_similar_questions_by_hand(knowledge: Knowledge) -> None:
    gaps = hand_report(knowledge).gaps
    assert gaps.turns == 7 and not gaps.capped
    summary = [
        (g.count, g.none_found, g.ignored, g.embedding_model, g.first_day, g.last_day)
        for g in gaps.groups
    ]
    assert summary == [
        (3, 3, 0, EMBEDDER, date(2026, 10, 3), date(2026, 10, 5)),
        (2, 1, 1, EMBEDDER, date(2026, 10, 5), date(2026, 10, 6)),
        (1, 0, 1, EMBEDDER, date(2026, 10, 7), date(2026, 10, 7)),
        (1, 1, 0, "other-embedder", date(2026, 10, 6), date(2026, 10, 6)),
    ]
    assert [e.text for e in gaps.groups[0].examples] == [
        "Do you ship to Canada? (0)",
        "Do you ship to Canada? (1)",
        "Do you ship to Canada? (2)",
    ]
    assert [e.text for e in gaps.groups[1].examples] == [
        "Can I change the invoice address?",
        "Invoice address is wrong",
    ]


def test_content_gaps_keep_the_newest_turns_when_capped(knowledge: Knowledge) -> None:
    scope = Scope(start=OCTOBER.start, end=OCTOBER.end, team_ids=(knowledge.books.team.pk,))
    gaps = content_gaps(scope, limit=2)
    assert gaps.capped and gaps.turns == 2
    assert sorted(g.last_day for g in gaps.groups) == [date(2026, 10, 6), date(2026, 10, 7)]


def test_a_stricter_threshold_splits_the_groups(knowledge: Knowledge) -> None:
    scope = Scope(start=OCTOBER.start, end=OCTOBER.end, team_ids=(knowledge.books.team.pk,))
    # 0.9945 and 0.9707 to the Canada leader; 0.9487 for the invoice pair.
    counts = [g.count for g in content_gaps(scope, threshold=0.98).groups]
    assert sorted(counts, reverse=True) == [2, 1, 1, 1, 1, 1]


# --- Team isolation -------------------------------------------------------------------------------


def test_another_teams_knowledge_is_never_in_a_teams_figures(knowledge: Knowledge) -> None:
    report = hand_report(knowledge)
    team = knowledge.books.team.pk
    assert {a.team_id for a in report.value.articles} == {team}
    assert "Other shipping" not in {a.title for a in report.value.articles}
    assert "Other team's question" not in {e.text for g in report.gaps.groups for e in g.examples}
    everyone = knowledge_report(Scope(start=OCTOBER.start, end=OCTOBER.end))
    assert "Other shipping" in {a.title for a in everyone.value.articles}
    # Across teams the same vector is still two groups: one per team.
    assert len(everyone.gaps.groups) == len(report.gaps.groups) + 1


# --- Where managers see it ------------------------------------------------------------------------


def manager(client: Client, books: Books) -> None:
    client.force_login(books.users["manager"])


def test_api_lists_articles_macros_stale_articles_and_gaps(
    client: Client, knowledge: Knowledge
) -> None:
    manager(client, knowledge.books)
    articles = client.get("/api/v1/encs/knowledge/articles", {**PERIOD, "limit": "2"}).json()
    assert articles["count"] == 3 and len(articles["results"]) == 2
    assert [a["title"] for a in articles["results"]] == ["Warranty", "Shipping"]
    assert articles["results"][1]["encs_usd"] == "1.2790000000"
    assert articles["results"][1]["citing"]["encs_usd"] == "1.5720000000"
    assert articles["grounded_encs_usd"] == "2.7650000000"
    assert "offset=2" in articles["next"]
    rest = client.get(articles["next"]).json()
    assert [a["title"] for a in rest["results"]] == ["Returns"] and rest["next"] is None

    macros = client.get("/api/v1/encs/knowledge/macros", PERIOD).json()
    assert [(m["title"], m["encs_usd"]) for m in macros["results"]] == [
        ("Greeting", "1.0000000000")
    ]
    stale = client.get("/api/v1/encs/knowledge/stale", PERIOD).json()
    assert [(a["title"], a["newer_version"]) for a in stale["results"]] == [("Warranty", True)]
    gaps = client.get("/api/v1/encs/knowledge/gaps", PERIOD).json()
    assert [g["count"] for g in gaps["results"]] == [3, 2, 1, 1]
    assert gaps["results"][0]["examples"][0]["text"] == "Do you ship to Canada? (0)"


def test_api_is_team_scoped_and_refuses_bad_input(client: Client, knowledge: Knowledge) -> None:
    client.force_login(knowledge.books.users["other-manager"])
    theirs = client.get("/api/v1/encs/knowledge/articles", PERIOD).json()
    assert [a["title"] for a in theirs["results"]] == ["Other shipping"]
    policy = knowledge.books.policy.pk
    foreign = client.get("/api/v1/encs/knowledge/gaps", {**PERIOD, "policy": str(policy)})
    assert foreign.status_code == 400 and "policy" in foreign.json()
    assert client.get("/api/v1/encs/knowledge/gaps", {"limit": 0}).status_code == 400
    assert client.get("/api/v1/encs/knowledge/gaps", {"offset": -1}).status_code == 400
    assert client.get("/api/v1/encs/knowledge/gaps", {"colour": "red"}).status_code == 400
    client.force_login(knowledge.books.users["agent"])
    assert client.get("/api/v1/encs/knowledge/articles", PERIOD).status_code == 403
    key = token_for(ChannelFactory.create(team=knowledge.books.team))
    client.logout()
    by_token = client.get(
        "/api/v1/encs/knowledge/macros", PERIOD, HTTP_AUTHORIZATION=f"Token {key}"
    )
    assert by_token.status_code == 200 and by_token.json()["count"] == 1


def test_openapi_describes_the_knowledge_endpoints(client: Client, db: None) -> None:
    schema = client.get("/api/schema/", {"format": "json"}).json()
    for name in ("articles", "macros", "stale", "gaps"):
        operation = schema["paths"][f"/api/v1/encs/knowledge/{name}"]["get"]
        assert {p["name"] for p in operation["parameters"]} >= {"from", "to", "limit", "offset"}


def test_dashboard_shows_the_knowledge_section(client: Client, knowledge: Knowledge) -> None:
    manager(client, knowledge.books)
    page = client.get("/accounting/", PERIOD).content.decode()
    assert 'id="knowledge"' in page
    assert 'data-article="Shipping" data-encs="1.2790000000"' in page
    assert 'data-macro="Greeting"' in page
    assert 'data-stale="Warranty"' in page
    assert "Do you ship to Canada? (0)" in page
    assert "Other shipping" not in page


def test_monthly_report_includes_the_knowledge(knowledge: Knowledge) -> None:
    report = report_generate(month=date(2026, 10, 1), team=knowledge.books.team)
    html = report.html.read().decode()
    assert "Knowledge" in html and "Shipping" in html and "Do you ship to Canada? (0)" in html
    assert report.pdf.read().startswith(b"%PDF")
    manager = knowledge.books.users["manager"]
    manager.email = "manager@hand.example"
    manager.save()
    assert report_email(report) == ["manager@hand.example"]
    (mail,) = django_mail.outbox
    assert "Grounded drafts: 10, ENCS $2.7650000000" in mail.body
    assert "content gaps: 4 groups" in mail.body
    stored = report.figures["knowledge"]
    assert stored["grounded_encs_usd"] == "2.7650000000"
    assert [g["count"] for g in stored["content_gaps"]["groups"]] == [3, 2, 1, 1]
