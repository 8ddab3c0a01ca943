"""Native SDK: indicators against pandas/reference loops, Context views and reads, decisions, params,
and the child host driven in-process through its real message handling."""

from __future__ import annotations

import math
import os
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from farm_dagster.engine import host, protocol
from farm_dagster.engine.broker import Broker
from farm_dagster.engine.costs import BacktestSettings
from farm_dagster.sdk import (
    Agent,
    Context,
    Decision,
    ParamError,
    bracket,
    buy,
    cancel,
    hold,
    indicators,
    sell,
    target_percent,
    target_shares,
)
from farm_dagster.sdk.context import History

SYMBOLS = ("AAA", "BBB", "CCC")


def _series(n: int = 300, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (n, len(SYMBOLS))), axis=0))
    x[[i for i in (5, 77, 78) if i < n], 1] = np.nan  # a few missing bars
    return x


def _context(x: np.ndarray) -> tuple[Context, History, Broker]:
    history = History(x.shape[1], capacity=4)  # tiny: forces the buffer to grow
    broker = Broker(SYMBOLS, BacktestSettings())
    return Context(SYMBOLS, history, broker), history, broker


def _feed(history: History, x: np.ndarray, t: int) -> None:
    block = np.vstack([x[t], x[t], x[t], x[t], np.ones(x.shape[1])])
    history.append(t * 86_400 * 10**9, block)


