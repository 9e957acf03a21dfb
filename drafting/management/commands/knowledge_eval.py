"""`manage.py knowledge_eval --knowledge K.json --logs L.json [--labels Y.json] --output PRED.json
[--generate N] [--json] [--train N_TRAIN] [--seed S] [--team NAME]`: DSTC11 track 5 through the
product's own paths.

Steps:
1. Knowledge: one article per entity (external id "domain:entity id", title = the entity's
   name), its snippets (each FAQ as "question answer", then each review sentence, in id order)
   as an HTML body where every snippet is its own section under an <h1> repeating the title:
   the chunker never merges two sections, and a heading equal to the title is left out of the
   chunk's heading path, so each snippet is exactly one chunk with an empty heading, and its
   position in the article is its place in that order (the mapping chunk -> snippet is
   article external id + position, checked against the chunk's text after the import).
   Imported with drafting.knowledge.knowledge_import (a JSON file of article records, all or
   nothing) into a scratch team (default "dstc11-eval"; its articles not in the file are
   deleted, so re-running replaces its knowledge idempotently) and embedded here, as
   `knowledge_import --index-now` does.
2. Labels (with --labels): N_TRAIN labelled turns, 70 % knowledge-seeking and the rest not,
   drawn as whole dialogues with the seed (an instance is a dialogue cut at a customer turn;
   instances sharing their first two turns are one dialogue; dialogues are taken in a seeded
   random order, each only when all its instances fit the two quotas, until both are met or
   none is left), become the team's KnowledgeLabel rows (the thread and turn, the gold
   snippets' chunks), replacing the team's earlier labels.
3. Training through the product: drafting.learning.knowledge.knowledge_detector_train and
   passage_reranker_train, both activated.
4. Prediction for every turn through the draft path's functions: the team's detector
   (`knowledge_detector(...).probability`, its threshold) gives `target`; retrieval with the
   team's re-ranker (`retrieve(..., reranker=passage_reranker(...))`, the earlier turns as the
   thread, k = EVAL_PASSAGES) gives `knowledge` for the turns predicted to need it. A turn
   that names no article is served by the hybrid search without the re-ranker (retrieve's
   fallback); it is scored as the draft path grounds on it (`drafting.services`): its best
   KNOWLEDGE_PASSAGES at KNOWLEDGE_MIN_SIMILARITY (`grounding.relevant`), not EVAL_PASSAGES
   of them, which only bound the re-ranker's own cut. PRED.json
   has a prediction for every turn (training turns included, so the file is complete); the
   printed scores are over the turns NOT used for training only (drafting.evaluation.dstc11
   `scores`): end to end, selection with the gold detection, and for scale the hybrid search
   without the re-ranker (its best 4 passages, gold detection).
5. `--generate N`: a reply for the first N turns predicted to need knowledge, through
   drafting.services.draft_preview with the team's active policy (the scratch team needs
   one with the local model), scored by ROUGE-L.
6. `--model NAME` (repeatable; with `--generate N`): instead of the team's policy, each NAME
   drafts the same turns, through draft_preview with a policy of its own (`model_policy`: one
   tier, the endpoint called NAME, or else the scratch team's LOCAL endpoint serving the model
   or adapter NAME at `--llm-url`, default the local server; EVAL_SYSTEM_PROMPT). The turns:
   with labels, the first N not used for training whose label has a human response; without,
   the first N predicted to need knowledge. Each model's replies are scored against the human
   responses by ROUGE-L and by the cosine similarity of the product's embedder (EMBEDDING_
   BACKEND; skipped with a note when it is off): n, means with 95 % intervals and, for two
   models, the paired difference (second minus first) with its 95 % interval (`compare`).
   `--concurrency C` drafts C at a time (vLLM batches them); PRED.json's `response` is the
   first model's reply.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

from csbot.models import Team
from drafting import knowledge
from drafting.engine.embeddings import Embedder, EmbeddingError, embedder
from drafting.engine.grounding import relevant
from drafting.engine.retrieval import Passage, retrieve
from drafting.engine.vectors import QueryVector
from drafting.evaluation.dstc11 import SnippetKey, Turn, load_turns, scores, snippet_key
from drafting.learning.knowledge import (
    knowledge_detector,
    knowledge_detector_train,
    label_text,
    passage_reranker,
    passage_reranker_train,
)
from drafting.models import (
    CascadePolicy,
    CascadeTier,
    KnowledgeArticle,
    KnowledgeChunk,
    KnowledgeLabel,
    ModelEndpoint,
)

# Passages kept at most per turn: the re-ranker's threshold decides; this only bounds it
# (the research's selections are rarely over 10 snippets).
EVAL_PASSAGES = 20
BASELINE_PASSAGES = 4
KNOWLEDGE_SHARE = 0.7
# The system prompt of the policies `--model` drafts through (one per model, made here): the
# same for every model compared, and what bench/distill.py builds its training prompts with.
EVAL_SYSTEM_PROMPT = (
    "You are a friendly, concise customer-support agent. Answer the customer's last message "
    "in one to three sentences."
)
# The endpoints `--model` makes: long enough for a loaded CPU server answering several drafts at
# once, and replies about as long as the datasets' human ones.
EVAL_TIMEOUT_SECONDS = 300
EVAL_MAX_TOKENS = 80
# The two-sided 95 % normal quantile; the intervals use Student's t below 30 pairs.
Z95 = 1.96


def entity_snippets(entity: dict[str, Any], domain: str, entity_id: int) -> list[SnippetKey]:
    """An entity's snippets in the article's order: FAQs, then review sentences, by id."""
    keys: list[SnippetKey] = []
    for faq_id in sorted((entity.get("faqs") or {}), key=int):
        keys.append((domain, entity_id, "faq", int(faq_id), None))
    for review_id in sorted((entity.get("reviews") or {}), key=int):
        sentences = entity["reviews"][review_id].get("sentences") or {}
        for sentence_id in sorted(sentences, key=int):
            keys.append((domain, entity_id, "review", int(review_id), int(sentence_id)))
    return keys


def snippet_text(entity: dict[str, Any], key: SnippetKey) -> str:
    if key[2] == "faq":
        faq = entity["faqs"][str(key[3])]
        return f"{faq.get('question', '')} {faq.get('answer', '')}".strip()
    return str(entity["reviews"][str(key[3])]["sentences"][str(key[4])]).strip()


def articles_of(raw: dict[str, Any]) -> tuple[list[dict[str, str]], dict[str, list[SnippetKey]]]:
    """The import's article records and, per external id, the snippet of each position."""
    records, positions = [], {}
    for domain, entities in sorted(raw.items()):
        for entity_id, entity in sorted(entities.items(), key=lambda e: int(e[0])):
            title = str(entity.get("name") or f"{domain} {entity_id}")
            external_id = f"{domain}:{entity_id}"
            keys = [
                k
                for k in entity_snippets(entity, domain, int(entity_id))
                if snippet_text(entity, k)
            ]
            heading = f"<h1>{html.escape(title)}</h1>"
            body = "".join(f"{heading}<p>{html.escape(snippet_text(entity, k))}</p>" for k in keys)
            records.append(
                {"external_id": external_id, "title": title, "body": body, "format": "html"}
            )
            positions[external_id] = keys
    return records, positions


