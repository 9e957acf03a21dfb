"""The intent classifier: labelled messages (console and admin), training a versioned PLR on
real MiniLM embeddings, verdicts on inbound messages (drafting worker and batch), team scoping.
The messages are real customer questions from BANKING77, read in place from the shared data."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from csbot.celery import app as celery_app
from csbot.models import Message
from drafting import services as drafting_services
from drafting import tasks
from drafting.engine import embeddings
from drafting.engine.embeddings import EmbeddingError, MiniLMEmbedder
from drafting.evaluation.datasets import shared_data_dir
from drafting.learning import intents
from drafting.learning.intents import intent_classifier_train, message_intent_classify
from drafting.models import Draft, Intent, IntentExample, MessageIntent, TrainedClassifier
from tests.factories import (
    EndpointFactory,
    MessageFactory,
    TeamSetup,
    UserFactory,
    ingest,
    make_team,
)
from tests.http_stub import Reply, chat_completion, openai_stub

INTENTS = ("card_arrival", "exchange_rate", "lost_or_stolen_card", "cash_withdrawal_charge")
PER_INTENT = 10


@cache
def banking77(split: str) -> dict[str, list[str]]:
    """Texts per category of BANKING77's train or test split, in file order."""
    texts: dict[str, list[str]] = {}
    with (shared_data_dir() / "banking77" / f"{split}.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            texts.setdefault(row["category"], []).append(row["text"])
    return texts


@pytest.fixture(autouse=True)
def _fresh_models() -> Iterator[None]:
    """Classifier ids repeat between tests (rolled-back sequences aside): no model cached in
    this process may outlive its test. The embedder stays: loading MiniLM takes seconds."""
    intents.active_intent_classifiers.clear()
    yield
    intents.active_intent_classifiers.clear()


def customer_message(setup: TeamSetup, text: str) -> Message:
    return MessageFactory.create(
        conversation__channel=setup.channel, direction=Message.Direction.INBOUND, text=text
    )


def label_messages(
    setup: TeamSetup, names: tuple[str, ...] = INTENTS, per_intent: int = PER_INTENT
) -> dict[str, Intent]:
    """The team's intents, each with `per_intent` real customer messages labelled by its agent
    (as the console does it)."""
    made = {}
    for name in names:
        intent = Intent.objects.create(team=setup.team, name=name.replace("_", "-"))
        for text in banking77("train")[name][:per_intent]:
            drafting_services.message_intent_label(
                message=customer_message(setup, text), intent=intent, user=setup.agent
            )
        made[name] = intent
    return made


def test_labelled_messages_train_an_active_classifier_that_gets_held_out_messages_right(
    acme: TeamSetup,
) -> None:
    made = label_messages(acme)
    assert IntentExample.objects.filter(labelled_by=acme.agent).count() == 40

    result = intent_classifier_train(acme.team, user=acme.agent)

    classifier = result.classifier
    assert classifier is not None and result.activated and result.reason == ""
    classifier.refresh_from_db()
    assert (classifier.kind, classifier.version, classifier.active) == ("intent", 1, True)
    assert classifier.team == acme.team and classifier.trained_by == acme.agent
    assert classifier.embedding_model == "minilm:all-MiniLM-L6-v2:384"
    assert classifier.n_train == 40
    assert classifier.metrics["n"] == 40
    assert classifier.metrics["evaluated"] == "5-fold out-of-fold"
    assert classifier.metrics["accuracy"] >= 0.75  # out of fold; chance is 0.25
    assert set(classifier.metrics["intents"].values()) == {i.name for i in made.values()}

    held_out = [
        (name, customer_message(acme, text))
        for name in INTENTS
        for text in banking77("test")[name][:PER_INTENT]
    ]
    verdicts = [(name, message_intent_classify(m.pk)) for name, m in held_out]
    assert all(v is not None and v.classifier_id == classifier.pk for _, v in verdicts)
    right = sum(v.intent_id == made[name].pk for name, v in verdicts if v is not None)
    assert right / len(verdicts) >= 0.75
    confidences = [float(v.confidence) for _, v in verdicts if v is not None]
    assert all(0.25 <= c <= 1 for c in confidences)
    assert len(set(confidences)) > 1  # a probability, not a constant
    assert MessageIntent.objects.filter(message__in=[m for _, m in held_out]).count() == 40

    # A new version takes over, in this process too (the cached model is replaced).
    again = intent_classifier_train(acme.team)
    assert again.classifier is not None and again.classifier.version == 2
    assert list(TrainedClassifier.objects.filter(team=acme.team, active=True)) == [again.classifier]
    verdict = message_intent_classify(held_out[0][1].pk)
    assert verdict is not None and verdict.classifier_id == again.classifier.pk
    assert MessageIntent.objects.filter(message=held_out[0][1]).count() == 1  # updated in place


def test_each_intent_name_and_description_is_a_prior_row(acme: TeamSetup) -> None:
    made = label_messages(acme, names=INTENTS[:2], per_intent=5)
    made["card_arrival"].description = "Where is my new card"
    made["card_arrival"].save()

    readiness = intents.intent_training_readiness(team=acme.team)
    labels, texts = intents._prior_texts(readiness.ready)
    assert dict(zip(labels, texts, strict=True)) == {
        str(made["card_arrival"].pk): "card arrival: Where is my new card",
        str(made["exchange_rate"].pk): "exchange rate",
    }
    result = intent_classifier_train(acme.team)
    assert result.classifier is not None and result.activated
    # Trained on, never scored: n and the out-of-fold metrics count labelled messages only.
    assert result.classifier.metrics["n"] == 10
    assert result.classifier.metrics["priors"] == 2


def test_too_few_examples_store_an_inactive_version_and_say_why(acme: TeamSetup) -> None:
    label_messages(acme, names=INTENTS[:2], per_intent=3)

    result = intent_classifier_train(acme.team)

    assert not result.activated
    assert result.classifier is not None and not result.classifier.active
    assert "at least 2 intents with at least 5 labelled examples" in result.reason
    assert "card-arrival (3)" in result.reason
    assert result.classifier.metrics["note"] == result.reason
    assert message_intent_classify(customer_message(acme, "Where is my card?").pk) is None


def test_a_single_labelled_intent_trains_nothing(acme: TeamSetup) -> None:
    label_messages(acme, names=INTENTS[:1], per_intent=6)
    Intent.objects.create(team=acme.team, name="empty")

    result = intent_classifier_train(acme.team)

    assert result.classifier is None and not result.activated
    assert result.reason.startswith("Nothing trained: needs at least 2 intents")
    assert "card-arrival (6), empty (0)" in result.reason
    assert not TrainedClassifier.objects.exists()


def test_intents_below_the_minimum_are_left_out_of_the_active_version(
    acme: TeamSetup, settings: Any
) -> None:
    settings.INTENT_MIN_EXAMPLES = 4
    made = label_messages(acme, names=INTENTS[:2], per_intent=6)
    label_messages(acme, names=INTENTS[2:3], per_intent=2)

    result = intent_classifier_train(acme.team)

    assert result.activated and result.classifier is not None
    assert result.reason == "Left out for want of examples: lost-or-stolen-card (2 of 4)"
    assert set(result.classifier.metrics["intents"]) == {str(i.pk) for i in made.values()}
    assert result.classifier.n_train == 12


def test_the_drafting_worker_gives_the_inbound_message_its_intent(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("It is on its way."))) as stub:
        setup = make_team("Worker", endpoint=EndpointFactory.create(base_url=stub.base_url))
        made = label_messages(setup)
        intent_classifier_train(setup.team)
        draft = ingest(setup, "c-new", "m-new", "My new card still hasn't come in the mail").draft
        assert draft is not None
        tasks.draft_generate_task(draft.pk)  # what the worker runs for the task
    draft.refresh_from_db()
    assert draft.status == Draft.Status.READY
    verdict = MessageIntent.objects.get(message=draft.message)
    assert verdict.intent == made["card_arrival"]
    assert verdict.classifier is not None and verdict.classifier.active


