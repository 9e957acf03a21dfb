"""Training the cascade router: labels from explored drafts and agent actions, the features
known before any call, and the held-out comparison with the plain cascade that alone puts a
version in force (two scenarios: one where routing pays, one where the plain cascade already
does as well)."""

from __future__ import annotations

import random
from decimal import Decimal

import numpy as np
import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from drafting import tasks
from drafting.learning import routing
from drafting.learning.routing import RouteSignals, route_features
from drafting.models import ActionValues, CascadePolicy, Draft, TrainedClassifier
from tests.drafting.factories import cheap_endpoint, paid_endpoint, two_tier_team
from tests.factories import (
    AgentActionFactory,
    DraftAttemptFactory,
    DraftFactory,
    MessageFactory,
    TeamSetup,
    UserFactory,
)

REFUNDS = [
    "Where is my refund for order {n}?",
    "I returned the parcel {n} days ago and still have no refund.",
    "When will the money for my return come back? It has been {n} days.",
    "My refund for the {n} euro jacket has not arrived.",
]
PASSWORDS = [
    "I forgot my password, can you reset it? Attempt {n}.",
    "I cannot log in after {n} tries, please help me reset my password.",
    "The password reset link expired after {n} minutes.",
    "How do I change my password? I tried {n} times.",
]
REFUND_REPLY = "I have issued your refund today; it reaches your account within 5 business days."
PASSWORD_REPLY = "I have sent you a new password reset link; it is valid for 24 hours."
VAGUE = "I am not sure about that, maybe try again later?"


def team(name: str) -> TeamSetup:
    """Tier 1 cheap (threshold 0.5), tier 2 dearer: no endpoint is called in these tests."""
    return two_tier_team(
        name,
        cheap_endpoint("http://127.0.0.1:9/v1"),
        paid_endpoint("http://127.0.0.1:9/v1"),
        threshold="0.5",
    )


def explored_drafts(
    setup: TeamSetup,
    *,
    n: int,
    cheap_fails_refunds: bool,
    strong_fails_refunds: bool,
    seed: int = 0,
) -> None:
    """`n` acted-on drafts, half about refunds, half about passwords, with both tiers' texts
    kept (the exploration sample). Tier 1's draft always scores 0.9, so the plain cascade shows
    it; the agent sends the right reply, which a tier's draft either is or is not."""
    rng = random.Random(seed)
    first, second = setup.policy.tiers.order_by("position")
    for i in range(n):
        refund = i % 2 == 0
        text = rng.choice(REFUNDS if refund else PASSWORDS).format(n=rng.randint(2, 40))
        reply = REFUND_REPLY if refund else PASSWORD_REPLY
        cheap = VAGUE if refund and cheap_fails_refunds else reply
        strong = VAGUE if refund and strong_fails_refunds else reply
        message = MessageFactory.create(conversation__channel=setup.channel, text=text)
        draft = DraftFactory.create(
            message=message,
            policy=setup.policy,
            status=Draft.Status.READY,
            text=cheap,
            ready_at=timezone.now(),
        )
        DraftAttemptFactory.create(
            draft=draft,
            tier=1,
            endpoint=first.endpoint,
            text=cheap,
            score=Decimal("0.9"),
            cost=Decimal("0.0001"),
            latency_ms=1000,
        )
        DraftAttemptFactory.create(
            draft=draft,
            tier=2,
            endpoint=second.endpoint,
            text=strong,
            score=Decimal("0.9"),
            cost=Decimal("0.002"),
            latency_ms=3000,
            exploratory=True,
        )
        used = cheap == reply
        AgentActionFactory.create(
            draft=draft,
            agent=setup.agent,
            kind="use" if used else "ignore",
            final_text=reply,
            edit_distance=Decimal("0") if used else None,
            shown_at=draft.ready_at,
            acted_at=timezone.now(),
        )


# --- Features and labels ------------------------------------------------------------------------


def test_features_put_intent_and_grounding_beside_the_embedding() -> None:
    vectors = np.ones((2, 3), dtype=np.float32)
    rows = route_features(
        vectors,
        [
            RouteSignals(intent_id=7, knowledge="grounded", need=0.8, best_similarity=0.6),
            RouteSignals(intent_id=99),  # an intent the router never saw, nothing known
        ],
        intents=[5, 7],
    )
    assert rows.shape == (2, 3 + 2 + 3 + 4)
    assert rows[0, 3:].tolist() == [0, 1, 1, 0, 0, 0.8, 1, 0.6, 1]
    assert rows[1, 3:].tolist() == [0] * 9


