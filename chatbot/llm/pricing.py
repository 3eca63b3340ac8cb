"""Cost of a reply from the per-model price table in settings (``LLM_PRICES``)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal

MILLION = Decimal(1_000_000)
# Message.cost has six decimal places.
QUANTUM = Decimal("0.000001")


def cost_of(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    prices: Mapping[str, tuple[Decimal, Decimal]],
) -> Decimal | None:
    """Prices are per million prompt / completion tokens; None when the model has no price."""
    price = prices.get(model)
    if price is None:
        return None
    prompt_price, completion_price = price
    total = (prompt_price * prompt_tokens + completion_price * completion_tokens) / MILLION
    return total.quantize(QUANTUM, rounding=ROUND_HALF_UP)
