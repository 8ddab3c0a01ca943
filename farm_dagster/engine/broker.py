"""The one simulated broker: the child's mirror and the parent's trusted accounting.

:mod:`farm_dagster.engine.book` compiles the same rules over typed columns (tested against this
class on random order flows, result for result); this module stays the reference and the mirror.

Vectorized over symbols for the per-bar work (marking to market is two numpy calls); orders are
handled one by one because they are sparse. Fill rules (the honest-fill contract):

* an order submitted on bar t is eligible from bar t+1; market orders fill at that bar's open;
* a buy limit fills when the bar's low <= limit, at min(open, limit); a sell limit when high >=
  limit, at max(open, limit); the price never leaves [low, high] (slippage is clamped);
* a buy stop triggers when the bar trades at or above the stop: at the open if it opens there
  (a gap), else at the stop; a sell stop symmetrically (backtrader's rule, so a backtrader
  agent's stop-loss fills where its own broker fills it); a trailing stop likewise, its stop
  moved toward each close it did not fill on (never away);
* a stop-limit turns into a limit order once its stop is reached (a trailing stop-limit moves its
  stop like a trailing stop, its limit at the same distance, until then); on the bar that reaches it
  intrabar it fills at the stop if the limit is beyond the stop, or at the limit when the bar
  reversed after the trigger and closed at or through the limit (backtrader's cases), else it
  waits as a limit;
* a market-on-close order fills at the close of the bar after the one it was decided on;
* an order with ``expires_at`` still open on a bar after that time is withdrawn ("expired")
  before that bar's fills (market orders do not expire);
* a CANCEL withdraws an open order before the next bar's fills (an order decided on bar t and
  cancelled on bar t never fills);
* OCO: orders linked with ``oco`` form a group; once one of them fills, is cancelled or is
  rejected, the others are cancelled at once (so at most one fills on a bar, the first in the
  fill order below); linking to an order that is no longer open places a stand-alone order;
* brackets: a child (``parent_ref``) waits until its parent fills and may fill from the next bar
  on; a parent that is cancelled or rejected takes its children with it, and a child that fills
  or is withdrawn cancels its siblings (backtrader's bracket rules, so a backtrader
  ``buy_bracket`` fills here exactly where its own broker fills it);
* a symbol whose bar is NaN (no trading) keeps its orders waiting;
* within a bar, orders that reduce or sell fill before orders that buy (a rebalance frees cash
  first), each group in submission order;
* an explicit BUY that costs more than the cash is rejected; a TARGET buy is shrunk to what the
  cash affords; a sell that would go short is rejected unless ``allow_short``;
* shorts pay ``borrow_rate_annual`` on their market value for the time they are held.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _json_str  # type: ignore[attr-defined]
from typing import Any

import numpy as np

from farm_dagster.engine.costs import BacktestSettings
from farm_dagster.engine.protocol import ORDER_TYPES as _ORDER_TYPES
from farm_dagster.engine.protocol import CheckedDecision, parse_order_ref
from farm_dagster.engine.protocol import dumps as _dumps
from farm_dagster.engine.protocol import float_text as _f
from farm_dagster.engine.protocol import number_text as _num

_NS_PER_YEAR = 365.25 * 24 * 3600 * 1e9
_NEVER = 2**62  # ``active_from`` of a bracket child whose parent has not filled
_EPS = 1e-9


def iso(ts_ns: int) -> str:
    """ISO-8601 UTC text of a bar time (second precision, the FMEL event time).

    Any int64 is accepted: an agent's order expiry may lie outside what ``datetime`` can print.
    """
    seconds = ts_ns // 1_000_000_000
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "0001-01-01T00:00:00Z" if seconds < 0 else "9999-12-31T23:59:59Z"


def iso_many(ts_ns: Iterable[int]) -> dict[int, str]:
    """{ts_ns: :func:`iso` text} for many bar times at once (one numpy call, not one per event)."""
    unique = np.unique(np.fromiter(ts_ns, dtype=np.int64))
    if not unique.size:
        return {}
    seconds = np.floor_divide(unique, 1_000_000_000).astype("datetime64[s]")
    texts = np.char.add(np.datetime_as_string(seconds, unit="s"), "Z")
    return dict(zip(unique.tolist(), texts.tolist(), strict=True))


@dataclass(slots=True, eq=False)  # identity, not field-by-field: the book looks orders up by ``in``
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
    events: list[Any]  # this decision's FMEL events (shared by its trades), see ``event_dict``
    stop_price: float | None = None
    seq: int = 0  # position in its bar's decisions: (submitted_bar, seq) is its protocol.order_ref
    trail_amount: float | None = None  # trailing stop: distance from the close, in price
    trail_percent: float | None = None  # ... or as a fraction of the close
    triggered: bool = False  # stop-limit: its stop was reached, it is a limit order now
    limit_offset: float | None = None  # trailing stop-limit: stop minus limit, kept as the stop moves
    expires_at: int | None = None  # ns: a non-market order is withdrawn on the first bar after it
    active_from: int = 0  # first bar it may fill on (a bracket child: only once its parent filled)
    open: bool = True  # still on the book
    linked: bool = False  # in an OCO group or a bracket: leaving the book settles the others
    oco: list[Order] | None = None  # its OCO group (one list shared by the members)
    parent: Order | None = None  # bracket child: the order it waits for
    children: list[Order] | None = None  # bracket parent: its children (the child's siblings)


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


# Events are kept as tuples ``(type, ts_ns, *fields)`` while the run goes (a dict and a time text
# per event cost more than the accounting) and become FMEL's JSON objects once, at the end.
# Optional fields of a "submitted" event, in tuple order: parent/oco are the order ids it is
# linked to, expires_at the ISO time after which it is withdrawn.
SUBMITTED_OPTIONAL = (
    "limit_price",
    "stop_price",
    "parent_order_id",
    "oco_order_id",
    "trail_amount",
    "trail_percent",
    "expires_at",
)
_NO_OPTIONAL = (None,) * len(SUBMITTED_OPTIONAL)
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    # "" = the size field, named in the tuple; then the optional fields (None = absent)
    "submitted": ("order_id", "", "order_type", *SUBMITTED_OPTIONAL),
    "cancelled": ("order_id", "reason"),
    "rejected": ("order_id", "reason"),
    "rejected_decision": ("reason",),  # a decision that failed the field checks (no order)
    "filled": ("order_id", "price", "quantity", "side", "commission"),
    "trade_closed": ("symbol", "direction", "quantity", "entry_price", "exit_price", "pnl"),
    "trade_opened": ("symbol", "direction", "quantity", "price"),
}


def event_dict(event: Any, time: str | None = None) -> dict[str, Any]:
    """The FMEL object of one event (dicts pass through: callers may log their own)."""
    if isinstance(event, dict):
        return event
    kind, ts_ns = event[0], event[1]
    out: dict[str, Any] = {"type": "rejected" if kind == "rejected_decision" else kind}
    out["time"] = time if time is not None else iso(ts_ns)
    if kind == "submitted":
        _, _, order_id, size_name, size, order_type, *optional = event
        out["order_id"] = order_id
        out[size_name] = size
        out["order_type"] = order_type
        for name, value in zip(SUBMITTED_OPTIONAL, optional, strict=True):
            if value is not None:
                out[name] = value
        return out
    out.update(zip(EVENT_FIELDS[kind], event[2:], strict=True))
    return out


_PLAIN = (float, int)


def _plain_numbers(values: tuple[Any, ...]) -> bool:
    """True when every value prints the same with ``%r`` as in JSON (finite float or int)."""
    for v in values:
        kind = type(v)
        if kind is float:
            if v - v != 0.0:
                return False
        elif kind is not int:
            return False
    return True


def event_json(event: Any, time: str) -> str:
    """JSON text of one event, byte-identical to ``protocol.dumps(event_dict(event, time))``.

    Common events are formatted from templates (``repr`` of a finite float or an int is its JSON
    text; floats go through the faster :func:`protocol.float_text`, which spells them the same);
    anything unusual goes through the JSON encoder.
    """
    if type(event) is tuple:
        kind = event[0]
        if kind == "filled":
            _, _, order_id, price, qty, side, commission = event
            if (
                type(order_id) is int
                and type(price) is float
                and type(qty) is float
                and type(commission) is float
                and price - price + qty - qty + commission - commission == 0.0
                and (side == "BUY" or side == "SELL")
            ):
                return (
                    f'{{"type":"filled","time":"{time}","order_id":{order_id!r},"price":{_f(price)},'
                    f'"quantity":{_f(qty)},"side":"{side}","commission":{_f(commission)}}}'
                )
        elif kind == "submitted":
            _, _, order_id, size_name, size, order_type = event[:6]
            if (
                type(order_id) is int
                and type(size) is float
                and size - size == 0.0
                and order_type in _ORDER_TYPES
            ):
                head = (
                    f'{{"type":"submitted","time":"{time}","order_id":{order_id!r},"{size_name}":{_f(size)},'
                    f'"order_type":"{order_type}"'
                )
                if event[6:] == _NO_OPTIONAL:
                    return head + "}"
                parts = [head]
                for name, value in zip(SUBMITTED_OPTIONAL, event[6:], strict=True):
                    if value is None:
                        continue
                    value_kind = type(value)
                    if value_kind is int or (value_kind is float and value - value == 0.0):
                        parts.append(f',"{name}":{_num(value)}')
                    elif value_kind is str:
                        parts.append(f',"{name}":{_json_str(value)}')
                    else:
                        break
                else:
                    parts.append("}")
                    return "".join(parts)
        elif kind == "cancelled" or kind == "rejected":
            _, _, order_id, reason = event
            if type(order_id) is int and type(reason) is str:
                return f'{{"type":"{kind}","time":"{time}","order_id":{order_id!r},"reason":{_json_str(reason)}}}'
        elif kind == "trade_opened":
            _, _, symbol, direction, qty, price = event
            if type(symbol) is str and _plain_numbers((qty, price)):
                return (
                    f'{{"type":"trade_opened","time":"{time}","symbol":{_json_str(symbol)},'
                    f'"direction":"{direction}","quantity":{_num(qty)},"price":{_num(price)}}}'
                )
        elif kind == "trade_closed":
            _, _, symbol, direction, qty, entry, exit_, pnl = event
            if type(symbol) is str and _plain_numbers((qty, entry, exit_, pnl)):
                return (
                    f'{{"type":"trade_closed","time":"{time}","symbol":{_json_str(symbol)},'
                    f'"direction":"{direction}","quantity":{_num(qty)},"entry_price":{_num(entry)},'
                    f'"exit_price":{_num(exit_)},"pnl":{_num(pnl)}}}'
                )
    return _dumps(event_dict(event, time))


def events_json(events: list[Any], times: dict[int, str]) -> str:
    """JSON array text of one decision's events; ``times`` maps ts_ns to its :func:`iso` text."""
    if len(events) == 1:
        event = events[0]
        return "[" + (event_json(event, times[event[1]]) if type(event) is tuple else _dumps(event)) + "]"
    return (
        "[" + ",".join([event_json(e, times[e[1]]) if type(e) is tuple else _dumps(e) for e in events]) + "]"
    )


