"""Per-intent thresholds and routes (drafting.learning.intent_rules): the optimiser's proposal
per intent with enough labels, applying it, and the cascade using an intent's rules only once
they rest on enough labels (the policy's otherwise), with routed tiers recorded."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from auditlog.models import LogEntry as AuditEntry
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse

from drafting import services as drafting
from drafting.learning import intent_rules, optimiser, tuning
from drafting.models import (
    CascadePolicy,
    CascadeTier,
    DraftAttempt,
    Intent,
    IntentRule,
    MessageIntent,
)
from tests.drafting.factories import cheap_endpoint, paid_endpoint, two_tier_team
from tests.factories import (
    EARLY,
    AgentActionFactory,
    DraftAttemptFactory,
    DraftFactory,
    EndpointFactory,
    PolicyFactory,
    TeamFactory,
    TierFactory,
    UserFactory,
    ingest,
)
from tests.http_stub import Reply, chat_completion, openai_stub

GOOD = "Your refund was issued today and should reach your card within five working days."
WRONG = "Please restart the router and tell us which lights are blinking on the front panel."
CHEAP, DEAR = Decimal("0.0001"), Decimal("0.0100")
MIN_LABELS = 12


def _policy() -> CascadePolicy:
    """Two tiers: tier 1 cheap, kept from g ≥ 0.80; tier 2 dear. Intents need 12 labels."""
    policy = PolicyFactory.create(
        team=TeamFactory.create(), explore_share=Decimal("0.1"), intent_min_labels=MIN_LABELS
    )
    TierFactory.create(
        policy=policy,
        position=1,
        endpoint=EndpointFactory.create(name="small"),
        threshold=Decimal("0.8000"),
    )
    TierFactory.create(
        policy=policy,
        position=2,
        endpoint=EndpointFactory.create(name="large"),
        threshold=Decimal("0.5000"),
    )
    return policy


def _intent(policy: CascadePolicy, name: str) -> Intent:
    return Intent.objects.create(team=policy.team, name=name)


def _explored(policy: CascadePolicy, intent: Intent, *, n: int, tier1_good: bool) -> None:
    """`n` explored drafts of `intent` (confident verdicts): tier 1's answer always right or
    always wrong (scores 0.30 … 0.99 either way), tier 2's always right."""
    tiers = list(policy.tiers.select_related("endpoint").order_by("position"))
    agent = UserFactory.create()
    for i in range(n):
        score = Decimal(f"{0.30 + 0.69 * i / max(n - 1, 1):.4f}")
        first = GOOD if tier1_good else WRONG
        draft = DraftFactory.create(
            policy=policy,
            message__conversation__channel__team=policy.team,
            status="ready",
            ready_at=EARLY,
            text=first,
            score=score,
        )
        MessageIntent.objects.create(message=draft.message, intent=intent, confidence=Decimal("1"))
        DraftAttemptFactory.create(
            draft=draft, tier=1, endpoint=tiers[0].endpoint, score=score, cost=CHEAP, text=first
        )
        DraftAttemptFactory.create(
            draft=draft,
            tier=2,
            endpoint=tiers[1].endpoint,
            score=Decimal("0.9000"),
            cost=DEAR,
            text=GOOD,
            exploratory=True,
            propensity=Decimal("0.1"),
        )
        AgentActionFactory.create(
            draft=draft,
            agent=agent,
            kind="use" if tier1_good else "ignore",
            final_text=GOOD,
            edit_distance=Decimal("0") if tier1_good else Decimal("0.8"),
        )


# --- The optimiser's proposal per intent ---------------------------------------------------------