def dialogue_id(turn: Turn) -> str:
    head = " || ".join(t["text"] for t in turn.dialogue[:2])
    return hashlib.md5(head.encode(), usedforsecurity=False).hexdigest()


def training_draw(turns: Sequence[Turn], *, n_train: int, seed: int) -> list[int]:
    """Whole dialogues, in a seeded random order, until KNOWLEDGE_SHARE of `n_train`
    knowledge-seeking and the rest other instances are drawn (see the module docstring)."""
    want_pos = round(n_train * KNOWLEDGE_SHARE)
    want_neg = n_train - want_pos
    dialogues: dict[str, list[int]] = {}
    for i, turn in enumerate(turns):
        dialogues.setdefault(dialogue_id(turn), []).append(i)
    order = sorted(dialogues)
    order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    chosen: list[int] = []
    pos = neg = 0
    for d in order:
        if pos >= want_pos and neg >= want_neg:
            break
        members = dialogues[d]
        p = sum(1 for i in members if (turns[i].label or {}).get("target"))
        if pos + p <= want_pos and neg + len(members) - p <= want_neg:
            chosen += members
            pos, neg = pos + p, neg + len(members) - p
    return sorted(chosen)


def knowledge_of(keys: Sequence[SnippetKey]) -> list[dict[str, Any]]:
    out = []
    for domain, entity_id, doc_type, doc_id, sentence in keys:
        item: dict[str, Any] = {
            "domain": domain,
            "entity_id": entity_id,
            "doc_type": doc_type,
            "doc_id": doc_id,
        }
        if doc_type == "review":
            item["sent_id"] = sentence
        out.append(item)
    return out


