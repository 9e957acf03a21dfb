"""Articles into chunks: sections along headings (Markdown, HTML, plain text), chunks to the
token budget, hashes that ignore position, and the text-search configuration per language."""

from __future__ import annotations

import pytest
from django.db import connection

from drafting.engine.chunking import (
    SEARCH_CONFIGS,
    article_hash,
    chunk_article,
    embedding_text,
    html_document,
    markdown_sections,
    search_config,
)
from drafting.engine.prompting import CHARS_PER_TOKEN

SHIPPING = """# Shipping

We ship to **most** countries. See [the list](https://shop.example/countries).

## Canada

Orders to Canada arrive in 5-7 business days.
Duties are included in the price.

## Europe

Orders to the EU arrive in 3-5 business days.

```
# this is code, not a heading
```
"""


def test_languages_map_to_the_configurations_postgresql_ships(db: None) -> None:
    assert search_config("en") == "english"
    assert search_config("DE") == "german"
    assert search_config("pt-BR") == "portuguese"
    assert search_config("nb_NO") == "norwegian"
    assert search_config("ja") == "simple"
    assert search_config("") == "simple"
    with connection.cursor() as cursor:
        cursor.execute("SELECT cfgname FROM pg_ts_config")
        shipped = {row[0] for row in cursor.fetchall()}
    assert set(SEARCH_CONFIGS.values()) <= shipped


def test_markdown_sections_follow_the_heading_path() -> None:
    chunks = chunk_article(title="Shipping", body=SHIPPING, body_format="markdown")
    # The title's own heading is not repeated in the path; markup is gone; a '#' in code is text.
    assert [(c.heading, c.text) for c in chunks] == [
        ("", "We ship to most countries. See the list."),
        (
            "Canada",
            "Orders to Canada arrive in 5-7 business days.\nDuties are included in the price.",
        ),
        (
            "Europe",
            "Orders to the EU arrive in 3-5 business days.\n\n# this is code, not a heading",
        ),
    ]
    assert [c.position for c in chunks] == [0, 1, 2]


def test_nested_headings_make_a_path_outermost_first() -> None:
    body = "# Help\n\n## Returns\n\n### Refunds\n\nMoney back in 14 days.\n\n## Payment\n\nCards.\n"
    chunks = chunk_article(title="FAQ", body=body, body_format="markdown")
    assert [c.heading for c in chunks] == ["Help › Returns › Refunds", "Help › Payment"]


def test_underscores_inside_words_are_not_emphasis() -> None:
    (section,) = markdown_sections("Model AB_12_C is _great_ and **new**.")
    assert section.paragraphs == ("Model AB_12_C is great and new.",)


def test_html_becomes_sections_without_scripts_or_styles() -> None:
    html = (
        "<html><head><title>Returns &amp; refunds</title><style>p{color:red}</style></head>"
        "<body><h1>Returns</h1><p>Send it back within <b>30</b> days.</p>"
        "<script>track('x')</script><h2>Refunds</h2><ul><li>Cards: 5 days</li>"
        "<li>PayPal: 1 day</li></ul></body></html>"
    )
    document = html_document(html)
    assert document.title == "Returns & refunds"
    chunks = chunk_article(title="Returns & refunds", body=html, body_format="html")
    assert [(c.heading, c.text) for c in chunks] == [
        ("Returns", "Send it back within 30 days."),
        ("Returns › Refunds", "- Cards: 5 days\n- PayPal: 1 day"),
    ]
    assert "track" not in " ".join(c.text for c in chunks)


def test_html_title_falls_back_to_the_first_h1() -> None:
    assert html_document("<h1>Warranty</h1><p>Two years.</p>").title == "Warranty"


def test_plain_text_is_paragraphs_without_headings() -> None:
    chunks = chunk_article(title="t", body="One.\n\n\nTwo.\n", body_format="text", max_tokens=2)
    assert [(c.heading, c.text) for c in chunks] == [("", "One."), ("", "Two.")]


def test_chunks_keep_to_the_budget_and_split_long_paragraphs_at_sentences() -> None:
    sentences = [f"Sentence {i} says something about delivery." for i in range(40)]
    body = "## Long\n\n" + " ".join(sentences)
    chunks = chunk_article(title="t", body=body, body_format="markdown", max_tokens=40)
    budget = 40 * CHARS_PER_TOKEN
    assert len(chunks) > 1
    assert all(len(c.text) <= budget for c in chunks)
    # Cut between sentences, none lost or repeated.
    assert " ".join(c.text for c in chunks) == " ".join(sentences)
    assert all(c.text.endswith(".") for c in chunks)


def test_a_sentence_longer_than_the_budget_is_cut_between_words() -> None:
    body = " ".join(["word"] * 100)
    chunks = chunk_article(title="t", body=body, body_format="text", max_tokens=10)
    assert all(len(c.text) <= 40 for c in chunks)
    assert " ".join(c.text for c in chunks) == body


def test_small_paragraphs_merge_under_one_heading_but_never_across_headings() -> None:
    body = "## A\n\nOne.\n\nTwo.\n\nThree.\n\n## B\n\nFour.\n"
    chunks = chunk_article(title="t", body=body, body_format="markdown", max_tokens=300)
    assert [(c.heading, c.text) for c in chunks] == [
        ("A", "One.\n\nTwo.\n\nThree."),
        ("B", "Four."),
    ]
    tight = chunk_article(title="t", body=body, body_format="markdown", max_tokens=3)
    assert [c.text for c in tight] == ["One.\n\nTwo.", "Three.", "Four."]


def test_a_chunks_hash_ignores_where_it_is() -> None:
    before = chunk_article(title="Shipping", body=SHIPPING, body_format="markdown")
    inserted = SHIPPING.replace(
        "## Canada", "## Mexico\n\nOrders to Mexico take 9 days.\n\n## Canada"
    )
    after = chunk_article(title="Shipping", body=inserted, body_format="markdown")
    assert len(after) == len(before) + 1
    assert {c.content_hash for c in before} < {c.content_hash for c in after}
    moved = {c.content_hash: c.position for c in after}
    assert [moved[c.content_hash] for c in before] == [0, 2, 3]


def test_the_article_hash_covers_what_the_chunks_are_made_from() -> None:
    base = {
        "title": "Returns",
        "body": "Within 30 days.",
        "body_format": "markdown",
        "language": "en",
    }
    same = article_hash(**base)
    assert article_hash(**base) == same
    for key, value in [
        ("title", "Refunds"),
        ("body", "Within 14 days."),
        ("body_format", "text"),
        ("language", "de"),
    ]:
        assert article_hash(**{**base, key: value}) != same


def test_the_embedded_text_gives_a_passage_its_subject() -> None:
    assert (
        embedding_text(title="Returns", heading="Refunds", text="14 days.")
        == "Returns › Refunds\n\n14 days."
    )
    assert embedding_text(title="", heading="", text="14 days.") == "14 days."


@pytest.mark.parametrize("body_format", ["markdown", "html", "text"])
def test_an_empty_body_has_no_chunks(body_format: str) -> None:
    assert chunk_article(title="t", body="  \n\n ", body_format=body_format) == []
