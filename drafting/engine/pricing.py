"""What one provider attempt cost, in exact decimals, at the prices in force when it started.

- Prices are versioned data (drafting.EndpointPrice): the price in force at time t is the
  endpoint's row with the latest `effective_from` ≤ t. A price change is a new row, so an
  attempt is always charged what was in force when it started, whenever it is (re)costed.
- Paid endpoints: input tokens × input price + output tokens × output price (prices per
  million tokens) + the per-request fee.
- Local endpoints: GPU-seconds × GPU $/hour ÷ 3600. GPU-seconds are, in order of preference:
  1. the server's own per-request timing (vLLM started with --enable-per-request-metrics
     returns time to first token, queue time and generation time with each response): the time
     the request was being computed, queue time excluded;
  2. else the wall-clock latency divided by the number of requests this process had in flight
     to that endpoint when the request started (a batching server shares its GPU between them).
- No price in force (no row yet, or only future ones): the attempt costs 0 and a warning is
  logged. The draft still goes out; an unpriced endpoint is a configuration gap to fix, not a
  reason to fail a customer's draft.
- Counterfactual: what the policy's top tier alone would have charged for the same tokens, at
  its prices in force when the chosen attempt started: the all-paid baseline accounting
  compares against.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from csbot.memo import Memo
from drafting.models import MONEY_PLACES, EndpointPrice, ModelEndpoint

logger = logging.getLogger(__name__)

_MILLION = Decimal(1_000_000)
_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)


@dataclass(frozen=True)
class Price:
    """One endpoint's prices from `effective_from` on (USD)."""

    effective_from: datetime
    input_price_per_mtok: Decimal = Decimal(0)
    output_price_per_mtok: Decimal = Decimal(0)
    request_fee: Decimal = Decimal(0)
    gpu_hour_usd: Decimal = Decimal(0)

    @classmethod
    def from_row(cls, row: EndpointPrice) -> Price:
        return cls(
            effective_from=row.effective_from,
            input_price_per_mtok=row.input_price_per_mtok,
            output_price_per_mtok=row.output_price_per_mtok,
            request_fee=row.request_fee,
            gpu_hour_usd=row.gpu_hour_usd,
        )


class PriceBook:
    """Every price row of some endpoints, in memory, to answer "price at t" without a query.

    A draft loads one for its tiers' endpoints (one query) before asking the first tier.
    Future rows are kept too: a price change can take effect while the draft is running.
    """

    def __init__(self, rows: Iterable[EndpointPrice] = ()) -> None:
        by_endpoint: dict[int, list[Price]] = defaultdict(list)
        for row in rows:
            by_endpoint[row.endpoint_id].append(Price.from_row(row))
        self._prices = {
            endpoint_id: sorted(prices, key=lambda price: price.effective_from)
            for endpoint_id, prices in by_endpoint.items()
        }
        self._starts = {
            endpoint_id: [price.effective_from for price in prices]
            for endpoint_id, prices in self._prices.items()
        }

    @classmethod
    def load(cls, *, endpoint_ids: Iterable[int]) -> PriceBook:
        """The price rows of these endpoints: one query, or none when this process read them
        in the last few seconds (_price_books: a new price row is seen within them, at once
        by the process that saved it)."""
        ids = frozenset(endpoint_ids)
        return _price_books.get(ids, lambda: cls(EndpointPrice.objects.filter(endpoint_id__in=ids)))

    def price_at(self, endpoint_id: int, when: datetime) -> Price | None:
        """The row with the latest `effective_from` ≤ `when`; None when none is in force."""
        starts = self._starts.get(endpoint_id, [])
        index = bisect_right(starts, when)
        return self._prices[endpoint_id][index - 1] if index else None


_price_books: Memo[frozenset[int], PriceBook] = Memo(depends_on=(EndpointPrice,))


def gpu_seconds(*, latency_ms: int, server_ms: int | None = None, concurrency: int = 1) -> Decimal:
    if server_ms is not None:
        return Decimal(server_ms) / 1000
    return Decimal(latency_ms) / 1000 / max(1, concurrency)


def attempt_cost(
    *,
    endpoint: ModelEndpoint,
    price: Price | None,
    tokens_in: int,
    tokens_out: int,
    latency_ms: int,
    server_ms: int | None = None,
    concurrency: int = 1,
) -> Decimal:
    """What `endpoint` charges at `price` (the price in force when the attempt started)."""
    if price is None:
        logger.warning(
            "pricing: no price in force for endpoint %s (id %s); attempt costed at $0, add an "
            "EndpointPrice row",
            endpoint.name,
            endpoint.pk,
        )
        return Decimal(0)
    if endpoint.kind == ModelEndpoint.Kind.LOCAL:
        seconds = gpu_seconds(latency_ms=latency_ms, server_ms=server_ms, concurrency=concurrency)
        cost = seconds * price.gpu_hour_usd / 3600
    else:
        cost = (
            Decimal(tokens_in) * price.input_price_per_mtok / _MILLION
            + Decimal(tokens_out) * price.output_price_per_mtok / _MILLION
            + price.request_fee
        )
    return cost.quantize(_QUANTUM)