class Broker:
    """Cash, positions, pending orders, fills and round-trip trades of one run."""

    def __init__(
        self,
        symbols: Sequence[str],
        settings: BacktestSettings,
        *,
        record: bool = True,
        track_updates: bool = False,
    ) -> None:
        self.symbols = tuple(symbols)
        self.settings = settings
        self.costs = settings.costs
        # Costs that are all zero (the default) are skipped per fill, with the same result.
        c = self.costs
        self._slippage = c.slippage_bps != 0 or c.slippage_range_fraction != 0
        self._commission = c.commission_per_share != 0 or c.commission_pct != 0 or c.min_commission != 0
        self.record = record  # the child's mirror skips the event/fill bookkeeping
        # What happened to the agent's orders since it last looked (the mirror's ``ctx.order_updates``):
        # (order, status, side, quantity, price, reason) tuples, taken by :meth:`take_updates`.
        self._updates: list[tuple[Any, ...]] | None = [] if track_updates else None
        n = len(self.symbols)
        self.cash = float(settings.initial_cash)
        self.positions = np.zeros(n)
        self.last_price = np.zeros(n)  # last finite close; 0 until a symbol first trades (position is 0 then)
        self.positions_value = 0.0
        self.equity = self.cash
        self.pending: list[Order] = []
        self._fills: list[tuple[Any, ...]] = []  # Fill fields, as tuples (see ``fills``)
        self._fill_objects: list[Fill] = []
        self.trades: list[Trade] = []
        self.open_trades: dict[int, Trade] = {}
        self._event_log: dict[str | None, list[Any]] = {}  # decision id -> its events (tuples)
        self.borrow_paid = 0.0
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self._borrow = settings.borrow_rate_annual > 0
        self._next_order_id = 1
        self._prev_ts: int | None = None
        self._bar = -1

    # ----------------------------------------------------------------- orders
    def submit(
        self, decision: CheckedDecision, decision_id: str | None, bar: int, ts_ns: int, seq: int = 0
    ) -> Order | None:
        """Queue an accepted order decided as the ``seq``-th decision of ``bar``; eligible from ``bar + 1``.

        A CANCEL is applied here too (see :meth:`cancel_order`); it returns None like a HOLD.
        """
        if decision.reject_reason is not None or decision.action == "HOLD":
            return None
        if decision.action == "CANCEL":
            self.cancel_order(decision, decision_id, ts_ns)
            return None
        index = self._index[decision.symbol]  # type: ignore[index]
        parent = oco_with = None
        if decision.parent_ref is not None:
            parent = self._open_order(decision.parent_ref)
            if parent is None:
                if self.record:
                    self.bucket(decision_id).append(
                        ("rejected_decision", ts_ns, f"parent order {decision.parent_ref} is not open")
                    )
                return None
        if decision.oco is not None:
            oco_with = self._open_order(decision.oco)  # None: no group to join, a stand-alone order
        stop_price = decision.stop_price
        if stop_price is None and decision.order_type == "trailing_stop":  # start from the close it saw
            close = float(self.last_price[index])
            trail = decision.trail_amount or close * decision.trail_percent  # type: ignore[operator]
            stop_price = close + trail if decision.action == "BUY" else close - trail
        order_id = self._next_order_id
        self._next_order_id = order_id + 1
        quantity, shares, percent = decision.quantity, decision.target_shares, decision.target_percent
        if self.record:
            events = self._event_log.get(decision_id)
            if events is None:
                events = self._event_log[decision_id] = []
            if quantity is not None:
                size_name, size = "quantity", quantity
            elif shares is not None:
                size_name, size = "target_shares", shares
            else:
                size_name, size = "target_percent", percent
            events.append(
                (
                    "submitted",
                    ts_ns,
                    order_id,
                    size_name,
                    size,
                    decision.order_type,
                    decision.limit_price,
                    stop_price,
                    None if parent is None else parent.order_id,
                    None if oco_with is None else oco_with.order_id,
                    decision.trail_amount,
                    decision.trail_percent,
                    None if decision.expires_at is None else iso(decision.expires_at),
                )
            )
        else:
            events = []
        order = Order(
            order_id,
            decision_id,
            index,
            decision.action,
            quantity,
            shares,
            percent,
            decision.order_type,
            decision.limit_price,
            bar,
            events,
            stop_price,
            seq,
            trail_amount=decision.trail_amount,
            trail_percent=decision.trail_percent,
            expires_at=decision.expires_at,
            active_from=bar + 1,
        )
        if decision.order_type == "trailing_stop_limit":
            order.limit_offset = stop_price - decision.limit_price  # type: ignore[operator]
        if parent is not None:
            order.parent, order.linked, order.active_from = parent, True, _NEVER
            if parent.children is None:
                parent.children, parent.linked = [], True
            parent.children.append(order)
        if oco_with is not None:
            group = oco_with.oco
            if group is None:
                group = oco_with.oco = [oco_with]
                oco_with.linked = True
            group.append(order)
            order.oco, order.linked = group, True
        self.pending.append(order)
        return order

    def _open_order(self, ref: str) -> Order | None:
        """The open order a protocol ref names (orders on the book are few: a scan is enough)."""
        key = parse_order_ref(ref)
        return next((o for o in self.pending if (o.submitted_bar, o.seq) == key), None)

    def _withdraw(
        self, order: Order, ts_ns: int, reason: str, bar: int, also: list[Any] | None = None
    ) -> None:
        """Take an open order off the book as cancelled, then settle what it is linked to.

        ``also``: another event list that gets the same "cancelled" event (a CANCEL decision's row).
        """
        order.open = False
        if order in self.pending:  # else the bar being filled took it off the list: ``open`` counts
            self.pending.remove(order)
        if self.record:
            event = ("cancelled", ts_ns, order.order_id, reason)
            order.events.append(event)
            if also is not None:
                also.append(event)
        if self._updates is not None:
            status = "expired" if reason == "expired" else "cancelled"
            self._updates.append((order, status, "", 0.0, math.nan, reason))
        if order.linked:
            self._settle(order, "cancelled", bar, ts_ns)

    def _settle(self, order: Order, outcome: str, bar: int, ts_ns: int) -> None:
        """``order`` left the book (``outcome``: filled | cancelled | rejected): apply its OCO and
        bracket links (backtrader's ``_ococheck`` and ``_bracketize``)."""
        group = order.oco
        if group is not None:
            order.oco = None
            for other in group:
                if other is not order and other.open:
                    other.oco = None
                    self._withdraw(other, ts_ns, f"OCO: order {order.order_id} {outcome}", bar)
            group.clear()
        children = order.children
        if children:
            if outcome == "filled":
                for child in children:
                    if child.open:
                        child.active_from = bar + 1
            else:
                for child in children:
                    if child.open:
                        self._withdraw(child, ts_ns, f"parent order {order.order_id} {outcome}", bar)
        parent = order.parent
        if parent is not None and parent.children:
            for sibling in parent.children:
                if sibling is not order and sibling.open:
                    self._withdraw(sibling, ts_ns, f"bracket: order {order.order_id} {outcome}", bar)

    def cancel_order(self, decision: CheckedDecision, decision_id: str | None, ts_ns: int) -> None:
        """Withdraw the open order ``decision.order_ref`` names; a cancel that finds none is rejected.

        The "cancelled" event lands on both rows: the order's own decision and the CANCEL.
        """
        target = self._open_order(decision.order_ref or "")
        if target is None or self.symbols[target.index] != decision.symbol:
            if self.record:
                self.bucket(decision_id).append(
                    (
                        "rejected_decision",
                        ts_ns,
                        f"no open {decision.symbol} order {decision.order_ref} to cancel "
                        "(filled, cancelled or rejected already, or never placed)",
                    )
                )
            return
        also = self.bucket(decision_id) if self.record else None
        self._withdraw(target, ts_ns, "cancelled by the agent", self._bar, also=also)

    def open_orders(self) -> list[Order]:
        """Orders still on the book, in submission order."""
        return list(self.pending)

    def reject_decision(self, decision_id: str | None, ts_ns: int, reason: str) -> None:
        """Log that a decision failed the field checks (it never became an order)."""
        if self.record:
            self.bucket(decision_id).append(("rejected_decision", ts_ns, reason))

    def cancel_all(self, ts_ns: int, reason: str) -> None:
        for order in self.pending:
            order.open = False
            if self.record:
                order.events.append(("cancelled", ts_ns, order.order_id, reason))
        self.pending.clear()

    # -------------------------------------------------------------------- bar
    def on_bar(self, bar: int, ts_ns: int, block: np.ndarray) -> None:
        """Advance to bar ``bar``: borrow fees, fills of eligible orders, mark to the close."""
        self._bar = bar
        if self._borrow and self._prev_ts is not None:
            short = self.positions < 0
            if short.any():
                value = -book_value(self.positions[short], self.last_price[short])
                fee = value * self.settings.borrow_rate_annual * (ts_ns - self._prev_ts) / _NS_PER_YEAR
                self.cash -= fee
                self.borrow_paid += fee
        self._prev_ts = ts_ns
        if self.pending:
            self._fill_pending(bar, ts_ns, block)
        close = block[3]
        np.copyto(self.last_price, close, where=close == close)  # NaN != NaN: keep the last real close
        self.positions_value = book_value(self.positions, self.last_price)
        self.equity = self.cash + self.positions_value

    def _fill_pending(self, bar: int, ts_ns: int, block: np.ndarray) -> None:
        opens = block[0]
        if len(self.pending) > 4:  # Python floats index faster than numpy scalars
            open_l, high_l, low_l = block[0].tolist(), block[1].tolist(), block[2].tolist()
        else:
            open_l, high_l, low_l = block[0], block[1], block[2]
        equity_now: float | None = None
        ready: list[tuple[Order, float, float, float, float]] = []  # (order, delta shares, base, high, low)
        waiting: list[Order] = []
        expired: list[Order] = []
        in_oco = False  # an order of an OCO group is ready: placement order decides within it
        for order in self.pending:
            if order.expires_at is not None and ts_ns > order.expires_at and order.order_type != "market":
                expired.append(order)  # backtrader's rule: a market order does not expire
                continue
            i = order.index
            o, h, lo = float(open_l[i]), float(high_l[i]), float(low_l[i])
            if order.active_from > bar or not (o == o and h == h and lo == lo):
                waiting.append(order)
                continue
            base = o
            if order.order_type != "market":
                base = self._trigger(order, o, h, lo, float(block[3][i]))
                if base is None:
                    waiting.append(order)
                    continue
            action = order.action
            if action == "BUY":
                delta = order.quantity
            elif action == "SELL":
                delta = -order.quantity
            else:
                held = float(self.positions[i])  # before this bar's fills: they come after this loop
                if order.target_shares is not None:
                    target = order.target_shares
                else:
                    if equity_now is None:
                        equity_now = self._equity_at(opens)
                    target = percent_target(order.target_percent, equity_now, base, held)
                delta = target - held
            if order.oco is not None:
                in_oco = True
            ready.append((order, delta, base, h, lo))
        self.pending = waiting
        for order in expired:
            if order.open:  # an OCO partner or bracket sibling that expired too may have taken it already
                self._withdraw(order, ts_ns, "expired", bar)
        if in_oco:
            ready = _sells_first_oco_in_placement_order(ready)
        else:
            ready.sort(key=_buys_last)  # sells first, stable within each group
        execute = self._execute
        for order, delta, base, h, lo in ready:
            if not order.open:
                continue  # withdrawn on this bar by an OCO sibling or its bracket
            outcome = execute(order, delta, base, ts_ns, h, lo)
            order.open = False
            if order.linked:
                self._settle(order, outcome, bar, ts_ns)

    def _equity_at(self, opens: np.ndarray) -> float:
        """Cash plus the book marked at this bar's opens (the last close where a symbol has none):
        what a percent target is sized on."""
        value = book_value(self.positions, opens)
        if value != value:  # a held symbol without an open (or a book that is not finite): the marks
            value = book_value(self.positions, np.where(opens == opens, opens, self.last_price))
        return self.cash + value

    def _trigger(self, order: Order, o: float, h: float, lo: float, c: float) -> float | None:
        """Base fill price of a limit or stop order on this bar, or None when it waits.

        Stop, stop-limit and trailing-stop follow backtrader's broker (``_try_exec_stop`` and
        ``_try_exec_stoplimit``, its intrabar cases included), so both give the same fills.
        """
        kind = order.order_type
        if kind == "market_on_close":
            return c
        if kind == "limit":
            return _limit_base(self._direction(order) > 0, order.limit_price, o, h, lo)  # type: ignore[arg-type]
        buying = order.action == "BUY"
        stop: float = order.stop_price  # type: ignore[assignment]
        if kind == "stop" or kind == "trailing_stop":
            if buying:
                base = o if o >= stop else stop if h >= stop else None
            else:
                base = o if o <= stop else stop if lo <= stop else None
            if base is None and kind == "trailing_stop":
                self._trail(order, c)
            return base
        if kind == "trailing_stop_limit":
            was_triggered = order.triggered
            base = _stop_limit_base(order, buying, stop, o, h, lo, c)
            if base is None and not was_triggered:  # backtrader trails it until it has triggered
                self._trail(order, c)
            return base
        return _stop_limit_base(order, buying, stop, o, h, lo, c)

    @staticmethod
    def _trail(order: Order, close: float) -> None:
        """Move a trailing stop after a bar it did not fill on: toward the close, never away."""
        amount = order.trail_amount if order.trail_amount else close * order.trail_percent  # type: ignore[operator]
        if order.action == "BUY":
            order.stop_price = min(order.stop_price, close + amount)  # type: ignore[type-var]
        else:
            order.stop_price = max(order.stop_price, close - amount)  # type: ignore[type-var]
        if order.limit_offset is not None:  # a trailing stop-limit: its limit keeps its distance
            order.limit_price = order.stop_price - order.limit_offset  # type: ignore[operator]

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

    def _execute(self, order: Order, delta: float, base: float, ts_ns: int, high: float, low: float) -> str:
        """Fill the order at ``base`` (costs, clamps, cash and short checks): filled | cancelled | rejected."""
        i = order.index
        positions = self.positions
        pos = float(positions[i])
        if abs(delta) < _EPS:
            self._event(order, ts_ns, "cancelled", "already at target")
            return "cancelled"
        side = 1 if delta > 0 else -1
        costs = self.costs
        price = base
        if self._slippage:
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
                order, ts_ns, "rejected", f"short selling is disabled: position {pos:g}, sell {-delta:g}"
            )
            return "rejected"
        qty = abs(delta)
        commission = costs.commission(qty, price) if self._commission else 0.0
        if side > 0 and qty * price + commission > self.cash + _EPS:
            if order.action == "TARGET":
                qty = self._affordable(price)
                commission = costs.commission(qty, price)
            if qty <= 0 or qty * price + commission > self.cash + _EPS:
                need = abs(delta) * price + costs.commission(abs(delta), price)
                self._event(
                    order, ts_ns, "rejected", f"insufficient cash: need {need:.2f}, have {self.cash:.2f}"
                )
                return "rejected"
            delta = qty
        self.cash -= side * qty * price + commission
        positions[i] = pos + delta
        if self._updates is not None:
            self._updates.append((order, "filled", "BUY" if side > 0 else "SELL", qty, price, ""))
        if not self.record:
            return "filled"
        side_text = "BUY" if side > 0 else "SELL"
        self._fills.append(
            (
                order.order_id,
                order.decision_id,
                ts_ns,
                self.symbols[i],
                side_text,
                qty,
                price,
                commission,
                abs(price - base) * qty,
            )
        )
        order.events.append(("filled", ts_ns, order.order_id, price, qty, side_text, commission))
        self._book_trade(order, i, pos, side * qty, price, commission, ts_ns)
        return "filled"

    def _affordable(self, price: float) -> float:
        """Whole shares the cash buys at ``price`` including commission."""
        costs = self.costs
        per_share = price * (1 + costs.commission_pct) + costs.commission_per_share
        qty = math.floor(max(self.cash, 0.0) / per_share)
        while qty > 0 and qty * price + costs.commission(qty, price) > self.cash + _EPS:
            qty -= 1
        return float(qty)

    def _event(self, order: Order, ts_ns: int, kind: str, reason: str) -> None:
        if self.record:
            order.events.append((kind, ts_ns, order.order_id, reason))
        if self._updates is not None:
            self._updates.append((order, kind, "", 0.0, math.nan, reason))

    def take_updates(self) -> list[tuple[Any, ...]]:
        """The order updates since the last call (fills, cancels, rejections, expiries), oldest first."""
        updates = self._updates
        if not updates:
            return []
        self._updates = []
        return updates

    def bucket(self, decision_id: str | None) -> list[Any]:
        """The event list of a decision (created on first use); events are tuples or dicts."""
        events = self._event_log.get(decision_id)
        if events is None:
            events = self._event_log[decision_id] = []
        return events

    @property
    def fills(self) -> list[Fill]:
        """Every fill, in order (built from the compact records on demand)."""
        made = self._fill_objects
        if len(made) != len(self._fills):
            made.extend(Fill(*row) for row in self._fills[len(made) :])
        return made

    def fill_rows(self) -> list[tuple[Any, ...]]:
        """Fills as tuples in :class:`Fill` field order (the cheap way to build a frame)."""
        return self._fills

    @property
    def event_log(self) -> dict[str | None, list[dict[str, Any]]]:
        """decision id -> its events as FMEL objects."""
        return {did: [event_dict(e) for e in events] for did, events in self._event_log.items()}

    @property
    def events(self) -> list[tuple[str | None, dict[str, Any]]]:
        """Every event as (decision id, event), grouped by decision."""
        return [(did, event_dict(e)) for did, events in self._event_log.items() for e in events]

    def events_json(self, only: Iterable[str | None] | None = None) -> dict[str | None, str]:
        """decision id -> JSON array text of its events (what FMEL stores), built in one pass.

        ``only``: just these decisions (the ones whose text was not rendered during the run).
        """
        log = self._event_log
        if only is not None:
            log = {did: log[did] for did in only if did in log}
        times = iso_many(e[1] for events in log.values() for e in events if type(e) is tuple)
        return {did: events_json(events, times) for did, events in log.items() if events}

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
                    (
                        "trade_closed",
                        ts_ns,
                        symbol,
                        trade.direction,
                        trade.quantity,
                        trade.entry_price,
                        trade.exit_price,
                        trade.pnl,
                    )
                )
            if remaining < _EPS:
                return
        direction_text = "long" if delta > 0 else "short"
        self.open_trades[i] = Trade(
            symbol,
            direction_text,
            ts_ns,
            None,
            remaining,
            remaining * price,
            0.0,
            0.0,
            -commission * remaining / abs(delta),
            order.decision_id,
        )
        order.events.append(("trade_opened", ts_ns, symbol, direction_text, remaining, price))

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


