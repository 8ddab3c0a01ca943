"""Performance metrics of an equity curve, including the deflated Sharpe ratio.

Pure numpy/pandas: the leaderboard, the engine and the tests recompute the same numbers from a
stored equity curve without importing the engine.

Conventions (every function here follows them; the vectorbt cross-check relies on them):

* Returns are **simple returns of the equity curve**, ``r_t = E_t / E_{t-1} - 1``. When
  ``initial_equity`` is given, the first bar also has a return ``E_0 / initial_equity - 1``
  (vectorbt's ``Portfolio.returns()`` does the same with ``init_cash``), otherwise the series
  starts at the second bar.
* Annualization multiplies a per-bar mean by ``periods_per_year`` and a per-bar standard
  deviation by its square root. ``periods_per_year`` is inferred from the index when not given
  (see :func:`infer_periods_per_year`: 252 for daily equity bars, 252 x 390 for minute bars ...).
* Standard deviations use ``ddof=1``. Sortino's downside deviation is the root mean square of
  the negative excess returns over *all* bars (Sortino & Price; the same as vectorbt).
* ``risk_free`` is an annual rate, turned into a per-bar rate by compounding:
  ``(1 + risk_free) ** (1 / periods_per_year) - 1``.
* ``max_drawdown`` is a **negative fraction or zero** (-0.25 = the equity fell 25 % below its
  running peak). Higher, i.e. closer to zero, is better, so the leaderboard ranks it descending
  like every other metric.
* Undefined values (zero variance, no losing trade, too few bars) are ``nan``, never ``inf``;
  every value is a plain Python ``float``. :func:`metrics_to_json` maps ``nan`` to ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist

import numpy as np
import pandas as pd

__all__ = [
    "compute_metrics",
    "deflated_sharpe_ratio",
    "drawdown_durations",
    "expected_max_sharpe",
    "infer_periods_per_year",
    "max_drawdown",
    "metrics_to_json",
    "probabilistic_sharpe_ratio",
    "sharpe_ratio",
    "simple_returns",
    "sortino_ratio",
]

_NAN = float("nan")
_NORMAL = NormalDist()  # stdlib: importing scipy.stats would cost ~0.6 s in every backtest process
_DAY_SECONDS = 86_400.0
_SESSION_SECONDS = 6.5 * 3600.0  # a US equity session (09:30-16:00): 390 minute bars


def _finite(value: float) -> float:
    """A plain float; inf (a division by zero upstream) becomes nan so JSON and rankings stay sane."""
    value = float(value)
    return value if math.isfinite(value) else _NAN


def infer_periods_per_year(index: pd.DatetimeIndex) -> float:
    """Bars per year from the median spacing of the timestamps.

    Daily bars: 252 (trading days), or 365 when more than 10 % of the bars fall on a weekend (crypto).
    Intraday bars: bars per 6.5 h session x 252, or bars per 24 h x 365 when weekends trade.
    Weekly: 52, monthly: 12. Fewer than two timestamps: 252.
    """
    if len(index) < 2:
        return 252.0
    step = float(np.median(np.diff(index.as_unit("ns").asi8))) / 1e9  # seconds (any stored unit)
    weekend_share = float(np.mean(index.dayofweek >= 5))
    round_the_clock = weekend_share > 0.10
    if step >= 25 * _DAY_SECONDS:
        return 12.0
    if step >= 5 * _DAY_SECONDS:
        return 52.0
    if step >= 0.8 * _DAY_SECONDS:
        return 365.0 if round_the_clock else 252.0
    if round_the_clock:
        return 365.0 * _DAY_SECONDS / step
    return 252.0 * _SESSION_SECONDS / step


def simple_returns(equity: pd.Series | np.ndarray, initial_equity: float | None = None) -> np.ndarray:
    """Simple returns of an equity curve (see the module conventions)."""
    values = np.asarray(equity, dtype=np.float64)
    if values.size == 0:
        return values
    if initial_equity is not None:
        values = np.concatenate([[float(initial_equity)], values])
    with np.errstate(divide="ignore", invalid="ignore"):
        return values[1:] / values[:-1] - 1.0


def sharpe_ratio(
    returns: np.ndarray, periods_per_year: float = 1.0, risk_free_per_period: float = 0.0
) -> float:
    """Annualized Sharpe ratio: mean excess return / std (ddof=1) x sqrt(periods_per_year).

    ``periods_per_year=1`` gives the per-bar Sharpe ratio the (deflated) PSR formulas need.
    """
    excess = np.asarray(returns, dtype=np.float64) - risk_free_per_period
    if excess.size < 2:
        return _NAN
    std = float(np.std(excess, ddof=1))
    if not std > 0.0:
        return _NAN
    return _finite(float(np.mean(excess)) / std * math.sqrt(periods_per_year))


def sortino_ratio(
    returns: np.ndarray, periods_per_year: float = 1.0, risk_free_per_period: float = 0.0
) -> float:
    """Annualized Sortino ratio: mean excess return / downside deviation (RMS over all bars)."""
    excess = np.asarray(returns, dtype=np.float64) - risk_free_per_period
    if excess.size < 2:
        return _NAN
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    if not downside > 0.0:
        return _NAN
    return _finite(float(np.mean(excess)) / downside * math.sqrt(periods_per_year))


def max_drawdown(equity: pd.Series | np.ndarray) -> float:
    """Largest fall below the running peak, as a negative fraction (0.0 for a curve that never falls)."""
    values = np.asarray(equity, dtype=np.float64)
    if values.size == 0:
        return _NAN
    peak = np.maximum.accumulate(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _finite(float(np.min(values / peak - 1.0)))


def drawdown_durations(
    equity: pd.Series | np.ndarray, timestamps: pd.DatetimeIndex | None = None
) -> tuple[int, float]:
    """Longest underwater spell: (bars, days) from the peak to the bar that regains it.

    A spell that has not recovered by the last bar ends at the last bar. Days are calendar days
    between the two timestamps (nan without timestamps). Bars and days are maximized separately.
    """
    values = np.asarray(equity, dtype=np.float64)
    n = values.size
    if n == 0:
        return 0, _NAN
    peak = np.maximum.accumulate(values)
    underwater = values < peak
    positions = np.arange(n)
    peak_pos = np.maximum.accumulate(np.where(underwater, 0, positions))
    # Underwater bar t: the spell has lasted t - peak so far; recovery bar t: it lasted t - peak(t-1).
    end_pos = np.full(n, -1)
    start_pos = np.zeros(n, dtype=np.int64)
    end_pos[underwater] = positions[underwater]
    start_pos[underwater] = peak_pos[underwater]
    recovered = np.zeros(n, dtype=bool)
    recovered[1:] = ~underwater[1:] & underwater[:-1]
    end_pos[recovered] = positions[recovered]
    start_pos[1:][recovered[1:]] = peak_pos[:-1][recovered[1:]]
    spell = end_pos >= 0
    if not spell.any():
        return 0, 0.0 if timestamps is not None else _NAN
    bars = int(np.max(end_pos[spell] - start_pos[spell]))
    if timestamps is None:
        return bars, _NAN
    ns = np.asarray(timestamps.as_unit("ns").asi8, dtype=np.int64)
    days = float(np.max(ns[end_pos[spell]] - ns[start_pos[spell]])) / 1e9 / _DAY_SECONDS
    return bars, days


def expected_max_sharpe(n_trials: int, var_trials: float, mean_trials: float = 0.0) -> float:
    """Expected maximum of ``n_trials`` Sharpe estimates with the given cross-trial mean and variance.

    Bailey & López de Prado (2014), eq. for SR0 (False Strategy theorem approximation):
    ``mean + sqrt(var) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e)))``, g = Euler-Mascheroni.
    A single trial selects nothing, so ``n_trials=1`` returns ``mean_trials``.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if var_trials < 0:
        raise ValueError(f"var_trials must be >= 0, got {var_trials}")
    if n_trials == 1:
        return float(mean_trials)
    gamma = float(np.euler_gamma)
    z = (1.0 - gamma) * _NORMAL.inv_cdf(1.0 - 1.0 / n_trials) + gamma * _NORMAL.inv_cdf(
        1.0 - 1.0 / (n_trials * math.e)
    )
    return float(mean_trials + math.sqrt(var_trials) * z)


