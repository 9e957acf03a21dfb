"""The knowledge base's write flows: articles and macros in (one at a time from the API, many
from an import), kept indexed for retrieval.

The article row is the truth. Writing an article re-chunks it in the same transaction
(drafting.engine.chunking), keeping the chunk rows, and so their vectors, whose content hash
is unchanged, deleting the vanished ones and inserting the new ones; each new chunk's
`search_vector` is set in SQL before the commit, so text search finds new content at once.
Embedding is the worker's (a doorbell rung on commit with the article's id): until a chunk is
embedded, retrieval finds it by its words only. Nothing on the draft path waits for indexing.
The same external id and content hash change nothing (no version bump, no re-embedding);
tags, link and published state are updated without re-indexing. Retrieval joins the article,
so unpublishing or deleting one takes effect at once.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from csbot.models import Team
from drafting.engine.chunking import (
    ChunkSpec,
    article_hash,
    chunk_article,
    embedding_text,
    search_config,
)
from drafting.engine.embeddings import Embedder, EmbeddingError, embedder
from drafting.engine.knowledge_files import (
    ArticleInput,
    FileError,
    MacroInput,
    article_errors,
    macro_errors,
    parse_files,
)
from drafting.engine.vectors import vector_fields
from drafting.models import Intent, KnowledgeArticle, KnowledgeChunk, Macro

logger = logging.getLogger(__name__)

EMBED_BATCH = 64


class Outcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


class KnowledgeInvalid(ValueError):
    """An article or macro that cannot be written as given: field errors by field name."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class ArticleUpsert:
    article: KnowledgeArticle
    outcome: Outcome
    reindexed: bool  # the content changed: chunks rewritten, new ones await their vectors


@dataclass(frozen=True)
class MacroUpsert:
    macro: Macro
    outcome: Outcome


# --- Articles ---------------------------------------------------------------------------------


def _locked_or_created(
    model: Any, *, team: Team, external_id: str, defaults: dict[str, Any]
) -> tuple[Any, bool]:
    """The team's row with this external id, locked for the rest of the transaction, or a new
    one. Two writers creating the same id at once: the loser's insert fails on the unique
    constraint (in a savepoint) and it locks the winner's row instead."""
    rows = model.objects.select_for_update().filter(team=team, external_id=external_id)
    row = rows.first()
    if row is not None:
        return row, False
    try:
        with transaction.atomic():
            return model.objects.create(team=team, external_id=external_id, **defaults), True
    except IntegrityError:
        return rows.get(), False


def article_upsert(*, team: Team, data: ArticleInput, ring: bool = True) -> ArticleUpsert:
    """Create or update the team's article with `data.external_id`. Steps: validate; lock (or
    create) the row; if the content hash is unchanged, update only what needs no re-indexing
    (tags, link, published); else bump the version and re-chunk in this transaction; after
    commit, ring the worker to embed the new chunks (unless `ring` is off: the caller indexes).
    """
    errors = article_errors(data)
    if errors:
        raise KnowledgeInvalid(errors)
    content_hash = article_hash(
        title=data.title, body=data.body, body_format=data.body_format, language=data.language
    )
    fields = {
        "title": data.title,
        "body": data.body,
        "body_format": data.body_format,
        "language": data.language,
        "tags": list(data.tags),
        "source_url": data.source_url,
        "published": data.published,
    }
    with transaction.atomic():
        article, created = _locked_or_created(
            KnowledgeArticle,
            team=team,
            external_id=data.external_id,
            defaults={**fields, "content_hash": content_hash},
        )
        if created:
            _chunks_sync(article, title_or_language_changed=True)
            outcome, reindexed = Outcome.CREATED, True
        elif article.content_hash == content_hash:
            changed = [
                name
                for name in ("tags", "source_url", "published")
                if getattr(article, name) != fields[name]
            ]
            if not changed:
                return ArticleUpsert(article, Outcome.UNCHANGED, reindexed=False)
            for name in changed:
                setattr(article, name, fields[name])
            article.updated_at = timezone.now()
            article.save(update_fields=[*changed, "updated_at"])
            return ArticleUpsert(article, Outcome.UPDATED, reindexed=False)
        else:
            context_changed = article.title != data.title or article.language != data.language
            for name, value in fields.items():
                setattr(article, name, value)
            article.content_hash = content_hash
            article.version += 1
            article.updated_at = timezone.now()
            article.save()
            _chunks_sync(article, title_or_language_changed=context_changed)
            outcome, reindexed = Outcome.UPDATED, True
        if ring:
            article_id = article.pk
            transaction.on_commit(lambda: _enqueue_index(article_id))
    return ArticleUpsert(article, outcome, reindexed=reindexed)


