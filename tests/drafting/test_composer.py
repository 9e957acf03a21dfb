"""Composer tools (drafting.services.composer_rewrite): a rewrite of the agent's reply is an
attempt of the message's draft, priced and added to its cost, asked of the cheapest tier that
can answer; a paid tier gets the text masked; a failure keeps the agent's text. And what reads
attempts never takes a composer attempt for the draft's own (the audit of issue 17)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from drafting import selectors as drafting_selectors
from drafting import services as drafting
from drafting.engine.breaker import breaker
from drafting.learning import scorer as learning
from drafting.models import Draft, DraftAttempt
from drafting.observability import drafting_metrics
from tests.csbot.factories import MacroFactory
from tests.drafting.factories import GOOD, drafted, paid_endpoint, two_tier_team
from tests.factories import (
    AgentActionFactory,
    EndpointFactory,
    TeamSetup,
    TierFactory,
    ingest,
    make_team,
)
from tests.http_stub import Reply, chat_completion, openai_stub

AGENT_TEXT = "hi, your refund is done, it takes 3-5 days. mail refunds@shop.example if not"
SHORT = "Your refund is done; allow 3-5 days. Mail refunds@shop.example if not."


def local_team(name: str, base_url: str) -> TeamSetup:
    """A team whose one tier is a local endpoint (GPU-time priced) at `base_url`."""
    return make_team(name, endpoint=EndpointFactory.create(base_url=base_url))


def sent_messages(stub: Any, index: int = -1) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = stub.requests[index]["json"]["messages"]
    return messages


def test_a_rewrite_on_the_local_tier_is_an_attempt_of_the_draft_with_its_cost(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(GOOD))) as stub:
        setup = local_team("Local", stub.base_url)
        draft = drafted(setup)
        before = draft.total_cost
        stub.script[:] = [
            Reply(body=chat_completion(SHORT, prompt_tokens=120, completion_tokens=30))
        ]
        result = drafting.composer_rewrite(
            team=setup.team,
            message_id=draft.message_id,
            tool="shorten",
            text=AGENT_TEXT,
            user=setup.agent,
        )
    assert (result.text, result.error, result.tier) == (SHORT, "", 1)
    attempt = DraftAttempt.objects.get(pk=result.attempt_id)
    assert attempt.draft_id == draft.pk
    assert (attempt.purpose, attempt.kind, attempt.outcome) == ("shorten", "composer", "ok")
    assert (attempt.tokens_in, attempt.tokens_out) == (120, 30)
    assert attempt.endpoint_id == setup.endpoint.pk and attempt.text == ""
    # GPU time at $0.80/h: millionths of a dollar, but not nothing; added to the draft's cost.
    assert attempt.cost > 0 and attempt.cost == result.cost
    draft.refresh_from_db()
    assert draft.total_cost == before + attempt.cost
    # The local tier gets the agent's text as written (the customer's address too).
    system, user = sent_messages(stub)
    assert user["content"].endswith(f"\n\n{AGENT_TEXT}") and "shorter" in user["content"]
    assert "[EMAIL_1]" in system["content"]  # the rules: placeholders kept as written


def test_a_tier_that_cannot_do_it_hands_over_to_the_next_and_both_are_paid(db: None) -> None:
    """The cheapest tier that can do it: the local tier's answer is cut at its length limit (a
    small model rambling), so the paid tier is asked; both attempts are recorded and both
    costs counted; the agent gets the paid tier's rewrite."""
    with (
        openai_stub(Reply(body=chat_completion("Your refund is", finish_reason="length"))) as cheap,
        openai_stub(Reply(body=chat_completion(SHORT))) as paid,
    ):
        setup = two_tier_team(
            "Hand over",
            EndpointFactory.create(base_url=cheap.base_url),
            paid_endpoint(paid.base_url),
            threshold="0",
        )
        draft = ingest(setup, "c1", "c1-m1", "Where is my refund?").draft
        assert draft is not None
        result = drafting.composer_rewrite(
            team=setup.team,
            message_id=draft.message_id,
            tool="shorten",
            text=AGENT_TEXT,
            user=setup.agent,
        )
    assert (result.text, result.error, result.tier, result.tiers_asked) == (SHORT, "", 2, 2)
    attempts = list(DraftAttempt.objects.filter(draft=draft).order_by("id"))
    assert [(a.tier, a.purpose, a.outcome) for a in attempts] == [
        (1, "shorten", "ok"),
        (2, "shorten", "ok"),
    ]
    assert "cut off" in attempts[0].error_message and attempts[1].error_message == ""
    assert attempts[0].cost > 0 and attempts[1].cost > 0
    assert result.cost == attempts[0].cost + attempts[1].cost
    assert result.attempt_id == attempts[1].pk
    draft.refresh_from_db()
    assert draft.total_cost == result.cost
    assert len(cheap.requests) == 1 and len(paid.requests) == 1


