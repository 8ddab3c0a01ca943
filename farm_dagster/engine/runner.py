"""Parent side of a backtest: stream bars to the sandboxed agent, account for its decisions.

Look-ahead is impossible by construction: bar t+1 is sent only after the decisions for bar t
came back, and the child holds nothing but what it was sent. The accounting that is reported
(equity, fills, trades, metrics) is the parent's own Broker fed with the parent's bars; the
child's mirror equity is only compared (a mismatch sets ``tamper_suspected``). The agent gets
its next bar as soon as it answered; the parent books the answers from a queue while the agent
thinks, so the two processes overlap.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from farm_dagster.engine import protocol
from farm_dagster.engine.broker import Broker, events_json, iso_many, percent_target
from farm_dagster.engine.costs import BacktestSettings
from farm_dagster.engine.identity import code_hash as _code_hash
from farm_dagster.engine.identity import result_id as _result_id
from farm_dagster.engine.identity import settings_hash as _settings_hash
from farm_dagster.engine.protocol import CheckedDecision
from farm_dagster.engine.result import AgentError, BacktestResult
from farm_dagster.fmel.rows import DecisionLog, EventsColumn, decision_prefix, empty_frame, positions_texts
from farm_dagster.market_data.panel import BarPanel
from farm_dagster.sandbox.limits import SandboxLimits
from farm_dagster.sandbox.process import SandboxCrashed, SandboxProcess, SandboxTimeout
from farm_dagster.sdk.context import History

HOST_ENTRIES = {
    "native": "farm_dagster.engine.host:main",
    "backtrader": "farm_dagster.engine.backtrader_host:main",
}
STARTUP_TIMEOUT = 60.0
MAX_DECISIONS_PER_BAR = 10_000
MAX_DATA_READ_BYTES = 64 * 1024
_CHUNK = 1024  # bars stacked at once into (chunk, 5, N) blocks ready to send
BOOKS = ("auto", "python", "compiled")
# "auto" books a run this large or larger (bars x symbols) with the compiled book. Why there:
# loading numba costs a fresh process about 0.6 s at the start of a run, and the compiled book
# saves the parent about 0.4 us per symbol-bar on the benchmark agent (12.4 -> 8.0 s of CPU on
# 100 x 100,000): below a million symbol-bars the load is not paid back.
AUTO_COMPILED_SYMBOL_BARS = 1_000_000
FLUSH_BARS = 8  # bars a compiled book lets wait, when the parent falls behind (see _CompiledRun.flush)
IDLE_FLUSH_BARS = 1  # bars a compiled book books at once when the parent has caught up (see _stream)
POLL_INTERVAL = 20e-6  # seconds between two looks for the agent's answer while booking
_clock = time.perf_counter
_NAT = np.iinfo(np.int64).min  # NaT's int64 value

Progress = Callable[[int, int], None]


class _Failure(Exception):
    def __init__(self, status: str, error: AgentError) -> None:
        super().__init__(error.message)
        self.status, self.error = status, error


def validate(code: str, filename: str) -> tuple[str, AgentError | None]:
    """(kind, error) from the static validator; error is None when the code may run."""
    from farm_dagster.validation import validate_agent_code

    report = validate_agent_code(code, filename)
    if report.ok:
        return report.kind or "native", None
    first = report.issues[0] if report.issues else None
    return report.kind or "native", AgentError(
        error_type="ValidationError",
        message="; ".join(f"{i.rule}: {i.message}" for i in report.issues) or "invalid agent",
        line=first.line if first else None,
        user_traceback=report.messages(),
    )


def _agent_error(body: Any) -> AgentError:
    """ERROR body from the child, checked field by field (it is untrusted text)."""
    body = body if isinstance(body, dict) else {}
    line = body.get("line")
    tb = body.get("traceback")
    error_type, message = body.get("error_type"), body.get("message")
    return AgentError(
        error_type=error_type[:100] if isinstance(error_type, str) and error_type else "AgentError",
        message=message[:2000] if isinstance(message, str) else "",
        line=line if isinstance(line, int) and not isinstance(line, bool) else None,
        user_traceback=[str(x)[:500] for x in tb[:50]] if isinstance(tb, list) else [],
    )


def _agent_timing(done: bytes) -> dict[str, float]:
    """The agent process's own timing from its DONE message (``protocol.AGENT_TIMING``), each part
    a finite number of seconds >= 0, anything else dropped, a body that is not JSON ignored: the
    sandboxed side wrote it, so it is read as diagnostics, never trusted, and never fails a run."""
    try:
        body = protocol.decode_json(done)
    except protocol.ProtocolError:
        return {}
    reported = body.get("timing_s") if isinstance(body, dict) else None
    if not isinstance(reported, dict):
        return {}
    out = {}
    for name in protocol.AGENT_TIMING:
        value = reported.get(name)
        if type(value) in (int, float) and 0 <= value < 1e9:
            out[name] = round(float(value), 4)
    return out


def _failure_for_error(error: AgentError) -> _Failure:
    if error.error_type == "MemoryError":
        return _Failure(
            "killed", AgentError("MemoryError", "memory limit exceeded", error.line, error.user_traceback)
        )
    return _Failure("failed", error)


def _unexpected(reply: bytes, expected: int) -> Exception:
    """What a reply of the wrong type means: the agent's own failure (ERROR), else a protocol breach."""
    if reply[0] == protocol.ERROR:
        return _failure_for_error(_agent_error(protocol.decode_json(reply)))
    got = protocol.NAMES.get(reply[0], reply[0])
    return protocol.ProtocolError(f"expected {protocol.NAMES[expected]}, got {got}")


