"""Tuning a policy's thresholds from explored drafts: the table, the preview, applying, admin."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.admin.models import CHANGE, LogEntry
from django.test import Client
from django.urls import reverse

from drafting.learning import tuning
from drafting.models import CascadePolicy, CascadeTier, DraftAttempt
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
)

CHEAP, DEAR = Decimal("0.0001"), Decimal("0.0100")
REPLY = "Your refund was issued today and should reach your card within five working days."
WRONG = "Please restart the router and tell us which lights are blinking on the front panel."


def _policy(
    *, tier1_threshold: str = "0.3000", explore_share: str = "0.1", prefix: str = ""
) -> CascadePolicy:
    team = TeamFactory.create()
    policy = PolicyFactory.create(team=team, explore_share=Decimal(explore_share))
    TierFactory.create(
        policy=policy,
        position=1,
        endpoint=EndpointFactory.create(name=f"{prefix}small"),
        threshold=Decimal(tier1_threshold),
    )
    TierFactory.create(
        policy=policy,
        position=2,
        endpoint=EndpointFactory.create(name=f"{prefix}large"),
        threshold=Decimal("0.5000"),
    )
    return policy


def _explored(policy: CascadePolicy, *, n: int, agent: Any = None) -> None:
    """`n` drafts where every tier answered: tier 1's answer is good exactly when its score is
    at least 0.70 (scores 0.30 … 0.99 spread evenly), tier 2's always is."""
    tiers = list(policy.tiers.select_related("endpoint").order_by("position"))
    agent = agent or UserFactory.create()
    for i in range(n):
        score = Decimal(f"{0.30 + 0.69 * i / max(n - 1, 1):.4f}")
        good = score >= Decimal("0.70")
        draft = DraftFactory.create(
            policy=policy,
            message__conversation__channel__team=policy.team,
            status="ready",
            ready_at=EARLY,
            text=REPLY if good else WRONG,
            score=score,
        )
        DraftAttemptFactory.create(
            draft=draft,
            tier=1,
            endpoint=tiers[0].endpoint,
            score=score,
            cost=CHEAP,
            text=REPLY if good else WRONG,
        )
        DraftAttemptFactory.create(
            draft=draft,
            tier=2,
            endpoint=tiers[1].endpoint,
            score=Decimal("0.9000"),
            cost=DEAR,
            text=REPLY + " ",  # stripped before comparing: still the agent's reply
            exploratory=True,
        )
        AgentActionFactory.create(
            draft=draft,
            agent=agent,
            kind="use" if good else "edit",
            final_text=REPLY,
            edit_distance=Decimal("0") if good else Decimal("0.8"),
        )


def test_exploration_table_labels_each_tier_against_the_agents_reply(db: None) -> None:
    policy = _policy()
    _explored(policy, n=10)
    # A draft with only tier 1's answer (not explored) is not a row.
    lone = DraftFactory.create(
        policy=policy, message__conversation__channel__team=policy.team, text=REPLY
    )
    DraftAttemptFactory.create(
        draft=lone, tier=1, endpoint=policy.tiers.get(position=1).endpoint, text=REPLY
    )
    AgentActionFactory.create(draft=lone, kind="use", final_text=REPLY)

    table, rows = tuning.exploration_table(policy)
    assert rows.rows == table.n == 10
    assert rows.acted_drafts == 11
    assert rows.exploratory_rows == 10
    assert table.models == ["1: small", "2: large"]
    # Scores 0.30, 0.3767, … 0.99: the four from 0.76 up are good for tier 1.
    assert table.quality[:, 0].sum() == 4
    assert table.quality[:, 1].sum() == 10
    assert (table.cost[:, 1] == float(DEAR)).all()
    assert rows.tier_mean_cost == [
        CHEAP.quantize(tuning.MONEY_QUANTUM),
        DEAR.quantize(tuning.MONEY_QUANTUM),
    ]


def test_preview_finds_the_threshold_that_separates_good_from_bad(db: None) -> None:
    policy = _policy(tier1_threshold="0.3000")
    _explored(policy, n=40)
    preview = tuning.policy_preview(policy, value_usd=Decimal("0.50"), objective="encs")
    assert preview.ok, preview.reason
    assert preview.rows.rows == 40
    current, proposed = preview.current, preview.proposed
    assert current is not None and proposed is not None
    # Now: tier 1 keeps everything (threshold 0.30), right only for scores ≥ 0.70.
    assert current.stop_share == [1.0, 0.0]
    assert current.accuracy < 0.5
    # Proposed: keep tier 1 exactly from the first good score (0.7123 with 40 rows) up.
    threshold = proposed.thresholds[0]
    assert Decimal("0.69") < threshold <= Decimal("0.7200")
    assert proposed.accuracy == 1.0
    assert proposed.encs_per_message is not None and current.encs_per_message is not None
    assert proposed.encs_per_message > current.encs_per_message
    # Cheaper than sending everything to tier 2, dearer than tier 1 alone.
    assert CHEAP < proposed.cost_per_message < CHEAP + DEAR
    assert proposed.thresholds[1] == Decimal("0.5000")  # the last tier's is left alone
    assert preview.changes
    # Scored on drafts the thresholds were not chosen on: still far better than now, and no
    # better than the in-sample figure (the boundary moves a little between folds).
    held = preview.held_out
    assert held is not None and held.folds == tuning.HELD_OUT_FOLDS
    assert current.accuracy < 0.9 <= held.accuracy <= proposed.accuracy
    assert held.encs_per_message is not None
    assert held.encs_per_message > current.encs_per_message


