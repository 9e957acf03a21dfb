"""Grounded drafts through the worker's draft path: passages retrieved from the team's real
knowledge base (PostgreSQL, MiniLM vectors), numbered into the prompt sent over HTTP to a
recorded provider, citations stored and the draft clean; the no-knowledge rule each way;
macros offered as tier 0 and learnt from the agents' actions."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from drafting import knowledge
from drafting import services as drafting
from drafting.engine.embeddings import embedder
from drafting.engine.grounding import KNOWLEDGE_HEADER
from drafting.engine.knowledge_files import ArticleInput, MacroInput
from drafting.engine.retrieval import Passage
from drafting.engine.vectors import QueryVector, vector_fields
from drafting.models import (
    AgentAction,
    CascadePolicy,
    Draft,
    DraftAttempt,
    DraftPassage,
    Intent,
    KnowledgeArticle,
    MacroExample,
    TrainedClassifier,
)
from tests.drafting.engine.factories import act
from tests.drafting.factories import cheap_endpoint, paid_endpoint, two_tier_team
from tests.factories import TeamSetup, ingest, make_team
from tests.http_stub import Reply, chat_completion, openai_stub

SHIPPING = (
    "# Shipping\n\n## Countries\n\nWe ship to the United States, Canada and Mexico. Delivery "
    "to Canada takes 5-7 business days.\n\n## Questions\n\nWrite to support@acme.example with "
    "anything about your delivery."
)
RETURNS = "# Returns\n\nItems can be returned within 30 days of delivery for a full refund."
PAYMENT = "# Payment\n\nWe accept Visa, Mastercard and American Express."
QUESTION = "Do you ship to Canada?"


def articles(setup: TeamSetup, *bodies: tuple[str, str, str]) -> list[KnowledgeArticle]:
    """The team's published articles (external id, title, Markdown body), chunked and embedded
    as the worker would."""
    made = []
    for external_id, title, body in bodies:
        article = knowledge.article_upsert(
            team=setup.team,
            data=ArticleInput(external_id=external_id, title=title, body=body),
            ring=False,
        ).article
        knowledge.chunks_index(article_id=article.pk)
        made.append(article)
    return made


def answer_citing(word: str, text: str) -> Any:
    """A provider that answers `text` citing the passage of its prompt that contains `word`
    (by the number the prompt gave it), as a grounded model would."""

    def reply(request: dict[str, Any]) -> Reply:
        system = request["messages"][0]["content"]
        numbers = [n for n, line in re.findall(r"^\[(\d+)\] (.*)$", system, re.M) if word in line]
        cite = f" [{numbers[0]}]" if numbers else ""
        return Reply(body=chat_completion(f"{text}{cite}. Anything else I can help with?"))

    return reply


def generate(setup: TeamSetup, text: str = QUESTION, conversation: str = "c1") -> Draft:
    draft = ingest(setup, conversation, f"{conversation}-1", text).draft
    assert draft is not None
    drafting.draft_generate(draft_id=draft.pk)
    draft.refresh_from_db()
    return draft


def paid_team(name: str, url: str) -> TeamSetup:
    return make_team(name, endpoint=paid_endpoint(url))


# --- Grounded and cited -----------------------------------------------------------------------


def test_a_question_answered_in_an_article_is_drafted_from_it_and_cites_it(db: None) -> None:
    with openai_stub(
        answer_citing("Canada", "Yes, we ship to Canada in 5-7 business days")
    ) as stub:
        setup = paid_team("Grounded", stub.base_url)
        articles(
            setup,
            ("shipping", "Shipping", SHIPPING),
            ("returns", "Returns", RETURNS),
            ("payment", "Payment", PAYMENT),
        )
        draft = generate(setup)
    assert draft.status == Draft.Status.READY, draft.failure_reason
    # The agent gets the clean text; the citation lives beside it.
    assert (
        draft.text == "Yes, we ship to Canada in 5-7 business days. Anything else I can help with?"
    )
    assert draft.knowledge == Draft.Knowledge.GROUNDED
    assert draft.knowledge_need is None  # no detector judged: the question rule did
    assert draft.question_embedding is not None and draft.question_embedding_model
    passages = list(draft.passages.select_related("article", "chunk"))
    assert [p.number for p in passages] == list(range(1, len(passages) + 1))
    cited = [p for p in passages if p.cited]
    assert len(cited) == 1 and cited[0].article is not None
    assert cited[0].article.external_id == "shipping" and "Canada" in cited[0].text
    assert cited[0].chunk is not None and cited[0].article_version == 1
    assert cited[0].vector_similarity is not None and cited[0].vector_similarity >= 0.35
    attempt = draft.attempts.get()
    assert attempt.kind == "model"
    assert attempt.citations == [cited[0].number]
    assert attempt.passages_shown == len(passages)
    system = stub.requests[0]["json"]["messages"][0]["content"]
    assert KNOWLEDGE_HEADER in system
    assert f"[{cited[0].number}] Shipping — " in system


def test_a_paid_tier_gets_the_passages_unredacted_and_the_customer_redacted(db: None) -> None:
    with openai_stub(answer_citing("support@", "Write to support@acme.example")) as stub:
        setup = paid_team("Redacted", stub.base_url)
        articles(setup, ("shipping", "Shipping", SHIPPING))
        draft = generate(
            setup,
            "Hi, I'm at dana.scully@example.com, +1 415 555 0100. Who do I write to about my delivery?",
        )
    assert draft.status == Draft.Status.READY, draft.failure_reason
    sent = stub.requests[0]["json"]["messages"]
    # The team's own address reaches the model as written: it is the answer.
    assert "support@acme.example" in sent[0]["content"]
    # The customer's do not.
    customer = sent[-1]["content"]
    assert "dana.scully@example.com" not in customer and "[EMAIL_1]" in customer
    assert "555 0100" not in customer
    assert draft.text.startswith("Write to support@acme.example.")
    assert draft.attempts.get().citations != []


def test_a_turn_that_needs_no_knowledge_is_drafted_without_passages(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("You're welcome, have a great day!"))) as stub:
        setup = paid_team("Thanks", stub.base_url)
        articles(setup, ("returns", "Returns", RETURNS))
        draft = generate(setup, "Great, thanks a lot!")
    assert draft.status == Draft.Status.READY
    assert draft.knowledge == Draft.Knowledge.NOT_NEEDED
    assert "Needs no knowledge" in draft.knowledge_note
    assert draft.passages.count() == 0
    assert draft.attempts.get().passages_shown == 0
    assert KNOWLEDGE_HEADER not in stub.requests[0]["json"]["messages"][0]["content"]


def test_a_team_without_articles_drafts_as_before(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("Yes we do."))) as stub:
        setup = paid_team("Plain", stub.base_url)
        draft = generate(setup)
    assert draft.status == Draft.Status.READY
    assert draft.knowledge == Draft.Knowledge.UNCHECKED and draft.question_embedding is None
    assert draft.attempts.get().passages_shown == 0


# --- Nothing known: the policy's rule ---------------------------------------------------------


def _unanswerable(setup: TeamSetup, rule: str, holding: str = "") -> Draft:
    CascadePolicy.objects.filter(pk=setup.policy.pk).update(
        no_knowledge_rule=rule, **({"holding_reply": holding} if holding else {})
    )
    articles(setup, ("returns", "Returns", RETURNS), ("payment", "Payment", PAYMENT))
    return generate(setup)


def test_no_knowledge_escalates_to_the_top_tier_with_what_was_found(db: None) -> None:
    with (
        openai_stub(Reply(body=chat_completion("Sure!", logprob=-0.01))) as cheap,
        openai_stub(Reply(body=chat_completion("Let me check with the team."))) as top,
    ):
        setup = two_tier_team(
            "Escalate", cheap_endpoint(cheap.base_url), paid_endpoint(top.base_url), threshold="0.5"
        )
        draft = _unanswerable(setup, CascadePolicy.NoKnowledge.ESCALATE)
    assert draft.status == Draft.Status.READY
    assert cheap.requests == []  # the cheap tier would only invent an answer
    assert [a.tier for a in draft.attempts.all()] == [2]
    assert draft.knowledge == Draft.Knowledge.NONE_FOUND
    assert "asked the top tier only" in draft.knowledge_note
    found = draft.passages.count()
    assert found > 0 and draft.attempts.get().passages_shown == found
    assert KNOWLEDGE_HEADER in top.requests[0]["json"]["messages"][0]["content"]


def test_no_knowledge_offers_the_holding_reply_without_asking_a_model(db: None) -> None:
    with openai_stub() as stub:
        setup = paid_team("Holding", stub.base_url)
        draft = _unanswerable(
            setup,
            CascadePolicy.NoKnowledge.HOLDING,
            holding="Hi {customer_name}, let me check this with the team. {agent_name}",
        )
    assert stub.requests == []
    assert draft.status == Draft.Status.READY
    # The customer's name filled, the agent's kept for the console.
    assert draft.text == "Hi Dana, let me check this with the team. {agent_name}"
    assert draft.attempts.count() == 0 and draft.total_cost == 0
    assert draft.knowledge == Draft.Knowledge.NONE_FOUND
    assert "holding reply" in draft.knowledge_note and "none relevant" in draft.knowledge_note
    assert draft.question_embedding is not None


def test_no_knowledge_with_no_draft_fails_the_draft_with_the_reason(db: None) -> None:
    with openai_stub() as stub:
        setup = paid_team("Nothing", stub.base_url)
        draft = _unanswerable(setup, CascadePolicy.NoKnowledge.NO_DRAFT)
    assert stub.requests == []
    assert draft.status == Draft.Status.FAILED
    assert draft.failure_reason.startswith("No knowledge: Needs knowledge (a question)")
    assert draft.knowledge == Draft.Knowledge.NONE_FOUND
    assert draft.message.text == QUESTION  # the message is still there for an agent
    assert draft.passages.exists()  # what was found is on record


# --- Statements --------------------------------------------------------------------------------


def test_a_grounded_draft_costs_one_statement_more_than_a_plain_one(db: None) -> None:
    """Retrieval's search is the only addition: whether to ground is read by the claim, the
    passages and the draft's knowledge are stored by the statement that stores the attempts
    (the memos of tiers, team titles and the detector are warmed by a first draft)."""
    with openai_stub(answer_citing("Canada", "Yes")) as stub:
        plain = paid_team("Plain count", stub.base_url)
        grounded = paid_team("Grounded count", stub.base_url)
        articles(grounded, ("shipping", "Shipping", SHIPPING))
        counts = []
        for setup in (plain, grounded):
            generate(setup, conversation="warm")
            draft = ingest(setup, "counted", "counted-1", QUESTION).draft
            assert draft is not None
            with CaptureQueriesContext(connection) as queries:
                drafting.draft_generate(draft_id=draft.pk)
            counts.append(len(queries))
            assert Draft.objects.get(pk=draft.pk).status == Draft.Status.READY
    plain_count, grounded_count = counts
    assert grounded_count == plain_count + 1  # retrieval's one statement


# --- Macros as tier 0 --------------------------------------------------------------------------


def macro(setup: TeamSetup, body: str, *, intent: str = "") -> Any:
    made = knowledge.macro_upsert(
        team=setup.team,
        data=MacroInput(external_id="canada", title="Shipping to Canada", body=body, intent=intent),
        ring=False,
    ).macro
    knowledge.macros_index(team_id=setup.team.pk)
    return made


def _example(made: Any, text: str, *, used: bool) -> MacroExample:
    model = embedder()
    assert model is not None
    return MacroExample.objects.create(
        macro=made,
        customer_text=text,
        used=used,
        **vector_fields(model.name, model.embed([text])[0]),
    )


def test_a_macro_for_the_messages_intent_is_offered_at_zero_cost(db: None) -> None:
    with openai_stub() as stub:
        setup = paid_team("Macro intent", stub.base_url)
        Intent.objects.create(team=setup.team, name="shipping_countries")
        made = macro(
            setup,
            "Hi {customer_name}, yes: we ship to Canada. {agent_name}",
            intent="shipping_countries",
        )
        draft = ingest(setup, "c1", "c1-1", "Any chance of delivery up north to Toronto").draft
        assert draft is not None
        drafting.message_intent_label(message=draft.message, intent=made.intent, user=setup.agent)
        drafting.draft_generate(draft_id=draft.pk)
        draft.refresh_from_db()
    assert stub.requests == []
    assert draft.status == Draft.Status.READY
    assert draft.text == "Hi Dana, yes: we ship to Canada. {agent_name}"
    attempt = draft.attempts.get()
    assert attempt.kind == "macro" and attempt.macro_id == made.pk
    assert attempt.tier == 0 and attempt.endpoint is None and attempt.cost == 0
    assert draft.total_cost == 0 and draft.final_endpoint is None
    assert "matched by intent" in draft.knowledge_note


def test_a_macro_is_offered_for_turns_like_those_agents_used_it_for(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("A model's answer."))) as stub:
        setup = paid_team("Macro similar", stub.base_url)
        made = macro(setup, "Hello {customer_name}, yes, we deliver to Canada in 5-7 days.")
        _example(made, "Is shipping to Canada possible?", used=True)
        offered = generate(setup, QUESTION)
        # A turn agents rejected the macro for, closer than the used one: no offer.
        _example(made, "Do you ship to Canada?", used=False)
        declined = generate(setup, "Do you ship to Canada ?", conversation="c2")
    assert offered.attempts.get().kind == "macro"
    similarity = offered.attempts.get().cache_similarity
    assert similarity is not None and similarity >= Decimal("0.8")
    assert offered.text == "Hello Dana, yes, we deliver to Canada in 5-7 days."
    assert declined.attempts.get().kind == "model"
    assert len(stub.requests) == 1


@pytest.mark.parametrize(("kind", "used"), [("use", True), ("ignore", False)])
def test_agents_acting_on_a_macro_draft_teach_the_matcher(db: None, kind: str, used: bool) -> None:
    with openai_stub() as stub:
        setup = paid_team(f"Macro learns {kind}", stub.base_url)
        Intent.objects.create(team=setup.team, name="shipping_countries")
        made = macro(
            setup, "Hi {customer_name}, yes: we ship to Canada.", intent="shipping_countries"
        )
        text = "I'm Dana Scully, dana@example.com. Do you ship to Canada?"
        draft = ingest(setup, "c1", "c1-1", text).draft
        assert draft is not None
        drafting.message_intent_label(message=draft.message, intent=made.intent, user=setup.agent)
        drafting.draft_generate(draft_id=draft.pk)
        draft.refresh_from_db()
        reply = draft.text if kind == "use" else "Let me look into it."
        act(setup, draft, kind, reply)
    assert AgentAction.objects.get(draft=draft).kind == kind
    example = MacroExample.objects.get(source_draft=draft)
    assert example.macro_id == made.pk and example.used is used
    # Scrubbed as few-shot examples are: no name, no address.
    assert "Dana" not in example.customer_text and "dana@example.com" not in example.customer_text
    assert "Canada" in example.customer_text
    assert example.embedding_model == draft.question_embedding_model
    assert DraftAttempt.objects.filter(draft=draft, macro=made).exists()
    assert DraftPassage.objects.filter(draft=draft).count() == 0


# --- Grounding signals in the learned scorer ---------------------------------------------------


def _trained(*, grounded_features: bool) -> Any:
    """A scorer version fitted on rows with or without the grounding signals (the latter: a
    version trained before grounded drafts existed)."""
    from drafting.learning import scorer as learning
    from drafting.learning.plr import train_plr

    model = embedder()
    assert model is not None
    texts = ["Where is my refund?", "Yes, we ship to Canada.", "I am not sure, maybe later?"]
    vectors = model.embed(texts)
    rows, labels = [], []
    for i in range(16):
        good = i % 2 == 0
        signals = learning.signal_row(
            draft_text=texts[1 if good else 2],
            default_score=0.5 + i / 100,
            tier=1,
            has_earlier=False,
            agreement=None,
            grounding=None,
            grounded_features=grounded_features,
        )
        rows.append(learning.feature_rows(vectors[0], vectors[1 if good else 2], [signals])[0])
        labels.append("1" if good else "0")
    return learning.LearnedScorer(
        classifier_id=1, model=train_plr(np.asarray(rows), labels), embedder=model
    )


@pytest.mark.parametrize("grounded_features", [True, False], ids=["new", "old"])
def test_scorer_versions_with_and_without_grounding_signals_both_judge(
    db: None, grounded_features: bool
) -> None:
    from drafting.engine.grounding import GroundingContext
    from drafting.engine.providers import Completion
    from drafting.engine.scoring import ScoringContext

    scorer = _trained(grounded_features=grounded_features)
    context = ScoringContext(
        customer_text=QUESTION,
        grounding=GroundingContext(
            needs_knowledge=True,
            passages=(("We ship to Canada.", 0.03, 0.6),),
            shown=1,
            citations=(1,),
        ),
    )
    completion = Completion(
        text="Yes, we ship to Canada.",
        tokens_in=1,
        tokens_out=1,
        latency_ms=1,
        model="m",
        finish_reason="stop",
    )
    verdict = scorer.judge(context=context, completion=completion)
    assert verdict.scorer_id == 1 and 0.0 <= verdict.score <= 1.0
    rows = scorer._rows(context, [completion.text], default_score=0.6)
    assert rows.shape[1] == scorer.width


def test_labelled_grounded_drafts_carry_their_grounding_signals(db: None) -> None:
    from drafting.learning import scorer as learning

    with openai_stub(
        answer_citing("Canada", "Yes, we ship to Canada in 5-7 business days")
    ) as stub:
        setup = paid_team("Labels", stub.base_url)
        articles(setup, ("shipping", "Shipping", SHIPPING))
        draft = generate(setup)
        act(setup, draft, "use", draft.text)
    (row,) = learning.scorer_labels(policy_id=setup.policy.pk, limit=10)
    assert row.grounding is not None and row.grounding.cited and row.grounding.grounded
    assert row.grounding.overlap is not None and row.grounding.overlap > 0.5
    features = learning.scorer_features([row], using=embedder())  # type: ignore[arg-type]
    grounding = features[0, -len(learning.GROUNDING_SIGNALS) :]
    assert grounding[0] == 1.0 and grounding[3] == 1.0  # grounded, cited


# --- A trained needs-knowledge detector --------------------------------------------------------

NEEDS = [
    "Do you ship to Canada?",
    "How long does delivery take?",
    "What is your return policy?",
    "Which payment methods do you accept?",
    "Can I return a gift?",
    "How much is shipping to Mexico?",
    "Is there a warranty on shoes?",
    "Where do you ship from?",
]
NO_NEED = [
    "Thanks so much, bye!",
    "Great, that's all.",
    "Perfect, thank you!",
    "Ok cool",
    "Hello there",
    "Have a nice day",
    "Cheers mate",
    "Thank you, problem solved.",
]


def _detector(setup: TeamSetup) -> TrainedClassifier:
    from drafting.learning.classifiers import classifier_store
    from drafting.learning.plr import train_plr

    model = embedder()
    assert model is not None
    trained = train_plr(model.embed(NEEDS + NO_NEED), ["1"] * len(NEEDS) + ["0"] * len(NO_NEED))
    return classifier_store(
        owner=setup.team,
        kind=TrainedClassifier.Kind.KNOWLEDGE,
        model=trained,
        embedding_model=model.name,
        features="customer turn embedding",
        n_train=len(NEEDS) + len(NO_NEED),
        metrics=dict(trained.metrics),
        activate=True,
        trained_by=None,
    )


def test_a_trained_detector_decides_and_its_probability_is_recorded(db: None) -> None:
    with openai_stub(Reply(body=chat_completion("You're welcome!"))) as stub:
        setup = paid_team("Detector", stub.base_url)
        CascadePolicy.objects.filter(pk=setup.policy.pk).update(
            no_knowledge_rule=CascadePolicy.NoKnowledge.NO_DRAFT
        )
        articles(setup, ("returns", "Returns", RETURNS))
        _detector(setup)
        # Not a question by the rule's reading, but the detector knows better.
        unanswered = generate(setup, "I need the shipping cost to Canada", conversation="c1")
        thanks = generate(setup, "Thank you so much, bye!", conversation="c2")
    assert unanswered.status == Draft.Status.FAILED
    assert unanswered.knowledge == Draft.Knowledge.NONE_FOUND
    assert unanswered.knowledge_need is not None and unanswered.knowledge_need >= Decimal("0.5")
    assert "the detector gives" in unanswered.failure_reason
    assert thanks.status == Draft.Status.READY
    assert thanks.knowledge == Draft.Knowledge.NOT_NEEDED
    assert thanks.knowledge_need is not None and thanks.knowledge_need < Decimal("0.5")
    assert len(stub.requests) == 1


def _passage(similarity: float, *, reranked: bool) -> Passage:
    return Passage(
        chunk_id=1,
        article_id=1,
        article_version=1,
        article_title="Hobsons House",
        heading="",
        text="The bathrooms were spotless.",
        source_url="",
        score=0.8 if reranked else 0.03,
        vector_similarity=similarity,
        text_rank=None,
        vector_position=1,
        text_position=None,
        focus=True,
        reranked=reranked,
    )


@pytest.mark.parametrize(("reranked", "state"), [(True, "grounded"), (False, "none_found")])
def test_the_re_rankers_cut_decides_relevance_not_the_similarity_floor(
    db: None, monkeypatch: pytest.MonkeyPatch, reranked: bool, state: str
) -> None:
    """A passage under KNOWLEDGE_MIN_SIMILARITY that the team's trained re-ranker kept grounds
    the draft (its probability, learned from the team's labels, is the better judge); the
    same passage from the plain hybrid search does not."""
    weak = _passage(0.2, reranked=reranked)
    monkeypatch.setattr(drafting, "retrieve", lambda **kwargs: [weak])
    monkeypatch.setattr(drafting, "knowledge_detector", lambda team_id: None)

    decided = drafting._knowledge(
        team_id=1,
        rule="escalate",
        query=QueryVector("Are their bathrooms clean?"),
        thread=[("in", "Are their bathrooms clean?")],
    )

    assert decided.state == state
    assert decided.passages == [weak]
    assert ("re-ranker" in decided.note) is reranked
