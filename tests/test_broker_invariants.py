"""The broker's honest-fill contract on random order flows.

The hand-written cases in ``test_broker.py`` pin each rule on a chosen bar. Here seeded random
flows mix every order kind (market, TARGET, limit, stop, stop-limit, trailing, market-on-close,
brackets, OCO groups, cancels, expiry) over random bars with gaps and days without trading, and
the rules that must hold whatever the flow are checked on the outcome: no fill before the bar
after the decision, never outside the bar's range, limits respected, at most one fill per order
and per OCO group, bracket exits only after their entry, nothing after expiry, and cash,
positions and equity that add up to the fills, and the agent's mirror broker (which keeps no
log) agreeing with the trusted one to the last bit on every bar. The same flows hold the compiled
book (``engine/book.py``) to the Python broker, in ``test_book.py``.
"""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest

from farm_dagster.engine.broker import Broker
from farm_dagster.engine.costs import BacktestSettings, CostModel
from farm_dagster.engine.protocol import check_decision, order_ref

DAY = 86_400 * 10**9
SYMBOLS = ("AAA", "BBB", "CCC")
INDEX = {s: i for i, s in enumerate(SYMBOLS)}
N_BARS = 160
EPS = 1e-6


def _bars(rng: np.random.Generator) -> np.ndarray:
    """(bars, 5, symbols) OHLCV: a random walk with overnight gaps; about 3 % of bars not traded."""
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (N_BARS, len(SYMBOLS))), axis=0))
    gap = np.exp(rng.normal(0, 0.01, close.shape))
    open_ = np.vstack([close[:1], close[:-1]]) * gap
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.01, close.shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.01, close.shape)))
    block = np.stack([open_, high, low, close, np.full(close.shape, 1e6)], axis=1)
    off = rng.random(close.shape) < 0.03
    off[0] = False  # every symbol trades on the first bar
    block[:, :4, :][np.repeat(off[:, None, :], 4, axis=1)] = np.nan
    return block


def _decision(rng: random.Random, t: int, close: float, refs: list[str]) -> dict[str, object]:
    """One random decision for bar ``t``; ``refs`` are orders placed on earlier bars."""
    symbol = rng.choice(SYMBOLS)
    side = rng.choice(("BUY", "SELL"))
    qty = float(rng.randint(1, 40))
    kind = rng.choice(
        ("market", "target", "limit", "stop", "stop_limit", "trailing", "trailing_limit", "moc", "cancel")
    )
    away = close * rng.uniform(0.0, 0.04)
    below, above = close - away, close + away
    if kind == "cancel" and refs:
        return {"symbol": symbol, "action": "CANCEL", "order_ref": rng.choice(refs)}
    if kind == "target":
        if rng.random() < 0.5:
            return {"symbol": symbol, "action": "TARGET", "target_percent": rng.uniform(-0.3, 0.4)}
        return {"symbol": symbol, "action": "TARGET", "target_shares": float(rng.randint(-30, 60))}
    raw: dict[str, object] = {"symbol": symbol, "action": side, "quantity": qty}
    if kind == "limit":
        raw |= {"order_type": "limit", "limit_price": below if side == "BUY" else above}
    elif kind == "stop":
        raw |= {"order_type": "stop", "stop_price": above if side == "BUY" else below}
    elif kind == "stop_limit":
        stop = above if side == "BUY" else below
        raw |= {"order_type": "stop_limit", "stop_price": stop, "limit_price": stop * rng.uniform(0.98, 1.02)}
    elif kind == "trailing":
        raw |= {"order_type": "trailing_stop", "trail_percent": rng.uniform(0.005, 0.05)}
    elif kind == "trailing_limit":
        stop = above if side == "BUY" else below
        raw |= {
            "order_type": "trailing_stop_limit",
            "stop_price": stop,
            "limit_price": stop * rng.uniform(0.98, 1.02),
            "trail_amount": close * rng.uniform(0.005, 0.05),
        }
    elif kind == "moc":
        raw |= {"order_type": "market_on_close"}
    if kind != "market" and rng.random() < 0.3:
        raw["expires_at"] = (t + rng.randint(0, 5)) * DAY
    if refs and rng.random() < 0.15:
        raw["parent_ref" if rng.random() < 0.5 else "oco"] = rng.choice(refs[-6:])
    return raw


