"""Every migration runs backward as well as forward on PostgreSQL with pgvector: an upgrade
that goes wrong can be rolled back with `manage.py migrate <app> <earlier>`. The vector
migration's own data round trip is in tests/drafting/engine/test_vectors.py."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_all_migrations_go_back_to_zero_and_forward_again() -> None:
    apps = ("csbot", "drafting", "accounting")
    try:
        # Unapplying csbot's first migration unapplies everything that depends on it.
        call_command("migrate", "csbot", "zero", verbosity=0)
        applied = MigrationRecorder(connection).applied_migrations()
        assert not [key for key in applied if key[0] in apps]
        with connection.cursor() as cursor:
            tables = connection.introspection.table_names(cursor)
        assert not [name for name in tables if name.startswith(tuple(f"{a}_" for a in apps))]
    finally:
        call_command("migrate", verbosity=0)
    executor = MigrationExecutor(connection)
    assert executor.migration_plan(executor.loader.graph.leaf_nodes()) == []
