"""Backtest artifacts as images: equity curve and a one-page tearsheet (PNG bytes for the object store)."""

from __future__ import annotations

import io
import math
from typing import Any

import pandas as pd


def _pyplot() -> Any:
    """matplotlib, imported on first use: loading the code location (once per run) stays light."""
    import matplotlib

    matplotlib.use("Agg")  # headless: runs in Dagster run processes and pods without a display
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def equity_png(equity: pd.Series, title: str) -> bytes:
    fig, ax = _pyplot().subplots(figsize=(9, 3.2))
    ax.plot(equity.index, equity.to_numpy(), color="#1f6f43", linewidth=1.2)
    ax.set_title(title)
    ax.set_ylabel("equity")
    ax.grid(alpha=0.3)
    return _png(fig)


def tearsheet_png(equity: pd.Series, metrics: dict[str, Any], title: str) -> bytes:
    """Equity, drawdown and the headline metrics on one page."""
    fig = _pyplot().figure(figsize=(9, 7))
    grid = fig.add_gridspec(3, 1, height_ratios=[2.2, 1.0, 1.1])
    ax_eq, ax_dd, ax_tb = (fig.add_subplot(grid[i]) for i in range(3))
    ax_eq.plot(equity.index, equity.to_numpy(), color="#1f6f43", linewidth=1.2)
    ax_eq.set_title(title)
    ax_eq.grid(alpha=0.3)
    drawdown = equity / equity.cummax() - 1.0
    ax_dd.fill_between(drawdown.index, drawdown.to_numpy(), 0.0, color="#b03a2e", alpha=0.5)
    ax_dd.set_ylabel("drawdown")
    ax_dd.grid(alpha=0.3)
    ax_tb.axis("off")
    shown = [
        (name, value)
        for name, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ][:16]
    cells = [
        [name, "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"]
        for name, value in shown
    ]
    if cells:
        half = (len(cells) + 1) // 2
        left, right = cells[:half], cells[half:] + [["", ""]] * (half - len(cells[half:]))
        rows = [a + b for a, b in zip(left, right, strict=True)]
        ax_tb.table(cellText=rows, loc="center", cellLoc="left").scale(1, 1.2)
    return _png(fig)
