"""What an agent answers: decisions, built with the helpers ``buy``/``sell``/``target_*``/``hold``.

A decision is plain data (it crosses the sandbox boundary as JSON). Sizes: ``buy``/``sell`` take a
share quantity; ``target_shares`` sets the position to a share count (negative = short);
``target_percent`` sets it to a fraction of equity (0.5 = half of equity, whole shares, computed
at the fill's price). ``confidence`` in [0, 1] and ``reasoning`` feed the decision log (FMEL).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Decision:
    symbol: str
    action: str  # BUY | SELL | HOLD | TARGET
    quantity: float | None = None
    target_shares: float | None = None
    target_percent: float | None = None
    order_type: str = "market"  # market | limit
    limit_price: float | None = None
    confidence: float | None = None
    reasoning: str = ""
    inputs: Mapping[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        """The JSON form; empty fields are left out (keeps per-bar replies small)."""
        out: dict[str, Any] = {"symbol": self.symbol, "action": self.action}
        if self.quantity is not None:
            out["quantity"] = _plain(self.quantity)
        if self.target_shares is not None:
            out["target_shares"] = _plain(self.target_shares)
        if self.target_percent is not None:
            out["target_percent"] = _plain(self.target_percent)
        if self.limit_price is not None:
            out["limit_price"] = _plain(self.limit_price)
        if self.confidence is not None:
            out["confidence"] = _plain(self.confidence)
        if self.order_type != "market":
            out["order_type"] = self.order_type
        if self.reasoning:
            out["reasoning"] = str(self.reasoning)
        if self.inputs:
            out["inputs"] = {str(k): _plain(v) for k, v in self.inputs.items()}
        return out


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars; NaN/inf -> None so the JSON stays strict."""
    kind = type(value)
    if kind is float:
        return value if value - value == 0.0 else None  # inf - inf and nan - nan are nan
    if kind is int or kind is str or kind is bool or value is None:
        return value
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _order_kw(limit: float | None) -> dict[str, Any]:
    return {"order_type": "limit", "limit_price": limit} if limit is not None else {}


def buy(
    symbol: str,
    quantity: float,
    *,
    limit: float | None = None,
    confidence: float | None = None,
    reasoning: str = "",
    inputs: Mapping[str, Any] | None = None,
) -> Decision:
    """Buy ``quantity`` shares at the next bar's open (or at ``limit`` or better)."""
    return Decision(
        symbol,
        "BUY",
        quantity=quantity,
        confidence=confidence,
        reasoning=reasoning,
        inputs=inputs,
        **_order_kw(limit),
    )


def sell(
    symbol: str,
    quantity: float,
    *,
    limit: float | None = None,
    confidence: float | None = None,
    reasoning: str = "",
    inputs: Mapping[str, Any] | None = None,
) -> Decision:
    """Sell ``quantity`` shares (going short needs ``allow_short``)."""
    return Decision(
        symbol,
        "SELL",
        quantity=quantity,
        confidence=confidence,
        reasoning=reasoning,
        inputs=inputs,
        **_order_kw(limit),
    )


def target_shares(
    symbol: str,
    shares: float,
    *,
    limit: float | None = None,
    confidence: float | None = None,
    reasoning: str = "",
    inputs: Mapping[str, Any] | None = None,
) -> Decision:
    """Trade whatever it takes to hold ``shares`` (0 closes the position)."""
    return Decision(
        symbol,
        "TARGET",
        target_shares=shares,
        confidence=confidence,
        reasoning=reasoning,
        inputs=inputs,
        **_order_kw(limit),
    )


def target_percent(
    symbol: str,
    percent: float,
    *,
    limit: float | None = None,
    confidence: float | None = None,
    reasoning: str = "",
    inputs: Mapping[str, Any] | None = None,
) -> Decision:
    """Hold ``percent`` of equity in ``symbol`` (a fraction: 1.0 = all in, -0.5 = half short)."""
    return Decision(
        symbol,
        "TARGET",
        target_percent=percent,
        confidence=confidence,
        reasoning=reasoning,
        inputs=inputs,
        **_order_kw(limit),
    )


def hold(
    symbol: str,
    *,
    confidence: float | None = None,
    reasoning: str = "",
    inputs: Mapping[str, Any] | None = None,
) -> Decision:
    """Explicitly do nothing, with a confidence and a reason (logged, no order)."""
    return Decision(symbol, "HOLD", confidence=confidence, reasoning=reasoning, inputs=inputs)