def probabilistic_sharpe_ratio(
    sharpe: float, benchmark_sharpe: float, n_obs: int, skewness: float, kurtosis: float
) -> float:
    """P(true Sharpe > benchmark) given a per-bar Sharpe estimate from ``n_obs`` returns.

    ``kurtosis`` is the raw (Pearson) kurtosis, 3 for a normal distribution, not the excess.
    """
    if n_obs < 2 or not all(math.isfinite(x) for x in (sharpe, benchmark_sharpe, skewness, kurtosis)):
        return _NAN
    denom = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if not denom > 0.0:
        return _NAN
    return _finite(_NORMAL.cdf((sharpe - benchmark_sharpe) * math.sqrt(n_obs - 1) / math.sqrt(denom)))


def deflated_sharpe_ratio(
    returns: np.ndarray,
    n_trials: int = 1,
    var_trials: float | None = None,
    risk_free_per_period: float = 0.0,
) -> float:
    """Deflated Sharpe ratio (Bailey & López de Prado 2014) of one strategy's per-bar returns.

    The probability that the true Sharpe ratio exceeds the Sharpe the best of ``n_trials``
    worthless (true Sharpe 0) variants would show by luck. ``var_trials`` is the variance of the
    per-bar Sharpe ratios across the trials; when unknown, the sampling variance of a Sharpe
    estimate under the null, ``1 / (T - 1)``, is used (T returns), i.e. the trials are taken as
    independent noise. With ``n_trials=1`` this is the PSR against a zero Sharpe. Skewness and
    raw kurtosis are the population (biased) moments of the excess returns.
    """
    excess = np.asarray(returns, dtype=np.float64) - risk_free_per_period
    n_obs = excess.size
    if n_obs < 3:
        return _NAN
    sr = sharpe_ratio(excess)
    if not math.isfinite(sr):
        return _NAN
    centered = excess - excess.mean()
    m2 = float(np.mean(centered**2))
    skewness = float(np.mean(centered**3)) / m2**1.5
    kurtosis = float(np.mean(centered**4)) / m2**2
    variance = 1.0 / (n_obs - 1) if var_trials is None else float(var_trials)
    benchmark = expected_max_sharpe(n_trials, variance)
    return probabilistic_sharpe_ratio(sr, benchmark, n_obs, skewness, kurtosis)


