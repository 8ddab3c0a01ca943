"""What an agent sees on each bar: time, history up to now, portfolio, indicator helpers.

The history is a buffer the host fills with the bars it has been sent, nothing else: no row
beyond "now" exists in the process, so no index can reach it. Arrays handed out are read-only
views. Every read is recorded (symbol, field, how far back) for the decision log's ``data_read``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from farm_dagster.engine.protocol import order_ref
from farm_dagster.sdk import indicators
from farm_dagster.sdk.decision import OpenOrder, OrderUpdate

FIELDS = ("open", "high", "low", "close", "volume")
_FIELD_INDEX = {name: i for i, name in enumerate(FIELDS)}
ALL = "*"


class History:
    """Growing (5, capacity, N) buffer of streamed bars; doubles when full.

    Rows not yet streamed hold zeros, never data. The buffer is ``np.zeros`` (calloc): the
    operating system hands over zeroed pages only when a bar is first written to them. Why: a
    run announces its length and the buffer is sized once (100 symbols x 100,000 bars is 400 MB);
    filling it with NaN up front touched every page before the first bar and held the start of
    such a run back by about half a second, while the parent waited for READY.
    """

    __slots__ = ("data", "ts", "n", "n_symbols", "expected", "mapped")

    def __init__(
        self, n_symbols: int, capacity: int = 1024, expected: int = 0, mapped: np.ndarray | None = None
    ) -> None:
        """``mapped``: a zeroed (5, capacity, n_symbols) buffer whose pages are all mapped already
        (the host maps the announced run's in one call before the sandbox's lockdown: page by page,
        as the bars arrive, 400 MB cost about 0.65 s of page faults during the stream)."""
        self.n_symbols = n_symbols
        self.expected = int(expected)  # bars the run announced: growth stops there, not at a power of 2
        self.data = np.zeros(History.shape(n_symbols, capacity)) if mapped is None else mapped
        self.ts = np.zeros(self.data.shape[1], dtype=np.int64)
        self.n = 0
        self.mapped = mapped is not None  # no page left to map (``touch_ahead`` has nothing to do)

    @staticmethod
    def shape(n_symbols: int, capacity: int) -> tuple[int, int, int]:
        """The buffer's shape for room for ``capacity`` bars: (fields, rows, symbols), 16 rows at least."""
        return (5, max(16, int(capacity)), n_symbols)

    def append(self, ts_ns: int, block: np.ndarray) -> None:
        n = self.n
        if n == self.ts.shape[0]:
            size = 2 * n if self.expected <= n else min(2 * n, self.expected)
            grown = np.zeros((5, size, self.n_symbols))
            grown[:, :n] = self.data[:, :n]
            self.data = grown
            self.mapped = False
            ts = np.zeros(size, dtype=np.int64)
            ts[:n] = self.ts[:n]
            self.ts = ts
        self.data[:, n] = block
        self.ts[n] = ts_ns
        self.n = n + 1

    def touch_ahead(self, bars: int = 8) -> None:
        """Write zeros into the rows ``bars`` ahead, which makes the system map their pages now.

        Why: a page of the buffer is mapped on its first write, which costs a few microseconds;
        the host calls this after sending its answer, while the parent handles it, so that
        ``append`` finds its pages mapped. It writes once per page's worth of rows, a float per
        4 KiB and the last one of the rows ahead: every page they touch. The rows hold zeros
        already: nothing is read or shown from them.
        """
        n = self.n
        step = max(1, 512 // self.n_symbols)  # rows per 4 KiB page of one field
        if n % step or self.mapped:
            return
        lo = n + bars
        hi = min(lo + step, self.ts.shape[0])
        if lo < hi:
            rows = self.data[:, lo:hi].reshape(5, -1)  # a view: the rows of a field are contiguous
            rows[:, ::512] = 0.0
            rows[:, -1] = 0.0


def _readonly(arr: np.ndarray) -> np.ndarray:
    view = arr.view()
    view.flags.writeable = False
    return view


class Context:
    """Passed to ``Agent.on_bar``. ``symbol=None`` in the indicator helpers means every symbol
    (an array aligned with ``ctx.symbols``), which is the fast way to handle a large universe."""

    def __init__(self, symbols: tuple[str, ...], history: History, broker: Any) -> None:
        self.symbols = symbols
        self._index = {s: i for i, s in enumerate(symbols)}
        self._history = history
        self._broker = broker
        self._reads: dict[str, list[Any]] = {}
        self._updates: list[tuple[Any, ...]] = []  # the broker's order updates for this bar (host-set)
        self._last_reads: tuple[dict[str, list[Any]], dict[str, dict[str, Any]]] = ({}, {})
        self._ema: dict[tuple[int, float], indicators.EmaState] = {}
        self._rsi: dict[tuple[int, int], indicators.RsiState] = {}

    # ------------------------------------------------------------ time & bookkeeping
    @property
    def ts_ns(self) -> int:
        """Time of the current bar, integer nanoseconds since the epoch (UTC)."""
        return int(self._history.ts[self._history.n - 1])

    @property
    def time(self) -> datetime:
        """Time of the current bar (UTC)."""
        ts = self.ts_ns
        return datetime.fromtimestamp(ts // 1_000_000_000, tz=UTC).replace(
            microsecond=(ts // 1000) % 1_000_000
        )

    @property
    def bar_index(self) -> int:
        """0 on the first bar, counting up."""
        return self._history.n - 1

    @property
    def bars_seen(self) -> int:
        return self._history.n

    def _record(self, symbol: str | None, field: str, lookback: int | None) -> None:
        key = ALL if symbol is None else symbol
        entry = self._reads.get(key)
        if entry is None:
            self._reads[key] = [{field}, lookback]
            return
        entry[0].add(field)
        if entry[1] is not None and (lookback is None or lookback > entry[1]):
            entry[1] = lookback

    def _take_reads(self) -> dict[str, dict[str, Any]]:
        """The bar's data_read (host use): ``{symbol|'*': {"fields": [...], "lookback": n|None}}``."""
        reads, self._reads = self._reads, {}
        raw, built = self._last_reads
        if reads == raw:  # an agent usually reads the same things every bar: reuse the last answer
            return built
        built = {key: {"fields": sorted(f), "lookback": lb} for key, (f, lb) in sorted(reads.items())}
        self._last_reads = (reads, built)
        return built

    def _col(self, symbol: str) -> int:
        try:
            return self._index[symbol]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol!r}; this run trades {', '.join(self.symbols)}") from None

    @staticmethod
    def _field(field: str) -> int:
        try:
            return _FIELD_INDEX[field]
        except KeyError:
            raise KeyError(f"unknown field {field!r}; fields are {', '.join(FIELDS)}") from None

    # ---------------------------------------------------------------------- data
    def history(self, symbol: str, field: str = "close", lookback: int | None = None) -> np.ndarray:
        """``field`` of ``symbol`` for the last ``lookback`` bars (all bars so far when None), oldest first."""
        f, i, n = self._field(field), self._col(symbol), self._history.n
        lo = 0 if lookback is None else max(0, n - int(lookback))
        self._record(symbol, field, lookback)
        return _readonly(self._history.data[f, lo:n, i])

    def history_all(self, field: str = "close", lookback: int | None = None) -> np.ndarray:
        """``field`` of every symbol, shape (bars, symbols), oldest first."""
        f, n = self._field(field), self._history.n
        lo = 0 if lookback is None else max(0, n - int(lookback))
        self._record(None, field, lookback)
        return _readonly(self._history.data[f, lo:n])

    def price(self, symbol: str, field: str = "close") -> float:
        """The current bar's ``field`` (NaN when the symbol did not trade this bar)."""
        f, i = self._field(field), self._col(symbol)
        self._record(symbol, field, 1)
        return float(self._history.data[f, self._history.n - 1, i])

    def prices(self, field: str = "close") -> np.ndarray:
        """The current bar's ``field`` for every symbol."""
        f = self._field(field)
        self._record(None, field, 1)
        return _readonly(self._history.data[f, self._history.n - 1])

    def bar(self, symbol: str) -> dict[str, float]:
        """The current bar of ``symbol`` as {open, high, low, close, volume}."""
        i, n = self._col(symbol), self._history.n
        for field in FIELDS:
            self._record(symbol, field, 1)
        return {field: float(self._history.data[k, n - 1, i]) for k, field in enumerate(FIELDS)}

    # ---------------------------------------------------------------- indicators
    def _window(self, symbol: str | None, field: str, window: int) -> np.ndarray:
        f, n = self._field(field), self._history.n
        lo = max(0, n - int(window))
        self._record(symbol, field, int(window))
        if symbol is None:
            return self._history.data[f, lo:n]
        return self._history.data[f, lo:n, self._col(symbol)]

    def sma(self, symbol: str | None, window: int, field: str = "close") -> Any:
        """Simple moving average of the last ``window`` bars (NaN until there are that many)."""
        values = self._window(symbol, field, window)
        return indicators.sma_last(values, window) if len(values) >= window else _nan_like(symbol, self)

    def rolling_std(self, symbol: str | None, window: int, field: str = "close") -> Any:
        """Sample standard deviation of the last ``window`` bars."""
        values = self._window(symbol, field, window)
        return indicators.std_last(values, window) if len(values) >= window else _nan_like(symbol, self)

    def returns(self, symbol: str | None, periods: int = 1, field: str = "close") -> Any:
        """Return over the last ``periods`` bars: price now / price ``periods`` bars ago - 1."""
        values = self._window(symbol, field, periods + 1)
        return indicators.returns_last(values, periods)

    def _advance(self, state: Any, f: int) -> None:
        data, n = self._history.data, self._history.n
        for t in range(state.seen, n):
            state.update(data[f, t])

    def ema(self, symbol: str | None, span: float, field: str = "close") -> Any:
        """Exponential moving average with ``span`` (alpha = 2 / (span + 1)), over all bars so far."""
        f = self._field(field)
        state = self._ema.get((f, span))
        if state is None:
            state = self._ema[(f, span)] = indicators.EmaState(len(self.symbols), span)
        self._advance(state, f)
        self._record(symbol, field, None)
        return state.value.copy() if symbol is None else float(state.value[self._col(symbol)])

    def rsi(self, symbol: str | None, window: int = 14, field: str = "close") -> Any:
        """Wilder's RSI (0-100) over ``window`` bars; NaN until ``window`` changes were seen."""
        f = self._field(field)
        state = self._rsi.get((f, window))
        if state is None:
            state = self._rsi[(f, window)] = indicators.RsiState(len(self.symbols), window)
        self._advance(state, f)
        self._record(symbol, field, None)
        value = state.value
        return value if symbol is None else float(value[self._col(symbol)])

    # ----------------------------------------------------------------- portfolio
    @property
    def cash(self) -> float:
        return float(self._broker.cash)

    @property
    def equity(self) -> float:
        """Cash plus positions marked at the current close."""
        return float(self._broker.equity)

    def position(self, symbol: str) -> float:
        """Shares held (negative when short)."""
        return float(self._broker.positions[self._col(symbol)])

    @property
    def positions(self) -> dict[str, float]:
        """Non-zero positions, symbol -> shares."""
        held = self._broker.positions
        return {s: float(held[i]) for i, s in enumerate(self.symbols) if held[i] != 0}

    def position_array(self) -> np.ndarray:
        """Shares held for every symbol, aligned with ``ctx.symbols``."""
        return _readonly(self._broker.positions)

    def order_updates(self) -> list[OrderUpdate]:
        """What happened to your orders since your previous bar, oldest first: fills (at this bar's
        open, or at the prices their type allows), cancels (yours, OCO or bracket), rejections and
        expiries. The decision log has the same facts as events."""
        symbols = self.symbols
        return [
            OrderUpdate(order_ref(o.submitted_bar, o.seq), symbols[o.index], status, side, qty, price, reason)
            for o, status, side, qty, price, reason in self._updates
        ]

    def open_orders(self, symbol: str | None = None) -> list[OpenOrder]:
        """Orders sent on earlier bars and still open (limit/stop orders waiting for their price),
        oldest first; pass one to ``cancel`` to withdraw it."""
        if symbol is not None:
            self._col(symbol)  # unknown symbols raise, as everywhere in the context
        symbols = self.symbols
        return [
            OpenOrder(
                order_ref(o.submitted_bar, o.seq),
                symbols[o.index],
                o.action,
                o.quantity,
                o.target_shares,
                o.target_percent,
                o.order_type,
                o.limit_price,
                o.stop_price,
                o.submitted_bar,
            )
            for o in self._broker.open_orders()
            if symbol is None or symbols[o.index] == symbol
        ]


def _nan_like(symbol: str | None, ctx: Context) -> Any:
    return float("nan") if symbol is not None else np.full(len(ctx.symbols), np.nan)