class _Run:
    """Trusted state of one run: broker, per-bar accounting arrays, FMEL log."""

    def __init__(self, panel: BarPanel, settings: BacktestSettings, log: DecisionLog) -> None:
        self._setup(panel, log)
        self.broker = Broker(panel.symbols, settings)
        n_t, n_s = panel.n_bars, panel.n_symbols
        self.cash = np.empty(n_t)
        self.positions_value = np.empty(n_t)
        self.equity = np.empty(n_t)
        self.positions = np.empty((n_t, n_s))
        log.bind_positions(self.positions)  # FMEL's positions column: row t, rendered at the end

    def _setup(self, panel: BarPanel, log: DecisionLog) -> None:
        """What every run holds, whichever book it keeps."""
        self.panel = panel
        self.symbols = panel.symbols
        self.index = {s: i for i, s in enumerate(panel.symbols)}
        self.log = log
        self.processed = 0  # bars the trusted book has accounted for
        self.tamper_bars: list[int] = []
        self._data_read = "{}"
        self._timestamps = panel.timestamps.tolist()  # Python ints: read once per bar
        # Decisions whose FMEL texts are still to render:
        # (row in the log, decision, its events, wait for its order to leave the book).
        self._to_render: deque[tuple[int, CheckedDecision, list[Any] | None, bool]] = deque()
        self._times: dict[int, str] | None = None  # bar time -> FMEL event time text
        # Called between decisions while booking: lets the stream hand the agent its next bar as
        # soon as it answered, instead of after the whole booking (see ``_Stream``).
        self.pump: Callable[[], None] = _nothing

    def on_bar(self, t: int, block: np.ndarray) -> None:
        broker = self.broker
        broker.on_bar(t, self._timestamps[t], block)
        self.cash[t] = broker.cash
        self.positions_value[t] = broker.positions_value
        self.equity[t] = broker.equity
        self.positions[t] = broker.positions
        self.processed = t + 1

    def flush(self, at_least: int = 1) -> None:
        """Book what was applied but not booked yet (nothing here: this run books as it applies)."""

    def _decode(self, payload: bytes) -> tuple[float, list[Any] | None]:
        """(mirror equity, raw decisions) of a DECISIONS message; keeps its ``data_read``."""
        mirror_equity, body = protocol.decode_decisions_raw(payload)
        if not body:
            return mirror_equity, None
        if "data_read" in body:
            self._data_read = _data_read_json(body["data_read"])
        raw_decisions = body.get("decisions") or []
        if not isinstance(raw_decisions, list) or len(raw_decisions) > MAX_DECISIONS_PER_BAR:
            raise protocol.ProtocolError(
                f"DECISIONS must carry a list of at most {MAX_DECISIONS_PER_BAR} decisions"
            )
        return mirror_equity, raw_decisions

    def _tampered(self, t: int, mirror_equity: float, equity: float) -> None:
        """The child's mirror disagrees with the trusted book on bar ``t``: noted, never trusted."""
        if not math.isclose(mirror_equity, equity, rel_tol=1e-9, abs_tol=1e-6):
            self.tamper_bars.append(t)

    def apply(self, t: int, payload: bytes) -> None:
        """Check the child's DECISIONS for bar t and submit the accepted orders to the trusted broker.

        The row's positions are those of ``self.positions[t]`` (the book after bar t's fills, before
        its orders); FMEL renders them once at the end instead of on every bar.
        """
        mirror_equity, raw_decisions = self._decode(payload)
        broker = self.broker
        equity = broker.equity
        self._tampered(t, mirror_equity, equity)
        ts_ns = self._timestamps[t]
        row = len(self.log)
        self.log.add_bar(t, ts_ns, cash=broker.cash, equity=equity, positions=None, data_read=self._data_read)
        if raw_decisions:
            self._checked(t, ts_ns, raw_decisions, row)

    def _checked(self, t: int, ts_ns: int, raw_decisions: list[Any], row: int) -> None:
        """Check each decision, queue the accepted orders, and log what each implied at decision time.

        A TARGET is logged as the trade it implies now (BUY/SELL/HOLD and the share difference),
        priced at the close the agent saw; the order itself is sized again at its fill.
        """
        broker = self.broker
        submit = broker.submit
        queue = self._to_render.append
        held = broker.positions.tolist()
        equity = broker.equity
        add = self.log.add_decision
        for seq, d, did, i, price in self._each_checked(t, raw_decisions):
            action, quantity = d.action, d.quantity
            events: list[Any] | None = None
            wait = False
            if d.reject_reason is not None:
                broker.reject_decision(did, ts_ns, d.reject_reason)
                events = broker.bucket(did)
            elif action == "CANCEL":
                submit(d, did, t, ts_ns, seq)
                events = broker.bucket(did)  # its events are final at once
            elif action != "HOLD":
                if action == "TARGET":
                    action, quantity = _implied(d, equity, price, held[i])
                order = submit(d, did, t, ts_ns, seq)
                if order is None:  # refused by the book (a bracket child whose parent is not open)
                    events = broker.bucket(did)
                else:
                    if d.order_type == "trailing_stop":
                        d.stop_price = order.stop_price  # FMEL logs the level it starts from
                    events, wait = order.events, True
            queue((add(row, seq, did, d, action, quantity, price), d, events, wait))

    def _each_checked(
        self, t: int, raw_decisions: list[Any]
    ) -> Iterator[tuple[int, CheckedDecision, str, int | None, float | None]]:
        """(seq, checked decision, decision id, symbol column, the close the agent saw) of each raw
        decision of bar ``t``, in order; the agent gets its next bar between two (``pump``)."""
        index, pump, check = self.index, self.pump, protocol.check_decision
        closes = self.panel.close[t].tolist()
        prefix = decision_prefix(self.log.run_id, t)
        for seq, raw in enumerate(raw_decisions):
            pump()
            d = check(raw, index)
            i = index.get(d.symbol) if d.symbol is not None else None
            price = closes[i] if i is not None else None
            yield seq, d, f"{prefix}{seq:03d}", i, (price if price == price else None)

    def render_some(self, budget: int = 4) -> bool:
        """Render the FMEL texts of up to ``budget`` decisions whose events are final.

        Why: the parent waits for the agent on every bar; this work would otherwise run after
        the stream, on the critical path. A decision's events are final once its order left the
        book (an order that left has more than its "submitted" event). False = nothing to do now.
        """
        queue = self._to_render
        if not queue:
            return False
        times = self._times
        if times is None:
            times = self._times = iso_many(self._timestamps)
        log = self.log
        render_inputs, events_texts = log.render_inputs, log.events_texts
        done = 0
        while queue and done < budget:
            k, decision, events, wait = queue[0]
            if wait and len(events) < 2:  # type: ignore[arg-type]
                return done > 0  # still on the book: its events are not final yet
            queue.popleft()
            render_inputs(k, decision)
            if events:
                with contextlib.suppress(KeyError):  # an event time that is not a bar time: left to the end
                    events_texts[k] = events_json(events, times)
            else:
                events_texts[k] = "[]"
            done += 1
        return True

    # ------------------------------------------------------------------ result
    def close_book(self, ts_ns: int, reason: str) -> None:
        """Withdraw the orders still open when the run ends (``reason``: "run ended" or "run <status>")."""
        self.broker.cancel_all(ts_ns, reason)

    def fill_columns(self) -> list[Any]:
        """The fills as columns, in ``Fill`` field order."""
        rows = self.broker.fill_rows()
        return list(zip(*rows, strict=True)) if rows else [()] * len(_FILL_COLUMNS)

    def trade_columns(self) -> dict[str, Any]:
        """The trades as the columns :func:`_trades_frame` takes."""
        trades = self.broker.all_trades()
        return {
            "symbol": [t.symbol for t in trades],
            "direction": [t.direction for t in trades],
            "entry_ts": [t.entry_ts for t in trades],
            "exit_ts": [t.exit_ts for t in trades],  # None while open
            "closed": np.array([t.exit_ts is not None for t in trades], dtype=bool),
            "quantity": np.array([t.quantity for t in trades], dtype=np.float64),
            "entry_notional": np.array([t.entry_notional for t in trades], dtype=np.float64),
            "exit_quantity": np.array([t.exit_quantity for t in trades], dtype=np.float64),
            "exit_notional": np.array([t.exit_notional for t in trades], dtype=np.float64),
            "pnl": np.array([t.pnl for t in trades], dtype=np.float64),
            "decision_id": [t.decision_id for t in trades],
        }

    def frame_events(self) -> dict[Any, str] | EventsColumn:
        """What ``DecisionLog.frame`` takes as its events: here the FMEL events texts of the
        decisions not rendered during the stream."""
        return self.broker.events_json(only=self.log.unrendered_ids())

    def render_positions(self, symbols: Sequence[str], matrix: np.ndarray) -> list[str]:
        """FMEL's positions texts of the bars' shares (for ``DecisionLog.frame``)."""
        return positions_texts(symbols, matrix)

    @property
    def borrow_paid(self) -> float:
        return self.broker.borrow_paid


