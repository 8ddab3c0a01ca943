"""An agent that rewrites its context, its mirror broker and the engine's modules still gets its
true results: the reported accounting is the parent's, recomputed from the decisions and the
parent's own prices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from farm_dagster.engine.costs import BacktestSettings, CostModel
from farm_dagster.engine.runner import run_backtest
from farm_dagster.market_data.synthetic import synthetic_panel
from farm_dagster.metrics import compute_metrics

SCHEDULE = """\
from farm_dagster.sdk import Agent, buy, sell, target_percent

PLAN = {3: ("buy", 0, 40), 9: ("pct", 1, 0.3), 15: ("sell", 0, 25), 24: ("pct", 1, 0.0), 30: ("pct", 0, 0.5)}


class Scheduled(Agent):
    def on_bar(self, ctx):
        self.tamper(ctx)
        step = PLAN.get(ctx.bar_index)
        if step is None:
            return None
        kind, i, size = step
        symbol = ctx.symbols[i]
        if kind == "buy":
            return buy(symbol, size, confidence=0.7)
        if kind == "sell":
            return sell(symbol, size, confidence=0.6)
        return target_percent(symbol, size, confidence=0.5)

    def tamper(self, ctx):
        pass
"""

TAMPER = SCHEDULE.replace(
    """    def tamper(self, ctx):
        pass
""",
    """    def tamper(self, ctx):
        attempts = []

        def attempt(fn):
            try:
                fn()
                attempts.append(True)
            except BaseException:  # noqa: BLE001 - a refused attempt is fine too
                attempts.append(False)

        broker = ctx._broker

        def rewrite_mirror():
            broker.cash = 1e12
            broker.equity = 1e12
            broker.positions[:] = broker.positions + 1000

        def patch_broker_class():
            import farm_dagster.engine.broker as broker_module

            def free_money(self, *args, **kwargs):
                self.cash += 1e9

            broker_module.Broker._execute = free_money
            broker_module.Broker.on_bar = free_money

        def patch_context():
            type(ctx).equity = property(lambda self: 1e12)
            type(ctx).cash = property(lambda self: 1e12)

        def patch_protocol():
            import farm_dagster.engine.protocol as protocol

            original = protocol.encode_decisions
            protocol.encode_decisions = lambda equity, body, plain=False: original(1e12, body, plain)

        def patch_runner_and_metrics():
            import farm_dagster.engine.runner as runner

            runner._metrics = lambda *args, **kwargs: {"sharpe": 99.0, "total_return": 99.0}
            runner._Run.apply = lambda *args, **kwargs: None

        def patch_history():
            ctx._history.data[3, : ctx._history.n] *= 2.0

        for fn in (rewrite_mirror, patch_broker_class, patch_context, patch_protocol, patch_runner_and_metrics,
                   patch_history):
            attempt(fn)
        self.attempts = attempts
""",
)

SETTINGS = BacktestSettings(initial_cash=50_000, costs=CostModel(commission_per_share=0.005, slippage_bps=2))


@pytest.fixture(scope="module")
def runs():
    panel = synthetic_panel(2, 60, seed=9)
    clean = run_backtest(SCHEDULE, panel, SETTINGS, agent_id="clean", run_id="t", prevalidate=False)
    tampered = run_backtest(TAMPER, panel, SETTINGS, agent_id="tamper", run_id="t", prevalidate=False)
    return panel, clean, tampered


def test_tampering_changes_nothing_reported(runs) -> None:
    _, clean, tampered = runs
    assert clean.status == tampered.status == "completed", (clean.error, tampered.error)
    assert len(tampered.fills) == 5
    pd.testing.assert_frame_equal(tampered.equity, clean.equity, check_exact=True)
    pd.testing.assert_frame_equal(tampered.fills, clean.fills, check_exact=True)
    pd.testing.assert_frame_equal(tampered.trades, clean.trades, check_exact=True)
    assert tampered.metrics == clean.metrics
    assert tampered.metrics["sharpe"] != 99.0 and tampered.metrics["total_return"] != 99.0


def test_tampering_is_noticed(runs) -> None:
    _, clean, tampered = runs
    assert not clean.tamper_suspected
    assert tampered.tamper_suspected
    assert tampered.info["tamper_bars"][0] == 0  # caught on the very first bar


def test_reported_metrics_equal_a_clean_recompute_from_fills_and_trusted_prices(runs) -> None:
    panel, _, tampered = runs
    shares = np.zeros(panel.n_symbols)
    cash = SETTINGS.initial_cash
    fills = tampered.fills.groupby("timestamp")
    equity = []
    for t, ts in enumerate(tampered.equity.index):
        if ts in fills.groups:
            for fill in fills.get_group(ts).itertuples():
                sign = 1.0 if fill.side == "BUY" else -1.0
                shares[panel.symbols.index(fill.symbol)] += sign * fill.quantity
                cash -= sign * fill.quantity * fill.price + fill.commission
                assert panel.low[t, panel.symbols.index(fill.symbol)] <= fill.price
                assert fill.price <= panel.high[t, panel.symbols.index(fill.symbol)]
        equity.append(cash + float(shares @ panel.close[t]))
    recomputed = pd.Series(equity, index=tampered.equity.index)
    np.testing.assert_allclose(tampered.equity["equity"], recomputed, rtol=1e-12)
    closed = tampered.trades[tampered.trades["status"] == "closed"]
    notional = float((tampered.fills["quantity"] * tampered.fills["price"]).sum())
    expected = compute_metrics(
        recomputed,
        closed,
        positions_value=tampered.equity["positions_value"],
        turnover_notional=notional,
        initial_equity=SETTINGS.initial_cash,
    )
    assert tampered.metrics.keys() == expected.keys()
    for key, value in expected.items():
        assert tampered.metrics[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
