"""The learned cascade scorer: labels from agent actions, training with real MiniLM embeddings,
the cascade judging and explaining with it, the console showing why a draft was escalated, and
the fallbacks (too few labels, embedding failure)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from drafting.engine.embeddings import EmbeddingError, Vectors, embedder
from drafting.engine.scoring import DefaultScorer
from drafting.learning import scorer as learning
from drafting.learning.plr import TrainedPLR
from drafting.learning.scorer import LearnedScorer
from drafting.models import AgentAction, Draft, TrainedClassifier
from tests.drafting.factories import drafted, paid_endpoint, two_tier_team
from tests.factories import (
    AgentActionFactory,
    DraftAttemptFactory,
    DraftFactory,
    MessageFactory,
    TeamSetup,
)
from tests.http_stub import Reply, chat_completion, openai_stub

QUESTIONS = [
    "Where is my refund?",
    "My card has not arrived yet, what should I do?",
    "How do I change the address on my account?",
    "I was charged twice for the same order.",
    "Can I cancel my subscription today?",
    "Why was my transfer declined?",
    "How long does delivery to Canada take?",
    "I forgot my password and cannot log in.",
]
# Drafts agents used or barely touched: specific, with a next step.
GOOD_DRAFTS = [
    "Thanks for reaching out! I have issued your refund today; it reaches your account within "
    "{n} business days.",
    "Sorry for the wait. Your new card was posted on Monday and should arrive within {n} days; "
    "I have added tracking to your account.",
    "I have updated the address on your account. You will get a confirmation e-mail in {n} "
    "minutes.",
    "You were indeed charged twice. I have reversed the duplicate charge; it disappears within "
    "{n} days.",
    "Done: your subscription is cancelled and you will not be billed again. Your access lasts "
    "{n} more days.",
    "I have reset your login. Please use the link we just e-mailed you within {n} hours.",
]
# Drafts agents threw away or rewrote: vague, evasive, no answer.
BAD_DRAFTS = [
    "I am not sure about that. Maybe try again later?",
    "Hmm, I don't really know. You could ask someone else perhaps.",
    "As an assistant I cannot say. Please check the website or wait {n} weeks.",
    "That is a good question! Unfortunately I have no idea.",
    "Not sure. Possibly it will sort itself out eventually.",
    "I cannot help with this, sorry. Try contacting somebody.",
]
BAD_TIER1 = "I am not sure, maybe try again later? I don't really know."
GOOD_TIER2 = (
    "Thanks for reaching out! I have issued your refund today; it reaches your account within "
    "5 business days."
)


def label_drafts(setup: TeamSetup, *, good: int, bad: int, seed: int = 0) -> list[AgentAction]:
    """Agents acting on `good` + `bad` drafts of the policy: good ones used or lightly edited,
    bad ones ignored or rewritten. Their stored default-scorer scores say nothing (drawn
    alike), so only what the drafts say tells the two apart."""
    rng = random.Random(seed)
    tier = setup.policy.tiers.get(position=1)
    actions = []
    for i in range(good + bad):
        is_good = i < good
        text = rng.choice(GOOD_DRAFTS if is_good else BAD_DRAFTS).format(n=rng.randint(2, 9))
        message = MessageFactory.create(
            conversation__channel=setup.channel, text=rng.choice(QUESTIONS)
        )
        draft = DraftFactory.create(
            message=message,
            policy=setup.policy,
            status=Draft.Status.READY,
            text=text,
            ready_at=timezone.now(),
        )
        DraftAttemptFactory.create(
            draft=draft,
            endpoint=tier.endpoint,
            score=Decimal(f"{rng.uniform(0.4, 0.95):.4f}"),
        )
        distance: str | None
        if is_good:
            kind, distance = rng.choice([("use", "0"), ("edit", "0.08")])
        else:
            kind, distance = rng.choice([("ignore", None), ("edit", "0.65")])
        final = text if kind == "use" else f"{text} (rewritten by the agent)"
        actions.append(
            AgentActionFactory.create(
                draft=draft,
                agent=setup.agent,
                kind=kind,
                final_text=final,
                edit_distance=None if distance is None else Decimal(distance),
                shown_at=draft.ready_at,
                acted_at=timezone.now(),
            )
        )
    return actions


@pytest.fixture
def escalating(db: None) -> Any:
    """A two-tier team whose tier 1 is confident (the default scorer would stop there, 0.99)
    but says something agents throw away; tier 2 says something they use."""
    with (
        openai_stub(Reply(body=chat_completion(BAD_TIER1, logprob=-0.01))) as cheap,
        openai_stub(Reply(body=chat_completion(GOOD_TIER2, logprob=-0.01))) as paid,
    ):
        setup = two_tier_team(
            "Learned", paid_endpoint(cheap.base_url), paid_endpoint(paid.base_url), threshold="0.5"
        )
        yield setup, cheap, paid


# --- Labels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "distance", "label"),
    [
        ("use", "0", "1"),
        ("edit", "0.2000", "1"),  # at the configured 20 %: still a light edit
        ("edit", "0.2001", "0"),
        ("ignore", None, "0"),
        ("none", None, None),
    ],
)
def test_actions_label_the_shown_draft_by_how_much_the_agent_changed(
    kind: str, distance: str | None, label: str | None
) -> None:
    edit = None if distance is None else Decimal(distance)
    assert learning.action_label(kind=kind, edit_distance=edit) == label


def test_a_lighter_edit_threshold_makes_the_same_edit_a_bad_label(settings: Any) -> None:
    settings.SCORER_GOOD_EDIT_PERCENT = 5
    assert learning.action_label(kind="edit", edit_distance=Decimal("0.08")) == "0"


def test_the_label_is_the_shown_drafts_and_earlier_tiers_come_from_their_explanations(
    escalating: Any,
) -> None:
    setup, _cheap, _paid = escalating
    action = label_drafts(setup, good=1, bad=0)[0]
    draft = action.draft
    assert draft is not None
    # The shown draft came from tier 2 after tier 1 was escalated with an explanation.
    shown = draft.attempts.get()
    shown.tier = 2
    shown.save(update_fields=["tier"])
    DraftAttemptFactory.create(
        draft=draft,
        tier=1,
        endpoint=shown.endpoint,
        started_at=shown.started_at.replace(year=2001),
        explanation=[
            {"word": "Maybe", "start": 0, "end": 5, "weight": -0.2},
            {"word": "later?", "start": 6, "end": 12, "weight": -0.1},
        ],
    )
    [row] = learning.scorer_labels(policy_id=setup.policy.pk, limit=10)
    assert row.draft_text == draft.text
    assert row.label == "1"
    assert row.tier == 2
    assert row.has_earlier
    assert row.earlier_drafts == ["Maybe later?"]


# --- Training and the cascade ------------------------------------------------------------------


def test_a_trained_scorer_is_stored_active_and_escalates_a_bad_looking_draft_with_reasons(
    escalating: Any,
) -> None:
    setup, cheap, paid = escalating
    label_drafts(setup, good=30, bad=30)

    outcome = learning.scorer_train(policy=setup.policy, trained_by=setup.agent)

    assert outcome.activated, outcome.message
    classifier = outcome.classifier
    assert classifier is not None
    classifier.refresh_from_db()
    assert classifier.active and classifier.version == 1
    assert classifier.kind == TrainedClassifier.Kind.SCORER
    assert classifier.policy_id == setup.policy.pk
    assert classifier.n_train == 60
    assert classifier.trained_by_id == setup.agent.pk
    assert classifier.embedding_model == "minilm:all-MiniLM-L6-v2:384"
    assert classifier.metrics["auc"] >= 0.9
    assert classifier.metrics["classes"] == {"0": 30, "1": 30}
    model = TrainedPLR.from_bytes(classifier.model_blob)
    assert model.classes == ["0", "1"]

    scorer = learning.policy_scorer(policy_id=setup.policy.pk)
    assert isinstance(scorer, LearnedScorer) and scorer.classifier_id == classifier.pk

    draft = drafted(setup, "Where is my refund?")

    assert draft.status == Draft.Status.READY
    assert draft.text == GOOD_TIER2
    assert len(cheap.requests) == 1 and len(paid.requests) == 1
    first, second = draft.attempts.order_by("tier")
    # The default scorer would have kept tier 1's draft (0.99); the learned one did not.
    assert first.scorer_id == classifier.pk and second.scorer_id == classifier.pk
    assert first.score is not None and first.score < Decimal("0.5")
    assert second.score is not None and second.score > first.score
    words = first.explanation
    assert words is not None
    assert [w["word"] for w in words] == BAD_TIER1.split()
    assert all(BAD_TIER1[w["start"] : w["end"]] == w["word"] for w in words)
    assert any(w["weight"] < 0 for w in words)
    assert second.explanation is None  # not escalated: no explanation computed

    # The agent sees why, in the conversation page's draft panel.
    client = Client()
    client.force_login(setup.agent)
    page = client.get(reverse("console:conversation", args=[draft.message.conversation_id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Why tier 1's draft was escalated" in html
    assert f"score {first.score:.2f}" in html
    assert "threshold 0.50" in html
    most_negative = min(words, key=lambda w: w["weight"])
    assert f'title="{most_negative["weight"]:.3f}"' in html
    assert f">{most_negative['word']}</span>" in html

    # Nothing new since: the nightly retrain leaves the policy alone.
    assert learning.scorers_retrain() == []


def test_a_retrain_activates_the_new_version_and_the_process_reloads_it(escalating: Any) -> None:
    setup, _cheap, _paid = escalating
    label_drafts(setup, good=25, bad=25)
    first = learning.scorer_train(policy=setup.policy).classifier
    assert first is not None
    assert learning.policy_scorer(policy_id=setup.policy.pk).classifier_id == first.pk  # type: ignore[attr-defined]
    label_drafts(setup, good=5, bad=5, seed=1)

    [outcome] = learning.scorers_retrain()

    second = outcome.classifier
    assert second is not None and outcome.activated
    assert second.version == 2 and second.n_train == 60
    assert list(
        TrainedClassifier.objects.filter(policy=setup.policy).values_list("version", "active")
    ) == [(2, True), (1, False)]
    assert learning.policy_scorer(policy_id=setup.policy.pk).classifier_id == second.pk  # type: ignore[attr-defined]


def test_a_model_no_better_than_chance_is_stored_but_not_put_in_force(
    escalating: Any, settings: Any
) -> None:
    setup, _cheap, _paid = escalating
    label_drafts(setup, good=20, bad=20)
    settings.SCORER_MIN_AUC = 1.01  # no AUC reaches it

    outcome = learning.scorer_train(policy=setup.policy)

    assert outcome.classifier is not None and not outcome.activated
    assert "below 1.01" in outcome.reason
    outcome.classifier.refresh_from_db()
    assert not outcome.classifier.active
    assert "below" in outcome.classifier.metrics["not_activated"]
    assert isinstance(learning.policy_scorer(policy_id=setup.policy.pk), DefaultScorer)


def test_too_few_labels_train_nothing_and_the_default_scorer_stays(escalating: Any) -> None:
    setup, cheap, paid = escalating
    label_drafts(setup, good=20, bad=5)  # 25 < 40 labels

    outcome = learning.scorer_train(policy=setup.policy)

    assert outcome.classifier is None and not outcome.activated
    assert "25 labelled drafts, 40 needed" in outcome.reason
    assert "not trained" in outcome.message
    assert not TrainedClassifier.objects.exists()
    label_drafts(setup, good=20, bad=4, seed=2)  # 49 labels, but 9 of the rarer class
    outcome = learning.scorer_train(policy=setup.policy)
    assert outcome.classifier is None
    assert outcome.reason == "the rarer class has 9 labels, 10 needed"
    assert not TrainedClassifier.objects.exists()

    draft = drafted(setup, "Where is my refund?")

    assert draft.status == Draft.Status.READY
    assert draft.text == BAD_TIER1  # the default scorer trusts the confident tier 1
    [attempt] = draft.attempts.all()
    assert attempt.scorer_id is None and attempt.explanation is None
    assert len(cheap.requests) == 1 and paid.requests == []


class FailingEmbedder:
    """The configured embedder's name, but every call fails (the server behind it is down)."""

    def __init__(self, name: str):
        self.name = name

    def embed(self, texts: Sequence[str]) -> Vectors:
        raise EmbeddingError("embedding server unavailable")


