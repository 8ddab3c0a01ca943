"""Build FMEL rows: per decision, plus one HOLD row for a bar on which the agent decided nothing.

Accumulated per bar (cheap appends, strings shared between bars when unchanged) and turned into a
columnar frame once, because a long backtest has one row per bar and row-by-row dicts would
dominate its run time.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from json.encoder import encode_basestring_ascii as _json_str  # type: ignore[attr-defined]
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from farm_dagster.engine.protocol import CheckedDecision
from farm_dagster.engine.protocol import dumps as _dumps
from farm_dagster.engine.protocol import dumps_sorted as _dumps_sorted
from farm_dagster.engine.protocol import number_text as _number_text
from farm_dagster.fmel.schema import FMEL_DECISIONS

# Builds a frame's whole ``events`` column at once, in two steps: (row of each logged decision,
# rising; number of rows; the texts logged for decisions, None where the builder writes theirs) ->
# its renderer, which then makes an Arrow string column, "[]" on the rows of no decision (the
# compiled book's ``events_renderer``). The first step holds the GIL; the renderer need not.
EventsColumn = Callable[[np.ndarray, int, Sequence[str | None]], Callable[[], pa.Array]]


@dataclass(slots=True)
class LoggedDecision:
    decision_id: str
    decision: CheckedDecision
    action: str  # BUY | SELL | HOLD, or the raw action of a rejected decision
    quantity: float | None
    price: float | None
    # FMEL texts rendered ahead of :meth:`DecisionLog.frame` (the runner fills them while it waits
    # for the agent); None = render in ``frame``, which gives the same text.
    inputs_json: str | None = None
    events_json: str | None = None


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
    keys = position_keys(tuple(symbols))
    values = shares[held]
    whole = values.astype(np.int64)
    if np.array_equal(whole, values):  # whole shares (the usual case) print as integers: faster
        values = whole
    pairs = zip(held.tolist(), values.tolist(), strict=True)
    return "{" + ",".join([keys[i] + repr(v) for i, v in pairs]) + "}"


@lru_cache(maxsize=64)
def position_keys(symbols: tuple[str, ...]) -> list[str]:
    """Each symbol's ``"SYM":`` as a positions text spells it (JSON, ASCII only)."""
    return [json.dumps(s) + ":" for s in symbols]


