"""The engine's accounting and metrics against vectorbt, for every native example agent, on real data.

Each example runs through the real engine (sandboxed child, trusted parent broker). Its fills are
then replayed by vectorbt's ``Portfolio.from_orders`` and both must agree bar by bar.

Conventions of the replay:
* one vectorbt order per (fill bar, symbol): size = signed shares (buys + / sells -), price = the
  engine's fill price (slippage already inside it), ``fixed_fees`` = the engine's commission;
  fills of one symbol on one bar are merged (same side: summed shares, volume-weighted price);
* one cash pool (``group_by=True, cash_sharing=True``), ``call_seq='auto'`` (sells before buys,
  as the engine does), ``allow_partial=False`` + ``raise_reject=True``: vectorbt must accept every
  fill exactly as the engine made it;
* vectorbt values the portfolio at the close, forward-filling NaN closes (``fillna_close``),
  which is the engine's "last real close" rule on bars where a symbol does not trade (the real
  universe has such bars: FB before 2012, GOOG before 2004, gaps in close-only series);
* ``freq='1D'`` with ``year_freq='252 days'``: the 252 bars a year ``compute_metrics`` infers
  for daily data; returns start from ``init_cash`` (``initial_equity`` on our side), ddof=1;
* costs are on (per-share + percent commission with a minimum, slippage in bps) so that fees are
  part of what is checked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from farm_dagster import PROJECT_ROOT
from farm_dagster.engine.costs import BacktestSettings, CostModel
from farm_dagster.engine.result import BacktestResult
from farm_dagster.engine.runner import run_backtest
from farm_dagster.market_data.panel import BarPanel
from farm_dagster.market_data.sources import load_source
from tests.native_examples import NATIVE_EXAMPLES as EXAMPLES

vbt = pytest.importorskip("vectorbt")

pytestmark = pytest.mark.slow

CASH = 100_000.0
SETTINGS = BacktestSettings(
    initial_cash=CASH,
    costs=CostModel(commission_per_share=0.005, commission_pct=0.0005, min_commission=1.0, slippage_bps=5.0),
)
RTOL = 1e-9


@pytest.fixture(scope="module")
def universes() -> dict[str, BarPanel]:
    """Real OHLCV stocks with missing bars, and real adjusted close-only stocks."""
    stocks = load_source("bokeh_stocks")
    adjusted = load_source("skfolio_sp500")
    adjusted = adjusted[adjusted["timestamp"] >= pd.Timestamp("2012-01-01", tz="UTC")]
    chosen = sorted(adjusted["symbol"].unique())[:8]
    return {
        "bokeh_ohlcv": BarPanel.from_long(stocks, ["AAPL", "FB", "GOOG", "IBM", "MSFT"]),
        "skfolio_close_only": BarPanel.from_long(adjusted[adjusted["symbol"].isin(chosen)], chosen),
    }


def replay_orders(result: BacktestResult, panel: BarPanel) -> dict[str, pd.DataFrame]:
    """The engine's fills as vectorbt order arrays (time x symbol): size, price, fixed_fees."""
    index, columns = panel.index, list(panel.symbols)
    size = pd.DataFrame(np.nan, index=index, columns=columns)
    price = size.copy()
    fees = pd.DataFrame(0.0, index=index, columns=columns)
    fills = result.fills.assign(
        signed=np.where(result.fills["side"] == "BUY", 1.0, -1.0) * result.fills["quantity"]
    )
    for (ts, symbol), group in fills.groupby(["timestamp", "symbol"]):
        assert (np.sign(group["signed"]) == np.sign(group["signed"].iloc[0])).all(), (
            f"{symbol} bought and sold on {ts}: a single vectorbt order cannot replay that"
        )
        shares = float(group["signed"].sum())
        size.at[ts, symbol] = shares
        price.at[ts, symbol] = float((group["quantity"] * group["price"]).sum() / group["quantity"].sum())
        fees.at[ts, symbol] = float(group["commission"].sum())
    return {"size": size, "price": price, "fixed_fees": fees}


@pytest.mark.parametrize("universe", ["bokeh_ohlcv", "skfolio_close_only"])
@pytest.mark.parametrize("example", EXAMPLES)
def test_engine_matches_vectorbt(example: str, universe: str, universes: dict[str, BarPanel]) -> None:
    panel = universes[universe]
    code = (PROJECT_ROOT / "examples" / example).read_text()
    result = run_backtest(
        code, panel, SETTINGS, agent_id=example, run_id=f"xcheck-{universe}", filename=example
    )
    assert result.status == "completed", result.error
    assert len(result.fills) > 0, "the example never traded: nothing would be checked"
    if universe == "bokeh_ohlcv":
        assert np.isnan(panel.close).any(), "the universe is meant to include bars without trading"

    orders = replay_orders(result, panel)
    close = panel.frame("close")
    pf = vbt.Portfolio.from_orders(
        close,
        size=orders["size"],
        size_type="amount",
        price=orders["price"],
        fixed_fees=orders["fixed_fees"],
        init_cash=CASH,
        cash_sharing=True,
        group_by=True,
        call_seq="auto",
        allow_partial=False,
        raise_reject=True,
        fillna_close=True,
        freq="1D",
    )
    assert int(pf.orders.count()) == int(orders["size"].notna().sum().sum())

    engine_equity = result.equity["equity"]
    np.testing.assert_allclose(pf.value().to_numpy(), engine_equity.to_numpy(), rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(pf.cash().to_numpy(), result.equity["cash"].to_numpy(), rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(pf.assets().to_numpy(), result.positions.to_numpy(), rtol=0, atol=1e-9)

    returns = pf.returns().vbt.returns(freq="1D", year_freq="252 days")
    metrics = result.metrics
    assert metrics["periods_per_year"] == 252
    assert metrics["total_return"] == pytest.approx(pf.total_return(), rel=RTOL, abs=1e-12)
    assert metrics["max_drawdown"] == pytest.approx(pf.max_drawdown(), rel=RTOL, abs=1e-12)
    assert metrics["sharpe"] == pytest.approx(returns.sharpe_ratio(), rel=1e-8)
    assert metrics["sortino"] == pytest.approx(returns.sortino_ratio(), rel=1e-8)
    assert metrics["volatility"] == pytest.approx(returns.annualized_volatility(), rel=1e-8)
    assert metrics["cagr"] == pytest.approx(returns.annualized(), rel=1e-8)
