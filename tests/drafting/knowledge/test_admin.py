"""Admin for the knowledge base: the import page (files and a ZIP, per-file errors, nothing
imported on error), the article list's counts, and an article saved through the service."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from drafting.models import KnowledgeArticle, KnowledgeChunk, Macro
from tests.drafting.knowledge.factories import knowledge_files, zipped
from tests.factories import TeamSetup, UserFactory

IMPORT = "/admin/drafting/knowledgearticle/import/"


def admin_client(client: Client) -> Client:
    client.force_login(UserFactory.create(username="root", is_staff=True, is_superuser=True))
    return client


def uploads(files: list[tuple[str, bytes]]) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(name, data) for name, data in files]


def test_the_import_page_imports_files_and_a_zip_into_the_chosen_team(
    acme: TeamSetup, globex: TeamSetup, client: Client
) -> None:
    client = admin_client(client)
    assert client.get(IMPORT).status_code == 200
    files = knowledge_files()
    archive = ("more.zip", zipped([("faq/delivery.md", b"# Delivery\n\nBy post.")]))
    response = client.post(IMPORT, {"team": globex.team.pk, "uploads": uploads([*files, archive])})
    assert response.status_code == 200
    page = response.content.decode()
    assert "8 created, 0 updated, 0 unchanged" in page
    assert "more.zip/faq/delivery.md" in page
    assert KnowledgeArticle.objects.filter(team=globex.team).count() == 6
    assert Macro.objects.filter(team=globex.team).count() == 2
    assert not KnowledgeArticle.objects.filter(team=acme.team).exists()


def test_a_bad_file_is_shown_with_its_problem_and_nothing_is_imported(
    acme: TeamSetup, client: Client
) -> None:
    client = admin_client(client)
    bad = ("broken.csv", b"external_id,title\nx,X\n")
    response = client.post(
        IMPORT, {"team": acme.team.pk, "uploads": uploads([*knowledge_files(), bad])}
    )
    page = response.content.decode()
    assert "Refused: nothing was imported" in page
    assert "the header lacks body" in page
    assert not KnowledgeArticle.objects.exists() and not Macro.objects.exists()


def test_a_file_over_the_limit_is_refused_before_it_is_read(
    acme: TeamSetup, client: Client, settings: Any
) -> None:
    settings.KNOWLEDGE_IMPORT_MAX_BYTES = 1024
    client = admin_client(client)
    response = client.post(
        IMPORT, {"team": acme.team.pk, "uploads": uploads([("big.txt", b"x" * 2000)])}
    )
    assert "Larger than 1024 bytes" in response.content.decode()
    assert not KnowledgeArticle.objects.exists()


def test_the_article_list_counts_chunks_and_an_edit_goes_through_the_service(
    acme: TeamSetup, client: Client
) -> None:
    client = admin_client(client)
    client.post(IMPORT, {"team": acme.team.pk, "uploads": uploads(knowledge_files())})
    listing = client.get("/admin/drafting/knowledgearticle/", {"team__id__exact": acme.team.pk})
    assert listing.status_code == 200
    assert "Import files" in listing.content.decode()
    shipping = KnowledgeArticle.objects.get(external_id="shipping")
    assert client.get(f"/admin/drafting/knowledgearticle/{shipping.pk}/change/").status_code == 200
    response = client.post(
        f"/admin/drafting/knowledgearticle/{shipping.pk}/change/",
        {
            "title": "Shipping",
            "body": "# Shipping\n\nWe ship everywhere.",
            "body_format": "markdown",
            "source_url": "",
            "tags": "shipping",
            "language": "en",
            "published": "on",
            # The chunks inline is read-only; a browser still sends its management form.
            "chunks-TOTAL_FORMS": "0",
            "chunks-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302
    shipping.refresh_from_db()
    assert shipping.version == 2
    assert list(KnowledgeChunk.objects.filter(article=shipping).values_list("text", flat=True)) == [
        "We ship everywhere."
    ]