def _run(seed: int, settings: BacktestSettings):
    """Drive a broker through a random flow the way the runner does: bar t's fills, then its decisions."""
    rng_np, rng = np.random.default_rng(seed), random.Random(seed)
    blocks = _bars(rng_np)
    broker = Broker(SYMBOLS, settings)
    mirror = Broker(SYMBOLS, settings, record=False, track_updates=True)  # what the agent's process runs
    refs: list[str] = []
    told: list[tuple] = []  # the order updates the agent is given (the mirror's), in order
    placed: dict[str, int] = {}  # decision id -> bar it was decided on
    cash, equity, positions = [], [], []
    for t in range(N_BARS):
        broker.on_bar(t, t * DAY, blocks[t])
        mirror.on_bar(t, t * DAY, blocks[t])
        told.extend(mirror.take_updates())
        assert (mirror.cash, mirror.equity) == (broker.cash, broker.equity), "the mirror drifted"
        cash.append(broker.cash)
        equity.append(broker.equity)
        positions.append(broker.positions.copy())
        for seq in range(rng.choice((0, 0, 1, 2, 3))):
            raw = _decision(rng, t, float(np.nan_to_num(blocks[t, 3, 0], nan=100.0)), refs)
            checked = check_decision(raw, INDEX)
            did = f"d{t}-{seq}"
            placed[did] = t
            mirror.submit(checked, None, t, t * DAY, seq)
            told.extend(mirror.take_updates())  # a CANCEL is applied at once
            if broker.submit(checked, did, t, t * DAY, seq) is not None:
                refs.append(order_ref(t, seq))
    broker.cancel_all((N_BARS - 1) * DAY, "run ended")
    return broker, blocks, placed, np.array(cash), np.array(equity), np.array(positions), told


