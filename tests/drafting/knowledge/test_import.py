"""Importing knowledge: the command, the file formats and ZIPs, errors per file with nothing
half-imported, idempotent re-imports, edits that re-embed only the changed chunks, unpublish
and delete, teams kept apart, and the worker's doorbell."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from csbot.models import Team
from drafting import knowledge
from drafting.engine.knowledge_files import ArticleInput, MacroInput, parse_files
from drafting.models import Intent, KnowledgeArticle, KnowledgeChunk, Macro
from tests.drafting.knowledge.factories import (
    SHIPPING_MD,
    CountingEmbedder,
    knowledge_files,
    write_files,
    zipped,
)
from tests.factories import TeamFactory, TeamSetup

MINILM = "minilm:all-MiniLM-L6-v2:384"


def run_import(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("knowledge_import", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def text_search(team: Any, words: str, config: str = "english") -> list[str]:
    """External ids of the team's articles whose chunks match `words` (all of them), by the
    tsvector the import wrote."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT a.external_id FROM drafting_knowledgechunk c "
            "JOIN drafting_knowledgearticle a ON a.id = c.article_id "
            "WHERE c.team_id = %s AND c.search_vector @@ plainto_tsquery(%s::regconfig, %s) "
            "ORDER BY 1",
            [team.pk, config, words],
        )
        return [row[0] for row in cursor.fetchall()]


def article(team: Any, external_id: str) -> KnowledgeArticle:
    return KnowledgeArticle.objects.get(team=team, external_id=external_id)


def chunk_rows(team: Any, external_id: str) -> list[tuple[int, int, str]]:
    return list(
        KnowledgeChunk.objects.filter(article__team=team, article__external_id=external_id)
        .order_by("position")
        .values_list("pk", "position", "text")
    )


def test_the_command_imports_a_folder_of_every_format(acme: TeamSetup, tmp_path: Path) -> None:
    folder = write_files(tmp_path / "kb", knowledge_files())
    out, err = run_import(str(folder), "--team", "Acme")
    assert "imported 5 file(s): 7 created, 0 updated, 0 unchanged" in out
    assert "7/7 (100%)" in err  # the progress bar
    articles = {a.external_id: a for a in KnowledgeArticle.objects.filter(team=acme.team)}
    assert set(articles) == {"shipping", "returns.html", "payment.txt", "warranty", "versand"}
    shipping = articles["shipping"]
    assert (shipping.title, shipping.tags, shipping.source_url, shipping.version) == (
        "Shipping",
        ["shipping", "delivery"],
        "https://shop.example/help/shipping",
        1,
    )
    assert articles["returns.html"].title == "Returns and refunds"
    assert articles["returns.html"].body_format == "html"
    assert articles["payment.txt"].title == "payment"
    assert articles["versand"].language == "de"
    assert [heading for _, _, heading in chunk_rows(acme.team, "shipping")] != []
    assert list(Macro.objects.filter(team=acme.team).values_list("external_id", flat=True)) == [
        "greeting",
        "where-is-my-order",
    ]
    # Text search finds the new content at once, stemmed in the article's language; the
    # vectors wait for the worker.
    assert text_search(acme.team, "shipping Canada") == ["shipping"]
    assert text_search(acme.team, "refunded") == ["returns.html"]
    assert text_search(acme.team, "liefern", config="german") == ["versand"]
    assert not KnowledgeChunk.objects.filter(team=acme.team, embedding__isnull=False).exists()


def test_index_now_embeds_every_chunk_and_macro(
    acme: TeamSetup, tmp_path: Path, counting_embedder: CountingEmbedder
) -> None:
    folder = write_files(tmp_path, knowledge_files())
    out, _ = run_import(str(folder), "--team", str(acme.team.pk), "--index-now")
    chunks = KnowledgeChunk.objects.filter(team=acme.team)
    assert chunks.count() > 0
    assert chunks.filter(embedding_model=MINILM, embedding_dimensions=384).count() == chunks.count()
    assert Macro.objects.filter(team=acme.team, embedding_model=MINILM).count() == 2
    assert len(counting_embedder.texts) == chunks.count() + 2
    assert f"embedded {chunks.count() + 2} chunk(s) and macro(s)" in out
    # The title and the heading path are embedded with the text.
    assert "Shipping › Canada\n\nYes, we ship to Canada." in " ".join(counting_embedder.texts)


