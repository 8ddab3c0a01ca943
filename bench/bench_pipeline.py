"""Pipeline benchmark: agent backtests per minute through Dagster, and where a run's time goes.

    .venv/bin/python bench/bench_pipeline.py              # 12 agents, writes bench/RESULTS.md
    .venv/bin/python bench/bench_pipeline.py --quick      # 4 agents, prints only
    .venv/bin/python bench/bench_pipeline.py --agents 20 --keep

Setup, all in a fresh temporary data home (FARM_HOME, DAGSTER_HOME under it, the local
profile's dagster.yaml from :mod:`farm_dagster.instance`: QueuedRunCoordinator, 2 runs at a
time) and a private redis-server (or $REDIS_URL): the real market data is loaded by
``market_data_job``; the universe is the 26 real series covering the whole 10-year window
2003-03-03..2013-02-28 (no 30 real series cover any 10-year window: bokeh's OHLCV ends in
March 2013, the factor ETFs start in 2014) plus 4 SYNTHETIC symbols SYN0001..SYN0004 from
:mod:`farm_dagster.market_data.synthetic`, put on the real sessions of the window and written to
this throwaway warehouse's ``market_data.ohlcv`` with source ``synthetic (seeded, seed=...)``.
Agents are the native examples (MA crossover, RSI mean reversion, momentum rotation, buy and
hold) cycled with different ``params``, all on the same 30 symbols and window.

Two measurements of the same work:

(a) daemon: what production does locally. A real ``dagster-daemon`` (which starts its own code
    server) runs ``agent_submission_sensor``; the QueuedRunCoordinator dequeues and the
    DefaultRunLauncher starts each run in its own process through the code server. The bench
    only calls ``submit_agent`` and watches the instance. Leaderboard refresh runs requested by
    ``leaderboard_after_backtest`` run too (queued behind the backtests), as they would.
(b) in-process: the same submissions, sensor ticked by hand, then ``execute_in_process`` one
    partition after the other on the same persistent instance (what ``farm demo`` does).

Attribution. The code location of both modes is ``build_definitions()`` with thin timers around
the helpers the ``agent_backtest`` asset calls (agent record, validation, ``load_panel``,
``run_backtest``, warehouse writes, artifacts, checks) and around
``DagsterInstance.handle_new_event`` (every event-log write); each timer appends one JSON line
(pid, name, wall-clock start/end) to a file. Run phases come from the run's own event log
(STARTING, START, STEP_START/END, SUCCESS). Run wall = launch (STARTING; in-process: the call)
to the run's end event. Engine = the engine's own ``timings.total_s`` from the materialization
metadata minus the event-log writes its progress callback made. Dagster overhead = process
start (STARTING -> START: spawn, imports, code location load) + event-log writes + the rest of the
wall not covered by a timer (run/step setup and resource init, teardown, orchestration).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION_START = "<!-- bench_pipeline:start -->"
SECTION_END = "<!-- bench_pipeline:end -->"
TIMINGS_ENV = "FARM_BENCH_TIMINGS"

WINDOW = ("2003-03-01", "2013-02-28")  # 10 years of daily sessions
REAL_SYMBOLS = (
    # bokeh-sampledata OHLCV (2000-03..2013-03) and arch index OHLCV (1999-2018)
    *("AAPL", "IBM", "MSFT", "SPX", "COMP"),
    # skfolio adjusted close-only (1990-2022)
    *("SP500", "AAPL.ADJ", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM"),
    *("KO", "LLY", "MRK", "MSFT.ADJ", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM"),
)
N_SYNTHETIC = 30 - len(REAL_SYMBOLS)
SYNTHETIC_SEED = 20030301

# (example file, params replacing the class's `params = {...}` line; None = the file as shipped)
VARIANTS: tuple[tuple[str, dict[str, Any] | None], ...] = (
    ("ma_crossover.py", {"fast": 10, "slow": 30}),
    ("rsi_mean_reversion.py", {"window": 14, "oversold": 30.0, "recovered": 55.0}),
    ("momentum_rotation.py", {"lookback": 126, "top_n": 2}),
    ("buy_and_hold.py", None),
    ("ma_crossover.py", {"fast": 20, "slow": 50}),
    ("rsi_mean_reversion.py", {"window": 10, "oversold": 25.0, "recovered": 50.0}),
    ("momentum_rotation.py", {"lookback": 63, "top_n": 5}),
    ("buy_and_hold.py", None),
    ("ma_crossover.py", {"fast": 5, "slow": 20}),
    ("rsi_mean_reversion.py", {"window": 21, "oversold": 35.0, "recovered": 60.0}),
    ("momentum_rotation.py", {"lookback": 252, "top_n": 3}),
    ("buy_and_hold.py", None),
)

# Helpers called by the agent_backtest asset (module assets.backtests) that get a timer.
TIMED_HELPERS = (
    "get_agent",
    "set_status",
    "load_code",
    "validate_agent_code",
    "load_panel",
    "run_backtest",
    "write_decisions",
    "write_run_tables",
    "_store_artifacts",
    "check_results",
)
EVENT_WRITE = "handle_new_event"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
BACKTEST_JOB = "backtest_agent_job"
MAX_CONCURRENT_RUNS = 2  # run_coordinator limit of the local dagster.yaml (farm_dagster/instance.py)


# --- instrumentation (runs in the code server, every run worker and the bench process) ----------


def _event_kind(args: tuple[Any, ...]) -> str:
    """The stored event's type (or "log" for a plain log line): handle_new_event(self, entry)."""
    entry = args[1] if len(args) > 1 else None
    event = getattr(entry, "dagster_event", None)
    return event.event_type_value if event is not None else "log message"