SETTINGS = {
    "plain": BacktestSettings(initial_cash=50_000),
    "costs-and-shorts": BacktestSettings(
        initial_cash=50_000,
        costs=CostModel(commission_per_share=0.01, commission_pct=0.0005, min_commission=1.0, slippage_bps=5),
        allow_short=True,
        borrow_rate_annual=0.05,
    ),
}


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_random_order_flows_keep_the_honest_fill_contract(seed: int, name: str) -> None:
    settings = SETTINGS[name]
    broker, blocks, placed, cash, equity, positions, told = _run(seed, settings)
    fills = broker.fills
    log = broker.event_log
    submitted = {
        e["order_id"]: (did, e) for did, events in log.items() for e in events if e["type"] == "submitted"
    }
    assert len(fills) > 10, "the flow should trade"

    filled_bar: dict[int, int] = {}
    for fill in fills:
        t = fill.ts_ns // DAY
        i = INDEX[fill.symbol]
        did, event = submitted[fill.order_id]
        assert fill.order_id not in filled_bar, "an order filled twice"
        filled_bar[fill.order_id] = t
        assert t >= placed[did] + 1, "filled on the bar it was decided on, or before"
        low, high = blocks[t, 2, i], blocks[t, 1, i]
        assert low - EPS <= fill.price <= high + EPS, "filled outside the bar's range"
        limit = event.get("limit_price")
        if event["order_type"] == "limit" or (event["order_type"] == "stop_limit" and limit is not None):
            assert fill.price <= limit + EPS if fill.side == "BUY" else fill.price >= limit - EPS
        expires = event.get("expires_at")
        if expires is not None and event["order_type"] != "market":
            assert fill.ts_ns <= np.datetime64(expires.rstrip("Z"), "ns").astype(np.int64), (
                "filled after expiry"
            )
        waits = event.get("parent_order_id") is not None  # a bracket exit waits for its entry
        if not waits and not settings.costs.slippage_bps:  # the exact prices of the simple kinds
            first = next(u for u in range(placed[did] + 1, N_BARS) if blocks[u, 0, i] == blocks[u, 0, i])
            o, c = blocks[t, 0, i], blocks[t, 3, i]
            if event["order_type"] == "market":
                assert (t, fill.price) == (first, o), "a market order fills at the next open"
            elif event["order_type"] == "market_on_close":
                assert (t, fill.price) == (first, c), "a market-on-close order fills at the next close"
            elif event["order_type"] == "stop":  # at the stop, or at the open when it gapped through
                stop = event["stop_price"]
                gapped = o >= stop if fill.side == "BUY" else o <= stop
                assert fill.price == pytest.approx(o if gapped else stop), "a stop fills at its level"

    # Bracket exits only from the bar after their entry filled; OCO groups fill at most once.
    group: dict[int, int] = {}

    def root(order_id: int) -> int:
        while group.get(order_id, order_id) != order_id:
            order_id = group[order_id]
        return order_id

    for order_id, (_, event) in sorted(submitted.items()):
        parent = event.get("parent_order_id")
        if parent is not None and order_id in filled_bar:
            assert parent in filled_bar and filled_bar[order_id] > filled_bar[parent], "exit before entry"
        if event.get("oco_order_id") is not None:
            group[order_id] = root(event["oco_order_id"])
    fills_per_group: dict[int, int] = defaultdict(int)
    for order_id in filled_bar:
        fills_per_group[root(order_id)] += 1
    assert max(fills_per_group.values()) == 1, "two orders of one OCO group filled"

    # Every order left the book exactly once (filled, cancelled or rejected; the rest at the end),
    # and the agent is told what the log says: one update per order that left during the run, with
    # the same outcome (and, for a fill, the same side, size and price).
    endings: dict[int, int] = defaultdict(int)
    logged: dict[int, str] = {}
    for did, events in log.items():
        for e in events:
            ending = e["type"] in ("filled", "cancelled", "rejected") and "order_id" in e
            if ending and submitted[e["order_id"]][0] == did:  # on its own decision's row
                endings[e["order_id"]] += 1
                expired = e["type"] == "cancelled" and e["reason"] == "expired"
                logged[e["order_id"]] = "expired" if expired else e["type"]
    assert set(endings) == set(submitted) and set(endings.values()) == {1}
    fill_of = {f.order_id: (f.side, f.quantity, f.price) for f in fills}
    updates = {}
    for order, status, side, quantity, price, _ in told:
        assert order.order_id not in updates, "the agent was told twice about one order"
        updates[order.order_id] = status
        if status == "filled":
            assert (side, quantity, price) == fill_of[order.order_id]
    ended_by_run = {oid for oid in logged if oid not in updates}
    assert {k: v for k, v in logged.items() if k not in ended_by_run} == updates
    assert all(logged[oid] == "cancelled" for oid in ended_by_run)

    # The book adds up to the fills, bar by bar at the end, and equity marks it to the close.
    signed = defaultdict(float)
    flows = 0.0
    for fill in fills:
        sign = 1.0 if fill.side == "BUY" else -1.0
        signed[fill.symbol] += sign * fill.quantity
        flows += sign * fill.quantity * fill.price + fill.commission
    np.testing.assert_allclose(broker.positions, [signed[s] for s in SYMBOLS], atol=EPS)
    assert broker.cash == pytest.approx(settings.initial_cash - flows - broker.borrow_paid, rel=1e-9)
    last = np.zeros(len(SYMBOLS))
    for t in range(N_BARS):
        close = blocks[t, 3]
        last = np.where(close == close, close, last)
        assert equity[t] == pytest.approx(cash[t] + positions[t] @ last, rel=1e-9, abs=1e-6)
    if not settings.allow_short:
        assert positions.min() >= -EPS, "went short with shorting off"
        assert cash.min() >= -EPS, "spent cash it did not have"
