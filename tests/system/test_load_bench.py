"""The fault bench, small: a retrying client posts messages while Redis and PostgreSQL are
restarted, the worker's processes are killed mid-draft and the tier-1 model server is stopped
(bench/load.py --faults, on servers of its own). Nothing accepted may be lost, nothing may be
drafted or answered twice, and every message must end with exactly one final draft.

Throughput and latency are the bench's business (docs/performance.md); this only holds the
counts, so a regression in recovery (sweeper, late acks, idempotent ingest) fails CI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# About a minute and a half of servers started, loaded and broken: left out of `make test-fast`.
pytestmark = pytest.mark.load


@pytest.mark.skipif(
    not shutil.which("redis-server") or not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
    reason="needs the PostgreSQL and Redis server binaries (scripts/services.sh install)",
)
def test_faults_under_load_lose_nothing_and_duplicate_nothing() -> None:
    done = subprocess.run(  # noqa: S603 - our own interpreter and bench, fixed arguments
        [
            sys.executable,
            str(ROOT / "bench" / "load.py"),
            "--faults",
            "--rate=8",
            "--duration=40",
            "--agents=2",
            "--conversations=300",
            "--drain-timeout=300",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    events = [e["event"] for e in result["events"]]
    assert "redis started (empty)" in events
    assert "postgres up" in events
    assert "worker pool processes killed" in events
    assert "local model server stopped" in events

    ingest, stored = result["ingest"], result["stored"]
    assert ingest["accepted"] > 200
    assert ingest["gave_up"] == 0
    assert result["lost_messages"] == 0
    assert stored["inbound_messages"] == ingest["accepted"]
    assert stored["duplicate_channel_message_ids"] == 0
    assert stored["messages_without_draft"] == 0
    assert stored["messages_with_several_drafts"] == 0
    assert stored["drafts_with_several_actions"] == 0
    assert stored["messages_answered_twice"] == 0
    assert set(stored["drafts_by_status"]) <= {"ready", "failed", "superseded", "held_out"}
    assert result["every_message_one_final_draft"] is True