def test_explored_drafts_label_every_tier_and_others_the_shown_one(db: None) -> None:
    setup = team("Labels")
    explored_drafts(setup, n=2, cheap_fails_refunds=True, strong_fails_refunds=False)
    # A draft outside the exploration sample: tier 1 shown (no text kept), the agent used it.
    first = setup.policy.tiers.get(position=1)
    draft = DraftFactory.create(
        message=MessageFactory.create(conversation__channel=setup.channel, text="Hello?"),
        policy=setup.policy,
        status=Draft.Status.READY,
        text="Hi! How can I help?",
        ready_at=timezone.now(),
    )
    DraftAttemptFactory.create(draft=draft, tier=1, endpoint=first.endpoint)
    AgentActionFactory.create(draft=draft, agent=setup.agent, kind="use")
    tiers = list(setup.policy.tiers.order_by("position"))

    rows = {r.draft_id: r for r in routing.router_rows(policy=setup.policy, tiers=tiers, limit=50)}

    assert rows[draft.pk].labels == {0: "1"} and not rows[draft.pk].complete
    explored = [r for r in rows.values() if r.complete]
    assert sorted(tuple(sorted(r.labels.items())) for r in explored) == [
        ((0, "0"), (1, "1")),  # refund: the cheap tier's vague draft is not what was sent
        ((0, "1"), (1, "1")),
    ]
    assert all(r.costs == {0: 0.0001, 1: 0.002} for r in explored)
    assert all(r.latency_s == {0: 1.0, 1: 3.0} for r in explored)


def test_too_few_explored_drafts_train_nothing(db: None) -> None:
    setup = team("Few")
    explored_drafts(setup, n=10, cheap_fails_refunds=True, strong_fails_refunds=False)

    outcome = routing.router_train(policy=setup.policy)

    assert outcome.classifier is None
    assert "10 drafts with every tier's answer, 30 needed" in outcome.reason
    assert not TrainedClassifier.objects.filter(kind=TrainedClassifier.Kind.ROUTER).exists()


# --- The held-out comparison --------------------------------------------------------------------


@pytest.mark.slow
def test_a_router_that_beats_the_plain_cascade_held_out_goes_into_force(db: None) -> None:
    """The scorer lets tier 1's vague refund drafts through (0.9): the plain cascade shows them;
    the router learns that tier 1 fails refunds and sends them to tier 2."""
    setup = team("Beats")
    explored_drafts(setup, n=40, cheap_fails_refunds=True, strong_fails_refunds=False)

    outcome = routing.router_train(policy=setup.policy)

    assert outcome.activated, outcome.reason
    classifier = outcome.classifier
    assert classifier is not None and classifier.active
    assert classifier.kind == TrainedClassifier.Kind.ROUTER
    metrics = classifier.metrics
    assert metrics["explored"] == 40
    assert metrics["routed_value_usd"] > metrics["plain_value_usd"]
    assert metrics["routed_good"] > metrics["plain_good"] == 0.5
    assert metrics["routed_skip_share"][0] > 0
    assert "not_activated" not in metrics
    # Tier 1's labels are of both classes: a PLR; tier 2's all good: its base rate.
    assert metrics["tiers"][0]["auc"] is not None
    assert metrics["tiers"][1]["auc"] is None


@pytest.mark.slow
def test_a_router_no_better_than_the_plain_cascade_is_stored_inactive(db: None) -> None:
    """Tier 1 is always right and cheaper: the router never skips it, and a router that does
    no better than the plain cascade stays out of force (the one in force stays)."""
    setup = team("Ties")
    explored_drafts(setup, n=40, cheap_fails_refunds=False, strong_fails_refunds=True)
    ActionValues.objects.create(
        team=setup.team,
        s_use=Decimal("0.60"),
        s_edit=Decimal("0.30"),
        s_ignore=Decimal("-0.10"),
        wait_per_second=Decimal("0.01"),
        n_actions=40,
    )

    outcome = routing.router_train(policy=setup.policy)

    assert not outcome.activated
    classifier = outcome.classifier
    assert classifier is not None and not classifier.active
    metrics = classifier.metrics
    assert metrics["routed_value_usd"] == metrics["plain_value_usd"]
    assert metrics["routed_skip_share"] == [0.0, 0.0]
    assert "not above" in metrics["not_activated"]
    # The team's measured values: a good draft is worth s_use − s_ignore.
    assert Decimal(metrics["good_draft_usd"]) == Decimal("0.70")
    assert Decimal(metrics["wait_per_second_usd"]) == Decimal("0.01")


# --- Retraining: the schedule, the task, the admin action --------------------------------------


def test_the_retrain_is_scheduled_and_its_task_registered() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["retrain-routers"]
    assert entry["task"] == "drafting.tasks.routers_retrain"
    assert tasks.routers_retrain_task.name == entry["task"]


@pytest.mark.slow
def test_the_retrain_trains_policies_with_routing_on_and_new_actions_only(db: None) -> None:
    routed = team("Retrain")
    explored_drafts(routed, n=30, cheap_fails_refunds=True, strong_fails_refunds=False)
    off = team("Off")
    explored_drafts(off, n=30, cheap_fails_refunds=True, strong_fails_refunds=False)
    CascadePolicy.objects.filter(pk=off.policy.pk).update(routing=False)

    [message] = tasks.routers_retrain_task()

    assert message.startswith(f"policy {routed.policy.pk}: router v1")
    assert routing.routers_retrain() == []  # no action since that version


def test_the_admin_action_trains_and_says_why_not(client: Client, db: None) -> None:
    setup = team("Admin")
    explored_drafts(setup, n=4, cheap_fails_refunds=True, strong_fails_refunds=False)
    user = UserFactory.create(username="root", is_staff=True, is_superuser=True)
    client.force_login(user)

    response = client.post(
        "/admin/drafting/cascadepolicy/",
        {"action": "train_router_now", "_selected_action": [setup.policy.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "router not trained" in response.content.decode()
    assert "4 drafts with every tier" in response.content.decode()