def test_embeddings_down_means_no_intent_and_the_draft_is_unharmed(
    db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(self: MiniLMEmbedder, texts: Any) -> Any:
        raise EmbeddingError("embedding server unreachable")

    with openai_stub(Reply(body=chat_completion("It is on its way."))) as stub:
        setup = make_team("Down", endpoint=EndpointFactory.create(base_url=stub.base_url))
        label_messages(setup, names=INTENTS[:2], per_intent=6)
        assert intent_classifier_train(setup.team).activated
        monkeypatch.setattr(MiniLMEmbedder, "embed", down)
        embeddings.embedder.cache_clear()
        draft = ingest(setup, "c-down", "m-down", "Has my card been sent yet?").draft
        assert draft is not None
        tasks.draft_generate_task(draft.pk)
    draft.refresh_from_db()
    assert draft.status == Draft.Status.READY
    assert not MessageIntent.objects.filter(message=draft.message).exists()


def test_the_batch_gives_messages_without_a_verdict_one_once(acme: TeamSetup) -> None:
    made = label_messages(acme, names=INTENTS[:2], per_intent=6)
    intent_classifier_train(acme.team)
    fresh = [customer_message(acme, t) for t in banking77("test")["exchange_rate"][:5]]
    MessageFactory.create(conversation=fresh[0].conversation, direction="out", text="Sure.")

    stored = tasks.message_intents_classify_recent_task(acme.team.pk)

    # The 5 new messages: the 12 labelled ones got their label as their verdict already.
    assert stored == 5
    assert {v.intent_id for v in MessageIntent.objects.filter(message__in=fresh)} == {
        made["exchange_rate"].pk
    }
    labelled = MessageIntent.objects.filter(confidence=1, classifier__isnull=True)
    assert labelled.count() == 12
    assert tasks.message_intents_classify_recent_task(acme.team.pk) == 0


# --- Console ------------------------------------------------------------------------------------


def test_an_agent_labels_a_message_in_the_console_and_sees_the_verdict(
    client: Client, acme: TeamSetup
) -> None:
    refund = Intent.objects.create(team=acme.team, name="refund")
    card = Intent.objects.create(team=acme.team, name="card-arrival")
    message = ingest(acme, "c1", "m1", "Where is my card?").message
    client.force_login(acme.agent)
    panel_url = f"/console/c/{message.conversation_id}/intent"

    panel = client.get(panel_url).content.decode()
    assert "No intent yet" in panel and f'value="{card.pk}"' in panel
    assert (
        f"console/c/{message.conversation_id}/intent"
        in client.get(f"/console/c/{message.conversation_id}").content.decode()
    )

    response = client.post(panel_url, {"message_id": message.pk, "intent_id": refund.pk})
    assert response.status_code == 302
    response = client.post(panel_url, {"message_id": message.pk, "intent_id": card.pk})
    assert response.status_code == 302

    example = IntentExample.objects.get(message=message)  # relabelled: one label
    assert (example.intent, example.text, example.labelled_by) == (
        card,
        "Where is my card?",
        acme.agent,
    )
    verdict = MessageIntent.objects.get(message=message)
    assert (verdict.intent, verdict.confidence, verdict.classifier) == (card, 1, None)
    panel = client.get(panel_url).content.decode()
    assert "Labelled" in panel and "card-arrival" in panel


def test_the_console_shows_the_predicted_intent_and_its_confidence(
    client: Client, acme: TeamSetup
) -> None:
    label_messages(acme, names=INTENTS[:2], per_intent=6)
    classifier = intent_classifier_train(acme.team).classifier
    assert classifier is not None
    message = ingest(acme, "c1", "m1", "What exchange rate do you use for euros?").message
    verdict = message_intent_classify(message.pk)
    assert verdict is not None
    client.force_login(acme.agent)

    panel = client.get(f"/console/c/{message.conversation_id}/intent").content.decode()

    assert "Predicted" in panel and "exchange-rate" in panel
    assert f"{float(verdict.confidence):.2f}" in panel
    assert f"v{classifier.version}" in panel


def test_console_labelling_is_team_scoped(
    client: Client, acme: TeamSetup, globex: TeamSetup
) -> None:
    ours = Intent.objects.create(team=acme.team, name="refund")
    theirs = Intent.objects.create(team=globex.team, name="refund")
    our_message = ingest(acme, "c1", "m1", "Refund please").message
    their_message = ingest(globex, "c1", "m1", "Refund please").message
    other_conversation = ingest(acme, "c2", "m2", "Another question").message
    client.force_login(acme.agent)
    url = f"/console/c/{our_message.conversation_id}/intent"

    assert (
        client.post(url, {"message_id": our_message.pk, "intent_id": theirs.pk}).status_code == 404
    )
    assert (
        client.post(url, {"message_id": their_message.pk, "intent_id": ours.pk}).status_code == 404
    )
    assert (
        client.post(url, {"message_id": other_conversation.pk, "intent_id": ours.pk}).status_code
        == 404
    )
    their_url = f"/console/c/{their_message.conversation_id}/intent"
    assert (
        client.post(their_url, {"message_id": their_message.pk, "intent_id": ours.pk}).status_code
        == 404
    )
    assert client.get(their_url).status_code == 404
    assert not IntentExample.objects.exists() and not MessageIntent.objects.exists()

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(acme.agent)
    assert (
        csrf_client.post(url, {"message_id": our_message.pk, "intent_id": ours.pk}).status_code
        == 403
    )


# --- Admin --------------------------------------------------------------------------------------


def queued_task_args(task_name: str) -> list[str]:
    """The argument reprs of the tasks named `task_name` waiting in the real Redis broker."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    found = []
    for raw in client.lrange("celery", 0, -1):
        headers = json.loads(raw)["headers"]
        if headers["task"] == task_name:
            found.append(headers["argsrepr"])
    return found


@pytest.fixture
def admin_client(client: Client, db: None) -> Client:
    celery_app.control.purge()
    client.force_login(UserFactory.create(username="root", is_staff=True, is_superuser=True))
    return client


def test_the_admin_lists_intents_with_their_examples_and_queues_training(
    admin_client: Client, acme: TeamSetup
) -> None:
    made = label_messages(acme, names=INTENTS[:2], per_intent=6)
    ids = [str(i.pk) for i in made.values()]

    body = admin_client.get("/admin/drafting/intent/").content.decode()
    assert "card-arrival" in body and "none active" in body
    response = admin_client.post(
        "/admin/drafting/intent/",
        {"action": "train_classifier", "_selected_action": ids},
        follow=True,
    )
    assert "Acme: training queued on 12 examples; it becomes the active version" in (
        response.content.decode()
    )
    root = get_user_model().objects.get(username="root")
    assert queued_task_args("drafting.tasks.intent_classifier_train") == [
        f"({acme.team.pk}, {root.pk})"
    ]

    # What the worker does with it.
    assert tasks.intent_classifier_train_task(acme.team.pk, root.pk).startswith("v1 active")
    classifier = TrainedClassifier.objects.get(team=acme.team, active=True)
    assert classifier.trained_by == root
    body = admin_client.get("/admin/drafting/intent/").content.decode()
    assert f"v1: accuracy {classifier.metrics['accuracy']}" in body


def test_the_admin_says_why_it_cannot_train_and_queues_classification(
    admin_client: Client, acme: TeamSetup
) -> None:
    intent = Intent.objects.create(team=acme.team, name="refund")
    IntentExample.objects.create(intent=intent, text="I want my money back")

    response = admin_client.post(
        "/admin/drafting/intent/",
        {"action": "train_classifier", "_selected_action": [intent.pk]},
        follow=True,
    )
    assert "Acme: nothing to train: needs at least 2 intents" in response.content.decode()
    assert queued_task_args("drafting.tasks.intent_classifier_train") == []

    admin_client.post(
        "/admin/drafting/intent/",
        {"action": "classify_recent", "_selected_action": [intent.pk]},
    )
    assert queued_task_args("drafting.tasks.message_intents_classify_recent") == [
        f"({acme.team.pk}, 500)"
    ]