def test_reimporting_the_same_files_changes_nothing(
    acme: TeamSetup, tmp_path: Path, counting_embedder: CountingEmbedder
) -> None:
    folder = write_files(tmp_path, knowledge_files())
    run_import(str(folder), "--team", "Acme", "--index-now")
    before = list(
        KnowledgeArticle.objects.filter(team=acme.team).values_list("pk", "version", "updated_at")
    )
    chunks_before = chunk_rows(acme.team, "shipping")
    embedded = len(counting_embedder.texts)
    out, _ = run_import(str(folder), "--team", "Acme", "--index-now")
    assert "0 created, 0 updated, 7 unchanged" in out
    assert (
        list(
            KnowledgeArticle.objects.filter(team=acme.team).values_list(
                "pk", "version", "updated_at"
            )
        )
        == before
    )
    assert chunk_rows(acme.team, "shipping") == chunks_before
    assert len(counting_embedder.texts) == embedded  # nothing embedded again


def test_an_edit_reembeds_only_the_changed_chunks(
    acme: TeamSetup, counting_embedder: CountingEmbedder
) -> None:
    files = [("shipping.md", SHIPPING_MD.encode())]
    knowledge.knowledge_import(team=acme.team, files=files, ring=False)
    first = article(acme.team, "shipping")
    assert knowledge.chunks_index(article_id=first.pk) == 3
    old = {text: pk for pk, _, text in chunk_rows(acme.team, "shipping")}
    counting_embedder.texts.clear()

    # One paragraph edited, one section inserted above the others.
    edited = SHIPPING_MD.replace("3-5 business days", "2-4 business days").replace(
        "## Canada", "## Mexico\n\nOrders to Mexico arrive in 9 days.\n\n## Canada"
    )
    report = knowledge.knowledge_import(
        team=acme.team, files=[("shipping.md", edited.encode())], ring=False
    )
    assert report.total(knowledge.Outcome.UPDATED) == 1
    second = article(acme.team, "shipping")
    assert second.version == 2 and second.updated_at > first.updated_at
    rows = chunk_rows(acme.team, "shipping")
    assert [text for _, _, text in rows] == [
        "We ship from our warehouse in Lyon.",
        "Orders to Mexico arrive in 9 days.",
        "Yes, we ship to Canada. Orders arrive in 5-7 business days; duties are included.",
        "Orders to the EU arrive in 2-4 business days.",
    ]
    # The unchanged chunks are the same rows, moved, with their vectors.
    assert rows[0][0] == old["We ship from our warehouse in Lyon."]
    assert (
        rows[2][0]
        == old["Yes, we ship to Canada. Orders arrive in 5-7 business days; duties are included."]
    )
    assert (
        KnowledgeChunk.objects.filter(
            pk__in=[rows[0][0], rows[2][0]], embedding_model=MINILM
        ).count()
        == 2
    )
    assert not KnowledgeChunk.objects.filter(
        pk=old["Orders to the EU arrive in 3-5 business days."]
    ).exists()
    # New content is found by text at once, before any vector.
    assert text_search(acme.team, "Mexico") == ["shipping"]
    assert knowledge.chunks_index(article_id=second.pk) == 2
    assert counting_embedder.texts == [
        "Shipping › Mexico\n\nOrders to Mexico arrive in 9 days.",
        "Shipping › Europe\n\nOrders to the EU arrive in 2-4 business days.",
    ]


def test_a_title_change_reindexes_every_chunk(
    acme: TeamSetup, counting_embedder: CountingEmbedder
) -> None:
    data = ArticleInput(external_id="faq", title="Delivery", body="Parcels travel by post.")
    knowledge.article_upsert(team=acme.team, data=data, ring=False)
    faq = article(acme.team, "faq")
    knowledge.chunks_index(article_id=faq.pk)
    knowledge.article_upsert(
        team=acme.team, data=ArticleInput(**{**data.__dict__, "title": "Postage"}), ring=False
    )
    assert text_search(acme.team, "postage") == ["faq"]
    assert text_search(acme.team, "delivery") == []
    assert KnowledgeChunk.objects.get(article=faq).embedding is None
    counting_embedder.texts.clear()
    assert knowledge.chunks_index(article_id=faq.pk) == 1
    assert counting_embedder.texts == ["Postage\n\nParcels travel by post."]