def test_an_embedding_failure_falls_back_to_the_default_scorer_and_keeps_the_draft(
    escalating: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, cheap, paid = escalating
    label_drafts(setup, good=25, bad=25)
    classifier = learning.scorer_train(policy=setup.policy).classifier
    assert classifier is not None and classifier.active
    real = embedder()
    assert real is not None
    monkeypatch.setattr(learning, "embedder", lambda: FailingEmbedder(real.name))

    draft = drafted(setup, "Where is my refund?")

    assert draft.status == Draft.Status.READY
    assert draft.text == BAD_TIER1
    [attempt] = draft.attempts.all()
    assert attempt.scorer_id is None  # judged by the default scorer
    assert attempt.score == Decimal("0.9900")
    assert attempt.explanation is None
    assert len(cheap.requests) == 1 and paid.requests == []


def test_the_escalation_explanation_is_in_the_attempt_admin(escalating: Any) -> None:
    from django.contrib.auth import get_user_model

    setup, _cheap, _paid = escalating
    label_drafts(setup, good=25, bad=25)
    assert learning.scorer_train(policy=setup.policy).activated
    draft = drafted(setup)
    first = draft.attempts.get(tier=1)
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)

    page = client.get(f"/admin/drafting/draftattempt/{first.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "why this draft was escalated" in html.lower()
    assert ">sure,</span>" in html
    listing = client.get("/admin/drafting/trainedclassifier/")
    assert listing.status_code == 200
    assert "Cascade scorer v1" in listing.content.decode()


def test_the_nightly_retrain_is_scheduled(db: None) -> None:
    task = PeriodicTask.objects.get(name="Cascade scorer retrain")
    assert task.task == "drafting.tasks.scorers_retrain"
    assert task.crontab is not None and task.crontab.hour == "3"


def test_features_put_agreement_with_earlier_drafts_to_use(db: None) -> None:
    """Same texts, with and without an earlier tier's draft: the signal columns differ."""
    real = embedder()
    assert real is not None
    row = learning.LabelledDraft(
        customer_text="Where is my refund?",
        draft_text=GOOD_TIER2,
        label="1",
        tier=2,
        default_score=None,
        earlier_drafts=[GOOD_TIER2],
        has_earlier=True,
    )
    bare = learning.LabelledDraft(
        customer_text="Where is my refund?",
        draft_text=GOOD_TIER2,
        label="1",
        tier=1,
        default_score=0.7,
    )
    features = learning.scorer_features([row, bare], using=real)
    assert features.shape == (2, 384 * 2 + 7 + len(learning.GROUNDING_SIGNALS))
    signals = features[:, 768 : 768 + 7]
    words = np.log1p(len(GOOD_TIER2.split()))
    np.testing.assert_allclose(signals[0], [0.6, 0, 2, words, 1, 1.0, 1], atol=1e-5)
    np.testing.assert_allclose(signals[1], [0.7, 1, 1, words, 0, 0, 0], atol=1e-5)
