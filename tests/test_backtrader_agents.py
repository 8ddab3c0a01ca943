"""Backtrader agents, unchanged, through the sandboxed engine.

The reference is plain backtrader (``cerebro.run()`` with its defaults: market orders at the next
bar's open, no commission) on exactly the same real bars. Our run goes through the real sandbox
child, the streamed protocol and the parent's trusted broker, so agreement here means the
translation of backtrader orders into protocol decisions loses nothing.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from farm_dagster.engine.costs import BacktestSettings, CostModel
from farm_dagster.engine.runner import run_backtest
from farm_dagster.fmel.rows import events_of
from farm_dagster.market_data.panel import BarPanel
from farm_dagster.market_data.sources import load_bokeh_stocks

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bt_sma_crossover.py"
CASH = 100_000.0


# --------------------------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def bokeh() -> pd.DataFrame:
    return load_bokeh_stocks()


@pytest.fixture(scope="module")
def aapl(bokeh: pd.DataFrame) -> BarPanel:
    """AAPL daily OHLCV 2004-2012 (2265 real bars, unadjusted: the 2005 split is in the data)."""
    return BarPanel.from_long(bokeh[bokeh["symbol"] == "AAPL"], ["AAPL"]).slice("2004-01-01", "2012-12-31")


# --------------------------------------------------------------------------- plain backtrader reference
class _Recorder(bt.Analyzer):
    """Fills, closed trades and every next() call of the reference run."""

    def start(self) -> None:
        self.fills: list[tuple] = []
        self.trades: list[tuple] = []

    def notify_order(self, order: bt.Order) -> None:
        if order.status == order.Completed:
            side = "BUY" if order.isbuy() else "SELL"
            when = pd.Timestamp(bt.num2date(order.executed.dt), tz="UTC")
            self.fills.append((when, order.data._name, side, abs(order.executed.size), order.executed.price))

    def notify_trade(self, trade: bt.Trade) -> None:
        if trade.isclosed:
            self.trades.append(
                (
                    trade.data._name,
                    pd.Timestamp(bt.num2date(trade.dtopen), tz="UTC"),
                    pd.Timestamp(bt.num2date(trade.dtclose), tz="UTC"),
                    trade.pnl,
                )
            )


def _module(code: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    sys.modules[name] = module  # backtrader's metaclasses look the strategy's module up by name
    exec(compile(code, f"{name}.py", "exec"), module.__dict__)
    return module


def plain_backtrader(code: str, panel: BarPanel, calls: list | None = None) -> tuple[bt.Cerebro, _Recorder]:
    """The same file in plain backtrader, defaults throughout; one PandasData per symbol (NaN rows dropped)."""
    agent = _module(code, f"plain_agent_{abs(hash(code))}").Agent
    if calls is not None:

        class Agent(agent):  # records each next() call and the FMEL attributes it left
            def next(self):
                super().next()
                calls.append(
                    (
                        pd.Timestamp(self.data0.datetime.datetime(0), tz="UTC"),
                        getattr(self, "fmel_confidence", None),
                        getattr(self, "fmel_reasoning", ""),
                    )
                )

        agent = Agent
    cerebro = bt.Cerebro()
    cerebro.addstrategy(agent)
    index = panel.index.tz_localize(None)
    for k, symbol in enumerate(panel.symbols):
        frame = pd.DataFrame(
            {f: panel.field(f)[:, k] for f in ("open", "high", "low", "close", "volume")}, index=index
        )
        cerebro.adddata(bt.feeds.PandasData(dataname=frame.dropna()), name=symbol)
    cerebro.broker.setcash(CASH)
    cerebro.addanalyzer(_Recorder, _name="rec")
    strategy = cerebro.run()[0]
    return cerebro, strategy.analyzers.rec


def run_ours(code: str, panel: BarPanel, filename: str = "bt_agent.py", **settings):
    return run_backtest(
        code,
        panel,
        BacktestSettings(initial_cash=CASH, **settings),
        agent_id="bt-test",
        run_id="bt-run",
        filename=filename,
    )


def _fill_tuples(result) -> list[tuple]:
    fills = result.fills
    return list(
        zip(
            fills["timestamp"], fills["symbol"], fills["side"], fills["quantity"], fills["price"], strict=True
        )
    )


def _assert_same_fills(ours: list[tuple], ref: list[tuple]) -> None:
    assert len(ours) == len(ref), f"{len(ours)} fills here, {len(ref)} in plain backtrader"
    for mine, theirs in zip(ours, ref, strict=True):
        assert mine[:4] == theirs[:4], (mine, theirs)
        assert mine[4] == pytest.approx(theirs[4], rel=1e-12), (mine, theirs)


def _assert_same_trades(result, ref_trades: list[tuple]) -> None:
    closed = result.trades[result.trades["status"] == "closed"]
    ours = list(zip(closed["symbol"], closed["entry_time"], closed["exit_time"], closed["pnl"], strict=True))
    assert len(ours) == len(ref_trades)
    for mine, theirs in zip(
        sorted(ours, key=lambda r: (r[2], r[0])), sorted(ref_trades, key=lambda r: (r[2], r[0])), strict=True
    ):
        assert mine[:3] == theirs[:3], (mine, theirs)
        assert mine[3] == pytest.approx(theirs[3], rel=1e-9, abs=1e-6), (mine, theirs)


@pytest.fixture(scope="module")
def reference(aapl: BarPanel) -> dict:
    """The example in plain backtrader: final value, fills, closed trades and each next() call."""
    calls: list[tuple] = []
    cerebro, rec = plain_backtrader(EXAMPLE.read_text(), aapl, calls=calls)
    return {"value": cerebro.broker.getvalue(), "fills": rec.fills, "trades": rec.trades, "calls": calls}


@pytest.fixture(scope="module")
def example_result(aapl: BarPanel):
    return run_ours(EXAMPLE.read_text(), aapl, filename=EXAMPLE.name)


# ------------------------------------------------------------------------------------------ (1) parity
@pytest.mark.slow
def test_example_matches_plain_backtrader(example_result, reference: dict, aapl: BarPanel) -> None:
    result = example_result
    assert result.status == "completed", result.error
    assert result.kind == "backtrader"
    assert len(reference["fills"]) >= 20  # the window has real crossovers in both directions
    _assert_same_fills(_fill_tuples(result), reference["fills"])
    _assert_same_trades(result, reference["trades"])
    # Entry sizes come from the agent's own sizing on its mirror cash: equal sizes prove the mirror
    # broker (what the agent sees) and the trusted broker (what is reported) agree bar by bar.
    assert result.equity["equity"].iloc[-1] == pytest.approx(reference["value"], rel=1e-12)
    assert not result.tamper_suspected
    assert len(result.equity) == aapl.n_bars


MULTI = '''
import backtrader as bt


class Agent(bt.Strategy):
    """A crossover per symbol, each sized to 45% of the portfolio value."""

    params = (("fast", 5), ("slow", 20))

    def __init__(self):
        self.cross = {d._name: bt.indicators.CrossOver(bt.indicators.SMA(d.close, period=self.p.fast),
                                                       bt.indicators.SMA(d.close, period=self.p.slow))
                      for d in self.datas}

    def next(self):
        for d in self.datas:
            if not len(d) or d.datetime[0] != self.datetime[0]:
                continue  # no bar for this symbol today
            cross = self.cross[d._name][0]
            held = self.getposition(d).size
            if not held and cross > 0:
                self.buy(data=d, size=int(self.broker.getvalue() * 0.45 / d.close[0]))
                self.fmel_reasoning = d._name + " golden cross"
            elif held and cross < 0:
                self.close(data=d)
                self.fmel_reasoning = d._name + " death cross"
'''


@pytest.mark.slow
@pytest.mark.parametrize("order", [["AAPL", "FB"], ["FB", "AAPL"]], ids=["gap-in-data1", "gap-in-data0"])
def test_multi_symbol_with_gaps_matches_plain_backtrader(bokeh: pd.DataFrame, order: list[str]) -> None:
    """Two feeds, one of them FB, which starts trading inside the window (NaN bars before)."""
    frame = bokeh[bokeh["symbol"].isin(order)]
    panel = BarPanel.from_long(frame, order).slice("2011-06-01", "2013-12-31")
    assert np.isnan(panel.close[:, order.index("FB")]).sum() > 100  # FB really is missing for a while
    cerebro, ref = plain_backtrader(MULTI, panel)
    result = run_ours(MULTI, panel)

    assert result.status == "completed", result.error
    assert {f[1] for f in ref.fills} == {"AAPL", "FB"}
    _assert_same_fills(_fill_tuples(result), ref.fills)
    _assert_same_trades(result, ref.trades)
    assert result.equity["equity"].iloc[-1] == pytest.approx(cerebro.broker.getvalue(), rel=1e-12)
    assert not result.tamper_suspected


# -------------------------------------------------------------------------------------- (2) look-ahead
PEEKER = (
    EXAMPLE.read_text()
    + '''

class Peeker(Agent):
    """The example's trading, plus every trick to see bar t+1; what it found goes into its reasoning."""

    def peek(self):
        d = self.data
        found = []
        try:
            found.append("close[1]=%r" % d.close[1])
        except IndexError:
            pass
        try:
            found.append("high[1]=%r" % d.lines.high[1])
        except IndexError:
            pass
        if list(d.close.get(ago=1, size=1)):
            found.append("close.get(ago=1)")
        if len(d) != d.buflen() or len(d.close.array) != len(d):
            found.append("buffer longer than the bars seen")
        if d.advance_peek() != float("inf"):
            found.append("advance_peek")
        if not isinstance(d._dataname, str) or not isinstance(d.p.dataname, str):
            found.append("dataname holds data")
        if len(d._barstack) or len(d._barstash):
            found.append("queued bars")
        if d._load() is not None:
            found.append("_load delivered")
        if d.next() or len(d) != self.seen + 1:
            found.append("data.next() moved")
        if d._stream.rows[0][3] != d.close[0]:
            found.append("stream holds another bar")
        if len(d) % 250 == 0:  # a read with a timeout: nothing is ever waiting in the channel
            try:
                found.append("channel gave %d bytes" % len(d._stream._recv(0.05)))
            except TimeoutError:
                pass
        self.seen = len(d)
        return "peeked: " + (", ".join(found) or "nothing")

    def next(self):
        if not hasattr(self, "seen"):
            self.seen = len(self.data) - 1
        seen = self.peek()
        super().next()
        self.fmel_reasoning = seen
