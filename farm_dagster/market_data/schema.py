"""The row shape of ``market_data.ohlcv`` and the one timestamp convention every loader follows.

Why one place: real loaders, the synthetic generator, the checks and the store all build or read
the same long frame; if each shaped it on its own, a dtype or a timestamp convention would drift.

Timestamp convention: a daily bar is stamped **00:00 UTC of its session date** (the exchange's
local trading date), not the moment of the close. That keeps the date exact in every backend
(BigQuery's day partition is the session date) and matches exchange_calendars' session labels.
A daily bar's values are known only after that session's close; the engine never lets an agent
act on bar t before bar t+1, so the label carries no look-ahead. Intraday bars carry their real
UTC start instant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from farm_dagster.resources.tables import OHLCV

OHLCV_COLUMNS: tuple[str, ...] = tuple(OHLCV.column_names)
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
DAILY = "1d"
MINUTE = "1m"
TIMEFRAMES = (DAILY, MINUTE)
ADJ_SUFFIX = ".ADJ"


def session_timestamps(dates: Sequence[object] | pd.Index) -> pd.DatetimeIndex:
    """Session dates (strings, naive or aware timestamps) -> 00:00 UTC of each date."""
    index = pd.DatetimeIndex(pd.to_datetime(dates))
    if index.tz is not None:
        index = index.tz_localize(None)
    return index.normalize().tz_localize("UTC").as_unit("ns")


def ohlcv_frame(
    symbol: str,
    timestamps: pd.DatetimeIndex,
    *,
    close: np.ndarray | Sequence[float],
    source: str,
    adjusted: bool,
    open: np.ndarray | Sequence[float] | None = None,
    high: np.ndarray | Sequence[float] | None = None,
    low: np.ndarray | Sequence[float] | None = None,
    volume: np.ndarray | Sequence[float] | None = None,
    timeframe: str = DAILY,
) -> pd.DataFrame:
    """Rows of one symbol. Omitted open/high/low mark the series close-only (NULL, never invented)."""
    n = len(timestamps)
    if timestamps.tz is None or str(timestamps.tz) != "UTC":
        raise ValueError(f"{symbol}: timestamps must be tz-aware UTC, got tz={timestamps.tz}")
    close_only = open is None and high is None and low is None
    if not close_only and (open is None or high is None or low is None):
        raise ValueError(f"{symbol}: give all of open/high/low or none of them (close-only)")
    nan = np.full(n, np.nan)

    def col(values: np.ndarray | Sequence[float] | None) -> np.ndarray:
        return nan.copy() if values is None else np.asarray(values, dtype=np.float64)

    return pd.DataFrame(
        {
            "symbol": symbol,
            "timestamp": timestamps,
            "open": col(open),
            "high": col(high),
            "low": col(low),
            "close": col(close),
            "volume": col(volume),
            "source": source,
            "adjusted": bool(adjusted),
            "close_only": close_only,
            "timeframe": timeframe,
        },
        columns=list(OHLCV_COLUMNS),
    )


def empty_ohlcv() -> pd.DataFrame:
    """A zero-row frame with the table's columns and dtypes."""
    return ohlcv_frame("", pd.DatetimeIndex([], tz="UTC"), close=[], source="", adjusted=False).iloc[0:0]


def concat_ohlcv(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Stack per-symbol frames, sorted by symbol then timestamp, with a fresh index."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_ohlcv()
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)


def require_columns(frame: pd.DataFrame, columns: Sequence[str] = OHLCV_COLUMNS) -> None:
    """Fail with the missing column names instead of a KeyError deep inside a check."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks market_data.ohlcv column(s): {', '.join(missing)}")
