"""Seeded synthetic bars for scale tests: N symbols x M bars, daily or minute, clearly labelled.

Why synthetic at all: the real series stop at a few dozen symbols and a few thousand days; engine
and warehouse benchmarks need 100 symbols x 100,000 bars. Every row carries
``source = "synthetic (seeded, seed=<seed>)"`` and is written to its own table
(``market_data.ohlcv_synthetic``), so it can never be mistaken for market data.

Model: a geometric random walk per symbol (each symbol drawn from its own stream
``default_rng([seed, i])``, so symbol i is the same series whatever ``n_symbols`` is). Each bar's
open is the previous close times a small gap; high/low extend beyond max/min(open, close) by a
non-negative excursion, so low <= open, close <= high and every price is positive by construction.

Calendars: daily bars fall on Monday-Friday (not the XNYS calendar: 100,000 days exceed any
exchange calendar), stamped 00:00 UTC of the date; minute bars cover 09:30-15:59 New York time
(390 per weekday), stamped with their UTC start instant.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from farm_dagster.market_data.panel import BarPanel
from farm_dagster.market_data.schema import DAILY, MINUTE, OHLCV_COLUMNS, TIMEFRAMES

MINUTES_PER_SESSION = 390
_DEFAULT_START = {DAILY: "2000-01-03", MINUTE: "2020-01-02"}
# pandas' nanosecond range is 1677-09-21..2262-04-11; keep a margin for minute offsets.
_FIRST_SAFE_DAY = np.datetime64("1678-01-03", "D")
_LAST_SAFE_DAY = np.datetime64("2261-12-30", "D")
# Per-bar volatility and volume scale; minute bars scale daily volatility by sqrt(390).
_DAILY_SIGMA = 0.02
_SIGMA = {DAILY: _DAILY_SIGMA, MINUTE: _DAILY_SIGMA / np.sqrt(MINUTES_PER_SESSION)}
_VOLUME_MEDIAN = {DAILY: 1_000_000.0, MINUTE: 2_500.0}
_BLOCK = 16


def synthetic_source(seed: int) -> str:
    """The ``source`` label of every synthetic row."""
    return f"synthetic (seeded, seed={seed})"


def synthetic_symbols(n_symbols: int) -> tuple[str, ...]:
    return tuple(f"SYN{i:04d}" for i in range(1, n_symbols + 1))


def synthetic_timestamps(n_bars: int, timeframe: str = DAILY, start: str | None = None) -> pd.DatetimeIndex:
    """UTC timestamps of ``n_bars`` bars (see the module docstring for the calendar)."""
    _check_timeframe(timeframe)
    if n_bars < 0:
        raise ValueError(f"n_bars must be >= 0, got {n_bars}")
    n_days = n_bars if timeframe == DAILY else -(-n_bars // MINUTES_PER_SESSION)
    first = np.datetime64(pd.Timestamp(start or _DEFAULT_START[timeframe]).date(), "D")
    offsets = np.arange(n_days)
    if start is None and n_days and np.busday_offset(first, n_days - 1, roll="forward") > _LAST_SAFE_DAY:
        # Long series: end on the last representable day instead of overflowing.
        first = np.busday_offset(_LAST_SAFE_DAY, -(n_days - 1), roll="backward")
    day_array = np.busday_offset(first, offsets, roll="forward")
    if n_days and (day_array[-1] > _LAST_SAFE_DAY or day_array[0] < _FIRST_SAFE_DAY):
        raise ValueError(
            f"{n_bars} {timeframe} bars from {first} leave pandas' timestamp range "
            "(1677-2262); use fewer bars or timeframe='1m'"
        )
    days = pd.DatetimeIndex(day_array.astype("datetime64[ns]"))
    if timeframe == DAILY:
        return days.tz_localize("UTC").as_unit("ns")
    minute_ns = np.arange(MINUTES_PER_SESSION, dtype=np.int64) * 60_000_000_000
    open_ns = np.int64(9 * 3600 + 30 * 60) * 1_000_000_000
    local = (days.as_unit("ns").asi8[:, None] + open_ns + minute_ns[None, :]).ravel()[:n_bars]
    return pd.DatetimeIndex(local).tz_localize("America/New_York").tz_convert("UTC").as_unit("ns")


def synthetic_arrays(n_symbols: int, n_bars: int, seed: int, timeframe: str = DAILY) -> dict[str, np.ndarray]:
    """open/high/low/close/volume as float64 (n_bars, n_symbols) arrays."""
    _check_timeframe(timeframe)
    if n_symbols < 1:
        raise ValueError(f"n_symbols must be >= 1, got {n_symbols}")
    if n_bars < 0:
        raise ValueError(f"n_bars must be >= 0, got {n_bars}")
    out = {name: np.empty((n_bars, n_symbols)) for name in ("open", "high", "low", "close", "volume")}
    if n_bars == 0:
        return out
    # Blocks of symbols keep temporaries small (100 x 100,000 bars would need >1 GB at once).
    for lo in range(0, n_symbols, _BLOCK):
        hi = min(lo + _BLOCK, n_symbols)
        for name, block in _symbol_block(seed, range(lo, hi), n_bars, timeframe).items():
            out[name][:, lo:hi] = block.T
    return out


def _symbol_block(seed: int, ids: range, n_bars: int, timeframe: str) -> dict[str, np.ndarray]:
    """Bars of symbols ``ids`` as (len(ids), n_bars) arrays; symbol i always uses stream [seed, i]."""
    sigma = _SIGMA[timeframe]
    k = len(ids)
    start_price = np.empty((k, 1))
    noise = np.empty((k, 5, n_bars))  # returns, opening gap, up/down excursions, volume
    for row, i in enumerate(ids):
        rng = np.random.default_rng([seed, i])
        start_price[row, 0] = rng.uniform(20.0, 500.0)
        rng.standard_normal(out=noise[row])
    log_p0 = np.log(start_price)
    log_close = log_p0 + np.cumsum(noise[:, 0] * sigma, axis=1)
    log_open = np.empty_like(log_close)
    log_open[:, 0] = log_p0[:, 0]
    log_open[:, 1:] = log_close[:, :-1]
    log_open += noise[:, 1] * (sigma * 0.25)
    block = {"open": np.exp(log_open), "close": np.exp(log_close)}
    top = np.maximum(block["open"], block["close"])
    bottom = np.minimum(block["open"], block["close"])
    # Multiplying by exp(|x|) >= 1 (resp. dividing) keeps low <= open, close <= high exactly.
    block["high"] = np.maximum(top * np.exp(np.abs(noise[:, 2]) * (sigma * 0.5)), top)
    block["low"] = np.minimum(bottom * np.exp(-np.abs(noise[:, 3]) * (sigma * 0.5)), bottom)
    block["volume"] = np.round(_VOLUME_MEDIAN[timeframe] * np.exp(0.5 * noise[:, 4]))
    return block


def synthetic_panel(
    n_symbols: int, n_bars: int, seed: int = 0, timeframe: str = DAILY, start: str | None = None
) -> BarPanel:
    """A BarPanel straight from the generator (no long frame, no warehouse): the benchmark path."""
    arrays = synthetic_arrays(n_symbols, n_bars, seed, timeframe)
    stamps = synthetic_timestamps(n_bars, timeframe, start)
    return BarPanel(timestamps=stamps.asi8.copy(), symbols=synthetic_symbols(n_symbols), **arrays)


def synthetic_ohlcv(
    n_symbols: int, n_bars: int, seed: int = 0, timeframe: str = DAILY, start: str | None = None
) -> pd.DataFrame:
    """Long ``market_data.ohlcv``-shaped rows (symbol-major), for the ``ohlcv_synthetic`` table."""
    arrays = synthetic_arrays(n_symbols, n_bars, seed, timeframe)
    stamps = synthetic_timestamps(n_bars, timeframe, start)
    symbols = synthetic_symbols(n_symbols)
    n_rows = n_symbols * n_bars
    frame = pd.DataFrame(
        {
            "symbol": pd.Categorical.from_codes(np.repeat(np.arange(n_symbols), n_bars), categories=symbols),
            "timestamp": np.tile(stamps.asi8, n_symbols).view("datetime64[ns]"),
            **{name: arr.T.ravel() for name, arr in arrays.items()},
            "source": pd.Categorical.from_codes(np.zeros(n_rows, dtype=np.int8), [synthetic_source(seed)]),
            "adjusted": np.zeros(n_rows, dtype=bool),
            "close_only": np.zeros(n_rows, dtype=bool),
            "timeframe": pd.Categorical.from_codes(np.zeros(n_rows, dtype=np.int8), [timeframe]),
        }
    )
    frame["timestamp"] = frame["timestamp"].dt.tz_localize("UTC")
    return frame[list(OHLCV_COLUMNS)]


def _check_timeframe(timeframe: str) -> None:
    if timeframe not in TIMEFRAMES:
        raise ValueError(f"timeframe must be one of {', '.join(TIMEFRAMES)}, got {timeframe!r}")
