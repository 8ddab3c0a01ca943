"""The hostile-agent corpus (tests/hostile_agents): every agent is refused by validation, naming the
rule and line, and, run with validation bypassed, is contained by the sandbox alone with a clear
status; a normal agent runs right after each one, with the same results as on its own.

Part of the corpus reads real future prices from files (data packages in site-packages, the
warehouse in the data home): the sandbox's read allow-list must stop them while the past, served
bar by bar, still reaches every example agent.

Each hostile file states what must happen in its first line:
``# expect: rule=<rule|none> line=<n> status=<run status> error=<error type> match=<text in message>``.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from farm_dagster.engine.costs import BacktestSettings
from farm_dagster.engine.result import BacktestResult
from farm_dagster.engine.runner import run_backtest
from farm_dagster.market_data.panel import BarPanel
from farm_dagster.market_data.schema import ohlcv_frame
from farm_dagster.market_data.sources import load_bokeh_stocks
from farm_dagster.market_data.store import read_ohlcv, write_ohlcv
from farm_dagster.resources.warehouse_duckdb import DuckDBWarehouse
from farm_dagster.sandbox.limits import SandboxLimits
from farm_dagster.settings import FarmSettings, load_settings
from farm_dagster.validation import validate_agent_code

CORPUS = Path(__file__).parent / "hostile_agents"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# 3 CPU seconds: the memory bomb must meet the memory limit before the CPU limit, and filling
# 512 MB page by page took 0.4 s of CPU on a slow machine, after the child's own start.
LIMITS = SandboxLimits(cpu_seconds=3, memory_mb=512, wall_seconds=12)
TOUCHED = [
    "/tmp/farm-hostile-written.txt",
    "/tmp/farm-hostile-ctypes",
    "/tmp/farm-hostile-escape",
    "/tmp/farm-hostile-getattr",
    "/tmp/farm-hostile-forkexec",
]


@dataclass(frozen=True)
class Expect:
    rule: str | None
    line: int | None
    status: tuple[str, ...]  # alternatives (a|b): e.g. spam ends on the CPU limit or blocks until the wall
    error: tuple[str, ...]
    match: tuple[str, ...]
    wall: float | None


def _expect(path: Path) -> Expect:
    first = path.read_text().splitlines()[0]
    fields = dict(re.findall(r"(\w+)=(.*?)(?=\s+\w+=|$)", first.removeprefix("# expect:").strip()))
    rule = None if fields["rule"] == "none" else fields["rule"]
    return Expect(
        rule,
        int(fields["line"]) if "line" in fields else None,
        tuple(fields["status"].split("|")),
        tuple(fields["error"].split("|")),
        tuple(fields["match"].split("|")),
        float(fields["wall"]) if "wall" in fields else None,
    )


HOSTILE = sorted(CORPUS.glob("*.py"))
SITE_PACKAGES = Path(np.get_include()).parents[2]  # how the corpus finds it too
DATA_FILES = {  # real price histories shipped inside packages: the future, seen from any backtest
    "bokeh": SITE_PACKAGES / "bokeh_sampledata" / "_data" / "stocks.csv.gz",
    "arch": SITE_PACKAGES / "arch" / "data" / "sp500" / "sp500.csv.gz",
    "skfolio": SITE_PACKAGES / "skfolio" / "datasets" / "data" / "sp500_dataset.csv.gz",
}
HOME_TOKEN = "FARM_HOME_DIR"  # replaced in the corpus by the path of a real data home


def _panel(n: int = 40) -> BarPanel:
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n, 2)), axis=0))
    ts = pd.date_range("2021-01-04", periods=n, freq="B", tz="UTC").asi8
    return BarPanel(ts, ("AAA", "BBB"), close, close * 1.01, close * 0.99, close, np.full((n, 2), 1e6))


def make_data_home(home: Path, monkeypatch: pytest.MonkeyPatch, panel: BarPanel) -> FarmSettings:
    """A real data home (FARM_HOME and DAGSTER_HOME exported) whose DuckDB warehouse holds every
    bar of ``panel``: what an agent reading it would learn is the future of its own run."""
    monkeypatch.setenv("FARM_HOME", str(home))
    settings = load_settings()
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    (settings.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    frames = [
        ohlcv_frame(
            symbol,
            panel.index,
            **{f: getattr(panel, f)[:, i] for f in ("open", "high", "low", "close", "volume")},
            source="hostile-test",
            adjusted=False,
        )
        for i, symbol in enumerate(panel.symbols)
    ]
    write_ohlcv(DuckDBWarehouse(path=str(settings.warehouse_path)), pd.concat(frames, ignore_index=True))
    return settings


def _run(
    code: str, filename: str, *, prevalidate: bool, wall: float | None = None, panel: BarPanel | None = None
):
    limits = LIMITS if wall is None else replace(LIMITS, wall_seconds=wall)
    return run_backtest(
        code,
        panel or _panel(),
        BacktestSettings(),
        agent_id="hostile",
        run_id=f"run-{filename}",
        filename=filename,
        limits=limits,
        prevalidate=prevalidate,
    )


def test_corpus_covers_the_issue_list() -> None:
    names = {p.stem for p in HOSTILE}
    wanted = {
        "network_call",
        "read_passwd",
        "write_file",
        "fork_bomb",
        "infinite_loop",
        "memory_bomb",
        "ctypes_call",
        "subclasses_escape",
        "read_ahead",
        "monkeypatch_engine",
        "getattr_import",
        "output_spam",
        "sleep_forever",
        "read_prices_open",
        "read_prices_pandas",
        "read_prices_polars",
        "read_arch_data",
        "read_skfolio_data",
        "read_warehouse",
        "deep_json",
    }
    assert wanted <= names


@functools.cache
def _normal_run() -> BacktestResult:
    """buy_and_hold on its own: what it must still produce right after any hostile run."""
    return _run((EXAMPLES / "buy_and_hold.py").read_text(), "buy_and_hold.py", prevalidate=True)


def test_the_files_the_corpus_reads_hold_real_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside the sandbox the targets exist and are readable, so the refusals below mean
    something (a package update moving a file would otherwise make them pass vacuously)."""
    for name, path in DATA_FILES.items():
        frame = pl.read_csv(path)
        assert frame.height > 1000, name
    settings = make_data_home(tmp_path / "farm-home", monkeypatch, _panel())
    stored = read_ohlcv(DuckDBWarehouse(path=str(settings.warehouse_path)), ["AAA"])
    assert len(stored) == _panel().n_bars


