"""The parent runner end to end, with real sandboxed subprocesses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from farm_dagster import PROJECT_ROOT
from farm_dagster.engine import protocol, runner
from farm_dagster.engine.costs import BacktestSettings, CostModel
from farm_dagster.engine.runner import run_backtest
from farm_dagster.market_data.panel import BarPanel
from farm_dagster.market_data.synthetic import synthetic_panel
from farm_dagster.sandbox.limits import SandboxLimits
from tests.native_examples import NATIVE_EXAMPLES as EXAMPLES

CASH = 100_000.0


def run(code: str, panel: BarPanel, settings: BacktestSettings | None = None, **kw: object):
    return run_backtest(
        code,
        panel,
        settings or BacktestSettings(initial_cash=CASH),
        agent_id="test-agent",
        run_id="run-1",
        **kw,
    )


def replay_cash(result, initial_cash: float) -> pd.Series:
    """Cash after each bar, rebuilt from the fills alone (an independent recompute)."""
    flows = (
        result.fills.assign(
            flow=np.where(result.fills["side"] == "BUY", -1.0, 1.0)
            * result.fills["quantity"]
            * result.fills["price"]
            - result.fills["commission"]
        )
        .groupby("timestamp")["flow"]
        .sum()
    )
    return initial_cash + flows.reindex(result.equity.index, fill_value=0.0).cumsum()


@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_complete_with_consistent_trusted_accounting(example: str) -> None:
    panel = synthetic_panel(4, 300, seed=11)
    code = (PROJECT_ROOT / "examples" / example).read_text()
    result = run(code, panel, filename=example)
    assert result.status == "completed", result.error
    assert not result.tamper_suspected
    assert len(result.equity) == panel.n_bars and len(result.fills) > 0
    # the sandbox's own peak memory, read from /proc by the parent before the agent exits
    assert 5 < result.info["sandbox_peak_rss_mb"] < SandboxLimits().memory_mb
    # equity = cash + shares x close, bar by bar
    marked = (result.positions.to_numpy() * np.nan_to_num(panel.close)).sum(axis=1)
    np.testing.assert_allclose(result.equity["equity"], result.equity["cash"] + marked, rtol=1e-12)
    np.testing.assert_allclose(result.equity["cash"], replay_cash(result, CASH), rtol=1e-12, atol=1e-6)
    # No costs: a market order fills exactly at the open of its bar, a stop or a limit at the open
    # or its own price; every fill lands on a bar after its decision.
    opens = panel.frame("open")
    decisions = result.decisions.set_index("decision_id")
    for fill in result.fills.itertuples():
        decision = decisions.loc[fill.decision_id]
        expected = opens.at[fill.timestamp, fill.symbol]
        if decision["order_type"] == "stop":  # the examples' stops are sell stops
            expected = min(expected, decision["stop_price"])
        elif decision["order_type"] == "limit":  # ... and their limits sell (take-profit)
            expected = max(expected, decision["limit_price"])
        assert fill.price == expected
        assert fill.timestamp > decision["timestamp"]
    assert result.metrics["total_return"] == pytest.approx(result.equity["equity"].iloc[-1] / CASH - 1)


def test_stop_losses_fill_by_the_stop_rule_and_cancels_are_logged() -> None:
    """The stop-loss example: each stop fills on the first bar that trades through it, at the open on
    a gap and at the stop otherwise; each raise is a CANCEL row naming the stop it withdrew."""
    panel = synthetic_panel(4, 800, seed=5)
    code = (PROJECT_ROOT / "examples" / "trend_stop_loss.py").read_text()
    result = run(code, panel, filename="trend_stop_loss.py")
    assert result.status == "completed", result.error
    assert not result.tamper_suspected  # the agent's mirror applied the same stops and cancels
    rows = result.decisions
    stops, cancels = rows[rows["order_type"] == "stop"], rows[rows["action"] == "CANCEL"]
    filled = 0
    for row in stops.itertuples():
        events = json.loads(row.events)
        assert events[0]["type"] == "submitted"
        stop, i = events[0]["stop_price"], panel.symbols.index(row.symbol)
        assert row.stop_price == stop  # the FMEL column and the event agree
        fills = [e for e in events if e["type"] == "filled"]
        gone = [e for e in events if e["type"] in ("filled", "cancelled")]
        end = panel.n_bars if not gone else panel.index.get_loc(pd.Timestamp(gone[0]["time"]))
        if gone and gone[0]["type"] == "cancelled":
            end += 1  # cancelled on bar c: it was still live on bar c, gone before c + 1's fills
        assert (panel.low[row.decision_point + 1 : end, i] > stop).all()  # no earlier bar reached it
        if fills:
            opened, low = panel.open[end, i], panel.low[end, i]
            assert low <= stop and fills[0]["price"] == (opened if opened <= stop else stop)
            filled += 1
    assert filled >= 5 and len(cancels) >= 5
    stop_orders = {
        e["order_id"]: row.symbol
        for row in stops.itertuples()
        for e in json.loads(row.events)
        if e["type"] == "submitted"
    }
    for row in cancels.itertuples():
        (event,) = json.loads(row.events)
        assert event["type"] == "cancelled" and stop_orders[event["order_id"]] == row.symbol


BRACKET_AGENT = """
from farm_dagster.sdk import Agent, bracket