def _timed(
    name: str, fn: Callable[..., Any], sink: Path, kind: Callable[[tuple[Any, ...]], str] | None = None
) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            t1 = time.time()
            record = {"pid": os.getpid(), "name": name, "t0": t0, "t1": t1}
            if kind is not None:
                record["kind"] = kind(args)
            with sink.open("a") as out:
                out.write(json.dumps(record) + "\n")

    wrapper.__bench_timed__ = True  # type: ignore[attr-defined]
    return wrapper


def instrument() -> None:
    """Wrap the asset's helpers and the event-log writes with timers (idempotent, per process)."""
    sink = os.environ.get(TIMINGS_ENV)
    if not sink:
        raise RuntimeError(f"{TIMINGS_ENV} is not set: the bench code location needs a timings file")
    path = Path(sink)
    import assets.backtests as module

    for name in TIMED_HELPERS:
        current = getattr(module, name)
        if not getattr(current, "__bench_timed__", False):
            setattr(module, name, _timed(name, current, path))
    current = dg.DagsterInstance.handle_new_event
    if not getattr(current, "__bench_timed__", False):
        dg.DagsterInstance.handle_new_event = _timed(EVENT_WRITE, current, path, _event_kind)  # type: ignore[method-assign]


@dg.definitions
def bench_definitions() -> dg.Definitions:
    """The code location the daemon loads: the platform's definitions, with timers."""
    instrument()
    from farm_dagster.definitions import build_definitions

    return build_definitions()


# --- environment ---------------------------------------------------------------------------------


@contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, str]]:
    """(url, origin): $REDIS_URL when set, else a private redis-server stopped on exit."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"], "$REDIS_URL"
        return
    import redis

    from farm_dagster.local_services import RedisStartError, free_port, start_redis_server

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        proc = start_redis_server(
            workdir, ["--port", str(port), "--bind", "127.0.0.1"], redis.Redis.from_url(url)
        )
    except RedisStartError as exc:
        raise SystemExit(str(exc)) from None
    try:
        yield url, f"private redis-server (pid {proc.pid})"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def machine() -> dict[str, str]:
    model = "unknown"
    mem = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024**2:.1f} GB RAM"
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "nproc": str(os.cpu_count()),
        "mem": mem,
        "python": platform.python_version(),
        "dagster": dg.__version__,
    }


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}/{five:.2f}/{fifteen:.2f}"


# --- data and agents -----------------------------------------------------------------------------


def prepare_market_data(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, Any]:
    """market_data_job through Dagster, then the labelled synthetic fill-up symbols; the panel's shape."""
    import numpy as np
    import pandas as pd

    from farm_dagster.market_data.store import load_panel, read_ohlcv, write_ohlcv
    from farm_dagster.market_data.synthetic import synthetic_ohlcv, synthetic_source
    from farm_dagster.resources.tables import OHLCV

    started = time.perf_counter()
    loaded = defs.resolve_job_def("market_data_job").execute_in_process(instance=instance, run_config=QUIET)
    if not loaded.success:
        raise SystemExit("market_data_job failed; its logs are in the bench's DAGSTER_HOME")
    load_s = time.perf_counter() - started
    warehouse = defs.resources["warehouse"]
    sessions = read_ohlcv(warehouse, ["SP500"], *WINDOW)["timestamp"]
    stamps = pd.DatetimeIndex(sessions).as_unit("ns").asi8
    synthetic = synthetic_ohlcv(N_SYNTHETIC, len(stamps), SYNTHETIC_SEED)
    # Same generator, put on the window's real NYSE sessions so every bar lines up with the real series.
    synthetic["timestamp"] = pd.to_datetime(np.tile(stamps, N_SYNTHETIC), utc=True)
    write_ohlcv(warehouse, synthetic, OHLCV)
    symbols = [*REAL_SYMBOLS, *sorted(synthetic["symbol"].astype(str).unique())]
    panel = load_panel(warehouse, symbols, *WINDOW)
    close = panel.close
    return {
        "symbols": symbols,
        "synthetic": [s for s in symbols if s not in REAL_SYMBOLS],
        "synthetic_source": synthetic_source(SYNTHETIC_SEED),
        "bars": panel.n_bars,
        "first": pd.Timestamp(panel.timestamps[0], tz="UTC").date().isoformat(),
        "last": pd.Timestamp(panel.timestamps[-1], tz="UTC").date().isoformat(),
        "close_only": sum(panel.close_only),
        "nan_share": float(np.isnan(close).mean()),
        "market_data_job_s": load_s,
    }


