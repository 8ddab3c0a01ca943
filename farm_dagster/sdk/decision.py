"""What an agent answers: decisions, built with the helpers ``buy``/``sell``/``target_*``/``hold``.

A decision is plain data (it crosses the sandbox boundary as JSON). Sizes: ``buy``/``sell`` take a
share quantity; ``target_shares`` sets the position to a share count (negative = short);
``target_percent`` sets it to a fraction of equity (0.5 = half of equity, whole shares, computed
at the fill's price). ``confidence`` in [0, 1] and ``reasoning`` feed the decision log (FMEL).

Order types: market (the default), ``limit=`` (fills at the limit or better), ``stop=`` (a buy
stop triggers when the price trades at or above it, a sell stop at or below: a stop-loss),
``stop=`` with ``limit=`` (a stop-limit), ``trail_amount=``/``trail_percent=`` (a trailing
stop; with ``stop=`` and ``limit=`` too, a trailing stop-limit whose limit keeps its distance
from the stop) and ``on_close=True`` (market-on-close: the next bar's close instead of its open);
``expires=`` withdraws a non-market order still open on a bar after that time;
``oco=`` and ``parent=`` link orders, :func:`bracket` builds entry + exits.
Once the platform has sent an order it knows its ``ref``; ``cancel(order)`` withdraws it while
it is still open (``ctx.open_orders()`` lists those).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from farm_dagster.engine.protocol import epoch_ns, order_ref

# Optional numeric fields of a decision, in wire order (NaN/inf become null, see ``_plain``).
_NUMBER_FIELDS = (
    "quantity",
    "target_shares",
    "target_percent",
    "limit_price",
    "stop_price",
    "trail_amount",
    "trail_percent",
    "confidence",
)


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
    stop_price: float | None = None
    order_ref: str | None = None  # CANCEL: the ref of the open order it withdraws
    placed: tuple[int, int] | None = None  # (bar, seq) once the platform sent it: see ``ref``
    parent: Decision | OpenOrder | None = None  # bracket child: waits until this order fills
    oco: Decision | OpenOrder | None = None  # one-cancels-other with this order
    trail_amount: float | None = None  # trailing stop: distance from the close, in price
    trail_percent: float | None = None  # ... or as a fraction of the close
    expires_at: int | None = None  # ns since the epoch (see ``expires=`` of the helpers)

    @property
    def ref(self) -> str | None:
        """The platform's id of this order once sent (``None`` before): what :func:`cancel` names."""
        return None if self.placed is None else order_ref(*self.placed)

    def to_wire(self) -> dict[str, Any]:
        """The JSON form; empty fields are left out (keeps per-bar replies small)."""
        out: dict[str, Any] = {"symbol": self.symbol, "action": self.action}
        for name in _NUMBER_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = _plain(value)
        if self.order_type != "market":
            out["order_type"] = self.order_type
        if self.reasoning:
            out["reasoning"] = str(self.reasoning)
        if self.inputs:
            out["inputs"] = {str(k): _plain(v) for k, v in self.inputs.items()}
        if self.order_ref is not None:
            out["order_ref"] = str(self.order_ref)
        if self.parent is not None:
            out["parent_ref"] = _link_ref(self.parent, "parent")
        if self.oco is not None:
            out["oco"] = _link_ref(self.oco, "oco")
        if self.expires_at is not None:
            out["expires_at"] = int(self.expires_at)
        return out

    def to_compact(self) -> list[Any] | dict[str, Any]:
        """The compact array form (``protocol.COMPACT_FIELDS``); it expands to exactly :meth:`to_wire`.

        ``order_type=None`` has no array spelling (null means "market" there), so it keeps the
        object form and meets the same check as before.
        """
        order_type = self.order_type
        if (
            order_type is None
            or self.parent is not None
            or self.oco is not None
            or self.trail_amount is not None
            or self.trail_percent is not None
            or self.expires_at is not None
        ):
            return self.to_wire()  # no array spelling for these: the object form
        q, ts, tp, lp, c, inputs, sp, ref = (
            self.quantity,
            self.target_shares,
            self.target_percent,
            self.limit_price,
            self.confidence,
            self.inputs,
            self.stop_price,
            self.order_ref,
        )
        return [
            self.symbol,
            self.action,
            None if q is None else _plain(q),
            None if ts is None else _plain(ts),
            None if tp is None else _plain(tp),
            None if order_type == "market" else order_type,
            None if lp is None else _plain(lp),
            None if c is None else _plain(c),
            str(self.reasoning) if self.reasoning else None,
            {str(k): _plain(v) for k, v in inputs.items()} if inputs else None,
            None if sp is None else _plain(sp),
            None if ref is None else str(ref),
        ]


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """What happened to one of the agent's orders since its previous bar (``ctx.order_updates()``)."""

    ref: str
    symbol: str
    status: str  # filled | cancelled | rejected | expired
    side: str  # BUY | SELL for a fill, "" otherwise
    quantity: float  # shares filled (0 unless filled)
    price: float  # fill price (NaN unless filled)
    reason: str  # why it was cancelled, rejected or expired ("" for a fill)


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """An order still on the book (``ctx.open_orders()``); pass it to :func:`cancel` to withdraw it."""

    ref: str
    symbol: str
    action: str  # BUY | SELL | TARGET
    quantity: float | None
    target_shares: float | None
    target_percent: float | None
    order_type: str
    limit_price: float | None
    stop_price: float | None
    bar: int  # the bar it was decided on


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars; NaN/inf -> None so the JSON stays strict."""
    kind = type(value)
    if kind is float:
        return value if value - value == 0.0 else None  # inf - inf and nan - nan are nan
    if kind is int or kind is str or kind is bool or value is None:
        return value
    if isinstance(value, float):  # numpy.float64 and other float subclasses: the same double
        value = float(value)
        return value if value - value == 0.0 else None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def buy(
    symbol: str,
    quantity: float,
    *,
    expires: datetime | int | None = None,
    limit: float | None = None,
    on_close: bool = False,
    stop: float | None = None,
    trail_amount: float | None = None,
    trail_percent: float | None = None,
    parent: Decision | OpenOrder | None = None,
    oco: Decision | OpenOrder | None = None,
    confidence: float | None = None,
    reasoning: str = "",
    inputs: Mapping[str, Any] | None = None,
) -> Decision:
    """Buy ``quantity`` shares at the next bar's open, or: at ``limit`` or better; once the price
    trades at or above ``stop`` (with ``limit`` too: then only at ``limit`` or better); as a
    trailing stop ``trail_amount``/``trail_percent`` above the close that follows the price down
    (with ``stop=`` and ``limit=``: a trailing stop-limit starting at ``stop``).
    ``parent=``: wait until that order fills (a bracket child); ``oco=``: one-cancels-other."""
    return _trade("BUY", symbol, quantity, locals())


def sell(
    symbol: str,
    quantity: float,
    *,
    expires: datetime | int | None = None,
    limit: float | None = None,
    on_close: bool = False,
    stop: float | None = None,
    trail_amount: float | None = None,
    trail_percent: float | None = None,
    parent: Decision | OpenOrder | None = None,
    oco: Decision | OpenOrder | None = None,
    confidence: float | None = None,
    reasoning: str = "",
    inputs: Mapping[str, Any] | None = None,
) -> Decision:
    """Sell ``quantity`` shares (going short needs ``allow_short``); ``stop=`` makes it a stop-loss
    (it sells once the price trades at or below the stop), ``trail_percent=0.05`` a trailing stop 5%
    under the close that rises with the price (``stop=95, limit=94, trail_percent=0.05``: a trailing
    stop-limit that starts at 95 and never sells below its stop minus 1). Same options as
    :func:`buy`."""
    return _trade("SELL", symbol, quantity, locals())


def target_shares(
    symbol: str,
    shares: float,
    *,
    expires: datetime | int | None = None,
    limit: float | None = None,
    on_close: bool = False,
    confidence: float | None = None,
    reasoning: str = "",
    inputs: Mapping[str, Any] | None = None,
) -> Decision:
    """Trade whatever it takes to hold ``shares`` (0 closes the position); ``on_close=True`` trades
    at the next bar's close instead of its open."""
    return _target(symbol, shares, None, locals())