def test_incremental_indicators_match_pandas_and_reference_bar_by_bar() -> None:
    x = _series()
    frame = pd.DataFrame(x)
    ctx, history, _ = _context(x)
    want_sma = frame.rolling(20).mean().to_numpy()
    want_std = frame.rolling(15).std().to_numpy()
    want_ema = frame.ewm(span=12, adjust=False, ignore_na=True).mean().to_numpy()
    want_ret = (frame / frame.shift(5) - 1).to_numpy()
    for t in range(len(x)):
        _feed(history, x, t)
        if t % 7:  # skipped bars: the EMA/RSI states must catch up on the next call
            continue
        np.testing.assert_allclose(ctx.sma(None, 20), want_sma[t], rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(ctx.rolling_std(None, 15), want_std[t], rtol=1e-9, equal_nan=True)
        np.testing.assert_allclose(ctx.ema(None, 12), want_ema[t], rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(ctx.returns(None, 5), want_ret[t], rtol=1e-12, equal_nan=True)
        assert ctx.sma("CCC", 20) == pytest.approx(want_sma[t, 2], nan_ok=True)
    np.testing.assert_allclose(indicators.sma(x, 20), want_sma, rtol=1e-9, equal_nan=True)


def _wilder_reference(values: list[float], window: int) -> list[float]:
    """Wilder's RSI written the textbook way, one value at a time."""
    out, gains, losses, prev, avg_g, avg_l = [], [], [], None, 0.0, 0.0
    for v in values:
        if prev is not None and not math.isnan(v):
            change = v - prev
            g, l_ = max(change, 0.0), max(-change, 0.0)
            if len(gains) < window:
                gains.append(g)
                losses.append(l_)
                avg_g, avg_l = sum(gains) / window, sum(losses) / window
            else:
                avg_g, avg_l = (avg_g * (window - 1) + g) / window, (avg_l * (window - 1) + l_) / window
        if not math.isnan(v):
            prev = v
        if len(gains) < window:
            out.append(math.nan)
        elif avg_l == 0:
            out.append(100.0 if avg_g > 0 else 50.0)
        else:
            out.append(100 - 100 / (1 + avg_g / avg_l))
    return out


def test_rsi_is_wilders_rsi() -> None:
    x = _series(200)
    ctx, history, _ = _context(x)
    got = []
    for t in range(len(x)):
        _feed(history, x, t)
        got.append(ctx.rsi(None, 14))
    got = np.array(got)
    for j in range(len(SYMBOLS)):
        np.testing.assert_allclose(
            got[:, j], _wilder_reference(list(x[:, j]), 14), rtol=1e-10, equal_nan=True
        )
    np.testing.assert_allclose(indicators.rsi(x, 14), got, rtol=1e-12, equal_nan=True)
    valid = got[~np.isnan(got)]
    assert valid.min() >= 0 and valid.max() <= 100


def test_context_sees_only_streamed_bars_read_only_and_records_reads() -> None:
    x = _series(50)
    ctx, history, _ = _context(x)
    for t in range(10):
        _feed(history, x, t)
    closes = ctx.history("AAA")
    assert len(closes) == 10 and closes[-1] == x[9, 0]
    with pytest.raises(IndexError):
        closes[10]  # noqa: B018 - the next bar does not exist
    with pytest.raises(ValueError):
        closes[0] = 1.0  # read-only view
    assert ctx.history("BBB", "close", lookback=3).tolist() == pytest.approx(x[7:10, 1].tolist())
    assert ctx.history_all("high", lookback=4).shape == (4, 3)
    assert ctx.bar_index == 9 and ctx.time == pd.Timestamp(9 * 86_400 * 10**9, tz="UTC").to_pydatetime()
    ctx.sma("CCC", 5)
    reads = ctx._take_reads()
    assert reads == {
        "*": {"fields": ["high"], "lookback": 4},
        "AAA": {"fields": ["close"], "lookback": None},
        "BBB": {"fields": ["close"], "lookback": 3},
        "CCC": {"fields": ["close"], "lookback": 5},
    }
    assert ctx._take_reads() == {}  # reset per bar
    with pytest.raises(KeyError, match="unknown symbol"):
        ctx.history("ZZZ")
    with pytest.raises(KeyError, match="unknown field"):
        ctx.history("AAA", "vwap")


@pytest.mark.parametrize("n_symbols", [3, 100, 700])
def test_history_touch_ahead_maps_the_pages_of_each_bar_before_it_comes_and_writes_only_zeros(
    n_symbols: int,
) -> None:
    """The host calls ``touch_ahead`` after each answer so that ``append`` finds its pages mapped.

    The buffer's unstreamed rows are NaN here, so a write shows (touch_ahead writes 0.0) and an
    appended value shows (the blocks hold no NaN): before each bar comes, every 4 KiB page its
    row lies on must hold a written value already, and nothing but zeros is ever written ahead.
    """
    bars, page = 4, 4096
    step = max(1, 512 // n_symbols)  # rows per page of one field
    capacity = max(16, 3 * step + bars + 2)  # History holds at least 16 rows
    history = History(n_symbols, capacity=capacity, expected=capacity)
    history.data[:] = np.nan
    flat = history.data.reshape(-1)
    base = history.data.ctypes.data
    blocks = np.random.default_rng(n_symbols).normal(size=(capacity, 5, n_symbols))
    checked = 0
    for n, block in enumerate(blocks):
        if n >= step + bars:  # from here on, every row's pages were touched ahead of it
            for field in range(5):
                lo = (field * capacity + n) * n_symbols  # the row's first float in the buffer
                for address in range((base + 8 * lo) // page, (base + 8 * (lo + n_symbols) - 1) // page + 1):
                    first = max(0, -(-(address * page - base) // 8))
                    last = min(flat.size, ((address + 1) * page - base) // 8)
                    assert not np.isnan(flat[first:last]).all(), (n, field, address)
                    checked += 1
        history.append(n, block)
        history.touch_ahead(bars)
        ahead = history.data[:, n + 1 :]
        assert (np.isnan(ahead) | (ahead == 0.0)).all()
    assert checked > 0
    np.testing.assert_array_equal(history.data, blocks.transpose(1, 0, 2))


def test_decision_helpers_build_compact_wire_form() -> None:
    d = buy(
        "AAA",
        np.int64(5),
        limit=np.float64(9.5),
        confidence=0.7,
        reasoning="cheap",
        inputs={"z": np.float64(-2.0), "gap": float("nan")},
    )
    assert d.to_wire() == {
        "symbol": "AAA",
        "action": "BUY",
        "quantity": 5,
        "limit_price": 9.5,
        "confidence": 0.7,
        "order_type": "limit",
        "reasoning": "cheap",
        "inputs": {"z": -2.0, "gap": None},
    }
    assert sell("AAA", 2).to_wire() == {"symbol": "AAA", "action": "SELL", "quantity": 2}
    assert target_percent("AAA", 0.5).to_wire()["target_percent"] == 0.5
    assert target_shares("AAA", -3).to_wire()["target_shares"] == -3
    assert hold("AAA", confidence=0.2).to_wire() == {"symbol": "AAA", "action": "HOLD", "confidence": 0.2}
    assert isinstance(d, Decision)
    for wire in (d.to_wire(), sell("AAA", 2).to_wire(), hold("AAA").to_wire()):
        assert protocol.check_decision(wire, {"AAA": 0}).reject_reason is None


def test_bracket_helper_links_exits_to_the_entry_once_placed() -> None:
    entry, stop_loss, profit = bracket("AAA", -20, stop=110.0, take_profit=90.0, reasoning="fade")
    assert (entry.action, stop_loss.action, profit.action) == ("SELL", "BUY", "BUY")  # a short bracket
    assert (stop_loss.order_type, stop_loss.stop_price, profit.order_type, profit.limit_price) == (
        "stop",
        110.0,
        "limit",
        90.0,
    )
    with pytest.raises(ValueError, match="has not been placed"):
        stop_loss.to_compact()  # the entry has no ref until the platform places it
    entry.placed = (7, 0)
    wire = stop_loss.to_compact()
    assert isinstance(wire, dict) and wire["parent_ref"] == "0000007-000"
    checked = protocol.check_decision(wire, {"AAA": 0})
    assert (checked.parent_ref, checked.reject_reason) == ("0000007-000", None)
    with pytest.raises(ValueError, match="non-zero"):
        bracket("AAA", 0, stop=1.0, take_profit=2.0)


def test_stop_and_cancel_helpers_round_trip_through_the_checks() -> None:
    stop = sell("AAA", 3, stop=np.float64(9.25), reasoning="stop-loss")
    assert stop.to_wire() == {
        "symbol": "AAA",
        "action": "SELL",
        "quantity": 3,
        "order_type": "stop",
        "stop_price": 9.25,
        "reasoning": "stop-loss",
    }
    for form in (stop.to_wire(), stop.to_compact()):
        checked = protocol.check_decision(form, {"AAA": 0})
        assert (checked.order_type, checked.stop_price, checked.reject_reason) == ("stop", 9.25, None)
    stop_limit = buy("AAA", 1, limit=10.5, stop=11)
    assert (stop_limit.order_type, stop_limit.stop_price, stop_limit.limit_price) == ("stop_limit", 11, 10.5)
    trailing = sell("AAA", 2, trail_percent=0.05)
    wire = trailing.to_compact()
    assert wire == {
        "symbol": "AAA",
        "action": "SELL",
        "quantity": 2,
        "order_type": "trailing_stop",
        "trail_percent": 0.05,
    }
    checked = protocol.check_decision(wire, {"AAA": 0})
    assert (checked.order_type, checked.trail_percent, checked.stop_price, checked.reject_reason) == (
        "trailing_stop",
        0.05,
        None,  # the book starts it from the close the agent saw
        None,
    )
    with pytest.raises(ValueError, match="starting stop="):
        sell("AAA", 1, limit=10, trail_amount=1.0)
    trailing_limit = sell("AAA", 2, stop=95.0, limit=94.0, trail_percent=0.05)
    wire = trailing_limit.to_compact()
    assert wire == {
        "symbol": "AAA",
        "action": "SELL",
        "quantity": 2,
        "order_type": "trailing_stop_limit",
        "limit_price": 94.0,
        "stop_price": 95.0,
        "trail_percent": 0.05,
    }
    checked = protocol.check_decision(wire, {"AAA": 0})
    assert (checked.order_type, checked.stop_price, checked.limit_price, checked.trail_percent) == (
        "trailing_stop_limit",
        95.0,
        94.0,
        0.05,
    )
    assert checked.is_order
    assert target_percent("AAA", 0.5, on_close=True).to_wire()["order_type"] == "market_on_close"
    assert protocol.check_decision(sell("AAA", 1, on_close=True).to_compact(), {"AAA": 0}).is_order
    with pytest.raises(ValueError, match="on_close"):
        buy("AAA", 1, limit=10, on_close=True)
    good_till = buy("AAA", 1, limit=9.0, expires=datetime(2024, 1, 2, 16, 0))  # naive = UTC
    wire = good_till.to_compact()
    assert wire["expires_at"] == int(pd.Timestamp("2024-01-02 16:00", tz="UTC").value)
    assert protocol.check_decision(wire, {"AAA": 0}).expires_at == wire["expires_at"]
    assert protocol.check_decision({**wire, "expires_at": "tomorrow"}, {"AAA": 0}).reject_reason
    with pytest.raises(ValueError, match="not been sent"):
        cancel(stop)  # no ref until the platform has sent it
    stop.placed = (12, 3)
    withdraw = cancel(stop, reasoning="trend over")
    assert stop.ref == "0000012-003" and withdraw.to_wire()["order_ref"] == "0000012-003"
    checked = protocol.check_decision(withdraw.to_compact(), {"AAA": 0})
    assert (checked.action, checked.order_ref, checked.is_order) == ("CANCEL", "0000012-003", False)


def _compact_variants() -> list[list]:
    """Compact decisions around the fast-checked kinds (market, stop, cancel), each field bent."""
    bases = [
        ["AAA", "TARGET", None, None, 0.25, None, None, 0.5, "why", {"x": 1.5}, None, None],
        ["AAA", "BUY", 10.0, None, None, None, None, 0.5, "why", {"x": 1.5}, None, None],
        ["AAA", "SELL", 10.0, None, None, "stop", None, 0.5, "why", {"x": 1.5}, 95.5, None],
        ["AAA", "CANCEL", None, None, None, None, None, None, "why", None, None, "0000012-003"],
        ["AAA", "HOLD", None, None, None, None, None, 1.0, "", None, None, None],
    ]
    bent = {
        0: ["ZZZ", 3, None],
        1: ["BUY", "SELL", "HOLD", "TARGET", "CANCEL", "cancel", "sell", 7],
        2: [None, 0.0, -1.0, 10, math.nan, math.inf, True, "10", 1e12, 1.0000000000001e12, 1e308],
        3: [None, 5.0, 1e12, -1e12, -2e12, 1e308, math.nan],
        4: [None, 11.0, -0.5, 1],
        5: [None, "market", "stop", "limit", "stop_limit", "trailing_stop", "nope"],
        6: [None, 90.0],
        7: [None, 0, 1.5, -0.1, math.nan, "high"],
        8: [None, 5, "x" * 5000],
        9: [None, {"x": math.nan}, {"x": [1]}, {"x": "y" * 300}, {1: 2}, []],
        10: [None, 0.0, -3.0, 95, math.inf, "95"],
        11: [None, "0000012-003", "12-3", 12, ""],
    }
    out = []
    for base in bases:
        out.append(base)
        for field, values in bent.items():
            for value in values:
                variant = list(base)
                variant[field] = value
                out.append(variant)
    return out


def test_fast_checked_compact_decisions_equal_the_general_checks() -> None:
    """The compact fast path is only a shortcut: every answer equals the object form's checks."""
    symbols = {"AAA": 0, "BBB": 1}
    variants = _compact_variants()
    fast = 0
    for raw in variants:
        general = protocol.check_decision(protocol.expand(raw), symbols)
        assert protocol.check_decision(list(raw), symbols) == general, raw
        fast += protocol._fast_check(list(raw), symbols) is not None
    assert fast > 40  # the shortcut does answer most well-formed ones (stops and cancels included)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"symbol": "ZZZ", "action": "BUY", "quantity": 1}, "unknown symbol"),
        ({"symbol": "AAA", "action": "BUY", "quantity": float("nan")}, "positive quantity"),
        ({"symbol": "AAA", "action": "BUY", "quantity": -1}, "positive quantity"),
        ({"symbol": "AAA", "action": "BUY", "quantity": "10"}, "positive quantity"),
        ({"symbol": "AAA", "action": "SELL", "quantity": 1e308}, "at most 1e+12 shares"),
        ({"symbol": "AAA", "action": "TARGET", "target_shares": -2e12}, "within ±1e+12"),
        ({"symbol": "AAA", "action": "HOLD", "confidence": 1.5}, "confidence"),
        ({"symbol": "AAA", "action": "YOLO"}, "unknown action"),
        ({"symbol": "AAA", "action": "TARGET"}, "exactly one"),
        ({"symbol": "AAA", "action": "TARGET", "target_percent": 50}, "target_percent"),
        ({"symbol": "AAA", "action": "BUY", "quantity": 1, "order_type": "limit"}, "limit_price"),
        ({"symbol": "AAA", "action": "BUY", "quantity": 1, "order_type": "stop"}, "stop_price"),
        (
            {"symbol": "AAA", "action": "SELL", "quantity": 1, "order_type": "stop", "stop_price": -1},
            "stop_price",
        ),
        (
            {"symbol": "AAA", "action": "TARGET", "target_shares": 1, "order_type": "stop", "stop_price": 9},
            "BUY or SELL",
        ),
        (
            {"symbol": "AAA", "action": "BUY", "quantity": 1, "order_type": "trailing_limit"},
            "order_type must be",
        ),
        (
            {"symbol": "AAA", "action": "BUY", "quantity": 1, "order_type": "stop_limit", "stop_price": 9},
            "limit_price",
        ),
        (
            {"symbol": "AAA", "action": "SELL", "quantity": 1, "order_type": "trailing_stop"},
            "exactly one of trail",
        ),
        (
            {
                "symbol": "AAA",
                "action": "SELL",
                "quantity": 1,
                "order_type": "trailing_stop",
                "trail_percent": 5,
            },
            "trail_percent",
        ),
        ({"symbol": "AAA", "action": "CANCEL"}, "order_ref"),
        ({"symbol": "AAA", "action": "CANCEL", "order_ref": "12-3"}, "order_ref"),
        ({"symbol": "AAA", "action": "BUY", "quantity": 1, "parent_ref": 7}, "parent_ref must be"),
        ({"symbol": "AAA", "action": "BUY", "quantity": 1, "oco": "x"}, "oco must be"),
        ({"symbol": "AAA", "action": "BUY", "quantity": 1, "inputs": {"x": [1, 2]}}, "input"),
        ([1, 2], "JSON object"),
    ],
)
def test_check_decision_rejects_bad_fields_with_a_reason(raw: object, reason: str) -> None:
    checked = protocol.check_decision(raw, {"AAA": 0})
    assert checked.reject_reason is not None and reason in checked.reject_reason
    assert not checked.is_order


def test_declared_params_merge_and_reject_unknown_or_mistyped() -> None:
    class Tuned(Agent):
        params = {"fast": 10, "threshold": 0.5, "long_only": True}

    assert Tuned().params == {"fast": 10, "threshold": 0.5, "long_only": True}
    assert Tuned({"fast": 3, "threshold": 1}).params == {"fast": 3, "threshold": 1.0, "long_only": True}
    with pytest.raises(ParamError, match="unknown parameter 'slow'"):
        Tuned({"slow": 30})
    with pytest.raises(ParamError, match="expects int"):
        Tuned({"fast": "ten"})
    with pytest.raises(ParamError, match="expects bool"):
        Tuned({"long_only": 1})


class _FakeChannel:
    """The host's channel, fed from a list (the real pipes are covered by the engine tests)."""

    def __init__(self, messages: list[bytes]) -> None:
        self.messages, self.sent = list(messages), []

    def recv(self) -> bytes:
        return self.messages.pop(0)

    def send(self, payload: bytes) -> None:
        self.sent.append(payload)


AGENT = """\
from farm_dagster.sdk import Agent, buy


class Once(Agent):
    params = {"qty": 1}

    def setup(self, ctx):
        self.calls = 0

    def on_bar(self, ctx):
        self.calls += 1
        if self.calls == 2:
            return buy("AAA", self.params["qty"], confidence=0.5, inputs={"sma": ctx.sma("AAA", 2)})
        if self.calls == 4:
            return 1 / 0
        return None
"""


def _init(code: str, params: dict | None = None) -> bytes:
    settings = BacktestSettings(params=params or {})
    return protocol.encode_json(
        protocol.INIT,
        {"code": code, "filename": "once.py", "symbols": ["AAA"], "settings": settings.to_json()},
    )


def _bar(t: int, price: float) -> bytes:
    return protocol.encode_bar(t, np.array([[price], [price], [price], [price], [1.0]]))


def test_host_answers_each_bar_and_reports_agent_errors_with_their_line() -> None:
    channel = _FakeChannel([_init(AGENT, {"qty": 7})] + [_bar(t, 10.0 + t) for t in range(5)])
    host.main(channel)
    kinds = [m[0] for m in channel.sent]
    assert kinds == [
        protocol.READY,
        protocol.DECISIONS,
        protocol.DECISIONS,
        protocol.DECISIONS,
        protocol.ERROR,
    ]
    assert protocol.decode_json(channel.sent[0])["params"] == {"qty": 7}
    equity, body = protocol.decode_decisions(channel.sent[2])
    assert body["decisions"] == [
        {"symbol": "AAA", "action": "BUY", "quantity": 7, "confidence": 0.5, "inputs": {"sma": 10.5}}
    ]
    assert body["data_read"] == {"AAA": {"fields": ["close"], "lookback": 2}}
    assert equity == 100_000
    assert protocol.decode_decisions(channel.sent[1]) == (100_000, {})  # nothing decided, nothing read
    error = protocol.decode_json(channel.sent[-1])
    assert error["error_type"] == "ZeroDivisionError"
    assert error["line"] == AGENT.splitlines().index("            return 1 / 0") + 1
    assert (
        error["traceback"][-1].startswith('File "once.py", line') and "return 1 / 0" in error["traceback"][-1]
    )


def test_host_reports_load_errors() -> None:
    for code, kind in [("x = (\n", "SyntaxError"), ("x = 1\n", "AgentLoadError")]:
        channel = _FakeChannel([_init(code)])
        host.main(channel)
        (message,) = channel.sent
        assert message[0] == protocol.ERROR and protocol.decode_json(message)["error_type"] == kind
    channel = _FakeChannel([_init(AGENT, {"nope": 1})])
    host.main(channel)
    assert "unknown parameter" in protocol.decode_json(channel.sent[0])["message"]


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_host_prepare_maps_the_announced_history_at_once_and_the_run_keeps_its_bars_there() -> None:
    n_bars = 1_700_000  # 5 fields x 1 symbol x 8 bytes: 68 MB
    before = _resident_bytes()
    host.prepare({"history": [1, n_bars]})
    assert _resident_bytes() - before >= 0.95 * 5 * n_bars * 8  # mapped now, not as the bars come
    buffer = host._mapped[History.shape(1, n_bars)]
    assert buffer.shape == (5, n_bars, 1) and not buffer.any()
    settings = BacktestSettings()
    init = protocol.encode_json(
        protocol.INIT,
        {
            "code": AGENT,
            "filename": "once.py",
            "symbols": ["AAA"],
            "settings": settings.to_json(),
            "n_bars_hint": n_bars,
        },
    )
    channel = _FakeChannel([init] + [_bar(t, 10.0 + t) for t in range(5)])
    host.main(channel)
    assert History.shape(1, n_bars) not in host._mapped  # taken by the run, once
    assert [m[0] for m in channel.sent][-1] == protocol.ERROR  # the agent's 1 / 0 on its fourth bar
    assert buffer[3, :5, 0].tolist() == [10.0, 11.0, 12.0, 13.0, 0.0]  # its closes, nothing beyond


def test_host_prepare_without_room_leaves_the_run_to_map_its_history_as_the_bars_come(monkeypatch) -> None:
    def no_room(*args: object, **kwargs: object) -> None:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(host.mmap, "mmap", no_room)
    host.prepare({"history": [3, 500]})
    assert History.shape(3, 500) not in host._mapped
    channel = _FakeChannel([_init(AGENT)] + [_bar(t, 10.0 + t) for t in range(3)] + [bytes((protocol.END,))])
    host.main(channel)  # the run goes on with a buffer of its own
    assert [m[0] for m in channel.sent] == [protocol.READY] + [protocol.DECISIONS] * 3 + [protocol.DONE]
