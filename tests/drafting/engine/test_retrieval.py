"""Hybrid retrieval of a team's knowledge (drafting.engine.retrieval): vector and full-text
candidates in PostgreSQL fused by reciprocal rank, filtered by team, publication and tags,
focused on the article the conversation names, in one statement."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from csbot.models import Team
from drafting.engine import retrieval, vectors
from drafting.engine.embeddings import Vectors, normalise
from drafting.engine.retrieval import (
    FOCUS_BOOST,
    RRF_K,
    Passage,
    distinctive,
    retrieve,
    words,
)
from drafting.engine.vectors import QueryVector, vector_fields
from drafting.models import KnowledgeArticle, KnowledgeChunk
from tests.factories import TeamFactory

MINILM = "minilm:all-MiniLM-L6-v2:384"


def unit(seed: int) -> Vectors:
    return normalise(np.random.default_rng(seed).normal(size=384))[0]


def near(vector: Vectors, seed: int, noise: float) -> Vectors:
    """A unit vector about `noise` away from `vector` (cosine falls as noise grows)."""
    return normalise(vector + noise * unit(seed))[0]


class FixedEmbedder:
    """Texts to vectors as the test says (unknown texts get a vector of their own): the
    retrieval's input made exact, through the product's own QueryVector."""

    name = MINILM

    def __init__(self) -> None:
        self.vectors: dict[str, Vectors] = {}

    def embed(self, texts: Sequence[str]) -> Vectors:
        return np.stack([self.vectors.get(t, unit(len(t) + 1000)) for t in texts])


@pytest.fixture
def embedder(monkeypatch: pytest.MonkeyPatch) -> Iterator[FixedEmbedder]:
    fixed = FixedEmbedder()
    monkeypatch.setattr(vectors, "embedder", lambda: fixed)
    yield fixed


def article(
    team: Team,
    title: str,
    chunks: Sequence[tuple[str, Vectors | None]],
    *,
    published: bool = True,
    tags: Sequence[str] = (),
    language: str = "en",
    heading: str = "",
) -> KnowledgeArticle:
    """An article and its chunks, the search vector set in SQL as the import does."""
    row = KnowledgeArticle.objects.create(
        team=team,
        external_id=title,
        title=title,
        body="\n\n".join(text for text, _ in chunks),
        source_url=f"https://help.example/{len(title)}",
        tags=list(tags),
        language=language,
        published=published,
        content_hash=title,
    )
    for position, (text, vector) in enumerate(chunks):
        KnowledgeChunk.objects.create(
            article=row,
            team=team,
            position=position,
            heading=heading,
            text=text,
            content_hash=f"{title}-{position}",
            **(vector_fields(MINILM, vector) if vector is not None else {}),
        )
    config = {"en": "english", "de": "german"}.get(language, "simple")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE drafting_knowledgechunk c SET search_vector ="
            " setweight(to_tsvector(%s::regconfig, a.title || ' ' || c.heading), 'A')"
            " || setweight(to_tsvector(%s::regconfig, c.text), 'B')"
            " FROM drafting_knowledgearticle a WHERE a.id = c.article_id AND a.id = %s",
            [config, config, row.pk],
        )
    return row


def texts(passages: Sequence[Passage]) -> list[str]:
    return [p.text for p in passages]


def search(team: Team, text: str, **kwargs: Any) -> list[Passage]:
    return retrieve(team_id=team.pk, query=QueryVector(text), **kwargs)


@pytest.fixture
def team(db: None) -> Team:
    return TeamFactory.create(name="Acme")


SHIPPING = "We deliver to Canada, Mexico and Europe within 5 to 7 business days."
FILTER = "The XJ-200 filter fits every model sold since 2019."
HOURS = "Our shop opens at nine and closes at five, Monday to Friday."


def test_finds_by_meaning_and_by_an_exact_product_code(team: Team, embedder: Any) -> None:
    question = "Do you send parcels abroad?"
    embedder.vectors[question] = unit(1)
    article(team, "Shipping", [(SHIPPING, near(unit(1), 2, 0.3)), (HOURS, unit(3))])
    article(team, "Spare parts", [(FILTER, unit(4))])

    by_meaning = search(team, question, k=1)
    assert texts(by_meaning) == [SHIPPING]  # no word in common: the vector found it
    assert by_meaning[0].text_rank is None and by_meaning[0].vector_position == 1

    by_code = search(team, "which one is the XJ-200?", k=1)
    assert texts(by_code) == [FILTER]  # its vector is no nearer than the others': the word
    assert by_code[0].text_position == 1 and by_code[0].text_rank is not None
    assert by_code[0].article_title == "Spare parts"
    assert by_code[0].source_url.startswith("https://help.example/")


def test_fusion_adds_reciprocal_ranks_of_both_lists(team: Team, embedder: Any) -> None:
    """Hand-computed: the vector list is A, B, C; the text list is C, B (A has no word of
    the question). Scores 1/61 (A), 1/62 + 1/62 (B), 1/63 + 1/61 (C): C, then B, then A."""
    question = "What is your refund policy?"
    embedder.vectors[question] = unit(10)
    a = "Opening hours are nine to five."
    b = "Policy on gift cards: they never expire."
    c = "Our refund policy: refunds are paid within 30 days, by the refund desk."
    article(
        team,
        "Store help",
        [(a, near(unit(10), 11, 0.1)), (b, near(unit(10), 12, 0.6)), (c, near(unit(10), 13, 1.5))],
    )
    found = search(team, question, k=3)
    assert texts(found) == [c, b, a]
    assert [(p.vector_position, p.text_position) for p in found] == [(3, 1), (2, 2), (1, None)]
    assert [p.score for p in found] == pytest.approx(
        [1 / (RRF_K + 3) + 1 / (RRF_K + 1), 2 / (RRF_K + 2), 1 / (RRF_K + 1)]
    )
    assert found[0].text_rank is not None and found[1].text_rank is not None
    assert found[0].text_rank > found[1].text_rank
    similarities = [p.vector_similarity or 0.0 for p in found]
    assert None not in [p.vector_similarity for p in found]
    assert similarities[2] > similarities[1] > similarities[0]
    assert not any(p.focus for p in found)


def test_another_teams_identical_chunk_is_never_returned(team: Team, embedder: Any) -> None:
    question = "Do you ship to Canada?"
    embedder.vectors[question] = unit(20)
    other = TeamFactory.create(name="Globex")
    article(other, "Shipping", [(SHIPPING, unit(20))])  # the very same words and vector
    assert search(team, question) == []
    ours = article(team, "Delivery", [(HOURS, unit(21))])
    found = search(team, question)
    assert [p.article_id for p in found] == [ours.pk]


def test_an_unpublished_article_is_not_returned(team: Team, embedder: Any) -> None:
    question = "Do you ship to Canada?"
    embedder.vectors[question] = unit(30)
    draft = article(team, "Shipping", [(SHIPPING, unit(30))], published=False)
    assert search(team, question) == []
    KnowledgeArticle.objects.filter(pk=draft.pk).update(published=True)
    assert texts(search(team, question)) == [SHIPPING]


def test_tags_keep_articles_having_any_of_them(team: Team, embedder: Any) -> None:
    question = "Do you ship to Canada?"
    embedder.vectors[question] = unit(40)
    article(team, "Shipping EU", [(SHIPPING, unit(40))], tags=["eu"])
    article(team, "Shipping US", [(SHIPPING + " US", unit(41))], tags=["us", "b2b"])
    article(team, "Untagged", [(HOURS, unit(42))])
    assert texts(search(team, question, tags=["us"])) == [SHIPPING + " US"]
    assert set(texts(search(team, question, tags=["b2b", "eu"]))) == {SHIPPING, SHIPPING + " US"}
    assert len(search(team, question)) == 3


def test_the_article_named_in_the_thread_is_the_focus(team: Team, embedder: Any) -> None:
    """Two hotels say the same about parking; the one the customer named last wins, even
    misspelt and without "hotel", and its passages carry the focus flag."""
    question = "Is the parking free there?"
    embedder.vectors[question] = unit(50)
    gonville = article(
        team, "Gonville Hotel", [("Parking is free for guests.", near(unit(50), 51, 0.2))]
    )
    lensfield = article(
        team,
        "The Lensfield Hotel",
        [
            ("Parking is free for guests at the Lensfield.", near(unit(50), 52, 0.5)),
            ("Breakfast is served from seven.", unit(53)),
        ],
    )
    thread = ["I stayed at the Gonville Hotel last year.", "Now I'm looking at the lensfeld."]
    found = search(team, question, thread=thread, k=3)
    assert found[0].article_id == lensfield.pk and found[0].focus
    assert [p.focus for p in found] == [p.article_id == lensfield.pk for p in found]
    # Its other chunk came in through the focus list alone.
    assert {p.text for p in found if p.focus} == {
        "Parking is free for guests at the Lensfield.",
        "Breakfast is served from seven.",
    }
    # Named in the question itself, the other hotel is the focus.
    named = search(team, "Does Gonville have free parking?", thread=thread, k=1)
    assert named[0].article_id == gonville.pk and named[0].focus
    # Without a name anywhere, the nearer vector wins and nothing is the focus.
    plain = search(team, question, k=2)
    assert plain[0].article_id == gonville.pk and not any(p.focus for p in plain)
    # Second in the vector list; in the text list the two parking chunks tie (same words),
    # broken by id; first in the focus list; and the boost.
    assert (found[0].vector_position, found[0].text_position) == (2, 2)
    assert found[0].score == pytest.approx(FOCUS_BOOST + 2 / (RRF_K + 2) + 1 / (RRF_K + 1))


def test_titles_are_matched_without_generic_words() -> None:
    assert distinctive(words("A and B Guest House")) == ["a", "and", "b"]
    assert distinctive(words("The Lensfield Hotel")) == ["lensfield"]
    assert distinctive(words("Hotel")) == ["hotel"]
    assert words("Café-Bar Öz") == ["cafe", "bar", "oz"]


def test_without_an_embedder_the_text_search_answers(team: Team, settings: Any) -> None:
    settings.EMBEDDING_BACKEND = "none"
    from drafting.engine import embeddings

    embeddings.embedder.cache_clear()
    try:
        article(team, "Shipping", [(SHIPPING, unit(60)), (HOURS, None)])
        found = search(team, "When does the shop open on Monday?")
        assert texts(found) == [HOURS]
        assert found[0].vector_similarity is None and found[0].vector_position is None
        assert search(team, "   ") == []
    finally:
        embeddings.embedder.cache_clear()


def test_chunks_not_embedded_yet_are_found_by_their_words(team: Team, embedder: Any) -> None:
    article(team, "Spare parts", [(FILTER, None)])
    assert texts(search(team, "XJ-200 filter")) == [FILTER]


def test_a_rare_word_is_not_crowded_out_by_common_ones(
    team: Team, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past TEXT_MATCHES chunks a lexeme is common (by ANALYZE's statistics): the chunks to
    rank are those with the question's rare words, so the one chunk naming the product is
    ranked however many chunks say "room"."""
    monkeypatch.setattr(retrieval, "TEXT_MATCHES", 3)
    article(team, "Rooms", [(f"Room {n} has a room safe.", None) for n in range(12)])
    article(team, "Spare parts", [(FILTER, None)])
    question = "Which room filter is the XJ-200?"
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE drafting_knowledgechunk")
    found = search(team, question, k=3)
    assert texts(found) == [FILTER]  # "room" alone does not get a chunk ranked
    # Without statistics saying so, every word is rare: all the matches are ranked.
    monkeypatch.setattr(retrieval, "TEXT_MATCHES", 1000)
    assert len([p for p in search(team, question, k=20) if p.text_position]) == 13


