"""The team's knowledge models (drafting.learning.knowledge) trained from KnowledgeLabel rows and
served through the draft path's functions, on a small hand-made knowledge base, with the real
PostgreSQL (pgvector, full text) and the real MiniLM."""

from __future__ import annotations

import pytest

from csbot.models import Team
from drafting import knowledge
from drafting.engine.knowledge_files import ArticleInput
from drafting.engine.retrieval import retrieve, team_articles
from drafting.engine.vectors import QueryVector
from drafting.learning.knowledge import (
    DETECTOR_THRESHOLD,
    RERANKER_THRESHOLD,
    knowledge_detector,
    knowledge_detector_train,
    label_text,
    label_turns,
    passage_reranker,
    passage_reranker_train,
)
from drafting.models import KnowledgeChunk, KnowledgeLabel, TrainedClassifier
from tests.factories import TeamFactory

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

# Each fact is its own section, so its own chunk.
HOTELS = {
    "The Lensfield Hotel": [
        ("Wifi", "Wifi is free in every room and in the lobby."),
        ("Parking", "Parking costs ten pounds a night in our garage."),
        ("Breakfast", "Breakfast is served from seven to ten in the morning."),
        ("Pets", "Pets are not allowed, except guide dogs."),
        ("Rooms", "The rooms were quiet and the beds comfortable."),
    ],
    "Gonville Hotel": [
        ("Wifi", "Wifi costs five pounds a day."),
        ("Parking", "Parking is free for guests."),
        ("Breakfast", "Breakfast is not included in the price."),
        ("Pets", "Dogs are welcome for a small fee."),
        ("Rooms", "Our room was noisy because of the street."),
    ],
    "Pizza Hut Fen Ditton": [
        ("Vegan", "We have vegan pizzas and vegan cheese."),
        ("Delivery", "We deliver within three miles."),
        ("Hours", "We are open from noon until eleven at night."),
        ("Booking", "Tables can be booked online or by phone."),
    ],
}

# (thread, turn, relevant (title, heading) pairs); an empty list: needs no knowledge.
KNOWLEDGE_TURNS = [
    (
        ["I need a hotel in the north.", "The Lensfield Hotel is nice."],
        "Is the wifi free there?",
        [("The Lensfield Hotel", "Wifi")],
    ),
    (
        ["Book the Gonville Hotel please."],
        "Can I park my car there for free?",
        [("Gonville Hotel", "Parking")],
    ),
    ([], "Does the Lensfield Hotel allow dogs?", [("The Lensfield Hotel", "Pets")]),
    ([], "Do they serve breakfast at the Gonville?", [("Gonville Hotel", "Breakfast")]),
    (
        ["Is Pizza Hut Fen Ditton open today?"],
        "Do they have vegan options?",
        [("Pizza Hut Fen Ditton", "Vegan")],
    ),
    ([], "Does Pizza Hut Fen Ditton deliver?", [("Pizza Hut Fen Ditton", "Delivery")]),
    (["I'd like the Lensfield."], "Are the rooms quiet?", [("The Lensfield Hotel", "Rooms")]),
    (["What about the Gonville Hotel?"], "How much is the wifi?", [("Gonville Hotel", "Wifi")]),
    ([], "When does Pizza Hut Fen Ditton close?", [("Pizza Hut Fen Ditton", "Hours")]),
    (
        ["The Lensfield Hotel sounds good."],
        "What time is breakfast?",
        [("The Lensfield Hotel", "Breakfast")],
    ),
    ([], "Can I book a table at Pizza Hut Fen Ditton?", [("Pizza Hut Fen Ditton", "Booking")]),
    (["Tell me about the Gonville Hotel."], "Are pets allowed?", [("Gonville Hotel", "Pets")]),
]
OTHER_TURNS = [
    "Thank you, that is all.",
    "Great, book it for two nights please.",
    "Bye!",
    "Yes please, for four people on Friday.",
    "Perfect, thanks a lot.",
    "I need a taxi to the station at five.",
    "No, that will be all for today.",
    "Okay, sounds good.",
]


@pytest.fixture
def team() -> Team:
    team = TeamFactory.create()
    for title, facts in HOTELS.items():
        body = "\n\n".join(f"# {heading}\n\n{text}" for heading, text in facts)
        done = knowledge.article_upsert(
            team=team, data=ArticleInput(external_id=title, title=title, body=body), ring=False
        )
        knowledge.chunks_index(article_id=done.article.pk)
    return team


