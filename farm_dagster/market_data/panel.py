"""BarPanel: the engine's view of market data, a dense (time × symbol) block of float64 arrays.

Why dense arrays: the engine streams one row (all symbols at one timestamp) per step, and the
vectorized peers (vectorbt) want the same shape. A symbol without a bar at a timestamp holds NaN;
the engine never fills an order on a NaN bar.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class BarPanel:
    timestamps: np.ndarray  # int64 nanoseconds since epoch, UTC, strictly increasing, shape (T,)
    symbols: tuple[str, ...]  # shape (N,)
    open: np.ndarray  # float64 (T, N)
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    close_only: tuple[bool, ...] = ()  # per symbol: True when only closes are real (open/high/low = close)

    def __post_init__(self) -> None:
        n_t, n_s = len(self.timestamps), len(self.symbols)
        for name in FIELDS:
            arr = getattr(self, name)
            if arr.shape != (n_t, n_s):
                raise ValueError(f"BarPanel.{name} has shape {arr.shape}, expected {(n_t, n_s)}")
        if n_t > 1 and not np.all(np.diff(self.timestamps) > 0):
            raise ValueError("BarPanel.timestamps must be strictly increasing")
        if not self.close_only:
            object.__setattr__(self, "close_only", tuple(False for _ in self.symbols))

    @property
    def n_bars(self) -> int:
        return len(self.timestamps)

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)

    @property
    def index(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(pd.to_datetime(self.timestamps, utc=True), name="timestamp")

    def field(self, name: str) -> np.ndarray:
        if name not in FIELDS:
            raise KeyError(f"unknown field {name!r}; fields are {', '.join(FIELDS)}")
        return getattr(self, name)

    def frame(self, name: str) -> pd.DataFrame:
        """One field as a (timestamp × symbol) DataFrame."""
        return pd.DataFrame(self.field(name), index=self.index, columns=list(self.symbols))

    def row(self, t: int) -> np.ndarray:
        """All fields of bar ``t`` as a (5, N) float64 block, the unit the engine streams."""
        return np.stack([self.open[t], self.high[t], self.low[t], self.close[t], self.volume[t]])

    @property
    def data_version(self) -> str:
        """Content hash of the panel: any change to a price, a timestamp or a symbol changes it."""
        digest = hashlib.sha256()
        # The arrays' own buffers, not ``tobytes()`` copies: a large panel is hundreds of MB.
        digest.update(np.ascontiguousarray(self.timestamps, dtype=np.int64).data)
        digest.update("\x1f".join(self.symbols).encode())
        for name in FIELDS:
            digest.update(np.ascontiguousarray(self.field(name), dtype=np.float64).data)
        return digest.hexdigest()[:16]

    def slice(
        self, start: pd.Timestamp | str | None = None, end: pd.Timestamp | str | None = None
    ) -> BarPanel:
        """Bars with start <= timestamp <= end (inclusive, UTC)."""
        lo, hi = 0, self.n_bars
        if start is not None:
            lo = int(np.searchsorted(self.timestamps, _ns(start), side="left"))
        if end is not None:
            hi = int(np.searchsorted(self.timestamps, _ns(end), side="right"))
        return BarPanel(
            timestamps=self.timestamps[lo:hi],
            symbols=self.symbols,
            open=self.open[lo:hi],
            high=self.high[lo:hi],
            low=self.low[lo:hi],
            close=self.close[lo:hi],
            volume=self.volume[lo:hi],
            close_only=self.close_only,
        )

    @classmethod
    def from_long(cls, frame: pd.DataFrame, symbols: list[str] | None = None) -> BarPanel:
        """Build from rows of ``market_data.ohlcv`` (symbol, timestamp, open, high, low, close, volume[, close_only]).

        Close-only rows (NULL open/high/low) trade at their close: open = high = low = close, so
        an order fills at the only real price there is; the series stays flagged ``close_only``.
        """
        if frame.empty:
            raise ValueError("no bars for the requested symbols and window")
        wanted = list(symbols) if symbols else sorted(frame["symbol"].unique())
        present = set(frame["symbol"].unique())
        missing = [s for s in wanted if s not in present]
        if missing:
            raise ValueError(f"no bars for symbol(s): {', '.join(missing)}")
        ts = pd.to_datetime(frame["timestamp"], utc=True)
        frame = frame.assign(timestamp=ts)
        index = pd.DatetimeIndex(sorted(ts.unique()))
        arrays = {}
        for name in FIELDS:
            wide = frame.pivot(index="timestamp", columns="symbol", values=name).reindex(
                index=index, columns=wanted
            )
            arrays[name] = wide.to_numpy(dtype=np.float64, copy=True)
        close = arrays["close"]
        for name in ("open", "high", "low"):
            arr = arrays[name]
            fill = np.isnan(arr) & ~np.isnan(close)
            arr[fill] = close[fill]
        if "close_only" in frame:
            flags = frame.groupby("symbol")["close_only"].any()
            close_only = tuple(bool(flags.get(s, False)) for s in wanted)
        else:
            close_only = tuple(False for _ in wanted)
        arrays["volume"] = np.where(np.isnan(arrays["volume"]) & ~np.isnan(close), 0.0, arrays["volume"])
        return cls(
            timestamps=index.as_unit("ns").asi8.copy(),
            symbols=tuple(wanted),
            close_only=close_only,
            **arrays,
        )


def utc_timestamp(value: pd.Timestamp | str) -> pd.Timestamp:
    """A window bound as a UTC timestamp (a naive one is UTC); bad text raises ``ValueError``."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _ns(value: pd.Timestamp | str) -> int:
    return int(utc_timestamp(value).value)
