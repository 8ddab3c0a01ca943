"""An agent that tries every trick to read bar t+1 gets nothing: the child never holds the future.

The cheater runs with the static filter switched off (the filter would refuse it outright; see the
last test), so what is tested is the wall itself: the lockstep protocol and the child's memory.
Each trick reports the latest bar time and the values it could find; the test compares them
against the truth it keeps in the parent.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from farm_dagster.engine.costs import BacktestSettings
from farm_dagster.engine.runner import run_backtest
from farm_dagster.market_data.panel import BarPanel
from farm_dagster.sandbox.limits import SandboxLimits

CHEATER = '''
import numpy as np

from farm_dagster.sdk import Agent, hold


def _frames():
    """The caller frames, reached without importing anything (through a traceback)."""
    try:
        raise RuntimeError("where am I")
    except RuntimeError as exc:
        frame = exc.__traceback__.tb_frame
    while frame is not None:
        yield frame
        frame = frame.f_back


def _try(fn):
    try:
        value = fn()
    except BaseException as exc:  # noqa: BLE001 - any refusal counts as "got nothing"
        return "blocked:" + type(exc).__name__
    return value


class Cheater(Agent):
    def on_bar(self, ctx):
        s = ctx.symbols[0]
        n = ctx.bars_seen
        now = ctx.ts_ns
        found = {}

        def past_the_end():
            return float(ctx.history(s)[n])

        def negative_wrap():
            return float(ctx.history(s, lookback=1)[-2])

        def base_buffer():
            arr = ctx.history(s)
            while arr.base is not None and isinstance(arr.base, np.ndarray):
                arr = arr.base
            return float(arr[3, n, 0]) if arr.ndim == 3 and arr.shape[1] > n else None

        def private_history():
            h = ctx._history
            return float(h.data[3, h.n, 0]) if h.data.shape[1] > h.n else None

        def private_ts():
            h = ctx._history
            return int(h.ts[h.n:].max()) if h.ts.shape[0] > h.n else None

        def frames():
            best = None
            for frame in _frames():
                for value in list(frame.f_locals.values()):
                    if isinstance(value, (bytes, bytearray)) and len(value) >= 9 and value[0] == 2:
                        ts = int.from_bytes(bytes(value[1:9]), "little", signed=True)
                        best = ts if best is None else max(best, ts)
            return best

        def channel():
            for frame in _frames():
                for value in list(frame.f_locals.values()):
                    owner = getattr(value, "__self__", None)
                    if owner is not None and hasattr(owner, "read_fd"):
                        ready = owner._poll.poll(5)  # a parent streaming ahead would show up here
                        return len(ready) + len(owner._buf)
            return None

        def channel_with_os():
            import os
            for frame in _frames():
                for value in list(frame.f_locals.values()):
                    owner = getattr(value, "__self__", None)
                    if owner is not None and hasattr(owner, "read_fd"):
                        os.set_blocking(owner.read_fd, False)
                        try:
                            return len(os.read(owner.read_fd, 1 << 16))
                        finally:
                            os.set_blocking(owner.read_fd, True)
            return None

        def mailbox():
            """The shared-memory channel's mailbox, read after a pause: only the current bar there."""
            for frame in _frames():
                for value in list(frame.f_locals.values()):
                    owner = getattr(value, "__self__", None)
                    if owner is not None and hasattr(owner, "_mm"):
                        owner._poll.poll(5)  # a parent streaming ahead would have written by now
                        if owner.ready():
                            return "streamed ahead"
                        body = owner._mm[owner._in_data : owner._in_data + 9]
                        return int.from_bytes(body[1:9], "little", signed=True) if body[0] == 2 else None
            return None

        def gc_scan():
            import gc
            best = None
            for obj in gc.get_objects():
                if isinstance(obj, (bytes, bytearray)) and len(obj) == 9 + 40 * len(ctx.symbols) and obj[0] == 2:
                    ts = int.from_bytes(bytes(obj[1:9]), "little", signed=True)
                    best = ts if best is None else max(best, ts)
                elif isinstance(obj, np.ndarray) and obj.dtype == np.int64 and obj.ndim == 1 and obj.size:
                    best = max(best or 0, int(obj.max()))
            return best

        def runner_module():
            import farm_dagster.engine.runner as runner
            panels = [v for v in vars(runner).values() if type(v).__name__ == "BarPanel"]
            return len(panels)

        for name, trick in [("past_the_end", past_the_end), ("negative_wrap", negative_wrap),
                            ("base_buffer", base_buffer), ("private_history", private_history),
                            ("private_ts", private_ts), ("frames", frames), ("channel", channel),
                            ("channel_with_os", channel_with_os), ("mailbox", mailbox),
                            ("runner_module", runner_module)]:
            found[name] = _try(trick)
        if n % 10 == 1:
            found["gc_scan"] = _try(gc_scan)
        found["now"] = now
        return hold(s, reasoning="peeking", inputs={k: (v if not isinstance(v, float) or v == v else None)
                                                     for k, v in found.items()})