def _chunks_sync(article: KnowledgeArticle, *, title_or_language_changed: bool) -> None:
    """The article's chunk rows made to match its body. Steps: chunk the body; keep one row per
    unchanged content hash (its vector with it) and delete the rest; move the kept rows to their
    new positions (out of the way first: positions are unique per article and PostgreSQL checks
    that row by row); insert the new chunks; set the search vectors of the new rows (of all, when
    the title or language, which are part of every row's tsvector, changed). A title change also
    clears the kept rows' vectors: the title is part of what is embedded."""
    specs = chunk_article(title=article.title, body=article.body, body_format=article.body_format)
    existing = list(
        KnowledgeChunk.objects.filter(article=article).only("pk", "position", "content_hash")
    )
    by_hash: dict[str, list[KnowledgeChunk]] = {}
    for row in existing:
        by_hash.setdefault(row.content_hash, []).append(row)
    kept: list[KnowledgeChunk] = []
    new: list[ChunkSpec] = []
    for spec in specs:
        rows = by_hash.get(spec.content_hash)
        if rows:
            row = rows.pop(0)
            row.position = spec.position
            kept.append(row)
        else:
            new.append(spec)
    vanished = [row.pk for rows in by_hash.values() for row in rows]
    if vanished:
        KnowledgeChunk.objects.filter(pk__in=vanished).delete()
    if kept:
        offset = max(len(specs), max(row.position for row in existing) + 1)
        ids = [row.pk for row in kept]
        KnowledgeChunk.objects.filter(pk__in=ids).update(position=F("position") + offset)
        KnowledgeChunk.objects.bulk_update(kept, ["position"])
    KnowledgeChunk.objects.bulk_create(
        KnowledgeChunk(
            article=article,
            team_id=article.team_id,
            position=spec.position,
            heading=spec.heading,
            text=spec.text,
            content_hash=spec.content_hash,
        )
        for spec in new
    )
    if title_or_language_changed and kept:
        KnowledgeChunk.objects.filter(article=article).update(
            embedding=None, embedding_model="", embedding_dimensions=None
        )
    _search_vectors_set(article, only_missing=not title_or_language_changed)


def _search_vectors_set(article: KnowledgeArticle, *, only_missing: bool) -> None:
    """Title and heading weigh more (A) than the text (B); the article's language picks the
    stemmer (drafting.engine.chunking.search_config: a fixed set of names)."""
    chunk = KnowledgeChunk._meta.db_table
    sql = (
        f"UPDATE {chunk} SET search_vector = "  # noqa: S608 - table name from the model
        "setweight(to_tsvector(%s::regconfig, %s || ' ' || heading), 'A') || "
        "setweight(to_tsvector(%s::regconfig, text), 'B') "
        "WHERE article_id = %s"
    )
    if only_missing:
        sql += " AND search_vector IS NULL"
    config = search_config(article.language)
    with connection.cursor() as cursor:
        cursor.execute(sql, [config, article.title, config, article.pk])


def article_delete(*, team: Team, external_id: str) -> bool:
    """Delete the team's article (and its chunks); False if it has none with this id. Drafts
    that cited it keep their passages' text (DraftPassage keeps a copy)."""
    deleted, _ = KnowledgeArticle.objects.filter(team=team, external_id=external_id).delete()
    return deleted > 0


def articles_prune(*, team: Team, keep: Collection[str]) -> int:
    """Delete the team's articles whose external id is not in `keep` (a full sync: what the
    source no longer has goes, as article_delete does it); how many articles went."""
    _, per_model = KnowledgeArticle.objects.filter(team=team).exclude(external_id__in=keep).delete()
    return per_model.get(KnowledgeArticle._meta.label, 0)


# --- Macros -----------------------------------------------------------------------------------


def macro_hash(*, title: str, body: str) -> str:
    """Macro.content_hash: what its vector is made from."""
    return hashlib.sha256(f"{title.strip()}\x1f{body}".encode()).hexdigest()


def _macro_intent(team: Team, name: str) -> Intent | None:
    if not name:
        return None
    intent = Intent.objects.filter(team=team, name=name).first()
    if intent is None:
        raise KnowledgeInvalid({"intent": [f"{name!r} is not one of the team's intents."]})
    return intent


