"""Embeddings move from float32 bytes (searched by a per-process copy in memory) to pgvector
columns searched in SQL, each with its embedder's dimension beside its name, and cosine HNSW
indexes per dimension. Reversible: going back turns the vectors into bytes again."""

import django.contrib.postgres.indexes
import django.db.models.functions.comparison
import numpy as np
import pgvector.django.indexes
import pgvector.django.vector
from django.db import migrations, models

MODELS = ("cachedreply", "replyexample")


def bytes_to_vectors(apps, schema_editor):
    for name in MODELS:
        model = apps.get_model("drafting", name)
        rows = model.objects.exclude(embedding=None).only("pk", "embedding").iterator(1000)
        for row in rows:
            vector = np.frombuffer(bytes(row.embedding), dtype="<f4")
            model.objects.filter(pk=row.pk).update(
                embedding_vector=vector, embedding_dimensions=len(vector)
            )


def vectors_to_bytes(apps, schema_editor):
    for name in MODELS:
        model = apps.get_model("drafting", name)
        rows = model.objects.exclude(embedding_vector=None).only("pk", "embedding_vector")
        for row in rows.iterator(1000):
            blob = np.asarray(row.embedding_vector, dtype="<f4").tobytes()
            model.objects.filter(pk=row.pk).update(embedding=blob)


def hnsw(model_prefix, dimensions):
    return pgvector.django.indexes.HnswIndex(
        django.contrib.postgres.indexes.OpClass(
            django.db.models.functions.comparison.Cast(
                "embedding", pgvector.django.vector.VectorField(dimensions=dimensions)
            ),
            name="vector_cosine_ops",
        ),
        condition=models.Q(("embedding_dimensions", dimensions)),
        ef_construction=128,
        m=16,
        name=f"{model_prefix}_hnsw_{dimensions}",
    )


class Migration(migrations.Migration):
    dependencies = [
        ("csbot", "0002_message_arrival_order"),
        ("drafting", "0016_scrub_stored_replies"),
    ]

    operations = [
        # Needs a superuser where the extension is not there yet (scripts/postgres.sh creates it
        # in template1; compose's pgvector image runs migrations as the owner). Going back
        # leaves it: other databases' objects may use it.
        migrations.RunSQL("CREATE EXTENSION IF NOT EXISTS vector", migrations.RunSQL.noop),
        *(
            migrations.AddField(
                model_name=name,
                name="embedding_vector",
                field=pgvector.django.vector.VectorField(editable=False, null=True),
            )
            for name in MODELS
        ),
        *(
            migrations.AddField(
                model_name=name,
                name="embedding_dimensions",
                field=models.PositiveSmallIntegerField(editable=False, null=True),
            )
            for name in MODELS
        ),
        migrations.RunPython(bytes_to_vectors, vectors_to_bytes, elidable=False),
        *(migrations.RemoveField(model_name=name, name="embedding") for name in MODELS),
        *(
            migrations.RenameField(model_name=name, old_name="embedding_vector", new_name="embedding")
            for name in MODELS
        ),
        migrations.AlterField(
            model_name="replyexample",
            name="embedding",
            field=pgvector.django.vector.VectorField(editable=False),
        ),
        migrations.AlterField(
            model_name="replyexample",
            name="embedding_dimensions",
            field=models.PositiveSmallIntegerField(editable=False),
        ),
        migrations.AddIndex(
            model_name="cachedreply",
            index=models.Index(
                fields=["team", "embedding_model"], name="cached_reply_team_model_idx"
            ),
        ),
        *(
            migrations.AddIndex(model_name=model, index=hnsw(prefix, n))
            for model, prefix in (("cachedreply", "cached_reply"), ("replyexample", "reply_example"))
            for n in (384, 576, 960)
        ),
    ]
