"""Fixtures of the knowledge tests (builders: tests/drafting/knowledge/factories.py)."""

from __future__ import annotations

from typing import Any

import pytest

from drafting.engine.embeddings import embedder
from tests.drafting.knowledge.factories import CountingEmbedder


@pytest.fixture
def counting_embedder(monkeypatch: Any) -> CountingEmbedder:
    """The configured embedder (MiniLM), counting the texts the knowledge code embeds."""
    inner = embedder()
    assert inner is not None
    counting = CountingEmbedder(inner)
    monkeypatch.setattr("drafting.knowledge.embedder", lambda: counting)
    return counting