def _implied(d: CheckedDecision, equity: float, price: float | None, held: float) -> tuple[str, float]:
    """A TARGET as the trade it implies at decision time (BUY/SELL/HOLD and the share difference),
    priced at the close the agent saw; the order itself is sized again at its fill."""
    if d.target_shares is not None:
        target = d.target_shares
    else:
        target = percent_target(d.target_percent, equity, price, held)
    delta = target - held
    return ("BUY" if delta > 0 else "SELL" if delta < 0 else "HOLD"), abs(delta)


class _CompiledRun(_Run):
    """A :class:`_Run` booked by the compiled book (:mod:`farm_dagster.engine.book`): decisions are
    checked and added as they come, and the bars applied so far are booked in one compiled call
    (:meth:`flush`) once the parent has caught up with the agent.

    Why: on a long run, booking in Python is about half of the trusted parent's CPU, and the
    parent sets the pace (bench/RESULTS.md). The book gives the Python broker's results bit for
    bit (tests/test_book.py), so what depends on the book at decision time (the row's cash and
    equity, a TARGET's implied trade, a trailing stop's starting level, the tamper check) is
    filled in when its bar is booked. The FMEL event texts are rendered from the book's columns
    at the end, in compiled code.
    """

    def __init__(self, panel: BarPanel, settings: BacktestSettings, log: DecisionLog) -> None:
        from farm_dagster.engine.book import CompiledBook

        self._setup(panel, log)
        book = self.book = CompiledBook(
            panel.symbols, settings, panel.timestamps, panel.open, panel.high, panel.low, panel.close
        )
        self.cash, self.positions_value, self.equity = book.cash, book.positions_value, book.equity
        self.positions = book.position_rows
        log.bind_positions(self.positions)
        self._marked = 0  # bars handed to on_bar: booked at the next flush
        self._bars_due: list[tuple[int, int, float]] = []  # (log row, bar, mirror equity), not booked yet
        # TARGETs whose implied trade is logged once their bar is booked: (k, bar, symbol, d, price)
        self._targets: list[tuple[int, int, int, CheckedDecision, float | None]] = []
        self._trailing: list[tuple[int, int, CheckedDecision]] = []  # (book index, bar, d): level to log
        self._inputs_due: deque[tuple[int, CheckedDecision]] = deque()  # inputs texts to render
        self._event_times_cache: dict[int, str] | None = None  # see ``_event_times``
        self._end_reason = "run ended"  # the reason of the orders still open at the end

    @property
    def _event_times(self) -> dict[int, str]:
        """Bar time -> event time text, for the texts of rejected decisions: built on the first one
        (most runs have none; it took 0.07-0.12 s of every large run's start on 100,000 bars)."""
        if self._event_times_cache is None:
            self._event_times_cache = iso_many(self._timestamps)
        return self._event_times_cache

    def on_bar(self, t: int, block: np.ndarray) -> None:
        self._marked = t + 1  # its fills and marks: at the next flush, before its decisions

    def apply(self, t: int, payload: bytes) -> None:
        mirror_equity, raw_decisions = self._decode(payload)
        ts_ns = self._timestamps[t]
        row = len(self.log)
        self.log.add_bar(t, ts_ns, cash=math.nan, equity=math.nan, positions=None, data_read=self._data_read)
        self._bars_due.append((row, t, mirror_equity))
        if not raw_decisions:
            return
        add, log_decision = self.book.add, self.log.add_decision
        inputs_due = self._inputs_due.append
        for seq, d, did, i, price in self._each_checked(t, raw_decisions):
            j = add(t, seq, d, did)
            k = log_decision(row, seq, did, d, d.action, d.quantity, price)
            inputs_due((k, d))
            if d.reject_reason is not None:  # no order: its one event is known now
                self.log.events_texts[k] = events_json(
                    [("rejected_decision", ts_ns, d.reject_reason)], self._event_times
                )
            elif d.action == "TARGET":
                self._targets.append((k, t, i, d, price))  # type: ignore[arg-type]
            elif d.order_type == "trailing_stop" and d.stop_price is None and d.action != "HOLD":
                self._trailing.append((j, t, d))

    def flush(self, at_least: int = 1) -> None:
        """Book the bars applied so far in one compiled call, once there are ``at_least`` of them,
        then fill in what depended on them.

        The stream calls it after every bar it applies (it books once ``FLUSH_BARS`` wait, when
        the parent has fallen behind the agent) and with ``IDLE_FLUSH_BARS`` whenever it has caught
        up, so that a call is short and lands while the agent thinks, not on a hand-off. On 100
        symbols x 100,000 bars a call costs about 27 us booking one bar (its Python side and the
        kernel's unboxing about 12 us of it), 21 us a bar booking two.
        """
        hi = self._marked
        if hi - self.processed < at_least:
            return
        self.book.advance(hi)
        self.processed = hi
        cash, equity, positions, log = self.cash, self.equity, self.positions, self.log
        for row, t, mirror_equity in self._bars_due:
            log.settle_bar(row, float(cash[t]), float(equity[t]))
            self._tampered(t, mirror_equity, float(equity[t]))
        self._bars_due.clear()
        for k, t, i, d, price in self._targets:
            log.settle_decision(k, *_implied(d, float(equity[t]), price, float(positions[t, i])))
        self._targets.clear()
        placed = self.book.dec_order
        for j, t, d in self._trailing:
            if placed[j] >= 0:  # placed (a bracket child whose parent was not open never is)
                d.stop_price = self._trailing_start(d, t)
        self._trailing.clear()

    def _trailing_start(self, d: CheckedDecision, t: int) -> float:
        """Where a trailing stop without a stop price starts: from the last close seen (the broker's
        ``submit`` rule), logged by FMEL as its stop price."""
        column = self.panel.close[: t + 1, self.index[d.symbol]]  # type: ignore[index]
        seen = column[column == column]
        close = float(seen[-1]) if seen.size else 0.0
        trail = d.trail_amount or close * d.trail_percent  # type: ignore[operator]
        return close + trail if d.action == "BUY" else close - trail

    def render_some(self, budget: int = 4) -> bool:
        """Render the inputs texts of up to ``budget`` decisions. False = nothing to do now.

        The event texts are not rendered here: slices of them held up the agent's next bars
        during the stream, and the book renders them all at the end, in compiled code
        (:meth:`CompiledBook.events_column`), in less time than those slices took (bench/RESULTS.md).
        """
        queue = self._inputs_due
        if not queue:
            return False
        render_inputs = self.log.render_inputs
        for _ in range(min(budget, len(queue))):
            render_inputs(*queue.popleft())
        return True

    def close_book(self, ts_ns: int, reason: str) -> None:
        self._end_reason = reason
        self.book.cancel_all(ts_ns)

    def fill_columns(self) -> list[Any]:
        return self.book.fill_columns()

    def trade_columns(self) -> dict[str, Any]:
        c = self.book.trade_columns()
        closed = c["closed"]
        return {
            "symbol": _objects(self.symbols)[c["sym"]],
            "direction": np.where(c["direction"] > 0, "long", "short").astype(object),
            "entry_ts": c["entry_ts"],
            "exit_ts": np.where(closed, c["exit_ts"], _NAT),  # NaT while open
            "closed": closed,
            "quantity": c["quantity"],
            "entry_notional": c["entry_notional"],
            "exit_quantity": c["exit_qty"],
            "exit_notional": c["exit_notional"],
            "pnl": c["pnl"],
            "decision_id": _objects(self.book.decision_ids)[c["dec"]],
        }

    def frame_events(self) -> EventsColumn:
        """What ``DecisionLog.frame`` takes as its events: here the builder of the whole column,
        from the book's columns (``CompiledBook.events_renderer``)."""
        return functools.partial(self.book.events_renderer, run_end_reason=self._end_reason)

    def render_positions(self, symbols: Sequence[str], matrix: np.ndarray) -> list[str]:
        """The same texts, spelled by the compiled book's module (``book.positions_texts``)."""
        from farm_dagster.engine.book import positions_texts as compiled_positions_texts

        return compiled_positions_texts(symbols, matrix)

    @property
    def borrow_paid(self) -> float:
        return self.book.borrow_paid


