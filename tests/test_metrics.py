"""farm_dagster.metrics against hand computations, properties and independent implementations.

Independent references: the standard library (statistics), scipy.stats, a brute-force loop for
drawdown spells, Monte Carlo for the expected maximum Sharpe, and vectorbt's returns accessor
(freq='1D', year_freq='252 days' so that both annualize by 252).
"""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from farm_dagster.metrics import (
    compute_metrics,
    deflated_sharpe_ratio,
    drawdown_durations,
    expected_max_sharpe,
    infer_periods_per_year,
    max_drawdown,
    metrics_to_json,
    probabilistic_sharpe_ratio,
    sharpe_ratio,
    simple_returns,
    sortino_ratio,
)


def _daily(values: list[float] | np.ndarray, start: str = "2021-01-04") -> pd.Series:
    idx = pd.bdate_range(start, periods=len(values), tz="UTC")
    return pd.Series(np.asarray(values, dtype=float), index=idx, name="equity")


def _random_equity(seed: int, n: int = 500, drift: float = 0.0004, vol: float = 0.012) -> pd.Series:
    rng = np.random.default_rng(seed)
    rets = rng.standard_t(df=4, size=n) * vol / math.sqrt(2.0) + drift
    return _daily(100_000.0 * np.cumprod(1.0 + rets))


# ---------------------------------------------------------------- hand-computed cases


def test_small_curve_by_hand() -> None:
    equity = _daily([100.0, 110.0, 99.0, 121.0])
    m = compute_metrics(equity, periods_per_year=252)
    rets = [110 / 100 - 1, 99 / 110 - 1, 121 / 99 - 1]
    mean, sd = statistics.mean(rets), statistics.stdev(rets)
    assert m["total_return"] == pytest.approx(121 / 100 - 1)
    assert m["total_pnl"] == pytest.approx(21.0)
    assert m["sharpe"] == pytest.approx(mean / sd * math.sqrt(252))
    assert m["volatility"] == pytest.approx(sd * math.sqrt(252))
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in rets) / len(rets))
    assert m["sortino"] == pytest.approx(mean / downside * math.sqrt(252))
    assert m["max_drawdown"] == pytest.approx(99 / 110 - 1)
    assert m["max_drawdown_duration_bars"] == 2  # peak at bar 1, regained at bar 3
    gap = (equity.index[3] - equity.index[1]).total_seconds() / 86400
    assert m["max_drawdown_duration_days"] == pytest.approx(gap)
    cagr = (121 / 100) ** (252 / 3) - 1
    assert m["cagr"] == pytest.approx(cagr)
    assert m["calmar"] == pytest.approx(cagr / abs(99 / 110 - 1))


def test_initial_equity_adds_a_first_return() -> None:
    equity = _daily([105.0, 100.0, 120.0])
    with_start = compute_metrics(equity, periods_per_year=252, initial_equity=100.0)
    without = compute_metrics(equity, periods_per_year=252)
    assert with_start["total_return"] == pytest.approx(0.2)
    assert without["total_return"] == pytest.approx(120 / 105 - 1)
    rets = [0.05, 100 / 105 - 1, 0.2]
    assert with_start["sharpe"] == pytest.approx(
        statistics.mean(rets) / statistics.stdev(rets) * math.sqrt(252)
    )
    assert list(simple_returns(equity, 100.0)) == pytest.approx(rets)


def test_unrecovered_drawdown_runs_to_last_bar() -> None:
    equity = _daily([100.0, 120.0, 110.0, 130.0, 90.0, 100.0, 95.0])
    bars, days = drawdown_durations(equity.to_numpy(), equity.index)
    assert bars == 3  # peak 130 at bar 3, still underwater at bar 6
    assert days == pytest.approx((equity.index[6] - equity.index[3]).total_seconds() / 86400)
    assert max_drawdown(equity) == pytest.approx(90 / 130 - 1)


