"""What a backtest returns: trusted accounting, FMEL rows, metrics, and how the run ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

STATUSES = ("completed", "failed", "rejected", "timeout", "killed")


@dataclass(frozen=True)
class AgentError:
    """Why a run did not complete, pointing into the agent's own file when it can."""

    error_type: str
    message: str
    line: int | None = None
    user_traceback: list[str] = field(default_factory=list)

    def render(self, filename: str = "agent.py") -> str:
        where = f"{filename}:{self.line}: " if self.line else f"{filename}: "
        return f"{where}{self.error_type}: {self.message}"


@dataclass
class BacktestResult:
    run_id: str
    agent_id: str
    user_id: str
    status: str
    error: AgentError | None
    code_hash: str
    data_version: str
    settings_hash: str
    result_id: str
    symbols: tuple[str, ...]
    equity: pd.DataFrame  # index timestamp (UTC); columns cash, positions_value, equity
    positions: pd.DataFrame  # index timestamp; one column of shares per symbol
    fills: pd.DataFrame
    trades: pd.DataFrame
    decisions: pd.DataFrame  # FMEL rows (farm_dagster.fmel.schema.FMEL_DECISIONS)
    metrics: dict[str, float] = field(default_factory=dict)
    tamper_suspected: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    kind: str = "native"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def summary(self) -> dict[str, Any]:
        """JSON-able identity and outcome (what the pipeline and the API store next to the frames)."""
        return {
            "run_id": self.run_id,
            "agent_id": self.agent_id,
            "user_id": self.user_id,
            "status": self.status,
            "error": None if self.error is None else self.error.__dict__,
            "code_hash": self.code_hash,
            "data_version": self.data_version,
            "settings_hash": self.settings_hash,
            "result_id": self.result_id,
            "symbols": list(self.symbols),
            "kind": self.kind,
            "tamper_suspected": self.tamper_suspected,
            "n_bars": len(self.equity),
            "n_fills": len(self.fills),
            "n_trades": len(self.trades),
        }
