"""Data-quality checks on ``market_data.ohlcv`` rows: pure functions of a frame, no Dagster, no I/O.

Why pure: the Dagster asset checks, the CLI and the tests all run the same functions on the same
frame; the asset checks only read the table and translate a :class:`CheckOutcome`.

Severities (and why):
- OHLC consistency, duplicate bars, positive prices: ``ERROR`` — a corrupt bar produces wrong
  fills and wrong metrics downstream, so these checks block the pipeline.
- Calendar gaps: ``WARN`` — a missing session is a fact of the source, not corruption (the engine
  holds NaN bars and never fills on them). The check *fails with WARN severity* when any session
  is missing or any bar falls on a non-session, so the gap is visible in the UI with its
  per-symbol counts and examples, but it does not block downstream assets.

Messages name the symbol, the timestamp and the offending values, e.g.
``AAPL 2001-05-03: high 10.0 < low 12.0``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from farm_dagster.market_data.schema import DAILY, PRICE_COLUMNS, require_columns

SAMPLE_ROWS = 10  # failing rows kept in an outcome
MESSAGE_EXAMPLES = 5  # examples spelled out in a message
KEY = ("symbol", "timestamp")


class Severity(StrEnum):
    ERROR = "ERROR"
    WARN = "WARN"


@dataclass(frozen=True)
class CheckOutcome:
    """Result of one check: pass/fail, a message saying exactly what is wrong, and evidence."""

    name: str
    passed: bool
    severity: Severity
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)
    failing_rows: pd.DataFrame = field(default_factory=pd.DataFrame)  # a sample, at most SAMPLE_ROWS

    def __str__(self) -> str:
        status = "PASS" if self.passed else f"FAIL ({self.severity})"
        return f"[{status}] {self.name}: {self.message}"


def fmt_ts(value: pd.Timestamp) -> str:
    """A date for daily stamps (00:00 UTC), else an ISO instant in UTC."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC")
    if stamp == stamp.normalize():
        return stamp.strftime("%Y-%m-%d")
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_value(value: Any) -> str:
    """Shortest exact repr of a float (so 10.000001 vs 10.000002 stays visible); NULL for NaN."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return "NULL"
    return repr(float(value))


# --- OHLC consistency ---------------------------------------------------------------------------

_OHLC_RULES: tuple[tuple[str, Callable[[pd.DataFrame], pd.Series], str], ...] = (
    # (rule id, mask of violating rows, template of the explanation)
    ("close_null", lambda f: f["close"].isna(), "close is NULL"),
    (
        "ohl_null_on_ohlcv_bar",
        lambda f: ~f["close_only"] & f[["open", "high", "low"]].isna().any(axis=1),
        "open {open} / high {high} / low {low}: NULL on a bar not marked close_only",
    ),
    (
        "ohl_on_close_only_bar",
        lambda f: f["close_only"] & f[["open", "high", "low"]].notna().any(axis=1),
        "close_only bar carries open {open} / high {high} / low {low} (must be NULL, never invented)",
    ),
    ("high_below_low", lambda f: ~f["close_only"] & (f["high"] < f["low"]), "high {high} < low {low}"),
    ("low_above_open", lambda f: ~f["close_only"] & (f["low"] > f["open"]), "low {low} > open {open}"),
    ("low_above_close", lambda f: ~f["close_only"] & (f["low"] > f["close"]), "low {low} > close {close}"),
    ("high_below_open", lambda f: ~f["close_only"] & (f["high"] < f["open"]), "high {high} < open {open}"),
    (
        "high_below_close",
        lambda f: ~f["close_only"] & (f["high"] < f["close"]),
        "high {high} < close {close}",
    ),
)


def check_ohlc_consistency(frame: pd.DataFrame) -> CheckOutcome:
    """low <= open, close <= high on OHLCV bars; close-only bars must keep open/high/low NULL."""
    require_columns(frame, (*KEY, *PRICE_COLUMNS, "close_only"))
    frame = _bool_close_only(frame)
    masks = {rule: mask(frame).to_numpy(dtype=bool) for rule, mask, _ in _OHLC_RULES}
    return _rule_outcome(
        "ohlc_consistency",
        frame,
        masks,
        {rule: text for rule, _, text in _OHLC_RULES},
        ok="low <= open, close <= high on every OHLCV bar; close-only bars carry no open/high/low",
        headline="bar(s) break low <= open, close <= high",
    )


# --- positive prices ----------------------------------------------------------------------------


def check_positive_prices(frame: pd.DataFrame) -> CheckOutcome:
    """Every present price is finite and > 0; a present volume is finite and >= 0 (NULL = unknown)."""
    require_columns(frame, (*KEY, *PRICE_COLUMNS, "volume"))
    masks: dict[str, np.ndarray] = {}
    texts: dict[str, str] = {}
    for col in PRICE_COLUMNS:
        values = frame[col].to_numpy(dtype=np.float64)
        present = ~np.isnan(values)
        masks[f"{col}_not_positive"] = present & ~(np.isfinite(values) & (values > 0))
        texts[f"{col}_not_positive"] = f"{col} {{{col}}} is not a positive finite price"
    volume = frame["volume"].to_numpy(dtype=np.float64)
    masks["volume_negative"] = ~np.isnan(volume) & ~(np.isfinite(volume) & (volume >= 0))
    texts["volume_negative"] = "volume {volume} is negative or infinite"
    return _rule_outcome(
        "positive_prices",
        frame,
        masks,
        texts,
        ok="every open/high/low/close present is > 0 and every volume present is >= 0",
        headline="bar(s) with a price <= 0 (or a negative volume)",
    )


# --- duplicates ---------------------------------------------------------------------------------


def check_no_duplicates(frame: pd.DataFrame) -> CheckOutcome:
    """At most one bar per (symbol, timestamp): a duplicate would double-count in every panel."""
    require_columns(frame, KEY)
    dup = frame.duplicated(list(KEY), keep=False).to_numpy()
    if not dup.any():
        return CheckOutcome(
            "no_duplicates",
            True,
            Severity.ERROR,
            f"{len(frame)} rows, every (symbol, timestamp) is unique",
            {"rows_checked": len(frame), "duplicate_keys": 0},
        )
    rows = frame.loc[dup]
    groups = rows.groupby(list(KEY), sort=True, observed=True)
    counts = groups.size()
    examples = []
    for (symbol, stamp), n in counts.head(MESSAGE_EXAMPLES).items():
        group = rows[(rows["symbol"] == symbol) & (rows["timestamp"] == stamp)]
        closes = ", ".join(fmt_value(v) for v in group["close"]) if "close" in group else ""
        sources = sorted({str(s) for s in group["source"]}) if "source" in group else []
        detail = f" (closes {closes}; source {', '.join(sources)})" if closes else ""
        examples.append(f"{symbol} {fmt_ts(stamp)} x{n}{detail}")
    more = len(counts) - len(examples)
    message = (
        f"{len(counts)} duplicated (symbol, timestamp) key(s), {len(rows) - len(counts)} extra row(s): "
        + ("; ".join(examples) + (f"; and {more} more" if more > 0 else ""))
    )
    by_symbol = counts.groupby(level=0, observed=True).size().sort_values(ascending=False)
    return CheckOutcome(
        "no_duplicates",
        False,
        Severity.ERROR,
        message,
        {
            "rows_checked": len(frame),
            "duplicate_keys": len(counts),
            "extra_rows": int(len(rows) - len(counts)),
            "duplicate_keys_by_symbol": {str(k): int(v) for k, v in by_symbol.head(50).items()},
            "examples": examples,
        },
        rows.head(SAMPLE_ROWS).reset_index(drop=True),
    )


# --- calendar gaps ------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _calendar_sessions(calendar: str, first_year: int) -> tuple[np.ndarray, np.datetime64, np.datetime64]:
    """Sessions (datetime64[D]) of ``calendar`` from ``first_year`` on, with the calendar's bounds."""
    import exchange_calendars as xcals

    cal = xcals.get_calendar(calendar, start=f"{first_year}-01-01")
    sessions = cal.sessions.tz_localize(None) if cal.sessions.tz is not None else cal.sessions
    days = sessions.to_numpy().astype("datetime64[D]")
    return days, days[0], days[-1]