'''


def _panel(n_bars: int = 40, n_symbols: int = 2) -> BarPanel:
    rng = np.random.default_rng()  # fresh entropy: nothing in the child could regenerate it
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_bars, n_symbols)), axis=0))
    ts = (np.arange(n_bars, dtype=np.int64) + 20_000) * 86_400 * 10**9
    return BarPanel(
        ts,
        tuple(f"S{i}" for i in range(n_symbols)),
        close * 1.001,
        close * 1.01,
        close * 0.99,
        close,
        np.full_like(close, 1e5),
    )


def test_every_trick_to_read_the_next_bar_gets_nothing() -> None:
    panel = _panel()
    result = run_backtest(
        CHEATER,
        panel,
        BacktestSettings(),
        agent_id="cheater",
        run_id="la",
        prevalidate=False,
        limits=SandboxLimits(wall_seconds=120),
    )
    assert result.status == "completed", result.error
    rows = result.decisions
    assert len(rows) == panel.n_bars
    assert [json.loads(x)["now"] for x in rows["inputs"]] == panel.timestamps.tolist()
    _check_no_future(rows, panel)


def test_the_static_filter_refuses_the_cheater_before_it_runs() -> None:
    result = run_backtest(CHEATER, _panel(5), BacktestSettings(), agent_id="cheater", run_id="la2")
    assert result.status == "rejected"
    rules = " ".join(result.error.user_traceback)
    assert "agent.py:" in rules and ("gc" in rules or "sys" in rules)


def _check_no_future(rows, panel: BarPanel) -> None:
    for row in rows.itertuples():
        t = row.decision_point
        seen = json.loads(row.inputs)
        now = int(panel.timestamps[t])
        later = set(panel.close[t + 1 :, 0].tolist()) | set(panel.open[t + 1 :, 0].tolist())
        seen_so_far = set(panel.close[: t + 1, 0].tolist()) | set(panel.open[: t + 1, 0].tolist())
        for name in ("past_the_end", "negative_wrap", "base_buffer", "private_history"):
            value = seen[name]
            assert not (isinstance(value, float) and value in later), (t, name, value)
            # 0.0: a row of the history buffer not streamed yet (zeros, never a price: these are > 0)
            assert value in (None, 0.0) or isinstance(value, str) or value in seen_so_far, (t, name, value)
        for name in ("private_ts", "frames", "gc_scan", "mailbox"):
            if isinstance(seen.get(name), int):
                assert seen[name] <= now, (t, name, seen[name])  # never a time after the current bar
        for name in ("channel", "channel_with_os"):
            assert seen[name] in (None, 0) or isinstance(seen[name], str), (t, name, seen[name])
        assert seen["mailbox"] != "streamed ahead", t
        assert seen["runner_module"] == 0 or isinstance(seen["runner_module"], str)


@pytest.mark.parametrize("shared_memory", [False, True], ids=["pipes", "shared-memory"])
def test_without_any_lockdown_the_lockstep_stream_still_leaks_nothing(shared_memory: bool) -> None:
    """The host runs unlocked in a thread of this process, fed by the runner's own streaming loop
    over real pipes or real shared mailboxes: its frames, the channel's fd, buffer and mailboxes
    are all reachable by the agent, and none of them ever holds a bar after the current one (the
    lockstep itself holds)."""
    import os
    import threading

    from farm_dagster.engine import host, protocol, runner
    from farm_dagster.fmel.rows import DecisionLog
    from farm_dagster.sandbox.channel import Channel, SharedChannel, create_region

    panel = _panel(25)
    settings = BacktestSettings()
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    if shared_memory:
        region = create_region()
        child = SharedChannel(to_child_r, to_parent_w, region, "child")
        parent = SharedChannel(to_parent_r, to_child_w, region, "parent")
        os.close(region)
    else:
        child, parent = Channel(to_child_r, to_parent_w), Channel(to_parent_r, to_child_w)
    worker = threading.Thread(target=host.main, args=(child,), daemon=True)
    worker.start()
    try:
        parent.send(runner._init_message(CHEATER, "agent.py", "native", panel, settings, "backtest"))
        assert parent.recv(30)[0] == protocol.READY
        log = DecisionLog(
            agent_id="c",
            user_id="u",
            run_id="r",
            mode="backtest",
            code_hash="",
            data_version="",
            symbols=panel.symbols,
        )
        run = runner._Run(panel, settings, log)
        runner._stream(parent, run, panel, None)
        parent.send(bytes((protocol.END,)))
        assert parent.recv(30)[0] == protocol.DONE
    finally:
        worker.join(timeout=10)
        child.close()
        parent.close()
    rows = log.frame()
    assert len(rows) == panel.n_bars
    first = json.loads(rows.iloc[5].inputs)
    assert isinstance(first["frames"], int)  # the tricks really ran here
    if shared_memory:
        assert first["mailbox"] == int(panel.timestamps[5])  # it read the mailbox: the current bar
    else:
        assert first["channel"] == 0
    _check_no_future(rows, panel)


def probe_main(channel) -> None:
    """Child entry for the next test: the real host, but every BAR is followed by a look at the
    pipe; a parent that had sent anything more before hearing back would make this fail."""
    from farm_dagster.engine import host, protocol

    recv = channel.recv

    def checked_recv():
        payload = recv()
        if payload[0] == protocol.BAR and (channel._poll.poll(20) or channel.ready()):
            raise RuntimeError("the parent streamed ahead of the agent's answer")
        return payload

    channel.recv = checked_recv
    host.main(channel)


def test_the_runner_never_sends_a_bar_before_the_previous_answer(monkeypatch) -> None:
    from farm_dagster.engine import runner

    monkeypatch.setitem(runner.HOST_ENTRIES, "native", "tests.test_lookahead:probe_main")
    code = "from farm_dagster.sdk import Agent\n\n\nclass Quiet(Agent):\n    def on_bar(self, ctx):\n        return None\n"
    result = run_backtest(code, _panel(30), BacktestSettings(), agent_id="p", run_id="probe")
    assert result.status == "completed", (result.error, result.info)
    assert len(result.decisions) == 30
