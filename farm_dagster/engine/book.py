"""The trusted booking compiled: the rules of :mod:`farm_dagster.engine.broker` over arrays (numba).

Why: on a long run the parent's booking in Python (orders as objects, events as tuples, one
interpreted step per fill) is about half of the trusted parent's CPU, and the parent sets the
pace of a run (see bench/RESULTS.md). Here orders, fills, trades and events are typed columns
and a chunk of bars is booked in one compiled call.

The rules are the ones :class:`~farm_dagster.engine.broker.Broker` documents, step for step and
in the same order (fills, expiries, OCO groups, brackets, sells before buys, cash and short
checks, round-trip trades), so both give the same fills, trades and events; the tests hold them
to that, bit for bit, on the random order flows of ``tests/test_broker_invariants.py``
(``tests/test_book.py``). Sums over symbols (the book's value, borrow fees) are exactly rounded on
both sides (``broker.book_value``; :func:`_book_value` here), so they agree to the last bit
whatever the order of the terms.

What stays in Python: the field checks of each decision (they produce text), and turning the
columns into Python rows and FMEL texts (:class:`CompiledBook`). The parent's book of large runs
(``run_backtest``'s ``book="auto"``: from 1,000,000 symbol-bars) and of runs that ask for it
(``book="compiled"``), through :class:`~farm_dagster.engine.runner._CompiledRun`.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring_ascii as _json_str  # type: ignore[attr-defined]
from typing import Any, NamedTuple

import numba as nb
import numpy as np
import orjson
import pyarrow as pa

from farm_dagster.engine.broker import SUBMITTED_OPTIONAL, Trade, iso, iso_many
from farm_dagster.engine.broker import event_json as _json_text
from farm_dagster.engine.costs import BacktestSettings
from farm_dagster.engine.protocol import (
    ORJSON_AS_REPR_HIGH,
    ORJSON_AS_REPR_LOW,
    CheckedDecision,
    parse_order_ref,
)
from farm_dagster.fmel.rows import position_keys
from farm_dagster.fmel.rows import positions_texts as python_positions_texts

# ----------------------------------------------------------------------------------------- codes
BUY, SELL, TARGET, CANCEL = 1, 2, 3, 4
ACTION_CODES = {"BUY": BUY, "SELL": SELL, "TARGET": TARGET, "CANCEL": CANCEL}
MARKET, LIMIT, STOP, STOP_LIMIT, TRAILING_STOP, TRAILING_STOP_LIMIT, MARKET_ON_CLOSE = range(7)
TYPE_CODES = {
    "market": MARKET,
    "limit": LIMIT,
    "stop": STOP,
    "stop_limit": STOP_LIMIT,
    "trailing_stop": TRAILING_STOP,
    "trailing_stop_limit": TRAILING_STOP_LIMIT,
    "market_on_close": MARKET_ON_CLOSE,
}
TYPE_NAMES = {code: name for name, code in TYPE_CODES.items()}
# event kinds
EV_SUBMITTED, EV_FILLED, EV_CANCELLED, EV_REJECTED, EV_REJECTED_DECISION, EV_OPENED, EV_CLOSED = range(7)
# reasons of cancelled/rejected events (numbers in the event's f0/f1, an order id in i1)
R_AT_TARGET, R_SHORT, R_CASH, R_BY_AGENT, R_EXPIRED, R_OCO, R_PARENT, R_BRACKET, R_RUN_END = range(9)
R_NO_PARENT, R_NO_ORDER = 9, 10  # rejected_decision: a bracket child or a CANCEL that finds nothing
OUTCOMES = ("filled", "cancelled", "rejected")
FILLED, CANCELLED, REJECTED = range(3)
SIZE_NAMES = ("quantity", "target_shares", "target_percent")
_RENDER_BATCH = 65_536  # event rows whose numbers orjson spells in one call
_MAX_TEMPLATE = 512  # bytes of a template's own words, with room (the longest is about 300)
_IS_TEMPLATED = np.zeros(7, dtype=np.bool_)
_IS_TEMPLATED[[EV_SUBMITTED, EV_FILLED, EV_OPENED, EV_CLOSED]] = True
# Per event kind, the numbers (columns of ``f``) its text holds, and those it cannot do without
# (a submitted order's other numbers are optional: NaN = absent).
_NUMBERS_USED = np.zeros((7, 5), dtype=np.bool_)
_NUMBERS_USED[EV_SUBMITTED, :] = True
_NUMBERS_USED[EV_FILLED, :3] = True
_NUMBERS_USED[EV_OPENED, :2] = True
_NUMBERS_USED[EV_CLOSED, :4] = True
_NUMBERS_NEEDED = _NUMBERS_USED.copy()
_NUMBERS_NEEDED[EV_SUBMITTED, 1:] = False

_EPS = 1e-9
_NEVER = 2**62
_NS_PER_YEAR = 365.25 * 24 * 3600 * 1e9
# si: integer scalars of the book
I_ORDERS, I_EVENTS, I_FILLS, I_TRADES, I_PENDING, I_PREV_TS, I_HAS_PREV, I_BAR, I_GROUPS, I_CLOSED = range(10)
# sf: float scalars of the book
F_CASH, F_BORROW, F_EQUITY, F_POSVALUE = range(4)
# costs: the CostModel's numbers, in this order
C_PER_SHARE, C_PCT, C_MIN, C_SLIP_BPS, C_SLIP_RANGE = range(5)


class Orders(NamedTuple):
    dec: np.ndarray  # int64: the decision it came from (its FMEL row owns the order's events)
    sym: np.ndarray
    action: np.ndarray  # BUY | SELL | TARGET
    qty: np.ndarray  # float64, NaN = absent (also target_shares, target_percent, limit, ...)
    tshares: np.ndarray
    tpct: np.ndarray
    otype: np.ndarray
    limit: np.ndarray
    stop: np.ndarray
    trail_amt: np.ndarray
    trail_pct: np.ndarray
    limit_offset: np.ndarray
    has_exp: np.ndarray  # bool
    exp: np.ndarray  # int64 ns
    active_from: np.ndarray  # int64 bar
    triggered: np.ndarray  # bool
    is_open: np.ndarray  # bool
    linked: np.ndarray  # bool
    group: np.ndarray  # int64 OCO group, -1 none
    next_in_group: np.ndarray  # int64, -1 end
    parent: np.ndarray  # int64 order index, -1 none
    first_child: np.ndarray  # int64 order index, -1 none
    next_sibling: np.ndarray
    last_child: np.ndarray


class Events(NamedTuple):
    kind: np.ndarray  # int8 EV_*
    owner: np.ndarray  # int64 decision index
    ts: np.ndarray
    oid: np.ndarray  # order id (1-based), or the symbol of a trade event
    i1: np.ndarray  # submitted: parent order id | reasons: an order id
    i2: np.ndarray  # submitted: oco order id | reasons: outcome
    i3: np.ndarray  # submitted: expires_at ns (i3 valid when code bit 8 set)
    code: np.ndarray  # submitted: size kind * 16 + order type (+256 with expiry) | side | direction | reason
    f: np.ndarray  # (n, 5) float64


class Fills(NamedTuple):
    oid: np.ndarray
    dec: np.ndarray
    ts: np.ndarray
    sym: np.ndarray
    side: np.ndarray  # +1 BUY, -1 SELL
    qty: np.ndarray
    price: np.ndarray
    commission: np.ndarray
    slippage: np.ndarray


class Trades(NamedTuple):
    sym: np.ndarray
    direction: np.ndarray  # +1 long, -1 short
    entry_ts: np.ndarray
    exit_ts: np.ndarray
    closed: np.ndarray  # bool
    quantity: np.ndarray
    entry_notional: np.ndarray
    exit_qty: np.ndarray
    exit_notional: np.ndarray
    pnl: np.ndarray
    dec: np.ndarray


# The decisions of a chunk that reach the book (checked, not HOLD), in decision order, as two
# row-major tables (one row per decision: its fields side by side, and two arrays to hand over
# instead of eighteen). di (int64): the columns D_*; df (float64, NaN = absent): the columns X_*.
D_K, D_BAR, D_SEQ, D_SYM, D_ACTION, D_OTYPE, D_HAS_EXP, D_EXP, D_PARENT, D_OCO, D_REF = range(11)
# D_K: decision index (owner of its events); D_PARENT, D_OCO, D_REF (a CANCEL's order_ref): the
# decision index a ref names (-1 none, -2 names no decision)
X_QTY, X_TSHARES, X_TPCT, X_LIMIT, X_STOP, X_TRAIL_AMT, X_TRAIL_PCT = range(7)


# ------------------------------------------------------------------------------------ the kernel
_JIT = {"cache": True, "nogil": True}


@nb.njit(**_JIT, inline="always")
def _event(ev, si, kind, owner, ts, oid, code, f0=np.nan, f1=np.nan, f2=np.nan, f3=np.nan, i1=-1, i2=-1):
    n = si[I_EVENTS]
    ev.kind[n] = kind
    ev.owner[n] = owner
    ev.ts[n] = ts
    ev.oid[n] = oid
    ev.code[n] = code
    ev.i1[n] = i1
    ev.i2[n] = i2
    ev.i3[n] = 0
    ev.f[n, 0] = f0
    ev.f[n, 1] = f1
    ev.f[n, 2] = f2
    ev.f[n, 3] = f3
    ev.f[n, 4] = np.nan
    si[I_EVENTS] = n + 1


@nb.njit(**_JIT, inline="always")
def _remove_pending(pending, si, o):
    n = si[I_PENDING]
    for j in range(n):
        if pending[j] == o:
            for m in range(j, n - 1):
                pending[m] = pending[m + 1]
            si[I_PENDING] = n - 1
            return


@nb.njit(**_JIT)
def _take_off(od, ev, si, pending, o, ts, reason, ref_oid, outcome, also):
    """An open order leaves the book as cancelled: its events (what Broker._withdraw does first)."""
    od.is_open[o] = False
    _remove_pending(pending, si, o)
    _event(ev, si, EV_CANCELLED, od.dec[o], ts, o + 1, reason, i1=ref_oid, i2=outcome)
    if also >= 0:
        _event(ev, si, EV_CANCELLED, also, ts, o + 1, reason, i1=ref_oid, i2=outcome)


@nb.njit(**_JIT)
def _withdraw(od, ev, si, pending, o, ts, reason, ref_oid, outcome, also, bar, grp_head, grp_alive):
    """Take an open order off the book as cancelled, then settle its links (Broker._withdraw)."""
    _take_off(od, ev, si, pending, o, ts, reason, ref_oid, outcome, also)
    if od.linked[o]:
        _settle(od, ev, si, pending, o, CANCELLED, bar, ts, grp_head, grp_alive)


@nb.njit(**_JIT)
def _settle(od, ev, si, pending, o, outcome, bar, ts, grp_head, grp_alive):
    """``o`` left the book: its OCO group, then its bracket children, then its bracket siblings
    (Broker._settle). Each order withdrawn here settles its own links before the walk goes on, as
    the broker's recursion does; the recursion is unrolled into a stack of walks because numba
    crashed loading mutually recursive functions from its cache. A walk: (order, outcome, phase,
    cursor, group)."""
    depth_max = pending.shape[0] + 2
    s_o = np.empty(depth_max, dtype=np.int64)
    s_out = np.empty(depth_max, dtype=np.int64)
    s_phase = np.empty(depth_max, dtype=np.int64)
    s_cur = np.empty(depth_max, dtype=np.int64)
    s_g = np.empty(depth_max, dtype=np.int64)
    s_o[0], s_out[0], s_phase[0], s_cur[0], s_g[0] = o, outcome, -1, -1, -1
    top = 0
    while top >= 0:
        me, why, phase = s_o[top], s_out[top], s_phase[top]
        nxt = -1  # an order this walk withdraws next (its own walk runs before this one goes on)
        reason = 0
        if phase == -1:  # start: leave the OCO group
            g = od.group[me]
            s_g[top] = g
            s_cur[top] = -1
            if g >= 0:
                od.group[me] = -1
                s_cur[top] = grp_head[g]
            s_phase[top] = 0
            continue
        if phase == 0:  # the group's other open members, in the order they joined
            g = s_g[top]
            if g >= 0:
                cur = s_cur[top]
                while cur >= 0 and grp_alive[g]:
                    other = cur
                    cur = od.next_in_group[other]
                    if other != me and od.is_open[other]:
                        od.group[other] = -1
                        nxt, reason = other, R_OCO
                        break
                s_cur[top] = cur
                if nxt < 0:
                    grp_alive[g] = False
            if nxt < 0:
                s_phase[top] = 1
                s_cur[top] = od.first_child[me]
                if why == FILLED:  # children may fill from the next bar on
                    child = od.first_child[me]
                    while child >= 0:
                        if od.is_open[child]:
                            od.active_from[child] = bar + 1
                        child = od.next_sibling[child]
                    s_cur[top] = -1
                continue
        elif phase == 1:  # bracket children of a parent that did not fill
            cur = s_cur[top]
            while cur >= 0:
                child = cur
                cur = od.next_sibling[child]
                if od.is_open[child]:
                    nxt, reason = child, R_PARENT
                    break
            s_cur[top] = cur
            if nxt < 0:
                s_phase[top] = 2
                p = od.parent[me]
                s_cur[top] = od.first_child[p] if p >= 0 else -1
                continue
        elif phase == 2:  # bracket siblings
            cur = s_cur[top]
            while cur >= 0:
                sibling = cur
                cur = od.next_sibling[sibling]
                if sibling != me and od.is_open[sibling]:
                    nxt, reason = sibling, R_BRACKET
                    break
            s_cur[top] = cur
            if nxt < 0:
                top -= 1
                continue
        _take_off(od, ev, si, pending, nxt, ts, reason, me + 1, why, -1)
        if od.linked[nxt]:
            top += 1
            s_o[top], s_out[top], s_phase[top], s_cur[top], s_g[top] = nxt, CANCELLED, -1, -1, -1


@nb.njit(**_JIT, inline="always")
def _limit_base(buying, limit, o, h, lo):
    if buying:
        return min(o, limit) if lo <= limit else np.nan
    return max(o, limit) if h >= limit else np.nan


@nb.njit(**_JIT, inline="always")
def _stop_limit_base(od, k, buying, stop, o, h, lo, c):
    limit = od.limit[k]
    if od.triggered[k]:
        return _limit_base(buying, limit, o, h, lo)
    if buying:
        if o >= stop:
            od.triggered[k] = True
            return _limit_base(True, limit, o, h, lo)
        if h < stop:
            return np.nan
        od.triggered[k] = True
        if limit >= stop:
            return stop
        return limit if (o > c and limit >= c) else np.nan
    if o <= stop:
        od.triggered[k] = True
        return _limit_base(False, limit, o, h, lo)
    if lo > stop:
        return np.nan
    od.triggered[k] = True
    if limit <= stop:
        return stop
    return limit if (o <= c and limit <= c) else np.nan


@nb.njit(**_JIT, inline="always")
def _trail(od, k, close):
    amount = od.trail_amt[k]
    if amount != amount or amount == 0.0:  # ``trail_amount or close * trail_percent``
        amount = close * od.trail_pct[k]
    if od.action[k] == BUY:
        od.stop[k] = min(od.stop[k], close + amount)
    else:
        od.stop[k] = max(od.stop[k], close - amount)
    if od.limit_offset[k] == od.limit_offset[k]:
        od.limit[k] = od.stop[k] - od.limit_offset[k]


@nb.njit(**_JIT, inline="always")
def _direction(od, k, sf, positions, last_price):
    a = od.action[k]
    if a == BUY:
        return 1
    if a == SELL:
        return -1
    target = od.tshares[k]
    i = od.sym[k]
    if target != target:
        equity = sf[F_EQUITY] if sf[F_EQUITY] > 0 else 0.0
        price = last_price[i]
        if price == 0.0:  # ``last_price or 1.0``
            price = 1.0
        target = od.tpct[k] * equity / price
    return 1 if target > positions[i] else -1


@nb.njit(**_JIT, inline="always")
def _trigger(od, k, sf, positions, last_price, o, h, lo, c):
    kind = od.otype[k]
    if kind == MARKET_ON_CLOSE:
        return c
    if kind == LIMIT:
        return _limit_base(_direction(od, k, sf, positions, last_price) > 0, od.limit[k], o, h, lo)
    buying = od.action[k] == BUY
    stop = od.stop[k]
    if kind in (STOP, TRAILING_STOP):
        if buying:
            base = o if o >= stop else (stop if h >= stop else np.nan)
        else:
            base = o if o <= stop else (stop if lo <= stop else np.nan)
        if base != base and kind == TRAILING_STOP:
            _trail(od, k, c)
        return base
    if kind == TRAILING_STOP_LIMIT:
        was = od.triggered[k]
        base = _stop_limit_base(od, k, buying, stop, o, h, lo, c)
        if base != base and not was:
            _trail(od, k, c)
        return base
    return _stop_limit_base(od, k, buying, stop, o, h, lo, c)


@nb.njit(**_JIT, inline="always")
def _commission(costs, shares, price):
    if shares == 0:
        return 0.0
    fee = costs[C_PER_SHARE] * shares + costs[C_PCT] * shares * price
    return max(costs[C_MIN], fee)


@nb.njit(**_JIT, inline="always")
def _percent_target(percent, equity, price, held):
    if price == 0.0 or price != price:
        return held
    sized = percent * equity / price
    if sized - sized == 0.0:
        return float(np.trunc(sized))
    return held


@nb.njit(**_JIT, inline="always")
def _book_trade(od, ev, tr, si, trade_of, closed_order, o, i, pos, delta, price, commission, ts):
    t = trade_of[i]
    remaining = abs(delta)
    owner = od.dec[o]
    if t >= 0:
        direction = tr.direction[t]
        if direction * delta > 0:
            tr.quantity[t] += remaining
            tr.entry_notional[t] += remaining * price
            tr.pnl[t] -= commission
            return
        closing = min(remaining, abs(pos))
        avg = tr.entry_notional[t] / tr.quantity[t]
        tr.pnl[t] += direction * closing * (price - avg) - commission * closing / remaining
        tr.exit_qty[t] += closing
        tr.exit_notional[t] += closing * price
        remaining -= closing
        if abs(pos + delta) < _EPS or direction * (pos + delta) < 0:
            tr.exit_ts[t] = ts
            tr.closed[t] = True
            closed_order[si[I_CLOSED]] = t
            si[I_CLOSED] += 1
            trade_of[i] = -1
            exit_price = tr.exit_notional[t] / tr.exit_qty[t] if tr.exit_qty[t] else np.nan
            _event(
                ev, si, EV_CLOSED, owner, ts, i, direction,
                tr.quantity[t], tr.entry_notional[t] / tr.quantity[t], exit_price, tr.pnl[t],
            )  # fmt: skip
        if remaining < _EPS:
            return
    direction = 1 if delta > 0 else -1
    t = si[I_TRADES]
    si[I_TRADES] = t + 1
    tr.sym[t] = i
    tr.direction[t] = direction
    tr.entry_ts[t] = ts
    tr.exit_ts[t] = 0
    tr.closed[t] = False
    tr.quantity[t] = remaining
    tr.entry_notional[t] = remaining * price
    tr.exit_qty[t] = 0.0
    tr.exit_notional[t] = 0.0
    tr.pnl[t] = -commission * remaining / abs(delta)
    tr.dec[t] = owner
    trade_of[i] = t
    _event(ev, si, EV_OPENED, owner, ts, i, direction, remaining, price)


@nb.njit(**_JIT, inline="always")
def _execute(
    od,
    ev,
    fl,
    tr,
    si,
    sf,
    costs,
    allow_short,
    positions,
    trade_of,
    closed_order,
    o,
    delta,
    base,
    ts,
    high,
    low,
):
    """Fill order ``o`` at ``base`` (Broker._execute): FILLED | CANCELLED | REJECTED."""
    i = od.sym[o]
    pos = positions[i]
    owner = od.dec[o]
    if abs(delta) < _EPS:
        _event(ev, si, EV_CANCELLED, owner, ts, o + 1, R_AT_TARGET)
        return CANCELLED
    side = 1 if delta > 0 else -1
    price = base * (1 + side * costs[C_SLIP_BPS] / 10_000) + side * costs[C_SLIP_RANGE] * (high - low)
    limit = od.limit[o]
    if limit == limit:
        price = min(price, limit) if side > 0 else max(price, limit)
    if price < low:
        price = low
    elif price > high:
        price = high
    if side < 0 and not allow_short and pos + delta < -_EPS:
        _event(ev, si, EV_REJECTED, owner, ts, o + 1, R_SHORT, pos, -delta)
        return REJECTED
    qty = abs(delta)
    commission = _commission(costs, qty, price)
    cash = sf[F_CASH]
    if side > 0 and qty * price + commission > cash + _EPS:
        if od.action[o] == TARGET:
            per_share = price * (1 + costs[C_PCT]) + costs[C_PER_SHARE]
            qty = np.floor(max(cash, 0.0) / per_share)
            while qty > 0 and qty * price + _commission(costs, qty, price) > cash + _EPS:
                qty -= 1
            commission = _commission(costs, qty, price)
        if qty <= 0 or qty * price + commission > cash + _EPS:
            need = abs(delta) * price + _commission(costs, abs(delta), price)
            _event(ev, si, EV_REJECTED, owner, ts, o + 1, R_CASH, need, cash)
            return REJECTED
        delta = qty
    sf[F_CASH] = cash - (side * qty * price + commission)
    positions[i] = pos + delta
    n = si[I_FILLS]
    fl.oid[n] = o + 1
    fl.dec[n] = owner
    fl.ts[n] = ts
    fl.sym[n] = i
    fl.side[n] = side
    fl.qty[n] = qty
    fl.price[n] = price
    fl.commission[n] = commission
    fl.slippage[n] = abs(price - base) * qty
    si[I_FILLS] = n + 1
    _event(ev, si, EV_FILLED, owner, ts, o + 1, side, price, qty, commission)
    _book_trade(od, ev, tr, si, trade_of, closed_order, o, i, pos, side * qty, price, commission, ts)
    return FILLED


@nb.njit(**_JIT, inline="always")
def _book_value(shares, prices, only_short):
    """Sum of shares x price (of the short positions only, ``only_short``), exactly rounded: CPython's
    ``math.fsum`` step for step (Shewchuk's partials, then its half-even fix), so the compiled
    and the Python book (``broker.book_value``) give the same double. Not finite: a plain sum."""
    partials = np.empty(64)
    n = 0
    plain = 0.0
    finite = True
    for i in range(shares.shape[0]):
        if only_short and not shares[i] < 0:
            continue
        x = shares[i] * prices[i]
        plain += x
        if not finite or x == 0.0:  # a zero changes no exact sum (CPython walks it through, same result)
            continue
        m = 0
        for j in range(n):
            y = partials[j]
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            yr = hi - x
            lo = y - yr
            if lo != 0.0:
                partials[m] = lo
                m += 1
            x = hi
        n = m
        if x != 0.0:
            if x - x != 0.0:
                finite = False  # an overflow on the way, or a summand that is not finite
            elif n < 64:
                partials[n] = x
                n += 1
            else:
                finite = False  # never with doubles (at most ~40 partials); kept safe
    if not finite:
        return plain
    hi = 0.0
    if n > 0:
        n -= 1
        hi = partials[n]
        lo = 0.0
        while n > 0:
            x = hi
            n -= 1
            y = partials[n]
            hi = x + y
            yr = hi - x
            lo = y - yr
            if lo != 0.0:
                break
        if n > 0 and ((lo < 0.0 and partials[n - 1] < 0.0) or (lo > 0.0 and partials[n - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            yr = x - hi
            if y == yr:
                hi = x
    return hi


@nb.njit(**_JIT, inline="always")
def _on_bar(od, ev, fl, tr, si, sf, costs, allow_short, borrow_rate, positions, last_price, trade_of,
            closed_order, pending, grp_head, grp_alive, scratch, t, ts, opens, highs, lows, closes):  # fmt: skip
    """Broker.on_bar: borrow fees, fills of the eligible orders, mark to the close."""
    si[I_BAR] = t
    n_sym = positions.shape[0]
    if borrow_rate > 0 and si[I_HAS_PREV]:
        any_short = False
        for i in range(n_sym):
            if positions[i] < 0:
                any_short = True
        if any_short:
            value = -_book_value(positions, last_price, True)
            fee = value * borrow_rate * (ts - si[I_PREV_TS]) / _NS_PER_YEAR
            sf[F_CASH] -= fee
            sf[F_BORROW] += fee
    si[I_PREV_TS] = ts
    si[I_HAS_PREV] = 1
    n_pending = si[I_PENDING]
    if n_pending:
        ready = scratch[0]  # order indices
        ready_delta = scratch[1].view(np.float64)
        ready_base = scratch[2].view(np.float64)
        expired = scratch[3]
        held = scratch[4].view(np.float64)
        n_ready = 0
        n_expired = 0
        n_wait = 0
        have_held = False
        have_equity = False
        equity_now = 0.0
        for j in range(n_pending):
            o = pending[j]
            if od.has_exp[o] and ts > od.exp[o] and od.otype[o] != MARKET:
                expired[n_expired] = o
                n_expired += 1
                continue
            i = od.sym[o]
            op, h, lo = opens[i], highs[i], lows[i]
            if od.active_from[o] > t or not (op == op and h == h and lo == lo):
                pending[n_wait] = o
                n_wait += 1
                continue
            base = op
            if od.otype[o] != MARKET:
                base = _trigger(od, o, sf, positions, last_price, op, h, lo, closes[i])
                if base != base:
                    pending[n_wait] = o
                    n_wait += 1
                    continue
            a = od.action[o]
            if a == BUY:
                delta = od.qty[o]
            elif a == SELL:
                delta = -od.qty[o]
            else:
                if not have_held:
                    for m in range(n_sym):
                        held[m] = positions[m]
                    have_held = True
                target = od.tshares[o]
                if target != target:
                    if not have_equity:
                        marks = scratch[5].view(np.float64)[:n_sym]
                        for m in range(n_sym):
                            marks[m] = opens[m] if opens[m] == opens[m] else last_price[m]
                        equity_now = sf[F_CASH] + _book_value(positions, marks, False)
                        have_equity = True
                    target = _percent_target(od.tpct[o], equity_now, base, held[i])
                delta = target - held[i]
            ready[n_ready] = o
            ready_delta[n_ready] = delta
            ready_base[n_ready] = base
            n_ready += 1
        si[I_PENDING] = n_wait
        for j in range(n_expired):
            o = expired[j]
            if od.is_open[o]:
                _withdraw(od, ev, si, pending, o, ts, R_EXPIRED, -1, CANCELLED, -1, t, grp_head, grp_alive)
        # the fill order: sells first, then buys; an OCO group's members all take the place of its
        # first-placed ready member (Broker._sells_first_oco_in_placement_order)
        keys = scratch[5]
        for j in range(n_ready):
            keys[j] = 1 if ready_delta[j] > 0 else 0
            g = od.group[ready[j]]
            if g >= 0:
                for m in range(j):
                    if od.group[ready[m]] == g:
                        keys[j] = keys[m]
                        break
        order_of = scratch[6]
        n_sorted = 0
        for key in range(2):
            for j in range(n_ready):
                if keys[j] == key:
                    order_of[n_sorted] = j
                    n_sorted += 1
        for m in range(n_sorted):
            j = order_of[m]
            o = ready[j]
            if not od.is_open[o]:
                continue
            i = od.sym[o]
            outcome = _execute(od, ev, fl, tr, si, sf, costs, allow_short, positions, trade_of,
                               closed_order, o, ready_delta[j], ready_base[j], ts, highs[i], lows[i])  # fmt: skip
            od.is_open[o] = False
            if od.linked[o]:
                _settle(od, ev, si, pending, o, outcome, t, ts, grp_head, grp_alive)
    for i in range(n_sym):
        c = closes[i]
        if c == c:
            last_price[i] = c
    value = _book_value(positions, last_price, False)
    sf[F_POSVALUE] = value
    sf[F_EQUITY] = sf[F_CASH] + value


@nb.njit(**_JIT, inline="always")
def _submit(od, ev, si, pending, grp_head, grp_tail, grp_alive, dec_order, last_price, di, df, j, ts):
    """Broker.submit for decision ``j`` of the chunk (a CANCEL too)."""
    k = di[j, D_K]
    t = di[j, D_BAR]
    if di[j, D_ACTION] == CANCEL:
        r = di[j, D_REF]
        o = dec_order[r] if r >= 0 else -1
        if o < 0 or not od.is_open[o] or od.sym[o] != di[j, D_SYM]:
            _event(ev, si, EV_REJECTED_DECISION, k, ts, -1, R_NO_ORDER)
            return
        _withdraw(od, ev, si, pending, o, ts, R_BY_AGENT, -1, CANCELLED, k, si[I_BAR], grp_head, grp_alive)
        return
    parent = -1
    oco_with = -1
    if di[j, D_PARENT] != -1:
        r = di[j, D_PARENT]
        parent = dec_order[r] if r >= 0 else -1
        if parent >= 0 and not od.is_open[parent]:
            parent = -1
        if parent < 0:
            _event(ev, si, EV_REJECTED_DECISION, k, ts, -1, R_NO_PARENT)
            return
    if di[j, D_OCO] != -1:
        r = di[j, D_OCO]
        oco_with = dec_order[r] if r >= 0 else -1
        if oco_with >= 0 and not od.is_open[oco_with]:
            oco_with = -1
    i = di[j, D_SYM]
    stop = df[j, X_STOP]
    if stop != stop and di[j, D_OTYPE] == TRAILING_STOP:
        close = last_price[i]
        trail = df[j, X_TRAIL_AMT]
        if trail != trail or trail == 0.0:
            trail = close * df[j, X_TRAIL_PCT]
        stop = close + trail if di[j, D_ACTION] == BUY else close - trail
    o = si[I_ORDERS]
    si[I_ORDERS] = o + 1
    dec_order[k] = o
    od.dec[o] = k
    od.sym[o] = i
    od.action[o] = di[j, D_ACTION]
    od.qty[o] = df[j, X_QTY]
    od.tshares[o] = df[j, X_TSHARES]
    od.tpct[o] = df[j, X_TPCT]
    od.otype[o] = di[j, D_OTYPE]
    od.limit[o] = df[j, X_LIMIT]
    od.stop[o] = stop
    od.trail_amt[o] = df[j, X_TRAIL_AMT]
    od.trail_pct[o] = df[j, X_TRAIL_PCT]
    od.limit_offset[o] = stop - df[j, X_LIMIT] if di[j, D_OTYPE] == TRAILING_STOP_LIMIT else np.nan
    od.has_exp[o] = di[j, D_HAS_EXP] != 0
    od.exp[o] = di[j, D_EXP]
    od.active_from[o] = t + 1
    od.triggered[o] = False
    od.is_open[o] = True
    od.linked[o] = False
    od.group[o] = -1
    od.next_in_group[o] = -1
    od.parent[o] = -1
    od.first_child[o] = -1
    od.next_sibling[o] = -1
    od.last_child[o] = -1
    if df[j, X_QTY] == df[j, X_QTY]:
        size_kind, size = 0, df[j, X_QTY]
    elif df[j, X_TSHARES] == df[j, X_TSHARES]:
        size_kind, size = 1, df[j, X_TSHARES]
    else:
        size_kind, size = 2, df[j, X_TPCT]
    n = si[I_EVENTS]
    _event(
        ev, si, EV_SUBMITTED, k, ts, o + 1, size_kind * 16 + di[j, D_OTYPE] + (256 if di[j, D_HAS_EXP] else 0),
        size, df[j, X_LIMIT], stop, df[j, X_TRAIL_AMT],
        i1=parent + 1 if parent >= 0 else -1, i2=oco_with + 1 if oco_with >= 0 else -1,
    )  # fmt: skip
    ev.f[n, 4] = df[j, X_TRAIL_PCT]
    ev.i3[n] = di[j, D_EXP]
    if parent >= 0:
        od.parent[o] = parent
        od.linked[o] = True
        od.active_from[o] = _NEVER
        if od.first_child[parent] < 0:
            od.first_child[parent] = o
            od.linked[parent] = True
        else:
            od.next_sibling[od.last_child[parent]] = o
        od.last_child[parent] = o
    if oco_with >= 0:
        g = od.group[oco_with]
        if g < 0:
            g = si[I_GROUPS]
            si[I_GROUPS] = g + 1
            grp_head[g] = oco_with
            grp_tail[g] = oco_with
            grp_alive[g] = True
            od.group[oco_with] = g
            od.linked[oco_with] = True
        od.next_in_group[grp_tail[g]] = o
        grp_tail[g] = o
        od.group[o] = g
        od.linked[o] = True
    pending[si[I_PENDING]] = o
    si[I_PENDING] += 1


@nb.njit(**_JIT)
def _book_chunk(od, ev, fl, tr, di, df, si, sf, costs, allow_short, borrow_rate, positions, last_price,
                trade_of, closed_order, pending, grp_head, grp_tail, grp_alive, dec_order, scratch,
                lo, hi, timestamps, opens, highs, lows, closes, out_cash, out_posvalue, out_equity,
                out_positions):  # fmt: skip
    """Bars ``lo``..``hi - 1``: each bar's fills and marks, then its decisions (the runner's order)."""
    j = 0
    n_dec = di.shape[0]
    for t in range(lo, hi):
        ts = timestamps[t]
        _on_bar(od, ev, fl, tr, si, sf, costs, allow_short, borrow_rate, positions, last_price, trade_of,
                closed_order, pending, grp_head, grp_alive, scratch, t, ts, opens[t], highs[t], lows[t],
                closes[t])  # fmt: skip
        out_cash[t] = sf[F_CASH]
        out_posvalue[t] = sf[F_POSVALUE]
        out_equity[t] = sf[F_EQUITY]
        out_positions[t] = positions
        while j < n_dec and di[j, D_BAR] == t:
            _submit(od, ev, si, pending, grp_head, grp_tail, grp_alive, dec_order, last_price, di, df, j, ts)
            j += 1


@nb.njit(**_JIT)
def _cancel_all(od, ev, si, pending, ts):
    for j in range(si[I_PENDING]):
        o = pending[j]
        od.is_open[o] = False
        _event(ev, si, EV_CANCELLED, od.dec[o], ts, o + 1, R_RUN_END)
    si[I_PENDING] = 0


# ------------------------------------------------------------------------ event texts, compiled
# The broker's templates (``broker.event_json``), cut where a value goes in, as one byte buffer
# (``_LIT``) and where each piece starts (``_LIT_AT``; piece p is _LIT[_LIT_AT[p]:_LIT_AT[p + 1]]).
_PIECES = (
    '{"type":"filled","time":"',  # 0
    '{"type":"submitted","time":"',  # 1
    '{"type":"trade_opened","time":"',  # 2
    '{"type":"trade_closed","time":"',  # 3
    '","order_id":',  # 4
    ',"price":',  # 5
    ',"quantity":',  # 6
    ',"side":"BUY","commission":',  # 7
    ',"side":"SELL","commission":',  # 8
    '","symbol":',  # 9
    ',"direction":"long"',  # 10
    ',"direction":"short"',  # 11
    ',"entry_price":',  # 12
    ',"exit_price":',  # 13
    ',"pnl":',  # 14
    *(f',"{name}":' for name in SIZE_NAMES),  # 15, 16, 17
    # 18-23: a submitted order's optional numbers, in the broker's order (its expiry: the Python way)
    *(f',"{name}":' for name in SUBMITTED_OPTIONAL[:6]),
    *(f',"order_type":"{TYPE_NAMES.get(code, "")}"' for code in range(16)),  # 24 + order type code
)
_LIT = np.frombuffer("".join(_PIECES).encode("ascii"), dtype=np.uint8)
_LIT_AT = np.cumsum([0, *(len(p) for p in _PIECES)]).astype(np.int64)


@nb.njit(**_JIT, inline="always")
def _put(out, at, src, lo, hi):
    out[at : at + hi - lo] = src[lo:hi]
    return at + hi - lo


@nb.njit(**_JIT, inline="always")
def _lit(out, at, lit, lit_at, p):
    return _put(out, at, lit, lit_at[p], lit_at[p + 1])


@nb.njit(**_JIT, inline="always")
def _int(out, at, value):
    """Decimal digits of ``value`` >= 0 (``repr`` of an int)."""
    n = 1
    rest = value // 10
    while rest:
        n += 1
        rest //= 10
    for k in range(n - 1, -1, -1):
        out[at + k] = 48 + value % 10
        value //= 10
    return at + n


@nb.njit(**_JIT)
def _number_spans(blob, starts, ends):
    """Where each number of an orjson array text (lists of numbers) starts and ends; returns how many."""
    k = 0
    i = 0
    n = blob.shape[0]
    while i < n:
        c = blob[i]
        if c == 91 or c == 93 or c == 44:  # [ ] ,
            i += 1
            continue
        starts[k] = i
        while i < n and blob[i] != 44 and blob[i] != 93:
            i += 1
        ends[k] = i
        k += 1
    return k


@nb.njit(**_JIT, inline="always")
def _render_event(m, kinds, oids, codes, i1s, i2s, numbers, times, time_at, time_of, symbols, symbol_at,
                  blob, f_start, f_end, own, own_at, lit, lit_at, out, at):  # fmt: skip
    """Event row ``m``'s FMEL text, written at ``out[at:]``; returns where it ends.

    A row with a text of its own (``own_at[m] < own_at[m + 1]``: spelled the broker's Python way,
    for reasons, expiries and numbers that are not finite) is copied from ``own``.
    """
    if own_at[m] < own_at[m + 1]:
        return _put(out, at, own, own_at[m], own_at[m + 1])
    x = 5 * m
    kind = kinds[m]
    if kind == EV_FILLED:
        at = _lit(out, at, lit, lit_at, 0)
    elif kind == EV_SUBMITTED:
        at = _lit(out, at, lit, lit_at, 1)
    elif kind == EV_OPENED:
        at = _lit(out, at, lit, lit_at, 2)
    else:
        at = _lit(out, at, lit, lit_at, 3)
    t = time_of[m]
    at = _put(out, at, times, time_at[t], time_at[t + 1])
    if kind == EV_FILLED:
        at = _lit(out, at, lit, lit_at, 4)
        at = _int(out, at, oids[m])
        at = _lit(out, at, lit, lit_at, 5)
        at = _put(out, at, blob, f_start[x], f_end[x])
        at = _lit(out, at, lit, lit_at, 6)
        at = _put(out, at, blob, f_start[x + 1], f_end[x + 1])
        at = _lit(out, at, lit, lit_at, 7 if codes[m] > 0 else 8)
        at = _put(out, at, blob, f_start[x + 2], f_end[x + 2])
    elif kind == EV_SUBMITTED:
        code = codes[m]
        at = _lit(out, at, lit, lit_at, 4)
        at = _int(out, at, oids[m])
        at = _lit(out, at, lit, lit_at, 15 + (code & 255) // 16)
        at = _put(out, at, blob, f_start[x], f_end[x])
        at = _lit(out, at, lit, lit_at, 24 + code % 16)
        for c in range(1, 3):  # limit, stop
            if numbers[m, c] == numbers[m, c]:
                at = _lit(out, at, lit, lit_at, 17 + c)
                at = _put(out, at, blob, f_start[x + c], f_end[x + c])
        if i1s[m] >= 0:
            at = _lit(out, at, lit, lit_at, 20)
            at = _int(out, at, i1s[m])
        if i2s[m] >= 0:
            at = _lit(out, at, lit, lit_at, 21)
            at = _int(out, at, i2s[m])
        for c in range(3, 5):  # trail amount, trail percent
            if numbers[m, c] == numbers[m, c]:
                at = _lit(out, at, lit, lit_at, 19 + c)
                at = _put(out, at, blob, f_start[x + c], f_end[x + c])
    else:  # a trade opened or closed
        s = oids[m]
        at = _lit(out, at, lit, lit_at, 9)
        at = _put(out, at, symbols, symbol_at[s], symbol_at[s + 1])
        at = _lit(out, at, lit, lit_at, 10 if codes[m] > 0 else 11)
        at = _lit(out, at, lit, lit_at, 6)
        at = _put(out, at, blob, f_start[x], f_end[x])
        if kind == EV_OPENED:
            at = _lit(out, at, lit, lit_at, 5)
            at = _put(out, at, blob, f_start[x + 1], f_end[x + 1])
        else:
            for c in range(1, 4):  # entry price, exit price, P&L
                at = _lit(out, at, lit, lit_at, 11 + c)
                at = _put(out, at, blob, f_start[x + c], f_end[x + c])
    out[at] = 125  # }
    return at + 1


@nb.njit(**_JIT)
def _events_column(order, owners, decision_rows, given, given_at, n_rows,
                   kinds, oids, codes, i1s, i2s, numbers, times, time_at, time_of, symbols, symbol_at,
                   blob, f_start, f_end, own, own_at, lit, lit_at, out, offsets):  # fmt: skip
    """FMEL's ``events`` column, row by row, as one text buffer and its offsets (an Arrow string
    column): a decision's row holds its events as a JSON array, in the order they happened
    (``order``: event rows sorted by owner, stable), or the text ``given`` for it (its
    ``given_at`` span is not empty); every other row (a silent bar's HOLD) holds ``[]``.

    Rows are laid out in place: ``decision_rows`` (the row of decision k) rise with k, as the
    events' owners do in ``order``. Returns the buffer's length.
    """
    at = 0
    i = 0
    n = order.shape[0]
    r = 0
    for k in range(decision_rows.shape[0]):
        at, r = _silent_rows(out, at, offsets, r, decision_rows[k])  # the silent rows before it
        while i < n and owners[order[i]] < k:
            i += 1
        if given_at[k] < given_at[k + 1]:
            at = _put(out, at, given, given_at[k], given_at[k + 1])
            while i < n and owners[order[i]] == k:
                i += 1
        else:
            out[at] = 91  # [
            at += 1
            first = True
            while i < n and owners[order[i]] == k:
                if not first:
                    out[at] = 44  # ,
                    at += 1
                at = _render_event(order[i], kinds, oids, codes, i1s, i2s, numbers, times, time_at, time_of,
                                   symbols, symbol_at, blob, f_start, f_end, own, own_at, lit, lit_at, out, at)  # fmt: skip
                first = False
                i += 1
            out[at] = 93  # ]
            at += 1
        r += 1
        offsets[r] = at
    at, _ = _silent_rows(out, at, offsets, r, n_rows)
    return at


@nb.njit(**_JIT, inline="always")
def _silent_rows(out, at, offsets, r, upto):
    """``[]`` in rows ``r``..``upto - 1`` of an events column (written at ``out[at:]``); returns
    where the text and the rows end."""
    while r < upto:
        out[at] = 91  # [
        out[at + 1] = 93  # ]
        at += 2
        r += 1
        offsets[r] = at
    return at, r


@nb.njit(**_JIT)
def _odd_events(kinds, codes, numbers, templated, used, needed, low, high, odd):
    """Which event rows :func:`_render_event` cannot spell (``odd[m]``): kinds with no template,
    a submitted order's expiry (a time to spell), a number its text needs that is NaN, or one it
    holds that is infinite or outside orjson's repr-equal range [``low``, ``high``) (0 is in)."""
    for m in range(kinds.shape[0]):
        kind = kinds[m]
        flag = not templated[kind] or (kind == EV_SUBMITTED and (codes[m] & 256) != 0)
        c = 0
        while not flag and c < 5:
            x = numbers[m, c]
            size = abs(x)
            flag = (needed[kind, c] and x != x) or (
                used[kind, c] and (np.isinf(x) or size >= high or (size < low and size != 0.0))
            )
            c += 1
        odd[m] = flag


@nb.njit(**_JIT)
def _positions_rows(matrix, keys, key_at, pieces, piece_len, out, starts, changed):
    """FMEL ``positions`` texts of the rows of ``matrix`` (bars x symbols) that differ from the row
    before (row 0 always), as ``fmel.rows.positions_json`` spells a book of whole shares:
    ``{"SYM":shares,...}`` over the held symbols, in column order. Text k is
    ``out[starts[k]:starts[k + 1]]``, of row ``changed[k]``. Returns how many rows changed, or -1 as
    soon as a held position is not a whole number of shares (NaN and infinities included): such a
    book prints floats, the Python way.

    As ``fmel.rows.positions_texts`` does, each change's ``"SYM":shares,`` piece is spelled once
    (``pieces[i, :piece_len[i]]``, the current one of symbol i, empty when not held) and a changed
    row's text joins the current pieces.
    """
    n_rows, n_cols = matrix.shape
    at = 0
    k = 0
    for r in range(n_rows):
        moved = r == 0
        for i in range(n_cols):
            v = matrix[r, i]
            if r > 0 and v == matrix[r - 1, i]:
                continue
            moved = True
            if v == 0.0:  # -0.0 too: not held
                piece_len[i] = 0
                continue
            if not (v == np.trunc(v) and -(2.0**63) < v < 2.0**63):
                return -1
            p = _put(pieces[i], 0, keys, key_at[i], key_at[i + 1])
            shares = np.int64(v)
            if shares < 0:
                pieces[i, p] = 45  # -
                p += 1
                shares = -shares
            p = _int(pieces[i], p, shares)
            pieces[i, p] = 44  # ,
            piece_len[i] = p + 1
        if not moved:
            continue
        changed[k] = r
        starts[k] = at
        k += 1
        out[at] = 123  # {
        at += 1
        first = at
        for i in range(n_cols):
            length = piece_len[i]
            if length:
                out[at : at + length] = pieces[i, :length]
                at += length
        if at == first:  # nothing held
            at += 1
        out[at - 1] = 125  # } (in place of the last comma)
    starts[k] = at
    return k


# ----------------------------------------------------------------------------------- the wrapper
def _grow(table: Any, need: int) -> Any:
    """``table`` (a NamedTuple of columns) with room for ``need`` rows (capacity doubles)."""
    size = len(table[0])
    if need <= size:
        return table
    new = max(need, 2 * size, 64)
    columns = []
    for col in table:
        grown = np.empty((new, *col.shape[1:]), dtype=col.dtype)
        grown[:size] = col
        columns.append(grown)
    return type(table)(*columns)


def _empty(kind: type, dtypes: dict[str, Any], n: int = 64) -> Any:
    return kind(**{name: np.empty((n, 5) if name == "f" else n, dtype=dtypes.get(name, np.int64))
                   for name in kind._fields})  # fmt: skip


_F8 = np.float64
_ORDER_DTYPES = {
    **{
        n: _F8
        for n in (
            "qty",
            "tshares",
            "tpct",
            "limit",
            "stop",
            "trail_amt",
            "trail_pct",
            "limit_offset",
        )
    },
    **{n: np.bool_ for n in ("has_exp", "triggered", "is_open", "linked")},
    "action": np.int8,
    "otype": np.int8,
}
_EVENT_DTYPES = {"kind": np.int8, "f": _F8}
_FILL_DTYPES = {n: _F8 for n in ("qty", "price", "commission", "slippage")} | {"side": np.int8}
_TRADE_DTYPES = {n: _F8 for n in ("quantity", "entry_notional", "exit_qty", "exit_notional", "pnl")} | {
    "direction": np.int8,
    "closed": np.bool_,
}


class CompiledBook:
    """One run's trusted book in columns: feed decisions as they are checked, book bars in chunks.

    ``add(bar, seq, decision, decision_id)`` takes every logged decision, in log order, and returns
    its index ``k``; the rejected ones and HOLDs are remembered for their texts only.
    ``advance(hi)`` books bars up to ``hi`` (exclusive); the decisions of those bars must have been
    added.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        settings: BacktestSettings,
        timestamps: np.ndarray,
        opens: np.ndarray,
        highs: np.ndarray,
        lows: np.ndarray,
        closes: np.ndarray,
    ) -> None:
        self.symbols = tuple(symbols)
        self.settings = settings
        n_bars, n = len(timestamps), len(self.symbols)
        self.timestamps = np.ascontiguousarray(timestamps, dtype=np.int64)
        self.bars = tuple(np.ascontiguousarray(a, dtype=np.float64) for a in (opens, highs, lows, closes))
        self.index = {s: i for i, s in enumerate(self.symbols)}
        c = settings.costs
        self.costs = np.array(
            [
                c.commission_per_share,
                c.commission_pct,
                c.min_commission,
                c.slippage_bps,
                c.slippage_range_fraction,
            ]
        )
        self.orders: Orders = _empty(Orders, _ORDER_DTYPES)
        self.events: Events = _empty(Events, _EVENT_DTYPES)
        self.fill_table: Fills = _empty(Fills, _FILL_DTYPES)
        self.trade_table: Trades = _empty(Trades, _TRADE_DTYPES)
        self.si = np.zeros(10, dtype=np.int64)
        self.sf = np.zeros(4)
        self.sf[F_CASH] = self.sf[F_EQUITY] = float(settings.initial_cash)
        self.positions = np.zeros(n)
        self.last_price = np.zeros(n)
        self.trade_of = np.full(n, -1, dtype=np.int64)
        self.closed_order = np.empty(64, dtype=np.int64)
        self.pending = np.empty(64, dtype=np.int64)
        self.grp_head = np.empty(16, dtype=np.int64)
        self.grp_tail = np.empty(16, dtype=np.int64)
        self.grp_alive = np.zeros(16, dtype=np.bool_)
        self.dec_order = np.empty(0, dtype=np.int64)
        # per bar, after its fills (NaN until booked)
        self.cash = np.full(n_bars, np.nan)
        self.positions_value = np.full(n_bars, np.nan)
        self.equity = np.full(n_bars, np.nan)
        self.position_rows = np.full((n_bars, n), np.nan)
        self.decisions: list[CheckedDecision] = []  # by index k: for the texts of refs and reasons
        self.decision_ids: list[Any] = []  # by index k: its name in fills, trades and events
        # decisions queued for the book, as rows of their columns (see :meth:`add`)
        self._queued_bars: list[int] = []
        self._int_rows: list[tuple[int, ...]] = []
        self._float_rows: list[tuple[float | None, ...]] = []
        self._with_refs: list[tuple[int, CheckedDecision]] = []  # (queue position, decision)
        self._scratch = np.empty((7, max(n, 1)), dtype=np.int64)
        self._kernel: Callable[..., None] | None = None  # _book_chunk's compiled entry (_entry_point)
        self._refs: dict[tuple[int, int], int] = {}  # (bar, seq) -> k
        self.processed = 0  # bars booked

    # ------------------------------------------------------------------ input
    def add(self, bar: int, seq: int, d: CheckedDecision, decision_id: Any = None) -> int:
        """Log the ``seq``-th decision of ``bar`` (any decision: the rejected ones and HOLDs are kept
        for the texts of refs only); orders and CANCELs reach the book. Returns its index ``k``.
        ``decision_id`` names it in fills, trades and events (default: ``k``)."""
        k = len(self.decisions)
        self.decisions.append(d)
        self.decision_ids.append(k if decision_id is None else decision_id)
        self._refs[(bar, seq)] = k
        if d.reject_reason is None and d.action != "HOLD":
            # the decision's columns, one row per decision (see :meth:`_columns`); refs are
            # resolved when it is booked, once every decision of its bar is known
            self._queued_bars.append(bar)
            expires = d.expires_at
            self._int_rows.append(
                (
                    k,
                    bar,
                    seq,
                    self.index[d.symbol],  # type: ignore[index]
                    ACTION_CODES[d.action],
                    TYPE_CODES[d.order_type],
                    expires is not None,
                    expires or 0,
                    -1,  # D_PARENT, D_OCO, D_REF: resolved when booked
                    -1,
                    -1,
                )
            )
            self._float_rows.append(
                (
                    d.quantity,
                    d.target_shares,
                    d.target_percent,
                    d.limit_price,
                    d.stop_price,
                    d.trail_amount,
                    d.trail_percent,
                )
            )
            if d.parent_ref is not None or d.oco is not None or d.action == "CANCEL":
                self._with_refs.append((len(self._int_rows) - 1, d))
        return k

    # -------------------------------------------------------------- booking
    def advance(self, hi: int) -> None:
        """Book bars ``processed``..``hi - 1`` with the decisions queued for them.

        Why the care over fixed costs: the runner books the bars it applied as soon as it has
        caught up with the agent, often one bar a call, so that a call is short and lands while
        the agent thinks; each call's Python work (columns, room checks) counts as much as the
        kernel's.
        """
        lo = self.processed
        if hi <= lo:
            return
        cut = bisect_left(self._queued_bars, hi)
        di, df = self._columns(cut)
        n_orders, n_events, n_fills, n_trades, n_pending, _, _, _, n_groups, _ = self.si.tolist()
        # room: every order may leave the book once (+2 trade events), every decision adds
        # an order and an event or two, a CANCEL two
        new, leaving = cut, cut + n_pending
        if n_orders + new > len(self.orders.dec):
            self.orders = _grow(self.orders, n_orders + new)
        if n_events + 5 * leaving + 8 > len(self.events.kind):
            self.events = _grow(self.events, n_events + 5 * leaving + 8)
        if n_fills + leaving > len(self.fill_table.oid):
            self.fill_table = _grow(self.fill_table, n_fills + leaving)
        if n_trades + leaving > len(self.trade_table.sym):
            self.trade_table = _grow(self.trade_table, n_trades + leaving)
        if n_trades + leaving > len(self.closed_order):
            self.closed_order = _grow_1d(self.closed_order, n_trades + leaving)
        if leaving > len(self.pending):
            self.pending = _grow_1d(self.pending, leaving)
        if n_groups + new > len(self.grp_head):
            self.grp_head = _grow_1d(self.grp_head, n_groups + new)
            self.grp_tail = _grow_1d(self.grp_tail, n_groups + new)
            self.grp_alive = _grow_1d(self.grp_alive, n_groups + new, fill=False)
        if len(self.decisions) > len(self.dec_order):
            self.dec_order = _grow_1d(self.dec_order, len(self.decisions), fill=-1)
        if leaving > self._scratch.shape[1]:
            self._scratch = np.empty((7, max(leaving, 2 * self._scratch.shape[1])), dtype=np.int64)
        o, h, low, c = self.bars
        args = (
            self.orders, self.events, self.fill_table, self.trade_table, di, df, self.si, self.sf,
            self.costs, self.settings.allow_short, float(self.settings.borrow_rate_annual),
            self.positions, self.last_price, self.trade_of, self.closed_order, self.pending,
            self.grp_head, self.grp_tail, self.grp_alive, self.dec_order, self._scratch, lo, hi,
            self.timestamps, o, h, low, c, self.cash, self.positions_value, self.equity,
            self.position_rows,
        )  # fmt: skip
        if self._kernel is None:  # the first call: dispatched (compiles or loads, types the arguments)
            _book_chunk(*args)
            self._kernel = _entry_point(_book_chunk, args)
        else:
            self._kernel(*args)
        self.processed = hi

    def _columns(self, cut: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``cut`` queued decisions as the kernel's tables ``di``, ``df`` (see ``D_*`` and
        ``X_*``; None becomes NaN), taken off the queue."""
        di = np.array(self._int_rows[:cut], dtype=np.int64).reshape(cut, 11)
        df = np.array(self._float_rows[:cut], dtype=np.float64).reshape(cut, 7)
        del self._int_rows[:cut], self._float_rows[:cut], self._queued_bars[:cut]
        with_refs, taken, refs = self._with_refs, 0, self._refs
        for j, d in with_refs:
            if j >= cut:
                break
            di[j, D_PARENT] = _ref(refs, d.parent_ref)
            di[j, D_OCO] = _ref(refs, d.oco)
            if d.action == "CANCEL":
                di[j, D_REF] = _ref(refs, d.order_ref)
            taken += 1
        if with_refs:
            self._with_refs = [(j - cut, d) for j, d in with_refs[taken:]]
        return di, df

    def cancel_all(self, ts_ns: int) -> None:
        """Withdraw what is still on the book at the end ("run ended" or "run <status>")."""
        self.events = _grow(self.events, int(self.si[I_EVENTS]) + int(self.si[I_PENDING]))
        _cancel_all(self.orders, self.events, self.si, self.pending, ts_ns)

    # --------------------------------------------------------------- output
    @property
    def borrow_paid(self) -> float:
        return float(self.sf[F_BORROW])

    def fill_rows(self) -> list[tuple[Any, ...]]:
        """Fills as tuples in :class:`~farm_dagster.engine.broker.Fill` field order."""
        return list(zip(*(column.tolist() for column in self.fill_columns()), strict=True))

    def fill_columns(self) -> list[np.ndarray]:
        """Fills as columns in :class:`~farm_dagster.engine.broker.Fill` field order (decision ids,
        symbols and sides as object arrays)."""
        n = int(self.si[I_FILLS])
        f = self.fill_table
        ids = np.empty(len(self.decision_ids), dtype=object)
        ids[:] = self.decision_ids
        symbols = np.empty(len(self.symbols), dtype=object)
        symbols[:] = self.symbols
        side = np.where(f.side[:n] > 0, "BUY", "SELL").astype(object)
        return [
            f.oid[:n].copy(), ids[f.dec[:n]], f.ts[:n].copy(), symbols[f.sym[:n]], side,
            f.qty[:n].copy(), f.price[:n].copy(), f.commission[:n].copy(), f.slippage[:n].copy(),
        ]  # fmt: skip

    def trade_columns(self) -> dict[str, np.ndarray]:
        """Every trade as columns: the closed ones in closing order, then the open ones by symbol,
        their P&L marked to the last price (unrealized), as ``Broker.all_trades`` orders and marks them."""
        tr = self.trade_table
        open_idx = self.trade_of[self.trade_of >= 0]
        rows = np.concatenate([self.closed_order[: int(self.si[I_CLOSED])], open_idx]).astype(np.int64)
        columns = {name: getattr(tr, name)[rows] for name in Trades._fields}
        n_open = len(open_idx)
        if n_open:
            at = slice(len(rows) - n_open, None)
            quantity, held_sym = columns["quantity"][at], columns["sym"][at]
            held = quantity - columns["exit_qty"][at]
            entry_price = columns["entry_notional"][at] / quantity
            marked = (
                columns["direction"][at].astype(np.float64) * held * (self.last_price[held_sym] - entry_price)
            )
            columns["pnl"][at] = columns["pnl"][at] + marked
        return columns

    def all_trades(self) -> list[Trade]:
        """:meth:`trade_columns` as :class:`~farm_dagster.engine.broker.Trade` objects."""
        c = self.trade_columns()
        ids, symbols = self.decision_ids, self.symbols
        return [
            Trade(
                symbols[i],
                "long" if d > 0 else "short",
                entry,
                exit_ if closed else None,
                q,
                en,
                xq,
                xn,
                pnl,
                ids[k],
            )
            for i, d, entry, exit_, closed, q, en, xq, xn, pnl, k in zip(
                *(c[name].tolist() for name in Trades._fields), strict=True
            )
        ]

    def event_tuples(self, run_end_reason: str = "run ended") -> dict[Any, list[tuple[Any, ...]]]:
        """decision id -> its events as the broker's tuples (see ``broker.EVENT_FIELDS``), in order."""
        out: dict[Any, list[tuple[Any, ...]]] = {}
        n = self.n_events
        owners = self.events.owner[:n].tolist()
        for owner, event in zip(owners, self._event_rows(0, n, run_end_reason), strict=True):
            out.setdefault(self.decision_ids[owner], []).append(event)
        return out

    @property
    def n_events(self) -> int:
        """Events booked so far (rows of ``events``, in the order they happened)."""
        return int(self.si[I_EVENTS])

    def _event_rows(self, lo: int, hi: int, run_end_reason: str) -> list[tuple[Any, ...]]:
        """Event rows ``lo``..``hi - 1`` as the broker's tuples. The rows' columns are read as lists
        first: one numpy read per column, not one per value (about 1 us an event)."""
        ev = self.events
        kinds, owners, times, oids = (column[lo:hi].tolist() for column in (ev.kind, ev.owner, ev.ts, ev.oid))
        codes, i1s, i2s, i3s = (column[lo:hi].tolist() for column in (ev.code, ev.i1, ev.i2, ev.i3))
        numbers = ev.f[lo:hi].tolist()
        symbols = self.symbols
        out = []
        append = out.append
        for kind, owner, ts, oid, code, i1, i2, i3, f in zip(
            kinds, owners, times, oids, codes, i1s, i2s, i3s, numbers, strict=True
        ):
            if kind == EV_FILLED:
                append(("filled", ts, oid, f[0], f[1], "BUY" if code > 0 else "SELL", f[2]))
            elif kind == EV_SUBMITTED:
                append(
                    (
                        "submitted", ts, oid, SIZE_NAMES[(code & 255) // 16], f[0], TYPE_NAMES[code % 16],
                        _opt(f[1]), _opt(f[2]), None if i1 < 0 else i1, None if i2 < 0 else i2,
                        _opt(f[3]), _opt(f[4]), iso(i3) if code & 256 else None,
                    )
                )  # fmt: skip
            elif kind == EV_OPENED:
                append(("trade_opened", ts, symbols[oid], "long" if code > 0 else "short", f[0], f[1]))
            elif kind == EV_CLOSED:
                append(("trade_closed", ts, symbols[oid], "long" if code > 0 else "short", *f[:4]))
            elif kind == EV_REJECTED_DECISION:
                append(("rejected_decision", ts, self._decision_reason(owner, code)))
            else:
                name = "cancelled" if kind == EV_CANCELLED else "rejected"
                append((name, ts, oid, _reason(code, f, i1, i2, run_end_reason)))
        return out

    def event_texts(
        self, lo: int, hi: int, times: dict[int, str], run_end_reason: str = "run ended"
    ) -> list[str]:
        """FMEL JSON texts of event rows ``lo``..``hi - 1`` (``times``: bar time -> its text; other
        times are spelled on the spot), the broker's Python way: :meth:`events_column` uses it for
        the rows its compiled renderer leaves."""
        get = times.get
        return [
            _json_text(event, get(event[1]) or iso(event[1]))
            for event in self._event_rows(lo, hi, run_end_reason)
        ]

    def events_json(self, run_end_reason: str = "run ended") -> dict[Any, str]:
        """decision id -> JSON array text of its events, for every decision that has events; byte
        for byte what ``broker.events_json`` makes of the same events (see :meth:`events_column`)."""
        n_decisions = len(self.decisions)
        column = self.events_column(np.arange(n_decisions, dtype=np.int64), n_decisions, [], run_end_reason)
        has_events = np.zeros(n_decisions, dtype=np.bool_)
        has_events[self.events.owner[: self.n_events]] = True
        ids, texts = self.decision_ids, column.to_pylist()
        return {ids[k]: texts[k] for k in np.flatnonzero(has_events).tolist()}

    def events_column(
        self,
        decision_rows: np.ndarray,
        n_rows: int,
        given: Sequence[str | None],
        run_end_reason: str = "run ended",
    ) -> pa.LargeStringArray:
        """:meth:`events_renderer`'s column, rendered on the spot."""
        return self.events_renderer(decision_rows, n_rows, given, run_end_reason)()

    def events_renderer(
        self,
        decision_rows: np.ndarray,
        n_rows: int,
        given: Sequence[str | None],
        run_end_reason: str = "run ended",
    ) -> Callable[[], pa.LargeStringArray]:
        """FMEL's ``events`` column of a frame of ``n_rows`` rows, as an Arrow string column built
        over one buffer: decision k's row (``decision_rows[k]``, rising with k) holds its events as
        a JSON array, or ``given[k]`` when that is a text (a decision the runner's checks
        rejected); the other rows hold ``[]``.

        Every text is byte for byte what ``broker.events_json`` makes of the same events. Compiled
        code (:func:`_events_column`) fills the broker's templates with byte spans, straight into
        each row: about 0.3 us an event against 1.7-2.9 us for :meth:`event_texts`. The numbers
        are spelled by orjson, one call per ``_RENDER_BATCH`` events, as
        :func:`protocol.float_text` spells them; the rows that text cannot cover (reasons,
        expiries, numbers that are not finite or outside orjson's repr-equal range) are spelled
        the Python way. Why one buffer: a Python text per decision, cut from a joined text, cost
        more than rendering the events (0.8 s for 370,000 decisions, and 0.7 s for the joined
        text itself); Arrow takes the buffer as it is.

        Returns the renderer: everything that needs Python is done here, and the renderer only
        runs the compiled code, which releases the GIL (``DecisionLog.frame`` runs it on a thread
        while it builds the other columns).
        """
        n = self.n_events
        ev = self.events
        unique, time_of = _distinct(ev.ts[:n])
        time_texts = iso_many(unique.tolist())
        times, time_at = _text_table(list(time_texts.values()))
        symbols, symbol_at = _text_table([_json_str(s) for s in self.symbols])
        blobs: list[np.ndarray] = []
        f_start = np.empty(5 * n, dtype=np.int64)
        f_end = np.empty(5 * n, dtype=np.int64)
        size = 0
        for lo in range(0, n, _RENDER_BATCH):
            hi = min(n, lo + _RENDER_BATCH)
            blob = np.frombuffer(orjson.dumps(ev.f[lo:hi], option=orjson.OPT_SERIALIZE_NUMPY), dtype=np.uint8)
            starts, ends = f_start[5 * lo : 5 * hi], f_end[5 * lo : 5 * hi]
            if _number_spans(blob, starts, ends) != starts.size:
                raise RuntimeError("orjson's text of the event numbers did not split into them")
            starts += size
            ends += size
            size += blob.size
            blobs.append(blob)
        own = self._own_texts(time_texts, run_end_reason)
        own_bytes, own_at = _text_spans(own, n)
        given_texts = {k: text for k, text in enumerate(given) if text is not None}
        given_bytes, given_at = _text_spans(given_texts, len(decision_rows))
        # bytes an event's text may take beyond its numbers and its own text (the kernel writes
        # unchecked: this bounds its buffer): the template, a time, a symbol, a comma or bracket
        per_event = (
            _MAX_TEMPLATE + int(np.diff(time_at).max(initial=0)) + int(np.diff(symbol_at).max(initial=0)) + 2
        )
        out = np.empty(size + own_bytes.size + given_bytes.size + per_event * n + 2 * n_rows, dtype=np.uint8)
        offsets = np.zeros(n_rows + 1, dtype=np.int64)
        owners = ev.owner[:n]
        args = (
            np.argsort(owners, kind="stable"), owners, np.ascontiguousarray(decision_rows, dtype=np.int64),
            given_bytes, given_at, n_rows, ev.kind[:n], ev.oid[:n], ev.code[:n], ev.i1[:n], ev.i2[:n], ev.f[:n],
            times, time_at, time_of, symbols, symbol_at,
            np.concatenate(blobs) if blobs else np.empty(0, dtype=np.uint8), f_start, f_end,
            own_bytes, own_at, _LIT, _LIT_AT, out, offsets,
        )  # fmt: skip

        def render() -> pa.LargeStringArray:
            length = _events_column(*args)
            return pa.LargeStringArray.from_buffers(n_rows, pa.py_buffer(offsets), pa.py_buffer(out[:length]))

        return render

    def _own_texts(self, times: dict[int, str], run_end_reason: str) -> dict[int, str]:
        """{row: text} of the event rows beyond what :func:`_render_event` covers, spelled the
        Python way."""
        n = self.n_events
        odd = np.empty(n, dtype=np.bool_)
        _odd_events(self.events.kind[:n], self.events.code[:n], self.events.f[:n], _IS_TEMPLATED, _NUMBERS_USED,
                    _NUMBERS_NEEDED, ORJSON_AS_REPR_LOW, ORJSON_AS_REPR_HIGH, odd)  # fmt: skip
        return {m: self.event_texts(m, m + 1, times, run_end_reason)[0] for m in np.flatnonzero(odd).tolist()}

    def _decision_reason(self, k: int, code: int) -> str:
        d = self.decisions[k]
        if code == R_NO_PARENT:
            return f"parent order {d.parent_ref} is not open"
        return (
            f"no open {d.symbol} order {d.order_ref} to cancel "
            "(filled, cancelled or rejected already, or never placed)"
        )


def _opt(value: float) -> float | None:
    return None if value != value else value


def _reason(code: int, f: list[float], ref: int, outcome: int, run_end: str) -> str:
    """The text of a cancelled/rejected event's reason (the broker's words)."""
    if code == R_AT_TARGET:
        return "already at target"
    if code == R_SHORT:
        return f"short selling is disabled: position {f[0]:g}, sell {f[1]:g}"
    if code == R_CASH:
        return f"insufficient cash: need {f[0]:.2f}, have {f[1]:.2f}"
    if code == R_BY_AGENT:
        return "cancelled by the agent"
    if code == R_EXPIRED:
        return "expired"
    if code == R_OCO:
        return f"OCO: order {ref} {OUTCOMES[outcome]}"
    if code == R_PARENT:
        return f"parent order {ref} {OUTCOMES[outcome]}"
    if code == R_BRACKET:
        return f"bracket: order {ref} {OUTCOMES[outcome]}"
    return run_end


def _ref(refs: dict[tuple[int, int], int], ref: str | None) -> int:
    """Decision index a protocol ref names: -1 no ref, -2 a ref that names no decision."""
    if ref is None:
        return -1
    key = parse_order_ref(ref)
    return refs.get(key, -2) if key is not None else -2


def _entry_point(kernel: Any, args: tuple[Any, ...]) -> Callable[..., None]:
    """``kernel``'s compiled code for the types of ``args``, called without numba's dispatch.

    Why: dispatch types every argument on every call (about 70 arrays in the book's tables: 12 us
    a call, as much as booking a bar); the compiled entry point only unboxes them (4-5 us). The
    book's arguments keep their types for the whole run (tables grow into arrays of the same dtype,
    dimensions and layout), so they are typed once, after a first call through the dispatcher
    (which compiled or loaded the code for them); None found falls back to the dispatcher.
    """
    types = tuple(nb.typeof(a) for a in args)
    compiled = kernel.overloads.get(types)
    return compiled.entry_point if compiled is not None else kernel


def _text_table(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """ASCII ``texts`` as one byte buffer and where each starts (text i: buffer[at[i]:at[i + 1]])."""
    return _text_spans(dict(enumerate(texts)), len(texts))


def _text_spans(texts: dict[int, str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """{i: ASCII text} of some of ``n`` items as one byte buffer and where each starts (item i:
    buffer[at[i]:at[i + 1]], empty for the items without a text)."""
    keys = sorted(texts)
    buffer = np.frombuffer("".join(texts[i] for i in keys).encode("ascii"), dtype=np.uint8)
    lengths = np.zeros(n, dtype=np.int64)
    lengths[keys] = [len(texts[i]) for i in keys]
    return buffer, np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)


def positions_texts(symbols: Sequence[str], matrix: np.ndarray) -> list[str]:
    """:func:`fmel.rows.positions_texts`, the same texts, spelled by compiled code (:func:`_positions_rows`)
    when every held position is a whole number of shares, as in most books; by that function
    otherwise. Why: the compiled part releases the GIL, so ``DecisionLog.frame`` runs it beside
    its other columns (on 100 symbols x 100,000 bars about a sixth of the frame's work)."""
    n_rows = matrix.shape[0]
    if not n_rows:
        return []
    keys, key_at = _text_table(position_keys(tuple(symbols)))
    book = np.ascontiguousarray(matrix, dtype=np.float64)
    longest = int(np.diff(key_at).max(initial=0)) + 21  # a key, a sign and 19 digits, a comma
    pieces = np.empty((book.shape[1], longest), dtype=np.uint8)
    out = np.empty(int(np.count_nonzero(book)) * longest + 2 * n_rows, dtype=np.uint8)
    starts = np.empty(n_rows + 1, dtype=np.int64)
    changed = np.empty(n_rows, dtype=np.int64)
    k = _positions_rows(book, keys, key_at, pieces, np.zeros(book.shape[1], np.int64), out, starts, changed)
    if k < 0:
        return python_positions_texts(symbols, matrix)
    spans = memoryview(out)  # each text straight from its bytes: no copy of the whole buffer
    texts = np.empty(k, dtype=object)
    texts[:] = [str(spans[lo:hi], "ascii") for lo, hi in itertools.pairwise(starts[: k + 1].tolist())]
    return texts[np.searchsorted(changed[:k], np.arange(n_rows), side="right") - 1].tolist()


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values``' distinct items, rising, and where each value is among them. Why not
    ``np.unique``: the book's event times rise as it books (it sorts them otherwise), and one pass
    over risen values takes a tenth of its time on a million events."""
    if values.size and not (values[1:] >= values[:-1]).all():
        distinct = np.unique(values)
        return distinct, np.searchsorted(distinct, values)
    starts = np.empty(values.size, dtype=np.bool_)
    starts[:1] = True
    np.not_equal(values[1:], values[:-1], out=starts[1:])
    return values[starts], np.cumsum(starts) - 1


def _grow_1d(array: np.ndarray, need: int, fill: Any = None) -> np.ndarray:
    """``array`` with room for ``need`` items (capacity doubles); new items are ``fill`` if given."""
    if need <= len(array):
        return array
    size = max(need, 2 * len(array))
    grown = np.empty(size, dtype=array.dtype) if fill is None else np.full(size, fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel, on a tiny book of the real argument types.

    Why: the first compilation takes about 25 s; ``scripts/setup.sh`` pays it once per machine so
    that no backtest or test does.
    """
    from farm_dagster.engine.protocol import check_decision

    n_bars = 3
    prices = np.full((n_bars, 2), 10.0)
    book = CompiledBook(
        ("A", "B"), BacktestSettings(), np.arange(n_bars, dtype=np.int64), prices, prices, prices, prices
    )
    book.add(0, 0, check_decision({"symbol": "A", "action": "BUY", "quantity": 1.0}, book.index))
    book.add(
        0, 1, check_decision({"symbol": "B", "action": "CANCEL", "order_ref": "0000000-000"}, book.index)
    )
    book.advance(n_bars)
    book.cancel_all(n_bars - 1)
    book.events_json()
    positions_texts(("A", "B"), np.array([[1.0, 0.0], [1.0, -2.0]]))
