"""The trusted booking alone: the Python broker against the compiled book, on one run's decisions.

    .venv/bin/python bench/bench_book.py             # 100 synthetic symbols x 100,000 bars
    .venv/bin/python bench/bench_book.py --quick     # 100 x 20,000

Why: booking is about half of the trusted parent's CPU on a long run, and the parent sets the
pace of a run (bench_split.py). This times the booking step on its own, both ways, on the same
checked decisions: bar by bar through :class:`~farm_dagster.engine.broker.Broker` as the runner
drives it, and through :class:`~farm_dagster.engine.book.CompiledBook` both in chunks of 1,024
bars (the kernel's own speed) and bar by bar (how a run's stream books: each call's fixed cost
counts). All must give the same fills, trades and equity curve (bit for bit), or no number is
printed.

Method: one real run of ``examples/ma_crossover.py`` records the agent's answers; they are
decoded and checked once (timed apart: both ways need it); then each booking runs
``--repeats`` times and the medians are reported. The compiled book's kernels come from numba's
cache (``scripts/setup.sh`` compiles them); one warm-up call loads them before the timing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_engine import BENCH_AGENT, SEED, _median, machine, section_main  # noqa: E402
from bench_split import _Recorder, _run  # noqa: E402

from farm_dagster.engine import protocol  # noqa: E402
from farm_dagster.engine.book import CompiledBook, warm_up  # noqa: E402
from farm_dagster.engine.broker import Broker  # noqa: E402
from farm_dagster.engine.costs import BacktestSettings  # noqa: E402
from farm_dagster.market_data.synthetic import synthetic_panel  # noqa: E402

SECTION = "bench_book"
CHUNK = 1024


def _checked(replies: list[bytes], index: dict[str, int]) -> list[tuple[int, int, Any]]:
    out = []
    bars = [r for r in replies if r[0] == protocol.DECISIONS]
    for t, payload in enumerate(bars):
        _, body = protocol.decode_decisions_raw(payload)
        for seq, raw in enumerate((body or {}).get("decisions") or []):
            out.append((t, seq, protocol.check_decision(raw, index)))
    return out


def _python(
    panel: Any, settings: BacktestSettings, decisions: list[tuple[int, int, Any]]
) -> tuple[float, Any]:
    started = time.perf_counter()
    broker = Broker(panel.symbols, settings)
    blocks = np.stack([panel.open, panel.high, panel.low, panel.close, panel.volume], axis=1)
    ts = panel.timestamps.tolist()
    equity = np.empty(panel.n_bars)
    j = 0
    for t in range(panel.n_bars):
        broker.on_bar(t, ts[t], blocks[t])
        equity[t] = broker.equity
        while j < len(decisions) and decisions[j][0] == t:
            _, seq, d = decisions[j]
            broker.submit(d, j, t, ts[t], seq)
            j += 1
    elapsed = time.perf_counter() - started  # its fills are tuples already: nothing left to convert
    return elapsed, (broker.fill_rows(), _trades(broker.all_trades()), equity)


def _compiled(
    panel: Any, settings: BacktestSettings, decisions: list[tuple[int, int, Any]], chunk: int = CHUNK
) -> tuple[float, Any]:
    started = time.perf_counter()
    book = CompiledBook(
        panel.symbols, settings, panel.timestamps, panel.open, panel.high, panel.low, panel.close
    )
    j = 0
    for lo in range(0, panel.n_bars, chunk):
        hi = min(panel.n_bars, lo + chunk)
        while j < len(decisions) and decisions[j][0] < hi:
            t, seq, d = decisions[j]
            book.add(t, seq, d)
            j += 1
        book.advance(hi)
    elapsed = time.perf_counter() - started  # the columns as Python rows (for the comparison): not timed
    return elapsed, (book.fill_rows(), _trades(book.all_trades()), book.equity.copy())


def _trades(trades: list[Any]) -> list[tuple[Any, ...]]:
    return [tuple(getattr(t, name) for name in t.__slots__) for t in trades]


def measure(n_symbols: int, n_bars: int, repeats: int) -> dict[str, Any]:
    panel = synthetic_panel(n_symbols, n_bars, seed=SEED)
    settings = BacktestSettings()
    _Recorder.replies = []
    real = _run(BENCH_AGENT.read_text(), panel, settings, _Recorder)
    if real.status != "completed":
        raise RuntimeError(f"the recorded run ended {real.status}: {real.error}")
    index = {s: i for i, s in enumerate(panel.symbols)}
    started = time.perf_counter()
    decisions = _checked(_Recorder.replies, index)
    check_s = time.perf_counter() - started
    warm_up()
    times: dict[str, list[float]] = {"python": [], "compiled": [], "compiled_bar": []}
    outcome: dict[str, Any] = {}
    ways = (
        ("python", _python),
        ("compiled", _compiled),
        ("compiled_bar", lambda p, s, d: _compiled(p, s, d, chunk=1)),
    )
    for k in range(repeats):
        for name, book in ways:
            elapsed, result = book(panel, settings, decisions)
            times[name].append(elapsed)
            outcome[name] = result
            print(f"{name} booking {k + 1}/{repeats}: {elapsed:.2f}s", file=sys.stderr)
        py_fills, py_trades, py_equity = outcome["python"]
        for name in ("compiled", "compiled_bar"):
            c_fills, c_trades, c_equity = outcome[name]
            if py_fills != c_fills or py_trades != c_trades or not np.array_equal(py_equity, c_equity):
                raise RuntimeError(f"{name}: other fills, trades or equity than the Python broker")
    if list(real.equity["equity"]) != list(outcome["python"][2]):
        raise RuntimeError("the booking replayed here differs from the recorded run's equity curve")
    return {
        "n_symbols": n_symbols,
        "n_bars": n_bars,
        "decisions": len(decisions),
        "fills": len(outcome["python"][0]),
        "trades": len(outcome["python"][1]),
        "check_s": check_s,
        "times": times,
    }


def render(m: dict[str, Any]) -> str:
    info = machine()
    med = {name: _median(runs) for name, runs in m["times"].items()}
    spread = {name: f"{min(runs):.2f}-{max(runs):.2f}" for name, runs in m["times"].items()}
    return "\n".join(
        [
            "## The trusted booking alone (bench/bench_book.py)",
            "",
            f"Machine: {info['cpu']}, nproc={info['nproc']}, Python {info['python']}. Run: {info['date']}. "
            f"Case: {m['n_symbols']} synthetic symbols x {m['n_bars']:,} bars, `examples/ma_crossover.py`: "
            f"{m['decisions']:,} decisions, {m['fills']:,} fills, {m['trades']:,} trades; medians of "
            f"{len(m['times']['python'])} runs. Every way gave the same fills, trades and equity curve, bit for bit.",
            "",
            "| booking | time (s) | range (s) | per bar (us) |",
            "|---|---:|---:|---:|",
            f"| Python broker, bar by bar (what the parent runs today) | {med['python']:.2f} | "
            f"{spread['python']} | {med['python'] / m['n_bars'] * 1e6:.1f} |",
            f"| compiled book, chunks of {CHUNK:,} bars | {med['compiled']:.2f} | {spread['compiled']} | "
            f"{med['compiled'] / m['n_bars'] * 1e6:.1f} |",
            f"| compiled book, bar by bar (a call per bar, as a run's stream books) | "
            f"{med['compiled_bar']:.2f} | {spread['compiled_bar']} | "
            f"{med['compiled_bar'] / m['n_bars'] * 1e6:.1f} |",
            "",
            f"- Compiled / Python: **{med['python'] / med['compiled']:.1f}x** faster in chunks, "
            f"**{med['python'] / med['compiled_bar']:.1f}x** bar by bar.",
            f"- Not in either row: decoding and checking the answers, {m['check_s']:.2f} s (both need it), and "
            "the FMEL texts and frames built from the events afterwards.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    return section_main(argv, __doc__, SECTION, measure, render, "runs of each booking")


if __name__ == "__main__":
    raise SystemExit(main())
