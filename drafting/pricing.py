"""What one provider attempt cost, in exact decimals.

- Paid endpoints: input tokens × input price + output tokens × output price (prices per
  million tokens) + the per-request fee.
- Local endpoints: GPU-seconds × GPU $/hour ÷ 3600. GPU-seconds are, in order of preference:
  1. the server's own per-request timing (vLLM started with --enable-per-request-metrics
     returns time to first token, queue time and generation time with each response): the time
     the request was being computed, queue time excluded;
  2. else the wall-clock latency divided by the number of requests this process had in flight
     to that endpoint when the request started (a batching server shares its GPU between them).
- Counterfactual: what the policy's top tier alone would have charged for the same tokens, the
  all-paid baseline accounting compares against.
"""

from __future__ import annotations

from decimal import Decimal

from drafting.models import MONEY_PLACES, ModelEndpoint

_MILLION = Decimal(1_000_000)
_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)


def gpu_seconds(*, latency_ms: int, server_ms: int | None = None, concurrency: int = 1) -> Decimal:
    if server_ms is not None:
        return Decimal(server_ms) / 1000
    return Decimal(latency_ms) / 1000 / max(1, concurrency)


def attempt_cost(
    *,
    endpoint: ModelEndpoint,
    tokens_in: int,
    tokens_out: int,
    latency_ms: int,
    server_ms: int | None = None,
    concurrency: int = 1,
) -> Decimal:
    if endpoint.kind == ModelEndpoint.Kind.LOCAL:
        seconds = gpu_seconds(latency_ms=latency_ms, server_ms=server_ms, concurrency=concurrency)
        cost = seconds * endpoint.gpu_hour_usd / 3600
    else:
        cost = (
            Decimal(tokens_in) * endpoint.input_price_per_mtok / _MILLION
            + Decimal(tokens_out) * endpoint.output_price_per_mtok / _MILLION
            + endpoint.request_fee
        )
    return cost.quantize(_QUANTUM)
