"""Exploration: for a share of drafts, the tiers the cascade did not ask are asked after the
draft is ready, so every tier's answer to the same message is on record. The draft itself,
the learned scorer's labels and the escalation explanations never see those answers."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from drafting import selectors as drafting_selectors
from drafting import services as drafting
from drafting.learning import scorer as learning
from drafting.learning import tuning
from drafting.models import Draft, DraftAttempt
from tests.drafting.factories import cheap_endpoint, paid_endpoint, two_tier_team
from tests.factories import AgentActionFactory, TeamSetup, ingest
from tests.http_stub import Reply, chat_completion, openai_stub

CHEAP = "Thanks for writing! Your refund was issued today and arrives in 3-5 days."
STRONG = "Thanks for reaching out! I issued your refund today; it arrives within 5 business days."


def exploring_team(name: str, cheap_url: str, strong_url: str, *, share: str) -> TeamSetup:
    """Tier 1 cheap with threshold 0.5 (a confident draft stops there), tier 2 at $2.50/$10."""
    setup = two_tier_team(
        name,
        cheap_endpoint(cheap_url),
        paid_endpoint(strong_url),
        threshold="0.5",
    )
    setup.policy.explore_share = Decimal(share)
    setup.policy.save()
    return setup


@pytest.fixture
def rung(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The draft ids `draft_explore` was enqueued for (the broker is not under test here)."""
    ids: list[int] = []
    monkeypatch.setattr(drafting, "_enqueue_explore", ids.append)
    return ids


def generate(setup: TeamSetup, capture: Callable[..., Any]) -> Draft:
    """Ingest a message and generate its draft, running what generation rings after commit
    (ingest's own doorbell is not rung: the draft is generated here)."""
    draft = ingest(setup, "c1", "c1-m1", "Where is my refund?").draft
    assert draft is not None
    with capture(execute=True):
        drafting.draft_generate(draft_id=draft.pk)
    draft.refresh_from_db()
    return draft


# --- The sample ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("share", "tiers", "draw", "sampled"),
    [
        ("0.25", 2, 0.2, True),
        ("0.25", 2, 0.3, False),
        ("1", 1, 0.0, False),  # one tier: nothing to compare
        ("0", 3, 0.0, False),
    ],
)
def test_a_draft_is_explored_when_its_draw_is_under_the_share_and_there_are_tiers_to_compare(
    share: str, tiers: int, draw: float, sampled: bool
) -> None:
    assert (
        drafting.in_exploration_sample(share=Decimal(share), enabled_tiers=tiers, draw=lambda: draw)
        is sampled
    )


# --- Exploring ----------------------------------------------------------------------------------


def test_an_explored_draft_asks_the_tier_the_cascade_skipped_and_keeps_the_draft_as_it_was(
    db: None, django_capture_on_commit_callbacks: Any, rung: list[int]
) -> None:
    with (
        openai_stub(Reply(body=chat_completion(CHEAP, logprob=-0.01))) as cheap,
        openai_stub(
            Reply(body=chat_completion(STRONG, prompt_tokens=800, completion_tokens=40))
        ) as strong,
    ):
        setup = exploring_team("Explore", cheap.base_url, strong.base_url, share="1")
        draft = generate(setup, django_capture_on_commit_callbacks)
        assert draft.status == Draft.Status.READY
        assert draft.text == CHEAP
        assert strong.requests == []  # the cascade stopped at tier 1
        assert rung == [draft.pk]
        [first] = draft.attempts.all()
        assert first.text == CHEAP  # kept: the draft is in the exploration sample
        assert not first.exploratory
        before = Draft.objects.get(pk=draft.pk)

        assert drafting.draft_explore(draft_id=draft.pk) == 1
        assert len(strong.requests) == 1
        # The same prompt as the cascade's tier 1 had (system prompt, then the message).
        assert strong.requests[0]["json"]["messages"] == cheap.requests[0]["json"]["messages"]

        assert drafting.draft_explore(draft_id=draft.pk) == 0  # a repeat asks nothing
        assert len(strong.requests) == 1

    draft.refresh_from_db()
    attempts = list(draft.attempts.order_by("tier"))
    assert [(a.tier, a.exploratory) for a in attempts] == [(1, False), (2, True)]
    explored = attempts[1]
    assert explored.outcome == DraftAttempt.Outcome.OK
    assert explored.text == STRONG
    assert explored.score is not None
    # 800 × $2.50/M + 40 × $10/M
    assert explored.cost == Decimal("0.0024")
    assert draft.total_cost == first.cost + explored.cost
    assert (draft.status, draft.text, draft.final_endpoint_id, draft.score) == (
        before.status,
        before.text,
        before.final_endpoint_id,
        before.score,
    )
    assert draft.counterfactual_cost == before.counterfactual_cost


def test_with_no_exploration_share_nothing_is_rung_and_no_text_is_kept(
    db: None, django_capture_on_commit_callbacks: Any, rung: list[int]
) -> None:
    with (
        openai_stub(Reply(body=chat_completion(CHEAP, logprob=-0.01))) as cheap,
        openai_stub() as strong,
    ):
        setup = exploring_team("No explore", cheap.base_url, strong.base_url, share="0")
        draft = generate(setup, django_capture_on_commit_callbacks)
    assert draft.status == Draft.Status.READY
    assert rung == []
    assert strong.requests == []
    assert list(draft.attempts.values_list("text", "exploratory")) == [("", False)]


