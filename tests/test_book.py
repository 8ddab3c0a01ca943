"""The compiled book (``engine/book.py``) against the Python broker, on the random order flows.

The compiled book is the trusted booking in numba: it must give what the Python broker gives on
every flow, bit for bit: cash, equity and positions after every bar, every fill, every trade
(closed and open), every event of every decision with its reason text, and the borrow fees,
whatever the chunks the bars are booked in. The flows are the ones of ``test_broker_invariants``
(every order kind, OCO groups, brackets, cancels, expiry, gaps and untraded bars), plus denser
ones where links and cancels meet more often.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest

import tests.test_broker_invariants as flows
from farm_dagster.engine import book as book_module
from farm_dagster.engine.book import CompiledBook
from farm_dagster.engine.broker import Broker, book_value
from farm_dagster.engine.costs import BacktestSettings, CostModel
from farm_dagster.engine.protocol import check_decision, order_ref


def _both(seed: int, settings, per_bar: tuple[int, ...], chunk: int, scale: float = 1.0):
    """One random flow through the Python broker (as the runner drives it) and the compiled book;
    ``scale`` multiplies every price."""
    rng_np, rng = np.random.default_rng(seed), random.Random(seed)
    blocks = flows._bars(rng_np)
    blocks[:, :4] *= scale
    n_bars = flows.N_BARS
    ts = np.arange(n_bars, dtype=np.int64) * flows.DAY
    broker = Broker(flows.SYMBOLS, settings)
    book = CompiledBook(flows.SYMBOLS, settings, ts, *(blocks[:, f] for f in range(4)))
    refs: list[str] = []
    rejected: set[str] = set()
    cash, equity, positions = [], [], []
    for t in range(n_bars):
        broker.on_bar(t, int(ts[t]), blocks[t])
        cash.append(broker.cash)
        equity.append(broker.equity)
        positions.append(broker.positions.copy())
        for seq in range(rng.choice(per_bar)):
            raw = flows._decision(rng, t, float(np.nan_to_num(blocks[t, 3, 0], nan=100.0)), refs)
            if rng.random() < 0.03:
                raw["quantity"] = -1.0  # a decision the field checks reject: it never reaches a book
            checked = check_decision(raw, flows.INDEX)
            did = f"d{t}-{seq}"
            book.add(t, seq, checked, did)
            if checked.reject_reason is not None:
                rejected.add(did)
            if broker.submit(checked, did, t, int(ts[t]), seq) is not None:
                refs.append(order_ref(t, seq))
        if (t + 1) % chunk == 0:
            book.advance(t + 1)
    book.advance(n_bars)
    broker.cancel_all(int(ts[-1]), "run ended")
    book.cancel_all(int(ts[-1]))
    return broker, book, np.array(cash), np.array(equity), np.array(positions), rejected


def _trade_fields(trades) -> list[tuple]:
    return [tuple(getattr(t, name) for name in t.__slots__) for t in trades]


def _assert_same(seed: int, settings, per_bar: tuple[int, ...]) -> None:
    chunk = random.Random(seed).choice((1, 3, 17, flows.N_BARS))
    broker, book, cash, equity, positions, rejected = _both(seed, settings, per_bar, chunk)
    assert np.array_equal(book.cash, cash)
    assert np.array_equal(book.equity, equity)
    assert np.array_equal(book.position_rows, positions)
    assert book.fill_rows() == broker.fill_rows()
    assert _trade_fields(book.all_trades()) == _trade_fields(broker.all_trades())
    assert book.borrow_paid == broker.borrow_paid
    python_events = {did: events for did, events in broker._event_log.items() if events}
    compiled = book.event_tuples()
    assert not rejected & set(compiled)  # the checks' rejections are logged by the runner, not a book
    assert compiled == python_events
    python_texts = broker.events_json()
    assert book.events_json() == python_texts  # FMEL's texts, byte for byte
    # As a frame's column: each decision's row after a silent one ("[]"), and a text the runner
    # logged itself for every 7th decision, which replaces its events
    n_decisions = len(book.decisions)
    given = [f'["given {k}"]' if k % 7 == 3 else None for k in range(n_decisions)]
    column = book.events_column(2 * np.arange(n_decisions) + 1, 2 * n_decisions + 1, given).to_pylist()
    assert column[::2] == ["[]"] * (n_decisions + 1)
    assert column[1::2] == [
        given[k] or python_texts.get(book.decision_ids[k], "[]") for k in range(n_decisions)
    ]


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("name", sorted(flows.SETTINGS))
def test_compiled_book_books_random_flows_as_the_python_broker_does(seed: int, name: str) -> None:
    _assert_same(seed, flows.SETTINGS[name], (0, 0, 1, 2, 3))


@pytest.mark.parametrize("seed", range(100, 112))
@pytest.mark.parametrize("name", sorted(flows.SETTINGS))
def test_compiled_book_on_dense_flows_with_many_links(seed: int, name: str) -> None:
    _assert_same(seed, flows.SETTINGS[name], (2, 4, 6))


@pytest.mark.parametrize(
    ("scale", "settings"),
    [
        (1e-7, BacktestSettings(initial_cash=50_000, costs=CostModel(commission_per_share=1e-7))),
        (1e15, BacktestSettings(initial_cash=5e21, costs=CostModel(commission_pct=1e-21), allow_short=True)),
    ],
    ids=["tiny-prices-and-commissions", "huge-prices"],
)
@pytest.mark.parametrize("seed", range(3))
def test_event_texts_of_numbers_outside_orjsons_repr_equal_range(seed: int, scale: float, settings) -> None:
    """Prices below 1e-4 or from 1e16 up, and commissions below 1e-4: the compiled renderer takes
    them the Python way (``repr`` spells them otherwise than orjson), byte for byte."""
    broker, book, *_ = _both(seed, settings, (1, 2, 3), 5, scale=scale)
    texts = book.events_json()
    assert texts == broker.events_json()
    assert any("e-" in text or "e+" in text for text in texts.values())  # such numbers were there


def test_the_flows_reach_every_branch_the_parity_is_about() -> None:
    """The parity above means something only if the flows produce every kind of event."""
    kinds, reasons = set(), set()
    for seed in range(6):
        for settings in flows.SETTINGS.values():
            _, book, *_ = _both(seed, settings, (2, 4, 6), 7)
            for events in book.event_tuples().values():
                for event in events:
                    kinds.add(event[0])
                    if event[0] in ("cancelled", "rejected", "rejected_decision"):
                        reasons.add(event[-1])
    assert kinds == {"submitted", "filled", "cancelled", "rejected", "rejected_decision", "trade_opened",
                     "trade_closed"}  # fmt: skip
    for reason in ("OCO", "parent", "bracket", "expired", "cancelled by the agent", "insufficient cash",
                   "short selling is disabled", "already at target", "run ended", "no open"):  # fmt: skip
        assert any(text.startswith(reason) for text in reasons), reason


def test_book_value_is_the_exactly_rounded_sum() -> None:
    """``book_value`` (Python) and the compiled book's sum: the exact sum of the products, rounded
    once, so the same double whatever the order of the symbols and the machine."""
    from farm_dagster.engine.book import _book_value

    rng = np.random.default_rng(5)
    for _trial in range(400):
        n = int(rng.integers(0, 120))
        shares = np.round(rng.normal(0, 1, n) * 10.0 ** rng.integers(0, 12, n))
        shares[rng.random(n) < 0.4] = 0.0
        prices = rng.random(n) * 10.0 ** rng.integers(-8, 5, n)
        exact = float(sum((Fraction(float(x)) for x in shares * prices), Fraction(0)))
        assert book_value(shares, prices) == exact
        assert _book_value(shares, prices, False) == exact
        short = shares < 0
        assert _book_value(shares, prices, True) == book_value(shares[short], prices[short])
        order = rng.permutation(n)
        assert book_value(shares[order], prices[order]) == exact
    overflow = np.array([1e308, 1e308, -1e308])  # the first two overflow: the sum is not finite
    assert math.isinf(book_value(overflow, np.ones(3)))
    assert math.isinf(_book_value(overflow, np.ones(3), False))


def test_event_texts_with_long_symbol_names_match_the_broker() -> None:
    """Trade events carry the symbol's JSON text: a name of thousands of characters (escaped
    quotes and non-ASCII included) still fits the compiled renderer's buffer, byte for byte."""
    symbols = ("X" * 3000, 'Q"\\é' * 700)
    index = {s: i for i, s in enumerate(symbols)}
    settings = BacktestSettings(initial_cash=1e9)
    n_bars = 6
    ts = np.arange(n_bars, dtype=np.int64) * flows.DAY
    prices = np.tile(np.array([10.0, 20.0]), (n_bars, 1)) + np.arange(n_bars)[:, None]
    block = np.stack([prices, prices * 1.01, prices * 0.99, prices, np.full_like(prices, 1e6)], axis=1)
    broker = Broker(symbols, settings)
    book = CompiledBook(symbols, settings, ts, *(block[:, f] for f in range(4)))
    for t in range(n_bars):
        broker.on_bar(t, int(ts[t]), block[t])
        for seq, symbol in enumerate(symbols):
            raw = {"symbol": symbol, "action": "BUY" if t % 2 == 0 else "SELL", "quantity": 5.0}
            checked = check_decision(raw, index)
            book.add(t, seq, checked, f"d{t}-{seq}")
            broker.submit(checked, f"d{t}-{seq}", t, int(ts[t]), seq)
    book.advance(n_bars)
    broker.cancel_all(int(ts[-1]), "run ended")
    book.cancel_all(int(ts[-1]))
    texts = book.events_json()
    assert texts == broker.events_json()
    assert any("trade_closed" in text for text in texts.values())


def test_distinct_event_times_are_np_unique_and_where_each_time_is() -> None:
    """The events column's distinct times: what ``np.unique`` and ``searchsorted`` give, on risen
    times (the book's usual order) and on times out of order (the fallback)."""
    rng = np.random.default_rng(5)
    for trial in range(200):
        times = rng.integers(0, 20, int(rng.integers(0, 30)))
        if trial % 2:
            times = np.sort(times)
        distinct, where = book_module._distinct(times)
        expected = np.unique(times)
        assert np.array_equal(distinct, expected)
        assert np.array_equal(where, np.searchsorted(expected, times))
