"""Grounding without the database: citations parsed and removed, passages fitted into a tight
budget, relevance, the question rule, the grounding signals and the default scorer's rule."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from drafting.engine.grounding import (
    KNOWLEDGE_HEADER,
    GroundingContext,
    cited,
    grounding_signals,
    is_relevant,
    looks_like_question,
    overlap,
    passage_line,
)
from drafting.engine.prompting import KEEP_PASSAGES, Example, estimate_tokens, trim_to_budget
from drafting.engine.providers import Completion
from drafting.engine.scoring import UNGROUNDED_FACTOR, DefaultScorer, ScoringContext

# --- Citations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("draft", "shown", "clean", "numbers"),
    [
        ("We ship to Canada [1].", 3, "We ship to Canada.", (1,)),
        (
            "We ship to Canada[1]. Returns are free [2].",
            3,
            "We ship to Canada. Returns are free.",
            (1, 2),
        ),
        ("Delivery takes 5-7 days [1, 3].", 3, "Delivery takes 5-7 days.", (1, 3)),
        ("Delivery takes 5-7 days [3][1][3].", 3, "Delivery takes 5-7 days.", (3, 1)),
        ("Delivery takes 5-7 days【2】。", 3, "Delivery takes 5-7 days。", (2,)),
        ("Yes [source 2], we do.", 3, "Yes, we do.", (2,)),
        ("See [1-3] for details.", 3, "See for details.", (1, 2, 3)),
        # Numbers the attempt was not shown are no citation, but their markers still go.
        ("We ship to Canada [4]. Free returns [2].", 3, "We ship to Canada. Free returns.", (2,)),
        (
            "[1] We ship to Canada.\n[2] Returns are free.",
            2,
            "We ship to Canada.\nReturns are free.",
            (1, 2),
        ),
        ("Canada [1] and Mexico [2] are served.", 2, "Canada and Mexico are served.", (1, 2)),
        # Not citations: a placeholder, a bracketed word, no markers at all.
        ("Write to [EMAIL_1] [sic].", 2, "Write to [EMAIL_1] [sic].", ()),
        ("No markers here.", 2, "No markers here.", ()),
    ],
)
def test_citations_are_parsed_in_order_and_the_text_is_clean(
    draft: str, shown: int, clean: str, numbers: tuple[int, ...]
) -> None:
    result = cited(draft, shown=shown)
    assert result.text == clean
    assert result.citations == numbers


def test_a_draft_that_cites_nothing_shown_keeps_no_citation() -> None:
    assert cited("See [7] and [9].", shown=5).citations == ()


# --- Passages in the prompt ------------------------------------------------------------------


@dataclass(frozen=True)
class _Passage:
    article_title: str
    heading: str
    text: str
    score: float = 0.03
    vector_similarity: float | None = 0.5
    text_rank: float | None = None


def _passages(n: int, words: int = 60) -> list[str]:
    return [
        passage_line(i, _Passage(f"Article {i}", "Section", " ".join(["word"] * words)))
        for i in range(1, n + 1)
    ]


def test_a_passage_is_numbered_with_its_title_and_heading() -> None:
    line = passage_line(2, _Passage("Shipping", "Countries", " We ship to Canada. "))
    assert line == "[2] Shipping — Countries: We ship to Canada."
    assert passage_line(1, _Passage("Returns", "", "Free.")) == "[1] Returns: Free."


def test_passages_go_into_the_system_prompt_under_the_instruction() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    trimmed = trim_to_budget(
        messages, budget=10_000, passages=_passages(3), passages_header=KNOWLEDGE_HEADER
    )
    assert trimmed.passages == 3
    system = trimmed.messages[0]["content"]
    assert system.startswith("Be brief.")
    assert KNOWLEDGE_HEADER in system and "[3] Article 3 — Section:" in system
    assert trimmed.without_passages == messages  # what a paid tier's redaction gets
    assert trimmed.messages[1:] == messages[1:]


def test_under_a_tight_budget_examples_go_then_low_passages_then_old_turns() -> None:
    system = {"role": "system", "content": "Be brief."}
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "x" * 200} for i in range(5)
    ]
    examples = [Example(customer="q" * 200, reply="r" * 200, similarity=0.9)]
    passages = _passages(5)
    full = trim_to_budget(
        [system, *turns], budget=100_000, examples=examples, passages=passages, passages_header="P"
    )
    assert (full.examples, full.passages) == (1, 5)

    def fitted(budget: int) -> tuple[int, int, int]:
        trimmed = trim_to_budget(
            [system, *turns],
            budget=budget,
            examples=examples,
            passages=passages,
            passages_header="P",
        )
        return trimmed.examples, trimmed.passages, len(trimmed.messages) - 1

    seen = {fitted(budget) for budget in range(estimate_tokens(full.messages), 0, -5)}
    for examples_kept, passages_kept, turns_kept in seen:
        if passages_kept < 5:
            assert examples_kept == 0  # examples give way first
        if turns_kept < 5:
            assert passages_kept <= KEEP_PASSAGES  # passages down to the best two, then turns
        if passages_kept < KEEP_PASSAGES:
            assert turns_kept == 1  # only the last message left
        assert passages_kept >= 1  # the best passage always stays
    # Every stage happens on the way down.
    assert {(1, 5, 5), (0, 5, 5), (0, 4, 5), (0, KEEP_PASSAGES, 5), (0, KEEP_PASSAGES, 3)} <= seen
    assert fitted(10) == (0, 1, 1)


# --- Relevance, need and signals -------------------------------------------------------------


def test_relevance_is_the_similarity_floor_or_a_text_match_without_a_vector() -> None:
    assert is_relevant(_Passage("a", "", "t", vector_similarity=0.4), min_similarity=0.35)
    assert not is_relevant(
        _Passage("a", "", "t", vector_similarity=0.2, text_rank=0.9), min_similarity=0.35
    )
    assert is_relevant(
        _Passage("a", "", "t", vector_similarity=None, text_rank=0.1), min_similarity=0.35
    )
    assert not is_relevant(
        _Passage("a", "", "t", vector_similarity=None, text_rank=None), min_similarity=0.35
    )


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("Do you ship to Canada?", True),
        ("do you ship to canada", True),
        ("Hi. What are your opening hours", True),
        ("¿Envían a Canadá?", True),
        ("Thanks, that's all!", False),
        ("I want to return my order.", False),
        ("Hello", False),
    ],
)
def test_the_rule_without_a_detector_takes_questions_as_needing_knowledge(
    text: str, question: bool
) -> None:
    assert looks_like_question(text) is question


def test_signals_measure_the_best_passage_citation_and_overlap() -> None:
    context = GroundingContext(
        needs_knowledge=True,
        passages=(
            ("We ship to Canada and Mexico in 5-7 business days.", 0.033, 0.61),
            ("Returns are free within 30 days.", 0.016, 0.2),
        ),
        shown=2,
        citations=(1,),
    )
    signals = grounding_signals(context, "Yes, we ship to Canada in 5-7 business days.")
    assert signals.top_similarity == 0.61 and signals.top_score == 0.033
    assert signals.cited and signals.grounded
    # Content words: ship, canada, 5, 7, business, days — all in passage 1.
    assert signals.overlap == 1.0
    invented = grounding_signals(context, "Yes, we ship to Australia by drone tomorrow.")
    assert invented.overlap is not None and invented.overlap < 0.5
    assert not grounding_signals(None, "anything").grounded
    assert overlap("Thanks!", ["x"]) is None


def _completion(text: str) -> Completion:
    return Completion(
        text=text, tokens_in=10, tokens_out=5, latency_ms=10, model="m", finish_reason="stop"
    )


def test_the_default_scorer_discounts_an_uncited_draft_for_a_turn_that_needs_knowledge() -> None:
    scorer = DefaultScorer()
    draft = _completion("Yes, we ship to Canada.")
    passages = (("We ship to Canada.", 0.03, 0.6),)
    plain = scorer.score(
        context=ScoringContext(customer_text="Do you ship to Canada?"), completion=draft
    )
    needs = GroundingContext(needs_knowledge=True, passages=passages, shown=1)
    uncited = scorer.score(
        context=ScoringContext(customer_text="Do you ship to Canada?", grounding=needs),
        completion=draft,
    )
    assert uncited == pytest.approx(plain * UNGROUNDED_FACTOR)
    cited_context = GroundingContext(
        needs_knowledge=True, passages=passages, shown=1, citations=(1,)
    )
    assert (
        scorer.score(
            context=ScoringContext(customer_text="Do you ship to Canada?", grounding=cited_context),
            completion=draft,
        )
        == plain
    )
    no_need = GroundingContext(needs_knowledge=False)
    assert (
        scorer.score(
            context=ScoringContext(customer_text="Thanks!", grounding=no_need), completion=draft
        )
        == plain
    )