def chunk(team: Team, title: str, heading: str) -> KnowledgeChunk:
    return KnowledgeChunk.objects.get(team=team, article__title=title, heading=heading)


def label(team: Team) -> None:
    for thread, turn, relevant in KNOWLEDGE_TURNS:
        row = KnowledgeLabel.objects.create(
            team=team, text=label_text(thread=thread, turn=turn), needs_knowledge=True
        )
        row.relevant_chunks.set([chunk(team, t, h) for t, h in relevant])
    for turn in OTHER_TURNS:
        KnowledgeLabel.objects.create(
            team=team, text=label_text(thread=["Hello."], turn=turn), needs_knowledge=False
        )


def test_a_label_text_keeps_the_thread_and_the_turn() -> None:
    text = label_text(thread=["first", "second\n\nwith a blank line"], turn="the turn?")
    assert label_turns(text) == (["first", "second\n\nwith a blank line"], "the turn?")
    assert label_turns("alone") == ([], "alone")


def test_too_few_labels_train_nothing_and_say_why(team: Team) -> None:
    KnowledgeLabel.objects.create(team=team, text="Is the wifi free?", needs_knowledge=True)
    detector = knowledge_detector_train(team)
    reranker = passage_reranker_train(team)
    assert detector.classifier is None and "5 of each needed" in detector.reason
    assert reranker.classifier is None and "5 needed" in reranker.reason
    assert not TrainedClassifier.objects.filter(team=team).exists()
    assert knowledge_detector(team.pk) is None and passage_reranker(team.pk) is None


def test_the_detector_trains_versions_and_serves_its_threshold(team: Team) -> None:
    label(team)
    first = knowledge_detector_train(team)
    second = knowledge_detector_train(team)
    assert first.classifier is not None and second.classifier is not None
    assert (first.classifier.version, second.classifier.version) == (1, 2)
    stored = TrainedClassifier.objects.get(pk=second.classifier.pk)
    assert stored.kind == TrainedClassifier.Kind.KNOWLEDGE and stored.active
    assert not TrainedClassifier.objects.get(pk=first.classifier.pk).active
    assert stored.metrics["threshold"] == DETECTOR_THRESHOLD
    assert stored.n_train == len(KNOWLEDGE_TURNS) + len(OTHER_TURNS)
    detector = knowledge_detector(team.pk)
    assert detector is not None and detector.threshold == DETECTOR_THRESHOLD
    asks = detector.probability(QueryVector("Is breakfast included at the Gonville Hotel?"))
    thanks = detector.probability(QueryVector("Thanks, that's everything."), ["Hello."])
    assert asks is not None and thanks is not None
    assert asks > thanks
    assert detector.needs(asks) and not detector.needs(thanks)


def test_the_reranker_keeps_the_answer_of_the_article_the_thread_names(team: Team) -> None:
    label(team)
    outcome = passage_reranker_train(team)
    assert outcome.classifier is not None and outcome.activated
    stored = outcome.classifier
    assert stored.kind == TrainedClassifier.Kind.RERANKER
    assert stored.metrics["threshold"] == RERANKER_THRESHOLD
    assert stored.metrics["exemplars"] == len(KNOWLEDGE_TURNS)
    reranker = passage_reranker(team.pk)
    assert reranker is not None
    # The Gonville's parking, though the Lensfield's parking chunk says "parking" as well.
    found = retrieve(
        team_id=team.pk,
        query=QueryVector("Is parking free for guests?"),
        thread=["I want to stay at the Gonville Hotel."],
        reranker=reranker,
    )
    assert found, "at least the best candidate is kept"
    assert found[0].chunk_id == chunk(team, "Gonville Hotel", "Parking").pk
    assert {p.article_id for p in found} == {found[0].article_id}
    assert all(0.0 <= p.score <= 1.0 for p in found)
    assert found == sorted(found, key=lambda p: -p.score)
    # Nothing named in the thread: the hybrid search serves the turn, not the re-ranker.
    plain = retrieve(team_id=team.pk, query=QueryVector("Is parking free?"), reranker=reranker)
    assert plain and not any(p.focus for p in plain)


def test_the_focus_is_every_article_the_turn_names_in_its_order(team: Team) -> None:
    articles = team_articles(team.pk)
    named = articles.named_in("Compare the Gonville and the Lensfield Hotel for me")
    titles = dict(team.knowledge_articles.values_list("pk", "title"))
    assert [titles[a] for a in named] == ["Gonville Hotel", "The Lensfield Hotel"]
    assert (
        articles.without_titles("Is the wifi free at the Lensfield Hotel?") == "is the wifi free at"
    )