def test_trade_statistics() -> None:
    pnl = [120.0, -40.0, 0.0, 60.0, -20.0]
    m = compute_metrics(_random_equity(1, 50), trades=pd.DataFrame({"pnl": pnl}))
    assert m["n_trades"] == len(pnl)
    assert m["win_rate"] == pytest.approx(sum(p > 0 for p in pnl) / len(pnl))
    assert m["profit_factor"] == pytest.approx(sum(p for p in pnl if p > 0) / -sum(p for p in pnl if p < 0))
    only_wins = compute_metrics(_random_equity(1, 50), trades=pd.DataFrame({"pnl": [1.0, 2.0]}))
    assert math.isnan(only_wins["profit_factor"])  # undefined, not inf
    none = compute_metrics(_random_equity(1, 50), trades=pd.DataFrame({"pnl": []}))
    assert none["n_trades"] == 0 and math.isnan(none["win_rate"])


def test_exposure_and_turnover() -> None:
    equity = _daily([100.0, 101.0, 102.0, 100.0, 100.0, 103.0, 104.0, 104.0])
    held = pd.Series([0.0, 50.0, 60.0, 0.0, 0.0, 80.0, -10.0, 0.0], index=equity.index)
    m = compute_metrics(equity, positions_value=held, turnover_notional=404.0, periods_per_year=252)
    assert m["exposure"] == pytest.approx(4 / 8)
    years = (len(equity) - 1) / 252
    assert m["turnover"] == pytest.approx(404.0 / equity.mean() / years)
    per_bar = pd.Series([0, 50, 10, 60, 0, 80, 90, 10], index=equity.index, dtype=float)
    assert compute_metrics(equity, turnover_notional=per_bar, periods_per_year=252)[
        "turnover"
    ] == pytest.approx(per_bar.sum() / equity.mean() / years)
    shares = pd.DataFrame({"A": [0, 1, 1, 0, 0, 0, 0, 0], "B": [0, 0, 3, 3, 0, 0, 0, 2]}, index=equity.index)
    assert compute_metrics(equity, positions_value=shares)["exposure"] == pytest.approx(4 / 8)


# ---------------------------------------------------------------- properties


def test_sharpe_is_scale_invariant() -> None:
    rets = simple_returns(_random_equity(2))
    base = sharpe_ratio(rets, 252)
    for scale in (0.1, 3.0, 250.0):
        assert sharpe_ratio(rets * scale, 252) == pytest.approx(base, rel=1e-12)
    assert sharpe_ratio(-rets, 252) == pytest.approx(-base, rel=1e-12)
    equity = _random_equity(3)
    a, b = compute_metrics(equity), compute_metrics(equity * 7.5)
    for key in ("sharpe", "sortino", "total_return", "max_drawdown", "cagr", "calmar", "deflated_sharpe"):
        assert b[key] == pytest.approx(a[key], rel=1e-10), key


def test_monotone_curve_has_no_drawdown() -> None:
    equity = _daily(np.linspace(100.0, 180.0, 60))
    m = compute_metrics(equity)
    assert m["max_drawdown"] == 0.0
    assert m["max_drawdown_duration_bars"] == 0
    assert m["max_drawdown_duration_days"] == 0.0
    assert math.isnan(m["calmar"])  # no drawdown: undefined, not inf


def test_zero_variance_gives_nan_not_inf() -> None:
    m = compute_metrics(_daily([100.0] * 30))
    for key in ("sharpe", "sortino", "deflated_sharpe", "calmar"):
        assert math.isnan(m[key]), key
    assert m["total_return"] == 0.0 and m["volatility"] == 0.0
    assert all(isinstance(v, float) and not math.isinf(v) for v in m.values())
    json.dumps(metrics_to_json(m), allow_nan=False)  # strict JSON works