def test_a_paid_tier_gets_the_text_masked_and_the_answer_unmasked(db: None) -> None:
    def echo_placeholder(payload: dict[str, Any]) -> Reply:
        user = payload["messages"][-1]["content"]
        assert "refunds@shop.example" not in user and "[EMAIL_1]" in user
        return Reply(body=chat_completion("Write to [EMAIL_1] if it has not arrived."))

    with openai_stub(echo_placeholder) as paid:
        setup = make_team("Paid", endpoint=paid_endpoint(paid.base_url))
        draft = ingest(setup, "c1", "c1-m1", "Where is my refund?").draft
        assert draft is not None
        result = drafting.composer_rewrite(
            team=setup.team,
            message_id=draft.message_id,
            tool="formal",
            text=AGENT_TEXT,
            user=setup.agent,
        )
    assert result.text == "Write to refunds@shop.example if it has not arrived."
    assert "refunds@shop.example" not in json.dumps(paid.requests[0]["json"])
    # Tokens priced at the paid tier's prices: 42 in × $2.50/M + 17 out × $10/M.
    assert result.cost == Decimal("0.000275")


def test_a_provider_failure_is_recorded_and_the_text_is_not_replaced(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(GOOD))) as stub:
        setup = local_team("Failing", stub.base_url)
        draft = drafted(setup)
        before = draft.total_cost
        stub.script[:] = [Reply(status=503, body={"error": {"message": "overloaded"}})]
        result = drafting.composer_rewrite(
            team=setup.team,
            message_id=draft.message_id,
            tool="grammar",
            text=AGENT_TEXT,
            user=setup.agent,
        )
    assert result.text == "" and "could not rewrite" in result.error
    attempt = DraftAttempt.objects.get(pk=result.attempt_id)
    assert (attempt.outcome, attempt.error_kind, attempt.purpose) == (
        "error",
        "unavailable",
        "grammar",
    )
    assert attempt.cost == 0
    draft.refresh_from_db()
    assert draft.total_cost == before
    assert draft.text == GOOD  # the draft itself is untouched


def test_an_answer_cut_at_the_length_limit_is_paid_for_but_not_applied(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("Your refund is", finish_reason="length"))) as stub:
        setup = local_team("Cut", stub.base_url)
        draft = ingest(setup, "c1", "c1-m1", "Where is my refund?").draft
        assert draft is not None
        result = drafting.composer_rewrite(
            team=setup.team,
            message_id=draft.message_id,
            tool="friendlier",
            text=AGENT_TEXT,
            user=setup.agent,
        )
    assert result.text == "" and "cut off" in result.error
    attempt = DraftAttempt.objects.get(pk=result.attempt_id)
    assert (
        attempt.outcome == "ok" and attempt.tokens_out == 17 and "cut off" in attempt.error_message
    )