'''
)


@pytest.mark.slow
def test_lookahead_tricks_get_nothing(reference: dict, aapl: BarPanel) -> None:
    result = run_ours(PEEKER, aapl, filename="peeker.py")

    assert result.status == "completed", result.error
    called = result.decisions[result.decisions["confidence"].notna()]
    assert len(called) == len(reference["calls"])  # every next() call reported what it found ...
    assert set(called["reasoning"]) == {"peeked: nothing"}  # ... and it found nothing ahead
    # Its trading is the example's, so the reported results are the honest ones.
    _assert_same_fills(_fill_tuples(result), reference["fills"])
    assert result.equity["equity"].iloc[-1] == pytest.approx(reference["value"], rel=1e-12)
    assert not result.tamper_suspected


def test_stream_never_reads_ahead(aapl: BarPanel) -> None:
    """In-process check of the child's stream: it never asks for bar t+1 before answering bar t."""
    from farm_dagster.engine import backtrader_host, protocol

    panel = aapl.slice(None, "2004-12-31")
    sent: list[int] = []
    answered: list[int] = []

    def recv() -> bytes:
        assert len(answered) == len(sent), "bar requested before the previous bar was answered"
        if len(sent) == panel.n_bars:
            return bytes((protocol.END,))
        t = len(sent)
        sent.append(t)
        return protocol.encode_bar(int(panel.timestamps[t]), panel.row(t))

    def send(payload: bytes) -> None:
        assert payload[0] == protocol.DECISIONS
        answered.append(len(sent) - 1)

    strategy = backtrader_host.load_strategy(EXAMPLE.read_text(), EXAMPLE.name)
    cerebro, stream = backtrader_host.build_cerebro(
        strategy, panel.symbols, BacktestSettings(), {}, recv, send
    )
    cerebro.run()
    assert stream.ended
    assert answered == list(range(panel.n_bars))  # exactly one answer per bar, in order


# ---------------------------------------------------------------------------------- (3) agent errors
CRASHER = """import backtrader as bt


class Agent(bt.Strategy):
    def give_up(self):
        raise ValueError("agent gave up at bar %d" % len(self))

    def next(self):
        self.fmel_confidence = 0.7
        self.fmel_reasoning = "bar %d" % len(self)
        if len(self) == 50:
            self.give_up()
"""


def _line_of(code: str, text: str) -> int:
    return next(n for n, line in enumerate(code.splitlines(), 1) if text in line)


@pytest.mark.slow
def test_error_in_next_reports_the_agents_line(aapl: BarPanel) -> None:
    result = run_ours(CRASHER, aapl, filename="crasher.py")

    assert result.status == "failed"
    assert result.error.error_type == "ValueError"
    assert "agent gave up at bar 50" in result.error.message
    assert result.error.line == _line_of(CRASHER, "raise ValueError")
    assert result.error.render("crasher.py").startswith(f"crasher.py:{result.error.line}: ValueError")
    tb = "\n".join(result.error.user_traceback)
    assert f'crasher.py", line {_line_of(CRASHER, "self.give_up()")}, in next' in tb  # the caller too
    assert "backtrader" not in tb  # only the agent's own frames
    # What was decided before the crash is kept: the 49 bars before it, in order.
    assert list(result.decisions["reasoning"]) == [f"bar {k}" for k in range(1, 50)]


STOPPER = """import backtrader as bt


class Agent(bt.Strategy):
    def next(self):
        if len(self) == 10:
            self.sell(size=1, exectype=bt.Order.StopTrail)  # a trail without a distance
"""


@pytest.mark.slow
def test_unsupported_order_type_is_a_clear_error(aapl: BarPanel) -> None:
    result = run_ours(STOPPER, aapl, filename="stopper.py")

    assert result.status == "failed"
    assert result.error.error_type == "UnsupportedOrderError"
    assert "a StopTrail order needs trailamount or trailpercent" in result.error.message
    assert result.error.line == _line_of(STOPPER, "self.sell(")
    assert result.fills.empty


STOP_LOSS = """import backtrader as bt


class Agent(bt.Strategy):
    \"\"\"Trend entry with a protective stop that trails by hand: cancel the old stop, place a new one.\"\"\"

    params = (("period", 20), ("stop_pct", 0.05))

    def __init__(self):
        self.sma = bt.indicators.SMA(self.data.close, period=self.p.period)
        self.stop_order = None
        self.entry = None

    def notify_order(self, order):
        if order.status == order.Completed and self.stop_order is not None and order.ref == self.stop_order.ref:
            self.stop_order = None  # stopped out

    def next(self):
        close = self.data.close[0]
        if not self.position and self.entry is None and close > self.sma[0]:
            self.entry = self.buy(size=100)
            self.fmel_reasoning = "close above SMA: enter"
        elif self.position and self.entry is not None:
            level = close * (1 - self.p.stop_pct)
            if self.stop_order is None or level > self.stop_order.created.price * 1.01:
                if self.stop_order is not None:
                    self.cancel(self.stop_order)
                self.stop_order = self.sell(size=self.position.size, exectype=bt.Order.Stop, price=level)
                self.fmel_reasoning = "raise the stop to %.2f" % level
        if not self.position and self.stop_order is None and self.entry is not None and self.entry.status == self.entry.Completed:
            self.entry = None  # flat again after a stop-out: look for the next entry
"""


@pytest.mark.slow
def test_stop_loss_and_cancel_match_plain_backtrader(aapl: BarPanel) -> None:
    """Stop orders and cancels of live orders give backtrader's own fills, trades and final value."""
    cerebro, rec = plain_backtrader(STOP_LOSS, aapl)
    result = run_ours(STOP_LOSS, aapl, filename="stop_loss.py")

    assert result.status == "completed", result.error
    sells = [f for f in rec.fills if f[2] == "SELL"]
    assert len(sells) >= 5  # the window stops out several times
    _assert_same_fills(_fill_tuples(result), rec.fills)
    _assert_same_trades(result, rec.trades)
    assert result.equity["equity"].iloc[-1] == pytest.approx(cerebro.broker.getvalue(), rel=1e-12)
    assert not result.tamper_suspected, result.info["tamper_bars"]
    decisions = result.decisions
    cancels = decisions[decisions["action"] == "CANCEL"]
    assert len(cancels) >= 10  # the stop was raised (cancel + new stop) many times
    cancelled_ids = set()
    for raw in cancels["events"]:
        (event,) = json.loads(raw)
        assert event["type"] == "cancelled" and event["reason"] == "cancelled by the agent"
        cancelled_ids.add(event["order_id"])
    stops = decisions[decisions["order_type"] == "stop"]
    stop_events = [e for raw in stops["events"] for e in json.loads(raw)]
    assert {e["order_id"] for e in stop_events if e["type"] == "cancelled"} == cancelled_ids
    assert all(e["stop_price"] > 0 for e in stop_events if e["type"] == "submitted")


BRACKETS = """import backtrader as bt


class Agent(bt.Strategy):
    \"\"\"Enter on a close above the SMA with a bracket: stop-loss below, take-profit above.\"\"\"

    params = (("period", 15), ("stop_pct", 0.04), ("profit_pct", 0.06))

    def __init__(self):
        self.sma = bt.indicators.SMA(self.data.close, period=self.p.period)
        self.live = []

    def notify_order(self, order):
        if not order.alive():
            self.live = [o for o in self.live if o.ref != order.ref]

    def next(self):
        close = self.data.close[0]
        if not self.position and not self.live and close > self.sma[0]:
            self.live = self.buy_bracket(
                size=50,
                exectype=bt.Order.Market,
                stopprice=close * (1 - self.p.stop_pct),
                limitprice=close * (1 + self.p.profit_pct),
            )
            self.fmel_reasoning = "bracket entry"
"""


OCO = """import backtrader as bt


class Agent(bt.Strategy):
    \"\"\"Breakout or pullback, whichever comes first: a buy stop above and a buy limit below, OCO.\"\"\"

    def __init__(self):
        self.entry = []
        self.exit = None
        self.held_for = 0

    def notify_order(self, order):
        if not order.alive():
            self.entry = [o for o in self.entry if o.ref != order.ref]
            if self.exit is not None and order.ref == self.exit.ref:
                self.exit = None

    def next(self):
        close = self.data.close[0]
        if self.position:
            self.held_for += 1
            if self.held_for >= 5 and self.exit is None:
                self.exit = self.close()
            return
        self.held_for = 0
        if not self.entry and self.exit is None:
            breakout = self.buy(size=40, exectype=bt.Order.Stop, price=close * 1.02)
            pullback = self.buy(size=40, exectype=bt.Order.Limit, price=close * 0.98, oco=breakout)
            self.entry = [breakout, pullback]
"""


OCO_MIXED = """import backtrader as bt


class Agent(bt.Strategy):
    \"\"\"While long 20 shares: add 10 on a dip (buy limit 1 % down) or stop out (sell stop 0.5 % down),
    one cancels the other. A bar that reaches the limit reaches the stop too: the group is decided
    by which order was placed first, as backtrader's broker works its queue in that order.\"\"\"

    def __init__(self):
        self.entry = self.exit = None
        self.pair = []
        self.placed = 0

    def notify_order(self, order):
        if order.alive():
            return
        self.pair = [o for o in self.pair if o.ref != order.ref]
        if self.entry is not None and order.ref == self.entry.ref:
            self.entry = None
        if self.exit is not None and order.ref == self.exit.ref:
            self.exit = None

    def next(self):
        if self.entry is not None or self.exit is not None:
            return
        size = self.position.size
        if self.pair:
            if len(self) - self.placed >= 5:  # neither side traded: withdraw both, go flat
                for order in self.pair:
                    self.cancel(order)
                self.exit = self.close()
            return
        if size == 0:
            self.entry = self.buy(size=20)
        elif size == 20:
            close = self.data.close[0]
            dip = dict(size=10, exectype=bt.Order.Limit, price=close * 0.99)
            stop = dict(size=20, exectype=bt.Order.Stop, price=close * 0.995)
            if BUY_FIRST:
                first = self.buy(**dip)
                second = self.sell(oco=first, **stop)
            else:
                first = self.sell(**stop)
                second = self.buy(oco=first, **dip)
            self.pair = [first, second]
            self.placed = len(self)
        else:  # the dip was bought: take the 30 shares off
            self.exit = self.close()
"""

TRAILING = """import backtrader as bt


class Agent(bt.Strategy):
    \"\"\"Trend entry, exit through a 4% trailing stop that follows the closes up.\"\"\"

    def __init__(self):
        self.sma = bt.indicators.SMA(self.data.close, period=20)
        self.entry = None
        self.trail = None

    def notify_order(self, order):
        if order.alive():
            return
        if self.entry is not None and order.ref == self.entry.ref:
            self.entry = None
        if self.trail is not None and order.ref == self.trail.ref:
            self.trail = None

    def next(self):
        if not self.position and self.entry is None and self.data.close[0] > self.sma[0]:
            self.entry = self.buy(size=60)
        elif self.position and self.trail is None:
            self.trail = self.sell(size=self.position.size, exectype=bt.Order.StopTrail, trailpercent=0.04)
"""


TRAILING_LIMIT = TRAILING.replace(
    "exectype=bt.Order.StopTrail, trailpercent=0.04)",
    "exectype=bt.Order.StopTrailLimit, trailamount=0.05, price=self.data.close[0] * 0.97,\n"
    "                                   plimit=self.data.close[0] * 0.96)",
)


STOP_LIMITS = """import backtrader as bt


class Agent(bt.Strategy):
    \"\"\"Breakout entries as stop-limit buys (withdrawn after 3 bars), stop-limit stop-losses.\"\"\"

    def __init__(self):
        self.entry = None
        self.exit = None
        self.waited = 0

    def notify_order(self, order):
        if order.alive():
            return
        if self.entry is not None and order.ref == self.entry.ref:
            self.entry = None
        if self.exit is not None and order.ref == self.exit.ref:
            self.exit = None

    def next(self):
        close = self.data.close[0]
        if not self.position:
            if self.entry is None:
                self.entry = self.buy(size=30, exectype=bt.Order.StopLimit, price=close * 1.01,
                                      plimit=close * 1.02)
                self.waited = 0
            else:
                self.waited += 1
                if self.waited >= 3:
                    self.cancel(self.entry)
        elif self.exit is None:
            self.exit = self.sell(size=self.position.size, exectype=bt.Order.StopLimit, price=close * 0.98,
                                  plimit=close * 0.975)
            self.waited = 0
        else:
            self.waited += 1
            if self.waited >= 5:  # not stopped out: raise the stop-loss to today's close
                self.cancel(self.exit)
"""


ON_CLOSE = """import backtrader as bt


class Agent(bt.Strategy):
    \"\"\"Crossover traded at the next close (market-on-close) instead of the next open.\"\"\"

    def __init__(self):
        self.cross = bt.indicators.CrossOver(bt.indicators.SMA(self.data.close, period=5),
                                             bt.indicators.SMA(self.data.close, period=20))

    def next(self):
        if not self.position and self.cross[0] > 0:
            self.buy(size=80, exectype=bt.Order.Close)
        elif self.position and self.cross[0] < 0:
            self.sell(size=self.position.size, exectype=bt.Order.Close)
"""


EXPIRING = """import datetime

import backtrader as bt


class Agent(bt.Strategy):
    \"\"\"Limit entries 1% under the close valid for 3 days, and same-day (DAY) limit exits.\"\"\"

    def __init__(self):
        self.entry = None
        self.exit = None

    def notify_order(self, order):
        if order.alive():
            return
        if self.entry is not None and order.ref == self.entry.ref:
            self.entry = None
        if self.exit is not None and order.ref == self.exit.ref:
            self.exit = None

    def next(self):
        close = self.data.close[0]
        if not self.position and self.entry is None:
            self.entry = self.buy(size=25, exectype=bt.Order.Limit, price=close * 0.99,
                                  valid=datetime.timedelta(days=3))
        elif self.position and self.exit is None:
            self.exit = self.sell(size=self.position.size, exectype=bt.Order.Limit, price=close * 1.01,
                                  valid=bt.Order.DAY if len(self) % 2 else self.data.datetime.date(0) + datetime.timedelta(days=5))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("code", "name"),
    [
        (TRAILING, "trailing.py"),
        (STOP_LIMITS, "stop_limits.py"),
        (ON_CLOSE, "on_close.py"),
        (EXPIRING, "expiring.py"),
        (TRAILING_LIMIT, "trailing_limit.py"),
    ],
)
def test_trailing_and_stop_limit_orders_match_plain_backtrader(aapl: BarPanel, code: str, name: str) -> None:
    """StopTrail, StopLimit (its intrabar rules included), StopTrailLimit, Close and expiring orders
    fill where backtrader fills them."""
    cerebro, rec = plain_backtrader(code, aapl)
    result = run_ours(code, aapl, filename=name)

    assert result.status == "completed", result.error
    assert len(rec.fills) >= 20
    _assert_same_fills(_fill_tuples(result), rec.fills)
    _assert_same_trades(result, rec.trades)
    assert result.equity["equity"].iloc[-1] == pytest.approx(cerebro.broker.getvalue(), rel=1e-12)
    assert not result.tamper_suspected, result.info["tamper_bars"]
    if code is EXPIRING:
        expired = [e for e in events_of(result.decisions) if e.get("reason") == "expired"]
        assert len(expired) >= 50  # both the 3-day entries and the DAY exits do expire


@pytest.mark.slow
@pytest.mark.parametrize(("code", "name"), [(BRACKETS, "brackets.py"), (OCO, "oco.py")])
def test_brackets_and_oco_match_plain_backtrader(aapl: BarPanel, code: str, name: str) -> None:
    """buy_bracket and oco= fill where backtrader's own broker fills them, and cancel what it cancels."""
    cerebro, rec = plain_backtrader(code, aapl)
    result = run_ours(code, aapl, filename=name)

    assert result.status == "completed", result.error
    assert len(rec.fills) >= 20
    _assert_same_fills(_fill_tuples(result), rec.fills)
    _assert_same_trades(result, rec.trades)
    assert result.equity["equity"].iloc[-1] == pytest.approx(cerebro.broker.getvalue(), rel=1e-12)
    assert not result.tamper_suspected, result.info["tamper_bars"]
    events = events_of(result.decisions)
    reasons = {e["reason"].split(":")[0] for e in events if e["type"] == "cancelled"}
    linked = [
        e for e in events if e["type"] == "submitted" and ("parent_order_id" in e or "oco_order_id" in e)
    ]
    assert linked
    assert reasons & {"bracket", "OCO"}  # the trusted broker cancelled the other leg itself
    assert not [e for e in events if e["type"] == "rejected"]  # no stray cancel reached it


@pytest.mark.slow
@pytest.mark.parametrize("buy_first", [True, False])
def test_oco_mixing_a_buy_and_a_sell_resolves_in_order_of_placement(aapl: BarPanel, buy_first: bool) -> None:
    """Sells fill before buys within a bar, except inside an OCO group: there the order placed first
    decides the group, as in backtrader, even when it is the buy."""
    code = OCO_MIXED.replace("BUY_FIRST", str(buy_first))
    cerebro, rec = plain_backtrader(code, aapl)
    result = run_ours(code, aapl, filename="oco_mixed.py")

    assert result.status == "completed", result.error
    _assert_same_fills(_fill_tuples(result), rec.fills)
    _assert_same_trades(result, rec.trades)
    assert result.equity["equity"].iloc[-1] == pytest.approx(cerebro.broker.getvalue(), rel=1e-12)
    assert not result.tamper_suspected, result.info["tamper_bars"]
    # Every filled dip (10 shares) is a bar on which the stop triggered too: the case under test.
    dips = result.fills[(result.fills["side"] == "BUY") & (result.fills["quantity"] == 10)]
    stops = result.fills[(result.fills["side"] == "SELL") & (result.fills["quantity"] == 20)]
    assert len(stops) >= 5
    if buy_first:
        assert len(dips) >= 5
    else:
        assert dips.empty  # the stop, placed first, wins every bar that reaches both


# ------------------------------------------------------------------------------------------- (4) FMEL
@pytest.mark.slow
def test_fmel_row_per_next_call_with_events(example_result, reference: dict, aapl: BarPanel) -> None:
    rows = example_result.decisions
    calls = reference["calls"]
    assert rows["decision_point"].nunique() == aapl.n_bars  # one decision point per bar ...
    called = rows[rows["confidence"].notna()]
    # ... and the bars where backtrader called next() carry its confidence and reasoning, in order.
    assert list(called["timestamp"].drop_duplicates()) == [c[0] for c in calls]
    per_call = called.groupby("timestamp").agg({"confidence": "first", "reasoning": "first"})
    assert [(t, r.confidence, r.reasoning) for t, r in per_call.iterrows()] == calls
    # Warm-up bars (prenext: 30 bars for the slow SMA, CrossOver needs one more) are bare HOLD rows.
    warmup = rows[rows["timestamp"] < calls[0][0]]
    assert len(warmup) == 30 and set(warmup["action"]) == {"HOLD"} and warmup["confidence"].isna().all()
    # Indicator values are logged as inputs, the data the agent could read as data_read.
    inputs = json.loads(called["inputs"].iloc[0])
    assert set(inputs) == {"fast_ma", "slow_ma", "crossover"}
    assert json.loads(called["data_read"].iloc[0]) == {
        "*": {"fields": ["open", "high", "low", "close", "volume"], "lookback": None}
    }

    orders = rows[rows["action"].isin(["BUY", "SELL"])]
    assert len(orders) == len(reference["fills"])
    events = [json.loads(e) for e in orders["events"]]
    for (_, row), row_events, fill in zip(orders.iterrows(), events, reference["fills"], strict=True):
        kinds = [e["type"] for e in row_events]
        assert kinds[:2] == ["submitted", "filled"], kinds
        assert (
            row_events[1]["price"] == pytest.approx(fill[4]) and row_events[1]["quantity"] == row["quantity"]
        )
        assert ("trade_opened" if row["action"] == "BUY" else "trade_closed") in kinds
    closed = [e for e in events_of(orders) if e["type"] == "trade_closed"]
    assert [e["pnl"] for e in closed] == pytest.approx([t[3] for t in reference["trades"]])


LIMITS = '''import backtrader as bt