def test_a_write_rings_the_worker_with_the_article_id_after_commit(
    acme: TeamSetup, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    rung: list[int] = []
    monkeypatch.setattr("drafting.tasks.knowledge_index_task.delay", rung.append)
    data = ArticleInput(external_id="faq", title="FAQ", body="Answers.")
    with django_capture_on_commit_callbacks(execute=True):
        created = knowledge.article_upsert(team=acme.team, data=data)
        assert rung == []  # not before the commit
    assert rung == [created.article.pk]
    with django_capture_on_commit_callbacks(execute=True):
        knowledge.article_upsert(team=acme.team, data=data)  # unchanged: no work to ring for
    assert rung == [created.article.pk]


def test_unpublishing_needs_no_reindexing_and_delete_removes_the_chunks(acme: TeamSetup) -> None:
    data = ArticleInput(external_id="faq", title="FAQ", body="Answers.", tags=("a",))
    knowledge.article_upsert(team=acme.team, data=data, ring=False)
    chunks = chunk_rows(acme.team, "faq")
    result = knowledge.article_upsert(
        team=acme.team,
        data=ArticleInput(**{**data.__dict__, "published": False, "tags": ("b",)}),
        ring=False,
    )
    assert (result.outcome, result.reindexed) == (knowledge.Outcome.UPDATED, False)
    faq = article(acme.team, "faq")
    assert (faq.published, faq.tags, faq.version) == (False, ["b"], 1)
    assert chunk_rows(acme.team, "faq") == chunks
    assert knowledge.article_delete(team=acme.team, external_id="faq")
    assert not KnowledgeChunk.objects.filter(team=acme.team).exists()
    assert not knowledge.article_delete(team=acme.team, external_id="faq")


def test_another_teams_knowledge_is_its_own(
    acme: TeamSetup, globex: TeamSetup, tmp_path: Path
) -> None:
    folder = write_files(tmp_path, knowledge_files())
    run_import(str(folder), "--team", "Acme")
    out, _ = run_import(str(folder), "--team", "Globex")
    assert "7 created" in out  # the same ids are new for another team
    assert knowledge.article_delete(team=acme.team, external_id="shipping")
    assert text_search(globex.team, "Canada") == ["shipping"]
    assert text_search(acme.team, "Canada") == []
    assert KnowledgeChunk.objects.filter(team=globex.team, article__team=globex.team).count() == (
        KnowledgeChunk.objects.filter(team=globex.team).count()
    )


def test_a_zip_with_folders_imports_with_paths_as_ids(acme: TeamSetup, tmp_path: Path) -> None:
    archive = zipped(
        [
            ("help/shipping/canada.md", b"# Canada\n\nWe ship to Canada."),
            ("help/returns.txt", b"Thirty days."),
            ("__MACOSX/help/._returns.txt", b"\x00\x05"),
            (
                "help/macros.csv",
                b"external_id,title,body\nthanks,Thanks,Thank you {customer_name}!\n",
            ),
        ]
    )
    (tmp_path / "kb.zip").write_bytes(archive)
    out, _ = run_import(str(tmp_path / "kb.zip"), "--team", "Acme")
    assert "3 created" in out
    assert set(
        KnowledgeArticle.objects.filter(team=acme.team).values_list("external_id", "title")
    ) == {
        ("help/shipping/canada.md", "Canada"),
        ("help/returns.txt", "returns"),
    }
    assert Macro.objects.get(team=acme.team).external_id == "thanks"


def test_bad_files_are_refused_per_file_and_nothing_is_imported(
    acme: TeamSetup, tmp_path: Path
) -> None:
    bad_zip = zipped(
        [("ok.md", b"# Fine\n\ntext"), ("../../etc/evil.md", b"# Evil\n\nx"), ("run.exe", b"MZ")]
    )
    folder = write_files(
        tmp_path,
        [
            *knowledge_files(),
            ("broken.json", b'{"articles": [{"external_id": "x", "title": "X"'),
            ("rows.csv", b"external_id,title,body,colour\na,A,body,red\n"),
            ("empty.md", b"---\ntitle: Empty\n---\n"),
            ("latin1.txt", "caf\xe9".encode("latin-1")),
            ("bundle.zip", bad_zip),
        ],
    )
    with pytest.raises(CommandError, match=r"problem\(s\) in 6 file\(s\); nothing was imported"):
        out, err = io.StringIO(), io.StringIO()
        call_command("knowledge_import", str(folder), "--team", "Acme", stdout=out, stderr=err)
    printed = err.getvalue()
    assert "broken.json: not valid JSON" in printed
    assert "rows.csv: unknown column(s) colour" in printed
    assert "empty.md: body: The body is empty." in printed
    assert "latin1.txt: not UTF-8 text" in printed
    assert "bundle.zip: ../../etc/evil.md: a path leaving the archive ('..') is refused" in printed
    assert "bundle.zip/run.exe: unknown file type .exe" in printed
    assert not KnowledgeArticle.objects.exists()
    assert not Macro.objects.exists()


def test_a_zip_bomb_is_refused_by_what_it_unpacks_to(settings: Any) -> None:
    settings.KNOWLEDGE_IMPORT_MAX_BYTES = 4096
    bomb = zipped([("a.txt", b"x" * 3000), ("b.txt", b"y" * 3000)])
    assert len(bomb) < 1024  # small packed
    one_big = zipped([("big.txt", b"z" * 100_000)])
    upload = parse_files([("bomb.zip", bomb), ("big.zip", one_big)])
    assert [str(e) for e in upload.errors] == [
        "bomb.zip: unpacks to more than 4096 bytes; refused",
        "big.zip/big.txt: larger than 4096 bytes unpacked",
    ]


def test_an_unknown_extension_and_a_repeated_id_are_refused() -> None:
    upload = parse_files(
        [
            ("notes.docx", b"PK"),
            ("a.md", b"---\nexternal_id: same\n---\n# A\n\ntext"),
            ("b.md", b"---\nexternal_id: same\n---\n# B\n\ntext"),
        ]
    )
    messages = [str(e) for e in upload.errors]
    assert messages[0].startswith("notes.docx: unknown file type .docx")
    assert messages[1] == "a.md: article external_id 'same' appears 2 times (a.md, b.md)"


def test_csv_rows_report_their_line_and_a_kind_column_mixes_articles_and_macros() -> None:
    upload = parse_files(
        [
            (
                "kb.csv",
                b"external_id,title,body,kind,intent,published\n"
                b"a1,Article,Body,article,,no\n"
                b"m1,Macro,Hi {customer_name},macro,refund,\n"
                b"a2,,Body,,,\n"
                b"a3,Other,Body,,,maybe\n",
            )
        ]
    )
    assert [a.external_id for a in upload.articles] == ["a1"]
    assert upload.articles[0].published is False
    assert upload.macros == [
        MacroInput(external_id="m1", title="Macro", body="Hi {customer_name}", intent="refund")
    ]
    assert [e.message for e in upload.errors] == [
        "row 4: title: This field is required.",
        "row 5: published: 'maybe' is neither true nor false",
    ]


def test_a_macro_names_one_of_the_teams_intents(acme: TeamSetup, globex: TeamSetup) -> None:
    refund = Intent.objects.create(team=acme.team, name="refund")
    Intent.objects.create(team=globex.team, name="warranty")
    data = b'{"macros": [{"external_id": "m", "title": "Refund", "body": "Done.", "intent": "warranty"}]}'
    report = knowledge.knowledge_import(team=acme.team, files=[("m.json", data)])
    assert [str(e) for e in report.errors] == [
        "m.json: macro 'm': intent 'warranty' is not one of the team's intents"
    ]
    assert not Macro.objects.exists()
    good = data.replace(b"warranty", b"refund")
    assert knowledge.knowledge_import(team=acme.team, files=[("m.json", good)]).ok
    assert Macro.objects.get().intent == refund


def test_a_dry_run_counts_exactly_and_writes_nothing(acme: TeamSetup, tmp_path: Path) -> None:
    folder = write_files(tmp_path, knowledge_files())
    run_import(str(folder), "--team", "Acme")
    (folder / "payment.txt").write_text("We accept cash only.")
    (folder / "new.md").write_text("# New\n\nNews.")
    out, _ = run_import(str(folder), "--team", "Acme", "--dry-run")
    assert "would import 6 file(s): 1 created, 1 updated, 6 unchanged" in out
    assert not KnowledgeArticle.objects.filter(external_id="new.md").exists()
    assert article(acme.team, "payment.txt").version == 1


def test_the_beat_embeds_whatever_lost_its_doorbell(
    acme: TeamSetup, counting_embedder: CountingEmbedder
) -> None:
    knowledge.knowledge_import(team=acme.team, files=knowledge_files(), ring=False)
    missing = KnowledgeChunk.objects.filter(embedding__isnull=True).count() + Macro.objects.count()
    assert knowledge.knowledge_index_stale(limit=3) == 3
    assert knowledge.knowledge_index_stale() == missing - 3
    assert not KnowledgeChunk.objects.filter(embedding__isnull=True).exists()
    assert not Macro.objects.filter(embedding__isnull=True).exists()
    # Another embedder's vectors count as missing (after an embedder change).
    KnowledgeChunk.objects.filter(article__external_id="warranty").update(
        embedding_model="other:model:384"
    )
    assert knowledge.knowledge_index_stale() == 1


def test_a_macro_edit_clears_its_vector_and_a_metadata_edit_does_not(
    acme: TeamSetup, counting_embedder: CountingEmbedder
) -> None:
    data = MacroInput(external_id="hi", title="Hi", body="Hello {customer_name}.")
    assert (
        knowledge.macro_upsert(team=acme.team, data=data, ring=False).outcome
        == knowledge.Outcome.CREATED
    )
    assert knowledge.macros_index(team_id=acme.team.pk) == 1
    tagged = MacroInput(**{**data.__dict__, "tags": ("greeting",)})
    assert (
        knowledge.macro_upsert(team=acme.team, data=tagged, ring=False).outcome
        == knowledge.Outcome.UPDATED
    )
    assert Macro.objects.get().embedding_model == MINILM
    assert (
        knowledge.macro_upsert(team=acme.team, data=tagged, ring=False).outcome
        == knowledge.Outcome.UNCHANGED
    )
    reworded = MacroInput(**{**tagged.__dict__, "body": "Hi {customer_name}!"})
    knowledge.macro_upsert(team=acme.team, data=reworded, ring=False)
    assert Macro.objects.get().embedding is None
    assert knowledge.macros_index(team_id=acme.team.pk) == 1
    assert counting_embedder.texts == ["Hi\n\nHello {customer_name}.", "Hi\n\nHi {customer_name}!"]
    assert knowledge.macro_delete(team=acme.team, external_id="hi")
    assert not knowledge.macro_delete(team=acme.team, external_id="hi")


def test_an_unknown_team_is_a_command_error(db: None, tmp_path: Path) -> None:
    TeamFactory.create(name="Acme")
    write_files(tmp_path, [("a.md", b"# A\n\ntext")])
    with pytest.raises(CommandError, match="no team with the name or id 'Nobody'"):
        run_import(str(tmp_path), "--team", "Nobody")


def test_the_demo_seed_imports_its_knowledge_once(db: None) -> None:
    out = io.StringIO()
    call_command("seed_demo", "--no-conversations", stdout=out)
    assert "10 new knowledge articles and macros" in out.getvalue()
    call_command("seed_demo", "--no-conversations", stdout=io.StringIO())  # idempotent
    team = KnowledgeArticle.objects.values_list("team", flat=True).distinct().get()
    assert KnowledgeArticle.objects.filter(team=team).count() == 5
    assert Macro.objects.filter(team=team).count() == 5
    assert set(KnowledgeArticle.objects.values_list("version", flat=True)) == {1}
    assert text_search(Team.objects.get(pk=team), "ship Canada") == ["shipping-countries"]