def test_metrics_are_plain_json_floats() -> None:
    m = compute_metrics(_random_equity(4), trades=pd.DataFrame({"pnl": [1.0, -2.0]}), n_trials=10)
    assert all(type(v) is float for v in m.values())
    decoded = json.loads(json.dumps(metrics_to_json(m), allow_nan=False))
    assert decoded["sharpe"] == pytest.approx(m["sharpe"])


def test_deflated_sharpe_decreases_with_trials() -> None:
    rets = simple_returns(_random_equity(5, n=750, drift=0.0008))
    values = [deflated_sharpe_ratio(rets, n_trials=n) for n in (1, 2, 5, 10, 100, 1000)]
    assert all(0.0 < v < 1.0 for v in values)
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    equity = _random_equity(5, n=750, drift=0.0008)
    assert (
        compute_metrics(equity, n_trials=50)["deflated_sharpe"] < compute_metrics(equity)["deflated_sharpe"]
    )


def test_expected_max_sharpe_matches_monte_carlo() -> None:
    rng = np.random.default_rng(6)
    for n_trials, var in ((10, 1.0), (100, 0.25)):
        draws = rng.normal(0.0, math.sqrt(var), size=(20_000, n_trials)).max(axis=1)
        # The approximation is a few percent high/low of the exact E[max]; 3 % covers it, 1 % would not hold.
        assert expected_max_sharpe(n_trials, var) == pytest.approx(draws.mean(), rel=0.03)
    assert expected_max_sharpe(1, 4.0, mean_trials=0.3) == 0.3
    assert expected_max_sharpe(20, 0.5) < expected_max_sharpe(21, 0.5)
    with pytest.raises(ValueError):
        expected_max_sharpe(0, 1.0)


def test_errors_are_explicit() -> None:
    equity = _daily([100.0, np.nan, 101.0])
    with pytest.raises(ValueError, match="not finite at 2021-01-05"):
        compute_metrics(equity)
    with pytest.raises(ValueError, match="periods_per_year"):
        compute_metrics(pd.Series([1.0, 2.0, 3.0]))
    assert compute_metrics(pd.Series([1.0, 2.0, 3.0]), periods_per_year=12)["periods_per_year"] == 12
    with pytest.raises(ValueError, match="pnl"):
        compute_metrics(_daily([1.0, 2.0]), trades=pd.DataFrame({"profit": [1.0]}))


@pytest.mark.parametrize(
    ("freq", "weekends", "expected"),
    [
        ("1D", False, 252.0),
        ("1D", True, 365.0),
        ("1min", False, 252.0 * 390),
        ("5min", False, 252.0 * 78),
        ("1h", True, 365.0 * 24),
        ("7D", True, 52.0),
    ],
)
def test_infer_periods_per_year(freq: str, weekends: bool, expected: float) -> None:
    if freq == "1D" and not weekends:
        index = pd.bdate_range("2020-01-01", periods=300, tz="UTC")
    elif freq in ("1min", "5min"):
        day = pd.date_range("2020-01-06 14:30", "2020-01-06 20:59", freq=freq, tz="UTC")
        index = day.append([day + pd.Timedelta(days=d) for d in (1, 2, 3, 4)])
    else:
        index = pd.date_range("2020-01-01", periods=300, freq=freq, tz="UTC")
    assert infer_periods_per_year(index) == pytest.approx(expected)


# ---------------------------------------------------------------- independent implementations


def test_drawdown_duration_matches_brute_force() -> None:
    for seed in range(5):
        equity = _random_equity(10 + seed, n=300, drift=0.0)
        values = equity.to_numpy()
        longest, peak_at, peak = 0, 0, values[0]
        for t, v in enumerate(values):
            if v >= peak:
                if t > peak_at + 1 or (t == peak_at + 1 and values[t - 1] < peak):
                    longest = max(longest, t - peak_at)
                peak, peak_at = v, t
            else:
                longest = max(longest, t - peak_at)
        assert drawdown_durations(values)[0] == longest
        naive_mdd = min(v / max(values[: t + 1]) - 1 for t, v in enumerate(values))
        assert max_drawdown(values) == pytest.approx(naive_mdd)


