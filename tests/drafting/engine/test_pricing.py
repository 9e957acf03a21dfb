"""Prices are versioned rows: an attempt costs the price in force when it started."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries

from drafting.engine.cascade import CascadeResult, TierAttempt, run_cascade
from drafting.engine.pricing import PriceBook, attempt_cost
from drafting.engine.providers import Completion
from drafting.engine.scoring import DefaultScorer, ScoringContext
from drafting.models import CascadeTier, Draft, ModelEndpoint
from tests.drafting.factories import GOOD, cheap_endpoint, drafted, paid_endpoint, two_tier_team
from tests.factories import EARLY, EndpointFactory, EndpointPriceFactory, UserFactory, make_team
from tests.http_stub import Reply, chat_completion, openai_stub

# --- The rule: the row with the latest effective_from ≤ t ---------------------------------------


def test_the_price_in_force_is_the_latest_row_that_started_at_or_before_the_time(db: None) -> None:
    endpoint = EndpointFactory.create(kind=ModelEndpoint.Kind.PAID)  # from EARLY
    cut = timezone.now()
    EndpointPriceFactory.create(
        endpoint=endpoint, effective_from=cut, input_price_per_mtok=Decimal("1.25")
    )
    EndpointPriceFactory.create(
        endpoint=endpoint, effective_from=cut + timedelta(days=30), input_price_per_mtok=Decimal(9)
    )
    book = PriceBook.load(endpoint_ids=[endpoint.pk])

    def in_force(at: timedelta) -> Decimal | None:
        price = book.price_at(endpoint.pk, cut + at)
        return None if price is None else price.input_price_per_mtok

    assert book.price_at(endpoint.pk, EARLY - timedelta(microseconds=1)) is None
    assert in_force(-timedelta(microseconds=1)) == Decimal(0)  # the factory's first row
    assert in_force(timedelta(0)) == Decimal("1.25")  # effective from that very instant
    assert in_force(timedelta(days=29)) == Decimal("1.25")
    assert in_force(timedelta(days=31)) == Decimal(9)
    assert book.price_at(endpoint.pk + 1000, cut) is None  # not in the book


def test_a_price_book_for_several_endpoints_is_one_query(
    db: None, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    endpoints = [EndpointFactory.create() for _ in range(3)]
    for endpoint in endpoints:
        EndpointPriceFactory.create(endpoint=endpoint, effective_from=timezone.now())
    with django_assert_num_queries(1):
        book = PriceBook.load(endpoint_ids=[e.pk for e in endpoints])
        assert all(book.price_at(e.pk, timezone.now()) is not None for e in endpoints)


# --- Drafts are costed at the prices of their time ---------------------------------------------


def test_a_price_change_costs_later_attempts_the_new_price_and_leaves_earlier_ones_alone(
    db: None,
) -> None:
    with openai_stub(
        Reply(body=chat_completion(GOOD, prompt_tokens=1000, completion_tokens=100))
    ) as stub:
        endpoint = paid_endpoint(stub.base_url)  # $2.50 in / $10 out per M since EARLY
        setup = make_team("Price cut", endpoint=endpoint)
        before = drafted(setup, conversation="before")
        EndpointPriceFactory.create(
            endpoint=endpoint,
            effective_from=timezone.now(),
            input_price_per_mtok=Decimal("1.25"),
            output_price_per_mtok=Decimal("5.00"),
            note="vendor price cut",
        )
        after = drafted(setup, conversation="after")
    # 1000 × 2.50/M + 100 × 10/M before the cut; 1000 × 1.25/M + 100 × 5/M after it.
    assert before.attempts.get().cost == Decimal("0.0035")
    assert after.attempts.get().cost == Decimal("0.00175")
    assert (before.total_cost, after.total_cost) == (Decimal("0.0035"), Decimal("0.00175"))
    before.refresh_from_db()
    assert before.total_cost == Decimal("0.0035")  # charged once, never re-priced


def test_the_counterfactual_prices_the_top_tier_as_it_stood_when_the_draft_was_made(
    db: None,
) -> None:
    with (
        openai_stub(Reply(body=chat_completion(GOOD, logprob=-0.01))) as cheap,
        openai_stub() as paid,
    ):
        top = paid_endpoint(paid.base_url)  # $2.50 / $10 since EARLY
        now = timezone.now()
        EndpointPriceFactory.create(
            endpoint=top,
            effective_from=now - timedelta(hours=1),
            input_price_per_mtok=Decimal("5.00"),
            output_price_per_mtok=Decimal("20.00"),
        )
        EndpointPriceFactory.create(  # announced, not yet in force
            endpoint=top,
            effective_from=now + timedelta(hours=1),
            input_price_per_mtok=Decimal("50.00"),
            output_price_per_mtok=Decimal("200.00"),
        )
        setup = two_tier_team(
            "Counterfactual",
            cheap_endpoint(cheap.base_url),
            top,
            threshold="0.5",
        )
        draft = drafted(setup)
    assert paid.requests == []  # the cheap tier was good enough
    # The stub's 42 prompt + 17 completion tokens at the top tier's $5 / $20 in force now.
    assert draft.counterfactual_cost == Decimal("0.00055")


def test_a_counterfactual_worked_out_later_still_uses_the_chosen_attempts_time(db: None) -> None:
    cheap = EndpointFactory.create(kind=ModelEndpoint.Kind.PAID)
    top = EndpointFactory.create(
        kind=ModelEndpoint.Kind.PAID, price__input_price_per_mtok=Decimal("2.00")
    )
    made_at = timezone.now() - timedelta(days=2)
    EndpointPriceFactory.create(
        endpoint=top, effective_from=made_at + timedelta(days=1), input_price_per_mtok=Decimal(4)
    )
    completion = Completion(
        text=GOOD, tokens_in=1000, tokens_out=0, latency_ms=5, model="m", finish_reason="stop"
    )
    chosen = TierAttempt(tier=1, endpoint=cheap, started_at=made_at, completion=completion)
    result = CascadeResult(
        prices=PriceBook.load(endpoint_ids=[cheap.pk, top.pk]), attempts=[chosen], chosen=chosen
    )
    tier = CascadeTier(position=2, endpoint=top)
    assert result.counterfactual_cost(tier) == Decimal("0.002")  # 1000 × $2/M, not $4/M


def test_a_local_tiers_gpu_hour_price_is_versioned_too(db: None) -> None:
    local = EndpointFactory.create()  # $0.80 per GPU hour since EARLY
    change = timezone.now()
    EndpointPriceFactory.create(
        endpoint=local, effective_from=change, gpu_hour_usd=Decimal("3.60"), note="new GPU host"
    )
    book = PriceBook.load(endpoint_ids=[local.pk])

    def cost_at(when: timedelta) -> Decimal:
        return attempt_cost(
            endpoint=local,
            price=book.price_at(local.pk, change + when),
            tokens_in=500,
            tokens_out=50,
            latency_ms=4000,
            server_ms=1800,
        )

    assert cost_at(-timedelta(seconds=1)) == Decimal("0.0004")  # 1.8 GPU-s × $0.80/h
    assert cost_at(timedelta(seconds=1)) == Decimal("0.0018")  # 1.8 GPU-s × $3.60/h


def test_an_attempt_with_no_price_in_force_costs_nothing_and_logs_a_warning(
    db: None, caplog: pytest.LogCaptureFixture
) -> None:
    with openai_stub(Reply(body=chat_completion(GOOD))) as stub:
        unpriced = EndpointFactory.create(
            name="unpriced", kind=ModelEndpoint.Kind.PAID, base_url=stub.base_url, price=None
        )
        EndpointPriceFactory.create(  # only a future price: none in force yet
            endpoint=unpriced,
            effective_from=timezone.now() + timedelta(days=1),
            input_price_per_mtok=Decimal("2.50"),
        )
        setup = make_team("Unpriced", endpoint=unpriced)
        with caplog.at_level(logging.WARNING, logger="drafting.engine.pricing"):
            draft = drafted(setup)
    assert draft.status == Draft.Status.READY  # the customer still gets a draft
    assert draft.attempts.get().cost == Decimal(0)
    assert draft.total_cost == Decimal(0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no price in force" in m and "unpriced" in m for m in warnings)


def test_the_cascade_loads_every_tiers_prices_in_one_query(
    db: None, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    unsure = Reply(body=chat_completion("Maybe. I think?", logprob=-3.0))
    with openai_stub(unsure) as first, openai_stub(Reply(body=chat_completion(GOOD))) as second:
        setup = two_tier_team(
            "One query",
            paid_endpoint(first.base_url),
            paid_endpoint(second.base_url),
            threshold="0.5",
        )
        tiers = list(setup.policy.tiers.select_related("endpoint").order_by("position"))
        with django_assert_num_queries(1):
            result = run_cascade(
                tiers=tiers,
                messages=[{"role": "user", "content": "Where is my refund?"}],
                context=ScoringContext(customer_text="Where is my refund?"),
                scorer=DefaultScorer(),
                deadline=time.monotonic() + 30,
            )
            assert result.counterfactual_cost(tiers[-1]) == result.attempts[-1].cost
    assert [a.ok for a in result.attempts] == [True, True]
    assert all(a.cost > 0 for a in result.attempts)


# --- The data migration ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_each_endpoints_prices_into_an_initial_row_and_back() -> None:
    before = [("drafting", "0007_prompt_budget")]
    after = [("drafting", "0008_endpoint_prices")]
    executor = MigrationExecutor(connection)
    try:
        executor.migrate(before)
        old_apps = executor.loader.project_state(before).apps
        old_endpoint = old_apps.get_model("drafting", "ModelEndpoint").objects.create(
            name="legacy",
            kind="paid",
            model_name="m",
            input_price_per_mtok=Decimal("2.5"),
            output_price_per_mtok=Decimal("10"),
            request_fee=Decimal("0.0001"),
            gpu_hour_usd=Decimal("0"),
        )

        executor.loader.build_graph()
        executor.migrate(after)
        new_apps = executor.loader.project_state(after).apps
        price_model = new_apps.get_model("drafting", "EndpointPrice")
        row = price_model.objects.get(endpoint_id=old_endpoint.pk)
        assert (row.effective_from, row.note) == (EARLY, "initial")
        assert (row.input_price_per_mtok, row.output_price_per_mtok, row.request_fee) == (
            Decimal("2.5"),
            Decimal("10"),
            Decimal("0.0001"),
        )
        price_model.objects.create(  # a later cut: the price in force now
            endpoint_id=old_endpoint.pk,
            effective_from=timezone.now() - timedelta(days=1),
            input_price_per_mtok=Decimal("1.25"),
        )

        executor.loader.build_graph()
        executor.migrate(before)
        restored = old_apps.get_model("drafting", "ModelEndpoint").objects.get(pk=old_endpoint.pk)
        assert restored.input_price_per_mtok == Decimal("1.25")
    finally:
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


# --- Admin -------------------------------------------------------------------------------------


def admin_client(client: Client) -> Client:
    client.force_login(UserFactory.create(username="root", is_staff=True, is_superuser=True))
    return client


def test_the_endpoint_page_lists_its_prices_newest_first_and_says_how_to_change_one(
    client: Client, db: None
) -> None:
    endpoint = EndpointFactory.create(kind=ModelEndpoint.Kind.PAID, price__note="launch price")
    EndpointPriceFactory.create(
        endpoint=endpoint, effective_from=timezone.now(), note="vendor price cut"
    )
    response = admin_client(client).get(f"/admin/drafting/modelendpoint/{endpoint.pk}/change/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="prices-group"' in body
    assert body.index("vendor price cut") < body.index("launch price")
    assert "add a new row with a future effective date" in body
    assert "past attempts keep the cost" in body


def test_the_endpoint_list_shows_the_price_in_force_in_a_constant_number_of_queries(
    client: Client, db: None
) -> None:
    client = admin_client(client)

    def priced_endpoint() -> None:
        endpoint = EndpointFactory.create(
            kind=ModelEndpoint.Kind.PAID,
            daily_spend_cap=Decimal("1"),
            price__input_price_per_mtok=Decimal("2.50"),
            price__output_price_per_mtok=Decimal("10.00"),
        )
        for days, price in ((-1, Decimal("1.25")), (1, Decimal("9.00"))):
            EndpointPriceFactory.create(
                endpoint=endpoint,
                effective_from=timezone.now() + timedelta(days=days),
                input_price_per_mtok=price,
                output_price_per_mtok=Decimal("5.00"),
            )

    def list_page() -> tuple[int, str]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/admin/drafting/modelendpoint/")
        assert response.status_code == 200
        return len(queries), response.content.decode()

    priced_endpoint()
    one, _ = list_page()
    for _ in range(4):
        priced_endpoint()
    EndpointFactory.create(price__gpu_hour_usd=Decimal("0.80"))
    EndpointFactory.create(price=None)
    many, body = list_page()
    assert many == one
    assert body.count("$1.25 in / $5 out per M") == 5  # neither the old nor the future price
    assert "$0.8/GPU h" in body
    assert "no price in force" in body
