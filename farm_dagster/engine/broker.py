"""The one simulated broker: the child's mirror and the parent's trusted accounting.

Vectorized over symbols for the per-bar work (marking to market is two numpy calls); orders are
handled one by one because they are sparse. Fill rules (the honest-fill contract):

* an order submitted on bar t is eligible from bar t+1; market orders fill at that bar's open;
* a buy limit fills when the bar's low <= limit, at min(open, limit); a sell limit when high >=
  limit, at max(open, limit); the price never leaves [low, high] (slippage is clamped);
* a symbol whose bar is NaN (no trading) keeps its orders waiting;
* within a bar, orders that reduce or sell fill before orders that buy (a rebalance frees cash
  first), each group in submission order;
* an explicit BUY that costs more than the cash is rejected; a TARGET buy is shrunk to what the
  cash affords; a sell that would go short is rejected unless ``allow_short``;
* shorts pay ``borrow_rate_annual`` on their market value for the time they are held.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from farm_dagster.engine.costs import BacktestSettings
from farm_dagster.engine.protocol import CheckedDecision

_NS_PER_YEAR = 365.25 * 24 * 3600 * 1e9
_EPS = 1e-9


def iso(ts_ns: int) -> str:
    """ISO-8601 UTC text of a bar time (second precision, the FMEL event time)."""
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Order:
    order_id: int
    decision_id: str | None
    index: int  # symbol column
    action: str  # BUY | SELL | TARGET
    quantity: float | None
    target_shares: float | None
    target_percent: float | None
    order_type: str
    limit_price: float | None
    submitted_bar: int
    events: list[dict[str, Any]]  # this decision's FMEL events (shared by its trades)


@dataclass(slots=True)
class Fill:
    order_id: int
    decision_id: str | None
    ts_ns: int
    symbol: str
    side: str
    quantity: float
    price: float
    commission: float
    slippage_cost: float


@dataclass(slots=True)
class Trade:
    symbol: str
    direction: str  # long | short
    entry_ts: int
    exit_ts: int | None
    quantity: float  # total shares entered
    entry_notional: float
    exit_quantity: float
    exit_notional: float
    pnl: float  # realized, net of commissions
    decision_id: str | None

    @property
    def entry_price(self) -> float:
        return self.entry_notional / self.quantity

    @property
    def exit_price(self) -> float:
        return self.exit_notional / self.exit_quantity if self.exit_quantity else math.nan


class Broker:
    """Cash, positions, pending orders, fills and round-trip trades of one run."""

    def __init__(self, symbols: Sequence[str], settings: BacktestSettings, *, record: bool = True) -> None:
        self.symbols = tuple(symbols)
        self.settings = settings
        self.costs = settings.costs
        self.record = record  # the child's mirror skips the event/fill bookkeeping
        n = len(self.symbols)
        self.cash = float(settings.initial_cash)
        self.positions = np.zeros(n)
        self.last_price = np.zeros(n)  # last finite close; 0 until a symbol first trades (position is 0 then)
        self.positions_value = 0.0
        self.equity = self.cash
        self.pending: list[Order] = []
        self.fills: list[Fill] = []
        self.trades: list[Trade] = []
        self.open_trades: dict[int, Trade] = {}
        self.event_log: dict[str | None, list[dict[str, Any]]] = {}  # decision id -> its events
        self.borrow_paid = 0.0
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self._borrow = settings.borrow_rate_annual > 0
        self._next_order_id = 1
        self._iso_ts = -1
        self._iso_text = ""
        self._prev_ts: int | None = None
        self._bar = -1

    def _iso(self, ts_ns: int) -> str:
        """Event time text; every event of a bar shares it, so keep the last one."""
        if ts_ns != self._iso_ts:
            self._iso_ts, self._iso_text = ts_ns, iso(ts_ns)
        return self._iso_text

    # ----------------------------------------------------------------- orders
    def submit(
        self, decision: CheckedDecision, decision_id: str | None, bar: int, ts_ns: int
    ) -> Order | None:
        """Queue an accepted order decided on ``bar``; it is eligible from ``bar + 1``."""
        if not decision.is_order:
            return None
        order = Order(
            order_id=self._next_order_id,
            decision_id=decision_id,
            index=self._index[decision.symbol],  # type: ignore[index]
            action=decision.action,
            quantity=decision.quantity,
            target_shares=decision.target_shares,
            target_percent=decision.target_percent,
            order_type=decision.order_type,
            limit_price=decision.limit_price,
            submitted_bar=bar,
            events=self.bucket(decision_id) if self.record else [],
        )
        self._next_order_id += 1
        self.pending.append(order)
        if self.record:
            event = {"type": "submitted", "time": self._iso(ts_ns), "order_id": order.order_id}
            if order.quantity is not None:
                event["quantity"] = order.quantity
            elif order.target_shares is not None:
                event["target_shares"] = order.target_shares
            else:
                event["target_percent"] = order.target_percent
            event["order_type"] = order.order_type
            if order.limit_price is not None:
                event["limit_price"] = order.limit_price
            order.events.append(event)
        return order

    def cancel_all(self, ts_ns: int, reason: str) -> None:
        if self.record:
            for order in self.pending:
                event = {
                    "type": "cancelled",
                    "time": self._iso(ts_ns),
                    "order_id": order.order_id,
                    "reason": reason,
                }
                order.events.append(event)
        self.pending.clear()

    # -------------------------------------------------------------------- bar
    def on_bar(self, bar: int, ts_ns: int, block: np.ndarray) -> None:
        """Advance to bar ``bar``: borrow fees, fills of eligible orders, mark to the close."""
        self._bar = bar
        if self._borrow and self._prev_ts is not None:
            short = self.positions < 0
            if short.any():
                value = float(-(self.positions[short] * self.last_price[short]).sum())
                fee = value * self.settings.borrow_rate_annual * (ts_ns - self._prev_ts) / _NS_PER_YEAR
                self.cash -= fee
                self.borrow_paid += fee
        self._prev_ts = ts_ns
        if self.pending:
            self._fill_pending(bar, ts_ns, block)
        close = block[3]
        np.copyto(self.last_price, close, where=close == close)  # NaN != NaN: keep the last real close
        self.positions_value = float(self.positions @ self.last_price)
        self.equity = self.cash + self.positions_value

    def _fill_pending(self, bar: int, ts_ns: int, block: np.ndarray) -> None:
        opens = block[0]
        if len(self.pending) > 4:  # Python floats index faster than numpy scalars
            open_l, high_l, low_l = block[0].tolist(), block[1].tolist(), block[2].tolist()
        else:
            open_l, high_l, low_l = block[0], block[1], block[2]
        marks: np.ndarray | None = None
        ready: list[tuple[Order, float, float]] = []  # (order, delta shares, base price)
        waiting: list[Order] = []
        for order in self.pending:
            i = order.index
            o, h, lo = float(open_l[i]), float(high_l[i]), float(low_l[i])
            if order.submitted_bar >= bar or not (o == o and h == h and lo == lo):
                waiting.append(order)
                continue
            base = o
            if order.order_type == "limit":
                limit = order.limit_price
                buying = self._direction(order) > 0
                if buying and lo <= limit:
                    base = min(o, limit)
                elif not buying and h >= limit:
                    base = max(o, limit)
                else:
                    waiting.append(order)
                    continue
            if order.action == "BUY":
                delta = order.quantity
            elif order.action == "SELL":
                delta = -order.quantity
            else:
                if order.target_shares is not None:
                    target = order.target_shares
                else:
                    if marks is None:
                        marks = np.where(opens == opens, opens, self.last_price)
                        equity_now = self.cash + float(self.positions @ marks)
                    target = math.trunc(order.target_percent * equity_now / base)
                delta = target - float(self.positions[i])
            ready.append((order, delta, base))
        self.pending = waiting
        ready.sort(key=_buys_last)  # sells first, stable within each group
        highs, lows = block[1], block[2]
        for order, delta, base in ready:
            i = order.index
            self._execute(order, delta, base, ts_ns, float(highs[i]), float(lows[i]))

    def _direction(self, order: Order) -> int:
        if order.action == "BUY":
            return 1
        if order.action == "SELL":
            return -1
        target = order.target_shares
        if target is None:  # a percent target's direction is known only at fill; use the sign vs now
            equity = self.equity if self.equity > 0 else 0.0
            price = self.last_price[order.index] or 1.0
            target = order.target_percent * equity / price
        return 1 if target > self.positions[order.index] else -1

    def _execute(self, order: Order, delta: float, base: float, ts_ns: int, high: float, low: float) -> None:
        i = order.index
        pos = float(self.positions[i])
        if abs(delta) < _EPS:
            self._event(order, ts_ns, "cancelled", reason="already at target")
            return
        side = 1 if delta > 0 else -1
        costs = self.costs
        price = base * (1 + side * costs.slippage_bps / 10_000) + side * costs.slippage_range_fraction * (
            high - low
        )
        if order.limit_price is not None:
            price = min(price, order.limit_price) if side > 0 else max(price, order.limit_price)
        if price < low:
            price = low
        elif price > high:
            price = high
        if side < 0 and not self.settings.allow_short and pos + delta < -_EPS:
            self._event(
                order,
                ts_ns,
                "rejected",
                reason=f"short selling is disabled: position {pos:g}, sell {-delta:g}",
            )
            return
        qty = abs(delta)
        commission = costs.commission(qty, price)
        if side > 0 and qty * price + commission > self.cash + _EPS:
            if order.action == "TARGET":
                qty = self._affordable(price)
                commission = costs.commission(qty, price)
            if qty <= 0 or qty * price + commission > self.cash + _EPS:
                need = abs(delta) * price + costs.commission(abs(delta), price)
                self._event(
                    order,
                    ts_ns,
                    "rejected",
                    reason=f"insufficient cash: need {need:.2f}, have {self.cash:.2f}",
                )
                return
            delta = qty
        self.cash -= side * qty * price + commission
        self.positions[i] = pos + delta
        if not self.record:
            return
        symbol = self.symbols[i]
        fill = Fill(
            order.order_id,
            order.decision_id,
            ts_ns,
            symbol,
            "BUY" if side > 0 else "SELL",
            qty,
            price,
            commission,
            abs(price - base) * qty,
        )
        self.fills.append(fill)
        order.events.append(
            {
                "type": "filled",
                "time": self._iso(ts_ns),
                "order_id": order.order_id,
                "price": price,
                "quantity": qty,
                "side": fill.side,
                "commission": commission,
            }
        )
        self._book_trade(order, i, pos, side * qty, price, commission, ts_ns)

    def _affordable(self, price: float) -> float:
        """Whole shares the cash buys at ``price`` including commission."""
        costs = self.costs
        per_share = price * (1 + costs.commission_pct) + costs.commission_per_share
        qty = math.floor(max(self.cash, 0.0) / per_share)
        while qty > 0 and qty * price + costs.commission(qty, price) > self.cash + _EPS:
            qty -= 1
        return float(qty)

    def _event(self, order: Order, ts_ns: int, kind: str, **fields: Any) -> None:
        if self.record:
            order.events.append(
                {"type": kind, "time": self._iso(ts_ns), "order_id": order.order_id, **fields}
            )

    def bucket(self, decision_id: str | None) -> list[dict[str, Any]]:
        """The event list of a decision (created on first use)."""
        events = self.event_log.get(decision_id)
        if events is None:
            events = self.event_log[decision_id] = []
        return events

    @property
    def events(self) -> list[tuple[str | None, dict[str, Any]]]:
        """Every event as (decision id, event), grouped by decision."""
        return [(did, event) for did, events in self.event_log.items() for event in events]

    # ----------------------------------------------------------------- trades
    def _book_trade(
        self,
        order: Order,
        i: int,
        pos: float,
        delta: float,
        price: float,
        commission: float,
        ts_ns: int,
    ) -> None:
        symbol = self.symbols[i]
        trade = self.open_trades.get(i)
        remaining = abs(delta)
        if trade is not None:
            direction = 1 if trade.direction == "long" else -1
            if direction * delta > 0:  # adding to the position
                trade.quantity += remaining
                trade.entry_notional += remaining * price
                trade.pnl -= commission
                return
            closing = min(remaining, abs(pos))
            avg = trade.entry_price
            trade.pnl += direction * closing * (price - avg) - commission * closing / remaining
            trade.exit_quantity += closing
            trade.exit_notional += closing * price
            remaining -= closing
            if abs(pos + delta) < _EPS or direction * (pos + delta) < 0:
                trade.exit_ts = ts_ns
                self.trades.append(trade)
                del self.open_trades[i]
                order.events.append(
                    {
                        "type": "trade_closed",
                        "time": self._iso(ts_ns),
                        "symbol": symbol,
                        "direction": trade.direction,
                        "quantity": trade.quantity,
                        "entry_price": trade.entry_price,
                        "exit_price": trade.exit_price,
                        "pnl": trade.pnl,
                    }
                )
            if remaining < _EPS:
                return
        new = Trade(
            symbol=symbol,
            direction="long" if delta > 0 else "short",
            entry_ts=ts_ns,
            exit_ts=None,
            quantity=remaining,
            entry_notional=remaining * price,
            exit_quantity=0.0,
            exit_notional=0.0,
            pnl=-commission * remaining / abs(delta),
            decision_id=order.decision_id,
        )
        self.open_trades[i] = new
        order.events.append(
            {
                "type": "trade_opened",
                "time": self._iso(ts_ns),
                "symbol": symbol,
                "direction": new.direction,
                "quantity": remaining,
                "price": price,
            }
        )

    def all_trades(self) -> list[Trade]:
        """Closed trades then open ones, the open ones marked to the last price (unrealized P&L)."""
        out = list(self.trades)
        for i, trade in sorted(self.open_trades.items()):
            direction = 1 if trade.direction == "long" else -1
            held = trade.quantity - trade.exit_quantity
            marked = Trade(**{name: getattr(trade, name) for name in Trade.__slots__})
            marked.pnl = trade.pnl + direction * held * (float(self.last_price[i]) - trade.entry_price)
            out.append(marked)
        return out


def _buys_last(item: tuple[Order, float, float]) -> bool:
    return item[1] > 0
