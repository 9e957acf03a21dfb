"""The completion cache: agent-approved first-turn replies reused per team, until they expire."""

from __future__ import annotations

import importlib
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.apps import apps as django_apps
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from drafting import services as drafting
from drafting.engine.cache import cache_key
from drafting.models import CachedReply, Draft, ReplyExample
from drafting.selectors import cached_replies_with_hits
from tests.drafting.engine.factories import ANSWER, QUESTION, act, generate, stubbed_team
from tests.factories import TeamSetup, ingest
from tests.http_stub import Reply, chat_completion, openai_stub


def test_an_approved_first_turn_reply_is_served_from_the_cache_next_time(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Cache", stub.base_url)
        first = generate(setup, "a")
        act(setup, first, "use", first.text)
        second = generate(setup, "b", "  do you SHIP to canada  ")  # same question, normalised
    assert len(stub.requests) == 1  # the second draft asked no model
    assert second.status == Draft.Status.READY
    assert second.text == ANSWER
    hit = second.attempts.get()
    assert (hit.cache_hit, hit.cache_match, hit.tier, hit.endpoint, hit.cost) == (
        True,
        "exact",
        0,
        None,
        Decimal(0),
    )
    assert hit.cache_source == first
    assert second.total_cost == 0
    # Savings against the all-paid baseline: the same answer cost the source draft this much.
    assert first.counterfactual_cost is not None
    assert second.counterfactual_cost == first.counterfactual_cost
    assert cached_replies_with_hits().get().hits == 1  # type: ignore[attr-defined]


def test_an_exact_hit_costs_three_statements(db: None) -> None:
    """The exact hit is the cheapest draft there is; bench/cascade.py times it. Claim and read
    (UPDATE … RETURNING), look-up, then the attempt and the draft together (one statement), and
    the stream's "settled" event (pg_notify, no table read) that ends an open console's wait."""
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Statements", stub.base_url)
        act(setup, generate(setup, "a"), "use", ANSWER)
        draft = ingest(setup, "b", "b-1", QUESTION).draft
        assert draft is not None
        with CaptureQueriesContext(connection) as queries:
            drafting.draft_generate(draft_id=draft.pk)
    statements = [query["sql"].split()[0] for query in queries.captured_queries]
    assert statements == ["UPDATE", "SELECT", "WITH", "SELECT"]
    assert "pg_notify" in queries.captured_queries[-1]["sql"]


def test_a_lightly_edited_reply_is_cached_as_the_agent_sent_it(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Edited", stub.base_url)
        first = generate(setup, "a")
        act(setup, first, "edit", ANSWER + " Thanks!")
        second = generate(setup, "b")
    assert second.text == ANSWER + " Thanks!"


def test_ignored_and_heavily_edited_drafts_are_not_cached(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Rejected", stub.base_url)
        act(setup, generate(setup, "a"), "ignore", "We do not ship there, sorry.")
        act(
            setup,
            generate(setup, "b"),
            "edit",
            "Canada: yes, but only by courier, 2 weeks, extra fee applies.",
        )
        generate(setup, "c")
    assert CachedReply.objects.count() == 0
    assert len(stub.requests) == 3


def test_a_different_question_misses(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Miss", stub.base_url)
        act(setup, generate(setup, "a"), "use", ANSWER)
        other = generate(setup, "b", "Do you ship to Mexico?")
    assert len(stub.requests) == 2
    assert not other.attempts.get().cache_hit


def test_an_expired_entry_misses(db: None, settings: Any) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Expired", stub.base_url)
        act(setup, generate(setup, "a"), "use", ANSWER)
        CachedReply.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        generate(setup, "b")
    assert len(stub.requests) == 2


def test_the_cache_is_per_team(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        acme = stubbed_team("Acme", stub.base_url)
        globex = stubbed_team("Globex", stub.base_url)
        act(acme, generate(acme, "a"), "use", ANSWER)
        theirs = generate(globex, "a")
    assert len(stub.requests) == 2
    assert not theirs.attempts.get().cache_hit


def test_a_second_turn_never_hits_the_cache(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Turns", stub.base_url)
        act(setup, generate(setup, "a"), "use", ANSWER)
        ingest(setup, "b", "b-1", "Hello there")
        later = generate(setup, "b", QUESTION, turn=2)
    assert not later.attempts.get().cache_hit
    assert len(stub.requests) == 2


def test_a_cache_hit_costs_a_fixed_handful_of_statements(
    db: None, django_assert_max_num_queries: Any
) -> None:
    """The hit path is benchmarked (bench/cascade.py): claim, the draft with its first-turn
    flag, the look-up, then the attempt and the ready draft in one savepoint."""
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Statements", stub.base_url)
        act(setup, generate(setup, "a"), "use", ANSWER)
        draft = ingest(setup, "b", "b-1", QUESTION).draft
        assert draft is not None
        with django_assert_max_num_queries(7):
            drafting.draft_generate(draft_id=draft.pk)
    assert draft.attempts.get().cache_hit


# --- No customer's data in the cache (issue 13) ------------------------------------------------

JANE_REPLY = (
    "Hi Jane, order 51234 left for 12 Baker Street today; tracking goes to jane.doe@example.com."
)
JANE_DETAILS = ["Jane", "51234", "Baker", "jane.doe@example.com"]


def test_a_reply_with_one_customers_details_is_never_served_to_another(db: None) -> None:
    with openai_stub(
        Reply(body=chat_completion(JANE_REPLY)), Reply(body=chat_completion(ANSWER))
    ) as stub:
        setup = stubbed_team("Leak", stub.base_url)
        jane = generate(setup, "jane", "Where is my order?")
        act(setup, jane, "use", jane.text)
        bob = generate(setup, "bob", "Where is my order?")
    assert CachedReply.objects.count() == 0
    assert len(stub.requests) == 2  # Bob's draft was asked of the model, not the cache
    assert not bob.attempts.get().cache_hit
    assert not [detail for detail in JANE_DETAILS if detail in bob.text]


def test_a_generic_reply_is_cached_with_the_question_scrubbed_and_serves_others(
    db: None,
) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Scrubbed", stub.base_url)
        jane = generate(setup, "jane", f"Hi, I'm Jane Doe, jane.doe@example.com. {QUESTION}")
        act(setup, jane, "use", jane.text)
        bob = generate(setup, "bob", f"Hi, I'm Bob Stone, bob@example.org. {QUESTION}")
    entry = CachedReply.objects.get()
    assert entry.customer_text == f"Hi, I'm [NAME] [NAME], [EMAIL]. {QUESTION}"
    assert entry.reply == ANSWER
    assert len(stub.requests) == 1
    assert bob.attempts.get().cache_match == "exact"
    assert bob.text == ANSWER


def test_a_reply_naming_the_customer_by_their_reference_is_not_cached(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Named", stub.base_url)  # ingest() gives customers the ref "Dana"
        first = generate(setup, "a")
        act(setup, first, "edit", "Yes, Dana! We ship to Canada in 5-7 business days.")
    assert CachedReply.objects.count() == 0


def test_an_entry_stored_before_replies_were_checked_is_not_served(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Legacy", stub.base_url)
        source = generate(setup, "a")
        CachedReply.objects.create(
            team=setup.team,
            key=cache_key(QUESTION),
            customer_text=QUESTION,
            reply=JANE_REPLY,
            source_draft=source,
            created_at=timezone.now(),
            expires_at=timezone.now() + timedelta(days=1),
        )
        later = generate(setup, "b")
    assert not later.attempts.get().cache_hit
    assert later.text == ANSWER


def test_stored_replies_from_before_the_stronger_redaction_are_purged_or_rescrubbed(
    acme: TeamSetup,
) -> None:
    """The data migration: a cache entry holding a customer's details goes, a clean one
    stays; a few-shot example keeps its place with its texts scrubbed again."""
    migration = importlib.import_module("drafting.migrations.0016_scrub_stored_replies")
    later = timezone.now() + timedelta(days=1)
    leaky = CachedReply.objects.create(
        team=acme.team,
        key=cache_key("Where is order 48213?"),
        customer_text="Hi, I'm Jane Roe, where is order 48213?",
        reply="Dear Jane, order 48213 left our depot; write to jane.roe@example.com.",
        expires_at=later,
    )
    clean = CachedReply.objects.create(
        team=acme.team,
        key=cache_key(QUESTION),
        customer_text=QUESTION,
        reply=ANSWER,
        expires_at=later,
    )
    example = ReplyExample.objects.create(
        team=acme.team,
        customer_text="My card 4242.4242.4242.4242 was charged twice",
        reply="Sorry! Card 4242 4242 4242 4242 gets a refund today.",
        embedding=[0.0, 1.0],
        embedding_model="test",
        embedding_dimensions=2,
    )

    migration.scrub_stored_replies(django_apps, None)

    assert list(CachedReply.objects.values_list("pk", flat=True)) == [clean.pk]
    assert not CachedReply.objects.filter(pk=leaky.pk).exists()
    example.refresh_from_db()
    assert "4242" not in example.customer_text + example.reply
    assert "[CARD]" in example.customer_text
