"""bench/knowledge.py, small: it creates a scratch database on the server of DATABASE_URL,
migrates it, loads DSTC11-text chunks with COPY, builds the indexes the migration defines and
times retrieve(). Latency is the bench's business (never asserted here); this holds the shape
of its JSON and the facts that do not depend on the machine: every chunk loaded and indexed,
one statement per retrieval, passages found on every path, the thread's names found as the
focus, and the scratch database gone afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = "csbot_bench_knowledge_smoke"

# A database migrated, a few hundred chunks indexed, MiniLM loaded: tens of seconds.
pytestmark = pytest.mark.slow


def server_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/postgres"


@pytest.mark.skipif(
    not (ROOT.parent / "shared" / "data" / "dstc11_track5" / "knowledge.json").exists(),
    reason="needs DSTC11 track 5 in ../shared/data",
)
def test_knowledge_bench_reports_latency_plans_and_load_per_team(db: None) -> None:
    done = subprocess.run(  # noqa: S603 - our own interpreter and bench, fixed arguments
        [
            sys.executable,
            str(ROOT / "bench" / "knowledge.py"),
            "--articles=40",
            "--chunks-per-article=8",
            "--queries=4",
            "--warmup=2",
            "--embedding-queries=2",
            f"--db-name={DB_NAME}",
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": server_url()},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)

    data = result["data"]
    assert data["chunks"] == sum(data["chunks_per_team"]) == 40 * 8
    assert data["gin_index_bytes"] > 0 and data["hnsw_index_bytes"] > 0
    assert result["met"] is None  # not 100 k chunks
    for team in ("big", "small"):
        measured = result["retrieval"][team]
        for path in ("hybrid", "focus", "text"):
            assert measured[path]["queries"] == 4
            assert measured[path]["statements_max"] == 1  # the titles are remembered
            assert measured[path]["p50_ms"] > 0
        assert measured["hybrid"]["passages_mean"] > 0  # vectors always find something
        assert measured["hybrid"]["with_focus_share"] == 0  # no thread, nothing named
        assert measured["plan"]["execution_ms"] > 0
    assert result["retrieval"]["big"]["chunks"] > result["retrieval"]["small"]["chunks"]
    assert result["embedding_ms"]["queries"] == 2
    with psycopg.connect(server_url()) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchall()
    assert left == []
