"""Each side of the engine alone: the trusted parent replaying a recorded run, the agent's host fed the bars.

    .venv/bin/python bench/bench_split.py             # 100 synthetic symbols x 100,000 bars
    .venv/bin/python bench/bench_split.py --quick     # 100 x 20,000 (seconds, not minutes)

Why: the parent and the sandboxed agent run side by side on two cores, so a run takes about as
long as the busier of the two, plus the hand-offs. Wall times on this machine move by a third
from one minute to the next; the CPU each side needs on its own is the steadier number to judge
an engine change by, and it says which side sets the pace.

Method: one real run of ``examples/ma_crossover.py`` records the agent's answers (the exact bytes,
in order). The parent then replays them ``--repeats`` times with no sandbox behind it: what is
timed is the parent's own work (checks, booking, FMEL texts, result frames). Every replay must
give the recorded run's results (equity, positions, fills, trades, the FMEL rows, the metrics):
a replay that measured something else would fail here, not print a number. A replay is always
behind (every answer is there at once), so it books 8 bars a compiled call; it runs a second time
booking one bar a call, as a real run that keeps up with its agent does. The agent's host then
runs ``--repeats`` times in this process on an in-memory channel fed the same bars: its work per
bar (history, mirror broker, the agent's code, encoding its answers) with no waiting.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_engine import BENCH_AGENT, SEED, _median, _middle, machine, section_main  # noqa: E402

from farm_dagster.engine import host, protocol, runner  # noqa: E402
from farm_dagster.engine.costs import BacktestSettings  # noqa: E402
from farm_dagster.engine.result import BacktestResult  # noqa: E402
from farm_dagster.market_data.synthetic import synthetic_panel  # noqa: E402
from farm_dagster.sandbox.limits import SandboxLimits  # noqa: E402
from farm_dagster.sandbox.process import SandboxProcess  # noqa: E402

SECTION = "bench_split"


class _Recorder(SandboxProcess):
    """The real sandbox, keeping a copy of every message the agent sends."""

    replies: list[bytes] = []

    def recv(self, timeout: float | None = None) -> bytes:
        reply = super().recv(timeout)
        _Recorder.replies.append(reply)
        return reply


class _Replay:
    """Stands where the sandbox stands and answers with the recorded messages, in order."""

    replies: list[bytes] = []

    def __init__(self, *_: Any, **__: Any) -> None:
        self._next = iter(_Replay.replies)

    def start(self) -> _Replay:
        return self

    def send(self, payload: bytes) -> None:
        return None

    def recv(self, timeout: float | None = None) -> bytes:
        return next(self._next)

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        return None

    def peak_rss_mb(self) -> float:
        return 0.0


class _Channel:
    """The host's end of the channel, in memory: the run's messages in, the answers counted."""

    def __init__(self, messages: list[bytes]) -> None:
        self._next = iter(messages)
        self.sent = 0

    def recv(self, timeout: float | None = None) -> bytes:
        return next(self._next)

    def send(self, payload: bytes) -> None:
        self.sent += 1


def _run(code: str, panel: Any, settings: BacktestSettings, process: type) -> BacktestResult:
    runner.SandboxProcess = process  # type: ignore[assignment,misc]
    try:
        return runner.run_backtest(code, panel, settings, agent_id="bench", run_id="split")
    finally:
        runner.SandboxProcess = SandboxProcess  # type: ignore[misc]


def _digest(result: BacktestResult) -> tuple[Any, ...]:
    frames = (result.equity, result.positions, result.fills, result.trades, result.decisions)
    hashed = tuple(int(pd.util.hash_pandas_object(f, index=True).sum()) for f in frames)
    return (*hashed, tuple(sorted(result.metrics.items())))


def _phases(result: BacktestResult) -> dict[str, float]:
    t = result.timings
    stream = t["total_s"] - t["startup_s"] - t["result_s"]
    return {"total": t["total_s"], "startup": t["startup_s"], "stream": stream, "result": t["result_s"]}


def measure(n_symbols: int, n_bars: int, repeats: int) -> dict[str, Any]:
    code = BENCH_AGENT.read_text()
    panel = synthetic_panel(n_symbols, n_bars, seed=SEED)
    settings = BacktestSettings()
    _Recorder.replies = []
    real = _run(code, panel, settings, _Recorder)
    if real.status != "completed":
        raise RuntimeError(f"the recorded run ended {real.status}: {real.error}")
    expected = _digest(real)
    _Replay.replies, real_phases = _Recorder.replies, _phases(real)
    agent_timing = real.info.get("agent_timing_s", {})
    del real
    parent = _replays(code, panel, settings, expected, repeats, runner.FLUSH_BARS)
    parent_per_bar = _replays(code, panel, settings, expected, repeats, 1)
    init = runner._init_message(code, BENCH_AGENT.name, "native", panel, settings, "backtest")
    messages = [init, *(m for _, _, m in runner._bar_messages(panel)), bytes((protocol.END,))]
    agent = []
    spec = runner._prepare_spec("native", panel, SandboxLimits())
    for k in range(repeats):
        channel = _Channel(messages)
        if spec is not None:  # what a real run's host does before its lockdown, outside the stream
            host.prepare(spec)
        started = time.perf_counter()
        host.main(channel)
        agent.append(time.perf_counter() - started)
        if channel.sent != panel.n_bars + 2:  # READY, one answer per bar, DONE
            raise RuntimeError(f"the agent's host answered {channel.sent} times for {panel.n_bars} bars")
        print(f"agent alone {k + 1}/{repeats}: {agent[-1]:.2f}s", file=sys.stderr)
    return {
        "real": real_phases,
        "agent_timing": agent_timing,
        "parent": parent,
        "parent_per_bar": parent_per_bar,
        "agent": agent,
        "n_symbols": n_symbols,
        "n_bars": n_bars,
    }


def _replays(
    code: str,
    panel: Any,
    settings: BacktestSettings,
    expected: tuple[Any, ...],
    repeats: int,
    flush_bars: int,
) -> list[dict[str, float]]:
    """The parent replaying the recorded answers ``repeats`` times, booking ``flush_bars`` bars a
    call. A replay is always behind (every answer is there at once), so it books in batches
    (``runner.FLUSH_BARS``); a real run that keeps up with its agent books one bar a call."""
    saved, runner.FLUSH_BARS = runner.FLUSH_BARS, flush_bars
    try:
        phases = []
        for k in range(repeats):
            replayed = _run(code, panel, settings, _Replay)
            if _digest(replayed) != expected:
                raise RuntimeError(f"replay {k + 1} gave other results than the recorded run")
            phases.append(_phases(replayed))
            del replayed
            print(
                f"parent replay {k + 1}/{repeats}, {flush_bars} bar(s) a booking call: {phases[-1]['total']:.2f}s",
                file=sys.stderr,
            )
        return phases
    finally:
        runner.FLUSH_BARS = saved


def _median_replay(phases: list[dict[str, float]]) -> dict[str, float]:
    """The median replay, whole (its phases add up), chosen as bench_engine.py chooses its own."""
    return sorted(phases, key=lambda p: p["total"])[_middle(len(phases))]


def render(m: dict[str, Any]) -> str:
    info = machine()
    real, parent = m["real"], m["parent"]
    median_parent, per_bar = _median_replay(parent), _median_replay(m["parent_per_bar"])
    spread = f"{min(p['total'] for p in parent):.2f}-{max(p['total'] for p in parent):.2f}s"
    agent = _median(m["agent"])
    # The stream's pace: the busier side's work during the stream. The parent's result frames come
    # after it, on one core (a replay renders there the inputs texts a real run renders while it
    # waits for the agent, so its frames are the longer).
    pace = "the parent" if median_parent["stream"] > agent else "the agent's process"
    busiest = median_parent["startup"] + max(median_parent["stream"], agent) + median_parent["result"]
    return "\n".join(
        [
            "## Each side alone (bench/bench_split.py)",
            "",
            f"Machine: {info['cpu']}, nproc={info['nproc']}, Python {info['python']} (5,000,000 additions in "
            f"a Python loop: {info['python_loop']} s). Run: {info['date']}. "
            f"Case: {m['n_symbols']} synthetic symbols x {m['n_bars']:,} bars, `examples/ma_crossover.py`; "
            f"median runs of {len(parent)} (the lower middle one of an even count).",
            "",
            "| what | total (s) | startup (s) | stream (s) | result frames (s) | notes |",
            "|---|---:|---:|---:|---:|---|",
            f"| real run (parent + sandboxed agent) | {real['total']:.2f} | {real['startup']:.2f} | "
            f"{real['stream']:.2f} | {real['result']:.2f} | records the agent's answers |",
            f"| parent alone (replaying them) | {median_parent['total']:.2f} | {median_parent['startup']:.2f} | "
            f"{median_parent['stream']:.2f} | {median_parent['result']:.2f} | range {spread}; every replay's "
            "results equal the recorded run's |",
            f"| parent alone, one bar a booking call | {per_bar['total']:.2f} | {per_bar['startup']:.2f} | "
            f"{per_bar['stream']:.2f} | {per_bar['result']:.2f} | as a real run that keeps up with its agent books |",
            f"| agent's host alone (fed the bars) | {agent:.2f} | | {agent:.2f} | | "
            f"range {min(m['agent']):.2f}-{max(m['agent']):.2f}s; history, mirror broker, agent code, encoding |",
            "",
            f"- The side that sets the stream's pace: **{pace}** (the parent's stream {median_parent['stream']:.2f} s "
            f"against the agent's {agent:.2f} s); the parent's result frames ({median_parent['result']:.2f} s "
            "replaying) follow the stream on one core. Booking one bar a call, as a real run that keeps "
            f"up does, the parent's stream takes {per_bar['stream']:.2f} s: the two sides are closer than "
            "the batched replay says.",
            f"- The real run took {real['total'] - busiest:+.2f} s beyond the busier side's work "
            f"({busiest:.2f} s: the parent's start and result frames around the busier stream) "
            "(hand-offs, waiting, sharing two cores).",
            _agent_line(m["agent_timing"]),
            "",
        ]
    )


def _agent_line(timing: dict[str, float]) -> str:
    """The real run's agent process, by its own timers (``protocol.AGENT_TIMING``, sent with DONE)."""
    if not timing:
        return "- The agent's process reported no timing."
    parts = ", ".join(f"{name.replace('_', ' ')} {seconds:.2f} s" for name, seconds in timing.items())
    return f"- The agent's process in the real run, by its own timers: {parts}."


def main(argv: list[str] | None = None) -> int:
    return section_main(argv, __doc__, SECTION, measure, render, "replays and agent-alone runs")


if __name__ == "__main__":
    raise SystemExit(main())