def test_a_team_without_knowledge_gets_nothing(team: Team, embedder: Any) -> None:
    assert search(team, "Do you ship to Canada?") == []


def test_a_german_article_is_found_with_its_own_stemmer(team: Team, embedder: Any) -> None:
    """Several languages: the question's words in every configuration the team uses."""
    article(team, "Versand", [("Wir versenden Pakete nach Kanada.", None)], language="de")
    article(team, "Shipping", [(SHIPPING, None)])
    assert texts(search(team, "Versendet ihr Pakete?", k=1)) == [
        "Wir versenden Pakete nach Kanada."
    ]
    assert texts(search(team, "deliveries to Mexico", k=1)) == [SHIPPING]


def test_one_statement_per_search_once_the_titles_are_known(
    team: Team, embedder: Any, django_assert_num_queries: Callable[..., Any]
) -> None:
    article(team, "Lensfield Hotel", [("Parking is free.", unit(70))])
    with django_assert_num_queries(0):
        assert search(team, "") == []
    with django_assert_num_queries(2):  # the team's titles, then the search
        search(team, "Parking at the Lensfield?", thread=["Hello"])
    with django_assert_num_queries(1):
        found = search(team, "Parking at the Lensfield?", thread=["Hello"])
    assert found[0].focus


class Reverse:
    def rerank(self, *, query: str, passages: Sequence[Passage]) -> list[Passage]:
        return list(reversed(passages))