class Brackets(Agent):
    def on_bar(self, ctx):
        decisions = []
        for symbol in ctx.symbols:
            price = ctx.price(symbol)
            if ctx.position(symbol) == 0 and not ctx.open_orders(symbol) and price == price:
                decisions += bracket(symbol, 10, stop=price * 0.97, take_profit=price * 1.03, reasoning="probe")
        return decisions
"""


def test_native_brackets_exit_once_after_the_entry_fill() -> None:
    panel = synthetic_panel(3, 400, seed=3)
    result = run(BRACKET_AGENT, panel, filename="brackets.py")
    assert result.status == "completed", result.error
    assert not result.tamper_suspected  # the agent's mirror ran the same brackets
    rows = result.decisions.set_index("decision_id")
    fills = result.fills.set_index("order_id")
    entries = {}
    for did, row in rows[rows["reasoning"] == "probe"].iterrows():
        entries[json.loads(row["events"])[0]["order_id"]] = did
    exits_by_entry: dict[int, list] = {}
    for row in rows[rows["reasoning"].str.startswith("probe: ")].itertuples():
        submitted = json.loads(row.events)[0]
        parent = submitted["parent_order_id"]
        assert parent in entries
        if submitted["order_id"] in fills.index:
            exits_by_entry.setdefault(parent, []).append(fills.loc[submitted["order_id"], "timestamp"])
    assert len(exits_by_entry) >= 20
    for parent, times in exits_by_entry.items():
        assert len(times) == 1  # the first exit cancels the other
        assert times[0] > fills.loc[parent, "timestamp"]  # never on the entry's own bar


UPDATES_AGENT = """
from farm_dagster.sdk import Agent, buy, cancel, hold


class Watcher(Agent):
    \"\"\"Places orders on bars 0 and 2, and writes what ctx.order_updates() told it into its reasoning.\"\"\"

    def on_bar(self, ctx):
        seen = "; ".join(
            f"{u.status} {u.ref} {u.side} {u.quantity:g} {u.price:.4f} {u.reason}".strip()
            for u in ctx.order_updates()
        )
        symbol = ctx.symbols[0]
        if ctx.bar_index == 0:
            self.limit = buy(symbol, 1, limit=ctx.price(symbol) * 0.5)
            return [self.limit, buy(symbol, 1, reasoning=seen)]
        if ctx.bar_index == 1:
            return cancel(self.limit, reasoning=seen)
        if ctx.bar_index == 2:
            return buy(symbol, 1, limit=ctx.price(symbol) * 0.5, expires=int(self.params["expiry"]), reasoning=seen)
        return hold(symbol, reasoning=seen)