def test_each_intent_with_enough_labels_gets_the_route_that_serves_it_best(db: None) -> None:
    policy = _policy()
    easy, hard, rare = _intent(policy, "refund"), _intent(policy, "router"), _intent(policy, "rare")
    _explored(policy, easy, n=MIN_LABELS, tier1_good=True)
    _explored(policy, hard, n=MIN_LABELS, tier1_good=False)
    _explored(policy, rare, n=3, tier1_good=True)

    found = intent_rules.intent_proposals(policy, value_usd=Decimal("0.50"))
    assert found.reason == ""
    assert found.waiting == [("rare", 3)]  # falls back to the policy's thresholds
    by_name = {p.intent_name: p for p in found.proposals}
    assert set(by_name) == {"refund", "router"}

    refund = by_name["refund"]
    assert refund.n_labels == MIN_LABELS
    first, last = refund.rows
    # Tier 1 is always right for refunds: keep every one of its drafts (threshold ≤ the lowest
    # score), never route past it; the policy's 0.80 sent most to the dear tier.
    assert (first.threshold, first.skip) == (Decimal("0.8000"), False)
    assert first.proposed_threshold <= Decimal("0.3000") and not first.proposed_skip
    assert (last.proposed_threshold, last.proposed_skip) == (Decimal("0.5000"), False)
    assert refund.proposed.accuracy == 1.0
    assert refund.proposed.cost_per_message == CHEAP.quantize(tuning.MONEY_QUANTUM)
    assert refund.current.encs_per_message is not None
    assert refund.proposed.encs_per_message is not None
    assert refund.proposed.encs_per_message > refund.current.encs_per_message

    router = by_name["router"]
    first, last = router.rows
    # Tier 1 never serves this intent: route past it, straight to tier 2.
    assert first.proposed_skip and not last.proposed_skip
    assert router.proposed.accuracy == 1.0
    assert router.proposed.cost_per_message == DEAR.quantize(tuning.MONEY_QUANTUM)
    assert router.changes


def test_a_route_ending_before_the_last_tier_keeps_its_answer_and_never_routes_later_tiers() -> (
    None
):
    columns = [
        tuning.TierColumn(1, 1, 11, "1: a", Decimal("0.5")),
        tuning.TierColumn(2, 2, 12, "2: b", Decimal("0.6")),
        tuning.TierColumn(3, 3, 13, "3: c", Decimal("0.7")),
    ]
    rules = intent_rules.route_rules(columns, [optimiser.Tier("2: b", 0.0)])
    # Tier 1 routed past; tier 2 keeps whatever it answers; tier 3 only if tier 2 fails.
    assert rules == [(Decimal("0.5"), True), (Decimal("0"), False), (Decimal("0.7"), False)]
    rules = intent_rules.route_rules(
        columns, [optimiser.Tier("1: a", 0.42), optimiser.Tier("3: c", 0.0)]
    )
    assert rules == [(Decimal("0.4200"), False), (Decimal("0.6"), True), (Decimal("0.7"), False)]


# --- Applying ------------------------------------------------------------------------------------


def test_applying_an_intents_rules_is_audit_logged_and_needs_enough_labels(db: None) -> None:
    policy = _policy()
    hard = _intent(policy, "router")
    _explored(policy, hard, n=MIN_LABELS, tier1_good=False)
    boss = UserFactory.create(username="boss", is_staff=True, is_superuser=True)
    tier1, tier2 = policy.tiers.order_by("position")

    changes = intent_rules.intent_rules_apply(
        policy=policy,
        intent_id=hard.pk,
        rules={tier1.pk: (Decimal("0.8"), True), tier2.pk: (Decimal("0.5"), False)},
        user=boss,
    )
    assert len(changes) == 2 and "routed" in changes[0]
    rule = IntentRule.objects.get(tier=tier1, intent=hard)
    assert (rule.threshold, rule.skip, rule.n_labels) == (Decimal("0.8000"), True, MIN_LABELS)
    assert LogEntry.objects.get(object_id=str(policy.pk)).user_id == boss.pk
    assert AuditEntry.objects.get_for_object(rule).get().actor_id == boss.pk

    with pytest.raises(tuning.TuningError, match="every tier"):
        intent_rules.intent_rules_apply(
            policy=policy, intent_id=hard.pk, rules={tier2.pk: (Decimal("0.5"), True)}, user=boss
        )
    thin = _intent(policy, "thin")
    _explored(policy, thin, n=2, tier1_good=False)
    with pytest.raises(tuning.TuningError, match="2 labelled drafts"):
        intent_rules.intent_rules_apply(
            policy=policy, intent_id=thin.pk, rules={tier1.pk: (Decimal("0.8"), True)}, user=boss
        )
    foreign = Intent.objects.create(team=TeamFactory.create(), name="router")
    with pytest.raises(tuning.TuningError):
        intent_rules.intent_rules_apply(
            policy=policy, intent_id=foreign.pk, rules={tier1.pk: (Decimal("0.8"), True)}, user=boss
        )
    assert IntentRule.objects.count() == 2


# --- Serving -------------------------------------------------------------------------------------


def _rule(tier: CascadeTier, intent: Intent, *, threshold: str, skip: bool, n: int) -> IntentRule:
    return IntentRule.objects.create(
        tier=tier, intent=intent, threshold=Decimal(threshold), skip=skip, n_labels=n
    )