def test_psr_and_dsr_against_scipy_moments() -> None:
    rets = simple_returns(_random_equity(20, n=600, drift=0.0006))
    sr = statistics.mean(rets) / statistics.stdev(rets)
    skew = stats.skew(rets)  # population moments (bias=True), as documented
    kurt = stats.kurtosis(rets, fisher=False)
    expected = stats.norm.cdf(
        sr * math.sqrt(len(rets) - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    )
    assert deflated_sharpe_ratio(rets, n_trials=1) == pytest.approx(expected, rel=1e-10)
    assert probabilistic_sharpe_ratio(sr, 0.0, len(rets), skew, kurt) == pytest.approx(expected, rel=1e-10)
    # A fat left tail (negative skew, high kurtosis) lowers the confidence in the same Sharpe.
    assert probabilistic_sharpe_ratio(sr, 0.0, len(rets), -2.0, 12.0) < expected


def test_dsr_against_vectorbt_formula() -> None:
    from vectorbt.returns import metrics as vbt_metrics

    rets = simple_returns(_random_equity(21, n=800, drift=0.0007))
    sr = statistics.mean(rets) / statistics.stdev(rets)
    for n_trials, var_trials in ((2, 0.002), (25, 0.0005), (300, 0.001)):
        # vectorbt's accessor passes scipy's *excess* kurtosis into a raw-kurtosis formula; its
        # formula function takes the moments explicitly, so feed it the raw kurtosis.
        reference = vbt_metrics.deflated_sharpe_ratio(
            est_sharpe=np.array([sr]),
            var_sharpe=var_trials,
            nb_trials=n_trials,
            backtest_horizon=len(rets),
            skew=np.array([stats.skew(rets)]),
            kurtosis=np.array([stats.kurtosis(rets, fisher=False)]),
        )[0]
        ours = deflated_sharpe_ratio(rets, n_trials=n_trials, var_trials=var_trials)
        assert ours == pytest.approx(reference, rel=1e-9)


def test_against_vectorbt_returns_accessor() -> None:
    import vectorbt as vbt  # noqa: F401  (registers the .vbt accessor)

    for seed in range(3):
        equity = _random_equity(30 + seed, n=400)
        m = compute_metrics(equity, initial_equity=100_000.0)
        rets = pd.Series(simple_returns(equity, 100_000.0), index=equity.index)
        acc = rets.vbt.returns(freq="1D", year_freq="252 days")
        assert m["sharpe"] == pytest.approx(acc.sharpe_ratio(), rel=1e-10)
        assert m["sortino"] == pytest.approx(acc.sortino_ratio(), rel=1e-10)
        assert m["volatility"] == pytest.approx(acc.annualized_volatility(), rel=1e-10)
        assert m["cagr"] == pytest.approx(acc.annualized(), rel=1e-10)
        assert m["total_return"] == pytest.approx(acc.total(), rel=1e-10)
        assert m["calmar"] == pytest.approx(acc.calmar_ratio(), rel=1e-10)
        # vectorbt's drawdown starts from the first bar's value; ours from the curve itself (same here).
        assert m["max_drawdown"] == pytest.approx(acc.max_drawdown(), rel=1e-10)
    rf = 0.03
    m = compute_metrics(equity, initial_equity=100_000.0, risk_free=rf)
    assert m["sharpe"] == pytest.approx(acc.sharpe_ratio(risk_free=(1 + rf) ** (1 / 252) - 1), rel=1e-10)


def test_sortino_uses_all_bars_in_downside_deviation() -> None:
    rets = np.array([0.02, -0.01, 0.03, -0.02, 0.01])
    downside = math.sqrt((0.01**2 + 0.02**2) / 5)
    assert sortino_ratio(rets, 252) == pytest.approx(rets.mean() / downside * math.sqrt(252))
