"""An agent that writes its own protocol messages: whatever bytes it sends as its answers, the run
ends with a status (completed or failed), never with an exception out of ``run_backtest``.

Why: validation is a filter, not a wall. Code that gets past it can replace the child's encoder
and send any JSON the parent's decoder accepts (or not), so the parent's checks must hold for
every shape of answer, not only for what the SDK writes.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from farm_dagster.engine import protocol
from farm_dagster.engine.costs import BacktestSettings
from farm_dagster.engine.runner import run_backtest
from farm_dagster.market_data.panel import BarPanel
from farm_dagster.sandbox.limits import SandboxLimits

FORGER = """
from farm_dagster.engine import protocol

from farm_dagster.sdk import Agent

ANSWERS = {answers!r}


class Forger(Agent):
    def setup(self, ctx):
        sent = [0]

        def forged(equity, body, plain=False):
            raw = ANSWERS[sent[0] % len(ANSWERS)]
            sent[0] += 1
            return bytes((protocol.DECISIONS,)) + protocol._EQUITY.pack(equity) + raw

        protocol.encode_decisions = forged

    def on_bar(self, ctx):
        return None
"""

# Every field of the object form: the compact ones and those that travel only as objects.
FIELDS = (*protocol.COMPACT_FIELDS, "trail_amount", "trail_percent", "expires_at", "parent_ref", "oco")
ATOMS = (
    None,
    True,
    0,
    -1,
    2**64,
    -(2**70),
    10**400,
    1.5,
    -0.0,
    1e308,
    5e-324,
    "",
    "AAA",
    "\ud800",
    "é",
    [],
    {},
)
NUMBERS = (1.0, 10.0, 0.5, -1.0, 0.0, 1e308, 2**70, "NaN", None, 100.0, True)
CHOICES = {
    "symbol": ("AAA", "BBB", "ZZZ", 1),
    "action": ("BUY", "SELL", "TARGET", "CANCEL", "HOLD", "buy", "FOO"),
    "order_type": ("market", "limit", "stop", "stop_limit", "trailing_stop", "trailing_stop_limit", "x"),
    "order_ref": ("0000000-000", "0000001-000", "x", "9999999-999", None, 5),
    "expires_at": (0, 2**62, -(2**63), 2**80, 1.5, "x", 1_600_000_000_000_000_000),
}


VALID = (  # well-formed decisions of every order kind; refs name orders of the first bars
    {"symbol": "AAA", "action": "BUY", "quantity": 10.0},
    {"symbol": "BBB", "action": "SELL", "quantity": 5.0},
    {"symbol": "AAA", "action": "TARGET", "target_percent": 0.3},
    {"symbol": "BBB", "action": "TARGET", "target_shares": -20.0},
    {"symbol": "AAA", "action": "BUY", "quantity": 3.0, "order_type": "limit", "limit_price": 99.0},
    {"symbol": "AAA", "action": "SELL", "quantity": 3.0, "order_type": "stop", "stop_price": 98.0},
    {
        "symbol": "BBB",
        "action": "SELL",
        "quantity": 2.0,
        "order_type": "trailing_stop",
        "trail_percent": 0.01,
    },
    {
        "symbol": "AAA",
        "action": "SELL",
        "quantity": 3.0,
        "order_type": "limit",
        "limit_price": 103.0,
        "parent_ref": "0000001-000",
    },
    {
        "symbol": "AAA",
        "action": "SELL",
        "quantity": 3.0,
        "order_type": "stop",
        "stop_price": 97.0,
        "oco": "0000001-001",
    },
    {"symbol": "AAA", "action": "CANCEL", "order_ref": "0000002-000"},
    {"symbol": "BBB", "action": "HOLD", "confidence": 0.5, "reasoning": "wait", "inputs": {"x": 1.0}},
)


def _forged_answer(rng: random.Random) -> bytes:
    """One DECISIONS body: well-formed decisions with 0-2 fields made wrong, extreme or missing,
    and now and then a body that is not a DECISIONS body at all."""
    if rng.random() < 0.03:
        return rng.choice(
            [b"", b"[]", b"null", b"{", b"\xff\xfe", b'{"decisions": 5}', b'{"decisions": NaN}']
        )

    def value(depth: int = 0) -> object:
        r = rng.random()
        if r < 0.6 or depth > 2:
            return rng.choice(ATOMS)
        if r < 0.8:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(FIELDS): value(depth + 1) for _ in range(rng.randint(0, 3))}

    def decision() -> object:
        if rng.random() < 0.2:  # the compact array form, of the right length or not
            return [value() for _ in range(rng.choice((12, 12, 11, 13)))]
        out: dict[str, object] = dict(rng.choice(VALID))
        for _ in range(rng.choice((0, 0, 1, 2))):
            name = rng.choice(FIELDS)
            key = "order_ref" if name in ("parent_ref", "oco") else name
            pool = CHOICES.get(key, NUMBERS if name not in ("reasoning", "inputs") else None)
            if rng.random() < 0.2:
                out.pop(name, None)
            else:
                out[name] = rng.choice(pool) if pool else value()
        return out

    body: dict[str, object] = {"decisions": [decision() for _ in range(rng.randint(0, 4))]}
    if rng.random() < 0.3:
        body["data_read"] = value()
    text = json.dumps(body).replace('"NaN"', "NaN")  # a NaN literal, which Python's decoder reads
    return text.encode("utf-8", "surrogatepass")


def _panel(seed: int) -> BarPanel:
    """AAA and BBB around 100, moving about 1 % a bar: the forged orders' prices are in reach."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (30, 2)), axis=0))
    ts = pd.date_range("2021-01-04", periods=30, freq="B", tz="UTC").asi8
    return BarPanel(ts, ("AAA", "BBB"), close, close * 1.01, close * 0.99, close, np.full((30, 2), 1e6))