def _stop_limit_base(
    order: Order, buying: bool, stop: float, o: float, h: float, lo: float, c: float
) -> float | None:
    """A stop-limit on this bar (backtrader's ``_try_exec_stoplimit``): a limit order once its stop
    has been reached; on the bar that reaches it during the session, filled at the stop when the
    limit is beyond it, or at the limit when the bar reversed and closed through it."""
    limit: float = order.limit_price  # type: ignore[assignment]
    if order.triggered:
        return _limit_base(buying, limit, o, h, lo)
    if buying:
        if o >= stop:  # triggered by the open: a limit order from here on
            order.triggered = True
            return _limit_base(True, limit, o, h, lo)
        if h < stop:
            return None
        order.triggered = True  # triggered during the bar
        if limit >= stop:
            return stop
        return limit if o > c and limit >= c else None
    if o <= stop:
        order.triggered = True
        return _limit_base(False, limit, o, h, lo)
    if lo > stop:
        return None
    order.triggered = True
    if limit <= stop:
        return stop
    return limit if o <= c and limit <= c else None


def _limit_base(buying: bool, limit: float, o: float, h: float, lo: float) -> float | None:
    """A buy limit fills once the bar trades at or below it (at the better of open and limit), a sell
    limit once it trades at or above it; None = not this bar."""
    if buying:
        return min(o, limit) if lo <= limit else None
    return max(o, limit) if h >= limit else None