def test_the_cheapest_tier_whose_circuit_is_closed_answers(db: None) -> None:
    with (
        openai_stub(Reply(body=chat_completion("from the local tier"))) as local,
        openai_stub(Reply(body=chat_completion("from the paid tier"))) as paid,
    ):
        setup = local_team("Tiers", local.base_url)
        TierFactory.create(policy=setup.policy, position=2, endpoint=paid_endpoint(paid.base_url))
        draft = ingest(setup, "c1", "c1-m1", "Where is my refund?").draft
        assert draft is not None
        first = drafting.composer_rewrite(
            team=setup.team, message_id=draft.message_id, tool="shorten", text="A", user=setup.agent
        )
        for _ in range(10):
            breaker().record_failure(setup.endpoint.pk, "unavailable")
        assert breaker().is_open(setup.endpoint.pk)
        second = drafting.composer_rewrite(
            team=setup.team, message_id=draft.message_id, tool="shorten", text="A", user=setup.agent
        )
    assert (first.tier, first.text, first.endpoint_kind) == (1, "from the local tier", "local")
    assert (second.tier, second.text, second.endpoint_kind) == (2, "from the paid tier", "paid")
    # Skipped tiers are not calls: two attempts, one per rewrite.
    assert draft.attempts.filter(purpose="shorten").count() == 2


def test_translate_asks_for_the_customers_language(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("Votre remboursement est effectué."))) as stub:
        setup = local_team("Translate", stub.base_url)
        draft = ingest(
            setup, "c1", "c1-m1", "Bonjour, où est mon remboursement ? Je ne l'ai pas reçu."
        ).draft
        assert draft is not None
        result = drafting.composer_rewrite(
            team=setup.team,
            message_id=draft.message_id,
            tool="translate",
            text="Your refund is done.",
            user=setup.agent,
        )
    assert result.text == "Votre remboursement est effectué." and result.language == "French"
    assert "into French" in sent_messages(stub)[1]["content"]


def test_without_a_draft_row_nothing_is_asked_or_recorded(db: None) -> None:
    with openai_stub() as stub:
        setup = local_team("NoDrafts", stub.base_url)
        setup.policy.active = False
        setup.policy.save()
        result = ingest(setup, "c1", "c1-m1", "Where is my refund?")
        assert result.draft is None
        with pytest.raises(drafting.ComposerRefused) as refused:
            drafting.composer_rewrite(
                team=setup.team,
                message_id=result.message.pk,
                tool="shorten",
                text=AGENT_TEXT,
                user=setup.agent,
            )
    assert refused.value.reason == "no_draft"
    assert stub.requests == [] and not DraftAttempt.objects.exists()


def test_another_teams_message_and_bad_input_are_refused(db: None) -> None:
    with openai_stub() as stub:
        acme, globex = local_team("Acme", stub.base_url), local_team("Globex", stub.base_url)
        theirs = ingest(globex, "c1", "c1-m1", "Where is my refund?")

        def refused(**overrides: Any) -> drafting.ComposerRefused:
            call: dict[str, Any] = {
                "team": acme.team,
                "message_id": theirs.message.pk,
                "tool": "shorten",
                "text": AGENT_TEXT,
                "user": acme.agent,
                **overrides,
            }
            with pytest.raises(drafting.ComposerRefused) as caught:
                drafting.composer_rewrite(**call)
            return caught.value

        assert refused().reason == "no_draft"  # not found for this team
        assert refused(team=globex.team, tool="summarise").field == "tool"
        assert refused(team=globex.team, text="  ").field == "text"
        assert refused(team=globex.team, text="x" * 4001).field == "text"
    assert stub.requests == []


# --- The audit: composer attempts are never the draft's own --------------------------------------


def rewritten(setup: TeamSetup, draft: Draft, stub: Any) -> DraftAttempt:
    """A composer rewrite on `draft`, at tier 1, after the draft's own attempts."""
    stub.script[:] = [Reply(body=chat_completion("Rewritten."))]
    result = drafting.composer_rewrite(
        team=setup.team, message_id=draft.message_id, tool="shorten", text="Text", user=setup.agent
    )
    return DraftAttempt.objects.get(pk=result.attempt_id)