def check_calendar_gaps(frame: pd.DataFrame, calendar: str = "XNYS") -> CheckOutcome:
    """Report, per daily symbol, sessions of ``calendar`` missing between its first and last bar,
    and bars on days that are not sessions. Intraday rows are skipped (counted in the metadata).
    """
    require_columns(frame, (*KEY, "timeframe"))
    daily = frame[frame["timeframe"].astype(str) == DAILY]
    skipped = len(frame) - len(daily)
    base_meta: dict[str, Any] = {
        "calendar": calendar,
        "daily_rows_checked": len(daily),
        "intraday_rows_skipped": skipped,
    }
    if daily.empty:
        return CheckOutcome(
            "calendar_gaps", True, Severity.WARN, f"no daily bars to compare with {calendar}", base_meta
        )
    stamps = pd.DatetimeIndex(pd.to_datetime(daily["timestamp"], utc=True))
    day_values = stamps.tz_localize(None).to_numpy().astype("datetime64[D]")
    first_year = int(str(day_values.min())[:4])
    sessions, cal_first, cal_last = _calendar_sessions(calendar, max(first_year, 1900))
    per_symbol: dict[str, dict[str, Any]] = {}
    sample: list[dict[str, Any]] = []
    totals = {"missing": 0, "off_calendar": 0, "outside_calendar": 0}
    symbols = daily["symbol"].astype(str).to_numpy()
    order = np.argsort(symbols, kind="stable")
    sym_sorted, days_sorted = symbols[order], day_values[order]
    bounds = np.flatnonzero(np.r_[True, sym_sorted[1:] != sym_sorted[:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        symbol = str(sym_sorted[lo])
        days = np.unique(days_sorted[lo:hi])
        inside = (days >= cal_first) & (days <= cal_last)
        outside = int((~inside).sum())
        days = days[inside]
        if days.size == 0:
            totals["outside_calendar"] += outside
            continue
        expected = sessions[(sessions >= days[0]) & (sessions <= days[-1])]
        missing = np.setdiff1d(expected, days, assume_unique=True)
        off = np.setdiff1d(days, expected, assume_unique=True)
        totals["missing"] += missing.size
        totals["off_calendar"] += off.size
        totals["outside_calendar"] += outside
        if missing.size or off.size:
            per_symbol[symbol] = {
                "missing_sessions": int(missing.size),
                "missing_examples": [str(d) for d in missing[:MESSAGE_EXAMPLES]],
                "off_calendar_bars": int(off.size),
                "off_calendar_examples": [str(d) for d in off[:MESSAGE_EXAMPLES]],
                "first": str(days[0]),
                "last": str(days[-1]),
            }
            for kind, values in (("missing_session", missing), ("bar_on_non_session", off)):
                for d in values[: max(0, SAMPLE_ROWS - len(sample))]:
                    sample.append({"symbol": symbol, "date": str(d), "problem": kind})
    meta = {
        **base_meta,
        "symbols_checked": int(len(bounds) - 1),
        "symbols_with_gaps": len(per_symbol),
        "missing_sessions_total": totals["missing"],
        "off_calendar_bars_total": totals["off_calendar"],
        "bars_outside_calendar_range": totals["outside_calendar"],
        "per_symbol": per_symbol,
    }
    if not per_symbol:
        return CheckOutcome(
            "calendar_gaps",
            True,
            Severity.WARN,
            f"{meta['symbols_checked']} daily symbol(s) follow the {calendar} sessions without gaps",
            meta,
        )
    parts = []
    for symbol, info in list(per_symbol.items())[:MESSAGE_EXAMPLES]:
        bits = []
        if info["missing_sessions"]:
            bits.append(
                f"{info['missing_sessions']} missing session(s), e.g. {', '.join(info['missing_examples'][:3])}"
            )
        if info["off_calendar_bars"]:
            bits.append(
                f"{info['off_calendar_bars']} bar(s) on non-sessions, e.g. {', '.join(info['off_calendar_examples'][:3])}"
            )
        parts.append(f"{symbol}: {'; '.join(bits)}")
    more = len(per_symbol) - len(parts)
    message = (
        f"{len(per_symbol)} symbol(s) deviate from the {calendar} calendar "
        f"({totals['missing']} missing session(s), {totals['off_calendar']} bar(s) on non-sessions): "
        + " | ".join(parts)
        + (f" | and {more} more symbol(s)" if more > 0 else "")
    )
    return CheckOutcome("calendar_gaps", False, Severity.WARN, message, meta, pd.DataFrame(sample))


# --- all ----------------------------------------------------------------------------------------

CHECKS: dict[str, Callable[[pd.DataFrame], CheckOutcome]] = {
    "ohlc_consistency": check_ohlc_consistency,
    "no_duplicates": check_no_duplicates,
    "positive_prices": check_positive_prices,
    "calendar_gaps": check_calendar_gaps,
}


def run_all_checks(frame: pd.DataFrame) -> list[CheckOutcome]:
    """Every check on one frame, in a fixed order."""
    return [check(frame) for check in CHECKS.values()]


# --- helpers ------------------------------------------------------------------------------------


def _bool_close_only(frame: pd.DataFrame) -> pd.DataFrame:
    """close_only as a plain bool column (a NULL flag counts as False: the bar must then be full OHLC)."""
    flags = frame["close_only"]
    if flags.dtype != bool:
        frame = frame.assign(close_only=flags.fillna(False).astype(bool))
    return frame


def _rule_outcome(
    name: str,
    frame: pd.DataFrame,
    masks: dict[str, np.ndarray],
    texts: dict[str, str],
    *,
    ok: str,
    headline: str,
) -> CheckOutcome:
    """Fold per-rule violation masks into one outcome with per-rule counts and worded examples."""
    any_bad = np.zeros(len(frame), dtype=bool)
    for mask in masks.values():
        any_bad |= mask
    n_bad = int(any_bad.sum())
    by_rule = {rule: int(mask.sum()) for rule, mask in masks.items() if mask.any()}
    meta: dict[str, Any] = {"rows_checked": len(frame), "failing_rows": n_bad, "failing_by_rule": by_rule}
    if n_bad == 0:
        return CheckOutcome(name, True, Severity.ERROR, f"{len(frame)} rows: {ok}", meta)
    idx = np.flatnonzero(any_bad)
    sample = frame.iloc[idx[:SAMPLE_ROWS]]
    examples = []
    for pos, (_, row) in zip(idx[:SAMPLE_ROWS], sample.iterrows(), strict=True):
        values = {
            col: fmt_value(row[col]) for col in ("open", "high", "low", "close", "volume") if col in row
        }
        reasons = [texts[rule].format(**values) for rule, mask in masks.items() if mask[pos]]
        examples.append(f"{row['symbol']} {fmt_ts(row['timestamp'])}: {'; '.join(reasons)}")
    bad_symbols = frame["symbol"].astype(str).to_numpy()[idx]
    sym, counts = np.unique(bad_symbols, return_counts=True)
    meta["failing_by_symbol"] = {
        str(s): int(c) for s, c in sorted(zip(sym, counts, strict=True), key=lambda x: -x[1])[:50]
    }
    meta["examples"] = examples
    shown = examples[:MESSAGE_EXAMPLES]
    more = n_bad - len(shown)
    message = f"{n_bad} {headline}: " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    return CheckOutcome(name, False, Severity.ERROR, message, meta, sample.reset_index(drop=True))
