"""Child side of a native backtest: runs inside the sandbox, one agent call per streamed bar.

Everything the agent can reach lives here, in the child: its history buffer (only the bars
streamed so far), a *mirror* broker (so ``ctx.cash``/``ctx.positions`` answer), and the channel.
None of it is trusted by the parent, which recomputes the accounting from the decisions.
"""

from __future__ import annotations

import contextlib
import gc
import linecache
import math
import mmap
import time
import traceback
from typing import Any

import numpy as np

from farm_dagster.engine import protocol
from farm_dagster.engine.broker import Broker
from farm_dagster.engine.costs import BacktestSettings
from farm_dagster.sdk.agent import Agent
from farm_dagster.sdk.context import Context, History
from farm_dagster.sdk.decision import Decision


class AgentLoadError(Exception):
    """The agent file compiled but does not define a usable agent."""


def error_payload(exc: BaseException, filename: str) -> dict[str, Any]:
    """ERROR body: the exception and only the traceback frames that point into the agent's file."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    user_tb = [
        f'File "{f.filename}", line {f.lineno}, in {f.name}' + (f"\n    {f.line}" if f.line else "")
        for f in frames
    ]
    line = frames[-1].lineno if frames else None
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        line = exc.lineno
        user_tb.append(
            f'File "{filename}", line {exc.lineno}' + (f"\n    {exc.text.strip()}" if exc.text else "")
        )
    message = str(exc) if not isinstance(exc, SyntaxError) else (exc.msg or "invalid syntax")
    return {"error_type": type(exc).__name__, "message": message[:2000], "line": line, "traceback": user_tb}


def load_agent(code: str, filename: str, params: dict[str, Any]) -> Agent:
    """Compile the agent's file under its own name (tracebacks show the user's lines) and build it."""
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": "agent", "__file__": filename}
    exec(compile(code, filename, "exec"), namespace)  # noqa: S102 - this is the sandboxed child
    classes = [
        v for v in namespace.values() if isinstance(v, type) and issubclass(v, Agent) and v is not Agent
    ]
    leaves = [c for c in classes if not any(other is not c and issubclass(other, c) for other in classes)]
    if len(leaves) != 1:
        names = ", ".join(sorted(c.__name__ for c in leaves)) or "none"
        raise AgentLoadError(
            f"the file must define exactly one subclass of farm_dagster.sdk.Agent (found: {names})"
        )
    return leaves[0](params)


def _wire(result: Any, bar: int) -> list[Any]:
    """The agent's answer as wire decisions: compact arrays for SDK decisions, dicts as given.

    Each SDK order learns where it was placed (``Decision.ref``), so the agent can cancel it later.
    """
    if result is None:
        return []
    if isinstance(result, Decision | dict):
        result = [result]
    out: list[Any] = []
    for item in result:
        if isinstance(item, Decision):
            if item.action != "HOLD" and item.action != "CANCEL":
                item.placed = (bar, len(out))
            out.append(item.to_compact())
        elif isinstance(item, dict):
            out.append(item)
        else:
            raise TypeError(
                f"on_bar must return Decision objects (or a list of them), got {type(item).__name__}"
            )
    return out


_MADV_POPULATE_WRITE = 23  # Linux >= 5.14; not in Python 3.11's mmap module
# The history buffer mapped by ``prepare`` before the lockdown, by its shape (``History.shape``).
_mapped: dict[tuple[int, int, int], np.ndarray] = {}


def prepare(spec: dict[str, Any]) -> None:
    """Before the lockdown (sandbox/child.py): map the announced run's history buffer in one call.

    ``spec["history"] = [n_symbols, n_bars]``, from the parent. Why: the lockdown forbids ``mmap``,
    and a buffer mapped page by page as the bars arrive costs the agent's process a page fault per
    4 KiB (about 0.65 s on 100 symbols x 100,000 bars, against 0.12 s here, before READY). The
    parent asks only for a buffer well within the sandbox's memory limit, which applies to it
    once the lockdown is in place.
    """
    shape = History.shape(*(int(v) for v in spec["history"]))
    try:
        region = mmap.mmap(-1, 8 * math.prod(shape), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError:  # no room now: the run maps its buffer as the bars come, under its limit
        return
    with contextlib.suppress(OSError, AttributeError):
        region.madvise(mmap.MADV_HUGEPAGE)
    try:
        region.madvise(_MADV_POPULATE_WRITE)
    except OSError:  # a kernel before 5.14: map it by writing
        np.frombuffer(region, dtype=np.uint8)[::4096] = 0
    _mapped[shape] = np.frombuffer(region, dtype=np.float64).reshape(shape)


def main(channel: Any) -> None:
    """Serve one run: INIT -> READY, then BAR -> DECISIONS until END -> DONE (or ERROR)."""
    config = protocol.recv_init(channel)
    filename = config.get("filename", "agent.py")
    symbols = tuple(config["symbols"])
    settings = BacktestSettings.from_json(config["settings"])
    try:
        agent = load_agent(config["code"], filename, settings.params)
        broker = Broker(symbols, settings, record=False, track_updates=True)
        # Allocate the announced run once: growing by doubling copies the buffer and holds the old
        # and the new one at the same time, which costs both time and peak memory.
        hint = int(config.get("n_bars_hint") or 1024)
        mapped = _mapped.pop(History.shape(len(symbols), hint), None)
        history = History(len(symbols), capacity=hint, expected=hint, mapped=mapped)
        ctx = Context(symbols, history, broker)
        agent.setup(ctx)
        ctx._take_reads()
    except BaseException as exc:  # noqa: BLE001 - any failure of user code is reported, not raised
        channel.send(protocol.encode_json(protocol.ERROR, error_payload(exc, filename)))
        return
    channel.send(
        protocol.encode_json(protocol.READY, {"agent_class": type(agent).__name__, "params": agent.params})
    )
    # Everything alive now (libraries, the agent, its setup state) is long-lived: keep the cyclic
    # collector from rescanning it on every collection while bars stream.
    gc.freeze()
    _serve(channel, agent, ctx, history, broker, symbols, filename)


def _serve(
    channel: Any,
    agent: Agent,
    ctx: Context,
    history: History,
    broker: Broker,
    symbols: tuple[str, ...],
    filename: str,
) -> None:
    index = {s: i for i, s in enumerate(symbols)}
    n_symbols = len(symbols)
    recv, send = channel.recv, channel.send
    on_bar, take_reads, take_updates = agent.on_bar, ctx._take_reads, broker.take_updates
    check, submit, touch_ahead = protocol.check_plain, broker.submit, history.touch_ahead
    encode, decode_bar = protocol.encode_decisions, protocol.decode_bar
    bar_type, end_type = protocol.BAR, protocol.END
    last_reads: dict[str, Any] = {}  # the parent starts from "read nothing" too
    bar = 0
    # Where this process's time goes, reported with DONE (``protocol.AGENT_TIMING``): waiting for
    # the next bar, taking it (history, mirror broker), the agent's own code, checking its answer
    # for the mirror, encoding, sending, then the work left for after sending. Seven clock reads
    # per bar, about 0.4 us.
    clock = time.perf_counter
    waited = taking = thinking = checking = encoding = sending = after = 0.0
    while True:
        t0 = clock()
        payload = recv()
        t1 = clock()
        waited += t1 - t0
        kind = payload[0]
        if kind == end_type:
            spent = (waited, taking, thinking, checking, encoding, sending, after)
            timing = dict(zip(protocol.AGENT_TIMING, spent, strict=True))
            send(protocol.encode_json(protocol.DONE, {"bars": bar, "timing_s": timing}))
            return
        if kind != bar_type:
            raise protocol.ProtocolError(f"unexpected {protocol.NAMES.get(kind, kind)} message")
        ts_ns, block = decode_bar(payload, n_symbols)
        history.append(ts_ns, block)
        broker.on_bar(bar, ts_ns, block)
        ctx._updates = take_updates()
        try:
            t2 = clock()
            wire = _wire(on_bar(ctx), bar)
            t3 = clock()
            body: dict[str, Any] = {}
            plain = True  # every decision passed the fast checks: orjson may write the body
            checked = []
            if wire:
                body["decisions"] = wire
                for raw in wire:
                    decision, fast = check(raw, index)
                    plain = plain and fast
                    checked.append(decision)
            reads = take_reads()
            if reads != last_reads:
                body["data_read"] = reads  # names, field names and ints: plain by construction
                last_reads = reads
            t4 = clock()
            message = encode(broker.equity, body, plain)
        except BaseException as exc:  # noqa: BLE001 - report the agent's failure with its own line
            send(protocol.encode_json(protocol.ERROR, error_payload(exc, filename)))
            return
        t5 = clock()
        send(message)
        t6 = clock()
        # Left for after sending, while the parent takes the answer and sends the next bar: the
        # mirror needs the orders only before that bar, and the history's next pages only for it.
        # Done before sending, this work lengthened every hand-off by its time.
        try:
            for seq, decision in enumerate(checked):
                submit(decision, None, bar, ts_ns, seq)
        except BaseException as exc:  # noqa: BLE001 - the parent meets it in place of the next answer
            send(protocol.encode_json(protocol.ERROR, error_payload(exc, filename)))
            return
        touch_ahead()
        after += clock() - t6
        taking += t2 - t1
        thinking += t3 - t2
        checking += t4 - t3
        encoding += t5 - t4
        sending += t6 - t5
        bar += 1