def _nothing() -> None:
    return None


def _data_read_json(value: Any) -> str:
    """The child's ``data_read`` as stored in FMEL: strict JSON text, or a note saying why not."""
    if not isinstance(value, dict):
        return json.dumps({"invalid": "data_read was not an object"})
    try:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False, default=str)
    except ValueError:  # NaN or an infinity: not JSON; the log keeps a note, the run goes on
        return json.dumps({"invalid": "data_read held a non-finite number"})
    except RecursionError:
        return json.dumps({"invalid": "data_read nested too deeply"})
    return text if len(text) <= MAX_DATA_READ_BYTES else json.dumps({"truncated": True})


def _init_message(
    code: str, filename: str, kind: str, panel: BarPanel, settings: BacktestSettings, mode: str
) -> bytes:
    config = {
        "code": code,
        "filename": filename,
        "kind": kind,
        "symbols": list(panel.symbols),
        "params": settings.params,
        "initial_cash": settings.initial_cash,
        "costs": settings.to_json()["costs"],
        "allow_short": settings.allow_short,
        "borrow_rate_annual": settings.borrow_rate_annual,
        "settings": settings.to_json(),
        "mode": mode,
        "n_bars_hint": panel.n_bars,
    }
    return protocol.encode_json(protocol.INIT, config)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for a run.

    Why: a long run keeps hundreds of thousands of small acyclic objects alive (orders, events,
    log rows); every full collection would rescan them all, which costs more than the engine
    itself. Reference counting frees them: only OCO groups and brackets form cycles, and they are
    few. Callers switch the collector back on only after dropping the run's objects, or the
    first allocation after would start one full collection over all of them (about 1 s on
    100 x 100,000 bars).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _bar_messages(panel: BarPanel) -> Iterator[tuple[int, np.ndarray, bytes]]:
    """(t, (5, N) block, BAR message) for every bar; blocks are stacked a chunk at a time."""
    fields = (panel.open, panel.high, panel.low, panel.close, panel.volume)
    ts = panel.timestamps
    encode_bar = protocol.encode_bar
    for lo in range(0, panel.n_bars, _CHUNK):
        hi = min(panel.n_bars, lo + _CHUNK)
        chunk = np.stack([f[lo:hi] for f in fields], axis=1)  # (bars, 5, N), each bar contiguous
        for k in range(hi - lo):
            yield lo + k, chunk[k], encode_bar(int(ts[lo + k]), chunk[k])


