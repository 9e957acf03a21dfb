"""Similar-message search in PostgreSQL: per team, per embedder, through the HNSW indexes, and
shared by every process at once; and the migration that moved the vectors there."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from csbot import services
from drafting.engine.embeddings import MiniLMEmbedder, normalise
from drafting.engine.vectors import nearest, reembed, stale_vector_count, vector_fields
from drafting.models import AgentAction, CachedReply, Draft
from tests.drafting.engine.factories import ANSWER, QUESTION, generate, stubbed_team
from tests.factories import TeamFactory
from tests.http_stub import Reply, chat_completion, openai_stub

MINILM = "minilm:all-MiniLM-L6-v2:384"


def unit(seed: int, dimensions: int = 384) -> Any:
    return normalise(np.random.default_rng(seed).normal(size=dimensions))[0]


def entry(team: Any, key: str, vector: Any, model: str = MINILM) -> CachedReply:
    return CachedReply.objects.create(
        team=team,
        key=key,
        customer_text=key,
        reply=f"reply {key}",
        expires_at=timezone.now() + timedelta(days=1),
        **vector_fields(model, vector),
    )


def test_search_finds_the_nearest_of_the_team_best_first(db: None) -> None:
    acme = TeamFactory.create(name="Acme")
    query = unit(1)
    near = entry(acme, "near", normalise(query + 0.2 * unit(2))[0])
    nearer = entry(acme, "nearer", normalise(query + 0.05 * unit(3))[0])
    entry(acme, "far", unit(4))
    found = nearest(
        CachedReply.objects.filter(team=acme), model=MINILM, vector=query, k=2, min_similarity=0
    )
    assert [row for row, _ in found] == [nearer, near]
    assert found[0][1] == pytest.approx(float(query @ nearer.embedding), abs=1e-5)
    # The threshold drops the weak ones after the k nearest are found.
    strict = nearest(
        CachedReply.objects.filter(team=acme), model=MINILM, vector=query, k=3, min_similarity=0.99
    )
    assert [row for row, _ in strict] == [nearer]


def test_search_never_returns_another_teams_or_another_embedders_vectors(db: None) -> None:
    acme, globex = TeamFactory.create(name="Acme"), TeamFactory.create(name="Globex")
    query = unit(7)
    entry(globex, "theirs", query)  # the very same vector, another team
    entry(acme, "other-model", query, model="openai:other-embedder:384")  # same dimension
    entry(acme, "other-dimension", unit(7, 576), model="vllm:SmolLM2:576")
    ours = entry(acme, "ours", unit(8))
    found = nearest(
        CachedReply.objects.filter(team=acme), model=MINILM, vector=query, k=10, min_similarity=-1
    )
    assert [row for row, _ in found] == [ours]


def test_the_search_can_use_the_hnsw_index_of_its_dimension(db: None) -> None:
    """The ORDER BY must be the index's very expression, or the planner cannot use it."""
    acme = TeamFactory.create(name="Acme")
    for n in range(50):
        entry(acme, f"q{n}", unit(100 + n))
    with connection.cursor() as cursor:
        # Made to prefer the index: on 50 rows a scan is cheaper, which the planner knows.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("SET LOCAL enable_indexscan = on")
        cursor.execute("SET LOCAL enable_sort = off")
        with CaptureQueriesContext(connection) as queries:
            nearest(
                CachedReply.objects.filter(team=acme),
                model=MINILM,
                vector=unit(1),
                k=3,
                min_similarity=0,
            )
        sql = queries.captured_queries[-1]["sql"]
        cursor.execute(f"EXPLAIN {sql}")
        plans = [line for (line,) in cursor.fetchall()]
    assert any("cached_reply_hnsw_384" in line for line in plans), plans


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_reply_learned_in_one_process_is_served_by_another_at_once() -> None:
    """The worker that remembers an approved reply and the worker that drafts the next
    question are different processes: the second finds the first's entry with no delay."""
    with openai_stub(Reply(body=chat_completion(ANSWER))) as stub:
        setup = stubbed_team("TwoProcesses", stub.base_url)
        first = generate(setup, "a", QUESTION)
        Draft.objects.filter(pk=first.pk).update(
            created_at=timezone.now() - timedelta(seconds=30),
            first_shown_at=timezone.now() - timedelta(seconds=20),
        )
        services.reply_send(
            conversation=first.message.conversation,
            agent=setup.agent,
            text=ANSWER,
            inbound_message=first.message,
            draft=Draft.objects.get(pk=first.pk),
            kind="use",
        )
        action = AgentAction.objects.get(draft=first)
        # Another process (as a Celery worker would) stores the approved reply and its vector.
        settings_dict = connection.settings_dict
        url = (
            f"postgres://{settings_dict['USER']}:{settings_dict['PASSWORD']}@"
            f"{settings_dict['HOST']}:{settings_dict['PORT']}/{settings_dict['NAME']}"
        )
        subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
            [
                sys.executable,
                "-c",
                "import django, sys; django.setup(); from drafting import services; "
                "services.reply_remember(action_id=int(sys.argv[1]))",
                str(action.pk),
            ],
            env={**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "csbot.settings"},
            check=True,
            timeout=180,
        )
        assert CachedReply.objects.filter(embedding_model=MINILM).count() == 1
        reworded = generate(setup, "b", "Do you ship to canada please")
    assert len(stub.requests) == 1  # the second question cost no model call
    hit = reworded.attempts.get()
    assert (hit.cache_hit, hit.cache_match, reworded.text) == (True, "semantic", ANSWER)