def _run(answers: list[bytes], *, allow_short: bool = False, seed: int = 0):
    return run_backtest(
        FORGER.format(answers=answers),
        _panel(seed),
        BacktestSettings(allow_short=allow_short),
        agent_id="forger",
        run_id="forged",
        prevalidate=False,
        limits=SandboxLimits(wall_seconds=30),
    )


@pytest.mark.parametrize("seed", range(12))
def test_any_forged_answer_ends_the_run_with_a_status(seed: int) -> None:
    rng = random.Random(seed)
    result = _run([_forged_answer(rng) for _ in range(8)], allow_short=seed % 2 == 1, seed=seed)
    assert result.status in ("completed", "failed"), result.error
    if result.status == "failed":
        assert result.error is not None and result.error.error_type == "ProtocolError", result.error
    assert len(result.equity) >= 1  # what was booked before a failure is kept
    # The trusted accounting stays whole: equity is cash plus the book marked to the close.
    equity = result.equity
    marked = (result.positions.to_numpy() * _panel(seed).close[: len(equity)]).sum(axis=1)
    np.testing.assert_allclose(equity["positions_value"], marked, rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(equity["equity"], equity["cash"] + equity["positions_value"], rtol=1e-12)


def test_a_non_finite_data_read_is_noted_and_the_run_goes_on() -> None:
    answer = b'{"data_read": {"*": {"fields": ["close"], "lookback": NaN}}}'
    result = _run([answer])
    assert result.status == "completed", result.error
    notes = set(result.decisions["data_read"])
    assert notes == {'{"invalid": "data_read held a non-finite number"}'}


def test_an_absurd_short_sale_is_rejected_and_the_book_stays_finite() -> None:
    """Selling 1e308 shares short would make cash infinite and equity NaN, and then any percent
    target would have no size: the share limit rejects it, with the reason in the log."""
    answers = [
        b'{"decisions": [{"symbol": "AAA", "action": "SELL", "quantity": 1e308}]}',
        b'{"decisions": [{"symbol": "BBB", "action": "TARGET", "target_percent": 0.5}]}',
    ]
    result = _run(answers, allow_short=True)
    assert result.status == "completed", result.error
    assert np.isfinite(result.equity.to_numpy()).all()
    assert set(result.fills["symbol"]) == {"BBB"}
    sells = result.decisions[result.decisions["symbol"] == "AAA"]
    assert all("at most 1e+12 shares" in text for text in sells["events"]), sells["events"].iloc[0]


def test_a_forged_error_report_is_read_field_by_field() -> None:
    """The agent's ERROR message is untrusted text too: fields of the wrong type become defaults."""
    code = """
from farm_dagster.engine import protocol

from farm_dagster.sdk import Agent


class Liar(Agent):
    def setup(self, ctx):
        original = protocol.encode_json

        def forged(kind, obj):
            if kind == protocol.ERROR:
                return bytes((kind,)) + b'{"error_type": null, "message": {"a": 1}, "line": true, "traceback": "x"}'
            return original(kind, obj)

        protocol.encode_json = forged

    def on_bar(self, ctx):
        raise ValueError("boom")
"""
    result = run_backtest(
        code, _panel(0), BacktestSettings(), agent_id="liar", run_id="forged", prevalidate=False
    )
    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.error_type, result.error.message, result.error.line) == ("AgentError", "", None)
    assert result.error.user_traceback == []


@pytest.mark.parametrize(
    "done_body",
    [
        b"not json",
        b"[" * 5000,
        b'{"timing_s": "fast"}',
        b'{"timing_s": {"waiting": -1, "agent_code": NaN, "checks": true, "encoding": 1e300, "sending": "0.1"}}',
    ],
)
def test_a_forged_done_message_never_fails_the_run(done_body: bytes) -> None:
    """DONE carries the agent process's own timing: untrusted diagnostics, dropped when malformed."""
    code = f"""
from farm_dagster.engine import protocol

from farm_dagster.sdk import Agent


class Braggart(Agent):
    def setup(self, ctx):
        original = protocol.encode_json

        def forged(kind, obj):
            if kind == protocol.DONE:
                return bytes((kind,)) + {done_body!r}
            return original(kind, obj)

        protocol.encode_json = forged

    def on_bar(self, ctx):
        return []
"""
    result = run_backtest(
        code, _panel(0), BacktestSettings(), agent_id="braggart", run_id="forged", prevalidate=False
    )
    assert result.status == "completed", result.error
    assert "agent_timing_s" not in result.info