def test_an_intents_rules_apply_only_once_they_rest_on_enough_labels(
    db: None, django_assert_num_queries: Callable[..., Any]
) -> None:
    policy = _policy()
    intent = _intent(policy, "router")
    tiers = list(policy.tiers.select_related("endpoint").order_by("position"))
    with django_assert_num_queries(0):  # no confident intent: no query on the hot path
        assert intent_rules.intent_route(tiers=tiers, intent_id=None).tiers == tiers

    rule = _rule(tiers[0], intent, threshold="0.9500", skip=False, n=MIN_LABELS - 1)
    same = intent_rules.intent_route(tiers=tiers, intent_id=intent.pk)
    assert [t.threshold for t in same.tiers] == [Decimal("0.8000"), Decimal("0.5000")]
    assert same.routed == []

    rule.n_labels = MIN_LABELS
    rule.save()
    with django_assert_num_queries(1):
        own = intent_rules.intent_route(tiers=tiers, intent_id=intent.pk)
    assert [t.threshold for t in own.tiers] == [Decimal("0.9500"), Decimal("0.5000")]
    assert tiers[0].threshold == Decimal("0.8000")  # the shared tier list is left alone

    rule.skip = True
    rule.save()
    routed = intent_rules.intent_route(tiers=tiers, intent_id=intent.pk)
    assert [t.position for t in routed.tiers] == [2]
    [skipped] = routed.routed
    assert skipped.tier == 1 and skipped.error is not None and skipped.error.kind == "routed"
    assert skipped.routing == {"rule": "intent", "intent": intent.pk, "n_labels": MIN_LABELS}

    # Routing past every tier routes past none.
    _rule(tiers[1], intent, threshold="0.5000", skip=True, n=MIN_LABELS)
    every = intent_rules.intent_route(tiers=tiers, intent_id=intent.pk)
    assert [t.position for t in every.tiers] == [1, 2] and every.routed == []


CHEAP_TEXT = "Thanks for writing! Your refund was issued today and arrives in 3-5 days."
STRONG_TEXT = (
    "Thanks for reaching out! I issued your refund today; it arrives within 5 business days."
)


@pytest.mark.parametrize("skip", [True, False])
def test_the_cascade_uses_the_messages_intent_rules_and_records_a_routed_tier(
    db: None, django_capture_on_commit_callbacks: Callable[..., Any], skip: bool
) -> None:
    """Tier 1's confident draft (logprob −0.01) stops the policy's cascade at 0.5; the intent's
    rule routes past tier 1, or demands a score of 1 there, so tier 2 answers."""
    with (
        openai_stub(Reply(body=chat_completion(CHEAP_TEXT, logprob=-0.01))) as cheap,
        openai_stub(Reply(body=chat_completion(STRONG_TEXT))) as strong,
    ):
        setup = two_tier_team(
            "Intents",
            cheap_endpoint(cheap.base_url),
            paid_endpoint(strong.base_url),
            threshold="0.5",
        )
        intent = Intent.objects.create(team=setup.team, name="refund")
        tier1 = setup.policy.tiers.get(position=1)
        _rule(tier1, intent, threshold="1", skip=skip, n=setup.policy.intent_min_labels)
        draft = ingest(setup, "c1", "c1-m1", "Where is my refund?").draft
        assert draft is not None
        MessageIntent.objects.create(message=draft.message, intent=intent, confidence=Decimal("1"))
        with django_capture_on_commit_callbacks(execute=True):
            drafting.draft_generate(draft_id=draft.pk, explore_draw=lambda: 1.0)
        assert len(cheap.requests) == (0 if skip else 1)
        assert len(strong.requests) == 1
    draft.refresh_from_db()
    assert draft.text == STRONG_TEXT
    first, second = draft.attempts.order_by("tier")
    if skip:
        assert (first.outcome, first.error_kind) == ("error", DraftAttempt.ErrorKind.ROUTED)
        assert first.routing == {"rule": "intent", "intent": intent.pk, "n_labels": 30}
        assert first.cost == 0
    else:
        assert first.outcome == "ok" and first.score is not None and first.score < 1
    assert second.outcome == "ok" and second.tier == 2