def book_value(shares: np.ndarray, prices: np.ndarray) -> float:
    """The sum of shares x price over symbols, exactly rounded (``math.fsum``).

    Why not a dot product: BLAS sums in an order that depends on the CPU it runs on, so the last
    bit of the book's value (and, through a percent target's whole shares, a fill) could differ
    between machines. The exactly rounded sum is one number whatever the order and the machine,
    and the compiled book (:mod:`farm_dagster.engine.book`) computes the same. A book whose value
    is not finite falls back to numpy's sum (it is not finite either way).
    """
    held = shares.nonzero()[0]  # a zero adds nothing; a book holds a few of its symbols at a time
    try:
        return math.fsum((shares[held] * prices[held]).tolist())
    except (OverflowError, ValueError):  # an overflow on the way, or inf - inf
        with np.errstate(over="ignore", invalid="ignore"):
            return float(np.sum(shares * prices))


def percent_target(percent: float, equity: float, price: float | None, held: float) -> float:
    """Whole shares (toward zero) that ``percent`` of ``equity`` buys at ``price``: how a percent
    target is sized at its fill, and how the log reads it at decision time. ``held`` (no change)
    when that has no size: no price, or a book that is not finite (the share limit in the checks
    keeps it finite)."""
    if not price:
        return held
    sized = percent * equity / price
    return math.trunc(sized) if sized - sized == 0.0 else held


def _buys_last(item: tuple[Order, float, float, float, float]) -> bool:
    return item[1] > 0


def _sells_first_oco_in_placement_order(
    ready: list[tuple[Order, float, float, float, float]],
) -> list[tuple[Order, float, float, float, float]]:
    """Sells before buys, except that the members of an OCO group all take the place of the group's
    first-placed member, behind it (``ready`` is in placement order and the sort is stable).

    Why: backtrader works its queue in placement order, so within a group the first-placed order
    that can trade on this bar decides the group, even when it is a buy and a sibling is a sell.
    Once it is worked, its settlement withdraws the others, whatever its outcome.
    """
    leads: dict[int, bool] = {}
    keys = []
    for order, delta, *_ in ready:
        group = order.oco
        keys.append(delta > 0 if group is None else leads.setdefault(id(group), delta > 0))
    order_of = sorted(range(len(ready)), key=keys.__getitem__)
    return [ready[k] for k in order_of]