def target_percent(
    symbol: str,
    percent: float,
    *,
    expires: datetime | int | None = None,
    limit: float | None = None,
    on_close: bool = False,
    confidence: float | None = None,
    reasoning: str = "",
    inputs: Mapping[str, Any] | None = None,
) -> Decision:
    """Hold ``percent`` of equity in ``symbol`` (a fraction: 1.0 = all in, -0.5 = half short);
    ``on_close=True`` trades at the next bar's close instead of its open."""
    return _target(symbol, None, percent, locals())


def hold(
    symbol: str,
    *,
    confidence: float | None = None,
    reasoning: str = "",
    inputs: Mapping[str, Any] | None = None,
) -> Decision:
    """Explicitly do nothing, with a confidence and a reason (logged, no order)."""
    return Decision(symbol, "HOLD", None, None, None, "market", None, confidence, reasoning, inputs)


def cancel(
    order: Decision | OpenOrder,
    *,
    confidence: float | None = None,
    reasoning: str = "",
    inputs: Mapping[str, Any] | None = None,
) -> Decision:
    """Withdraw an open order (a :class:`Decision` already sent, or one of ``ctx.open_orders()``).

    Takes effect before the next bar's fills; cancelling an order that has filled is refused and
    logged as rejected.
    """
    ref = order.ref
    if ref is None:
        raise ValueError("this order has not been sent yet: return it first, cancel it on a later bar")
    return Decision(
        order.symbol, "CANCEL", None, None, None, "market", None, confidence, reasoning, inputs, order_ref=ref
    )