def positions_texts(symbols: Sequence[str], matrix: np.ndarray) -> list[str]:
    """:func:`positions_json` of every row of ``matrix`` (bars x symbols), the same text row by row.

    Why not call it per row: a long run has a row per bar and a book of many symbols, but only a
    few positions change from one bar to the next. Each change's ``"SYM":shares,`` piece is
    spelled once, in a pass over all changes (whole-share and float spellings); a row's text is
    rebuilt only on bars where something changed, by joining the current pieces.
    """
    n_rows = matrix.shape[0]
    if not n_rows:
        return []
    keys = position_keys(tuple(symbols))
    n = len(keys)
    # Row 0 is "changed" in every held column; NaN != NaN keeps a NaN position changed, as it should.
    changed_rows, changed_cols = np.nonzero(matrix[1:] != matrix[:-1])
    cols0 = np.flatnonzero(matrix[0])
    rows = np.concatenate([np.zeros(len(cols0), dtype=np.int64), changed_rows + 1])
    cols = np.concatenate([cols0, changed_cols])
    values = matrix[rows, cols]
    held = values != 0  # -0.0 is not held either; NaN is (positions_json prints it)
    # what ``astype(np.int64)`` keeps unchanged: the test positions_json applies to a whole book
    whole = np.isfinite(values) & (values == np.trunc(values)) & (values >= -(2.0**63)) & (values < 2.0**63)
    cols_l = cols.tolist()
    held_l = held.tolist()
    shares = np.where(whole, values, 0.0).astype(np.int64).tolist()
    as_int = [f"{keys[i]}{v}," if h else "" for i, v, h in zip(cols_l, shares, held_l, strict=True)]
    fractional_at = (held & ~whole).tolist()
    any_fractional = any(fractional_at)
    if any_fractional:  # float spellings, needed only once some book holds a fractional position
        floats = values.tolist()
        as_float = [f"{keys[i]}{v!r}," if h else "" for i, v, h in zip(cols_l, floats, held_l, strict=True)]
    # the changes of each changed row: [starts[g], starts[g + 1]) in the arrays above
    starts = np.flatnonzero(np.diff(rows, prepend=-1)).tolist() + [len(cols_l)]
    changed_at = rows[starts[:-1]].tolist()
    int_pieces, float_pieces = [""] * n, [""] * n  # current piece of each symbol ("" = not held)
    frac, fractional = [False] * n, 0  # symbols held in fractional shares: the book prints as floats
    texts = []
    for lo, hi in itertools.pairwise(starts):
        if any_fractional:
            for k in range(lo, hi):
                i = cols_l[k]
                int_pieces[i], float_pieces[i] = as_int[k], as_float[k]
                fractional += fractional_at[k] - frac[i]
                frac[i] = fractional_at[k]
        else:
            for k in range(lo, hi):
                int_pieces[cols_l[k]] = as_int[k]
        texts.append("{" + "".join(float_pieces if fractional else int_pieces)[:-1] + "}")
    if not changed_at or changed_at[0] != 0:  # nothing held on the first rows
        changed_at.insert(0, 0)
        texts.insert(0, "{}")
    which = np.searchsorted(np.asarray(changed_at), np.arange(n_rows), side="right") - 1
    return np.asarray(texts, dtype=object)[which].tolist()


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
        self._positions: list[str | None] = []
        self._position_matrix: np.ndarray | None = None
        self._data_read: list[str] = []
        # Decision rows, column by column (a long run logs ~10^6 of them: no object per row).
        self._d_row: list[int] = []  # row of its bar in the bar lists above
        self._d_seq: list[int] = []  # position among its bar's decisions
        self._d_id: list[str] = []
        self._d_action: list[str] = []
        self._d_quantity: list[float | None] = []
        self._d_price: list[float | None] = []
        self._d_checked: list[CheckedDecision] = []
        self.inputs_texts: list[str | None] = []  # None = render in ``frame``
        self.events_texts: list[str | None] = []  # None = take from ``frame``'s ``events``
        self._templates: dict[tuple[Any, ...], Any] = {}  # inputs key set -> text template

    def inputs_text(self, decision: CheckedDecision) -> str:
        """The FMEL ``inputs`` text of one decision (what :meth:`frame` writes for it)."""
        return _inputs_json(decision.inputs, self._templates) if decision.inputs else "{}"

    def render_inputs(self, k: int, decision: CheckedDecision) -> None:
        """Render decision ``k``'s inputs text ahead of :meth:`frame`, then drop its inputs mapping.

        Why drop it: the text is all the frame needs, and a long run holds one mapping per
        decision (370,000 on 100 x 100,000 bars, about 0.1 GB). The runner renders while it waits
        for the agent, so freeing them there costs nothing; at the end of the run, with the run's
        other objects, it lengthened the result frames.
        """
        self.inputs_texts[k] = self.inputs_text(decision)
        decision.inputs = None

    def unrendered_ids(self) -> list[str]:
        """Ids of the logged decisions whose events text is left to :meth:`frame`."""
        ids = self._d_id
        return [ids[k] for k, text in enumerate(self.events_texts) if text is None]

    def add_decision(
        self,
        row: int,
        seq: int,
        decision_id: str,
        decision: CheckedDecision,
        action: str,
        quantity: float | None,
        price: float | None,
    ) -> int:
        """Log the ``seq``-th decision of the bar logged (or about to be) at ``row``; returns its index.

        ``action``/``quantity``: what it implied at decision time (a TARGET as the trade it implies).
        """
        k = len(self._d_id)
        self._d_row.append(row)
        self._d_seq.append(seq)
        self._d_id.append(decision_id)
        self._d_action.append(action)
        self._d_quantity.append(quantity)
        self._d_price.append(price)
        self._d_checked.append(decision)
        self.inputs_texts.append(None)
        self.events_texts.append(None)
        return k

    def settle_bar(self, row: int, cash: float, equity: float) -> None:
        """The book's cash and equity of logged bar ``row``, for a bar logged before it was booked."""
        self._cash[row] = cash
        self._equity[row] = equity

    def settle_decision(self, k: int, action: str, quantity: float) -> None:
        """What decision ``k`` implied at decision time, once its bar is booked (see :meth:`add_decision`)."""
        self._d_action[k] = action
        self._d_quantity[k] = quantity

    def __len__(self) -> int:
        return len(self._bars)

    def bind_positions(self, matrix: np.ndarray) -> None:
        """Where bars logged with ``positions=None`` find their shares (row = bar index)."""
        self._position_matrix = matrix

    def add_bar(
        self,
        bar: int,
        ts_ns: int,
        *,
        cash: float,
        equity: float,
        positions: str | None,
        data_read: str,
        decisions: Sequence[LoggedDecision] = (),
    ) -> None:
        """Record decision point ``bar``; ``positions``/``data_read`` are JSON strings.

        Its decisions are either given here or logged with :meth:`add_decision` (the runner's way).

        ``positions=None`` defers the text to :meth:`frame`, which renders it from its
        ``positions`` matrix (row ``bar``): the runner's way, one render per run, not per bar.
        """
        row = len(self._bars)
        for seq, item in enumerate(decisions):
            k = self.add_decision(
                row, seq, item.decision_id, item.decision, item.action, item.quantity, item.price
            )
            self.inputs_texts[k], self.events_texts[k] = item.inputs_json, item.events_json
        self._bars.append(bar)
        self._ts.append(ts_ns)
        self._cash.append(cash)
        self._equity.append(equity)
        self._positions.append(positions)
        self._data_read.append(data_read)

    def frame(
        self,
        events: Mapping[str | None, Any] | Iterable[tuple[str | None, dict[str, Any]]] | EventsColumn = (),
        *,
        positions: np.ndarray | None = None,
        render_positions: Callable[[Sequence[str], np.ndarray], list[str]] = positions_texts,
    ) -> pd.DataFrame:
        """All rows as a frame with the columns of ``fmel.trading_decisions``.

        ``events``: each decision's order/trade events, as {decision_id: [event, ...] or its JSON
        array text} (e.g. the broker's ``events_json()``), as (decision_id, event) pairs, or as
        an :data:`EventsColumn` that builds the column itself. The ``events`` column is a pandas
        string column held by Arrow (one buffer, not a Python text per row).
        ``positions``: shares per (bar, symbol), for the bars logged with ``positions=None``, whose
        texts ``render_positions`` spells (:func:`positions_texts`, or a faster one that spells them
        the same).
        """
        build_events: EventsColumn | None = None
        if callable(events):
            build_events, by_decision = events, {}
        elif isinstance(events, Mapping):
            by_decision = events
        else:
            by_decision = {}
            for did, event in events:
                if did is not None:
                    by_decision.setdefault(did, []).append(event)
        n_bars = len(self._bars)
        d_rows = np.asarray(self._d_row, dtype=np.int64)
        per_bar = np.bincount(d_rows, minlength=n_bars) if n_bars else np.zeros(0, dtype=np.int64)
        counts = np.where(per_bar > 0, per_bar, 1)  # a silent bar is one HOLD row
        n_rows = int(counts.sum())
        row_bar = np.repeat(np.arange(n_bars), counts)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n_bars else np.zeros(0, dtype=np.int64)
        idx = offsets[d_rows] + np.asarray(self._d_seq, dtype=np.int64)  # row of each logged decision
        # Two columns are rendered on worker threads while this one builds the others: a builder's
        # events (the compiled book's renderer releases the GIL for all its work) and the bars'
        # positions texts (their compiled renderer does too, for most of its). Only such work goes
        # there: a thread that takes the GIL back and forth waits up to the interpreter's switch
        # interval (5 ms) at each turn, which cost more than it saved.
        # The positions first: their renderer runs while this thread prepares the events.
        with ThreadPoolExecutor(2, thread_name_prefix="fmel-frame") as pool:
            positions_job = pool.submit(self._bar_positions, positions, render_positions)
            events_job = (
                pool.submit(build_events(idx, n_rows, self.events_texts))
                if build_events is not None
                else None
            )
            columns = self._columns(
                by_decision, n_bars, d_rows, per_bar, n_rows, row_bar, offsets, idx, events_job is None
            )
            columns["positions"] = positions_job.result()[row_bar]
            events_column = events_job.result() if events_job is not None else columns.pop("events")
        columns["events"] = pd.arrays.ArrowStringArray(pa.chunked_array([events_column]))
        # Built in the table's column order (selecting the columns afterwards would copy them all),
        # without copying: every array here is new and owned by the frame alone (a copy of ~30
        # columns of a long run costs 0.4 s on 370,000 rows).
        return pd.DataFrame({name: columns[name] for name in FMEL_DECISIONS.column_names}, copy=False)

    def _columns(
        self,
        by_decision: Mapping[str | None, Any],
        n_bars: int,
        d_rows: np.ndarray,
        per_bar: np.ndarray,
        n_rows: int,
        row_bar: np.ndarray,
        offsets: np.ndarray,
        idx: np.ndarray,
        with_events: bool,
    ) -> dict[str, Any]:
        """Every column of :meth:`frame` but ``positions``, and ``events`` only ``with_events`` (as
        an Arrow array)."""
        bars = np.asarray(self._bars, dtype=np.int64)[row_bar]
        hold_symbol = self.symbols[0] if len(self.symbols) == 1 else None
        decision_ids = np.empty(n_rows, dtype=object)
        symbol = np.full(n_rows, hold_symbol, dtype=object)
        action = np.full(n_rows, "HOLD", dtype=object)
        order_type = np.full(n_rows, None, dtype=object)
        reasoning = np.full(n_rows, "", dtype=object)
        inputs = np.full(n_rows, "{}", dtype=object)
        event_col = np.full(n_rows, "[]", dtype=object) if with_events else None
        float_names = (
            "quantity",
            "price",
            "limit_price",
            "stop_price",
            "trail_amount",
            "trail_percent",
            "target_shares",
            "target_percent",
            "confidence",
        )
        floats = {name: np.full(n_rows, np.nan) for name in float_names}
        nat = np.iinfo(np.int64).min
        expires = np.full(n_rows, nat, dtype=np.int64).view("datetime64[ns]")
        # Silent bars: one HOLD row each, with sequence number 0.
        silent = per_bar == 0
        silent_rows = offsets[silent]
        prefix = f"{self.run_id}-"
        decision_ids[silent_rows] = [
            f"{prefix}{b:07d}-000" for b in np.asarray(self._bars, dtype=np.int64)[silent].tolist()
        ]
        if self._d_id:
            checked = self._d_checked
            inputs_text = self.inputs_text
            get_events = by_decision.get
            decision_ids[idx] = self._d_id
            symbol[idx] = [d.symbol for d in checked]
            action[idx] = self._d_action
            order_type[idx] = [d.order_type if d.is_order else None for d in checked]  # orders only
            reasoning[idx] = [d.reasoning for d in checked]
            inputs[idx] = [
                text if text is not None else inputs_text(d)
                for text, d in zip(self.inputs_texts, checked, strict=True)
            ]
            if event_col is not None:
                event_col[idx] = [
                    text if text is not None else _events_text(get_events(did))
                    for text, did in zip(self.events_texts, self._d_id, strict=True)
                ]
            columns_of = {
                "quantity": self._d_quantity,
                "price": self._d_price,
                "limit_price": [d.limit_price for d in checked],
                "stop_price": [d.stop_price for d in checked],
                "trail_amount": [d.trail_amount for d in checked],
                "trail_percent": [d.trail_percent for d in checked],
                "target_shares": [d.target_shares for d in checked],
                "target_percent": [d.target_percent for d in checked],
                "confidence": [d.confidence for d in checked],
            }
            for name, values in columns_of.items():
                _put_floats(floats[name], idx, values)
            expires.view(np.int64)[idx] = [nat if d.expires_at is None else d.expires_at for d in checked]
        data_read = (
            np.asarray(self._data_read, dtype=object)[row_bar] if n_bars else np.zeros(0, dtype=object)
        )
        columns = {
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
            "stop_price": floats["stop_price"],
            "trail_amount": floats["trail_amount"],
            "trail_percent": floats["trail_percent"],
            "expires_at": pd.to_datetime(expires, utc=True),
            "target_shares": floats["target_shares"],
            "target_percent": floats["target_percent"],
            "confidence": floats["confidence"],
            "reasoning": reasoning,
            "inputs": inputs,
            "data_read": data_read,
            "cash": np.asarray(self._cash, dtype=np.float64)[row_bar],
            "equity": np.asarray(self._equity, dtype=np.float64)[row_bar],
            "code_hash": self.ids["code_hash"],
            "data_version": self.ids["data_version"],
        }
        if event_col is not None:
            columns["events"] = pa.array(event_col, type=pa.large_string())
        return columns

    def _bar_positions(
        self, matrix: np.ndarray | None, render: Callable[[Sequence[str], np.ndarray], list[str]]
    ) -> np.ndarray:
        """Each logged bar's positions text (an object array); deferred ones rendered from ``matrix``
        in one pass."""
        texts = np.empty(len(self._positions), dtype=object)
        texts[:] = self._positions
        deferred = np.flatnonzero(np.equal(texts, None))
        if not deferred.size:
            return texts
        if matrix is None:
            matrix = self._position_matrix
        if matrix is None:
            raise ValueError("bars were logged with positions=None: pass frame(positions=...)")
        bars = np.asarray(self._bars, dtype=np.int64)[deferred]
        rendered = np.empty(int(bars.max()) + 1, dtype=object)
        rendered[:] = render(self.symbols, matrix[: len(rendered)])
        texts[deferred] = rendered[bars]
        return texts