def as_drafted(passages: list[Passage]) -> list[Passage]:
    """What the draft would be grounded on: the re-ranker's passages as its cut-off kept them
    (drafting.services keeps them too, up to KNOWLEDGE_PASSAGES in the prompt); the hybrid
    search's (no article named) cut as the draft path cuts them, its best KNOWLEDGE_PASSAGES
    at KNOWLEDGE_MIN_SIMILARITY."""
    reranked = [p for p in passages if p.reranked]
    if reranked:
        return reranked
    return relevant(
        passages[: settings.KNOWLEDGE_PASSAGES], min_similarity=settings.KNOWLEDGE_MIN_SIMILARITY
    )


def split_turn(turn: Turn) -> tuple[list[str], str]:
    """The earlier turns' texts (oldest first) and the customer turn to answer."""
    return [t["text"] for t in turn.dialogue[:-1]], turn.dialogue[-1]["text"]


# --- `--model`: the same turns drafted by each model --------------------------------------------


def model_policy(team: Team, name: str, *, url: str) -> CascadePolicy:
    """The team's inactive policy that drafts with `name` alone (made or brought up to date).

    Its one tier is the endpoint called `name` when there is one; else the team's LOCAL
    endpoint "<team>: <name>" asking the server at `url` for the model `name` (a base model or
    an adapter vLLM serves under that name). EVAL_SYSTEM_PROMPT; grounding with the escalate
    rule (one tier: the model always answers, with whatever passages were found); no routing,
    exploration, hold-out or withholding, so the preview is the model's plain draft.
    """
    endpoint = ModelEndpoint.objects.filter(name=name).first()
    if endpoint is None:
        endpoint, _ = ModelEndpoint.objects.update_or_create(
            name=f"{team.name}: {name}"[:120],
            defaults={
                "kind": ModelEndpoint.Kind.LOCAL,
                "base_url": url,
                "model_name": name,
                "timeout_seconds": EVAL_TIMEOUT_SECONDS,
                "max_output_tokens": EVAL_MAX_TOKENS,
            },
        )
    policy, _ = CascadePolicy.objects.update_or_create(
        team=team,
        name=f"eval: {name}"[:120],
        defaults={
            "active": False,
            "system_prompt": EVAL_SYSTEM_PROMPT,
            "grounding": True,
            "no_knowledge_rule": CascadePolicy.NoKnowledge.ESCALATE,
            "holdout_share": 0,
            "explore_share": 0,
            "routing": False,
            "withhold_negative": False,
        },
    )
    policy.tiers.exclude(position=1).delete()
    CascadeTier.objects.update_or_create(
        policy=policy, position=1, defaults={"endpoint": endpoint, "threshold": 0}
    )
    return policy


def drafts_for(
    team: Team,
    policies: dict[str, CascadePolicy],
    threads: Sequence[list[dict[str, str]]],
    *,
    grounded: bool,
    concurrency: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[str]]:
    """Each policy's draft_preview of each thread ("" where it gave none), per model name.

    With `concurrency` > 1 the previews run in threads (each closes its own database
    connection), the models' requests interleaved so both meet the same server load."""
    from drafting import services

    jobs = [(name, i) for i in range(len(threads)) for name in policies]
    answers = {name: [""] * len(threads) for name in policies}
    failures: dict[str, int] = dict.fromkeys(policies, 0)

    def one(job: tuple[str, int]) -> tuple[str, int, str, str]:
        name, i = job
        try:
            result = services.draft_preview(
                team_id=team.pk, thread=threads[i], grounded=grounded, policy_id=policies[name].pk
            )
            return name, i, result.text, result.error
        finally:
            if concurrency > 1:
                connection.close()

    def record(outcome: tuple[str, int, str, str], done: int) -> None:
        name, i, text, error = outcome
        answers[name][i] = text
        if error or not text:
            failures[name] += 1
        if progress is not None and (done % 10 == 0 or done == len(jobs)):
            progress(f"drafted {done}/{len(jobs)} ({failures} without a draft)")

    if concurrency > 1:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for done, outcome in enumerate(pool.map(one, jobs), start=1):
                record(outcome, done)
    else:
        for done, job in enumerate(jobs, start=1):
            record(one(job), done)
    return answers


