"""FMEL rows: one per decision, one HOLD row per silent bar, events attached, batched idempotent writes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from farm_dagster.engine.costs import BacktestSettings
from farm_dagster.engine.protocol import check_decision
from farm_dagster.engine.runner import run_backtest
from farm_dagster.fmel.rows import DecisionLog, LoggedDecision, events_of, positions_json, positions_texts
from farm_dagster.fmel.schema import FMEL_DECISIONS
from farm_dagster.fmel.writer import write_decisions
from farm_dagster.market_data.synthetic import synthetic_panel
from farm_dagster.resources.tables import TABLES

DAY = 86_400 * 10**9


def _log(symbols: tuple[str, ...] = ("AAA", "BBB"), run_id: str = "r1") -> DecisionLog:
    return DecisionLog(
        agent_id="ag",
        user_id="u1",
        run_id=run_id,
        mode="backtest",
        code_hash="c" * 64,
        data_version="dv",
        symbols=symbols,
    )


def test_rows_one_per_decision_and_one_hold_per_silent_bar() -> None:
    log = _log()
    index = {"AAA": 0, "BBB": 1}
    buy = check_decision(
        {
            "symbol": "AAA",
            "action": "BUY",
            "quantity": 5,
            "confidence": 0.8,
            "reasoning": "up",
            "inputs": {"z": 1.5},
        },
        index,
    )
    bad = check_decision({"symbol": "ZZZ", "action": "BUY", "quantity": 5}, index)
    log.add_bar(0, 0, cash=100.0, equity=100.0, positions="{}", data_read="{}")
    log.add_bar(
        1,
        DAY,
        cash=100.0,
        equity=100.0,
        positions="{}",
        data_read='{"*":{"fields":["close"],"lookback":3}}',
        decisions=[
            LoggedDecision("r1-0000001-000", buy, "BUY", 5.0, 10.0),
            LoggedDecision("r1-0000001-001", bad, "BUY", 5.0, None),
        ],
    )
    log.add_bar(2, 2 * DAY, cash=50.0, equity=101.0, positions='{"AAA":5.0}', data_read="{}")
    events = [
        ("r1-0000001-000", {"type": "submitted", "order_id": 1}),
        ("r1-0000001-000", {"type": "filled", "price": 10.0, "quantity": 5.0}),
        ("r1-0000001-001", {"type": "rejected", "reason": "unknown symbol 'ZZZ'"}),
    ]
    frame = log.frame(events)
    assert list(frame.columns) == FMEL_DECISIONS.column_names
    assert frame["decision_point"].tolist() == [0, 1, 1, 2]
    assert frame["action"].tolist() == ["HOLD", "BUY", "BUY", "HOLD"]
    assert frame["symbol"].tolist() == [None, "AAA", "ZZZ", None]  # a silent multi-symbol bar has no symbol
    assert frame["decision_id"].is_unique
    assert frame["timestamp"].tolist() == list(pd.to_datetime([0, DAY, DAY, 2 * DAY], utc=True))
    row = frame.iloc[1]
    assert (row.quantity, row.price, row.confidence, row.reasoning) == (5.0, 10.0, 0.8, "up")
    assert json.loads(row.inputs) == {"z": 1.5}
    assert json.loads(row.data_read) == {"*": {"fields": ["close"], "lookback": 3}}
    assert [e["type"] for e in json.loads(row.events)] == ["submitted", "filled"]
    assert json.loads(frame.iloc[2].events)[0]["type"] == "rejected"
    assert frame["events"].tolist()[::3] == ["[]", "[]"]  # the silent bars
    assert frame["events"].dtype == pd.StringDtype("pyarrow")  # one Arrow buffer, however built
    assert json.loads(frame.iloc[3].positions) == {"AAA": 5.0}
    assert (frame["mode"] == "backtest").all() and (frame["user_id"] == "u1").all()
    assert len(events_of(frame)) == 3


def test_single_symbol_hold_rows_name_the_symbol_and_mode_is_checked() -> None:
    log = _log(("AAA",))
    log.add_bar(0, 0, cash=1.0, equity=1.0, positions="{}", data_read="{}")
    assert log.frame()["symbol"].tolist() == ["AAA"]
    with pytest.raises(ValueError, match="mode"):
        DecisionLog(
            agent_id="a",
            user_id="u",
            run_id="r",
            mode="live",
            code_hash="",
            data_version="",
            symbols=("AAA",),
        )


def test_table_is_registered_partitioned_and_clustered() -> None:
    assert TABLES["fmel.trading_decisions"] is FMEL_DECISIONS
    assert FMEL_DECISIONS.partition_by == "timestamp"
    assert FMEL_DECISIONS.cluster_by == ("agent_id", "user_id")


TRADER = """\
from farm_dagster.sdk import Agent, buy, sell


