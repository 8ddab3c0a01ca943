"""Agent records in the operational store: submission, status transitions, stored code.

One module owns the agent lifecycle so the CLI demo, the Dagster sensor and assets, and the API
(later) move an agent through the same states the same way:

    submitted -> validating -> backtesting -> completed | failed

A re-submission of the same agent (new window, new data) puts it back to ``submitted`` and bumps
``submission_seq``; the sensor's cursor is the highest sequence it has turned into a run.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator

from farm_dagster.engine.identity import code_hash
from farm_dagster.resources.base import NotFoundError, ObjectStore, OperationalStore

AGENTS = "agents"
COUNTERS = "counters"


class AgentStatus(StrEnum):
    SUBMITTED = "submitted"
    VALIDATING = "validating"
    BACKTESTING = "backtesting"
    COMPLETED = "completed"
    FAILED = "failed"


class BacktestRequest(BaseModel):
    """What to backtest an agent on: the universe and the window (inclusive dates, UTC)."""

    symbols: list[str] = Field(min_length=1, max_length=500)
    start: str
    end: str
    initial_cash: float = Field(100_000.0, gt=0)
    commission_bps: float = Field(0.0, ge=0, le=1_000)
    slippage_bps: float = Field(0.0, ge=0, le=1_000)

    @field_validator("symbols")
    @classmethod
    def _clean_symbols(cls, value: list[str]) -> list[str]:
        cleaned = [s.strip().upper() for s in value if s.strip()]
        if not cleaned:
            raise ValueError("at least one symbol is required")
        return list(dict.fromkeys(cleaned))

    @field_validator("start", "end")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        try:
            return datetime.fromisoformat(value).date().isoformat()
        except ValueError:
            raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def code_key(agent_id: str) -> str:
    return f"agents/{agent_id}/agent.py"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "agent"


def next_sequence(opstore: OperationalStore) -> int:
    """A store-wide increasing submission number (compare-and-set loop, safe across processes)."""
    while True:
        doc = opstore.get(COUNTERS, "submissions")
        if doc is None:
            opstore.put(COUNTERS, "submissions", {"value": 0})
            continue
        current = int(doc["value"])
        if opstore.transition(COUNTERS, "submissions", "value", [current], current + 1):
            return current + 1


def submit_agent(
    opstore: OperationalStore,
    object_store: ObjectStore,
    *,
    code: str,
    name: str,
    user_id: str,
    request: BacktestRequest,
    filename: str = "agent.py",
    description: str = "",
    tags: list[str] | None = None,
    agent_id: str | None = None,
) -> dict[str, Any]:
    """Store the code and create the agent in status ``submitted``; the sensor takes it from there.

    Validation happens before this call (the API and CLI reject bad code at the door with line
    numbers) and again inside the backtest run (the sandbox never trusts the door).
    """
    agent_id = agent_id or f"{_slug(name)}-{uuid.uuid4().hex[:8]}"
    object_store.put_bytes(code_key(agent_id), code.encode(), content_type="text/x-python")
    previous = opstore.query(AGENTS, [("user_id", "==", user_id)])
    doc = {
        "name": name,
        "user_id": user_id,
        "description": description,
        "tags": list(tags or []),
        "filename": filename,
        "code_key": code_key(agent_id),
        "code_hash": code_hash(code),
        "status": AgentStatus.SUBMITTED.value,
        "error": None,
        "request": request.model_dump(),
        # Variants the author tried: every agent this user submitted, this one included. The
        # deflated Sharpe ratio discounts the agent's Sharpe by this many trials.
        "n_trials": len(previous) + 1,
        "submission_seq": next_sequence(opstore),
        "created_at": now_iso(),
        "updated_at": now_iso(),
        "last_run_id": None,
    }
    opstore.put(AGENTS, agent_id, doc)
    return {**doc, "id": agent_id}


def resubmit_agent(
    opstore: OperationalStore, agent_id: str, request: BacktestRequest | None = None
) -> dict[str, Any]:
    """Queue a finished agent for another backtest (a new window or a new data version)."""
    fields: dict[str, Any] = {
        "error": None,
        "submission_seq": next_sequence(opstore),
        "updated_at": now_iso(),
    }
    if request is not None:
        fields["request"] = request.model_dump()
    finished = [AgentStatus.COMPLETED.value, AgentStatus.FAILED.value, AgentStatus.SUBMITTED.value]
    if not opstore.transition(AGENTS, agent_id, "status", finished, AgentStatus.SUBMITTED.value, fields):
        raise ValueError(f"agent {agent_id} is being backtested; try again when it has finished")
    return get_agent(opstore, agent_id)


def get_agent(opstore: OperationalStore, agent_id: str) -> dict[str, Any]:
    doc = opstore.get(AGENTS, agent_id)
    if doc is None:
        raise NotFoundError(f"agent {agent_id} does not exist")
    return doc


def load_code(object_store: ObjectStore, agent: dict[str, Any]) -> str:
    return object_store.get_bytes(agent["code_key"]).decode()


def set_status(
    opstore: OperationalStore,
    agent_id: str,
    status: AgentStatus,
    *,
    allowed_from: list[AgentStatus] | None = None,
    **fields: Any,
) -> bool:
    """Move an agent to ``status``; with ``allowed_from``, only from those states (compare-and-set)."""
    extra = {**fields, "updated_at": now_iso()}
    if allowed_from is None:
        opstore.update(AGENTS, agent_id, {"status": status.value, **extra})
        return True
    return opstore.transition(
        AGENTS, agent_id, "status", [s.value for s in allowed_from], status.value, extra
    )


def pending_submissions(opstore: OperationalStore, after_seq: int) -> list[dict[str, Any]]:
    """Agents waiting in ``submitted`` whose submission is newer than the sensor's cursor."""
    docs = opstore.query(
        AGENTS,
        [("status", "==", AgentStatus.SUBMITTED.value), ("submission_seq", ">", after_seq)],
        order_by="submission_seq",
    )
    return docs
