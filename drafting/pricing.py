"""What one provider attempt cost, in exact decimals.

- Paid endpoints: input tokens × input price + output tokens × output price (prices per
  million tokens) + the per-request fee.
- Local endpoints: GPU-seconds × GPU $/hour ÷ 3600. GPU-seconds are the request's wall-clock
  latency: the conservative rule for a server handling one request at a time (concurrent
  batching makes the true share smaller; the cascade issue refines this with vLLM's timings).
"""

from __future__ import annotations

from decimal import Decimal

from drafting.models import MONEY_PLACES, ModelEndpoint

_MILLION = Decimal(1_000_000)
_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)


def attempt_cost(
    *, endpoint: ModelEndpoint, tokens_in: int, tokens_out: int, latency_ms: int
) -> Decimal:
    if endpoint.kind == ModelEndpoint.Kind.LOCAL:
        gpu_seconds = Decimal(latency_ms) / 1000
        cost = gpu_seconds * endpoint.gpu_hour_usd / 3600
    else:
        cost = (
            Decimal(tokens_in) * endpoint.input_price_per_mtok / _MILLION
            + Decimal(tokens_out) * endpoint.output_price_per_mtok / _MILLION
            + endpoint.request_fee
        )
    return cost.quantize(_QUANTUM)