def test_a_reranker_orders_all_the_candidates_before_the_cut(team: Team, embedder: Any) -> None:
    question = "What is your refund policy?"
    embedder.vectors[question] = unit(80)
    chunks = [(f"Refund rule {i}: policy.", near(unit(80), 81 + i, 0.2 * i)) for i in range(4)]
    article(team, "Refunds", chunks)
    fused = search(team, question, k=4)
    reranked = search(team, question, k=2, reranker=Reverse())
    assert texts(reranked) == texts(fused)[::-1][:2]


def test_the_search_uses_the_hnsw_and_gin_indexes(db: None, embedder: Any) -> None:
    """At a few hundred chunks a scan is cheaper, which the planner knows: made to prefer
    indexes, the statement must be able to use both (the ORDER BY is the HNSW index's very
    expression; the text condition is the GIN index's operator, with the query as a
    parameter). bench/knowledge.py shows the plans the planner picks by itself at 100 k."""
    teams = [TeamFactory.create(name=f"Index {i}") for i in range(3)]
    rng = np.random.default_rng(90)
    for i, owner in enumerate(teams):
        for j in range(4):
            article(
                owner,
                f"Article {i}-{j}",
                [
                    (f"Chunk {i} {j} {n} word{n % 7}", normalise(rng.normal(size=384))[0])
                    for n in range(25)
                ],
            )
    question = "word3 refunds"
    embedder.vectors[question] = unit(91)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE drafting_knowledgechunk")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        with CaptureQueriesContext(connection) as queries:
            found = search(teams[0], question, thread=["About Article 0-1 please"])
        sql = queries.captured_queries[-1]["sql"]

        def plan() -> str:
            cursor.execute(f"EXPLAIN {sql}")
            return "\n".join(line for (line,) in cursor.fetchall())

        with_hnsw = plan()
        # Else, with four articles a team, reaching the chunks through their article wins.
        cursor.execute("SET LOCAL enable_nestloop = off")
        with_gin = plan()
    assert "Index Scan using knowledge_chunk_hnsw_384" in with_hnsw, with_hnsw
    assert "Bitmap Index Scan on knowledge_chunk_search_idx" in with_gin, with_gin
    assert found and all(p.article_title.startswith("Article 0-") for p in found)