def macro_upsert(*, team: Team, data: MacroInput, ring: bool = True) -> MacroUpsert:
    """Create or update the team's macro with `data.external_id`; a changed title or body
    clears its vector and rings the worker to embed it again."""
    errors = macro_errors(data)
    if errors:
        raise KnowledgeInvalid(errors)
    intent = _macro_intent(team, data.intent)
    content_hash = macro_hash(title=data.title, body=data.body)
    fields: dict[str, Any] = {
        "title": data.title,
        "body": data.body,
        "tags": list(data.tags),
        "language": data.language,
        "active": data.active,
        "intent": intent,
    }
    with transaction.atomic():
        macro, created = _locked_or_created(
            Macro,
            team=team,
            external_id=data.external_id,
            defaults={**fields, "content_hash": content_hash},
        )
        embed = created or macro.content_hash != content_hash
        if not created:
            changed = [name for name, value in fields.items() if getattr(macro, name) != value]
            if not changed and not embed:
                return MacroUpsert(macro, Outcome.UNCHANGED)
            for name in changed:
                setattr(macro, name, fields[name])
            if embed:
                macro.content_hash = content_hash
                macro.embedding = None
                macro.embedding_model = ""
                macro.embedding_dimensions = None
            macro.updated_at = timezone.now()
            macro.save()
        if embed and ring:
            team_id = team.pk
            transaction.on_commit(lambda: _enqueue_macros_index(team_id))
    return MacroUpsert(macro, Outcome.CREATED if created else Outcome.UPDATED)


def macro_delete(*, team: Team, external_id: str) -> bool:
    deleted, _ = Macro.objects.filter(team=team, external_id=external_id).delete()
    return deleted > 0


# --- Imports ----------------------------------------------------------------------------------


@dataclass
class FileReport:
    name: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class ImportProgress:
    total: int
    done: int = 0


@dataclass
class ImportReport:
    files: list[FileReport]
    dry_run: bool = False
    # Articles whose chunks await vectors, and teams whose macros do (for --index-now).
    articles_to_index: list[int] = field(default_factory=list)
    macros_to_index: bool = False

    @property
    def ok(self) -> bool:
        return not any(report.errors for report in self.files)

    @property
    def errors(self) -> list[FileError]:
        return [FileError(report.name, error) for report in self.files for error in report.errors]

    def total(self, outcome: Outcome) -> int:
        return sum(getattr(report, outcome.value) for report in self.files)


class _DryRun(Exception):
    """Rolls a dry run's writes back."""


def knowledge_import(
    *,
    team: Team,
    files: Sequence[tuple[str, bytes]],
    progress: Callable[[ImportProgress], None] | None = None,
    ring: bool = True,
    dry_run: bool = False,
) -> ImportReport:
    """Import files (name, content) into the team's knowledge base: all or nothing. Steps:
    parse every file and collect every problem (drafting.engine.knowledge_files) and unknown
    macro intents; with any problem, write nothing and report them per file; else upsert each
    article and macro in one transaction (re-imports change nothing; edits re-chunk), calling
    `progress` after each. A dry run does all of it and rolls back: its counts are exact."""
    upload = parse_files(files)
    reports: dict[str, FileReport] = {}
    for parsed in upload.files:
        reports.setdefault(parsed.name, FileReport(parsed.name))
    for error in upload.errors:
        reports.setdefault(error.name, FileReport(error.name)).errors.append(error.message)
    intents = set(Intent.objects.filter(team=team).values_list("name", flat=True))
    for parsed in upload.files:
        for macro in parsed.macros:
            if macro.intent and macro.intent not in intents:
                reports[parsed.name].errors.append(
                    f"macro {macro.external_id!r}: intent {macro.intent!r} is not one of the team's intents"
                )
    report = ImportReport(files=list(reports.values()), dry_run=dry_run)
    if not report.ok:
        return report
    state = ImportProgress(total=len(upload.articles) + len(upload.macros))
    try:
        with transaction.atomic():
            for parsed in upload.files:
                file_report = reports[parsed.name]
                for article in parsed.articles:
                    result = article_upsert(team=team, data=article, ring=ring)
                    _count(file_report, result.outcome)
                    if result.reindexed:
                        report.articles_to_index.append(result.article.pk)
                    state.done += 1
                    if progress is not None:
                        progress(state)
                for macro in parsed.macros:
                    macro_result = macro_upsert(team=team, data=macro, ring=ring)
                    _count(file_report, macro_result.outcome)
                    report.macros_to_index |= macro_result.macro.embedding is None
                    state.done += 1
                    if progress is not None:
                        progress(state)
            if dry_run:
                raise _DryRun
    except _DryRun:
        report.articles_to_index = []
        report.macros_to_index = False
    return report