@pytest.mark.parametrize("path", HOSTILE, ids=[p.stem for p in HOSTILE])
def test_validation_names_rule_and_line(path: Path) -> None:
    expect = _expect(path)
    report = validate_agent_code(path.read_text(), path.name)
    if expect.rule is None:  # valid Python that only the sandbox can stop
        assert report.ok, report.messages()
        return
    assert not report.ok
    first = report.issues[0]
    assert (first.rule, first.line) == (expect.rule, expect.line), report.messages()
    assert report.messages()[0].startswith(f"{path.name}:{expect.line}: {expect.rule}: ")


@pytest.mark.slow
@pytest.mark.parametrize("path", HOSTILE, ids=[p.stem for p in HOSTILE])
def test_sandbox_contains_it_without_validation(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expect = _expect(path)
    for leftover in TOUCHED:
        if os.path.exists(leftover):
            os.remove(leftover)
    code = path.read_text()
    if HOME_TOKEN in code:  # a real data home, exported as FARM_HOME for the run
        settings = make_data_home(tmp_path / "farm-home", monkeypatch, _panel())
        code = code.replace(HOME_TOKEN, str(settings.home_dir))
        assert settings.warehouse_path.is_file()
    result = _run(code, path.name, prevalidate=False, wall=expect.wall)
    assert result.status in expect.status, (result.status, result.error)
    assert not [p for p in TOUCHED if os.path.exists(p)], "the agent changed the host's files"
    if expect.error == ("none",):  # tampering in its own process: the trusted accounting does not move
        twin = re.sub(r"# tamper-start.*?# tamper-end\n", "", code, flags=re.S)
        assert twin != code
        clean = _run(twin, path.name, prevalidate=False)
        assert clean.status == "completed", clean.error
        pd.testing.assert_frame_equal(result.equity, clean.equity)
        pd.testing.assert_frame_equal(result.fills, clean.fills)
        assert len(result.fills) == 1 and result.equity["equity"].max() < 1e6
    else:
        assert result.error is not None
        assert result.error.error_type in expect.error, result.error
        assert any(m in result.error.message for m in expect.match), result.error.message
        assert result.metrics == {}  # a contained run never reaches the leaderboard numbers

    normal = _run((EXAMPLES / "buy_and_hold.py").read_text(), "buy_and_hold.py", prevalidate=True)
    assert normal.status == "completed", normal.error
    assert normal.equity["equity"].iloc[-1] > 0
    pd.testing.assert_frame_equal(normal.equity, _normal_run().equity)
    pd.testing.assert_frame_equal(normal.fills, _normal_run().fills)


@functools.cache
def _real_window() -> BarPanel:
    """2010 of the real bokeh stocks, loaded by the trusted parent (the past, streamed bar by bar)."""
    frame = load_bokeh_stocks()
    window = frame[(frame["timestamp"] >= "2010-01-01") & (frame["timestamp"] < "2011-01-01")]
    return BarPanel.from_long(window, ["AAPL", "GOOG", "IBM", "MSFT"])


EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLE_FILES)
def test_examples_still_read_the_past_on_real_data(example: str) -> None:
    """The narrowed read allow-list takes nothing an agent legitimately needs: every example
    agent (native and backtrader) runs to the end on a real window and acts on what it saw."""
    panel = _real_window()
    result = _run((EXAMPLES / example).read_text(), example, prevalidate=True, panel=panel)
    assert result.status == "completed", result.error
    assert len(result.equity) == panel.n_bars
    assert len(result.fills) > 0  # it traded on the prices it was shown
    assert result.metrics


def test_rejected_run_never_starts_a_sandbox() -> None:
    path = CORPUS / "subclasses_escape.py"
    result = _run(path.read_text(), path.name, prevalidate=True)
    assert result.status == "rejected"
    assert result.error is not None and result.error.line == _expect(path).line
    assert "dunder-access" in result.error.message
    assert "sandbox_exit" not in result.info