class _Stream:
    """The lockstep with the agent, decoupled from the parent's booking.

    Bar t+1 leaves as soon as the decisions for bar t have arrived, never before (no look-ahead).
    The answers wait in a queue and are booked in order; :meth:`pump`, called between the steps
    of a booking and between decisions, hands the agent its next bar the moment it answered. So
    neither side waits for the other's slow bars: a run takes about as long as the busier process,
    not the sum of the slower side of every bar. A failure (the agent's error, a crash, a timeout)
    stops the hand-offs; it is raised once every answer received before it has been booked.
    """

    def __init__(self, proc: SandboxProcess, panel: BarPanel) -> None:
        self.proc = proc
        self.bars = _bar_messages(panel)
        self.unbooked: deque[tuple[int, np.ndarray, bytes]] = deque()  # answered, not booked yet
        self.thinking: tuple[int, np.ndarray] | None = None  # the bar whose answer is awaited
        self.failure: BaseException | None = None
        self.failed_bar: tuple[int, np.ndarray] | None = None  # the bar the agent failed on
        self.next_look = 0.0  # perf_counter time before which pump() does not ask the channel
        # The bar after the one awaited, its message built while the agent thinks: the hand-off
        # is then only a write (building it took ~2 us of every hand-off).
        self.following: tuple[int, np.ndarray, bytes] | None = None

    def start(self) -> None:
        t, block, message = next(self.bars)
        self.proc.send(message)
        self.thinking = (t, block)
        self.following = next(self.bars, None)

    def pump(self, wait: bool = False) -> None:
        """Take the agent's answer if it is there (or, ``wait``, when it comes) and send the next bar."""
        thinking = self.thinking
        if thinking is None:
            return
        if not wait:
            # Booking calls this between every two decisions (470,000 times on 100 x 100,000
            # bars). Asking a pipe channel is a system call (~1.1 us); an agent takes far longer
            # than POLL_INTERVAL per bar, so looking less often costs it nothing and saves the
            # parent about 2 % of its time. Asking the shared-memory channel is a memory read,
            # but looking on every call there measured no better (bench/RESULTS.md).
            now = _clock()
            if now < self.next_look:
                return
            self.next_look = now + POLL_INTERVAL
            if not self.proc.ready():
                return
        self.thinking = None
        try:
            reply = self.proc.recv()
        except BaseException as exc:  # noqa: BLE001 - timeout, crash: raised after the booking
            self.failure, self.failed_bar = exc, thinking
            return
        if reply[0] != protocol.DECISIONS:
            self.failure, self.failed_bar = _unexpected(reply, protocol.DECISIONS), thinking
            return
        self.unbooked.append((*thinking, reply))
        following = self.following
        if following is None:
            return
        try:
            self.proc.send(following[2])  # the answer for t is in: the agent may now see t+1
        except BaseException as exc:  # noqa: BLE001 - a crash: raised after the booking
            self.failure = exc
            return
        self.thinking = (following[0], following[1])
        self.following = next(self.bars, None)


