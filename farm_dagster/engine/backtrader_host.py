"""Backtrader agents, unchanged, inside the sandbox (the child side for ``kind == "backtrader"``).

A ``class Agent(bt.Strategy)`` file runs in a real backtrader ``Cerebro`` in the sandboxed child.

* No look-ahead, by construction: each symbol is a *live* data feed (``islive()`` turns backtrader's
  preloading and runonce off) whose bars come from :class:`_BarStream`, the only reader of the
  parent channel. It asks for bar t+1 only after it has sent the decisions of bar t, and the parent
  sends bar t+1 only after it has received them: no future bar exists in this process.
* Honest results: every order the agent hands to backtrader's broker is translated into a protocol
  decision (symbol, BUY/SELL, shares after the sizer, order type and prices, expiry, OCO and
  bracket links; a cancel becomes a CANCEL) and replayed by the parent's trusted broker, which
  alone produces the reported fills, trades and equity. Backtrader's broker here is the agent's
  mirror view (``self.position``, ``self.broker.getcash()``); the trusted broker applies
  backtrader's own fill rules, so the two agree bar by bar.
* FMEL: an analyzer closes each bar; every ``next()`` call becomes decisions carrying
  ``self.fmel_confidence`` / ``self.fmel_reasoning`` and the strategy's indicator values as inputs
  (a HOLD when it placed no order). Order types the trusted broker cannot replay fail loudly at the
  agent's own line instead of silently diverging.
"""

from __future__ import annotations

import linecache
import math
import numbers
import sys
import types
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import backtrader as bt
import numpy as np

from farm_dagster.engine import protocol
from farm_dagster.engine.costs import BacktestSettings, CostModel
from farm_dagster.engine.host import error_payload

FIELDS = ("open", "high", "low", "close", "volume")
_EPOCH = datetime(1970, 1, 1)
_MODULE = "agent"
_SUPPORTED = {
    bt.Order.Market: "market",
    bt.Order.Limit: "limit",
    bt.Order.Stop: "stop",
    bt.Order.StopLimit: "stop_limit",
    bt.Order.StopTrail: "trailing_stop",
    bt.Order.StopTrailLimit: "trailing_stop_limit",
    bt.Order.Close: "market_on_close",
}

Recv = Callable[[], bytes]
Send = Callable[[bytes], None]


class UnsupportedOrderError(ValueError):
    """An order the trusted broker cannot replay (``Historical``, a trail without a distance)."""