def _put_floats(column: np.ndarray, idx: np.ndarray, values: list[float | None]) -> None:
    """``column[idx] = values``, None as NaN (the column's fill, left as it is where all are None).

    Why: numpy converts a list holding None 3-4 times slower than one of floats, and most order
    fields (limit, stop, trail, target shares) are None on every decision of most runs.
    """
    nones = values.count(None)
    if nones == len(values):
        return
    if nones:
        values = [math.nan if v is None else v for v in values]
    column[idx] = np.array(values, dtype=np.float64)


def _events_text(found: Any) -> str:
    if not found:
        return "[]"
    if isinstance(found, str):
        return found
    from farm_dagster.engine.broker import event_dict  # events may be the broker's tuples

    return _dumps([event_dict(e) for e in found])


def _inputs_json(inputs: Mapping[str, Any], templates: dict[tuple[Any, ...], Any]) -> str:
    """``dumps_sorted(inputs)``; the same text from a per-key-set template when every value is a
    finite float or an int (``repr`` spells those exactly as JSON does; :func:`protocol.number_text`
    spells them the same, faster)."""
    keys = tuple(inputs)
    entry = templates.get(keys, False)
    if entry is False:
        entry = None
        if all(type(k) is str for k in keys):
            order = tuple(sorted(keys))
            body = ",".join(_json_str(k).replace("%", "%%") + ":%s" for k in order)
            entry = (order, "{" + body + "}")
        templates[keys] = entry
    if entry is not None:
        texts = []
        for k in entry[0]:
            v = inputs[k]
            kind = type(v)
            if kind is float:
                if v - v != 0.0:
                    break
            elif kind is not int:
                break
            texts.append(_number_text(v))
        else:
            return entry[1] % tuple(texts)
    return _dumps_sorted(inputs)


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