"""


def test_agents_see_fills_cancels_and_expiries_of_their_orders_on_the_next_bar() -> None:
    panel = synthetic_panel(1, 8, seed=2)
    settings = BacktestSettings(initial_cash=CASH, params={"expiry": int(panel.timestamps[3])})
    code = UPDATES_AGENT.replace("class Watcher(Agent):", "class Watcher(Agent):\n    params = {'expiry': 0}")
    result = run(code, panel, settings, filename="watcher.py")
    assert result.status == "completed", result.error
    seen = result.decisions.groupby("decision_point")["reasoning"].last()
    assert seen[1] == f"filled 0000000-001 BUY 1 {panel.open[1, 0]:.4f}"  # the market order, at bar 1's open
    assert seen[2] == "cancelled 0000000-000  0 nan cancelled by the agent"
    assert seen[3] == ""  # the expiring limit is still open on the bar of its expiry time
    assert seen[4] == "expired 0000002-000  0 nan expired"  # withdrawn on the first bar after it
    assert (seen[5:] == "").all()
    expiring = result.decisions[result.decisions["decision_point"] == 2].iloc[0]
    assert expiring["expires_at"] == pd.Timestamp(int(panel.timestamps[3]), tz="UTC")  # its FMEL column
    assert result.decisions.loc[result.decisions["decision_point"] != 2, "expires_at"].isna().all()


TRAILING_AGENT = """
from farm_dagster.sdk import Agent, buy, sell


class Trailing(Agent):
    def on_bar(self, ctx):
        symbol = ctx.symbols[0]
        if ctx.bar_index == 0:
            return buy(symbol, 10)
        if ctx.bar_index == 1:
            return sell(symbol, 10, trail_percent=0.03, reasoning="trail 3%")
        return None
"""


def test_native_trailing_stop_starts_from_the_close_and_follows_the_closes_up() -> None:
    panel = synthetic_panel(1, 300, seed=9)
    result = run(TRAILING_AGENT, panel, filename="trailing.py")
    assert result.status == "completed", result.error
    row = result.decisions[result.decisions["reasoning"] == "trail 3%"].iloc[0]
    close = panel.close[:, 0]
    assert row["stop_price"] == pytest.approx(close[1] * 0.97, rel=1e-12)  # logged: where it started
    assert row["trail_percent"] == 0.03 and np.isnan(row["trail_amount"])
    stop, t = close[1] * 0.97, 2
    while panel.low[t, 0] > stop:  # replay: each bar it survives moves the stop up to 97% of the close
        stop = max(stop, close[t] * 0.97)
        t += 1
    (exit_fill,) = result.fills[result.fills["side"] == "SELL"].itertuples()
    assert exit_fill.timestamp == panel.index[t]
    assert exit_fill.price == pytest.approx(min(panel.open[t, 0], stop), rel=1e-12)


TRAILING_LIMIT_AGENT = """
from farm_dagster.sdk import Agent, buy, sell


class TrailingLimit(Agent):
    def on_bar(self, ctx):
        symbol = ctx.symbols[0]
        if ctx.bar_index == 0:
            return buy(symbol, 10)
        if ctx.bar_index == 1:
            close = ctx.price(symbol)
            return sell(symbol, 10, stop=close * 0.97, limit=close * 0.96, trail_percent=0.03, reasoning="trail")
        return None