def _order_type(
    limit: float | None,
    stop: float | None,
    trail_amount: float | None = None,
    trail_percent: float | None = None,
    on_close: bool = False,
) -> str:
    if on_close:
        if limit is not None or stop is not None or trail_amount is not None or trail_percent is not None:
            raise ValueError("on_close=True is a market order at the close: no limit, stop or trail")
        return "market_on_close"
    if trail_amount is not None or trail_percent is not None:
        if trail_amount is not None and trail_percent is not None:
            raise ValueError("give trail_amount= or trail_percent=, not both")
        if limit is None:
            return "trailing_stop"
        if stop is None:
            raise ValueError(
                "a trailing stop-limit needs its starting stop= as well as limit= (the limit keeps its "
                "distance from the stop as the stop trails)"
            )
        return "trailing_stop_limit"
    if stop is None:
        return "market" if limit is None else "limit"
    return "stop" if limit is None else "stop_limit"


def bracket(
    symbol: str,
    quantity: float,
    *,
    stop: float,
    take_profit: float,
    limit: float | None = None,
    confidence: float | None = None,
    reasoning: str = "",
    inputs: Mapping[str, Any] | None = None,
) -> list[Decision]:
    """An entry with its exits: [entry, stop-loss, take-profit] (return the three together).

    ``quantity`` > 0 buys (a long bracket: sell stop below, sell limit above), < 0 sells short.
    The exits wait until the entry fills and may fill from the next bar; the first exit to fill
    cancels the other; cancelling the entry cancels both.
    """
    if not quantity:
        raise ValueError("a bracket needs a non-zero quantity")
    side, exit_side = (buy, sell) if quantity > 0 else (sell, buy)
    size = abs(quantity)
    entry = side(symbol, size, limit=limit, confidence=confidence, reasoning=reasoning, inputs=inputs)
    why = reasoning or "bracket"
    stop_loss = exit_side(symbol, size, stop=stop, parent=entry, reasoning=f"{why}: stop-loss")
    profit = exit_side(symbol, size, limit=take_profit, parent=entry, reasoning=f"{why}: take-profit")
    return [entry, stop_loss, profit]


def _trade(action: str, symbol: str, quantity: float, options: dict[str, Any]) -> Decision:
    """The decision :func:`buy` or :func:`sell` builds from its keyword options."""
    limit, stop = options["limit"], options["stop"]
    trail_amount, trail_percent = options["trail_amount"], options["trail_percent"]
    return Decision(
        symbol,
        action,
        quantity,
        None,
        None,
        _order_type(limit, stop, trail_amount, trail_percent, options["on_close"]),
        limit,
        options["confidence"],
        options["reasoning"],
        options["inputs"],
        stop,
        parent=options["parent"],
        oco=options["oco"],
        trail_amount=trail_amount,
        trail_percent=trail_percent,
        expires_at=_expiry(options["expires"]),
    )


def _target(symbol: str, shares: float | None, percent: float | None, options: dict[str, Any]) -> Decision:
    """The decision :func:`target_shares` or :func:`target_percent` builds from its keyword options."""
    limit = options["limit"]
    return Decision(
        symbol,
        "TARGET",
        None,
        shares,
        percent,
        _order_type(limit, None, on_close=options["on_close"]),
        limit,
        options["confidence"],
        options["reasoning"],
        options["inputs"],
        expires_at=_expiry(options["expires"]),
    )


def _expiry(expires: datetime | int | None) -> int | None:
    """``expires=`` as integer ns since the epoch (a naive datetime is taken as UTC)."""
    if expires is None:
        return None
    if isinstance(expires, datetime):
        return epoch_ns(expires)
    if isinstance(expires, int) and not isinstance(expires, bool):
        return expires
    raise TypeError(f"expires must be a datetime or integer nanoseconds, got {type(expires).__name__}")


def _link_ref(order: Decision | OpenOrder, name: str) -> str:
    ref = order.ref
    if ref is None:
        raise ValueError(
            f"the {name} order has not been placed: return it earlier in the same answer or on an earlier bar"
        )
    return ref