@pytest.mark.django_db(transaction=True)
def test_the_vector_migration_goes_forward_and_back_keeping_the_vectors() -> None:
    vector = unit(3)
    executor = MigrationExecutor(connection)
    before, after = (
        [("drafting", "0016_scrub_stored_replies")],
        [("drafting", "0017_vectors_in_postgres")],
    )
    try:
        executor.migrate(before)
        old = executor.loader.project_state(before).apps
        team = old.get_model("csbot", "Team").objects.create(name="Migrating")
        old.get_model("drafting", "CachedReply").objects.create(
            team=team,
            key="k",
            customer_text="q",
            reply="r",
            expires_at=timezone.now() + timedelta(days=1),
            embedding=np.asarray(vector, dtype="<f4").tobytes(),
            embedding_model=MINILM,
        )
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        new = executor.loader.project_state(after).apps
        moved = new.get_model("drafting", "CachedReply").objects.get(key="k")
        assert moved.embedding_dimensions == 384
        assert np.allclose(moved.embedding, vector, atol=1e-6)
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        back = executor.loader.project_state(before).apps
        restored = back.get_model("drafting", "CachedReply").objects.get(key="k")
        assert np.array_equal(np.frombuffer(bytes(restored.embedding), dtype="<f4"), vector)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_after_an_embedder_change_reembed_makes_old_rows_searchable_again(db: None) -> None:
    acme = TeamFactory.create(name="Acme")
    old = entry(acme, QUESTION, unit(5, 3), model="openai:old-embedder:3")
    unembedded = CachedReply.objects.create(
        team=acme,
        key="none",
        customer_text="Where is my parcel?",
        reply="r",
        expires_at=timezone.now() + timedelta(days=1),
    )
    expired = entry(acme, "expired", unit(6, 3), model="openai:old-embedder:3")
    CachedReply.objects.filter(pk=expired.pk).update(expires_at=timezone.now())
    query = MiniLMEmbedder().embed(["Do you ship to canada please"])[0]
    live = CachedReply.objects.filter(team=acme)
    assert nearest(live, model=MINILM, vector=query, k=3, min_similarity=0.9) == []
    assert stale_vector_count() == 2

    seen: list[int] = []
    out = io.StringIO()
    call_command("reembed", "--batch-size", "1", stdout=out, stderr=io.StringIO())
    assert "re-embedded 2 row(s) with " + MINILM in out.getvalue()
    assert stale_vector_count() == 0
    found = nearest(live, model=MINILM, vector=query, k=3, min_similarity=0.9)
    assert [row for row, _ in found] == [old]
    unembedded.refresh_from_db()
    assert (unembedded.embedding_model, unembedded.embedding_dimensions) == (MINILM, 384)
    expired.refresh_from_db()
    assert expired.embedding_model == "openai:old-embedder:3"  # nothing serves it: left alone
    assert reembed(progress=lambda state: seen.append(state.done)).done == 0 and seen == []