"""


def test_native_trailing_stop_limit_trails_then_sells_at_its_stop_or_its_moved_limit() -> None:
    panel = synthetic_panel(1, 300, seed=9)
    result = run(TRAILING_LIMIT_AGENT, panel, filename="trailing_limit.py")
    assert result.status == "completed", result.error
    row = result.decisions[result.decisions["reasoning"] == "trail"].iloc[0]
    close, open_, high, low = panel.close[:, 0], panel.open[:, 0], panel.high[:, 0], panel.low[:, 0]
    assert row["order_type"] == "trailing_stop_limit"
    assert (row["stop_price"], row["limit_price"]) == (close[1] * 0.97, close[1] * 0.96)
    assert row["trail_percent"] == 0.03
    stop, offset, t = close[1] * 0.97, close[1] * 0.01, 2
    while open_[t] > stop and low[t] > stop:  # not reached: the stop follows 97% of the close up
        stop = max(stop, close[t] * 0.97)
        t += 1
    (exit_fill,) = result.fills[result.fills["side"] == "SELL"].itertuples()
    assert exit_fill.timestamp == panel.index[t]  # it fills on the bar that reaches it...
    if open_[t] > stop:  # ...reached during the bar: at the stop (its limit is below it)
        assert exit_fill.price == pytest.approx(stop, rel=1e-12)
    else:  # ...opened under it: a limit order at the moved limit, filled at the open or better
        assert high[t] >= stop - offset
        assert exit_fill.price == pytest.approx(max(open_[t], stop - offset), rel=1e-12)


def test_costs_reach_the_reported_equity() -> None:
    panel = synthetic_panel(2, 120, seed=5)
    code = (PROJECT_ROOT / "examples" / "ma_crossover.py").read_text()
    costs = CostModel(commission_per_share=0.01, commission_pct=0.0005, min_commission=1.0, slippage_bps=5)
    free = run(code, panel)
    paid = run(code, panel, BacktestSettings(initial_cash=CASH, costs=costs))
    assert paid.status == free.status == "completed"
    assert (paid.fills["commission"] >= 1.0).all() and (paid.fills["slippage_cost"] > 0).all()
    np.testing.assert_allclose(paid.equity["cash"], replay_cash(paid, CASH), rtol=1e-12, atol=1e-6)
    assert paid.equity["equity"].iloc[-1] < free.equity["equity"].iloc[-1]


CRASHES = """\
from farm_dagster.sdk import Agent, buy, hold


class Crashes(Agent):
    def setup(self, ctx):
        self.n = 0

    def on_bar(self, ctx):
        self.n += 1
        if self.n == 1:
            return buy(ctx.symbols[0], 10, confidence=0.9, reasoning="get in")
        if self.n == 30:
            return {}["missing"]
        return hold(ctx.symbols[0], reasoning="wait")
"""


def test_crash_halfway_keeps_every_earlier_decision_and_marks_the_run_failed() -> None:
    panel = synthetic_panel(1, 80, seed=2)
    result = run(CRASHES, panel, filename="crashes.py")
    assert result.status == "failed"
    assert result.error.error_type == "KeyError"
    assert result.error.line == CRASHES.splitlines().index('            return {}["missing"]') + 1
    assert any("crashes.py" in line for line in result.error.user_traceback)
    assert result.error.render("crashes.py").startswith(f"crashes.py:{result.error.line}: KeyError")
    rows = result.decisions
    assert rows["decision_point"].tolist() == list(range(29))  # bars 0..28 were decided
    assert rows["action"].iloc[0] == "BUY" and rows["confidence"].iloc[0] == 0.9
    assert len(result.fills) == 1 and result.fills["quantity"].iloc[0] == 10
    assert result.metrics == {}


def test_validation_rejection_names_file_line_and_rule() -> None:
    code = "import os\nfrom farm_dagster.sdk import Agent\n\n\nclass A(Agent):\n    def on_bar(self, ctx):\n        return None\n"
    result = run(code, synthetic_panel(1, 10), filename="bad.py")
    assert result.status == "rejected"
    assert result.error.line == 1
    assert result.error.user_traceback[0].startswith("bad.py:1: ")
    assert len(result.equity) == 0 and len(result.decisions) == 0


INVALID = """\
from farm_dagster.sdk import Agent, buy


class Sloppy(Agent):
    def on_bar(self, ctx):
        if ctx.bar_index == 0:
            return [
                {"symbol": "NOPE", "action": "BUY", "quantity": 1},
                buy(ctx.symbols[0], float("nan")),
                buy(ctx.symbols[0], 1, confidence=3.0),
                buy(ctx.symbols[0], 2, confidence=0.4),
            ]
        return None