def test_a_draft_whose_cascade_asked_every_tier_is_not_rung(
    db: None, django_capture_on_commit_callbacks: Any, rung: list[int]
) -> None:
    with (
        openai_stub(Reply(body=chat_completion("Maybe. I think?", logprob=-3.0))) as cheap,
        openai_stub(Reply(body=chat_completion(STRONG))) as strong,
    ):
        setup = exploring_team("Escalated", cheap.base_url, strong.base_url, share="1")
        draft = generate(setup, django_capture_on_commit_callbacks)
        assert drafting.draft_explore(draft_id=draft.pk) == 0
    assert draft.text == STRONG
    assert rung == []
    assert list(draft.attempts.order_by("tier").values_list("text", "exploratory")) == [
        ("Maybe. I think?", False),
        (STRONG, False),
    ]


def test_a_failing_tier_in_exploration_is_recorded_and_the_draft_is_untouched(
    db: None, django_capture_on_commit_callbacks: Any, rung: list[int]
) -> None:
    with (
        openai_stub(Reply(body=chat_completion(CHEAP, logprob=-0.01))) as cheap,
        openai_stub(Reply(status=401, body={"error": {"message": "bad key"}})) as strong,
    ):
        setup = exploring_team("Failing", cheap.base_url, strong.base_url, share="1")
        draft = generate(setup, django_capture_on_commit_callbacks)
        before = Draft.objects.get(pk=draft.pk)
        assert drafting.draft_explore(draft_id=draft.pk) == 1
        assert drafting.draft_explore(draft_id=draft.pk) == 0  # the error counts as asked
        assert len(strong.requests) == 1
    draft.refresh_from_db()
    explored = draft.attempts.get(exploratory=True)
    assert explored.tier == 2
    assert explored.outcome == DraftAttempt.Outcome.ERROR
    assert explored.error_kind == DraftAttempt.ErrorKind.PERMANENT
    assert (explored.text, explored.cost) == ("", Decimal(0))
    assert draft.total_cost == before.total_cost
    assert (draft.status, draft.text, draft.final_endpoint_id, draft.score) == (
        Draft.Status.READY,
        CHEAP,
        before.final_endpoint_id,
        before.score,
    )


def test_a_draft_that_is_no_longer_ready_is_not_explored(
    db: None, django_capture_on_commit_callbacks: Any, rung: list[int]
) -> None:
    with (
        openai_stub(Reply(body=chat_completion(CHEAP, logprob=-0.01))) as cheap,
        openai_stub() as strong,
    ):
        setup = exploring_team("Superseded", cheap.base_url, strong.base_url, share="1")
        draft = generate(setup, django_capture_on_commit_callbacks)
        Draft.objects.filter(pk=draft.pk).update(status=Draft.Status.SUPERSEDED)
        assert drafting.draft_explore(draft_id=draft.pk) == 0
    assert strong.requests == []
    assert not draft.attempts.filter(exploratory=True).exists()


# --- What exploration must not change -------------------------------------------------------------


def test_learned_scorer_labels_ignore_exploratory_attempts(
    db: None, django_capture_on_commit_callbacks: Any, rung: list[int]
) -> None:
    with (
        openai_stub(Reply(body=chat_completion(CHEAP, logprob=-0.01))) as cheap,
        openai_stub(Reply(body=chat_completion(STRONG))) as strong,
    ):
        setup = exploring_team("Labels", cheap.base_url, strong.base_url, share="1")
        draft = generate(setup, django_capture_on_commit_callbacks)
        drafting.draft_explore(draft_id=draft.pk)
    assert draft.attempts.filter(exploratory=True).count() == 1
    AgentActionFactory.create(
        draft=draft,
        agent=setup.agent,
        kind="use",
        final_text=draft.text,
        edit_distance=Decimal(0),
        shown_at=draft.ready_at,
        acted_at=timezone.now(),
    )
    [row] = learning.scorer_labels(policy_id=setup.policy.pk, limit=10)
    shown = draft.attempts.get(exploratory=False)
    # The label belongs to the shown tier-1 draft, with nothing asked before it.
    assert (row.tier, row.draft_text, row.label) == (1, CHEAP, "1")
    assert row.default_score == float(shown.score or 0)
    assert not row.has_earlier
    assert drafting_selectors.draft_escalations(draft=draft) == []


def test_an_explored_and_answered_draft_is_a_row_of_the_optimisers_table(
    db: None, django_capture_on_commit_callbacks: Any, rung: list[int]
) -> None:
    """The worker's rows are what drafting.learning.tuning reads: every tier's text, score and cost,
    and the agent's reply to label them by."""
    with (
        openai_stub(Reply(body=chat_completion(CHEAP, logprob=-0.01))) as cheap,
        openai_stub(
            Reply(body=chat_completion(STRONG, prompt_tokens=800, completion_tokens=40))
        ) as strong,
    ):
        setup = exploring_team("Tuned", cheap.base_url, strong.base_url, share="1")
        draft = generate(setup, django_capture_on_commit_callbacks)
        drafting.draft_explore(draft_id=draft.pk)
    # The agent threw tier 1's draft away and wrote what tier 2 had proposed.
    AgentActionFactory.create(
        draft=draft, agent=setup.agent, kind="ignore", final_text=STRONG, edit_distance=None
    )
    table, rows = tuning.exploration_table(setup.policy)
    assert rows.rows == table.n == 1
    assert rows.exploratory_rows == 1
    assert table.quality.tolist() == [[0.0, 1.0]]
    assert table.cost[0, 1] == float(Decimal("0.0024"))
    preview = tuning.policy_preview(setup.policy, value_usd=Decimal("0.5"))
    assert not preview.ok and "wait for more agent replies" in preview.reason