def _count(report: FileReport, outcome: Outcome) -> None:
    setattr(report, outcome.value, getattr(report, outcome.value) + 1)


# --- Indexing (the worker) --------------------------------------------------------------------


def _enqueue_index(article_id: int) -> None:
    from drafting.tasks import knowledge_index_task

    try:
        knowledge_index_task.delay(article_id)
    except (KombuOperationalError, OSError):
        # The chunks are stored and found by text search; the beat embeds them later.
        logger.exception(
            "article %s: could not reach the broker; the beat will embed it", article_id
        )


def _enqueue_macros_index(team_id: int) -> None:
    from drafting.tasks import macros_index_task

    try:
        macros_index_task.delay(team_id)
    except (KombuOperationalError, OSError):
        logger.exception(
            "team %s: could not reach the broker; the beat will embed its macros", team_id
        )


def _stale(rows: QuerySet[Any], model: Embedder) -> QuerySet[Any]:
    """Rows without a vector of the current embedder (none, or another embedder's)."""
    return rows.filter(Q(embedding__isnull=True) | ~Q(embedding_model=model.name))


def _embed_rows(
    rows: QuerySet[Any],
    text: Callable[[Any], str],
    *,
    model: Embedder,
    limit: int | None,
    batch_size: int = EMBED_BATCH,
) -> int:
    """Embed `rows` that lack the current embedder's vector, a batch at a time, each batch in
    a transaction that locks its rows and skips those another worker holds. Stops quietly
    when the embedder fails (logged): the rows stay findable by text, the beat retries."""
    done = 0
    while limit is None or done < limit:
        size = batch_size if limit is None else min(batch_size, limit - done)
        with transaction.atomic():
            batch = list(
                _stale(rows, model)
                .select_for_update(skip_locked=True, of=("self",))
                .order_by("pk")[:size]
            )
            if not batch:
                break
            try:
                vectors = model.embed([text(row) for row in batch])
            except EmbeddingError as exc:
                logger.warning("knowledge embedding stopped: %s", exc)
                break
            for row, vector in zip(batch, vectors, strict=True):
                type(row)._default_manager.filter(pk=row.pk).update(
                    **vector_fields(model.name, vector)
                )
        done += len(batch)
    return done


def _chunk_text(chunk: KnowledgeChunk) -> str:
    return embedding_text(title=chunk.article.title, heading=chunk.heading, text=chunk.text)


def _macro_text(macro: Macro) -> str:
    return f"{macro.title}\n\n{macro.body}"


def _chunks(rows: QuerySet[KnowledgeChunk]) -> QuerySet[KnowledgeChunk]:
    return rows.select_related("article").only("pk", "heading", "text", "article", "article__title")


def chunks_index(*, article_id: int) -> int:
    """Embed the article's chunks that have no vector of the current embedder (the worker's
    part of an article write). How many were embedded; 0 without an embedder."""
    model = embedder()
    if model is None:
        return 0
    return _embed_rows(
        _chunks(KnowledgeChunk.objects.filter(article_id=article_id)),
        _chunk_text,
        model=model,
        limit=None,
    )


def macros_index(*, team_id: int | None = None) -> int:
    """Embed the macros (of a team, or all) without a vector of the current embedder."""
    model = embedder()
    if model is None:
        return 0
    rows = Macro.objects.all() if team_id is None else Macro.objects.filter(team_id=team_id)
    return _embed_rows(rows.only("pk", "title", "body"), _macro_text, model=model, limit=None)


def knowledge_index_stale(*, limit: int = 5_000) -> int:
    """The beat's safety net: chunks and macros still without the current embedder's vector
    (a lost doorbell, a failed embedder, an embedder change), at most `limit` a run."""
    model = embedder()
    if model is None:
        return 0
    done = _embed_rows(_chunks(KnowledgeChunk.objects.all()), _chunk_text, model=model, limit=limit)
    if done < limit:
        done += _embed_rows(
            Macro.objects.only("pk", "title", "body"), _macro_text, model=model, limit=limit - done
        )
    return done
