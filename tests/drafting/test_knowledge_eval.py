"""`manage.py knowledge_eval` end to end on a slice of DSTC11 track 5 (the first 40 turns and
the knowledge of the entities their labels cite, read in place from the shared files): the
product's import, training and retrieval, the track's output format, the scores."""

from __future__ import annotations

import json
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from drafting.engine.retrieval import Passage
from drafting.management.commands.knowledge_eval import (
    EVAL_MAX_TOKENS,
    EVAL_SYSTEM_PROMPT,
    as_drafted,
    compare,
    mean_interval,
)
from drafting.models import (
    CascadePolicy,
    KnowledgeArticle,
    KnowledgeLabel,
    ModelEndpoint,
    TrainedClassifier,
)
from tests.http_stub import Reply, chat_completion, openai_stub

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dstc11_track5"
TURNS = 40

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.is_dir(), reason="the DSTC11 track 5 files are not here"),
]


@dataclass(frozen=True)
class Slice:
    """The slice's files, written under the test's tmp_path, and where the eval writes its
    predictions."""

    knowledge: Path
    logs: Path
    labels: Path
    output: Path

    def args(self, *more: str) -> list[str]:
        """`knowledge_eval`'s arguments for this slice (its first 20 turns train), then `more`."""
        return [
            "--knowledge",
            str(self.knowledge),
            "--logs",
            str(self.logs),
            "--labels",
            str(self.labels),
            "--output",
            str(self.output),
            "--train",
            "20",
            *more,
        ]


@pytest.fixture
def dstc_slice(tmp_path: Path) -> Slice:
    """The first TURNS turns, their labels, and the knowledge of six entities they cite."""
    logs = json.loads((DATA / "val_half_logs.json").read_text())[:TURNS]
    labels = json.loads((DATA / "val_half_labels.json").read_text())[:TURNS]
    raw = json.loads((DATA / "knowledge.json").read_text())
    cited = {(k["domain"], str(k["entity_id"])) for lab in labels for k in lab.get("knowledge", [])}
    small: dict[str, dict[str, Any]] = {}
    for domain, entity_id in sorted(cited)[:6]:
        small.setdefault(domain, {})[entity_id] = raw[domain][entity_id]
    found = Slice(
        knowledge=tmp_path / "k.json",
        logs=tmp_path / "l.json",
        labels=tmp_path / "y.json",
        output=tmp_path / "pred.json",
    )
    found.knowledge.write_text(json.dumps(small))
    found.logs.write_text(json.dumps(logs))
    found.labels.write_text(json.dumps(labels))
    return found


def test_the_eval_writes_every_turn_in_the_track_format_and_scores_the_rest(
    dstc_slice: Slice,
) -> None:
    out = StringIO()
    args = dstc_slice.args("--json")
    call_command("knowledge_eval", *args, stdout=out, stderr=StringIO())
    report = json.loads(out.getvalue())
    predictions = json.loads(dstc_slice.output.read_text())
    assert len(predictions) == TURNS
    for p in predictions:
        assert set(p) <= {"target", "knowledge", "response"} and isinstance(p["target"], bool)
        assert p["target"] or p["knowledge"] == []
        for k in p["knowledge"]:
            assert set(k) >= {"domain", "entity_id", "doc_type", "doc_id"}
            assert ("sent_id" in k) == (k["doc_type"] == "review")
    assert any(p["knowledge"] for p in predictions)
    assert 0 < report["training_turns"] < TURNS
    assert report["scored_on"].startswith(f"{TURNS - report['training_turns']} turns")
    for name in ("detection", "selection", "selection_gold_detection"):
        assert 0.0 <= report[name]["f1"] <= 1.0
    assert report["detection"]["f1"] > 0.5
    team = report["team"]
    assert KnowledgeLabel.objects.filter(team__name=team).count() == report["training_turns"]
    assert set(
        TrainedClassifier.objects.filter(team__name=team, active=True).values_list(
            "kind", flat=True
        )
    ) == {"knowledge", "reranker"}
    # Again: the knowledge is replaced idempotently (same articles, same chunks, no new ones).
    articles = set(KnowledgeArticle.objects.filter(team__name=team).values_list("pk", "version"))
    call_command("knowledge_eval", *args, stdout=StringIO(), stderr=StringIO())
    assert (
        set(KnowledgeArticle.objects.filter(team__name=team).values_list("pk", "version"))
        == articles
    )


def _passage(n: int, *, focus: bool, similarity: float) -> Passage:
    return Passage(
        chunk_id=n,
        article_id=1,
        article_version=1,
        article_title="Hotel",
        heading="",
        text=f"snippet {n}",
        source_url="",
        score=similarity,
        vector_similarity=similarity,
        text_rank=None,
        vector_position=n,
        text_position=None,
        focus=focus,
        reranked=focus,  # in these cases, the focus chunks are those a re-ranker kept
    )