def _stream(proc: SandboxProcess, run: _Run, panel: BarPanel, progress: Progress | None) -> None:
    """Stream every bar to the agent and book its answers (see :class:`_Stream`).

    FMEL texts are rendered when there is nothing to book and the agent is still thinking.
    """
    n = panel.n_bars
    if n == 0:
        return
    step = max(1, n // 200)
    stream = _Stream(proc, panel)
    pump, unbooked = stream.pump, stream.unbooked
    on_bar, apply, render, ready, flush = run.on_bar, run.apply, run.render_some, proc.ready, run.flush
    run.pump = pump
    try:
        stream.start()
        while True:
            if unbooked:
                t, block, reply = unbooked.popleft()
                on_bar(t, block)  # fills of the orders decided on t-1, mark to t's close
                pump()
                apply(t, reply)
                flush(FLUSH_BARS)  # a compiled book that fell behind books a batch now
                if progress is not None and (t % step == 0 or t == n - 1):
                    progress(t + 1, n)
                continue
            if stream.failure is not None:
                if stream.failed_bar is not None:
                    on_bar(*stream.failed_bar)  # the bar the run stopped on is marked, as it was seen
                raise stream.failure
            if stream.thinking is None:
                return
            flush(IDLE_FLUSH_BARS)  # a compiled book books what was applied, while the agent thinks
            while not ready() and render():  # nothing to book: render FMEL texts while waiting
                pass
            pump(wait=True)
    finally:
        run.pump = _nothing


def run_backtest(
    code: str,
    panel: BarPanel,
    settings: BacktestSettings,
    *,
    agent_id: str,
    run_id: str,
    user_id: str = "local",
    filename: str = "agent.py",
    limits: SandboxLimits | None = None,
    progress: Progress | None = None,
    mode: str = "backtest",
    prevalidate: bool = True,
    n_trials: int = 1,
    book: str = "auto",
) -> BacktestResult:
    """Validate, then run ``code`` bar by bar in a sandbox over ``panel``; never raises for agent faults.

    ``prevalidate=False`` skips the static filter (tests use it to show that the sandbox alone
    contains code the filter would have refused); the run is then treated as a native agent.
    ``n_trials`` (strategies tried before this one) only feeds the deflated Sharpe ratio.
    ``progress(done, total)`` is called about 200 times over the run.
    ``book``: "python" (the broker, the reference), "compiled" (:mod:`farm_dagster.engine.book`,
    the same results bit for bit, less of the parent's CPU) or "auto": compiled from
    ``AUTO_COMPILED_SYMBOL_BARS`` bars x symbols, where it pays for loading numba. A compiled book
    that cannot load falls back to the Python broker, and ``info["book_note"]`` says why.
    """
    if book not in BOOKS:
        raise ValueError(f"book must be one of {', '.join(BOOKS)}, got {book!r}")
    compiled = book == "compiled" or (
        book == "auto" and panel.n_bars * panel.n_symbols >= AUTO_COMPILED_SYMBOL_BARS
    )
    started = time.perf_counter()
    kind, rejection = validate(code, filename) if prevalidate else ("native", None)
    timings: dict[str, float] = {"validate_s": time.perf_counter() - started}
    proc: SandboxProcess | None = None
    launch_failure: BaseException | None = None
    loader = _BookLoader() if compiled and rejection is None else None
    if loader is not None:
        loader.start()
    if rejection is None:
        # Launch first: the child boots (interpreter, imports, lockdown) on the other core while
        # this process hashes the data for the run's identity, instead of one after the other.
        limits = limits or SandboxLimits()
        proc = SandboxProcess(HOST_ENTRIES[kind], limits, prepare=_prepare_spec(kind, panel, limits))
        try:
            proc.start()
            proc.send(_init_message(code, filename, kind, panel, settings, mode))
        except BaseException as exc:  # noqa: BLE001 - raised below, where every failure is classified
            launch_failure = exc
    try:
        ids = _identify(code, panel, settings)
        log = DecisionLog(
            agent_id=agent_id,
            user_id=user_id,
            run_id=run_id,
            mode=mode,
            code_hash=ids["code_hash"],
            data_version=ids["data_version"],
            symbols=panel.symbols,
        )
        if loader is not None:
            loader.join()
        if loader is not None and loader.failure is None:
            run: _Run = _CompiledRun(panel, settings, log)
        else:
            run = _Run(panel, settings, log)
    except BaseException:  # an interrupt or a failed allocation: the launched sandbox dies too
        if proc is not None:
            proc.close()
        raise
    status, error = "completed", None
    info: dict[str, Any] = {"book": "compiled" if isinstance(run, _CompiledRun) else "python"}
    if loader is not None and loader.failure is not None:
        info["book_note"] = f"compiled book unavailable ({loader.failure}); booked by the Python broker"
    # One pause of the cyclic collector for the stream and the result frames, switched back on
    # only once the run's own objects are gone (see ``_no_cyclic_gc``).
    with _no_cyclic_gc():
        if proc is None:
            status, error = "rejected", rejection
        else:
            try:
                if launch_failure is not None:
                    raise launch_failure
                ready = proc.recv(timeout=STARTUP_TIMEOUT)
                if ready[0] != protocol.READY:
                    raise _unexpected(ready, protocol.READY)
                ready_body = protocol.decode_json(ready)
                info["agent_class"] = (
                    str(ready_body.get("agent_class", ""))[:200] if isinstance(ready_body, dict) else ""
                )
                timings["startup_s"] = time.perf_counter() - started
                _stream(proc, run, panel, progress)
                info["sandbox_peak_rss_mb"] = proc.peak_rss_mb()  # read before END: it exits after DONE
                proc.send(bytes((protocol.END,)))
                done = proc.recv(timeout=30)
                if done[0] != protocol.DONE:
                    raise protocol.ProtocolError("expected DONE")
                timing = _agent_timing(done)
                if timing:
                    info["agent_timing_s"] = timing
            except _Failure as failure:
                status, error = failure.status, failure.error
            except SandboxTimeout as exc:
                status, error = "timeout", AgentError("Timeout", str(exc))
            except SandboxCrashed as exc:
                status, error = (
                    "killed",
                    AgentError(
                        "SandboxCrashed",
                        exc.exit.reason,
                        user_traceback=exc.exit.stderr_tail.splitlines()[-20:],
                    ),
                )
            except protocol.ProtocolError as exc:
                status, error = "failed", AgentError("ProtocolError", str(exc))
            finally:
                exit_status = proc.close()
                if exit_status is not None:
                    info["sandbox_exit"] = {
                        "returncode": exit_status.returncode,
                        "signal": exit_status.signal,
                    }
        timings["total_s"] = time.perf_counter() - started
        loop_s = timings["total_s"] - timings.get("startup_s", timings["total_s"])
        timings["bars_per_s"] = run.processed / loop_s if loop_s > 0 and run.processed else 0.0
        built = time.perf_counter()
        result = _result(
            run, panel, settings, status, error, ids, timings, info, kind, agent_id, run_id, user_id, n_trials
        )
        del run, log  # the broker's orders, events and trades: freed now, not scanned by the collector
        timings["result_s"] = time.perf_counter() - built
    timings["total_s"] = time.perf_counter() - started
    return result


class _BookLoader(threading.Thread):
    """Imports the compiled book and loads its kernels from numba's cache (about 0.5 s) while the
    sandbox boots and the parent hashes the data (which releases the GIL). ``failure``: why it
    could not, and the run is booked by the Python broker instead."""

    def __init__(self) -> None:
        super().__init__(name="farm-compiled-book", daemon=True)
        self.failure: Exception | None = None

    def run(self) -> None:
        try:
            from farm_dagster.engine.book import warm_up

            warm_up()
        except Exception as exc:  # noqa: BLE001 - the run falls back to the Python broker, and says so
            self.failure = exc


def _prepare_spec(kind: str, panel: BarPanel, limits: SandboxLimits) -> dict[str, Any] | None:
    """What the agent's host prepares before its lockdown (``engine.host.prepare``): a native
    run's history buffer, mapped in one call, when it takes at most half the sandbox's memory.
    A larger one is mapped as the bars come, under the limit, which then decides as before."""
    if kind != "native":
        return None
    size = 8 * math.prod(History.shape(panel.n_symbols, panel.n_bars))
    if size > limits.memory_mb * 2**20 // 2:
        return None
    return {"history": [panel.n_symbols, panel.n_bars]}


def _identify(code: str, panel: BarPanel, settings: BacktestSettings) -> dict[str, str]:
    """The run's identity: hashes of the code, the data and the settings, and the result id."""
    ids = {
        "code_hash": _code_hash(code),
        "data_version": panel.data_version,
        "settings_hash": _settings_hash(settings),
    }
    ids["result_id"] = _result_id(ids["code_hash"], ids["data_version"], ids["settings_hash"])
    return ids


def _result(
    run: _Run,
    panel: BarPanel,
    settings: BacktestSettings,
    status: str,
    error: AgentError | None,
    ids: dict[str, str],
    timings: dict[str, float],
    info: dict[str, Any],
    kind: str,
    agent_id: str,
    run_id: str,
    user_id: str,
    n_trials: int = 1,
) -> BacktestResult:
    run.flush()  # what was applied but not booked yet (a compiled book books in batches)
    n = run.processed
    if n:
        run.close_book(
            int(panel.timestamps[n - 1]), "run ended" if status == "completed" else f"run {status}"
        )
    index = pd.DatetimeIndex(pd.to_datetime(panel.timestamps[:n], utc=True), name="timestamp")
    equity = pd.DataFrame(
        {"cash": run.cash[:n], "positions_value": run.positions_value[:n], "equity": run.equity[:n]},
        index=index,
    )
    positions = pd.DataFrame(run.positions[:n], index=index, columns=list(panel.symbols))
    fills = _fills_frame(run.fill_columns())
    trades = _trades_frame(run.trade_columns())
    decisions = (
        run.log.frame(run.frame_events(), positions=run.positions[:n], render_positions=run.render_positions)
        if len(run.log)
        else empty_frame()
    )
    metrics = _metrics(equity, trades, fills, settings, n_trials) if status == "completed" and n >= 2 else {}
    return BacktestResult(
        run_id=run_id,
        agent_id=agent_id,
        user_id=user_id,
        status=status,
        error=error,
        symbols=panel.symbols,
        equity=equity,
        positions=positions,
        fills=fills,
        trades=trades,
        decisions=decisions,
        metrics=metrics,
        tamper_suspected=bool(run.tamper_bars),
        timings=timings,
        kind=kind,
        info={**info, "tamper_bars": run.tamper_bars[:20], "borrow_paid": run.borrow_paid},
        **ids,
    )


_FILL_COLUMNS = (
    "order_id",
    "decision_id",
    "timestamp",
    "symbol",
    "side",
    "quantity",
    "price",
    "commission",
    "slippage_cost",
)
_FILL_DTYPES = (np.int64, object, None, object, object, np.float64, np.float64, np.float64, np.float64)


def _fills_frame(columns: list[Any]) -> pd.DataFrame:
    """Fills from their columns (``Fill`` field order; lists or arrays), each typed once: a frame
    from a list of row tuples makes pandas infer every cell's type (about 2 s on 370,000 fills)."""
    data: dict[str, Any] = {}
    for name, dtype, values in zip(_FILL_COLUMNS, _FILL_DTYPES, columns, strict=True):
        data[name] = _utc(values) if name == "timestamp" else _column(values, dtype)
    return pd.DataFrame(data, copy=False)  # the columns are new: no copy needed


def _trades_frame(c: dict[str, Any]) -> pd.DataFrame:
    """Trades from their columns (see ``_Run.trade_columns``): prices and returns derived here."""
    quantity, entry_notional, pnl, closed = c["quantity"], c["entry_notional"], c["pnl"], c["closed"]
    exit_quantity, exit_notional = c["exit_quantity"], c["exit_notional"]
    with np.errstate(divide="ignore", invalid="ignore"):  # what Trade.entry_price/exit_price compute
        data = {
            "symbol": _column(c["symbol"], object),
            "direction": _column(c["direction"], object),
            "entry_time": _utc(c["entry_ts"]),
            "exit_time": _utc(c["exit_ts"]),
            "quantity": _column(quantity, np.float64),
            "entry_price": entry_notional / quantity,
            "exit_price": np.where(closed & (exit_quantity != 0), exit_notional / exit_quantity, np.nan),
            "pnl": _column(pnl, np.float64),
            "return_pct": pnl / entry_notional,
            "status": np.where(closed, "closed", "open").astype(object),
            "decision_id": _column(c["decision_id"], object),
        }
    return pd.DataFrame(data, copy=False)  # the columns are new: no copy needed


def _objects(values: Any) -> np.ndarray:
    """``values`` as an object array (to pick names and ids by index)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _column(values: Any, dtype: Any) -> np.ndarray:
    return _objects(values) if dtype is object else np.array(values, dtype=dtype)


def _utc(values: Any) -> pd.DatetimeIndex:
    """ns integers (a list with None = NaT, or an int64 array with NaT's value) -> UTC timestamps."""
    if isinstance(values, np.ndarray):
        raw = values.astype(np.int64).view("datetime64[ns]")
    else:
        raw = np.array([_NAT if v is None else v for v in values], dtype=np.int64).view("datetime64[ns]")
    return pd.DatetimeIndex(raw).tz_localize("UTC")


def _metrics(
    equity: pd.DataFrame,
    trades: pd.DataFrame,
    fills: pd.DataFrame,
    settings: BacktestSettings,
    n_trials: int = 1,
) -> dict[str, float]:
    try:
        from farm_dagster.metrics import compute_metrics
    except ImportError:  # the metrics module is optional for the engine itself
        return {}
    closed = trades[trades["status"] == "closed"]
    notional = float((fills["quantity"] * fills["price"]).abs().sum()) if len(fills) else 0.0
    return compute_metrics(
        equity["equity"],
        closed,
        positions_value=equity["positions_value"],
        turnover_notional=notional,
        initial_equity=settings.initial_cash,
        n_trials=max(int(n_trials), 1),
    )
