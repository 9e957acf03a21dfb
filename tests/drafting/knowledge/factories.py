"""Builders of the knowledge tests: an embedder that counts what it is asked to embed (around
the real one), and a small knowledge base as files."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

from drafting.engine.embeddings import Embedder, Vectors

SHIPPING_MD = """---
external_id: shipping
tags: [shipping, delivery]
source_url: https://shop.example/help/shipping
---
# Shipping

We ship from our warehouse in Lyon.

## Canada

Yes, we ship to Canada. Orders arrive in 5-7 business days; duties are included.

## Europe

Orders to the EU arrive in 3-5 business days.
"""

RETURNS_HTML = """<html><head><title>Returns and refunds</title></head><body>
<h1>Returns and refunds</h1>
<p>Send any item back within 30 days for a full refund.</p>
<h2>Refund times</h2><p>Refunds reach your card within 5 business days.</p>
</body></html>"""

PAYMENT_TXT = "We accept Visa, Mastercard and PayPal.\n\nInvoices are sent by email.\n"

ARTICLES_CSV = (
    "external_id,title,body,tags,language\n"
    'warranty,Warranty,"Every product has a two-year warranty.","warranty",en\n'
    'versand,Versand,"Wir liefern in 3-5 Werktagen.",,de\n'
)

MACROS_JSON = json.dumps(
    {
        "macros": [
            {
                "external_id": "greeting",
                "title": "Greeting",
                "body": "Hi {customer_name}, thanks for reaching out! {agent_name}",
                "tags": ["general"],
            },
            {
                "external_id": "where-is-my-order",
                "title": "Where is my order",
                "body": "Hi {customer_name}, your order is on its way.",
            },
        ]
    }
)


def knowledge_files() -> list[tuple[str, bytes]]:
    """Three articles as files, two in a CSV, two macros in a JSON file."""
    return [
        ("shipping.md", SHIPPING_MD.encode()),
        ("returns.html", RETURNS_HTML.encode()),
        ("payment.txt", PAYMENT_TXT.encode()),
        ("articles.csv", ARTICLES_CSV.encode()),
        ("macros.json", MACROS_JSON.encode()),
    ]


def write_files(folder: Path, files: Sequence[tuple[str, bytes]]) -> Path:
    for name, data in files:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def zipped(members: Sequence[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


class CountingEmbedder:
    """The real embedder, with every text it was asked to embed remembered."""

    def __init__(self, inner: Embedder):
        self.inner = inner
        self.texts: list[str] = []

    @property
    def name(self) -> str:
        return self.inner.name

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts.extend(texts)
        return self.inner.embed(texts)