def test_without_a_confident_intent_the_policys_cascade_runs(
    db: None, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    with (
        openai_stub(Reply(body=chat_completion(CHEAP_TEXT, logprob=-0.01))) as cheap,
        openai_stub(Reply(body=chat_completion(STRONG_TEXT))) as strong,
    ):
        setup = two_tier_team(
            "Plain", cheap_endpoint(cheap.base_url), paid_endpoint(strong.base_url), threshold="0.5"
        )
        intent = Intent.objects.create(team=setup.team, name="refund")
        _rule(setup.policy.tiers.get(position=1), intent, threshold="1", skip=True, n=30)
        draft = ingest(setup, "c1", "c1-m1", "Where is my refund?").draft
        assert draft is not None
        # A verdict below the confidence floor is no intent.
        MessageIntent.objects.create(
            message=draft.message, intent=intent, confidence=Decimal("0.2")
        )
        with django_capture_on_commit_callbacks(execute=True):
            drafting.draft_generate(draft_id=draft.pk, explore_draw=lambda: 1.0)
        assert len(cheap.requests) == 1 and strong.requests == []
    draft.refresh_from_db()
    assert draft.text == CHEAP_TEXT


# --- The page ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_tuning_page_proposes_per_intent_rules_with_their_estimate_and_applies_them(
    client: Client, db: None
) -> None:
    policy = _policy()
    hard = _intent(policy, "router")
    _explored(policy, hard, n=MIN_LABELS, tier1_good=False)
    root = UserFactory.create(username="root", is_staff=True, is_superuser=True)
    client.force_login(root)
    url = reverse("admin:drafting_cascadepolicy_tuning", args=[policy.pk])
    page = client.get(url, {"objective": "encs", "value_usd": "0.50"})
    assert page.status_code == 200
    body = page.content.decode()
    assert "Per-intent thresholds and routes" in body
    assert "router (12 labelled drafts)" in body and "routed past" in body
    [proposal] = page.context["intents"].proposals
    assert proposal.estimate is not None and proposal.estimate.ok
    assert body.index("Proposed − in force", body.index("router (12")) < body.index("Apply router")
    tier1, tier2 = policy.tiers.order_by("position")
    response = client.post(
        url + "?objective=encs&value_usd=0.50",
        {
            "intent": str(hard.pk),
            f"intent_threshold_{tier1.pk}": "0.8000",
            f"intent_skip_{tier1.pk}": "1",
            f"intent_threshold_{tier2.pk}": "0.5000",
        },
        follow=True,
    )
    assert "Intent rules applied" in response.content.decode()
    assert IntentRule.objects.get(tier=tier1, intent=hard).skip
    # A bad threshold is refused with a message, nothing written.
    response = client.post(
        url, {"intent": str(hard.pk), f"intent_threshold_{tier2.pk}": "nope"}, follow=True
    )
    assert "Nothing applied" in response.content.decode()
    assert IntentRule.objects.get(tier=tier2, intent=hard).threshold == Decimal("0.5000")


def test_an_explored_draft_asks_the_tier_its_intent_routed_past(
    db: None, django_capture_on_commit_callbacks: Callable[..., Any], monkeypatch: Any
) -> None:
    """What a routed tier would have said stays on record for a share of drafts: exploration
    asks it once the draft is ready, so the intent's rules can be revised (and estimated)."""
    rung: list[int] = []
    monkeypatch.setattr(drafting, "_enqueue_explore", rung.append)
    with (
        openai_stub(Reply(body=chat_completion(CHEAP_TEXT, logprob=-0.01))) as cheap,
        openai_stub(Reply(body=chat_completion(STRONG_TEXT))) as strong,
    ):
        setup = two_tier_team(
            "Explore",
            cheap_endpoint(cheap.base_url),
            paid_endpoint(strong.base_url),
            threshold="0.5",
        )
        setup.policy.explore_share = Decimal("0.2")
        setup.policy.save()
        intent = Intent.objects.create(team=setup.team, name="refund")
        _rule(setup.policy.tiers.get(position=1), intent, threshold="1", skip=True, n=30)
        draft = ingest(setup, "c1", "c1-m1", "Where is my refund?").draft
        assert draft is not None
        MessageIntent.objects.create(message=draft.message, intent=intent, confidence=Decimal("1"))
        with django_capture_on_commit_callbacks(execute=True):
            drafting.draft_generate(draft_id=draft.pk, explore_draw=lambda: 0.1)
        assert rung == [draft.pk] and cheap.requests == []
        assert drafting.draft_explore(draft_id=draft.pk) == 1
        assert len(cheap.requests) == 1 and len(strong.requests) == 1
    rows = [
        (a.tier, a.error_kind, a.exploratory, a.propensity)
        for a in DraftAttempt.objects.filter(draft=draft).order_by("exploratory", "tier")
    ]
    assert rows == [
        (1, DraftAttempt.ErrorKind.ROUTED, False, Decimal("0.2000")),
        (2, "", False, Decimal("0.2000")),
        (1, "", True, Decimal("0.2000")),
    ]
