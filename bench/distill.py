"""Bench of distillation on real data: a LoRA adapter trained on human support replies against
the base model it adapts, on held-out dialogues, through the product's own paths.

    .venv/bin/python bench/distill.py --dataset {dstc11,sgd_banks} [--seed 0] [--train-max 300]
        [--dev-max 40] [--test-max 120] [--epochs 1] [--max-length 512] [--port 8031]
        [--latency] [--latency-prompts 30] [--pause 3] [--no-lora-reference] [--no-merged]
        [--latency-only]
        [--retrain] [--concurrency 6]

- dstc11: the shared DSTC11 track 5 half (val_half_*): the turns whose label has a human
  `response`. Split by dialogue (instances sharing their first two turns are one dialogue, as
  `manage.py knowledge_eval` groups them) with the seed, 60/20/20 into train / dev / test. A
  training example is the prompt the drafting path builds for the local tier (the eval
  policy's system prompt, the thread, the passages numbered under the knowledge header and
  fitted to the endpoint's budget: drafting.services' own functions) with the labelled
  snippets as the passages (the draft the agent would have started from, grounded as the
  labels say), the human response as the target. The adapter is trained with the product's
  trainer, drafting.learning.distill.train_adapter, the function `manage.py distill_train`
  runs (the command also books a DistillRun for a team and reads `distill_export`'s folder; a
  bench on outside data needs neither); dev is its validation set (loss before/after). The test
  dialogues' instances (all of them: the team's knowledge detector trains on some) go through
  `manage.py knowledge_eval --model BASE --model ADAPTER --generate N`, so both models answer
  the same held-out turns through draft_preview, grounded by the team's own retrieval.
- sgd_banks: the Banks/Payment dialogues of Schema-Guided Dialogue, split by its own
  train/dev/test files; every system turn is a reply to the dialogue before it (no knowledge
  base). Trained the same way; up to --test-max test replies drafted by both models through
  draft_preview (knowledge_eval's `model_policy` / `drafts_for` / `compare`).
- --latency: the same --latency-prompts test prompts to the base and to the adapter as LoRA on
  the same LoRA-enabled server, and to the adapter merged into the base's weights on a server
  of its own (--port + 1; `distill_serve --merged`'s merge; skip with --no-merged), one at a
  time after a warm-up, the order reversed every other prompt: mean / p50 / p95 request latency,
  time to first token and decode ms per output token (vLLM's per-request `metrics` when
  present, else the request time over the tokens), and each one's overhead over the base in %,
  --pause seconds (3) before each request so no server waits for another's spinning threads;
  with the base on a third server started without LoRA (--port + 2) asked in the same rounds,
  for reference, and each one's overhead over it (skip with --no-lora-reference). --latency-only measures that again for the adapter of the kept
  results file, keeping its evaluation.

The adapter is kept under CSBOT_VAR_DIR/bench/distill/<dataset>-<key>/ (the key hashes the data
and hyper-parameters); it is reused unless --retrain. Prints one JSON object on stdout and keeps
it in bench/results/distill_<dataset>.json; progress on stderr. Needs the database (the scratch
teams' knowledge, policies and endpoints) and the local LLM installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from io import StringIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DSTC11 = Path("/work/shared/data/dstc11_track5")
SGD_BANKS = Path("/work/shared/data/sgd_banks/sgd_banks_payment_subset.json")
SHARES = (0.6, 0.2, 0.2)

Messages = list[dict[str, str]]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def split_by_dialogue(
    dialogue_ids: Sequence[str], *, seed: int, shares: Sequence[float] = SHARES
) -> list[list[int]]:
    """Indices of `dialogue_ids` (one per instance) in len(shares) parts, whole dialogues only:
    the distinct ids in a seeded random order, the first share of them to the first part, and
    so on (the last part takes the rest). No dialogue is on two sides."""
    import numpy as np

    if not shares or any(s < 0 for s in shares):
        raise ValueError("shares must be non-negative")
    order = sorted(set(dialogue_ids))
    order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    total = sum(shares)
    part_of: dict[str, int] = {}
    bounds, acc = [], 0.0
    for share in shares[:-1]:
        acc += share / total
        bounds.append(round(acc * len(order)))
    for position, dialogue in enumerate(order):
        part_of[dialogue] = sum(1 for b in bounds if position >= b)
    parts: list[list[int]] = [[] for _ in shares]
    for i, dialogue in enumerate(dialogue_ids):
        parts[part_of[dialogue]].append(i)
    return parts


def capped(indices: Sequence[int], n: int, *, seed: int) -> list[int]:
    """At most `n` of `indices`, a seeded draw, in their original order."""
    import numpy as np

    if len(indices) <= n:
        return list(indices)
    chosen = np.random.default_rng(seed).choice(len(indices), size=n, replace=False)
    return [indices[i] for i in sorted(chosen)]


def draft_messages(
    *, system_prompt: str, thread: list[dict[str, str]], passages: Sequence[str] = ()
) -> Messages:
    """The prompt the drafting path sends a local tier for the thread's last customer turn:
    drafting.services' thread reading and prompt, the passages fitted by the cascade's own
    trim (a LOCAL tier sees the prompt unredacted), the default endpoint budget."""
    from drafting import services
    from drafting.engine.grounding import KNOWLEDGE_HEADER
    from drafting.engine.prompting import trim_to_budget
    from drafting.models import ModelEndpoint

    budget = ModelEndpoint._meta.get_field("prompt_token_budget").get_default()
    messages = services.preview_messages(system_prompt=system_prompt, thread=thread)
    return trim_to_budget(
        messages, budget=int(budget), passages=passages, passages_header=KNOWLEDGE_HEADER
    ).messages


def snippet_lines(keys: Sequence[Any], snippets: dict[Any, Any]) -> list[str]:
    """The labelled snippets as the model sees retrieved passages (`[n] Title: text`): the
    article title is the entity's name and a snippet is its own heading-less chunk, as
    knowledge_eval imports them."""
    from drafting.engine.grounding import passage_lines
    from drafting.engine.retrieval import Passage

    passages = []
    for n, key in enumerate(k for k in keys if k in snippets):
        snippet = snippets[key]
        passages.append(
            Passage(
                chunk_id=n,
                article_id=0,
                article_version=1,
                article_title=snippet.entity_name,
                heading="",
                text=snippet.text,
                source_url="",
                score=1.0,
                vector_similarity=None,
                text_rank=None,
                vector_position=None,
                text_position=None,
                focus=True,
            )
        )
    return passage_lines(passages)


def dstc11_thread(turn: Any) -> list[dict[str, str]]:
    return [
        {"role": "customer" if t["speaker"] == "U" else "agent", "text": t["text"]}
        for t in turn.dialogue
    ]


# --- data sets ---------------------------------------------------------------------------------


def dstc11_data(args: argparse.Namespace) -> dict[str, Any]:
    from drafting.evaluation.dstc11 import load_knowledge, load_turns, snippet_key
    from drafting.management.commands.knowledge_eval import EVAL_SYSTEM_PROMPT, dialogue_id

    turns = load_turns(DSTC11 / "val_half_logs.json", DSTC11 / "val_half_labels.json")
    snippets = load_knowledge(DSTC11 / "knowledge.json")
    ids = [dialogue_id(t) for t in turns]
    train, dev, test = split_by_dialogue(ids, seed=args.seed)

    def replied(indices: list[int]) -> list[int]:
        return [i for i in indices if (turns[i].label or {}).get("response")]

    def example(i: int) -> Messages:
        label = turns[i].label or {}
        keys = [snippet_key(o) for o in label.get("knowledge") or []]
        prompt = draft_messages(
            system_prompt=EVAL_SYSTEM_PROMPT,
            thread=dstc11_thread(turns[i]),
            passages=snippet_lines(keys, snippets),
        )
        return [*prompt, {"role": "assistant", "content": str(label["response"]).strip()}]

    train_rows = capped(replied(train), args.train_max, seed=args.seed)
    dev_rows = capped(replied(dev), args.dev_max, seed=args.seed)
    return {
        "turns": turns,
        "split": {"train": train, "dev": dev, "test": test},
        "train": [example(i) for i in train_rows],
        "dev": [example(i) for i in dev_rows],
        "sizes": {
            "instances": len(turns),
            "dialogues": len(set(ids)),
            "instances_train_dev_test": [len(train), len(dev), len(test)],
            "replied_train_dev_test": [len(replied(p)) for p in (train, dev, test)],
            "dialogues_train_dev_test": [len({ids[i] for i in p}) for p in (train, dev, test)],
        },
    }


def sgd_items(dialogues: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, str]], str]]:
    """(dialogue id, thread up to the customer turn, the system's reply) for every system turn
    that answers a user turn."""
    items = []
    for dialogue in dialogues:
        thread: list[dict[str, str]] = []
        for turn in dialogue["turns"]:
            text = str(turn.get("utterance") or "").strip()
            if not text:
                continue
            if turn["speaker"] == "SYSTEM":
                if thread and thread[-1]["role"] == "customer":
                    items.append((str(dialogue["dialogue_id"]), list(thread), text))
                thread.append({"role": "agent", "text": text})
            else:
                thread.append({"role": "customer", "text": text})
    return items


def sgd_data(args: argparse.Namespace) -> dict[str, Any]:
    from drafting.management.commands.knowledge_eval import EVAL_SYSTEM_PROMPT

    raw = json.loads(SGD_BANKS.read_text(encoding="utf-8"))
    parts = {name: sgd_items(raw.get(name) or []) for name in ("train", "dev", "test")}

    def example(item: tuple[str, list[dict[str, str]], str]) -> Messages:
        prompt = draft_messages(system_prompt=EVAL_SYSTEM_PROMPT, thread=item[1])
        return [*prompt, {"role": "assistant", "content": item[2]}]

    train = [
        parts["train"][i]
        for i in capped(range(len(parts["train"])), args.train_max, seed=args.seed)
    ]
    dev = [parts["dev"][i] for i in capped(range(len(parts["dev"])), args.dev_max, seed=args.seed)]
    test = [
        parts["test"][i] for i in capped(range(len(parts["test"])), args.test_max, seed=args.seed)
    ]
    overlap = {d for d, _, _ in parts["train"]} & {d for d, _, _ in parts["test"]}
    return {
        "train": [example(i) for i in train],
        "dev": [example(i) for i in dev],
        "test": test,
        "sizes": {
            "dialogues_train_dev_test": [len(raw.get(n) or []) for n in ("train", "dev", "test")],
            "replies_train_dev_test": [len(parts[n]) for n in ("train", "dev", "test")],
            "dialogues_on_two_sides": len(overlap),
        },
    }


# --- training ----------------------------------------------------------------------------------


def train(args: argparse.Namespace, data: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The adapter for this data and these hyper-parameters: trained, or the one kept."""
    from django.conf import settings

    from drafting.learning.distill import Hyper, train_adapter
    from drafting.localserver.config import model_dir

    hyper = Hyper(
        epochs=args.epochs,
        max_length=args.max_length,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        generate_validation=0,
        seed=args.seed,
    )
    digest = hashlib.sha256(
        json.dumps([data["train"], data["dev"], hyper.as_dict()], sort_keys=True).encode()
    ).hexdigest()
    folder = Path(settings.VAR_DIR) / "bench" / "distill" / f"{args.dataset}-{digest[:12]}"
    record = folder / "training.json"
    if record.is_file() and (folder / "adapter").is_dir() and not args.retrain:
        log(f"reusing the adapter in {folder}")
        return folder / "adapter", json.loads(record.read_text())
    log(f"training on {len(data['train'])} examples, validating on {len(data['dev'])}")
    result = train_adapter(
        base_dir=model_dir(),
        train=data["train"],
        validation=data["dev"],
        out_dir=folder / "adapter",
        hyper=hyper,
        progress=log,
    )
    summary = {
        "data_sha256": digest,
        "hyperparameters": hyper.as_dict(),
        "n_train": result.n_train,
        "n_validation": result.n_validation,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "device": result.device,
        "trainable_parameters": result.trainable_parameters,
        "validation": result.validation,
        "loss_curve": result.loss_curve,
    }
    record.write_text(json.dumps(summary, indent=1))
    return folder / "adapter", summary


def adapter_name(dataset: str, summary: dict[str, Any]) -> str:
    return f"bench-{dataset}-{summary['data_sha256'][:8]}"


# --- evaluation --------------------------------------------------------------------------------


def evaluate_dstc11(
    args: argparse.Namespace, data: dict[str, Any], *, url: str, adapter: str
) -> dict[str, Any]:
    """`manage.py knowledge_eval --model base --model adapter` on the test dialogues."""
    from django.core.management import call_command

    from drafting import localserver

    turns = data["turns"]
    test = data["split"]["test"]
    with tempfile.TemporaryDirectory() as tmp:
        logs, labels = Path(tmp) / "logs.json", Path(tmp) / "labels.json"
        logs.write_text(json.dumps([turns[i].dialogue for i in test]))
        labels.write_text(json.dumps([turns[i].label for i in test]))
        out = StringIO()
        call_command(
            "knowledge_eval",
            "--knowledge",
            str(DSTC11 / "knowledge.json"),
            "--logs",
            str(logs),
            "--labels",
            str(labels),
            "--output",
            str(Path(tmp) / "pred.json"),
            "--train",
            str(args.detector_train),
            "--seed",
            str(args.seed),
            "--generate",
            str(args.test_max),
            "--model",
            localserver.SERVED_MODEL_NAME,
            "--model",
            adapter,
            "--llm-url",
            url,
            "--concurrency",
            str(args.concurrency),
            "--json",
            stdout=out,
        )
    report: dict[str, Any] = json.loads(out.getvalue())
    return report


def evaluate_sgd(
    args: argparse.Namespace, data: dict[str, Any], *, url: str, adapter: str
) -> dict[str, Any]:
    """Both models draft every test reply through draft_preview (no knowledge)."""
    from csbot.models import Team
    from drafting import localserver
    from drafting.engine.embeddings import embedder
    from drafting.management.commands.knowledge_eval import compare, drafts_for, model_policy

    team, _ = Team.objects.get_or_create(name="sgd-banks-eval")
    names = [localserver.SERVED_MODEL_NAME, adapter]
    policies = {name: model_policy(team, name, url=url) for name in names}
    threads = [thread for _, thread, _ in data["test"]]
    started = time.monotonic()
    answers = drafts_for(
        team, policies, threads, grounded=False, concurrency=args.concurrency, progress=log
    )
    result = compare([reply for _, _, reply in data["test"]], answers, embedder())
    result["generation_seconds"] = round(time.monotonic() - started, 1)
    return result


def _chat(url: str, model: str, messages: Messages, max_tokens: int) -> dict[str, Any]:
    body = json.dumps(
        {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    ).encode()
    request = urllib.request.Request(  # noqa: S310 (our own local server)
        f"{url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310
        payload: dict[str, Any] = json.loads(response.read())
    payload["_seconds"] = time.perf_counter() - started
    return payload


def _decode_ms_per_token(payload: dict[str, Any]) -> float | None:
    """Decode time per output token: vLLM's `generation_time_ms` (first output token to last)
    over the tokens after the first, when the server sent its per-request metrics; else the
    request's whole time over its tokens (prefill included: an upper bound)."""
    tokens = int((payload.get("usage") or {}).get("completion_tokens") or 0)
    if tokens <= 0:
        return None
    metrics = payload.get("metrics") or {}
    decode = metrics.get("generation_time_ms") if isinstance(metrics, dict) else None
    if isinstance(decode, int | float) and tokens > 1:
        return float(decode) / (tokens - 1)
    return 1000 * float(payload["_seconds"]) / tokens


def _ttft_ms(payload: dict[str, Any]) -> float | None:
    metrics = payload.get("metrics") or {}
    value = metrics.get("time_to_first_token_ms") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _summary(
    latencies: list[float], per_token: list[float], ttft: list[float], tokens: list[int]
) -> dict[str, Any]:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)

    return {
        "n": len(latencies),
        "mean_ms": round(1000 * statistics.fmean(latencies), 1),
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "decode_ms_per_token": round(statistics.fmean(per_token), 2) if per_token else None,
        "time_to_first_token_ms": round(statistics.fmean(ttft), 1) if ttft else None,
        "output_tokens_mean": round(statistics.fmean(tokens), 1) if tokens else None,
    }


# One way of serving a model: (label, the server's OpenAI URL, the model name it serves).
Arm = tuple[str, str, str]


def latency(
    arms: Sequence[Arm], prompts: Sequence[Messages], max_tokens: int, *, pause: float = 0.0
) -> dict[str, Any]:
    """Each prompt to each arm in turn (the order reversed every other prompt, so load drifts
    hit all alike), one request at a time, after one warm-up request per arm, `pause` seconds
    before each request.

    The pause is for arms on different servers sharing the same cores: vLLM's CPU threads
    keep spinning for a while after a request, and a request to another server right after
    one waited ≈1 s for them here (its time to first token, whatever the prompt's length;
    with 3 s between requests the merged adapter's and the base's were equal)."""
    for _, url, model in arms:
        _chat(url, model, prompts[0], max_tokens)
    labels = [label for label, _, _ in arms]
    seconds: dict[str, list[float]] = {label: [] for label in labels}
    per_token: dict[str, list[float]] = {label: [] for label in labels}
    ttft: dict[str, list[float]] = {label: [] for label in labels}
    tokens: dict[str, list[int]] = {label: [] for label in labels}
    metrics_seen = False
    for n, prompt in enumerate(prompts):
        for label, url, model in arms if n % 2 == 0 else list(reversed(arms)):
            time.sleep(pause)
            payload = _chat(url, model, prompt, max_tokens)
            seconds[label].append(payload["_seconds"])
            metrics_seen = metrics_seen or bool(payload.get("metrics"))
            ms = _decode_ms_per_token(payload)
            if ms is not None:
                per_token[label].append(ms)
            if (first := _ttft_ms(payload)) is not None:
                ttft[label].append(first)
            tokens[label].append(int((payload.get("usage") or {}).get("completion_tokens") or 0))
    out: dict[str, Any] = {
        label: _summary(seconds[label], per_token[label], ttft[label], tokens[label])
        | {"model": model, "url": url}
        for label, url, model in arms
    }
    out["per_request_metrics"] = metrics_seen
    return out


def overhead(base: dict[str, Any], other: dict[str, Any]) -> dict[str, float | None]:
    """`other` over `base` in % (mean request, time to first token, decode per token)."""

    def pct(key: str) -> float | None:
        if not base.get(key) or not other.get(key):
            return None
        return round(100 * (other[key] / base[key] - 1), 1)

    return {
        "mean_pct": pct("mean_ms"),
        "ttft_pct": pct("time_to_first_token_ms"),
        "decode_pct": pct("decode_ms_per_token"),
    }


def merged_server(args: argparse.Namespace, adapter_dir: Path, name: str) -> str:
    """The adapter merged into the base's weights (the product's merge_adapter, what
    `manage.py distill_serve --merged` runs), served on --port + 1 under `name`."""
    from drafting import localserver
    from drafting.learning.distill import merge_adapter
    from drafting.localserver.config import model_dir

    folder = adapter_dir.with_name("merged")
    if not (folder / "config.json").is_file():
        log(f"merging the adapter into the base's weights: {folder}")
        merge_adapter(base_dir=model_dir(), adapter_dir=adapter_dir, out_dir=folder)
    return localserver.ensure_server(
        port=args.port + 1, model=folder, served_model_name=name, progress=log
    )


def prompts_for_latency(args: argparse.Namespace, data: dict[str, Any]) -> list[Messages]:
    from drafting.management.commands.knowledge_eval import EVAL_SYSTEM_PROMPT

    if args.dataset == "sgd_banks":
        threads = [thread for _, thread, _ in data["test"]]
        return [
            draft_messages(system_prompt=EVAL_SYSTEM_PROMPT, thread=t)
            for t in threads[: args.latency_prompts]
        ]
    turns = data["turns"]
    rows = [i for i in data["split"]["test"] if (turns[i].label or {}).get("response")]
    return [
        draft_messages(system_prompt=EVAL_SYSTEM_PROMPT, thread=dstc11_thread(turns[i]))
        for i in rows[: args.latency_prompts]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("dstc11", "sgd_banks"), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-max", type=int, default=300)
    parser.add_argument("--dev-max", type=int, default=40)
    parser.add_argument("--test-max", type=int, default=120)
    parser.add_argument("--detector-train", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=80, help="generated tokens at most")
    parser.add_argument("--port", type=int, default=8031)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--latency-prompts", type=int, default=30)
    parser.add_argument("--no-lora-reference", action="store_true")
    parser.add_argument(
        "--no-merged", action="store_true", help="no merged copy of the adapter in --latency"
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=3.0,
        help="seconds between latency requests (servers sharing cores; see latency())",
    )
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="measure the latency again, keeping the results file's evaluation",
    )
    parser.add_argument("--train-only", action="store_true", help="train (or reuse) and stop")
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csbot.settings")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import django

    django.setup()
    from drafting import localserver

    started = time.monotonic()
    data = dstc11_data(args) if args.dataset == "dstc11" else sgd_data(args)
    adapter_dir, training = train(args, data)
    name = adapter_name(args.dataset, training)
    result: dict[str, Any] = {
        "dataset": args.dataset,
        "seed": args.seed,
        "split_shares": list(SHARES) if args.dataset == "dstc11" else "the file's own",
        "sizes": data["sizes"],
        "caps": {"train": args.train_max, "dev": args.dev_max, "test": args.test_max},
        "max_tokens": args.max_tokens,
        "adapter": name,
        "training": {k: v for k, v in training.items() if k != "loss_curve"},
    }
    if args.train_only:
        print(json.dumps(result, indent=1))
        return
    target = ROOT / "bench" / "results" / f"distill_{args.dataset}.json"
    if args.latency_only and target.is_file():
        # Only the latency is measured again: the evaluation kept from the last full run
        # (of the same adapter: the data and hyper-parameters' hash says so).
        kept = json.loads(target.read_text())
        if kept.get("adapter") != name:
            sys.exit(f"{target} holds adapter {kept.get('adapter')}, not {name}: run in full")
        result = kept | {k: v for k, v in result.items() if k != "training"}
    url = localserver.ensure_server(
        port=args.port, lora_modules={name: str(adapter_dir)}, progress=log
    )
    base_name = localserver.SERVED_MODEL_NAME
    try:
        if name not in (localserver.probe(url) or []):
            localserver.load_adapter(url, name=name, path=str(adapter_dir))
        if not args.latency_only:
            t0 = time.monotonic()
            if args.dataset == "dstc11":
                result["evaluation"] = evaluate_dstc11(args, data, url=url, adapter=name)
            else:
                result["evaluation"] = evaluate_sgd(args, data, url=url, adapter=name)
            result["evaluation_seconds"] = round(time.monotonic() - t0, 1)
        if args.latency or args.latency_only:
            prompts = prompts_for_latency(args, data)
            arms: list[Arm] = [("base", url, base_name), ("adapter_lora", url, name)]
            if not args.no_merged:
                arms.append(("adapter_merged", merged_server(args, adapter_dir, name), name))
            if not args.no_lora_reference:
                # The base on a server without LoRA, up at the same time and asked in the same
                # rounds: what the base costs when nothing is served beside it, measured
                # under the same load as the others.
                plain = localserver.ensure_server(port=args.port + 2, lora=False, progress=log)
                arms.append(("base_without_lora", plain, base_name))
            log(f"latency: {len(prompts)} prompts, {', '.join(a[0] for a in arms)}, sequential")
            t0 = time.monotonic()
            lat = latency(arms, prompts, args.max_tokens, pause=args.pause)
            lat["pause_seconds"] = args.pause
            lat["overhead_vs_base"] = {
                label: overhead(lat["base"], lat[label]) for label, _, _ in arms[1:]
            }
            if "base_without_lora" in lat:
                lat["overhead_vs_base_without_lora"] = {
                    label: overhead(lat["base_without_lora"], lat[label])
                    for label, _, _ in arms
                    if label != "base_without_lora"
                }
            lat["seconds"] = round(time.monotonic() - t0, 1)
            result["latency"] = lat
    finally:
        for port in (args.port, args.port + 1, args.port + 2):
            localserver.stop_server(port)
    result["seconds"] = round(time.monotonic() - started, 1)
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