_PARAMS_LINE = re.compile(r"^(\s+)params = \{.*\}$", re.MULTILINE)


def agent_code(file: str, params: dict[str, Any] | None) -> str:
    code = (ROOT / "examples" / file).read_text()
    if params is None:
        return code
    new, count = _PARAMS_LINE.subn(lambda m: f"{m.group(1)}params = {params!r}", code)
    if count != 1:
        raise SystemExit(f"examples/{file}: expected one `params = {{...}}` line, found {count}")
    return new


def submit_batch(defs: dg.Definitions, n: int, symbols: list[str], tag: str) -> dict[str, float]:
    """Submit ``n`` agents; agent id -> submission time (epoch seconds)."""
    from farm_dagster.agents import BacktestRequest, submit_agent

    request = BacktestRequest(symbols=symbols, start=WINDOW[0], end=WINDOW[1])
    submitted = {}
    for i in range(n):
        file, params = VARIANTS[i % len(VARIANTS)]
        label = ",".join(f"{k}={v}" for k, v in (params or {}).items()) or "as shipped"
        doc = submit_agent(
            defs.resources["opstore"],
            defs.resources["object_store"],
            code=agent_code(file, params),
            name=f"{file.removesuffix('.py')} ({label})",
            user_id=f"bench-{tag}",
            filename=file,
            request=request,
            agent_id=f"{tag}-{i:02d}-{file.removesuffix('.py').replace('_', '-')}",
        )
        submitted[doc["id"]] = time.time()
    return submitted


# --- measurement ---------------------------------------------------------------------------------


@dataclass
class RunTiming:
    agent_id: str
    run_id: str
    ok: bool
    submitted: float
    created: float
    launched: float  # STARTING (daemon) or the execute_in_process call (in-process)
    started: float  # RUN_START
    step_start: float
    step_end: float
    ended: float
    pid: int
    engine_timings: dict[str, float]
    error: str = ""
    marks: dict[str, float] = field(default_factory=dict)
    parts: dict[str, float] = field(default_factory=dict)
    event_kinds: dict[str, tuple[int, float]] = field(default_factory=dict)

    @property
    def wall(self) -> float:
        return self.ended - self.launched


def _records(sink: Path) -> list[dict[str, Any]]:
    if not sink.exists():
        return []
    return [json.loads(line) for line in sink.read_text().splitlines() if line.strip()]


