"""Embeddings at work in drafting: the semantic half of the completion cache and few-shot
examples from replies agents used. The MiniLM embedder is the real model, in process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from drafting.engine import embeddings
from drafting.engine.embeddings import CachedEmbedder, MiniLMEmbedder, OpenAIEmbedder
from drafting.engine.pii import scrub
from drafting.engine.prompting import EXAMPLES_HEADER, Example, estimate_tokens, trim_to_budget
from drafting.engine.vectors import QueryVector
from drafting.models import CachedReply, Draft, ReplyExample
from drafting.selectors import cached_replies_with_hits
from tests.drafting.engine.factories import ANSWER, QUESTION, act, generate, stubbed_team
from tests.factories import ingest
from tests.http_stub import Reply, chat_completion, openai_stub

# Cosine with QUESTION under MiniLM: ≈0.97 (a rewording) and ≈0.71 (another country).
REWORDED = "Do you ship to canada please"
OTHER_COUNTRY = "Do you ship to Mexico?"


@pytest.fixture(autouse=True)
def _fresh_embedder() -> Iterator[None]:
    embeddings.embedder.cache_clear()
    yield
    embeddings.embedder.cache_clear()


def test_minilm_vectors_are_normalised_and_close_for_rewordings() -> None:
    model = MiniLMEmbedder()
    vectors = model.embed([QUESTION, REWORDED, OTHER_COUNTRY])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.95 > vectors[0] @ vectors[2]
    assert model.name == "minilm:all-MiniLM-L6-v2:384"


def test_the_embedding_cache_embeds_each_text_once() -> None:
    calls: list[list[str]] = []

    class Counting:
        name = "counting:1"

        def embed(self, texts: Any) -> Any:
            calls.append(list(texts))
            return np.eye(3, dtype=np.float32)[[len(t) % 3 for t in texts]]

    cached = CachedEmbedder(Counting(), size=10)
    first = cached.embed(["a", "bb", "a"])
    second = cached.embed(["bb", "ccc"])
    assert calls == [["a", "bb", "a"], ["ccc"]]
    assert np.array_equal(first[1], second[0])


def test_the_openai_embedder_speaks_the_embeddings_api() -> None:
    body = {
        "object": "list",
        "model": "smol-embed",
        # Out of order on purpose: the API pairs rows with inputs by `index`.
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.0, 3.0, 4.0]},
            {"object": "embedding", "index": 0, "embedding": [2.0, 0.0, 0.0]},
        ],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    with openai_stub(Reply(body=body)) as stub:
        model = OpenAIEmbedder(base_url=stub.base_url, model="smol-embed", api_key="k")
        vectors = model.embed(["first", "second"])
    assert stub.requests[0]["path"] == "/v1/embeddings"
    assert stub.requests[0]["json"]["input"] == ["first", "second"]
    assert np.allclose(vectors, np.array([[1, 0, 0], [0, 0.6, 0.8]]))
    assert model.name == "openai:smol-embed:3"


def test_an_embedder_that_fails_leaves_drafting_to_the_exact_cache(db: None, settings: Any) -> None:
    settings.EMBEDDING_BACKEND = "openai"
    settings.EMBEDDING_URL = "http://127.0.0.1:9/v1"  # nothing listens there
    settings.EMBEDDING_MODEL = "smol-embed"
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("NoEmbed", stub.base_url)
        act(setup, generate(setup, "a"), "use", ANSWER)
        reworded = generate(setup, "b", REWORDED)
        exact = generate(setup, "c", QUESTION)
    assert reworded.status == Draft.Status.READY
    assert not reworded.attempts.get().cache_hit  # no vectors: no semantic match
    assert exact.attempts.get().cache_match == "exact"
    assert CachedReply.objects.get().embedding is None
    assert ReplyExample.objects.count() == 0


def test_a_reworded_first_question_hits_the_semantic_cache(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Semantic", stub.base_url)
        first = generate(setup, "a")
        act(setup, first, "use", ANSWER)
        reworded = generate(setup, "b", REWORDED)
    assert len(stub.requests) == 1
    assert reworded.text == ANSWER
    hit = reworded.attempts.get()
    assert (hit.cache_hit, hit.cache_match, hit.cache_source, hit.cost) == (
        True,
        "semantic",
        first,
        0,
    )
    assert hit.cache_similarity is not None and hit.cache_similarity >= 0.95
    entry = cached_replies_with_hits().get()
    assert entry.embedding_model == "minilm:all-MiniLM-L6-v2:384"
    assert entry.hits == 1  # type: ignore[attr-defined]


def test_a_similar_but_different_question_is_no_semantic_hit(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Strict", stub.base_url)
        act(setup, generate(setup, "a"), "use", ANSWER)
        other = generate(setup, "b", OTHER_COUNTRY)
    assert len(stub.requests) == 2
    assert not other.attempts.get().cache_hit


def test_semantic_hits_respect_team_ttl_and_purge(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        acme = stubbed_team("AcmeSem", stub.base_url)
        globex = stubbed_team("GlobexSem", stub.base_url)
        act(acme, generate(acme, "a"), "use", ANSWER)
        assert generate(acme, "b", REWORDED).attempts.get().cache_match == "semantic"
        assert not generate(globex, "b", REWORDED).attempts.get().cache_hit
        CachedReply.objects.all().delete()  # the admin purge
        assert not generate(acme, "c", REWORDED).attempts.get().cache_hit


def test_a_second_turn_gets_no_semantic_hit(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("SemTurns", stub.base_url)
        act(setup, generate(setup, "a"), "use", ANSWER)
        ingest(setup, "b", "b-1", "Hello there")
        later = generate(setup, "b", REWORDED, turn=2)
    assert not later.attempts.get().cache_hit


def test_approving_a_reply_rings_the_worker_after_commit_only_when_worth_it(
    db: None, django_capture_on_commit_callbacks: Any
) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("Bell", stub.base_url)
        used, ignored = generate(setup, "a"), generate(setup, "b")
        with django_capture_on_commit_callbacks() as callbacks:
            act(setup, used, "use", ANSWER)
        assert len(callbacks) == 1
        with django_capture_on_commit_callbacks() as callbacks:
            act(setup, ignored, "ignore", "Something else entirely.")
        assert callbacks == []


def system_prompt(request: dict[str, Any]) -> str:
    return str(request["json"]["messages"][0]["content"])


def test_used_replies_become_scrubbed_few_shot_examples_for_similar_messages(db: None) -> None:
    question = "My order arrived damaged, email me at jane@example.com please"
    reply = "Sorry! We sent a replacement; tracking goes to jane@example.com."
    with openai_stub(Reply(body=chat_completion(reply))) as stub:
        setup = stubbed_team("FewShot", stub.base_url)
        first = generate(setup, "a", question)
        act(setup, first, "use", first.text)
        example = ReplyExample.objects.get()
        assert "jane@example.com" not in example.customer_text + example.reply
        assert "[EMAIL]" in example.customer_text and "[EMAIL]" in example.reply
        # A later turn of another conversation, so the cache cannot answer it.
        ingest(setup, "b", "b-1", "Hi")
        later = generate(setup, "b", "The package I got is broken, it arrived damaged", turn=2)
        unrelated = generate(setup, "c", "What are your opening hours?")
    assert len(stub.requests) == 3
    assert EXAMPLES_HEADER not in system_prompt(stub.requests[0])
    prompt = system_prompt(stub.requests[1])
    assert EXAMPLES_HEADER in prompt and example.reply in prompt
    assert "jane@example.com" not in str(stub.requests[1]["json"])
    assert later.attempts.get().fewshot_examples == 1
    assert EXAMPLES_HEADER not in system_prompt(stub.requests[2])  # not similar enough
    assert unrelated.attempts.get().fewshot_examples == 0


def test_examples_are_per_team_and_only_from_drafts_used_as_is(db: None) -> None:
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        acme = stubbed_team("AcmeFew", stub.base_url)
        globex = stubbed_team("GlobexFew", stub.base_url)
        act(acme, generate(acme, "a"), "use", ANSWER)
        act(acme, generate(acme, "b", "Do you ship to Peru?"), "edit", ANSWER + " Thanks!")
        ingest(globex, "z", "z-1", "Hi")
        theirs = generate(globex, "z", REWORDED, turn=2)
    assert ReplyExample.objects.count() == 1  # the lightly edited reply is cached, not an example
    assert theirs.attempts.get().fewshot_examples == 0
    assert EXAMPLES_HEADER not in system_prompt(stub.requests[-1])


def test_examples_go_before_history_when_the_budget_is_tight() -> None:
    system = {"role": "system", "content": "Be helpful."}
    turns = [{"role": "user", "content": "x" * 400}, {"role": "user", "content": "last"}]
    examples = [Example("q" * 200, "a" * 200, 0.9), Example("r" * 200, "b" * 200, 0.8)]
    full = trim_to_budget([system, *turns], budget=10_000, examples=examples)
    assert full.examples == 2 and full.tokens_saved == 0
    # Room for the history and one example: the least similar example goes.
    one = trim_to_budget(
        [system, *turns], budget=estimate_tokens(full.messages) - 50, examples=examples
    )
    assert one.examples == 1 and "q" * 200 in one.messages[0]["content"]
    assert one.messages[1:] == turns
    assert one.tokens_saved > 0
    tight = trim_to_budget([system, *turns], budget=20, examples=examples)
    assert tight.examples == 0 and tight.messages == [system, turns[-1]]


def test_scrub_leaves_no_restorable_placeholder() -> None:
    text = "Card 4242 4242 4242 4242, call +44 20 7946 0958 or mail a@b.co"
    assert scrub(text) == "Card [CARD], call [PHONE] or mail [EMAIL]"


def test_query_vectors_are_computed_once_and_only_when_asked(settings: Any) -> None:
    settings.EMBEDDING_BACKEND = "none"
    query = QueryVector("anything")
    assert query.get() is None


def test_a_used_reply_becomes_an_example_without_the_customers_details(db: None) -> None:
    # Examples go to other customers' prompts, paid tiers included, and models copy them.
    question = "Hi, I'm Jane Doe. Where is my order 51234?"
    reply = "Hi Jane, order 51234 left for 12 Baker Street today."
    with openai_stub(Reply(body=chat_completion(reply))) as stub:
        setup = stubbed_team("FewShotDetails", stub.base_url)
        first = generate(setup, "a", question)
        act(setup, first, "use", first.text)
    example = ReplyExample.objects.get()
    assert example.customer_text == "Hi, I'm [NAME] [NAME]. Where is my order [NUMBER]?"
    assert example.reply == "Hi [NAME], order [NUMBER] left for [ADDRESS] today."
    assert CachedReply.objects.count() == 0
