"""Same code + data + settings -> the same results bit for bit, under the same result_id."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from farm_dagster import PROJECT_ROOT
from farm_dagster.engine.costs import BacktestSettings, CostModel
from farm_dagster.engine.identity import code_hash, result_id, settings_hash
from farm_dagster.engine.runner import run_backtest
from farm_dagster.market_data.panel import BarPanel
from farm_dagster.market_data.synthetic import synthetic_panel

CODE = (PROJECT_ROOT / "examples" / "momentum_rotation.py").read_text()
SETTINGS = BacktestSettings(
    initial_cash=25_000,
    costs=CostModel(commission_pct=0.0005, slippage_range_fraction=0.05),
    params={"lookback": 20, "top_n": 2},
)


def _run(panel: BarPanel, code: str = CODE, settings: BacktestSettings = SETTINGS):
    return run_backtest(
        code, panel, settings, agent_id="det", run_id="same-run", filename="momentum_rotation.py"
    )


def test_two_runs_are_identical_bit_for_bit() -> None:
    panel = synthetic_panel(5, 250, seed=21)
    first, second = _run(panel), _run(panel)
    assert first.status == second.status == "completed"
    assert len(first.fills) > 0
    assert first.result_id == second.result_id
    for name in ("equity", "positions", "fills", "trades", "decisions"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name), check_exact=True)
    assert first.metrics == second.metrics or all(
        a == b or (np.isnan(a) and np.isnan(b))
        for a, b in zip(first.metrics.values(), second.metrics.values(), strict=True)
    )


def test_identity_follows_code_data_and_settings() -> None:
    panel = synthetic_panel(5, 60, seed=21)
    base = _run(panel)
    assert base.code_hash == code_hash(CODE) and base.settings_hash == settings_hash(SETTINGS)
    assert base.result_id == result_id(base.code_hash, panel.data_version, base.settings_hash)

    close = panel.close.copy()
    close[30, 2] *= 1.0001
    changed = dataclasses.replace(panel, close=close)
    assert _run(changed).result_id != base.result_id  # one price

    other_params = dataclasses.replace(SETTINGS, params={"lookback": 21, "top_n": 2})
    assert settings_hash(other_params) != base.settings_hash
    other_costs = dataclasses.replace(
        SETTINGS, costs=CostModel(commission_pct=0.0006, slippage_range_fraction=0.05)
    )
    assert settings_hash(other_costs) != base.settings_hash
    assert code_hash(CODE + "\n") != base.code_hash
    assert settings_hash(BacktestSettings()) == settings_hash(BacktestSettings())