def _events(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    """First timestamp of each run/step event, the worker pid and the engine timings."""
    from dagster._core.events import DagsterEventType as E

    marks: dict[str, float] = {}
    pid = 0
    timings: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type
        if kind in (E.RUN_STARTING, E.RUN_START, E.STEP_START, E.RUN_SUCCESS, E.RUN_FAILURE):
            marks.setdefault(kind.value, entry.timestamp)
        if kind == E.ENGINE_EVENT and E.RUN_STARTING.value in marks and E.RUN_START.value not in marks:
            marks.setdefault("WORKER_UP", entry.timestamp)  # the worker's first word: process is up
        if kind in (E.STEP_SUCCESS, E.STEP_FAILURE):
            marks["STEP_END"] = entry.timestamp
        if kind == E.STEP_START:
            pid = event.pid or 0
        if kind == E.ASSET_MATERIALIZATION:
            value = event.step_materialization_data.materialization.metadata.get("timings")
            if value is not None:
                timings = dict(value.value)
    marks["END"] = marks.get(E.RUN_SUCCESS.value, marks.get(E.RUN_FAILURE.value, 0.0))
    return {"marks": marks, "pid": pid, "timings": timings}


def attribute(run: RunTiming, records: list[dict[str, Any]]) -> None:
    """Split the run's wall time into parts that add up to it (see the module docstring)."""
    mine = [
        r
        for r in records
        if r["pid"] == run.pid and r["t0"] >= run.launched - 0.01 and r["t1"] <= run.ended + 0.01
    ]

    def total(*names: str) -> float:
        return sum(r["t1"] - r["t0"] for r in mine if r["name"] in names)

    events = [r for r in mine if r["name"] == EVENT_WRITE]
    engine_calls = [r for r in mine if r["name"] == "run_backtest"]
    in_engine = sum(
        e["t1"] - e["t0"] for e in events for c in engine_calls if c["t0"] <= e["t0"] and e["t1"] <= c["t1"]
    )
    before_start = sum(e["t1"] - e["t0"] for e in events if e["t1"] <= run.started)
    engine_total = run.engine_timings.get("total_s", total("run_backtest"))
    parts = {
        "run creation / process start": max(run.started - run.launched, 0.0) - before_start,
        "agent record + validation": total("get_agent", "set_status", "load_code", "validate_agent_code"),
        "warehouse read (load_panel)": total("load_panel"),
        "engine": engine_total - in_engine,
        "warehouse writes": total("write_decisions", "write_run_tables"),
        "artifacts (PNGs, result.json)": total("_store_artifacts"),
        "asset checks": total("check_results"),
        "event log writes": total(EVENT_WRITE),
    }
    parts["other Dagster (setup, resources, teardown)"] = run.wall - sum(parts.values())
    worker_up = run.marks.get("WORKER_UP")
    if worker_up is not None:
        parts["  of which launch -> worker process up"] = worker_up - run.launched
        parts["  of which worker up -> run start (code location load)"] = run.started - worker_up
    parts["  of which run start -> step start"] = run.step_start - run.started
    parts["  of which step end -> run end"] = run.ended - run.step_end
    run.parts = parts
    for e in events:
        count, seconds = run.event_kinds.get(e["kind"], (0, 0.0))
        run.event_kinds[e["kind"]] = (count + 1, seconds + e["t1"] - e["t0"])


def _first_and_last_line(text: str | None) -> str:
    lines = str(text or "").strip().splitlines()
    return " ... ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else ""


DAGSTER_PARTS = (
    "run creation / process start",
    "event log writes",
    "other Dagster (setup, resources, teardown)",
)
PLATFORM_PARTS = (
    "agent record + validation",
    "warehouse read (load_panel)",
    "warehouse writes",
    "artifacts (PNGs, result.json)",
    "asset checks",
)


def collect(
    instance: dg.DagsterInstance,
    opstore: Any,
    run_ids: dict[str, str],
    submitted: dict[str, float],
    sink: Path,
    launched: dict[str, float] | None = None,
) -> list[RunTiming]:
    from farm_dagster.agents import AGENTS

    records = _records(sink)
    runs = []
    for agent_id, run_id in run_ids.items():
        record = instance.get_run_record_by_id(run_id)
        info = _events(instance, run_id)
        marks = info["marks"]
        run = RunTiming(
            agent_id=agent_id,
            run_id=run_id,
            ok=record.dagster_run.status == dg.DagsterRunStatus.SUCCESS,
            submitted=submitted[agent_id],
            created=record.create_timestamp.timestamp(),
            launched=(launched or {}).get(agent_id, marks.get("PIPELINE_STARTING", marks["PIPELINE_START"])),
            started=marks["PIPELINE_START"],
            step_start=marks.get("STEP_START", marks["PIPELINE_START"]),
            step_end=marks.get("STEP_END", marks["END"]),
            ended=marks["END"],
            pid=info["pid"],
            engine_timings=info["timings"],
            marks=marks,
            error=_first_and_last_line(opstore.get(AGENTS, agent_id).get("error")),
        )
        attribute(run, records)
        runs.append(run)
    return runs


def run_daemon_mode(
    defs: dg.Definitions, instance: dg.DagsterInstance, home: Path, n: int, symbols: list[str], timeout: float
) -> tuple[list[RunTiming], dict[str, Any]]:
    """(a): submit, and let dagster-daemon + its code server + run workers do the rest."""
    from farm_dagster.local_services import stop_process_group

    workspace = home / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_file:\n"
        f"      relative_path: {Path(__file__).resolve()}\n"
        f"      working_directory: {ROOT}\n"
        "      location_name: farm\n"
    )
    log = (home / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(workspace)],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for_sensor_tick(instance, daemon, home / "daemon.log")
        load_before = load_text()
        submitted = submit_batch(defs, n, symbols, "daemon")
        print(f"(a) submitted {n} agents; waiting for dagster-daemon to run them ...", flush=True)
        run_ids = _wait_for_runs(instance, set(submitted), timeout, daemon, home / "daemon.log")
        backtests_done = time.time()
        load_after = load_text()
        extra = _drain(instance, timeout=max(120.0, timeout / 4))
    finally:
        stop_process_group(daemon)
        log.close()
    context = {
        "load_before": load_before,
        "load_after": load_after,
        "backtests_done": backtests_done,
        "other_runs": extra,
    }
    runs = collect(instance, defs.resources["opstore"], run_ids, submitted, Path(os.environ[TIMINGS_ENV]))
    return runs, context


def _daemon_failed(daemon: subprocess.Popen[bytes], log: Path) -> SystemExit:
    tail = "\n".join(log.read_text().splitlines()[-30:]) if log.exists() else ""
    return SystemExit(f"dagster-daemon exited with {daemon.returncode}; {log}:\n{tail}")


def _wait_for_sensor_tick(instance: dg.DagsterInstance, daemon: subprocess.Popen[bytes], log: Path) -> None:
    """Submit only once the daemon is up and has ticked the submission sensor (startup not counted)."""
    from dagster._core.definitions.run_request import InstigatorType

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise _daemon_failed(daemon, log)
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name == "agent_submission_sensor" and instance.get_ticks(
                state.instigator_origin_id, state.selector_id, limit=1
            ):
                return
        time.sleep(0.5)
    raise SystemExit(f"agent_submission_sensor never ticked within 180 s; see {log}")


TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _wait_for_runs(
    instance: dg.DagsterInstance,
    agents: set[str],
    timeout: float,
    daemon: subprocess.Popen[bytes],
    log: Path,
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    reported = -1
    while True:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name=BACKTEST_JOB))
        mine = {r.tags.get("farm/agent_id"): r for r in runs if r.tags.get("farm/agent_id") in agents}
        finished = [r for r in mine.values() if r.status in TERMINAL]
        if len(finished) != reported:
            reported = len(finished)
            print(f"    {reported}/{len(agents)} backtest runs finished  (load {load_text()})", flush=True)
        if len(finished) == len(agents):
            return {agent: run.run_id for agent, run in mine.items()}
        if daemon.poll() is not None:
            raise _daemon_failed(daemon, log)
        if time.monotonic() > deadline:
            raise SystemExit(
                f"only {len(finished)}/{len(agents)} backtest runs finished within {timeout:.0f} s"
            )
        time.sleep(0.5)


def _drain(instance: dg.DagsterInstance, timeout: float) -> dict[str, Any]:
    """Let the other runs (leaderboard refreshes) finish so no run worker outlives the daemon."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="refresh_leaderboard_job"))
        if runs and all(r.status in TERMINAL for r in runs):
            break
        time.sleep(1.0)
    runs = instance.get_runs(filters=dg.RunsFilter(job_name="refresh_leaderboard_job"))
    walls = []
    for run in runs:
        record = instance.get_run_record_by_id(run.run_id)
        if record.start_time and record.end_time:
            walls.append(record.end_time - record.start_time)
    return {
        "refresh_runs": len(runs),
        "refresh_unfinished": sum(r.status not in TERMINAL for r in runs),
        "refresh_mean_s": statistics.mean(walls) if walls else 0.0,
    }


def run_in_process_mode(
    defs: dg.Definitions, instance: dg.DagsterInstance, n: int, symbols: list[str]
) -> tuple[list[RunTiming], dict[str, Any]]:
    """(b): sensor ticked by hand, then execute_in_process per partition, sequentially (like the demo)."""
    from sensors.submissions import agent_submission_sensor

    load_before = load_text()
    submitted = submit_batch(defs, n, symbols, "inproc")
    context = dg.build_sensor_context(
        instance=instance, cursor=None, resources={k: defs.resources[k] for k in ("opstore", "bus")}
    )
    result = agent_submission_sensor(context)
    if not isinstance(result, dg.SensorResult):
        raise SystemExit(f"the submission sensor requested nothing: {result}")
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    job = defs.resolve_job_def(BACKTEST_JOB)
    run_ids, launched = {}, {}
    for i, request in enumerate(result.run_requests, 1):
        launched[request.partition_key] = time.time()
        outcome = job.execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags=request.tags,
            raise_on_error=False,
            run_config=QUIET,
        )
        run_ids[request.partition_key] = outcome.run_id
        print(
            f"    {i}/{len(result.run_requests)} in-process runs finished  (load {load_text()})", flush=True
        )
    context_info = {
        "load_before": load_before,
        "load_after": load_text(),
        "backtests_done": time.time(),
        "in_process": True,
    }
    runs = collect(
        instance, defs.resources["opstore"], run_ids, submitted, Path(os.environ[TIMINGS_ENV]), launched
    )
    return runs, context_info


# --- report --------------------------------------------------------------------------------------


def summarize(runs: list[RunTiming], context: dict[str, Any]) -> dict[str, Any]:
    first_submit = min(r.submitted for r in runs)
    last_end = max(r.ended for r in runs)
    first_launch = min(r.launched for r in runs)
    span = last_end - first_submit
    walls = [r.wall for r in runs]
    walls_by_launch = [r.wall for r in sorted(runs, key=lambda r: r.launched)][1:] or walls
    total_wall = sum(walls)
    slots = 1 if context.get("in_process") else MAX_CONCURRENT_RUNS
    names = list(dict.fromkeys(name for r in runs for name in r.parts))
    parts = {name: sum(r.parts.get(name, 0.0) for r in runs) for name in names}
    kinds: dict[str, list[float]] = {}
    for r in runs:
        for kind, (count, seconds) in r.event_kinds.items():
            acc = kinds.setdefault(kind, [0.0, 0.0])
            acc[0] += count / len(runs)
            acc[1] += seconds / len(runs)
    engine = parts["engine"]
    dagster = sum(parts[p] for p in DAGSTER_PARTS)
    platform_ = sum(parts[p] for p in PLATFORM_PARTS)
    bars = [r.engine_timings.get("bars_per_s", 0.0) for r in runs if r.engine_timings]
    return {
        "n": len(runs),
        "ok": sum(r.ok for r in runs),
        "span_s": span,
        "per_min": 60.0 * len(runs) / span,
        "per_min_from_launch": 60.0 * len(runs) / (last_end - first_launch),
        "wall_mean": statistics.mean(walls),
        "wall_median": statistics.median(walls),
        "wall_min": min(walls),
        "wall_max": max(walls),
        "engine_mean": engine / len(runs),
        "startup_mean": statistics.mean(r.engine_timings.get("startup_s", 0.0) for r in runs),
        "result_mean": statistics.mean(r.engine_timings.get("result_s", 0.0) for r in runs),
        "bars_per_s": statistics.mean(bars) if bars else 0.0,
        "slots": slots,
        "utilization": total_wall / (slots * (last_end - first_launch)),
        "first_wall": min(runs, key=lambda r: r.launched).wall,
        "rest_median": statistics.median(walls_by_launch),
        "sensor_latency": statistics.mean(r.created - r.submitted for r in runs),
        "queue_wait": statistics.mean(max(r.launched - r.created, 0.0) for r in runs),
        "parts_mean": {k: v / len(runs) for k, v in parts.items()},
        "parts_share": {k: v / total_wall for k, v in parts.items()},
        "event_kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1][1])),
        "engine_share": engine / total_wall,
        "dagster_share": dagster / total_wall,
        "platform_share": platform_ / total_wall,
        **context,
    }


def parts_table(a: dict[str, Any], b: dict[str, Any] | None) -> list[str]:
    head = "| part of a run's wall time | (a) daemon: s/run | share | (b) in-process: s/run | share |"
    rows = [head, "|---|---:|---:|---:|---:|"]
    for name in a["parts_mean"]:
        cells = [
            f"{a['parts_mean'][name]:.2f}",
            "" if name.startswith("  ") else f"{a['parts_share'][name]:.0%}",
        ]
        if b is not None and name in b["parts_mean"]:
            cells += [
                f"{b['parts_mean'][name]:.2f}",
                "" if name.startswith("  ") else f"{b['parts_share'][name]:.0%}",
            ]
        else:
            cells += ["", ""]
        label = name.replace("  of which", "&nbsp;&nbsp;of which")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    rows.append(
        f"| **run wall** | **{a['wall_mean']:.2f}** | 100% | "
        + (f"**{b['wall_mean']:.2f}** | 100% |" if b else " | |")
    )
    return rows


def events_table(a: dict[str, Any], b: dict[str, Any] | None, top: int = 8) -> list[str]:
    """Event-log writes per run by event type, the costliest first (from the (a) runs)."""
    rows = [
        "| event type | (a) writes/run | (a) ms/run | (b) writes/run | (b) ms/run |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, (count, seconds) in list(a["event_kinds"].items())[:top]:
        other = (b or {}).get("event_kinds", {}).get(kind)
        tail = f"{other[0]:.1f} | {other[1] * 1000:.0f}" if other else " | "
        rows.append(f"| {kind} | {count:.1f} | {seconds * 1000:.0f} | {tail} |")
    total_a = sum(c for c, _ in a["event_kinds"].values()), sum(t for _, t in a["event_kinds"].values())
    line = f"| all | {total_a[0]:.1f} | {total_a[1] * 1000:.0f} | "
    if b is not None:
        total_b = sum(c for c, _ in b["event_kinds"].values()), sum(t for _, t in b["event_kinds"].values())
        line += f"{total_b[0]:.1f} | {total_b[1] * 1000:.0f} |"
    else:
        line += " | |"
    rows.append(line)
    return rows


def _queued(s: dict[str, Any], key: str) -> str:
    """Sensor and queue latencies exist only in (a); in (b) execute_in_process creates the run."""
    return "n/a" if s.get("in_process") else f"{s[key]:.1f}"


def summary_table(a: dict[str, Any], b: dict[str, Any] | None) -> list[str]:
    spec = [
        ("backtests (completed)", lambda s: f"{s['n']} ({s['ok']})"),
        ("backtests per minute (first submission -> last run end)", lambda s: f"**{s['per_min']:.2f}**"),
        ("backtests per minute (first launch -> last run end)", lambda s: f"{s['per_min_from_launch']:.2f}"),
        ("wall clock of the batch (s)", lambda s: f"{s['span_s']:.1f}"),
        ("per-run wall, mean / median (s)", lambda s: f"{s['wall_mean']:.2f} / {s['wall_median']:.2f}"),
        ("per-run wall, min / max (s)", lambda s: f"{s['wall_min']:.2f} / {s['wall_max']:.2f}"),
        ("engine time per run (s)", lambda s: f"{s['engine_mean']:.2f}"),
        (
            "  engine: sandbox start / result frames (s)",
            lambda s: f"{s['startup_mean']:.2f} / {s['result_mean']:.2f}",
        ),
        ("  engine: bars/s in the stream loop", lambda s: f"{s['bars_per_s']:,.0f}"),
        ("share of run wall: engine", lambda s: f"**{s['engine_share']:.0%}**"),
        ("share of run wall: Dagster overhead", lambda s: f"**{s['dagster_share']:.0%}**"),
        (
            "share of run wall: platform I/O (record, data read, writes, artifacts, checks)",
            lambda s: f"{s['platform_share']:.0%}",
        ),
        ("submission -> run created (sensor), mean (s)", lambda s: _queued(s, "sensor_latency")),
        ("run created -> launched (queue), mean (s)", lambda s: _queued(s, "queue_wait")),
        (
            "run-slot utilization (run walls / (slots x first launch -> last end))",
            lambda s: f"{s['utilization']:.0%} of {s['slots']}",
        ),
        (
            "first run's wall / median of the others (s)",
            lambda s: f"{s['first_wall']:.2f} / {s['rest_median']:.2f}",
        ),
        ("load average before / after (1/5/15 min)", lambda s: f"{s['load_before']} / {s['load_after']}"),
    ]
    rows = ["| | (a) daemon + run workers | (b) execute_in_process |", "|---|---:|---:|"]
    for label, fn in spec:
        rows.append(f"| {label} | {fn(a)} | {fn(b) if b else ''} |")
    return rows


def render(info: dict[str, Any], a: dict[str, Any], b: dict[str, Any] | None) -> str:
    m = info["machine"]
    data = info["data"]
    refresh = a.get("other_runs", {})
    lines = [
        SECTION_START,
        "## Pipeline: agent backtests per minute through Dagster (bench/bench_pipeline.py)",
        "",
        f"Machine: {m['cpu']}, nproc={m['nproc']}, {m['mem']}; Python {m['python']}, dagster {m['dagster']}. "
        f"Run: {info['when']}; load average at start {info['load_start']} (other helpers' benchmarks share "
        "the machine; see the per-mode load below). Command: "
        f"`.venv/bin/python bench/bench_pipeline.py --agents {info['agents']}`.",
        "",
        f"Work: {a['n']} agents per mode, the native examples (MA crossover, RSI mean reversion, momentum "
        f"rotation, buy and hold) cycled with different params, each on the same {len(data['symbols'])} "
        f"symbols x {data['bars']:,} daily bars ({data['first']}..{data['last']}, 10 years). Symbols: "
        f"{len(data['symbols']) - len(data['synthetic'])} real series that cover the whole window "
        f"({', '.join(s for s in data['symbols'] if s not in data['synthetic'])}; {data['close_only']} of them "
        f"close-only) + {len(data['synthetic'])} **synthetic** ({', '.join(data['synthetic'])}, "
        f"`{data['synthetic_source']}`, on the window's NYSE sessions), because no 30 real series shipped "
        "here cover any 10-year window. Fresh temporary data home; market data loaded by `market_data_job` "
        f"({data['market_data_job_s']:.1f} s); Redis: {info['redis']}.",
        "",
        "- **(a) daemon**: production's local path. `dagster-daemon run` (with its own code server) on the "
        "local dagster.yaml (QueuedRunCoordinator, max 2 concurrent runs); `agent_submission_sensor` turns "
        "the submissions into runs; DefaultRunLauncher starts each run in its own process. The bench only "
        "calls `submit_agent` (after the daemon's first sensor tick) and watches the instance. "
        f"Leaderboard refreshes requested by `leaderboard_after_backtest` ran as well: {refresh.get('refresh_runs', 0)} "
        f"runs, {refresh.get('refresh_mean_s', 0.0):.1f} s each on average, queued behind the backtests.",
        "- **(b) in-process**: the same submissions, sensor ticked by hand, `execute_in_process` per "
        "partition one after the other on the same persistent instance (what `farm demo` does), "
        "console log at WARNING (the event log is still written).",
        "",
        *summary_table(a, b),
        "",
        "Where a run's wall time goes (mean per run; parts add up to the run wall; "
        "Dagster overhead = process start + event log writes + other Dagster):",
        "",
        *parts_table(a, b),
        "",
        "Event-log writes by event type (SQLite event log of the local instance; mean per run):",
        "",
        *events_table(a, b),
        "",
        "How it is measured: run phases from each run's own event log (STARTING, START, STEP_START/END, "
        "SUCCESS); engine = the engine's `timings.total_s` from the materialization metadata minus the "
        "event-log writes its progress callback made; the other parts from timers the bench's code "
        "location wraps around the asset's helpers and `DagsterInstance.handle_new_event` (one JSON line "
        "per call). Run wall = launch (STARTING; in-process: the call) to the run's end event; in (a) the "
        "worker's exit after its last event and the daemon's polling are outside it but inside "
        "backtests/minute.",
        "",
        *info["findings"],
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def findings(a: dict[str, Any], b: dict[str, Any] | None) -> list[str]:
    """Plain-language reading of the numbers (computed, so it never contradicts the tables)."""
    pa = a["parts_mean"]
    dag = {k: pa[k] for k in DAGSTER_PARTS}
    top = max(dag, key=lambda k: dag[k])
    out = [
        "Reading:",
        f"- (a) completes **{a['per_min']:.1f} backtests/min** ({a['n']} in {a['span_s']:.0f} s, 2 runs at a "
        f"time); engine {a['engine_share']:.0%} of a run's wall, Dagster {a['dagster_share']:.0%}, platform "
        f"I/O {a['platform_share']:.0%}. The largest Dagster part is {top.split(' (')[0]} "
        f"({dag[top]:.2f} s/run).",
    ]
    if b is not None:
        pb = b["parts_mean"]
        start_gap = pa["run creation / process start"] - pb["run creation / process start"]
        in_step = ("engine", *PLATFORM_PARTS)
        step_a, step_b = sum(pa[k] for k in in_step), sum(pb[k] for k in in_step)
        out += [
            f"- (b) in-process: {b['per_min']:.1f} backtests/min one at a time; engine "
            f"{b['engine_share']:.0%}, Dagster {b['dagster_share']:.0%}. Per-run wall {a['wall_mean']:.2f} s "
            f"in (a) vs {b['wall_mean']:.2f} s in (b): {start_gap:.2f} s of the difference is run creation / "
            f"process start; engine + platform I/O take {step_a:.2f} s in (a) vs {step_b:.2f} s in (b) "
            f"(fresh worker process, two runs sharing {os.cpu_count()} cores).",
            f"- First run vs the others: (a) {a['first_wall']:.2f} s vs {a['rest_median']:.2f} s, (b) "
            f"{b['first_wall']:.2f} s vs {b['rest_median']:.2f} s (the bench process is already warm "
            "from loading the market data; every (a) worker starts cold).",
        ]
    out.append(
        f"- Run slots were busy {a['utilization']:.0%} of the time from the first launch to the last end in "
        "(a): a freed slot waits for the coordinator's next dequeue pass (QueuedRunCoordinator "
        "`dequeue_interval_seconds`, 5 s by default) and for the worker to exit."
    )
    out.append(
        f"- Outside the run wall, (a) also pays the sensor interval ({a['sensor_latency']:.1f} s from "
        f"submission to run) and the queue ({a['queue_wait']:.1f} s mean wait for one of the 2 slots)."
    )
    return out


def write_results(text: str) -> None:
    """Replace only this script's section; the engine bench edits the same file concurrently."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if SECTION_START in current and SECTION_END in current:
        before, rest = current.split(SECTION_START, 1)
        after = rest.split(SECTION_END, 1)[1].lstrip("\n")
        updated = before + text + ("\n" + after if after else "")
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    tmp = RESULTS.with_suffix(".md.tmp-pipeline")
    tmp.write_text(updated)
    os.replace(tmp, RESULTS)


