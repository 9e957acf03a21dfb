"""Drafts with passages vs without, on the same DSTC11 track 5 turns, with the local model.

    .venv/bin/python bench/grounding_rouge.py [--n 40] [--seed 0] [--bootstrap 10000]

The question (issue 16): does grounding a draft in the team's knowledge base bring it closer to
what a human agent answered? Steps:

1. DSTC11 track 5 (../shared/data/dstc11_track5, read in place): the first --n knowledge-seeking
   turns of the validation half (gold `target`), with their human responses and the entities
   their GOLD snippets belong to;
2. those entities' knowledge is imported into a scratch team (--team, "bench-grounding";
   re-running replaces its knowledge) through the product's import path, one article per
   entity and each FAQ or review sentence its own chunk: the mapping of `manage.py
   knowledge_eval` (its `articles_of`, reused), then embedded in process;
3. the team's one policy asks the local model only (vLLM, SmolLM2-135M-Instruct: LOCAL_LLM_URL,
   else the CPU server on LOCAL_LLM_PORT, started when it is not running), grounds drafts,
   and under the no-knowledge rule "escalate" (with one tier: the model is asked with what
   was found), so both conditions always get a model's draft;
4. each turn is drafted twice through drafting.services.draft_preview (the worker's own
   retrieval, prompt and cascade; nothing stored), with passages (grounded=True) and without
   (grounded=False), tier 1;
5. ROUGE-L F (drafting.evaluation.dstc11.rouge_l) of each draft against the human response;
   the mean per condition, the mean paired difference (grounded − ungrounded) with a seeded
   percentile bootstrap 95 % confidence interval over turns, n, and the citation rate (share
   of grounded drafts citing a passage they were shown). A draft that failed (no text) scores
   0 and is counted under `failures`.

One JSON object on stdout; progress on stderr. The retrieval here is the product's default
(no trained re-ranker or detector for the scratch team): the passages are what a team gets
before training anything, and the snippets the turn needs may be missing from them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "csbot.settings")
django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from csbot.models import Team  # noqa: E402
from drafting import knowledge, localserver  # noqa: E402
from drafting.evaluation.dstc11 import load_turns, rouge_l, snippet_key  # noqa: E402
from drafting.management.commands.knowledge_eval import articles_of  # noqa: E402
from drafting.models import (  # noqa: E402
    CascadePolicy,
    CascadeTier,
    EndpointPrice,
    KnowledgeArticle,
    ModelEndpoint,
)
from drafting.services import DraftPreview, draft_preview  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "dstc11_track5"
SYSTEM_PROMPT = (
    "You are a friendly agent of a hotel and restaurant booking service in Cambridge. Answer "
    "the customer's last message in one or two short sentences."
)
# The local tier's price as seed_demo sets it (a draft's cost is its share of GPU time).
GPU_HOUR_USD = Decimal("0.80")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def scratch_team(name: str, *, base_url: str, max_tokens: int) -> Team:
    """The team, its local endpoint and its one-tier grounding policy (created or reset)."""
    team, _ = Team.objects.get_or_create(name=name)
    endpoint, _ = ModelEndpoint.objects.update_or_create(
        name=f"{name}-local",
        defaults={
            "kind": ModelEndpoint.Kind.LOCAL,
            "base_url": base_url,
            "model_name": localserver.SERVED_MODEL_NAME,
            "timeout_seconds": 120,
            "max_output_tokens": max_tokens,
            "enabled": True,
        },
    )
    if not endpoint.prices.exists():
        EndpointPrice.objects.create(
            endpoint=endpoint,
            effective_from=timezone.now(),
            gpu_hour_usd=GPU_HOUR_USD,
        )
    CascadePolicy.objects.filter(team=team).update(active=False)
    policy, _ = CascadePolicy.objects.update_or_create(
        team=team,
        name="bench-grounding",
        defaults={
            "system_prompt": SYSTEM_PROMPT,
            "active": True,
            "grounding": True,
            "no_knowledge_rule": CascadePolicy.NoKnowledge.ESCALATE,
            "holdout_share": Decimal(0),
            "explore_share": Decimal(0),
        },
    )
    CascadeTier.objects.filter(policy=policy).delete()
    CascadeTier.objects.create(policy=policy, position=1, endpoint=endpoint, threshold=Decimal(0))
    return team


def import_entities(team: Team, raw: dict[str, Any], entities: set[tuple[str, int]]) -> int:
    """The entities' knowledge as the team's only articles, chunked and embedded; chunks made."""
    subset: dict[str, Any] = {}
    for domain, entity_id in sorted(entities):
        subset.setdefault(domain, {})[str(entity_id)] = raw[domain][str(entity_id)]
    records, positions = articles_of(subset)
    report = knowledge.knowledge_import(
        team=team, files=[("dstc11_entities.json", json.dumps(records).encode())], ring=False
    )
    if not report.ok:
        raise SystemExit("; ".join(str(e) for e in report.errors))
    knowledge.articles_prune(team=team, keep=set(positions))
    ids = list(KnowledgeArticle.objects.filter(team=team).values_list("pk", flat=True))
    for n, article_id in enumerate(ids, start=1):
        knowledge.chunks_index(article_id=article_id)
        say(f"embedded {n}/{len(ids)} articles")
    return sum(len(keys) for keys in positions.values())


def bootstrap_ci(diffs: np.ndarray, *, rounds: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean of paired differences (turns resampled)."""
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(rounds, len(diffs)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40, help="knowledge-seeking turns (first N)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--team", default="bench-grounding")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=10_000)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()
    started = time.monotonic()

    turns = load_turns(args.data / "val_half_logs.json", args.data / "val_half_labels.json")
    chosen = [t for t in turns if t.label and t.label.get("target")][: args.n]
    raw = json.loads((args.data / "knowledge.json").read_text(encoding="utf-8"))
    entities = {
        (key[0], key[1])
        for turn in chosen
        for key in (snippet_key(k) for k in (turn.label or {}).get("knowledge", []))
    }
    base_url = localserver.ensure_server(
        url=settings.LOCAL_LLM_URL or None, port=settings.LOCAL_LLM_PORT, progress=say
    )
    team = scratch_team(args.team, base_url=base_url, max_tokens=args.max_tokens)
    chunks = import_entities(team, raw, entities)
    say(f"{len(chosen)} turns, {len(entities)} entities, {chunks} chunks; drafting")

    rows: list[dict[str, Any]] = []
    for i, turn in enumerate(chosen, start=1):
        thread = [
            {"role": "customer" if t["speaker"] == "U" else "agent", "text": t["text"]}
            for t in turn.dialogue
        ]
        reference = str((turn.label or {}).get("response", ""))
        drafts: dict[str, DraftPreview] = {}
        for grounded in (True, False):
            drafts["grounded" if grounded else "ungrounded"] = draft_preview(
                team_id=team.pk, thread=thread, grounded=grounded, tier=1
            )
        g, u = drafts["grounded"], drafts["ungrounded"]
        shown = g.attempts[-1].passages_shown if g.attempts else 0
        row = {
            "rouge_grounded": rouge_l(reference, g.text),
            "rouge_ungrounded": rouge_l(reference, u.text),
            "cited": bool(g.citations),
            "passages_shown": shown,
            "gold_entity_in_passages": bool(
                {p.article_title for p in g.passages[:shown]}
                & {
                    str(raw[k[0]][str(k[1])].get("name"))
                    for k in (snippet_key(x) for x in (turn.label or {}).get("knowledge", []))
                }
            ),
            "failed_grounded": not g.text,
            "failed_ungrounded": not u.text,
            "cost": g.total_cost + u.total_cost,
            "latency_ms": sum(a.latency_ms for a in g.attempts + u.attempts),
        }
        rows.append(row)
        say(
            f"{i}/{len(chosen)} rouge {row['rouge_grounded']:.3f} vs "
            f"{row['rouge_ungrounded']:.3f}, cited {row['cited']}, {row['latency_ms']} ms"
        )

    grounded_scores = np.array([r["rouge_grounded"] for r in rows])
    bare_scores = np.array([r["rouge_ungrounded"] for r in rows])
    diffs = grounded_scores - bare_scores
    low, high = bootstrap_ci(diffs, rounds=args.bootstrap, seed=args.seed)
    n = len(rows)
    print(
        json.dumps(
            {
                "bench": "grounding_rouge",
                "data": str(args.data),
                "model": localserver.SERVED_MODEL_NAME,
                "n": n,
                "entities": len(entities),
                "chunks": chunks,
                "rouge_l": {
                    "grounded_mean": float(grounded_scores.mean()) if n else None,
                    "ungrounded_mean": float(bare_scores.mean()) if n else None,
                    "difference_mean": float(diffs.mean()) if n else None,
                    "difference_ci95": [low, high] if n else None,
                    "bootstrap": {"rounds": args.bootstrap, "seed": args.seed},
                    "grounded_better": int((diffs > 0).sum()),
                    "ungrounded_better": int((diffs < 0).sum()),
                },
                "citation_rate": sum(r["cited"] for r in rows) / n if n else None,
                "mean_passages_shown": sum(r["passages_shown"] for r in rows) / n if n else None,
                "gold_entity_in_passages_rate": (
                    sum(r["gold_entity_in_passages"] for r in rows) / n if n else None
                ),
                "failures": {
                    "grounded": sum(r["failed_grounded"] for r in rows),
                    "ungrounded": sum(r["failed_ungrounded"] for r in rows),
                },
                "cost_usd": str(sum((r["cost"] for r in rows), Decimal(0))),
                "model_latency_ms_total": sum(r["latency_ms"] for r in rows),
                "max_output_tokens": args.max_tokens,
                "seconds": round(time.monotonic() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
