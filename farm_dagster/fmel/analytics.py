"""FMEL analytics: what agents decide, how sure they are, and whether their confidence is worth anything.

Calibration is measured against the market, not against the agent's own accounting: each BUY or
SELL decision is scored by the symbol's forward return from the decision bar's close to the close
``horizon`` bars later (a SELL scores the negated return). A *hit* is a positive directional
return. HOLD rows and decisions without a later price are not scored. Buckets are fixed so that
agents and runs compare: [0, .2), [.2, .4), [.4, .6), [.6, .8), [.8, 1].
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from farm_dagster.market_data.panel import BarPanel
from farm_dagster.resources.tables import FLOAT, INT, STRING, TIMESTAMP, TableSpec, register

BUCKET_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
BUCKET_LABELS = ("0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0")
PLATFORM = "*"  # the scope value of platform-wide rows
DEFAULT_HORIZON = 5

DECISION_COUNTS = register(
    TableSpec(
        name="fmel.decision_counts",
        columns=(
            ("scope", STRING),
            ("action", STRING),
            ("symbol", STRING),
            ("n", INT),
            ("updated_at", TIMESTAMP),
        ),
        cluster_by=("scope",),
        description="Decisions by action and symbol, per agent (scope = agent id) and platform-wide (scope = '*').",
    )
)
CONFIDENCE_DISTRIBUTION = register(
    TableSpec(
        name="fmel.confidence_distribution",
        columns=(
            ("scope", STRING),
            ("bucket", STRING),
            ("n", INT),
            ("share", FLOAT),
            ("updated_at", TIMESTAMP),
        ),
        cluster_by=("scope",),
        description="How many decisions fall in each fixed confidence bucket.",
    )
)
CONFIDENCE_OUTCOMES = register(
    TableSpec(
        name="fmel.confidence_outcomes",
        columns=(
            ("scope", STRING),
            ("bucket", STRING),
            ("n_scored", INT),
            ("hit_rate", FLOAT),
            ("mean_forward_return", FLOAT),
            ("horizon_bars", INT),
            ("updated_at", TIMESTAMP),
        ),
        cluster_by=("scope",),
        description="Hit rate and mean directional forward return of the decisions in each confidence bucket.",
    )
)


def bucket_of(confidence: pd.Series) -> pd.Series:
    """Fixed bucket label per confidence (1.0 falls in the top bucket)."""
    clipped = confidence.astype(float).clip(0.0, 1.0)
    idx = np.minimum(
        np.searchsorted(BUCKET_EDGES[1:], clipped.to_numpy(), side="right"), len(BUCKET_LABELS) - 1
    )
    return pd.Series(np.asarray(BUCKET_LABELS, dtype=object)[idx], index=confidence.index)


def forward_returns(decisions: pd.DataFrame, panel: BarPanel, horizon: int = DEFAULT_HORIZON) -> pd.Series:
    """Directional forward return of each BUY/SELL decision (NaN when it cannot be scored)."""
    out = pd.Series(np.nan, index=decisions.index, dtype=float)
    if decisions.empty:
        return out
    columns = {symbol: i for i, symbol in enumerate(panel.symbols)}
    ts = pd.to_datetime(decisions["timestamp"], utc=True).dt.as_unit("ns").astype("int64").to_numpy()
    rows = np.searchsorted(panel.timestamps, ts, side="left")
    sign = decisions["action"].map({"BUY": 1.0, "SELL": -1.0}).to_numpy(dtype=float)
    for pos, (symbol, row, direction) in enumerate(zip(decisions["symbol"], rows, sign, strict=True)):
        col = columns.get(symbol)
        if col is None or np.isnan(direction) or row >= panel.n_bars or panel.timestamps[row] != ts[pos]:
            continue
        later = row + horizon
        if later >= panel.n_bars:
            continue
        now, then = panel.close[row, col], panel.close[later, col]
        if np.isfinite(now) and np.isfinite(then) and now > 0:
            out.iloc[pos] = direction * (then / now - 1.0)
    return out


def analytics_tables(
    decisions: pd.DataFrame, panel: BarPanel | None, horizon: int = DEFAULT_HORIZON
) -> dict[str, pd.DataFrame]:
    """The three analytics tables for every agent in ``decisions`` and for the platform as a whole."""
    now = pd.Timestamp.now(tz="UTC")
    frames: dict[str, list[pd.DataFrame]] = {"counts": [], "distribution": [], "outcomes": []}
    if decisions.empty:
        return _assemble(frames, now)
    data = decisions.copy()
    data["bucket"] = bucket_of(data["confidence"].fillna(0.0))
    data["fwd"] = forward_returns(data, panel, horizon) if panel is not None else np.nan
    scopes = [(PLATFORM, data)] + [(agent, part) for agent, part in data.groupby("agent_id", sort=True)]
    for scope, part in scopes:
        counts = (
            part.groupby(["action", part["symbol"].fillna("")], dropna=False).size().reset_index(name="n")
        )
        counts.columns = ["action", "symbol", "n"]
        frames["counts"].append(counts.assign(scope=scope))
        dist = part["bucket"].value_counts().reindex(BUCKET_LABELS, fill_value=0)
        frames["distribution"].append(
            pd.DataFrame(
                {"bucket": BUCKET_LABELS, "n": dist.to_numpy(), "share": dist.to_numpy() / max(len(part), 1)}
            ).assign(scope=scope)
        )
        scored = part.dropna(subset=["fwd"])
        grouped = scored.groupby("bucket")["fwd"]
        outcome = pd.DataFrame(
            {
                "bucket": BUCKET_LABELS,
                "n_scored": grouped.size().reindex(BUCKET_LABELS, fill_value=0).to_numpy(),
                "hit_rate": grouped.apply(lambda s: float((s > 0).mean())).reindex(BUCKET_LABELS).to_numpy(),
                "mean_forward_return": grouped.mean().reindex(BUCKET_LABELS).to_numpy(),
            }
        )
        frames["outcomes"].append(outcome.assign(scope=scope, horizon_bars=horizon))
    return _assemble(frames, now)


def _assemble(frames: dict[str, list[pd.DataFrame]], now: pd.Timestamp) -> dict[str, pd.DataFrame]:
    specs = {
        "counts": DECISION_COUNTS,
        "distribution": CONFIDENCE_DISTRIBUTION,
        "outcomes": CONFIDENCE_OUTCOMES,
    }
    out = {}
    for name, spec in specs.items():
        frame = pd.concat(frames[name], ignore_index=True) if frames[name] else pd.DataFrame()
        frame = frame.assign(updated_at=now) if len(frame) else pd.DataFrame(columns=spec.column_names)
        out[name] = frame.reindex(columns=spec.column_names)
    return out