def mean_interval(values: Sequence[float]) -> dict[str, float | int | None]:
    """The mean and its two-sided 95 % interval (Student's t under 30 values, else normal)."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "low": None, "high": None}
    mean = float(np.mean(values))
    if n < 2:
        return {"n": n, "mean": round(mean, 4), "low": None, "high": None}
    if n < 30:
        from scipy.stats import t

        quantile = float(t.ppf(0.975, n - 1))
    else:
        quantile = Z95
    half = quantile * float(np.std(values, ddof=1)) / math.sqrt(n)
    return {
        "n": n,
        "mean": round(mean, 4),
        "low": round(mean - half, 4),
        "high": round(mean + half, 4),
    }


def compare(
    references: Sequence[str], answers: dict[str, list[str]], embed: Embedder | None
) -> dict[str, Any]:
    """Each model's replies against the human `references` (same order): ROUGE-L and
    embedding cosine similarity, means with 95 % intervals; for two models the paired
    difference, second minus first. A model that gave no draft scores 0 on both (a missing
    draft helps nobody)."""
    from drafting.evaluation.dstc11 import rouge_l

    note = ""
    ref_vectors = None
    if embed is None:
        note = "no embedder (EMBEDDING_BACKEND=none): similarity skipped"
    else:
        try:
            ref_vectors = embed.embed(list(references))
        except EmbeddingError as error:
            note = f"the embedder failed ({error}): similarity skipped"
    per_model: dict[str, dict[str, list[float]]] = {}
    for name, texts in answers.items():
        rouge = [rouge_l(r, a) if a else 0.0 for r, a in zip(references, texts, strict=True)]
        scores = {"rouge_l": rouge}
        if ref_vectors is not None and embed is not None:
            vectors = embed.embed([a or " " for a in texts])
            similarity = np.sum(vectors * ref_vectors, axis=1)
            scores["similarity"] = [
                float(s) if a else 0.0 for s, a in zip(similarity, texts, strict=True)
            ]
        per_model[name] = scores
    result: dict[str, Any] = {
        "n": len(references),
        "embedder": getattr(embed, "name", None) if ref_vectors is not None else None,
        "models": {
            name: {
                "drafted": sum(1 for a in answers[name] if a),
                **{metric: mean_interval(values) for metric, values in scores.items()},
            }
            for name, scores in per_model.items()
        },
    }
    if note:
        result["note"] = note
    if len(per_model) == 2:
        first, second = list(per_model)
        result["difference"] = {
            "of": f"{second} - {first}",
            **{
                metric: mean_interval(
                    [b - a for a, b in zip(values, per_model[second][metric], strict=True)]
                )
                for metric, values in per_model[first].items()
            },
        }
    return result


class Command(BaseCommand):
    help = "Evaluate knowledge detection and selection on DSTC11 track 5 through the product."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--knowledge", required=True, type=Path)
        parser.add_argument("--logs", required=True, type=Path)
        parser.add_argument("--labels", type=Path)
        parser.add_argument("--output", required=True, type=Path)
        parser.add_argument("--generate", type=int, default=0)
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--train", type=int, default=100, help="labelled turns to train on")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--team", default="dstc11-eval", help="the scratch team's name")
        parser.add_argument(
            "--model",
            action="append",
            default=[],
            help="draft with this endpoint or served model/adapter (repeatable; see step 6)",
        )
        parser.add_argument(
            "--llm-url", default="", help="the server a --model not named as an endpoint is on"
        )
        parser.add_argument("--concurrency", type=int, default=1, help="drafts at a time")

    def progress(self, what: str, done: int, total: int) -> None:
        share = done / max(total, 1)
        bar = "#" * int(share * 30)
        self.stderr.write(f"\r{what:<12} [{bar:<30}] {done}/{total} ", ending="")
        if done >= total:
            self.stderr.write("")
        self.stderr.flush()

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        for name in ("knowledge", "logs", "labels"):
            path = options[name]
            if path is not None and not path.is_file():
                raise CommandError(f"--{name}: {path} is no file")
        raw = json.loads(options["knowledge"].read_text(encoding="utf-8"))
        turns = load_turns(options["logs"], options["labels"])
        labelled = options["labels"] is not None
        team, _ = Team.objects.get_or_create(name=options["team"])
        chunk_key = self.import_knowledge(team, raw)
        key_chunk = {k: c for c, k in chunk_key.items()}
        train: list[int] = []
        trained: list[str] = []
        if labelled:
            train = training_draw(turns, n_train=options["train"], seed=options["seed"])
            self.store_labels(team, turns, train, key_chunk)
            for name, train_fn in (
                ("detector", knowledge_detector_train),
                ("re-ranker", passage_reranker_train),
            ):

                def show(done: int, total: int, name: str = name) -> None:
                    self.progress(name, done, total)

                outcome = train_fn(team, seed=options["seed"], progress=show)
                trained.append(outcome.message)
                if outcome.classifier is None:
                    raise CommandError(outcome.message)
        detector = knowledge_detector(team.pk)
        reranker = passage_reranker(team.pk)
        if detector is None or reranker is None:
            raise CommandError(f"team {team.name} has no trained detector and re-ranker")
        predictions, gold_selection, baseline = [], [], []
        timings: list[float] = []
        for i, turn in enumerate(turns):
            thread, text = split_turn(turn)
            query = QueryVector(text)
            t0 = time.monotonic()
            need = detector.probability(query, thread)
            target = need is not None and detector.needs(need)
            gold_target = bool((turn.label or {}).get("target"))
            keys: list[SnippetKey] = []
            if target or gold_target:
                passages = as_drafted(
                    retrieve(
                        team_id=team.pk,
                        query=query,
                        thread=thread,
                        k=EVAL_PASSAGES,
                        reranker=reranker,
                    )
                )
                keys = [chunk_key[p.chunk_id] for p in passages if p.chunk_id in chunk_key]
            timings.append(time.monotonic() - t0)
            predictions.append(
                {"target": target, "knowledge": knowledge_of(keys) if target else []}
            )
            if labelled:
                gold_selection.append(
                    {"target": gold_target, "knowledge": knowledge_of(keys) if gold_target else []}
                )
                base: list[SnippetKey] = []
                if gold_target:
                    found = retrieve(
                        team_id=team.pk, query=QueryVector(text), thread=thread, k=BASELINE_PASSAGES
                    )
                    base = [chunk_key[p.chunk_id] for p in found if p.chunk_id in chunk_key]
                baseline.append({"target": gold_target, "knowledge": knowledge_of(base)})
            self.progress("predicting", i + 1, len(turns))
        if options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        comparison: dict[str, Any] | None = None
        if options["model"]:
            generated, comparison = self.compare_models(
                team, turns, predictions, train=train, labelled=labelled, options=options
            )
        else:
            generated = self.generate(team, turns, predictions, options["generate"])
        options["output"].write_text(json.dumps(predictions, indent=1), encoding="utf-8")
        report: dict[str, Any] = {
            "team": team.name,
            "turns": len(turns),
            "articles": len({k[:2] for k in chunk_key.values()}),
            "chunks": len(chunk_key),
            "trained": trained,
            "training_turns": len(train),
            "output": str(options["output"]),
            "prediction_ms_p50": round(sorted(timings)[len(timings) // 2] * 1000, 1)
            if timings
            else None,
            "generated": generated,
            "seconds": round(time.monotonic() - started, 1),
        }
        if labelled:
            rest = [i for i in range(len(turns)) if i not in set(train)]
            gold = [turns[i].label or {} for i in rest]
            end_to_end = scores(gold, [predictions[i] for i in rest])
            report["scored_on"] = (
                f"{len(rest)} turns not used for training "
                f"({sum(1 for g in gold if g.get('target'))} knowledge-seeking)"
            )
            report["detection"] = end_to_end["detection"]
            report["selection"] = end_to_end["selection"]
            report["selection_gold_detection"] = scores(gold, [gold_selection[i] for i in rest])[
                "selection"
            ]
            report["baseline_hybrid_top4_gold_detection"] = scores(
                gold, [baseline[i] for i in rest]
            )["selection"]
            if generated and not options["model"]:
                report["generation"] = end_to_end["generation"]
        if comparison is not None:
            report["comparison"] = comparison
        if options["json"]:
            self.stdout.write(json.dumps(report))
        else:
            for name, value in report.items():
                self.stdout.write(f"{name}: {value}")

    def import_knowledge(self, team: Team, raw: dict[str, Any]) -> dict[int, SnippetKey]:
        """Import (idempotently) and embed; chunk id -> snippet key."""
        records, positions = articles_of(raw)
        data = json.dumps(records).encode()
        report = knowledge.knowledge_import(
            team=team,
            files=[("dstc11_knowledge.json", data)],
            ring=False,
            progress=lambda s: self.progress("importing", s.done, s.total),
        )
        if not report.ok:
            raise CommandError("; ".join(str(e) for e in report.errors))
        knowledge.articles_prune(team=team, keep=set(positions))
        ids = list(KnowledgeArticle.objects.filter(team=team).values_list("pk", flat=True))
        for n, article_id in enumerate(ids, start=1):
            knowledge.chunks_index(article_id=article_id)
            self.progress("embedding", n, len(ids))
        mapping: dict[int, SnippetKey] = {}
        rows = KnowledgeChunk.objects.filter(team=team).values_list(
            "pk", "article__external_id", "position", "text"
        )
        for pk, external_id, position, text in rows:
            keys = positions.get(external_id, [])
            if position >= len(keys):
                raise CommandError(f"{external_id}: chunk {position} has no snippet")
            key = keys[position]
            domain, entity_id = key[0], str(key[1])
            expected = " ".join(snippet_text(raw[domain][entity_id], key).split())
            if " ".join(text.split()) != expected:
                raise CommandError(
                    f"{external_id}: chunk {position} is not its snippet "
                    f"({text[:60]!r} vs {expected[:60]!r})"
                )
            mapping[pk] = key
        return mapping

    def store_labels(
        self,
        team: Team,
        turns: Sequence[Turn],
        train: Sequence[int],
        key_chunk: dict[SnippetKey, int],
    ) -> None:
        with transaction.atomic():
            KnowledgeLabel.objects.filter(team=team).delete()
            for i in train:
                label = turns[i].label or {}
                thread, text = split_turn(turns[i])
                row = KnowledgeLabel.objects.create(
                    team=team,
                    text=label_text(thread=thread, turn=text),
                    needs_knowledge=bool(label.get("target")),
                )
                chunks = [
                    key_chunk[snippet_key(o)]
                    for o in label.get("knowledge") or []
                    if snippet_key(o) in key_chunk
                ]
                if chunks:
                    row.relevant_chunks.set(chunks)

    def compare_models(
        self,
        team: Team,
        turns: Sequence[Turn],
        predictions: list[dict[str, Any]],
        *,
        train: Sequence[int],
        labelled: bool,
        options: dict[str, Any],
    ) -> tuple[int, dict[str, Any]]:
        """Step 6: the chosen turns drafted by every `--model`, scored when labelled."""
        names: list[str] = list(dict.fromkeys(options["model"]))
        n = options["generate"]
        if n <= 0:
            raise CommandError("--model needs --generate N (how many turns to draft)")
        if labelled:
            left_out = set(train)
            chosen = [
                i
                for i, turn in enumerate(turns)
                if i not in left_out and str((turn.label or {}).get("response") or "").strip()
            ][:n]
        else:
            chosen = [i for i, p in enumerate(predictions) if p["target"]][:n]
        from drafting import localserver

        url = options["llm_url"] or (
            settings.LOCAL_LLM_URL or localserver.base_url_for(settings.LOCAL_LLM_PORT)
        )
        policies = {name: model_policy(team, name, url=url) for name in names}
        threads = [
            [
                {"role": "customer" if t["speaker"] == "U" else "agent", "text": t["text"]}
                for t in turns[i].dialogue
            ]
            for i in chosen
        ]
        started = time.monotonic()
        answers = drafts_for(
            team,
            policies,
            threads,
            grounded=True,
            concurrency=options["concurrency"],
            progress=lambda line: self.stderr.write(line),
        )
        for k, i in enumerate(chosen):
            predictions[i]["response"] = answers[names[0]][k]
        comparison: dict[str, Any] = {
            "models": {
                name: {"policy_id": p.pk, "endpoint": p.tiers.get(position=1).endpoint.name}
                for name, p in policies.items()
            },
            "seconds": round(time.monotonic() - started, 1),
        }
        if labelled:
            references = [str((turns[i].label or {})["response"]) for i in chosen]
            scored = compare(references, answers, embedder())
            comparison["scores"] = scored
        return len(chosen), comparison

    def generate(
        self, team: Team, turns: Sequence[Turn], predictions: list[dict[str, Any]], n: int
    ) -> int:
        """Replies for the first `n` turns predicted to need knowledge (draft_preview)."""
        if n <= 0:
            return 0
        from drafting import services

        preview = getattr(services, "draft_preview", None)
        if preview is None:
            raise CommandError("--generate needs drafting.services.draft_preview")
        done = 0
        for i, turn in enumerate(turns):
            if done >= n:
                break
            if not predictions[i]["target"]:
                continue
            thread = [
                {"role": "customer" if t["speaker"] == "U" else "agent", "text": t["text"]}
                for t in turn.dialogue
            ]
            result = preview(team_id=team.pk, thread=thread, grounded=True)
            if result.error:
                self.stderr.write(f"turn {i}: no draft: {result.error}")
            predictions[i]["response"] = result.text
            done += 1
            self.progress("generating", done, n)
        return done
