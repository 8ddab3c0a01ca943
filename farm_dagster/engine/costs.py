"""Cost model and backtest settings: everything besides code and data that changes a result.

Both are frozen, JSON-able dataclasses so the same object travels to the sandboxed child (INIT)
and into :func:`farm_dagster.engine.identity.settings_hash` unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class CostModel:
    """Commission and slippage of one fill.

    commission = max(min_commission, commission_per_share * shares + commission_pct * notional),
    with ``commission_pct`` a fraction of the notional (0.001 = 0.1% = 10 bps).
    Slippage moves the fill price against the order: ``slippage_bps`` of the base price plus
    ``slippage_range_fraction`` of the bar's high-low range; the result is clamped to [low, high].
    """

    commission_per_share: float = 0.0
    commission_pct: float = 0.0
    min_commission: float = 0.0
    slippage_bps: float = 0.0
    slippage_range_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"CostModel.{name} must be a finite number >= 0, got {value!r}")
        if self.slippage_range_fraction > 1:
            raise ValueError("CostModel.slippage_range_fraction must be <= 1")

    def commission(self, shares: float, price: float) -> float:
        if shares == 0:
            return 0.0
        fee = self.commission_per_share * shares + self.commission_pct * shares * price
        return max(self.min_commission, fee)


@dataclass(frozen=True)
class BacktestSettings:
    """Run settings. ``params`` override the agent's declared parameters."""

    initial_cash: float = 100_000.0
    costs: CostModel = field(default_factory=CostModel)
    allow_short: bool = False
    borrow_rate_annual: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not math.isfinite(self.initial_cash) or self.initial_cash <= 0:
            raise ValueError(f"initial_cash must be a positive number, got {self.initial_cash!r}")
        if not math.isfinite(self.borrow_rate_annual) or self.borrow_rate_annual < 0:
            raise ValueError(f"borrow_rate_annual must be >= 0, got {self.borrow_rate_annual!r}")
        if isinstance(self.costs, dict):  # accept the JSON form (from INIT or an API payload)
            object.__setattr__(self, "costs", CostModel(**self.costs))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BacktestSettings:
        data = dict(data)
        data["costs"] = CostModel(**data.get("costs", {}))
        return cls(**data)