def print_report(a: dict[str, Any], b: dict[str, Any] | None) -> None:
    for line in [*summary_table(a, b), "", *parts_table(a, b), "", *events_table(a, b), "", *findings(a, b)]:
        print(line.replace("**", "").replace("&nbsp;", " "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--agents", type=int, default=12, help="agents per mode (default 12)")
    parser.add_argument("--quick", action="store_true", help="4 agents, print only")
    parser.add_argument("--no-write", action="store_true", help=f"print only, leave {RESULTS.name} alone")
    parser.add_argument("--skip-in-process", action="store_true", help="only measure (a)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data home (path printed)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="max seconds for the (a) batch")
    args = parser.parse_args(argv)
    n = 4 if args.quick and args.agents == 12 else args.agents
    write = not (args.quick or args.no_write)

    info: dict[str, Any] = {
        "machine": machine(),
        "load_start": load_text(),
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "agents": n,
    }
    tmp = Path(tempfile.mkdtemp(prefix="farm-bench-pipeline-"))
    print(f"data home: {tmp}  (load {info['load_start']}, nproc {info['machine']['nproc']})", flush=True)
    try:
        with redis_server(tmp) as (redis_url, origin):
            info["redis"] = origin
            home = tmp / "home"
            os.environ.update(
                {
                    "FARM_PROFILE": "local",
                    "FARM_HOME": str(home),
                    "FARM_REDIS_URL": redis_url,
                    "DAGSTER_HOME": str(home / "dagster"),
                    TIMINGS_ENV: str(tmp / "timings.jsonl"),
                }
            )
            from farm_dagster.instance import local_instance
            from farm_dagster.settings import get_settings

            get_settings.cache_clear()
            instance = local_instance(get_settings())
            defs = bench_definitions()
            print("loading market data through market_data_job ...", flush=True)
            info["data"] = prepare_market_data(defs, instance)
            symbols = info["data"]["symbols"]
            print(f"universe: {len(symbols)} symbols x {info['data']['bars']} bars", flush=True)
            runs_a, ctx_a = run_daemon_mode(defs, instance, home, n, symbols, args.timeout)
            a = summarize(runs_a, ctx_a)
            b = None
            if not args.skip_in_process:
                print(f"(b) {n} agents through execute_in_process ...", flush=True)
                runs_b, ctx_b = run_in_process_mode(defs, instance, n, symbols)
                b = summarize(runs_b, ctx_b)
            instance.dispose()
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_report(a, b)
    info["findings"] = findings(a, b)
    failed = [r for r in [*runs_a, *(runs_b if b is not None else [])] if not r.ok]
    for run in failed:
        print(f"FAILED: {run.agent_id} (run {run.run_id}): {run.error}")
    if failed:
        print(f"{len(failed)} backtest run(s) failed: {RESULTS.name} left alone (the numbers would mislead)")
        return 1
    if write:
        write_results(render(info, a, b))
        print(f"wrote the pipeline section of {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