class Agent(bt.Strategy):
    """Buys 1% under the close, takes profit 2% above it: limit orders only, good till filled."""

    def __init__(self):
        self.order = None

    def notify_order(self, order):
        if order.status in (order.Completed, order.Canceled, order.Margin, order.Rejected):
            self.order = None

    def next(self):
        if self.order is not None:
            return
        if not self.position:
            self.order = self.buy(size=300, exectype=bt.Order.Limit, price=round(self.data.close[0] * 0.99, 2))
        else:
            self.order = self.sell(size=300, exectype=bt.Order.Limit, price=round(self.data.close[0] * 1.02, 2))
'''


@pytest.mark.slow
def test_limit_orders_match_plain_backtrader(aapl: BarPanel) -> None:
    panel = aapl.slice("2006-01-01", None)  # after AAPL's 2005 split: a resting order is never stranded
    cerebro, ref = plain_backtrader(LIMITS, panel)
    result = run_ours(LIMITS, panel)

    assert result.status == "completed", result.error
    assert len(ref.fills) >= 6 and {f[2] for f in ref.fills} == {"BUY", "SELL"}
    _assert_same_fills(_fill_tuples(result), ref.fills)
    limits = result.decisions[result.decisions["order_type"] == "limit"]
    assert len(limits) >= len(ref.fills) and limits["limit_price"].notna().all()
    assert result.equity["equity"].iloc[-1] == pytest.approx(cerebro.broker.getvalue(), rel=1e-12)
    assert not result.tamper_suspected


STOPS_EARLY = """import backtrader as bt


class Agent(bt.Strategy):
    def next(self):
        if len(self) == 5:
            self.buy(size=100)
        if len(self) == 20:
            self.env.runstop()
"""


@pytest.mark.slow
def test_agent_stopping_early_keeps_its_position_to_the_end(aapl: BarPanel) -> None:
    result = run_ours(STOPS_EARLY, aapl)

    assert result.status == "completed", result.error
    assert len(result.equity) == aapl.n_bars  # the run goes on after the agent stopped deciding
    assert list(result.fills["quantity"]) == [100]
    assert result.positions["AAPL"].iloc[-1] == 100
    assert not result.tamper_suspected  # the idle mirror is still valued at the streamed closes


INIT_CRASH = """import backtrader as bt


class Agent(bt.Strategy):
    def __init__(self):
        self.sma = bt.indicators.SMA(self.data.close, period=5)
        self.ratio = 1 / 0
"""


@pytest.mark.slow
def test_error_in_init_reports_the_agents_line(aapl: BarPanel) -> None:
    result = run_ours(INIT_CRASH, aapl, filename="init_crash.py")

    assert result.status == "failed"
    assert result.error.error_type == "ZeroDivisionError"
    assert result.error.line == _line_of(INIT_CRASH, "1 / 0")
    assert result.fills.empty and result.decisions.empty


OVERCONFIDENT = """import backtrader as bt


class Agent(bt.Strategy):
    def notify_order(self, order):
        self.last_status = order.getstatusname()

    def next(self):
        if len(self) == 5:
            self.fmel_confidence = 1.5
            self.buy(size=10)
        elif len(self) == 6:
            self.fmel_confidence = 0.5
            self.fmel_reasoning = "mirror position %d, last status %s" % (self.position.size, self.last_status)
"""


@pytest.mark.slow
def test_decision_the_parent_rejects_is_rejected_in_the_mirror_too(aapl: BarPanel) -> None:
    result = run_ours(OVERCONFIDENT, aapl.slice(None, "2004-03-31"))

    assert result.status == "completed", result.error
    assert result.fills.empty
    rows = result.decisions.set_index("decision_point")
    rejected = json.loads(rows.loc[4, "events"])
    assert rejected[0]["type"] == "rejected" and "confidence" in rejected[0]["reason"]
    assert rows.loc[5, "reasoning"] == "mirror position 0, last status Rejected"  # what the agent saw
    assert not result.tamper_suspected


@pytest.mark.slow
def test_mirror_applies_the_run_costs(aapl: BarPanel, example_result) -> None:
    """With commission and slippage the agent's mirror cash still tracks the trusted accounting."""
    costs = CostModel(commission_pct=0.001, commission_per_share=0.005, min_commission=1.0, slippage_bps=5.0)
    result = run_ours(EXAMPLE.read_text(), aapl, costs=costs)

    assert result.status == "completed", result.error
    assert result.fills["commission"].gt(0).all()
    assert result.equity["equity"].iloc[-1] < example_result.equity["equity"].iloc[-1]
    assert not result.tamper_suspected, result.info["tamper_bars"]
