# Prices become versioned rows with effective dates (drafting.EndpointPrice): each endpoint's
# current prices move into one row effective from long before any attempt, then the old
# columns go, so the price table is the one source of truth.

from datetime import UTC, datetime
from decimal import Decimal

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

# Before any attempt this installation can have recorded: every past attempt finds it in force.
INITIAL_EFFECTIVE_FROM = datetime(2000, 1, 1, tzinfo=UTC)
PRICE_FIELDS = ("input_price_per_mtok", "output_price_per_mtok", "request_fee", "gpu_hour_usd")


def copy_prices_to_rows(apps, schema_editor):
    ModelEndpoint = apps.get_model("drafting", "ModelEndpoint")
    EndpointPrice = apps.get_model("drafting", "EndpointPrice")
    db = schema_editor.connection.alias
    EndpointPrice.objects.using(db).bulk_create(
        EndpointPrice(
            endpoint_id=endpoint["pk"],
            effective_from=INITIAL_EFFECTIVE_FROM,
            note="initial",
            **{name: endpoint[name] for name in PRICE_FIELDS},
        )
        for endpoint in ModelEndpoint.objects.using(db).values("pk", *PRICE_FIELDS)
    )


def copy_rows_to_prices(apps, schema_editor):
    """Back to one price per endpoint: the old columns meant "the price now", so each endpoint
    gets the row in force now (none in force: the columns' zero defaults)."""
    ModelEndpoint = apps.get_model("drafting", "ModelEndpoint")
    EndpointPrice = apps.get_model("drafting", "EndpointPrice")
    db = schema_editor.connection.alias
    now = django.utils.timezone.now()
    for endpoint in ModelEndpoint.objects.using(db).all():
        price = (
            EndpointPrice.objects.using(db)
            .filter(endpoint_id=endpoint.pk, effective_from__lte=now)
            .order_by("-effective_from")
            .first()
        )
        if price is None:
            continue
        for name in PRICE_FIELDS:
            setattr(endpoint, name, getattr(price, name))
        endpoint.save(update_fields=PRICE_FIELDS)


class Migration(migrations.Migration):

    dependencies = [
        ('drafting', '0007_prompt_budget'),
    ]

    operations = [
        migrations.CreateModel(
            name='EndpointPrice',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('endpoint', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='prices', to='drafting.modelendpoint')),
                ('effective_from', models.DateTimeField()),
                ('input_price_per_mtok', models.DecimalField(decimal_places=6, default=Decimal('0'), help_text='USD per million input tokens.', max_digits=14)),
                ('output_price_per_mtok', models.DecimalField(decimal_places=6, default=Decimal('0'), help_text='USD per million output tokens.', max_digits=14)),
                ('request_fee', models.DecimalField(decimal_places=6, default=Decimal('0'), help_text='USD per request.', max_digits=14)),
                ('gpu_hour_usd', models.DecimalField(decimal_places=6, default=Decimal('0'), help_text='Local endpoints: USD per GPU hour.', max_digits=14)),
                ('note', models.CharField(blank=True, help_text='Why, e.g. vendor price cut.', max_length=200)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                'ordering': ['endpoint', '-effective_from'],
                'constraints': [
                    models.UniqueConstraint(fields=('endpoint', 'effective_from'), name='endpoint_price_unique_per_instant'),
                    models.CheckConstraint(condition=models.Q(('input_price_per_mtok__gte', 0), ('output_price_per_mtok__gte', 0), ('request_fee__gte', 0), ('gpu_hour_usd__gte', 0)), name='endpoint_price_non_negative'),
                ],
            },
        ),
        migrations.RunPython(copy_prices_to_rows, copy_rows_to_prices),
        migrations.RemoveConstraint(
            model_name='modelendpoint',
            name='endpoint_prices_non_negative',
        ),
        migrations.RemoveField(
            model_name='modelendpoint',
            name='gpu_hour_usd',
        ),
        migrations.RemoveField(
            model_name='modelendpoint',
            name='input_price_per_mtok',
        ),
        migrations.RemoveField(
            model_name='modelendpoint',
            name='output_price_per_mtok',
        ),
        migrations.RemoveField(
            model_name='modelendpoint',
            name='request_fee',
        ),
    ]