def test_quality_within_a_budget_escalates_only_as_far_as_it_affords(db: None) -> None:
    policy = _policy(tier1_threshold="0.3000")
    _explored(policy, n=40)
    budget = CHEAP + DEAR / 4  # a quarter of the messages may go to tier 2
    preview = tuning.policy_preview(policy, value_usd=None, objective="quality", budget_usd=budget)
    assert preview.proposed is not None, preview.reason
    assert preview.proposed.cost_per_message <= budget
    assert preview.proposed.stop_share[1] <= 0.25
    assert preview.proposed.accuracy > preview.current.accuracy  # type: ignore[union-attr]
    assert preview.proposed.encs_per_message is None


def test_too_few_explored_drafts_give_a_reason_not_a_proposal(db: None) -> None:
    policy = _policy(explore_share="0")
    _explored(policy, n=5)
    preview = tuning.policy_preview(policy, value_usd=Decimal("0.50"))
    assert not preview.ok
    assert preview.current is None
    assert "Only 5 drafts" in preview.reason
    assert "turn exploration on" in preview.reason


def test_apply_updates_thresholds_and_logs_who_changed_what(db: None) -> None:
    policy = _policy(tier1_threshold="0.3000")
    admin = UserFactory.create(username="boss", is_staff=True, is_superuser=True)
    tier1 = policy.tiers.get(position=1)
    changes = tuning.policy_apply_thresholds(
        policy=policy, thresholds={tier1.pk: Decimal("0.71234")}, user=admin
    )
    tier1.refresh_from_db()
    assert tier1.threshold == Decimal("0.7123")
    assert changes == ["tier 1 (small) 0.3000 → 0.7123"]
    entry = LogEntry.objects.get()
    assert entry.user_id == admin.pk
    assert entry.action_flag == CHANGE
    assert entry.object_id == str(policy.pk)
    assert "0.3000 → 0.7123" in entry.get_change_message()
    # A tier of another policy is refused, and nothing is written.
    other = _policy(prefix="other-").tiers.get(position=1)
    try:
        tuning.policy_apply_thresholds(
            policy=policy,
            thresholds={tier1.pk: Decimal("0.1"), other.pk: Decimal("0.2")},
            user=admin,
        )
    except tuning.TuningError:
        pass
    else:
        raise AssertionError("a foreign tier was accepted")
    tier1.refresh_from_db()
    assert tier1.threshold == Decimal("0.7123")
    assert LogEntry.objects.count() == 1


def _url(policy: CascadePolicy) -> str:
    return reverse("admin:drafting_cascadepolicy_tuning", args=[policy.pk])


def test_admin_tuning_page_shows_current_and_proposed_and_applies(client: Client, db: None) -> None:
    policy = _policy(tier1_threshold="0.3000")
    _explored(policy, n=40)
    root = UserFactory.create(username="root", is_staff=True, is_superuser=True)
    client.force_login(root)

    change = client.get(reverse("admin:drafting_cascadepolicy_change", args=[policy.pk]))
    assert _url(policy) in change.content.decode()

    page = client.get(_url(policy), {"objective": "encs", "value_usd": "0.50"})
    assert page.status_code == 200
    body = page.content.decode()
    assert "40 drafts" in body
    assert "Apply these thresholds" in body
    assert "anchor" in body  # the caveat
    assert "Expected on new messages" in body and "5-fold cross-validated" in body
    preview = page.context["preview"]
    proposed = preview.proposed.thresholds[0]
    assert str(proposed) in body

    tier1 = CascadeTier.objects.get(policy=policy, position=1)
    assert f'name="threshold_{tier1.pk}" value="{proposed}"' in body
    response = client.post(
        _url(policy),
        {"objective": "encs", "value_usd": "0.50", f"threshold_{tier1.pk}": str(proposed)},
        follow=True,
    )
    assert response.redirect_chain
    assert "thresholds applied" in response.content.decode().lower()
    assert CascadeTier.objects.get(policy=policy, position=1).threshold == proposed
    assert LogEntry.objects.filter(object_id=str(policy.pk), user=root).exists()


def test_admin_tuning_page_is_for_staff_only(client: Client, db: None) -> None:
    policy = _policy()
    client.force_login(UserFactory.create(username="agent-x"))
    response = client.get(_url(policy))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    tier1 = CascadeTier.objects.get(policy=policy, position=1)
    response = client.post(_url(policy), {f"threshold_{tier1.pk}": "0.9"})
    assert response.status_code == 302
    assert CascadeTier.objects.get(policy=policy, position=1).threshold == Decimal("0.3000")
    assert DraftAttempt.objects.count() == 0
