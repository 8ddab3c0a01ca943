"""The hostile-agent corpus (tests/hostile_agents): every agent is refused by validation, naming the
rule and line, and, run with validation bypassed, is contained by the sandbox alone with a clear
status; a normal agent runs right after each one.

Each hostile file states what must happen in its first line:
``# expect: rule=<rule|none> line=<n> status=<run status> error=<error type> match=<text in message>``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from farm_dagster.engine.costs import BacktestSettings
from farm_dagster.engine.runner import run_backtest
from farm_dagster.market_data.panel import BarPanel
from farm_dagster.sandbox.limits import SandboxLimits
from farm_dagster.validation import validate_agent_code

CORPUS = Path(__file__).parent / "hostile_agents"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LIMITS = SandboxLimits(cpu_seconds=1, memory_mb=512, wall_seconds=12)
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


def _panel(n: int = 40) -> BarPanel:
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n, 2)), axis=0))
    ts = pd.date_range("2021-01-04", periods=n, freq="B", tz="UTC").asi8
    return BarPanel(ts, ("AAA", "BBB"), close, close * 1.01, close * 0.99, close, np.full((n, 2), 1e6))


def _run(code: str, filename: str, *, prevalidate: bool, wall: float | None = None):
    limits = LIMITS if wall is None else replace(LIMITS, wall_seconds=wall)
    return run_backtest(
        code,
        _panel(),
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
    }
    assert wanted <= names


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
def test_sandbox_contains_it_without_validation(path: Path) -> None:
    expect = _expect(path)
    for leftover in TOUCHED:
        if os.path.exists(leftover):
            os.remove(leftover)
    code = path.read_text()
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


def test_rejected_run_never_starts_a_sandbox() -> None:
    path = CORPUS / "subclasses_escape.py"
    result = _run(path.read_text(), path.name, prevalidate=True)
    assert result.status == "rejected"
    assert result.error is not None and result.error.line == _expect(path).line
    assert "dunder-access" in result.error.message
    assert "sandbox_exit" not in result.info