def compute_metrics(
    equity: pd.Series,
    trades: pd.DataFrame | None = None,
    positions_value: pd.Series | pd.DataFrame | None = None,
    turnover_notional: float | pd.Series | None = None,
    periods_per_year: float | None = None,
    risk_free: float = 0.0,
    n_trials: int = 1,
    *,
    initial_equity: float | None = None,
) -> dict[str, float]:
    """Every leaderboard metric of one equity curve (see the module docstring for conventions).

    equity: account value per bar, UTC DatetimeIndex (a plain index needs ``periods_per_year``).
    trades: closed round trips with a ``pnl`` column -> n_trades, win_rate, profit_factor.
    positions_value: gross value held per bar (Series), or shares per symbol (DataFrame) ->
        exposure = share of bars holding anything.
    turnover_notional: traded notional (buys + sells), a total or a per-bar Series ->
        turnover = notional / mean equity / years (times per year the capital was traded).
    initial_equity: the capital before the first bar (gives the first bar a return).
    Keys: total_return, total_pnl, cagr, volatility, sharpe, sortino, max_drawdown (<= 0),
    max_drawdown_duration_bars, max_drawdown_duration_days, calmar, win_rate, profit_factor,
    n_trades, exposure, turnover, deflated_sharpe, n_bars, periods_per_year.
    """
    if not isinstance(equity, pd.Series):
        raise TypeError(f"equity must be a pandas Series, got {type(equity).__name__}")
    values = equity.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"equity is not finite at {equity.index[int(np.argmax(bad))]} (a NaN/inf equity is a bug upstream)"
        )
    is_time = isinstance(equity.index, pd.DatetimeIndex)
    if periods_per_year is None:
        if not is_time:
            raise ValueError("periods_per_year is required when equity is not indexed by timestamps")
        periods_per_year = infer_periods_per_year(equity.index)
    ppy = float(periods_per_year)
    rf = (1.0 + risk_free) ** (1.0 / ppy) - 1.0

    rets = simple_returns(values, initial_equity)
    n_rets = rets.size
    start = float(initial_equity) if initial_equity is not None else (values[0] if values.size else _NAN)
    end = values[-1] if values.size else _NAN
    total_return = _finite(end / start - 1.0) if values.size and start != 0 else _NAN
    years = n_rets / ppy
    cagr = _NAN
    if years > 0 and math.isfinite(total_return) and total_return > -1.0:
        try:
            cagr = _finite((1.0 + total_return) ** (1.0 / years) - 1.0)
        except OverflowError:  # a short window annualized beyond float range: undefined, not inf
            cagr = _NAN
    volatility = _finite(np.std(rets, ddof=1) * math.sqrt(ppy)) if n_rets >= 2 else _NAN
    mdd = max_drawdown(values)
    dd_bars, dd_days = drawdown_durations(values, equity.index if is_time else None)
    calmar = _finite(cagr / abs(mdd)) if math.isfinite(cagr) and mdd < 0 else _NAN

    out: dict[str, float] = {
        "total_return": total_return,
        "total_pnl": _finite(end - start) if values.size else _NAN,
        "cagr": cagr,
        "volatility": volatility,
        "sharpe": sharpe_ratio(rets, ppy, rf),
        "sortino": sortino_ratio(rets, ppy, rf),
        "max_drawdown": mdd,
        "max_drawdown_duration_bars": float(dd_bars),
        "max_drawdown_duration_days": dd_days,
        "calmar": calmar,
        **_trade_stats(trades),
        "exposure": _exposure(positions_value),
        "turnover": _turnover(turnover_notional, values, years),
        "deflated_sharpe": deflated_sharpe_ratio(rets, n_trials=n_trials, risk_free_per_period=rf),
        "n_bars": float(values.size),
        "periods_per_year": ppy,
    }
    return {key: float(value) for key, value in out.items()}