class _BarStream:
    """The child's single source of bars, one at a time, strictly after the previous bar's answer."""

    __slots__ = ("_recv", "_flush", "n", "seq", "bar", "dtnum", "rows", "need_bar", "unanswered", "ended")

    def __init__(self, recv: Recv, flush: Callable[[], None], n_symbols: int) -> None:
        self._recv = recv
        self._flush = flush
        self.n = n_symbols
        self.seq = 0  # bars delivered to backtrader so far (a bar where nothing trades is skipped)
        self.bar = -1  # index of the parent's current bar (every BAR counts): orders' refs use it
        self.dtnum = 0.0
        self.rows: list[list[float]] = []
        self.need_bar = True  # set by the FMEL analyzer once the strategy has processed the bar
        self.unanswered = False  # a bar was received and its decisions are not sent yet
        self.ended = False

    def advance(self) -> None:
        """Answer the current bar, then block for the next BAR (or END)."""
        while True:
            if self.unanswered:
                self.unanswered = False
                self._flush()
            payload = self._recv()
            kind = payload[0]
            if kind == protocol.END:
                self.ended = True
                self.need_bar = False
                return
            if kind != protocol.BAR:
                raise protocol.ProtocolError(f"expected BAR or END, got {protocol.NAMES.get(kind, kind)}")
            ts_ns, block = protocol.decode_bar(payload, self.n)
            self.bar += 1
            self.unanswered = True
            if np.isnan(block[3]).all():
                continue  # no symbol trades on this bar: nothing for backtrader, answer it empty
            self.seq += 1
            self.dtnum = bt.date2num(_EPOCH + timedelta(microseconds=ts_ns // 1000))
            self.rows = block.T.tolist()
            self.need_bar = False
            return


class StreamFeed(bt.feed.DataBase):
    """A live feed of one symbol: ``_load`` takes its column of the current streamed bar, or nothing."""

    def islive(self) -> bool:
        return True  # backtrader then disables preload and runonce: bars are fetched one by one

    def bind(self, stream: _BarStream, column: int) -> None:
        self._stream = stream
        self._column = column
        self._seq = 0

    def _load(self) -> bool | None:
        stream = self._stream
        if stream.need_bar:
            stream.advance()
        if stream.ended:
            return False
        if self._seq == stream.seq:
            return None  # this bar is delivered already (or the symbol has none): wait
        self._seq = stream.seq
        o, h, lo, c, v = stream.rows[self._column]
        if c != c:  # NaN: the symbol does not trade on this bar
            return None
        lines = self.lines
        lines.datetime[0] = stream.dtnum
        lines.open[0] = o
        lines.high[0] = h
        lines.low[0] = lo
        lines.close[0] = c
        lines.volume[0] = v
        lines.openinterest[0] = 0.0
        return True


class _Recorder:
    """Decisions of the bar in progress: orders translated at submit, confidence/reasoning at bar end."""

    def __init__(self, symbols: tuple[str, ...]) -> None:
        self.symbols = {s: i for i, s in enumerate(symbols)}
        self.default_symbol = symbols[0]
        # Orders placed since the last bar end, with their wire form; a CANCEL has no order of its own.
        self.pending: list[tuple[bt.Order | None, dict[str, Any]]] = []
        self.decisions: list[dict[str, Any]] = []  # finished decisions of the current bar
        self.inputs: list[tuple[str, Any]] = []  # (name, line) of the strategy's indicators
        self.data_read_sent = False
        self.broker: MirrorBroker | None = None
        self.stream: _BarStream | None = None
        self.refs: dict[int, str] = {}  # backtrader order ref -> protocol.order_ref of the sent order
        self.oco_leaders: dict[int, int] = {}  # backtrader order ref -> ref of its OCO group's leader

    def on_submit(self, order: bt.Order, oco_leader: int | None) -> None:
        """Translate an order as the agent places it; unsupported kinds raise at the agent's line.

        ``oco_leader``: backtrader's ref of the OCO group this order joined (None: no group). Links
        (bracket parent, OCO group) become protocol refs when the bar's decisions are numbered.
        """
        kind = _SUPPORTED.get(order.exectype)
        if kind is None:
            raise UnsupportedOrderError(
                f"{bt.Order.ExecTypes[order.exectype]} orders are not supported: The Farm's broker fills "
                "market, market-on-close, limit, stop, stop-limit, trailing-stop and trailing stop-limit orders"
            )
        symbol = getattr(order.data, "_name", None)
        if symbol not in self.symbols:
            raise UnsupportedOrderError(f"orders must target one of the data feeds {sorted(self.symbols)}")
        size = order.created.size
        wire: dict[str, Any] = {
            "symbol": symbol,
            "action": "BUY" if size > 0 else "SELL",
            "quantity": _plain(abs(size)),
        }
        expires = _expiry_ns(order.valid)
        if expires is not None:
            wire["expires_at"] = expires
        if kind == "limit":
            wire["order_type"] = "limit"
            wire["limit_price"] = _plain(order.created.price)
        elif kind == "market_on_close":
            wire["order_type"] = kind
        elif kind != "market":  # stop, stop_limit, trailing_stop: backtrader's created.price is the stop
            wire["order_type"] = kind
            wire["stop_price"] = _plain(order.created.price)
            if kind == "stop_limit" or kind == "trailing_stop_limit":
                wire["limit_price"] = _plain(order.created.pricelimit)
            if kind == "trailing_stop" or kind == "trailing_stop_limit":
                if order.trailamount:
                    wire["trail_amount"] = _plain(order.trailamount)
                elif order.trailpercent:
                    wire["trail_percent"] = _plain(order.trailpercent)
                else:
                    raise UnsupportedOrderError(
                        f"a {bt.Order.ExecTypes[order.exectype]} order needs trailamount or trailpercent"
                    )
        if oco_leader is not None:
            self.oco_leaders[order.ref] = oco_leader
        self.pending.append((order, wire))

    def on_cancel(self, order: bt.Order) -> None:
        """Cancel of a live order sent on an earlier bar: a CANCEL decision."""
        ref = self.refs.get(order.ref)
        if ref is not None and order.alive():
            symbol = getattr(order.data, "_name", self.default_symbol)
            self.pending.append((None, {"symbol": symbol, "action": "CANCEL", "order_ref": ref}))

    def end_of_call(self, strategy: bt.Strategy, called_next: bool) -> None:
        """The strategy finished a bar: stamp its orders with confidence/reasoning/inputs, check them."""
        if not self.pending and not called_next:
            return
        confidence = _confidence(getattr(strategy, "fmel_confidence", None))
        reasoning = getattr(strategy, "fmel_reasoning", "")
        reasoning = reasoning if isinstance(reasoning, str) else str(reasoning)
        inputs = {name: _plain(line[0]) for name, line in self.inputs} or None
        if not self.pending:
            hold: dict[str, Any] = {"symbol": self.default_symbol, "action": "HOLD"}
            self.decisions.append(_stamp(hold, confidence, reasoning, inputs))
            return
        bar = self.stream.bar if self.stream is not None else 0
        for order, wire in self.pending:
            _stamp(wire, confidence, reasoning, inputs)
            if order is not None:
                self._link(order, wire)
                self.refs[order.ref] = protocol.order_ref(bar, len(self.decisions))
            checked = protocol.check_decision(wire, self.symbols)
            if order is not None and checked.reject_reason is not None and self.broker is not None:
                self.broker.reject_unsent(order)  # the parent rejects it too: keep the mirror in step
            self.decisions.append(wire)
        self.pending.clear()

    def _link(self, order: bt.Order, wire: dict[str, Any]) -> None:
        """Bracket parent and OCO group as refs of orders already numbered (earlier or this bar)."""
        parent = order.parent
        if parent is not None and parent is not order:
            ref = self.refs.get(parent.ref)
            if ref is None:  # its parent never reached the trusted broker
                raise UnsupportedOrderError("a bracket child needs its parent order placed first")
            wire["parent_ref"] = ref
        leader = self.oco_leaders.pop(order.ref, None)
        if leader is not None and leader in self.refs:
            wire["oco"] = self.refs[leader]

    def body(self) -> dict[str, Any] | None:
        """DECISIONS body of the bar, or None when nothing changed (an empty reply)."""
        body: dict[str, Any] = {}
        if self.decisions:
            body["decisions"] = self.decisions
            self.decisions = []
        if not self.data_read_sent:
            # Any feed, any line, all history so far is reachable from a Strategy; tracing every
            # line access would cost more than the backtest, so the upper bound is logged once.
            body["data_read"] = {"*": {"fields": list(FIELDS), "lookback": None}}
            self.data_read_sent = True
        return body or None


class MirrorBroker(bt.brokers.BackBroker):
    """Backtrader's broker as the agent's mirror; every order also becomes a protocol decision."""

    recorder: _Recorder

    def submit(self, order: bt.Order, check: bool = True) -> bt.Order:
        leader = self._ocos.get(order.ref, order.ref)
        self.recorder.on_submit(order, oco_leader=leader if leader != order.ref else None)
        return super().submit(order, check=check)

    def cancel(self, order: bt.Order, bracket: bool = False) -> Any:
        # Backtrader cancels only accepted orders (its ``pending`` list): one placed during this
        # bar is still ``submitted``, and cancelling it is a no-op there, so it stays and is sent.
        # bracket=True is backtrader's own cascade, which the trusted broker applies too.
        if not bracket and order in self.pending:
            self.recorder.on_cancel(order)
        return super().cancel(order, bracket=bracket)

    def reject_unsent(self, order: bt.Order) -> None:
        """Reject an order of the current bar that the parent will reject as well."""
        try:
            self.submitted.remove(order)
        except ValueError:
            if order in self.pending:
                self.pending.remove(order)
        order.reject(self)
        self.notify(order)


class FmelAnalyzer(bt.Analyzer):
    """Closes each bar for FMEL and releases the stream to fetch the next bar."""

    params = (("recorder", None), ("stream", None))

    def start(self) -> None:
        self.p.recorder.inputs = _indicator_inputs(self.strategy)

    def prenext(self) -> None:
        self.p.recorder.end_of_call(self.strategy, called_next=False)
        self.p.stream.need_bar = True

    def nextstart(self) -> None:
        self.next()

    def next(self) -> None:
        self.p.recorder.end_of_call(self.strategy, called_next=True)
        self.p.stream.need_bar = True

    def get_analysis(self) -> dict[str, Any]:
        return {}


class _MirrorCommission(bt.CommInfoBase):
    """The trusted cost model's commission, so the agent's mirror cash matches the reported one."""

    params = (
        ("stocklike", True),
        ("commtype", bt.CommInfoBase.COMM_FIXED),
        ("per_share", 0.0),
        ("pct", 0.0),
        ("minimum", 0.0),
    )

    def _getcommission(self, size: float, price: float, pseudoexec: bool) -> float:
        shares = abs(size)
        if not shares:
            return 0.0
        return max(self.p.minimum, self.p.per_share * shares + self.p.pct * shares * price)


def find_strategy(namespace: dict[str, Any]) -> type[bt.Strategy]:
    """The one bt.Strategy the file defines (a user base class between it and Strategy is fine)."""
    module = namespace.get("__name__")
    classes = [
        obj
        for obj in namespace.values()
        if isinstance(obj, type) and issubclass(obj, bt.Strategy) and obj.__module__ == module
    ]
    leaves = [c for c in classes if not any(other is not c and issubclass(other, c) for other in classes)]
    if len(leaves) != 1:
        names = ", ".join(sorted(c.__name__ for c in leaves)) or "none"
        raise TypeError(
            f"a backtrader agent file must define exactly one bt.Strategy subclass (found: {names})"
        )
    return leaves[0]


def build_cerebro(
    strategy: type[bt.Strategy],
    symbols: tuple[str, ...],
    settings: BacktestSettings,
    params: dict[str, Any],
    recv: Recv,
    send: Send,
) -> tuple[bt.Cerebro, _BarStream]:
    """A Cerebro that can only ever see the bars the parent streamed so far."""
    declared = set(strategy.params._getkeys())
    unknown = sorted(set(params) - declared)
    if unknown:
        raise TypeError(
            f"unknown parameter(s) {', '.join(unknown)} for {strategy.__name__}; "
            f"its params are {', '.join(sorted(declared)) or 'none'}"
        )
    recorder = _Recorder(symbols)
    cerebro = bt.Cerebro(preload=False, runonce=False, stdstats=False, live=True, quicknotify=False)
    broker = MirrorBroker()
    broker.recorder = recorder
    recorder.broker = broker
    broker.setcash(settings.initial_cash)
    _mirror_costs(broker, settings.costs)
    cerebro.broker = broker

    def flush() -> None:
        send(protocol.encode_decisions(broker.getvalue(), recorder.body()))

    stream = _BarStream(recv, flush, len(symbols))
    recorder.stream = stream
    for column, symbol in enumerate(symbols):
        feed = StreamFeed(dataname=symbol)
        feed.bind(stream, column)
        cerebro.adddata(feed, name=symbol)
    cerebro.addstrategy(strategy, **params)
    cerebro.addanalyzer(FmelAnalyzer, recorder=recorder, stream=stream)
    return cerebro, stream


def _mirror_costs(broker: bt.brokers.BackBroker, costs: CostModel) -> None:
    if costs.commission_per_share or costs.commission_pct or costs.min_commission:
        broker.addcommissioninfo(
            _MirrorCommission(
                per_share=costs.commission_per_share, pct=costs.commission_pct, minimum=costs.min_commission
            )
        )
    if costs.slippage_bps:
        broker.set_slippage_perc(
            costs.slippage_bps / 10_000, slip_open=True, slip_limit=True, slip_match=True
        )


def _indicator_inputs(strategy: bt.Strategy) -> list[tuple[str, Any]]:
    """(name, line) of each indicator the strategy keeps as an attribute: its values become FMEL inputs."""
    out: list[tuple[str, Any]] = []
    for attr, value in vars(strategy).items():
        if attr.startswith("_") or not isinstance(value, bt.LineIterator) or isinstance(value, bt.Strategy):
            continue
        if isinstance(value, bt.feed.AbstractDataBase):
            continue
        aliases = value.lines.getlinealiases()
        if len(aliases) == 1:
            out.append((attr, value.lines[0]))
        else:
            out.extend((f"{attr}.{alias}", value.lines[k]) for k, alias in enumerate(aliases))
        if len(out) >= protocol.MAX_INPUTS:
            return out[: protocol.MAX_INPUTS]
    return out


def _stamp(
    wire: dict[str, Any], confidence: Any, reasoning: str, inputs: dict[str, Any] | None
) -> dict[str, Any]:
    if confidence is not None:
        wire["confidence"] = confidence
    if reasoning:
        wire["reasoning"] = reasoning[: protocol.MAX_REASONING]
    if inputs:
        wire["inputs"] = inputs
    return wire


def _confidence(value: Any) -> Any:
    """numpy/int confidences become floats; anything else is passed on for the parent to reject."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        return number if math.isfinite(number) else repr(number)
    return repr(value)


def _expiry_ns(valid: Any) -> int | None:
    """Backtrader's ``order.valid`` (a date number once the order exists) as ns since the epoch.

    Rounded to the millisecond so that a ``valid`` equal to a bar's time stays equal after the
    float round trip (backtrader expires an order only on a bar strictly after it).
    """
    if not valid:
        return None  # backtrader never expires an order whose valid is 0 or None
    ms = round(protocol.epoch_ns(bt.num2date(valid)) / 1_000_000)  # naive: the feed's UTC clock
    return max(-(2**63), min(2**63 - 1, ms * 1_000_000))


def _plain(value: Any) -> Any:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


def load_strategy(code: str, filename: str) -> type[bt.Strategy]:
    """Compile the agent's file under its own name (tracebacks show the user's lines), find its Strategy."""
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    module = types.ModuleType(_MODULE, f"backtrader agent {filename}")
    module.__file__ = filename
    sys.modules[_MODULE] = module  # backtrader's metaclasses look the strategy's module up by name
    exec(compile(code, filename, "exec"), module.__dict__)  # noqa: S102 - this is the sandboxed child
    return find_strategy(module.__dict__)


def main(channel: Any) -> None:
    """Serve one backtrader run: INIT -> READY, bars -> DECISIONS until END -> DONE (or ERROR)."""
    config = protocol.recv_init(channel)
    filename = config.get("filename", "agent.py")
    symbols = tuple(config["symbols"])
    settings = BacktestSettings.from_json(config["settings"])
    try:
        strategy = load_strategy(config["code"], filename)
        cerebro, stream = build_cerebro(
            strategy, symbols, settings, dict(settings.params), channel.recv, channel.send
        )
    except BaseException as exc:  # noqa: BLE001 - any failure of user code is reported, not raised
        channel.send(protocol.encode_json(protocol.ERROR, error_payload(exc, filename)))
        return
    declared = dict(strategy.params._getitems())
    declared.update(settings.params)
    channel.send(
        protocol.encode_json(
            protocol.READY,
            {
                "agent_class": strategy.__name__,
                "kind": "backtrader",
                "params": {k: _json_param(v) for k, v in declared.items()},
            },
        )
    )
    try:
        cerebro.run()
        if not stream.ended:
            _drain(stream, cerebro, channel.send)
    except BaseException as exc:  # noqa: BLE001 - report the agent's failure with its own line
        channel.send(protocol.encode_json(protocol.ERROR, error_payload(exc, filename)))
        return
    channel.send(protocol.encode_json(protocol.DONE, {"bars": stream.seq}))


def _drain(stream: _BarStream, cerebro: bt.Cerebro, send: Send) -> None:
    """The agent stopped early (``self.env.runstop()``): answer the remaining bars without decisions.

    The mirror is then valued at the streamed closes (backtrader no longer moves), so it keeps
    matching the trusted accounting as long as the agent left no order open when it stopped.
    """
    broker = cerebro.broker
    sizes = [broker.getposition(data).size for data in cerebro.datas]
    closes = [data.close[0] if len(data) else 0.0 for data in cerebro.datas]
    cash = broker.getcash()
    last_bar = [(broker.getvalue(), broker.recorder.body())]  # the bar the strategy stopped on

    def flush() -> None:
        if last_bar:
            value, body = last_bar.pop()
        else:
            value, body = cash + sum(size * price for size, price in zip(sizes, closes, strict=True)), None
        send(protocol.encode_decisions(value, body))

    stream._flush = flush
    while not stream.ended:
        stream.advance()
        if not stream.ended:
            closes = [
                row[3] if row[3] == row[3] else old for row, old in zip(stream.rows, closes, strict=True)
            ]


def _json_param(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return _plain(value) if isinstance(value, float) else value
    return repr(value)
