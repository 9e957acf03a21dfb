"""bench/distill.py's pieces that decide what is trained and what is tested: the split by
dialogue (no dialogue on two sides, seeded, every instance placed once), the Schema-Guided
Dialogue replies (each system turn answers the dialogue before it), and the training prompt
being the drafting path's own. Training and serving are the bench's run, not a test's."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DSTC11 = ROOT.parent / "shared" / "data" / "dstc11_track5"


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_distill", ROOT / "bench" / "distill.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_distill", module)
    spec.loader.exec_module(module)
    return module


def test_the_split_keeps_every_dialogue_on_one_side_and_is_seeded() -> None:
    distill = bench()
    # 30 dialogues of 1 to 4 instances each, interleaved as a dataset lists them.
    ids = [f"d{i % 30}" for i in range(75)]
    parts = distill.split_by_dialogue(ids, seed=3)
    assert len(parts) == 3
    assert sorted(i for p in parts for i in p) == list(range(75))
    sides = [{ids[i] for i in p} for p in parts]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert [len(s) for s in sides] == [18, 6, 6]  # 60/20/20 of the dialogues
    assert distill.split_by_dialogue(ids, seed=3) == parts
    assert distill.split_by_dialogue(ids, seed=4) != parts
    with pytest.raises(ValueError):
        distill.split_by_dialogue(ids, seed=0, shares=(0.5, -0.1))


def test_capped_draws_at_most_n_in_order_and_is_seeded() -> None:
    distill = bench()
    rows = list(range(100, 150))
    picked = distill.capped(rows, 10, seed=1)
    assert len(picked) == 10 and picked == sorted(picked) and set(picked) <= set(rows)
    assert distill.capped(rows, 10, seed=1) == picked
    assert distill.capped(rows[:5], 10, seed=1) == rows[:5]


def test_each_system_turn_is_a_reply_to_the_dialogue_before_it() -> None:
    distill = bench()
    dialogue = {
        "dialogue_id": "1_0001",
        "turns": [
            {"speaker": "USER", "utterance": "What's my balance?"},
            {"speaker": "SYSTEM", "utterance": "Checking or savings?"},
            {"speaker": "USER", "utterance": "Checking."},
            {"speaker": "SYSTEM", "utterance": "It has $5,118.77."},
        ],
    }
    items = distill.sgd_items([dialogue])
    assert [reply for _, _, reply in items] == ["Checking or savings?", "It has $5,118.77."]
    assert items[1][1] == [
        {"role": "customer", "text": "What's my balance?"},
        {"role": "agent", "text": "Checking or savings?"},
        {"role": "customer", "text": "Checking."},
    ]
    assert {d for d, _, _ in items} == {"1_0001"}


def test_a_training_prompt_is_what_the_draft_path_sends_a_local_tier() -> None:
    from drafting.engine.grounding import KNOWLEDGE_HEADER
    from drafting.management.commands.knowledge_eval import EVAL_SYSTEM_PROMPT

    distill = bench()
    thread = [
        {"role": "customer", "text": "Hi"},
        {"role": "agent", "text": "Hello, how can I help?"},
        {"role": "customer", "text": "Is there parking?"},
    ]
    messages = distill.draft_messages(
        system_prompt=EVAL_SYSTEM_PROMPT, thread=thread, passages=["[1] Hotel A: Free parking."]
    )
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == (
        f"{EVAL_SYSTEM_PROMPT}\n\n{KNOWLEDGE_HEADER}\n\n[1] Hotel A: Free parking."
    )
    assert messages[-1]["content"] == "Is there parking?"


@pytest.mark.skipif(not DSTC11.is_dir(), reason="the DSTC11 track 5 files are not here")
def test_the_dstc11_split_puts_no_dialogue_on_two_sides() -> None:
    from drafting.evaluation.dstc11 import load_turns
    from drafting.management.commands.knowledge_eval import dialogue_id

    distill = bench()
    turns = load_turns(DSTC11 / "val_half_logs.json", DSTC11 / "val_half_labels.json")
    ids = [dialogue_id(t) for t in turns]
    parts = distill.split_by_dialogue(ids, seed=0)
    sides = [{ids[i] for i in p} for p in parts]
    assert sum(len(p) for p in parts) == len(turns)
    assert not (sides[0] & sides[2]) and not (sides[1] & sides[2]) and not (sides[0] & sides[1])
    # Some dialogues have several instances: they are what a split by message would leak.
    assert max(Counter(ids).values()) > 1


def test_latency_asks_every_arm_each_prompt_reversing_the_order_and_sums_the_overhead() -> None:
    from tests.http_stub import Reply, chat_completion, openai_stub

    def answer(payload: dict[str, object]) -> Reply:
        body = chat_completion("Done.", model=str(payload["model"]), completion_tokens=11)
        body["metrics"] = {"generation_time_ms": 100.0, "time_to_first_token_ms": 20.0}
        return Reply(body=body)

    module = bench()
    prompt = [{"role": "user", "content": "Hi"}]
    with openai_stub(answer) as stub:
        arms = [("base", stub.base_url, "base-model"), ("merged", stub.base_url, "merged-model")]
        result = module.latency(arms, [prompt, prompt, prompt], 8)

    asked = [r["json"]["model"] for r in stub.requests]
    warm_up, measured = asked[:2], asked[2:]
    assert warm_up == ["base-model", "merged-model"]
    forward, backward = ["base-model", "merged-model"], ["merged-model", "base-model"]
    assert measured == [*forward, *backward, *forward]
    for label in ("base", "merged"):
        assert result[label]["n"] == 3 and result[label]["decode_ms_per_token"] == 10.0
        assert result[label]["time_to_first_token_ms"] == 20.0
    assert result["per_request_metrics"] is True
    assert module.overhead(
        {"mean_ms": 100.0, "time_to_first_token_ms": 20.0, "decode_ms_per_token": 10.0},
        {"mean_ms": 150.0, "time_to_first_token_ms": 20.0, "decode_ms_per_token": None},
    ) == {"mean_pct": 50.0, "ttft_pct": 0.0, "decode_pct": None}
