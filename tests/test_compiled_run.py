"""A run booked by the compiled book gives the Python broker's run, every frame bit for bit.

``run_backtest(..., book="compiled")`` books in batches and fills in afterwards what depended on
the book at decision time (cash and equity of a row, a TARGET's implied trade, a trailing stop's
starting level, the tamper check); the event texts come from the book's columns. Every example
and the runner tests' order-type agents (brackets, expiries, trailing stops, rejected decisions,
a crash halfway) must give the same equity, positions, fills, trades, FMEL rows and metrics.
"""

from __future__ import annotations

import pandas as pd
import pytest

from farm_dagster import PROJECT_ROOT
from farm_dagster.engine.costs import BacktestSettings, CostModel
from farm_dagster.engine.runner import run_backtest
from farm_dagster.market_data.synthetic import synthetic_panel
from tests.test_engine_runner import (
    BRACKET_AGENT,
    CRASHES,
    INVALID,
    TRAILING_AGENT,
    TRAILING_LIMIT_AGENT,
    UPDATES_AGENT,
)

EXAMPLES = sorted(p.name for p in (PROJECT_ROOT / "examples").glob("*.py"))
AGENTS = {
    "bracket": BRACKET_AGENT,
    "updates": UPDATES_AGENT.replace(
        "class Watcher(Agent):", "class Watcher(Agent):\n    params = {'expiry': 0}"
    ),
    "trailing": TRAILING_AGENT,
    "trailing_limit": TRAILING_LIMIT_AGENT,
    "crashes": CRASHES,
    "invalid": INVALID,
}
COSTLY = BacktestSettings(
    initial_cash=50_000.0,
    costs=CostModel(commission_per_share=0.01, commission_pct=0.0005, slippage_bps=3.0),
    allow_short=True,
    borrow_rate_annual=0.04,
)


def _both(code: str, filename: str, settings: BacktestSettings, n_symbols: int = 4, n_bars: int = 260):
    panel = synthetic_panel(n_symbols, n_bars, seed=11)
    return [
        run_backtest(code, panel, settings, agent_id="a", run_id="r", filename=filename, book=book)
        for book in ("python", "compiled")
    ]


def _assert_same(python, compiled) -> None:
    assert compiled.info["book"] == "compiled" and python.info["book"] == "python"
    assert (compiled.status, compiled.error, compiled.tamper_suspected) == (
        python.status,
        python.error,
        python.tamper_suspected,
    )
    for name in ("equity", "positions", "fills", "trades", "decisions"):
        pd.testing.assert_frame_equal(
            getattr(compiled, name), getattr(python, name), check_exact=True, obj=name
        )
    assert compiled.metrics.keys() == python.metrics.keys()
    for key, value in python.metrics.items():  # NaN metrics (no closed trade yet) compare as equal
        assert compiled.metrics[key] == value or (
            value != value and compiled.metrics[key] != compiled.metrics[key]
        ), key
    assert compiled.info["borrow_paid"] == python.info["borrow_paid"]


@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.parametrize("settings", [BacktestSettings(), COSTLY], ids=["plain", "costs-short-borrow"])
def test_every_example_books_the_same_in_both_books(example: str, settings: BacktestSettings) -> None:
    python, compiled = _both((PROJECT_ROOT / "examples" / example).read_text(), example, settings)
    assert python.status == "completed", python.error
    assert len(python.fills) > 0  # something was booked: the comparison compares something
    _assert_same(python, compiled)


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_order_types_rejections_and_a_crash_book_the_same_in_both_books(name: str) -> None:
    python, compiled = _both(AGENTS[name], f"{name}.py", COSTLY, n_symbols=2, n_bars=120)
    assert len(python.decisions) > 0
    _assert_same(python, compiled)


def test_an_unknown_book_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="auto, python, compiled"):
        run_backtest("", synthetic_panel(1, 5), BacktestSettings(), agent_id="a", run_id="r", book="rust")


def test_auto_books_large_runs_compiled_and_small_ones_with_the_python_broker(monkeypatch) -> None:
    from farm_dagster.engine import runner

    code = (PROJECT_ROOT / "examples" / "buy_and_hold.py").read_text()
    panel = synthetic_panel(3, 40, seed=5)  # 120 symbol-bars
    small = run_backtest(code, panel, BacktestSettings(), agent_id="a", run_id="r")
    monkeypatch.setattr(runner, "AUTO_COMPILED_SYMBOL_BARS", 120)
    large = run_backtest(code, panel, BacktestSettings(), agent_id="a", run_id="r")
    assert (small.info["book"], large.info["book"]) == ("python", "compiled")
    _assert_same(small, large)