def test_the_drafts_sources_and_escalations_ignore_composer_attempts(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(GOOD))) as stub:
        setup = local_team("Sources", stub.base_url)
        macro_draft = drafted(setup)
        # As a macro offer stores it: tier 0, the macro's attempt is what the draft came from.
        macro = MacroFactory.create(team=setup.team, title="Refunds")
        macro_draft.attempts.update(macro=macro, endpoint=None, tier=0)
        rewritten(setup, macro_draft, stub)
    sources = drafting_selectors.draft_sources(draft=macro_draft)
    assert sources is not None and sources.macro_title == "Refunds"
    assert drafting_selectors.draft_escalations(draft=macro_draft) == []


def test_scorer_labels_take_the_shown_draft_not_a_composer_rewrite(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(GOOD))) as stub:
        setup = local_team("Labels", stub.base_url)
        draft = drafted(setup)
        composer = rewritten(setup, draft, stub)
    # Even a composer attempt at a higher tier, with a score of its own, is not the shown one.
    DraftAttempt.objects.filter(pk=composer.pk).update(tier=2, score=Decimal("0.1"))
    AgentActionFactory.create(
        draft=draft,
        agent=setup.agent,
        kind="edit",
        final_text="Rewritten.",
        edit_distance=Decimal("0.5"),
        shown_at=draft.ready_at,
        acted_at=timezone.now(),
    )
    [row] = learning.scorer_labels(policy_id=setup.policy.pk, limit=10)
    shown = draft.attempts.get(purpose="")
    assert (row.tier, row.draft_text) == (1, GOOD)
    assert row.default_score == float(shown.score or 0)
    assert not row.has_earlier


def test_exploration_asks_the_tiers_above_the_drafts_not_above_a_rewrite(db: None) -> None:
    with (
        openai_stub(Reply(body=chat_completion(GOOD))) as local,
        openai_stub(Reply(body=chat_completion("The strong tier's draft."))) as paid,
    ):
        setup = local_team("Explore", local.base_url)
        TierFactory.create(policy=setup.policy, position=2, endpoint=paid_endpoint(paid.base_url))
        draft = drafted(setup)
        assert draft.attempts.count() == 1  # tier 1 answered at threshold 0
        for _ in range(10):
            breaker().record_failure(setup.endpoint.pk, "unavailable")
        composer = rewritten(setup, draft, paid)  # tier 1 cooling down: tier 2 rewrites
        assert composer.tier == 2
        breaker().record_success(setup.endpoint.pk)
        paid.script[:] = [Reply(body=chat_completion("The strong tier's draft."))]
        asked = drafting.draft_explore(draft_id=draft.pk)
    assert asked == 1
    assert draft.attempts.filter(exploratory=True, tier=2, purpose="").count() == 1


def test_metrics_count_a_rewrite_as_spend_and_a_composer_use_not_as_an_escalation(
    db: None,
) -> None:
    with (
        openai_stub(Reply(body=chat_completion(GOOD))) as local,
        openai_stub(Reply(body=chat_completion("Rewritten."))) as paid,
    ):
        setup = local_team("Metrics", local.base_url)
        TierFactory.create(policy=setup.policy, position=2, endpoint=paid_endpoint(paid.base_url))
        draft = drafted(setup)
        for _ in range(10):
            breaker().record_failure(setup.endpoint.pk, "unavailable")
        rewritten(setup, draft, paid)  # at tier 2: tier 1 is cooling down
    samples = {
        (family.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in drafting_metrics()
        for sample in family.samples
    }
    assert not any(name == "csbot_cascade_escalations" for name, _ in samples)
    assert samples["csbot_composer_uses", (("outcome", "ok"), ("tool", "shorten"))] == 1
    spent = samples["csbot_spend_usd", (("endpoint", paid_name(setup)), ("exploratory", "false"))]
    assert spent == float(Decimal("0.000275"))
    # The cascade's attempts count the draft's own only.
    attempts = [labels for name, labels in samples if name == "csbot_draft_attempts"]
    assert [dict(labels)["tier"] for labels in attempts] == ["1"]


def paid_name(setup: TeamSetup) -> str:
    return setup.policy.tiers.get(position=2).endpoint.name