@override_settings(KNOWLEDGE_PASSAGES=3, KNOWLEDGE_MIN_SIMILARITY=0.35)
def test_a_turn_naming_no_article_is_scored_as_the_draft_path_grounds_it() -> None:
    # The re-ranker's own cut stands, low similarities included.
    reranked = [_passage(n, focus=True, similarity=0.1) for n in range(8)]
    assert as_drafted(reranked) == reranked
    # The hybrid fallback: the best KNOWLEDGE_PASSAGES, those at the similarity floor.
    hybrid = [_passage(n, focus=False, similarity=s) for n, s in enumerate([0.6, 0.2, 0.4, 0.5])]
    assert [p.chunk_id for p in as_drafted(hybrid)] == [0, 2]
    assert as_drafted([]) == []


def test_models_draft_the_same_held_out_turns_and_are_compared_paired(dstc_slice: Slice) -> None:
    """`--model A --model B` through draft_preview against a recorded server: B answers with the
    human response, A with an unrelated sentence, so B's ROUGE-L and similarity are higher on
    every turn and the paired interval excludes zero."""
    labels = json.loads(dstc_slice.labels.read_text())
    logs = json.loads(dstc_slice.logs.read_text())
    human = {
        log[-1]["text"]: str(lab.get("response") or "")
        for log, lab in zip(logs, labels, strict=True)
    }

    def answer(payload: dict[str, Any]) -> Reply:
        if payload["model"] == "tuned-adapter":
            text = human[payload["messages"][-1]["content"]]
        else:
            text = "Our office is closed on public holidays."
        return Reply(body=chat_completion(text, model=payload["model"]))

    out = StringIO()
    with openai_stub(answer) as stub:
        args = dstc_slice.args(
            "--generate",
            "6",
            "--model",
            "smollm-base",
            "--model",
            "tuned-adapter",
            "--llm-url",
            stub.base_url,
            "--json",
        )
        call_command("knowledge_eval", *args, stdout=out, stderr=StringIO())
        asked = [r["json"] for r in stub.requests if r["path"].endswith("/chat/completions")]
    report = json.loads(out.getvalue())
    assert report["generated"] == 6
    comparison = report["comparison"]
    assert set(comparison["models"]) == {"smollm-base", "tuned-adapter"}
    # Each model was asked the same six turns, with the eval policy's prompt, max 80 tokens.
    by_model: dict[str, list[str]] = {}
    for request in asked:
        by_model.setdefault(request["model"], []).append(request["messages"][-1]["content"])
        assert request["messages"][0]["content"].startswith(EVAL_SYSTEM_PROMPT)
        assert request["max_tokens"] == EVAL_MAX_TOKENS
    assert len(by_model["smollm-base"]) == 6
    assert sorted(by_model["smollm-base"]) == sorted(by_model["tuned-adapter"])
    # Held-out turns only: none of them is a training label.
    trained = set(
        KnowledgeLabel.objects.filter(team__name=report["team"]).values_list("text", flat=True)
    )
    assert not any(any(text in t for t in trained) for text in by_model["smollm-base"])
    scores = comparison["scores"]
    assert scores["n"] == 6
    tuned = scores["models"]["tuned-adapter"]
    assert tuned["rouge_l"]["mean"] == 1.0 and tuned["similarity"]["mean"] > 0.99
    difference = scores["difference"]
    assert difference["of"] == "tuned-adapter - smollm-base"
    assert difference["rouge_l"]["n"] == 6 and difference["rouge_l"]["low"] > 0
    assert difference["similarity"]["low"] > 0
    # The policies and endpoints are the scratch team's, local, at the given server.
    endpoint = ModelEndpoint.objects.get(name=f"{report['team']}: tuned-adapter")
    assert endpoint.kind == "local" and endpoint.base_url == stub.base_url
    assert not CascadePolicy.objects.get(
        pk=comparison["models"]["tuned-adapter"]["policy_id"]
    ).active


def test_model_needs_a_number_of_turns_to_draft(dstc_slice: Slice) -> None:
    args = dstc_slice.args("--model", "smollm-base")
    with pytest.raises(CommandError, match="--generate"):
        call_command("knowledge_eval", *args, stdout=StringIO(), stderr=StringIO())


def test_intervals_and_the_paired_difference() -> None:
    interval = mean_interval([0.2, 0.4, 0.6])
    assert interval["mean"] == 0.4 and interval["n"] == 3
    # Student's t with 2 degrees of freedom: 4.303 × 0.2 / √3.
    assert interval["low"] == pytest.approx(0.4 - 0.4969, abs=1e-3)
    assert mean_interval([])["mean"] is None and mean_interval([0.5])["low"] is None
    result = compare(
        ["the room has free wifi", "parking costs ten pounds"],
        {"a": ["no idea", ""], "b": ["the room has free wifi", "parking costs ten pounds a day"]},
        None,
    )
    assert "similarity skipped" in result["note"] and result["embedder"] is None
    assert result["models"]["a"]["drafted"] == 1  # an empty draft counts, scored 0
    assert result["models"]["b"]["rouge_l"]["mean"] > result["models"]["a"]["rouge_l"]["mean"]
    assert result["difference"]["of"] == "b - a" and "similarity" not in result["difference"]
