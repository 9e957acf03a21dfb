"""DSTC11 track 5 (knowledge-grounded replies): its files and its scores, offline.

The track is the yardstick of knowledge-grounded drafting (issue 16): a knowledge base of hotels
and restaurants (FAQs and review sentences), dialogues cut at a customer turn, and per turn
whether it needs knowledge (`target`), which snippets answer it (`knowledge`) and the human
reply (`response`). Files are read in place from `../shared/data/dstc11_track5`.

Scores follow the track's definitions:
- detection: precision, recall and F1 of `target`;
- selection: micro-averaged over snippets: every turn where either side names a snippet adds
  its matches (true positives), its predicted snippets that are not gold (false positives) and
  its gold snippets not predicted (false negatives); a prediction's duplicates count once. A
  review snippet is one sentence (domain, entity, review, sentence); an FAQ snippet is the
  whole FAQ (domain, entity, FAQ). Exact-match accuracy: turns whose snippet sets are equal;
- generation: ROUGE-L F-measure of each reply to a turn both sides call knowledge-seeking,
  summed, then divided as detection's true positives are (so missed turns count as zero).
  Tokens are lower-cased runs of letters and digits; unlike the official scorer there is no
  Porter stemming, so figures here can be slightly lower than the track's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drafting.learning.rouge import rouge_l

# (domain, entity id, "review" or "faq", document id, sentence id; None for an FAQ)
SnippetKey = tuple[str, int, str, int, int | None]


@dataclass(frozen=True)
class Snippet:
    key: SnippetKey
    entity_name: str
    text: str  # a review sentence, or "question answer" of an FAQ


@dataclass(frozen=True)
class Turn:
    """One instance: the dialogue up to the customer turn to answer, and its label if known."""

    dialogue: list[dict[str, str]]  # {"speaker": "U" | "S", "text": ...}
    label: dict[str, Any] | None


def snippet_key(obj: dict[str, Any]) -> SnippetKey:
    """A label's knowledge object as a key; an FAQ's sentence id is ignored, as the track does."""
    doc_type = str(obj["doc_type"])
    sentence = int(obj["sent_id"]) if doc_type == "review" else None
    return (str(obj["domain"]), int(obj["entity_id"]), doc_type, int(obj["doc_id"]), sentence)


def load_knowledge(path: Path) -> dict[SnippetKey, Snippet]:
    """Every snippet of a knowledge.json: each review sentence, and each FAQ as one."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    snippets: dict[SnippetKey, Snippet] = {}
    for domain, entities in raw.items():
        for entity_id, entity in entities.items():
            name = str(entity.get("name") or "")
            for review_id, review in (entity.get("reviews") or {}).items():
                for sentence_id, sentence in (review.get("sentences") or {}).items():
                    key: SnippetKey = (
                        domain,
                        int(entity_id),
                        "review",
                        int(review_id),
                        int(sentence_id),
                    )
                    snippets[key] = Snippet(key, name, str(sentence))
            for faq_id, faq in (entity.get("faqs") or {}).items():
                key = (domain, int(entity_id), "faq", int(faq_id), None)
                text = f"{faq.get('question', '')} {faq.get('answer', '')}".strip()
                snippets[key] = Snippet(key, name, text)
    return snippets


def load_turns(logs: Path, labels: Path | None = None) -> list[Turn]:
    """The instances of a logs.json, with their labels when a labels.json is given (the two
    files are parallel lists)."""
    dialogues = json.loads(logs.read_text(encoding="utf-8"))
    gold: list[dict[str, Any] | None] = (
        json.loads(labels.read_text(encoding="utf-8")) if labels else [None] * len(dialogues)
    )
    if len(gold) != len(dialogues):
        raise ValueError(f"{logs} has {len(dialogues)} instances but {labels} has {len(gold)}")
    return [Turn(dialogue, label) for dialogue, label in zip(dialogues, gold, strict=True)]


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float

    @classmethod
    def of(cls, true_pos: float, predicted: float, actual: float) -> PRF:
        precision = true_pos / predicted if predicted else 0.0
        recall = true_pos / actual if actual else 0.0
        total = precision + recall
        return cls(precision, recall, 2 * precision * recall / total if total else 0.0)

    def as_dict(self) -> dict[str, float]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1}


def scores(gold: Sequence[dict[str, Any]], predicted: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Detection, selection and generation scores of predictions in the labels' format."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} labelled turns")
    det_tp = det_fp = det_fn = 0
    sel_tp = sel_fp = sel_fn = 0
    exact = selected_turns = 0
    rouge_sum = 0.0
    for ref, hyp in zip(gold, predicted, strict=True):
        if ref["target"] and hyp["target"]:
            det_tp += 1
            rouge_sum += rouge_l(str(ref.get("response", "")), str(hyp.get("response", "")))
        elif ref["target"]:
            det_fn += 1
        elif hyp["target"]:
            det_fp += 1
        ref_keys = {snippet_key(obj) for obj in ref.get("knowledge") or []}
        hyp_keys = {snippet_key(obj) for obj in hyp.get("knowledge") or []}
        if ref_keys or hyp_keys:
            selected_turns += 1
            matched = len(ref_keys & hyp_keys)
            sel_tp += matched
            sel_fp += len(hyp_keys) - matched
            sel_fn += len(ref_keys) - matched
            exact += ref_keys == hyp_keys
    return {
        "turns": len(gold),
        "detection": PRF.of(det_tp, det_tp + det_fp, det_tp + det_fn).as_dict(),
        "selection": {
            **PRF.of(sel_tp, sel_tp + sel_fp, sel_tp + sel_fn).as_dict(),
            "exact_match": exact / selected_turns if selected_turns else 0.0,
        },
        "generation": {"rouge_l": PRF.of(rouge_sum, det_tp + det_fp, det_tp + det_fn).f1},
    }


def knowledge_counts(snippets: Iterable[Snippet]) -> dict[str, int]:
    """Entities, FAQs and review sentences, for a report's header."""
    entities: set[tuple[str, int]] = set()
    counts = {"faq": 0, "review": 0}
    for snippet in snippets:
        entities.add((snippet.key[0], snippet.key[1]))
        counts[snippet.key[2]] += 1
    return {"entities": len(entities), "faqs": counts["faq"], "review_sentences": counts["review"]}