"""


def test_invalid_decisions_are_rejected_with_a_reason_and_the_run_goes_on() -> None:
    result = run(INVALID, synthetic_panel(2, 20, seed=1), filename="sloppy.py")
    assert result.status == "completed"
    first = result.decisions[result.decisions["decision_point"] == 0]
    assert len(first) == 4
    events = [json.loads(e) for e in first["events"]]
    reasons = [e[0]["reason"] for e in events[:3]]
    assert "unknown symbol" in reasons[0] and "quantity" in reasons[1] and "confidence" in reasons[2]
    assert [e["type"] for e in events[3]] == ["submitted", "filled", "trade_opened"]
    assert result.fills["quantity"].tolist() == [2.0]
    assert not result.tamper_suspected  # the mirror rejected the same decisions


def test_progress_reports_until_the_last_bar() -> None:
    seen: list[tuple[int, int]] = []
    code = (PROJECT_ROOT / "examples" / "buy_and_hold.py").read_text()
    result = run(code, synthetic_panel(2, 50), progress=lambda done, total: seen.append((done, total)))
    assert result.status == "completed"
    assert seen[-1] == (50, 50) and [d for d, _ in seen] == sorted(d for d, _ in seen)


SILENT = """\
from farm_dagster.sdk import Agent


class Silent(Agent):
    def on_bar(self, ctx):
        return None
"""


def test_fills_and_trades_frames_are_typed_and_reconcile_with_each_other() -> None:
    panel = synthetic_panel(3, 150, seed=5)
    silent = run(SILENT, panel)
    busy = run((PROJECT_ROOT / "examples" / "ma_crossover.py").read_text(), panel)
    assert silent.status == busy.status == "completed"
    assert len(silent.fills) == len(silent.trades) == 0 and len(busy.trades) > 1
    for result in (silent, busy):  # the same column types whether or not anything traded
        fills, trades = result.fills, result.trades
        assert fills["order_id"].dtype == np.int64
        for column in ("quantity", "price", "commission", "slippage_cost"):
            assert fills[column].dtype == np.float64
        for column in ("quantity", "entry_price", "exit_price", "pnl", "return_pct"):
            assert trades[column].dtype == np.float64
        assert str(fills["timestamp"].dtype) == str(trades["entry_time"].dtype) == "datetime64[ns, UTC]"
    # The example enters from flat and exits to flat: each closed trade is one buy and one sell fill.
    fills = busy.fills.set_index(["symbol", "timestamp", "side"])
    closed = busy.trades[busy.trades["status"] == "closed"]
    assert len(closed) > 0 and closed["exit_price"].notna().all()
    for trade in closed.itertuples():
        entry = fills.loc[(trade.symbol, trade.entry_time, "BUY")]
        exit_ = fills.loc[(trade.symbol, trade.exit_time, "SELL")]
        assert trade.quantity == entry["quantity"] == exit_["quantity"]
        # prices are notional / shares, so equal to the fill price up to one rounding
        assert trade.entry_price == pytest.approx(entry["price"], rel=1e-14)
        assert trade.exit_price == pytest.approx(exit_["price"], rel=1e-14)
        assert trade.pnl == pytest.approx((trade.exit_price - trade.entry_price) * trade.quantity)
        assert trade.return_pct == pytest.approx(trade.pnl / (trade.entry_price * trade.quantity))
    still_open = busy.trades[busy.trades["status"] == "open"]
    assert still_open["exit_price"].isna().all() and still_open["exit_time"].isna().all()


def test_a_failure_while_the_sandbox_boots_kills_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's identity is hashed while the sandbox starts; if that fails, no sandbox is left."""
    import psutil

    from farm_dagster.engine import runner

    def broken(*_: object) -> dict[str, str]:
        raise MemoryError("no room for the hash")

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    monkeypatch.setattr(runner, "_identify", broken)
    with pytest.raises(MemoryError):
        run(SILENT, synthetic_panel(2, 20, seed=1))
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


LOOP = """\
from farm_dagster.sdk import Agent


class Spins(Agent):
    def on_bar(self, ctx):
        if ctx.bar_index == 3:
            while True:
                pass
        return None
"""