def _trade_stats(trades: pd.DataFrame | None) -> dict[str, float]:
    if trades is None:
        return {"win_rate": _NAN, "profit_factor": _NAN, "n_trades": _NAN}
    if len(trades) and "pnl" not in trades:
        raise ValueError(f"trades needs a 'pnl' column, has {list(trades.columns)}")
    pnl = trades["pnl"].to_numpy(dtype=np.float64) if len(trades) else np.empty(0)
    pnl = pnl[np.isfinite(pnl)]
    if pnl.size == 0:
        return {"win_rate": _NAN, "profit_factor": _NAN, "n_trades": 0.0}
    gains = float(pnl[pnl > 0].sum())
    losses = float(-pnl[pnl < 0].sum())
    return {
        "win_rate": float(np.mean(pnl > 0)),
        "profit_factor": _finite(gains / losses) if losses > 0 else _NAN,
        "n_trades": float(pnl.size),
    }


def _exposure(positions_value: pd.Series | pd.DataFrame | None) -> float:
    if positions_value is None or len(positions_value) == 0:
        return _NAN
    held = np.abs(np.nan_to_num(np.asarray(positions_value, dtype=np.float64))) > 0
    if held.ndim == 2:
        held = held.any(axis=1)
    return float(np.mean(held))


def _turnover(notional: float | pd.Series | None, equity: np.ndarray, years: float) -> float:
    if notional is None or equity.size == 0 or not years > 0:
        return _NAN
    total = float(np.nansum(np.abs(np.asarray(notional, dtype=np.float64))))
    mean_equity = float(np.mean(equity))
    if not mean_equity > 0:
        return _NAN
    return _finite(total / mean_equity / years)


def metrics_to_json(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """Metrics for strict JSON (API, cache): nan -> None."""
    return {key: (float(v) if math.isfinite(v) else None) for key, v in metrics.items()}
