"""Builders of the drafting tests (engine and learning): endpoints behind recorded HTTP stubs, a
two-tier team, and a draft generated through the cascade."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from drafting import services as drafting
from drafting.models import DistillRun, Draft, ModelEndpoint
from tests.factories import EndpointFactory, TeamSetup, TierFactory, ingest, make_team

GOOD = "Thanks for reaching out! Your refund was issued today and arrives in 3-5 days."


def paid_endpoint(base_url: str, **overrides: Any) -> ModelEndpoint:
    """A paid endpoint at `base_url` (a stub), $2.50 in / $10 out per M tokens since EARLY."""
    fields: dict[str, Any] = {
        "kind": ModelEndpoint.Kind.PAID,
        "base_url": base_url,
        "model_name": "gpt-stub",
        "price__input_price_per_mtok": Decimal("2.50"),
        "price__output_price_per_mtok": Decimal("10.00"),
        "timeout_seconds": 10,
    }
    fields.update(overrides)
    return EndpointFactory.create(**fields)


def cheap_endpoint(base_url: str) -> ModelEndpoint:
    """The cheap first tier: a paid endpoint at $0.10 in / $0.40 out per M tokens."""
    return paid_endpoint(
        base_url,
        price__input_price_per_mtok=Decimal("0.10"),
        price__output_price_per_mtok=Decimal("0.40"),
    )


def two_tier_team(
    name: str, first: ModelEndpoint, second: ModelEndpoint, *, threshold: str
) -> TeamSetup:
    """A team whose policy asks `first`, then `second` when the first scores under `threshold`."""
    setup = make_team(name, endpoint=first)
    tier = setup.policy.tiers.get()
    tier.threshold = Decimal(threshold)
    tier.save()
    TierFactory.create(policy=setup.policy, position=2, endpoint=second, threshold=Decimal("0"))
    return setup


def drafted(
    setup: TeamSetup, text: str = "Where is my refund?", *, conversation: str = "c1"
) -> Draft:
    """A customer message on `setup`'s channel, drafted through the cascade (in this thread)."""
    draft = ingest(setup, conversation, f"{conversation}-m1", text).draft
    assert draft is not None
    drafting.draft_generate(draft_id=draft.pk)
    draft.refresh_from_db()
    return draft


def distill_run(setup: TeamSetup, **fields: Any) -> DistillRun:
    """A trained adapter of `setup`'s policy on its endpoint (succeeded, a candidate, version
    1 unless given), published on an endpoint of its own unless `endpoint=None` is passed."""
    version = fields.pop("version", 1)
    values: dict[str, Any] = {
        "team": setup.team,
        "policy": setup.policy,
        "version": version,
        "base_endpoint": setup.endpoint,
        "base_model": "SmolLM2-135M-Instruct",
        "adapter_name": f"csbot-{setup.team.pk}-v{version}",
        "status": DistillRun.Status.SUCCEEDED,
    }
    if "endpoint" not in fields:
        fields["endpoint"] = EndpointFactory.create(name=f"{setup.team.name} adapter v{version}")
    values.update(fields)
    return DistillRun.objects.create(**values)