MEMORY = """\
from farm_dagster.sdk import Agent


class Hungry(Agent):
    def on_bar(self, ctx):
        if ctx.bar_index == 2:
            self.hoard = [bytearray(64 * 1024 * 1024) for _ in range(1000)]
        return None
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("code", "limits", "status", "reason"),
    [
        (LOOP, SandboxLimits(cpu_seconds=60, wall_seconds=3), "timeout", "wall-clock"),
        (LOOP, SandboxLimits(cpu_seconds=1, wall_seconds=60), "killed", "cpu limit"),
        (MEMORY, SandboxLimits(memory_mb=512, wall_seconds=60), "killed", "memory limit"),
    ],
    ids=["wall", "cpu", "memory"],
)
def test_resource_limits_end_the_run_with_a_clear_status(
    code: str, limits: SandboxLimits, status: str, reason: str
) -> None:
    panel = synthetic_panel(1, 20)
    result = run(code, panel, limits=limits)
    assert result.status == status
    assert reason in result.error.message
    assert len(result.decisions) >= 2  # the bars before the fault are kept
    clean = run((PROJECT_ROOT / "examples" / "buy_and_hold.py").read_text(), panel)
    assert clean.status == "completed"  # the next agent still runs


def test_example_files_exist() -> None:
    for name in EXAMPLES:
        assert Path(PROJECT_ROOT / "examples" / name).is_file()


def test_sandbox_process_reports_a_dead_child_with_its_stderr() -> None:
    from farm_dagster.sandbox.process import SandboxCrashed, SandboxProcess

    proc = SandboxProcess("farm_dagster.engine.host:no_such_entry", SandboxLimits(wall_seconds=60)).start()
    try:
        with pytest.raises(SandboxCrashed) as info:
            proc.recv(timeout=30)
    finally:
        status = proc.close()
    assert info.value.exit.returncode == 1 and info.value.exit.reason == "exited with code 1"
    assert "no_such_entry" in info.value.exit.stderr_tail
    assert status == info.value.exit


def test_sandbox_process_names_the_signal_and_close_kills_the_group() -> None:
    import os
    import signal

    from farm_dagster.engine import protocol
    from farm_dagster.sandbox.process import SandboxCrashed, SandboxProcess, SandboxTimeout

    killed = SandboxProcess(limits=SandboxLimits(wall_seconds=60)).start()
    try:
        with pytest.raises(SandboxTimeout):
            killed.recv(timeout=0.3)  # waiting for INIT, it says nothing
        os.kill(killed.pid, signal.SIGKILL)
        with pytest.raises(SandboxCrashed) as info:
            killed.recv(timeout=30)
    finally:
        killed.close()
    assert info.value.exit.signal == "SIGKILL" and "killed" in info.value.exit.reason

    alive = SandboxProcess(limits=SandboxLimits(wall_seconds=60)).start()
    alive.send(
        protocol.encode_json(
            protocol.INIT,
            {"code": "x = (", "filename": "f.py", "symbols": ["A"], "settings": BacktestSettings().to_json()},
        )
    )
    assert alive.recv(timeout=30)[0] == protocol.ERROR
    pid = alive.pid
    alive.close()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing of the group is left


def test_the_agent_process_reports_where_its_time_went() -> None:
    """DONE carries the sandboxed loop's own timing (diagnostics): every part, none negative, and
    together no more than the run's wall time."""
    panel = synthetic_panel(3, 400, seed=2)
    code = (PROJECT_ROOT / "examples" / "ma_crossover.py").read_text()
    result = run(code, panel, filename="ma_crossover.py")
    assert result.status == "completed", result.error
    timing = result.info["agent_timing_s"]
    assert set(timing) == set(protocol.AGENT_TIMING)
    assert all(value >= 0 for value in timing.values())
    assert timing["agent_code"] > 0 and timing["waiting"] > 0
    assert sum(timing.values()) <= result.timings["total_s"]


def test_the_host_maps_its_history_before_the_lockdown_only_for_native_runs_within_half_its_memory() -> None:
    panel = synthetic_panel(10, 1000, seed=1)
    size_mb = 5 * 1000 * 10 * 8 / 2**20
    assert runner._prepare_spec("native", panel, SandboxLimits()) == {"history": [10, 1000]}
    assert runner._prepare_spec("backtrader", panel, SandboxLimits()) is None
    roomy, tight = (
        SandboxLimits(memory_mb=math.ceil(2 * size_mb)),
        SandboxLimits(memory_mb=math.floor(2 * size_mb)),
    )
    assert runner._prepare_spec("native", panel, roomy) is not None
    assert runner._prepare_spec("native", panel, tight) is None
