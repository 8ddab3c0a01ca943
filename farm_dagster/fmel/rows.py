"""Build FMEL rows: per decision, plus one HOLD row for a bar on which the agent decided nothing.

Accumulated per bar (cheap appends, strings shared between bars when unchanged) and turned into a
columnar frame once, because a long backtest has one row per bar and row-by-row dicts would
dominate its run time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from farm_dagster.engine.protocol import CheckedDecision
from farm_dagster.engine.protocol import dumps as _dumps
from farm_dagster.engine.protocol import dumps_sorted as _dumps_sorted
from farm_dagster.fmel.schema import FMEL_DECISIONS


@dataclass(slots=True)
class LoggedDecision:
    decision_id: str
    decision: CheckedDecision
    action: str  # BUY | SELL | HOLD, or the raw action of a rejected decision
    quantity: float | None
    price: float | None


def decision_prefix(run_id: str, bar: int) -> str:
    """``decision_id`` without the sequence number (callers append ``f"{seq:03d}"``)."""
    return f"{run_id}-{bar:07d}-"


def decision_id(run_id: str, bar: int, seq: int) -> str:
    """Deterministic id of the ``seq``-th decision on ``bar`` (a HOLD row of a silent bar has seq 0)."""
    return f"{decision_prefix(run_id, bar)}{seq:03d}"


def positions_json(symbols: Sequence[str], shares: np.ndarray) -> str:
    """``{"SYM": shares, ...}`` of the non-zero positions (hand-joined: it runs on every traded bar)."""
    held = np.flatnonzero(shares)
    if not held.size:
        return "{}"
    keys = _json_keys(tuple(symbols))
    return (
        "{"
        + ",".join([keys[i] + repr(v) for i, v in zip(held.tolist(), shares[held].tolist(), strict=True)])
        + "}"
    )


@lru_cache(maxsize=64)
def _json_keys(symbols: tuple[str, ...]) -> list[str]:
    return [json.dumps(s) + ":" for s in symbols]


class DecisionLog:
    """Decision points of one run, in order."""

    def __init__(
        self,
        *,
        agent_id: str,
        user_id: str,
        run_id: str,
        mode: str,
        code_hash: str,
        data_version: str,
        symbols: Sequence[str],
    ) -> None:
        if mode not in ("backtest", "paper"):
            raise ValueError(f"mode must be backtest or paper, got {mode!r}")
        self.ids = {
            "agent_id": agent_id,
            "user_id": user_id,
            "run_id": run_id,
            "mode": mode,
            "code_hash": code_hash,
            "data_version": data_version,
        }
        self.run_id = run_id
        self.symbols = tuple(symbols)
        self._bars: list[int] = []
        self._ts: list[int] = []
        self._cash: list[float] = []
        self._equity: list[float] = []
        self._positions: list[str] = []
        self._data_read: list[str] = []
        self._decisions: list[tuple[int, list[LoggedDecision]]] = []  # (row of the bar, decisions)

    def __len__(self) -> int:
        return len(self._bars)

    def add_bar(
        self,
        bar: int,
        ts_ns: int,
        *,
        cash: float,
        equity: float,
        positions: str,
        data_read: str,
        decisions: Sequence[LoggedDecision] = (),
    ) -> None:
        """Record decision point ``bar``; ``positions``/``data_read`` are JSON strings."""
        if decisions:
            self._decisions.append((len(self._bars), list(decisions)))
        self._bars.append(bar)
        self._ts.append(ts_ns)
        self._cash.append(cash)
        self._equity.append(equity)
        self._positions.append(positions)
        self._data_read.append(data_read)

    def frame(
        self,
        events: Mapping[str | None, list[dict[str, Any]]] | Iterable[tuple[str | None, dict[str, Any]]] = (),
    ) -> pd.DataFrame:
        """All rows as a frame with the columns of ``fmel.trading_decisions``.

        ``events``: each decision's order/trade events, as {decision_id: [event, ...]} (the
        broker's ``event_log``) or as (decision_id, event) pairs.
        """
        if isinstance(events, Mapping):
            by_decision = events
        else:
            by_decision = {}
            for did, event in events:
                if did is not None:
                    by_decision.setdefault(did, []).append(event)
        n_bars = len(self._bars)
        counts = np.ones(n_bars, dtype=np.int64)
        for row, decisions in self._decisions:
            counts[row] = len(decisions)
        n_rows = int(counts.sum())
        row_bar = np.repeat(np.arange(n_bars), counts)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n_bars else np.zeros(0, dtype=np.int64)
        bars = np.asarray(self._bars, dtype=np.int64)[row_bar]

        hold_symbol = self.symbols[0] if len(self.symbols) == 1 else None
        decision_ids = np.array([decision_id(self.run_id, b, 0) for b in bars.tolist()], dtype=object)
        symbol = np.full(n_rows, hold_symbol, dtype=object)
        action = np.full(n_rows, "HOLD", dtype=object)
        order_type = np.full(n_rows, None, dtype=object)
        reasoning = np.full(n_rows, "", dtype=object)
        inputs = np.full(n_rows, "{}", dtype=object)
        event_col = np.full(n_rows, "[]", dtype=object)
        float_names = ("quantity", "price", "limit_price", "target_shares", "target_percent", "confidence")
        floats = {name: np.full(n_rows, np.nan) for name in float_names}
        # Decision rows: columns by comprehension over a flat list, then scattered at once.
        flat = [item for _, decisions in self._decisions for item in decisions]
        where = [
            int(offsets[row]) + seq for row, decisions in self._decisions for seq in range(len(decisions))
        ]
        checked = [item.decision for item in flat]
        cols: dict[str, list[Any]] = {
            "id": [item.decision_id for item in flat],
            "symbol": [d.symbol for d in checked],
            "action": [item.action for item in flat],
            "type": [
                d.order_type if d.reject_reason is None and d.action != "HOLD" else None for d in checked
            ],
            "why": [d.reasoning for d in checked],
            "inputs": [_dumps_sorted(d.inputs) if d.inputs else "{}" for d in checked],
            "events": [_dumps(found) if (found := by_decision.get(x.decision_id)) else "[]" for x in flat],
        }
        values = [
            (item.quantity, item.price, d.limit_price, d.target_shares, d.target_percent, d.confidence)
            for item, d in zip(flat, checked, strict=True)
        ]
        if where:
            idx = np.asarray(where, dtype=np.int64)
            for column, key in (
                (decision_ids, "id"),
                (symbol, "symbol"),
                (action, "action"),
                (order_type, "type"),
                (reasoning, "why"),
                (inputs, "inputs"),
                (event_col, "events"),
            ):
                column[idx] = cols[key]
            block = np.array(values, dtype=np.float64)  # None -> nan
            for k, name in enumerate(float_names):
                floats[name][idx] = block[:, k]
        positions = (
            np.asarray(self._positions, dtype=object)[row_bar] if n_bars else np.zeros(0, dtype=object)
        )
        data_read = (
            np.asarray(self._data_read, dtype=object)[row_bar] if n_bars else np.zeros(0, dtype=object)
        )
        frame = pd.DataFrame(
            {
                "decision_id": decision_ids,
                "decision_point": bars,
                "agent_id": self.ids["agent_id"],
                "user_id": self.ids["user_id"],
                "run_id": self.ids["run_id"],
                "mode": self.ids["mode"],
                "timestamp": pd.to_datetime(np.asarray(self._ts, dtype=np.int64)[row_bar], utc=True),
                "symbol": symbol,
                "action": action,
                "quantity": floats["quantity"],
                "price": floats["price"],
                "order_type": order_type,
                "limit_price": floats["limit_price"],
                "target_shares": floats["target_shares"],
                "target_percent": floats["target_percent"],
                "confidence": floats["confidence"],
                "reasoning": reasoning,
                "inputs": inputs,
                "data_read": data_read,
                "cash": np.asarray(self._cash, dtype=np.float64)[row_bar],
                "equity": np.asarray(self._equity, dtype=np.float64)[row_bar],
                "positions": positions,
                "events": event_col,
                "code_hash": self.ids["code_hash"],
                "data_version": self.ids["data_version"],
            }
        )
        return frame[FMEL_DECISIONS.column_names]


def empty_frame() -> pd.DataFrame:
    """A zero-row frame with the FMEL columns (a rejected run has no decision points)."""
    return pd.DataFrame({name: pd.Series(dtype=object) for name in FMEL_DECISIONS.column_names})


def events_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Every event of every row (analytics and tests)."""
    out: list[dict[str, Any]] = []
    for raw in frame["events"]:
        out.extend(json.loads(raw))
    return out


def as_mapping(value: str | None) -> Mapping[str, Any]:
    return json.loads(value) if value else {}
