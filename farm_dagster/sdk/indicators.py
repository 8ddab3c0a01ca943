"""Causal indicator math on arrays (time along axis 0), shared by :class:`Context` and users.

Every function looks only at values at or before each row, so feeding a history that ends at
"now" can never leak the future. Conventions (stated so results can be cross-checked):
``sma``/``rolling_std`` are NaN until ``window`` values and whenever the window holds a NaN
(pandas ``rolling(window).mean()/.std()``, ddof=1); ``ema`` is pandas
``ewm(span=span, adjust=False, ignore_na=True)``; ``rsi`` is Wilder's RSI seeded with the simple
mean of the first ``window`` changes.
"""

from __future__ import annotations

import numpy as np

_add_reduce = np.add.reduce


def sma_last(x: np.ndarray, window: int) -> np.ndarray | float:
    """Mean of the last ``window`` rows (NaN when fewer rows)."""
    if window < 1:
        raise ValueError("window must be >= 1")
    if len(x) < window:
        return np.full(x.shape[1:], np.nan) if x.ndim > 1 else float("nan")
    if x.dtype == np.float64:  # what ``mean`` computes (add.reduce, then / count), minus its overhead
        total = _add_reduce(x[len(x) - window :], axis=0)
        return total / window
    return x[len(x) - window :].mean(axis=0)


def std_last(x: np.ndarray, window: int) -> np.ndarray | float:
    """Sample standard deviation (ddof=1) of the last ``window`` rows."""
    if window < 2:
        raise ValueError("window must be >= 2")
    if len(x) < window:
        return np.full(x.shape[1:], np.nan) if x.ndim > 1 else float("nan")
    return x[len(x) - window :].std(axis=0, ddof=1)


def returns_last(x: np.ndarray, periods: int = 1) -> np.ndarray | float:
    """Simple return over the last ``periods`` rows: x[-1] / x[-1-periods] - 1."""
    if periods < 1:
        raise ValueError("periods must be >= 1")
    if len(x) <= periods:
        return np.full(x.shape[1:], np.nan) if x.ndim > 1 else float("nan")
    return x[-1] / x[-1 - periods] - 1.0


def sma(x: np.ndarray, window: int) -> np.ndarray:
    """Whole rolling-mean series (for research and tests)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    if len(x) >= window:
        csum = np.cumsum(np.nan_to_num(x), axis=0)
        nans = np.cumsum(np.isnan(x), axis=0)
        head = np.concatenate([np.zeros((1,) + x.shape[1:]), csum[:-window]])
        nhead = np.concatenate([np.zeros((1,) + x.shape[1:]), nans[:-window]])
        win = (csum[window - 1 :] - head) / window
        win[(nans[window - 1 :] - nhead) > 0] = np.nan
        out[window - 1 :] = win
    return out


class EmaState:
    """Incremental EMA over columns: feed rows in time order, read ``value``."""

    __slots__ = ("alpha", "value", "seen")

    def __init__(self, n_columns: int, span: float) -> None:
        if span < 1:
            raise ValueError("span must be >= 1")
        self.alpha = 2.0 / (span + 1.0)
        self.value = np.full(n_columns, np.nan)
        self.seen = 0

    def update(self, row: np.ndarray) -> None:
        value, alpha = self.value, self.alpha
        mixed = value + alpha * (row - value)
        self.value = np.where(row == row, np.where(value == value, mixed, row), value)
        self.seen += 1


class RsiState:
    """Incremental Wilder RSI over columns."""

    __slots__ = ("window", "prev", "count", "avg_gain", "avg_loss", "seen")

    def __init__(self, n_columns: int, window: int) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self.prev = np.full(n_columns, np.nan)
        self.count = np.zeros(n_columns, dtype=np.int64)
        self.avg_gain = np.zeros(n_columns)
        self.avg_loss = np.zeros(n_columns)
        self.seen = 0

    def update(self, row: np.ndarray) -> None:
        change = row - self.prev
        valid = change == change
        gain = np.where(valid, np.maximum(change, 0.0), 0.0)
        loss = np.where(valid, np.maximum(-change, 0.0), 0.0)
        self.count += valid
        w = self.window
        seeding = valid & (self.count <= w)
        later = valid & (self.count > w)
        self.avg_gain = np.where(
            seeding,
            self.avg_gain + gain / w,
            np.where(later, (self.avg_gain * (w - 1) + gain) / w, self.avg_gain),
        )
        self.avg_loss = np.where(
            seeding,
            self.avg_loss + loss / w,
            np.where(later, (self.avg_loss * (w - 1) + loss) / w, self.avg_loss),
        )
        self.prev = np.where(row == row, row, self.prev)
        self.seen += 1

    @property
    def value(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            rs = self.avg_gain / self.avg_loss
            out = 100.0 - 100.0 / (1.0 + rs)
        out = np.where(self.avg_loss == 0, np.where(self.avg_gain == 0, 50.0, 100.0), out)
        return np.where(self.count >= self.window, out, np.nan)


def ema(x: np.ndarray, span: float) -> np.ndarray:
    """Whole EMA series (same numbers as the incremental state)."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    state = EmaState(flat.shape[1], span)
    out = np.empty_like(flat)
    for t in range(len(flat)):
        state.update(flat[t])
        out[t] = state.value
    return out.reshape(x.shape)


def rsi(x: np.ndarray, window: int = 14) -> np.ndarray:
    """Whole Wilder-RSI series (same numbers as the incremental state)."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    state = RsiState(flat.shape[1], window)
    out = np.empty_like(flat)
    for t in range(len(flat)):
        state.update(flat[t])
        out[t] = state.value
    return out.reshape(x.shape)
