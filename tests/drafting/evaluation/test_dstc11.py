"""DSTC11 track 5's files and scores (drafting.evaluation.dstc11): the yardstick of
knowledge-grounded drafting, checked on hand-computed cases and on the data in ../shared."""

from __future__ import annotations

from typing import Any

import pytest

from drafting.evaluation import dstc11
from drafting.evaluation.datasets import shared_data_dir

DATA = shared_data_dir() / "dstc11_track5"


def review(entity: int, doc: int, sentence: int) -> dict[str, Any]:
    return {
        "domain": "hotel",
        "entity_id": entity,
        "doc_type": "review",
        "doc_id": doc,
        "sent_id": sentence,
    }


def faq(entity: int, doc: int) -> dict[str, Any]:
    return {"domain": "hotel", "entity_id": entity, "doc_type": "faq", "doc_id": doc}


def test_rouge_l_is_the_lcs_f_measure() -> None:
    # LCS of "the room was quiet" and "the room is very quiet" = "the room quiet" (3 tokens).
    expected = 2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4)
    assert dstc11.rouge_l("The room was quiet.", "the room is very QUIET") == pytest.approx(
        expected
    )
    assert dstc11.rouge_l("same words", "same words") == 1.0
    assert dstc11.rouge_l("", "anything") == 0.0


def test_scores_follow_the_tracks_definitions_on_a_hand_computed_case() -> None:
    gold: list[dict[str, Any]] = [
        {"target": True, "knowledge": [review(1, 0, 1), review(1, 0, 2)], "response": "a b c"},
        {"target": True, "knowledge": [faq(2, 3)], "response": "x y"},
        {"target": False},
        {"target": False},
    ]
    predicted: list[dict[str, Any]] = [
        # one right, one wrong, one duplicate (counted once)
        {
            "target": True,
            "knowledge": [review(1, 0, 1), review(1, 0, 9), review(1, 0, 1)],
            "response": "a b c",
        },
        {"target": False},  # a missed knowledge-seeking turn
        {"target": True, "knowledge": [faq(5, 0)], "response": "z"},  # a false alarm
        {"target": False},
    ]
    result = dstc11.scores(gold, predicted)
    # Detection: tp 1, fp 1, fn 1.
    assert result["detection"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    # Selection over snippets: tp 1; fp 1 (turn 1) + 1 (turn 3); fn 1 (turn 1) + 1 (turn 2).
    assert result["selection"]["precision"] == pytest.approx(1 / 3)
    assert result["selection"]["recall"] == pytest.approx(1 / 3)
    assert result["selection"]["exact_match"] == 0.0
    # Generation: ROUGE-L 1.0 on the one true positive, divided like detection: P = R = 0.5.
    assert result["generation"]["rouge_l"] == pytest.approx(0.5)
    # An FAQ's sentence id does not matter; a review's does.
    assert dstc11.snippet_key({**faq(2, 3), "sent_id": 7}) == dstc11.snippet_key(faq(2, 3))
    assert dstc11.snippet_key(review(1, 0, 1)) != dstc11.snippet_key(review(1, 0, 2))
    with pytest.raises(ValueError, match="predictions"):
        dstc11.scores(gold, predicted[:2])


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/dstc11_track5 is not here")
def test_the_shared_validation_half_reads_and_scores_itself_perfectly() -> None:
    snippets = dstc11.load_knowledge(DATA / "knowledge.json")
    assert dstc11.knowledge_counts(snippets.values()) == {
        "entities": 143,
        "faqs": 2869,
        "review_sentences": 8013,
    }
    turns = dstc11.load_turns(DATA / "val_half_logs.json", DATA / "val_half_labels.json")
    gold = [turn.label for turn in turns if turn.label is not None]
    assert len(gold) == len(turns) > 1000
    assert turns[0].dialogue[-1]["speaker"] == "U"
    # Every gold snippet exists in the knowledge base.
    assert all(
        dstc11.snippet_key(obj) in snippets for label in gold for obj in label.get("knowledge", [])
    )
    perfect = dstc11.scores(gold, gold)
    assert perfect["detection"]["f1"] == perfect["selection"]["f1"] == 1.0
    assert perfect["generation"]["rouge_l"] == 1.0