class Flipper(Agent):
    def on_bar(self, ctx):
        s = ctx.symbols[0]
        ctx.sma(s, 3)
        if ctx.bar_index == 2:
            return buy(s, 10, confidence=0.6, reasoning="in", inputs={"sma3": ctx.sma(s, 3)})
        if ctx.bar_index == 6:
            return sell(s, 10, confidence=0.4, reasoning="out")
        return None
"""


def test_backtest_rows_carry_portfolio_reads_and_order_and_trade_events() -> None:
    panel = synthetic_panel(1, 12, seed=4)
    result = run_backtest(
        TRADER, panel, BacktestSettings(initial_cash=10_000), agent_id="flip", run_id="run-f", user_id="alice"
    )
    assert result.status == "completed"
    rows = result.decisions
    assert len(rows) == panel.n_bars  # one decision or HOLD per bar
    assert rows["action"].tolist().count("HOLD") == panel.n_bars - 2
    buy_row = rows[rows["action"] == "BUY"].iloc[0]
    sell_row = rows[rows["action"] == "SELL"].iloc[0]
    assert buy_row.decision_point == 2 and buy_row.price == panel.close[2, 0]
    assert json.loads(buy_row.data_read) == {panel.symbols[0]: {"fields": ["close"], "lookback": 3}}
    buy_events = json.loads(buy_row.events)
    assert [e["type"] for e in buy_events] == ["submitted", "filled", "trade_opened"]
    assert buy_events[1]["price"] == panel.open[3, 0] and buy_events[1]["quantity"] == 10
    sell_events = json.loads(sell_row.events)
    closed = next(e for e in sell_events if e["type"] == "trade_closed")
    assert closed["pnl"] == pytest.approx(10 * (panel.open[7, 0] - panel.open[3, 0]))
    assert closed["pnl"] == pytest.approx(result.trades["pnl"].iloc[0])
    after_fill = rows[rows["decision_point"] == 4].iloc[0]
    assert json.loads(after_fill.positions) == {panel.symbols[0]: 10.0}
    assert after_fill.cash == pytest.approx(10_000 - 10 * panel.open[3, 0])
    assert after_fill.equity == pytest.approx(after_fill.cash + 10 * panel.close[4, 0])
    assert (rows["user_id"] == "alice").all() and (rows["code_hash"] == result.code_hash).all()
    assert (rows["data_version"] == panel.data_version).all()


def test_writer_batches_and_replaces_a_runs_rows(warehouse) -> None:
    log = _log(run_id="run-w")
    for t in range(25):
        log.add_bar(t, t * DAY, cash=1.0, equity=1.0, positions="{}", data_read="{}")
    frame = log.frame()
    other = _log(run_id="run-x")
    other.add_bar(0, 0, cash=1.0, equity=1.0, positions="{}", data_read="{}")
    assert write_decisions(warehouse, other.frame()) == 1
    assert write_decisions(warehouse, frame, batch_rows=7) == 25
    assert write_decisions(warehouse, frame, batch_rows=10) == 25  # a re-run replaces, never duplicates
    stored = warehouse.read(FMEL_DECISIONS, where={"run_id": "run-w"})
    assert sorted(stored["decision_point"].tolist()) == list(range(25))
    assert len(warehouse.read(FMEL_DECISIONS, where={"run_id": "run-x"})) == 1


@pytest.mark.parametrize("render", ["python", "compiled"])
@pytest.mark.parametrize("seed", range(4))
def test_positions_texts_spell_every_row_as_positions_json_does(seed: int, render: str) -> None:
    """The run-wide renderers give, row by row, the text of the per-row one: whole and fractional
    books, -0.0 (not held), NaN, infinities, values past int64, repeated rows and odd symbols."""
    from farm_dagster.engine import book

    rows_texts = positions_texts if render == "python" else book.positions_texts
    rng = np.random.default_rng(seed)
    values = np.array(
        [0.0, -0.0, 1.0, 2.0, -3.0, 0.5, np.nan, np.inf, -np.inf, 1e19, -(2.0**63), 2.0**63, 7.0, 1.25e-7]
        + [2.0**63 - 1024, -(2.0**63) + 1024, 123456789012.0]
    )
    for trial in range(150):
        n_rows, n_cols = int(rng.integers(1, 40)), int(rng.integers(1, 7))
        matrix = rng.choice(values, size=(n_rows, n_cols))
        for r in range(1, n_rows):  # positions mostly carry over from one bar to the next
            if rng.random() < 0.6:
                matrix[r] = matrix[r - 1]
        if trial % 3 == 0:  # whole shares only: the usual book
            matrix = np.where(np.isfinite(matrix) & (np.abs(matrix) < 1e6), np.round(matrix), 0.0)
        symbols = tuple(f'Q{k}"\\é' if k % 2 else f"S{k}" for k in range(n_cols))
        with warnings.catch_warnings():  # positions_json's own cast of NaN/inf warns
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = [positions_json(symbols, row) for row in matrix]
        assert rows_texts(symbols, matrix) == expected


def test_compiled_positions_texts_spell_whole_books_and_leave_the_rest_to_python() -> None:
    """The compiled renderer spells a book of whole shares itself (only the rows that changed) and
    gives up, for the Python renderer, on the first held position that is not whole."""
    from farm_dagster.engine import book

    keys, key_at = book._text_table(['"A":', '"B":'])
    out = np.empty(256, dtype=np.uint8)
    starts, changed = np.empty(6, dtype=np.int64), np.empty(5, dtype=np.int64)

    def render(matrix: np.ndarray) -> int:
        pieces, piece_len = np.empty((2, 30), dtype=np.uint8), np.zeros(2, dtype=np.int64)
        return book._positions_rows(matrix, keys, key_at, pieces, piece_len, out, starts, changed)

    k = render(np.array([[0.0, 0.0], [3.0, -0.0], [3.0, 0.0], [3.0, -12.0], [0.0, -12.0]]))
    assert changed[:k].tolist() == [0, 1, 3, 4]  # row 2 equals row 1 (-0.0 == 0.0)
    assert out[: starts[k]].tobytes() == b'{}{"A":3}{"A":3,"B":-12}{"B":-12}'
    for odd in (0.5, np.nan, np.inf, -(2.0**63)):
        assert render(np.array([[1.0, odd]])) == -1


def test_a_column_built_on_a_worker_thread_raises_in_the_caller() -> None:
    """The frame renders its events and positions columns on worker threads: what fails there
    fails the frame call itself, with the worker's own error, and a later frame still builds."""
    log = _log()
    log.add_bar(0, 0, cash=1.0, equity=1.0, positions=None, data_read="{}")
    with pytest.raises(ValueError, match=r"pass frame\(positions=\.\.\.\)"):
        log.frame()  # positions deferred, and no matrix to render them from

    def broken_builder(rows: np.ndarray, n_rows: int, given: list[str | None]):  # noqa: ANN202
        def render() -> None:
            raise RuntimeError("renderer failed")

        return render

    matrix = np.array([[2.0, 0.0]])
    with pytest.raises(RuntimeError, match="renderer failed"):
        log.frame(broken_builder, positions=matrix)
    frame = log.frame(positions=matrix)
    assert json.loads(frame.iloc[0].positions) == {"AAA": 2}


def test_inputs_rendered_ahead_keep_their_text_once_the_mapping_is_dropped() -> None:
    """The runner renders a decision's inputs while it waits for the agent and drops the mapping
    then (one per decision of a long run): the frame still shows the text rendered from it."""
    log = _log()
    decision = check_decision(
        {"symbol": "AAA", "action": "BUY", "quantity": 1, "inputs": {"sma_slow": 9.5, "sma_fast": 10.25}},
        {"AAA": 0, "BBB": 1},
    )
    k = log.add_decision(0, 0, "r1-0000000-000", decision, "BUY", 1.0, 10.0)
    log.add_bar(0, 0, cash=1.0, equity=1.0, positions="{}", data_read="{}")
    log.render_inputs(k, decision)
    assert decision.inputs is None
    assert log.frame()["inputs"].tolist() == ['{"sma_fast":10.25,"sma_slow":9.5}']
