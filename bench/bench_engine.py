"""Engine benchmark: The Farm's engine (sandbox included) vs backtrader vs vectorbt, one logic, one data.

    .venv/bin/python bench/bench_engine.py            # full: SPX 1999-2018 daily + 100 x 100,000 synthetic
    .venv/bin/python bench/bench_engine.py --quick    # smaller synthetic case (minutes -> seconds)

Logic (identical in the three peers; the engine runs the shipped ``examples/ma_crossover.py``,
confidence/reasoning/inputs and all): SMA(10) vs SMA(30) of the close; long when fast > slow, flat
otherwise (NaN during warm-up = flat); the signal of bar t's close trades at bar t+1's open;
equal weight: 1/N of the capital per symbol; no costs. Sizing details differ slightly: the engine
targets 1/N of the *current* equity in whole shares (shrunk to the cash) and sends an entry only
when that buys at least one share at the close (the synthetic prices drift far beyond 1/N of the
equity; without the check the example re-sent an order sized to nothing on every bar, which
backtrader's ``order_target_percent`` never creates), backtrader uses
``order_target_percent(1/N)`` (sized on the close, may be refused for cash on a gap up), vectorbt
uses N independent sleeves of 1/N of the initial cash, all-in (``from_signals`` does not take
target-percent sizes). Final equities are printed so the peers can be compared.

Measurement: every peer runs in subprocesses of its own (same interpreter, same data built from
the same generator) and reports its peak RSS (VmHWM of /proc/self/status). The engine's
sandboxed agent is a grandchild: the engine reads its VmHWM itself at the end of the stream
(``result.info["sandbox_peak_rss_mb"]``), and the table adds it to the parent's. (An earlier
version polled it from a thread of the worker every 20 ms: that thread took the GIL from the
pure-Python peers, engine and backtrader, slowing them by up to a third, while vectorbt's numba
loops never let it run.) Timings cover the backtest only (data already in memory): engine =
``run_backtest`` (validation, sandbox start, streaming, accounting, result frames including FMEL
rows and metrics); backtrader = building Cerebro + feeds + ``run``; vectorbt = rolling means +
``Portfolio.from_signals`` + the total equity curve. vectorbt "cold" is the first call in a
process with an empty numba cache (JIT compilation included), "cold, cached JIT" the first call
with the project's numba cache already filled, "warm" a call after the first in the process.

Rounds, and pair ratios: this machine's speed drifts by up to a third from one minute to the
next, so the runs are made in ``--repeats`` rounds (5 by default). Each round starts three fresh
processes, one after the other: the engine, one run ("engine (sandbox)", a fresh process per
run); vectorbt, two calls (the first loads the cached JIT: "vectorbt cold (cached JIT)"; the
second is "vectorbt warm"); the engine, two runs (the second is "engine warm process", measured
as vectorbt warm is; it still starts its own sandbox and hashes its data). No process is kept
alive beside another one's run: idle processes holding memory slowed a fresh engine run by 5-33 %
(see :func:`measure`). The table shows each peer's median run (the lower middle one of an even
count) and the range. The ratio against vectorbt warm is the median of the rounds' ratios, each
taken between runs made seconds apart; the ratio of the two median runs is printed beside it.
The target is judged on the engine with a fresh process per run. Backtrader runs once, in a
fresh process; it is too slow for 100 x 100,000 bars (~20 min): it runs on a documented subset
and its throughput (symbol-bars per second) is extrapolated; the table says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import farm_dagster  # noqa: E402,F401  (sets NUMBA_CACHE_DIR)

BENCH_AGENT = ROOT / "examples" / "ma_crossover.py"  # the shipped example: FMEL reasoning/inputs included
RESULTS = ROOT / "bench" / "RESULTS.md"
FAST, SLOW = 10, 30
INITIAL_CASH = 100_000.0
SEED = 7
TARGET_VS_BACKTRADER = 10.0  # engine throughput >= 10x backtrader
TARGET_VS_VECTORBT = 3.0  # engine wall time <= 3x vectorbt warm on the large case


@dataclass(frozen=True)
class Case:
    name: str
    label: str
    source: str  # "spx" (arch's S&P 500 index, real) | "synthetic"
    n_symbols: int
    n_bars: int  # 0 = all bars of the real series
    bt_symbols: int  # backtrader subset (== n_symbols/n_bars when it runs the full case)
    bt_bars: int
    data_path: str = ""  # real data: an .npz of the panel written once by the parent
    repeats: int = 5  # rounds (engine fresh, vectorbt warm, engine warm process); medians shown


def cases(quick: bool) -> list[Case]:
    real = Case("spx_daily", "1 real symbol x 20 y daily (SPX 1999-2018)", "spx", 1, 0, 1, 0)
    if quick:
        return [
            real,
            Case("synthetic_small", "20 synthetic x 10,000 bars", "synthetic", 20, 10_000, 5, 10_000),
        ]
    return [
        real,
        Case("synthetic_large", "100 synthetic x 100,000 bars", "synthetic", 100, 100_000, 10, 20_000),
    ]


# --------------------------------------------------------------------------- data (in the workers)


def save_real_panel(case: Case, directory: Path) -> Case:
    """Load the real series once (arch pulls in statsmodels: ~190 MB) and hand the workers an .npz."""
    import numpy as np

    from farm_dagster.market_data.panel import BarPanel
    from farm_dagster.market_data.sources import load_source

    frame = load_source("arch_indices")
    panel = BarPanel.from_long(frame[frame["symbol"] == "SPX"], ["SPX"])
    path = directory / f"{case.name}.npz"
    np.savez(
        path,
        timestamps=panel.timestamps,
        symbols=np.array(panel.symbols),
        **{name: panel.field(name) for name in ("open", "high", "low", "close", "volume")},
    )
    return Case(**{**asdict(case), "data_path": str(path)})


def load_panel(case: Case, n_symbols: int | None = None, n_bars: int | None = None):  # noqa: ANN201
    """The case's BarPanel; a subset (first symbols, first bars) for backtrader's documented subset."""
    from farm_dagster.market_data.panel import BarPanel

    if case.source == "spx":
        import numpy as np

        with np.load(case.data_path) as data:
            arrays = {name: data[name] for name in data.files}
        symbols = tuple(str(s) for s in arrays.pop("symbols"))
        return BarPanel(symbols=symbols, **arrays)
    from farm_dagster.market_data.synthetic import synthetic_panel

    return synthetic_panel(n_symbols or case.n_symbols, n_bars or case.n_bars, seed=SEED)


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# --------------------------------------------------------------------------- peers (in the workers)


def engine_calls(case: Case) -> Iterator[dict[str, Any]]:
    """The engine, one run a call, all in this process: the first run is "engine (sandbox)", a
    fresh process per run; the next ones are "engine warm process", measured as vectorbt warm is.

    Every run still starts its own sandbox and hashes the data; what the first run leaves behind
    is the imports (numba's among them) and memory the process has already touched, whose page
    faults the first run pays (slow on this benchmark's virtual machine, see bench/RESULTS.md).
    """
    panel = load_panel(case)
    rss_loaded = _rss_mb()
    while True:
        yield {**_engine_once(panel), "rss_loaded_mb": rss_loaded}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run of a peer's ``runs`` (see :func:`_middle`), with every run's wall time and
    the highest peak RSS of any of them (a peak figure that is not a median)."""
    runs = sorted(runs, key=lambda r: r["wall_s"])
    median = dict(runs[_middle(len(runs))])
    median["detail"] = {**median["detail"], "runs_s": [r["wall_s"] for r in runs]}
    for key in ("self_peak_mb", "children_peak_mb"):
        if key in median:
            median[key] = max(r[key] for r in runs)
    return median


def _engine_once(panel: Any) -> dict[str, Any]:
    from farm_dagster.engine.costs import BacktestSettings
    from farm_dagster.engine.runner import run_backtest

    code = BENCH_AGENT.read_text()
    started = time.perf_counter()
    result = run_backtest(
        code,
        panel,
        BacktestSettings(initial_cash=INITIAL_CASH),
        agent_id="bench",
        run_id="bench-engine",
        filename=BENCH_AGENT.name,
    )
    wall = time.perf_counter() - started
    if result.status != "completed":
        raise RuntimeError(f"engine run {result.status}: {result.error}")
    timings = result.timings
    result_s = timings.get("result_s", 0.0)
    loop_s = timings["total_s"] - timings.get("startup_s", 0.0) - result_s
    return {
        "symbol_bars": panel.n_bars * panel.n_symbols,
        "wall_s": wall,
        "detail": {
            "startup_s": timings.get("startup_s", float("nan")),
            "stream_s": loop_s,
            "result_frames_s": result_s,
            "fmel_rows": len(result.decisions),
        },
        "final_equity": float(result.equity["equity"].iloc[-1]),
        "n_orders": len(result.fills),
        "children_peak_mb": result.info.get("sandbox_peak_rss_mb") or 0.0,  # read by the runner itself
    }


def backtrader_calls(case: Case) -> Iterator[dict[str, Any]]:
    """backtrader, once (it is timed in a fresh process only)."""
    import backtrader as bt
    import pandas as pd

    panel = load_panel(case, case.bt_symbols, case.bt_bars)
    rss_loaded = _rss_mb()

    class MaCross(bt.Strategy):
        params = (("fast", FAST), ("slow", SLOW))

        def __init__(self) -> None:
            self.legs = [
                (d, bt.ind.SMA(d.close, period=self.p.fast), bt.ind.SMA(d.close, period=self.p.slow))
                for d in self.datas
            ]
            self.weight = 1.0 / len(self.datas)

        def next(self) -> None:
            for data, fast, slow in self.legs:
                want = fast[0] > slow[0]
                held = self.getposition(data).size != 0
                if want and not held:
                    self.order_target_percent(data, target=self.weight)
                elif held and not want:
                    self.close(data)

    started = time.perf_counter()
    cerebro = bt.Cerebro(stdstats=False)  # no observers: backtrader's fastest honest configuration
    index = panel.index.tz_localize(None)
    for j, symbol in enumerate(panel.symbols):
        frame = pd.DataFrame(
            {name: panel.field(name)[:, j] for name in ("open", "high", "low", "close", "volume")},
            index=index,
        )
        cerebro.adddata(bt.feeds.PandasData(dataname=frame), name=symbol)
    cerebro.addstrategy(MaCross)
    cerebro.broker.setcash(INITIAL_CASH)
    cerebro.broker.set_checksubmit(False)
    cerebro.run()  # preload + runonce: backtrader's defaults and fastest mode
    wall = time.perf_counter() - started
    yield {
        "symbol_bars": panel.n_bars * panel.n_symbols,
        "wall_s": wall,
        "detail": {"subset": f"{panel.n_symbols} symbol(s) x {panel.n_bars} bars"},
        "rss_loaded_mb": rss_loaded,
        "final_equity": float(cerebro.broker.getvalue()),
        "n_orders": None,
    }


def _vectorbt_once(close, open_) -> tuple[float, Any]:  # noqa: ANN001
    import numpy as np
    import vectorbt as vbt

    started = time.perf_counter()
    fast = close.rolling(FAST).mean()
    slow = close.rolling(SLOW).mean()
    want = fast > slow
    entries = want.shift(1, fill_value=False)  # decided on t's close, traded at t+1's open
    exits = (~want).shift(1, fill_value=False)
    pf = vbt.Portfolio.from_signals(
        close, entries, exits, price=open_, size=np.inf, init_cash=INITIAL_CASH / close.shape[1], freq="1D"
    )
    equity = pf.value().sum(axis=1)
    return time.perf_counter() - started, (pf, equity)


def vectorbt_calls(case: Case) -> Iterator[dict[str, Any]]:
    """vectorbt, one backtest a call, all in this process: the first call compiles (or loads its
    cached JIT), the next ones are "vectorbt warm"."""
    panel = load_panel(case)
    close, open_ = panel.frame("close"), panel.frame("open")
    import_started = time.perf_counter()
    import vectorbt  # noqa: F401

    import_s = time.perf_counter() - import_started
    rss_loaded = _rss_mb()
    while True:
        seconds, (pf, equity) = _vectorbt_once(close, open_)
        yield {
            "symbol_bars": panel.n_bars * panel.n_symbols,
            "wall_s": seconds,
            "detail": {"import_s": import_s, "numba_cache": os.environ.get("NUMBA_CACHE_DIR", "")},
            "rss_loaded_mb": rss_loaded,
            "final_equity": float(equity.iloc[-1]),
            "n_orders": int(pf.orders.count().sum()),
        }
        del pf, equity


PEERS = {"engine": engine_calls, "backtrader": backtrader_calls, "vectorbt": vectorbt_calls}


def worker(peer: str, case: Case, calls: int, out: Path) -> None:
    """The first ``calls`` calls of ``peer`` in this process, each with this process's peak RSS
    so far (``peak_rss_mb``)."""
    from farm_dagster.sandbox.process import peak_rss_mb

    results = []
    for result in itertools.islice(PEERS[peer](case), calls):
        result["self_peak_mb"] = peak_rss_mb() or 0.0
        result.setdefault("children_peak_mb", 0.0)
        results.append(result)
    out.write_text(json.dumps(results))


# --------------------------------------------------------------------------- parent


def spawn(
    peer: str, case: Case, calls: int = 1, env_extra: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """``calls`` runs of one peer in one fresh process, in order (see :func:`worker`)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, **(env_extra or {})}
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            peer,
            "--calls",
            str(calls),
            "--case",
            json.dumps(asdict(case)),
            "--out",
            str(out),
        ]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, check=False)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"{peer} worker failed on {case.name} (exit {proc.returncode})")
        return json.loads(out.read_text())


def python_loop_s(n: int = 5_000_000) -> float:
    """Seconds for ``n`` additions in a plain Python loop, best of 3: the machine's pure-Python speed.

    Why: the engine's two processes are mostly Python and vectorbt's loops are compiled, so the
    ratio between them moves with how fast a machine runs Python (2.5x apart on two machines
    this benchmark ran on). This figure lets runs on different machines be read side by side.
    """
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(n):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import backtrader
    import numpy
    import pandas
    import vectorbt

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python_loop": f"{python_loop_s():.2f}",
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "versions": f"numpy {numpy.__version__}, pandas {pandas.__version__}, vectorbt {vectorbt.__version__}, "
        f"backtrader {backtrader.__version__}",
    }


def measure(case: Case) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """The table's rows, and per round: the ratios of the engine (fresh process) and of the engine
    (warm process) to the vectorbt warm call made between them, and the machine's Python speed
    (:func:`python_loop_s`), which moves the engine's figures more than vectorbt's.

    Why rounds: this machine's speed drifts by up to a third within minutes; a ratio of medians
    taken minutes apart moves with that drift, a ratio of two runs made seconds apart much less.
    Why a fresh process for every peer in every round, rather than keeping the warm processes
    alive between rounds: a fresh-process engine run made beside two idle processes holding
    about 4 GB took 11.6-12.4 s against 9.3-11.6 s alone (four pairs; its system time 2.7-2.9 s
    against 0.6-1.7 s: most likely the kernel finding huge pages harder to come by).
    """
    with tempfile.TemporaryDirectory() as empty_cache:
        (vbt_cold,) = spawn("vectorbt", case, 1, {"NUMBA_CACHE_DIR": empty_cache})
    fresh, warm, firsts, vbt_warm, vbt_cached, loops = [], [], [], [], [], []
    for k in range(case.repeats):
        loops.append(python_loop_s())  # the machine's Python speed in this round
        fresh += spawn("engine", case)
        cached, warm_call = spawn("vectorbt", case, 2)  # the first call loads the project's JIT cache
        vbt_cached.append(cached)
        vbt_warm.append(warm_call)
        first, warm_run = spawn("engine", case, 2)
        firsts.append(first)
        warm.append(warm_run)
        print(
            f"round {k + 1}/{case.repeats}: Python loop {loops[-1]:.2f}s, engine {fresh[-1]['wall_s']:.2f}s, "
            f"vectorbt warm {vbt_warm[-1]['wall_s']:.2f}s, engine warm process {warm[-1]['wall_s']:.2f}s",
            flush=True,
        )
    rounds = {
        "engine": [e["wall_s"] / v["wall_s"] for e, v in zip(fresh, vbt_warm, strict=True)],
        "engine warm process": [w["wall_s"] / v["wall_s"] for w, v in zip(warm, vbt_warm, strict=True)],
        "python loop": loops,
    }
    rows = []
    engine = _median_run(fresh)
    engine["peer"] = "engine (sandbox)"
    rows.append(engine)
    warm_engine = _median_run(warm)
    warm_engine["detail"]["first_s"] = [f["wall_s"] for f in firsts]
    warm_engine["peer"] = "engine warm process (sandbox)"
    rows.append(warm_engine)
    (bt_res,) = spawn("backtrader", case)
    bt_res["peer"] = "backtrader" + (" (subset, extrapolated)" if _bt_is_subset(case) else "")
    rows.append(bt_res)
    vbt_row = _median_run(vbt_warm)
    vbt_row["peer"] = "vectorbt warm"
    rows.append(vbt_row)
    rows.append({**vbt_cold, "peer": "vectorbt cold (JIT compile)"})
    rows.append({**_median_run(vbt_cached), "peer": "vectorbt cold (cached JIT)"})
    for row in rows:
        row["case"] = case.name
        row["peak_mb"] = row["self_peak_mb"] + row.get("children_peak_mb", 0.0)
        row["throughput"] = row["symbol_bars"] / row["wall_s"]
    return rows, rounds


def _middle(n_runs: int) -> int:
    """Index of the median of ``n_runs`` sorted runs (the lower one of an even count: a real run)."""
    return (n_runs - 1) // 2


def _runs_note(runs: list[float]) -> str:
    if len(runs) == 1:
        return "1 run"
    return f"median of {len(runs)} runs ({min(runs):.2f}-{max(runs):.2f}s)"


def _bt_is_subset(case: Case) -> bool:
    return case.source == "synthetic" and (case.bt_symbols, case.bt_bars) != (case.n_symbols, case.n_bars)


def ratios(rows: list[dict[str, Any]], rounds: dict[str, list[float]]) -> dict[str, Any]:
    """The figures the targets are read on. Against vectorbt warm: the median of the rounds' pair
    ratios (the target's verdict), and the ratio of the two median runs beside it."""
    by = {
        r["peer"].split(" (")[0] if r["peer"].startswith(("engine", "backtrader")) else r["peer"]: r
        for r in rows
    }
    engine, bt_row, warm = by["engine"], by["backtrader"], by["vectorbt warm"]
    return {
        "engine_vs_backtrader_throughput": engine["throughput"] / bt_row["throughput"],
        "engine_vs_vectorbt_warm_time": _median(rounds["engine"]),
        "engine_vs_vectorbt_warm_pairs": sorted(rounds["engine"]),
        "engine_vs_vectorbt_warm_medians": engine["wall_s"] / warm["wall_s"],
        "engine_warm_vs_vectorbt_warm_time": _median(rounds["engine warm process"]),
        "engine_warm_vs_vectorbt_warm_pairs": sorted(rounds["engine warm process"]),
        "python_loop_s": rounds["python loop"],
    }


def _median(values: list[float]) -> float:
    """The median of ``values`` as :func:`_middle` picks it (a real run, not an average of two)."""
    return sorted(values)[_middle(len(values))]


def _spread(values: list[float]) -> str:
    return f"{len(values)} pair(s), {min(values):.2f}-{max(values):.2f}x"


def render(case: Case, rows: list[dict[str, Any]], rat: dict[str, Any]) -> str:
    lines = [
        f"### {case.label}",
        "",
        "| peer | symbol-bars | wall (s) | symbol-bars/s | peak RSS (MB) | final equity | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        notes = []
        d = r.get("detail", {})
        if r["peer"].startswith("engine"):
            notes.append(
                f"sandbox start {d['startup_s']:.2f}s, stream {d['stream_s']:.2f}s, "
                f"result frames {d['result_frames_s']:.2f}s; RSS = parent {r['self_peak_mb']:.0f}"
                f" + sandbox {r['children_peak_mb']:.0f}; {_runs_note(d['runs_s'])}"
            )
            if "first_s" in d:
                notes.append(
                    f"each the second run of a fresh process, after a first one "
                    f"({min(d['first_s']):.2f}-{max(d['first_s']):.2f}s)"
                )
            else:
                notes.append("each run in a fresh process")
        if r["peer"].startswith("backtrader"):
            notes.append(d["subset"])
        if r["peer"] == "vectorbt warm":
            notes.append(
                f"each the second call of a fresh process; {_runs_note(d['runs_s'])}; "
                f"import {d['import_s']:.1f}s not counted"
            )
        notes.append(f"data in memory {r['rss_loaded_mb']:.0f} MB")
        lines.append(
            f"| {r['peer']} | {r['symbol_bars']:,} | {r['wall_s']:.3f} | {r['throughput']:,.0f} | "
            f"{r['peak_mb']:.0f} | {r['final_equity']:,.0f} | {'; '.join(notes)} |"
        )
    lines += [
        "",
        f"- engine throughput / backtrader throughput: **{rat['engine_vs_backtrader_throughput']:.1f}x** "
        f"(target >= {TARGET_VS_BACKTRADER:g}x: "
        f"{'met' if rat['engine_vs_backtrader_throughput'] >= TARGET_VS_BACKTRADER else 'NOT met'})",
        f"- engine wall time / vectorbt warm time, median of the rounds' pair ratios: "
        f"**{rat['engine_vs_vectorbt_warm_time']:.2f}x** ({_spread(rat['engine_vs_vectorbt_warm_pairs'])}; "
        f"ratio of the median runs {rat['engine_vs_vectorbt_warm_medians']:.2f}x) "
        f"(target <= {TARGET_VS_VECTORBT:g}x on the large case: "
        f"{'met' if rat['engine_vs_vectorbt_warm_time'] <= TARGET_VS_VECTORBT else 'NOT met'})",
        f"- like for like, both after a first run in their process: engine warm process / vectorbt warm: "
        f"**{rat['engine_warm_vs_vectorbt_warm_time']:.2f}x** ({_spread(rat['engine_warm_vs_vectorbt_warm_pairs'])})",
        f"- the machine's Python speed, round by round (5,000,000 additions, best of 3): "
        f"{', '.join(f'{s:.2f}' for s in rat['python_loop_s'])} s",
        "",
    ]
    return "\n".join(lines)


def section_main(
    argv: list[str] | None, doc: str, section: str, measure: Any, render: Any, repeats_help: str
) -> int:
    """The command line of a one-case bench (bench_split.py, bench_book.py): the large case or
    ``--quick``, ``--repeats``, and the section of RESULTS.md it rewrites unless ``--no-write``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 x 20,000 bars instead of 100 x 100,000")
    parser.add_argument("--repeats", type=int, default=3, help=f"{repeats_help} (default 3)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    text = render(measure(100, 20_000 if args.quick else 100_000, args.repeats))
    print(text)
    if not args.no_write:
        write_results(text, section=section)
        print(f"wrote the {section} section of bench/RESULTS.md")
    return 0


def write_results(text: str, section: str = "bench_engine") -> None:
    """Put ``text`` between the ``<!-- {section}:start/end -->`` markers of RESULTS.md (appended
    when they are not there yet); the rest of the file is left as it is."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    block = f"{start}\n{text}\n{end}"
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current)
    else:
        updated = current.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(updated)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small synthetic case (seconds, not minutes)")
    parser.add_argument("--no-write", action="store_true", help=f"print only, leave {RESULTS.name} alone")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="rounds of timed runs: the engine in a fresh process, vectorbt warm, the engine in a warm "
        "process; the medians and the median pair ratio count",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, Case(**json.loads(args.case)), args.calls, Path(args.out))
        return 0

    info = machine()
    header = [
        "## Engine: The Farm vs backtrader vs vectorbt (bench/bench_engine.py)",
        "",
        f"Machine: {info['cpu']}, nproc={info['nproc']}, Python {info['python']}; {info['versions']}. "
        f"Run: {info['date']}{' (--quick)' if args.quick else ''}; load average at start "
        f"{os.getloadavg()[0]:.2f} (other jobs on the machine make every number noisier). "
        f"Pure Python here: 5,000,000 additions in a loop take {info['python_loop']} s (best of 3; "
        "ratios against vectorbt move with it).",
        "",
        "Same logic everywhere: SMA(10)/SMA(30) crossover, long/flat, signal at t's close traded at t+1's open, "
        "1/N of capital per symbol, no costs. Each peer runs in its own process; peak RSS = VmHWM "
        "(engine: parent + sandboxed agent). symbol-bars/s = symbols x bars / wall time of the backtest "
        "(data already in memory). See the script's docstring for the sizing differences between peers.",
        "",
    ]
    body = []
    with tempfile.TemporaryDirectory() as data_dir:
        for case in cases(args.quick):
            case = Case(**{**asdict(case), "repeats": max(1, args.repeats)})  # noqa: PLW2901
            print(f"== {case.label}", flush=True)
            if case.source == "spx":
                case = save_real_panel(case, Path(data_dir))  # noqa: PLW2901
            rows, rounds = measure(case)
            rat = ratios(rows, rounds)
            block = render(case, rows, rat)
            print(block, flush=True)
            body.append(block)
    text = "\n".join(header + body)
    if not args.no_write:
        write_results(text)
        print(f"wrote the engine section of {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
