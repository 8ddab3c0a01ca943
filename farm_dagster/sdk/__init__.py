"""The native agent SDK: ``from farm_dagster.sdk import Agent, Context, Decision, buy, ...``.

Import-light on purpose (numpy only): the sandboxed child imports it before locking down.
"""

from farm_dagster.sdk.agent import Agent, ParamError
from farm_dagster.sdk.context import Context
from farm_dagster.sdk.decision import (
    Decision,
    OpenOrder,
    OrderUpdate,
    bracket,
    buy,
    cancel,
    hold,
    sell,
    target_percent,
    target_shares,
)

__all__ = [
    "Agent",
    "Context",
    "Decision",
    "OpenOrder",
    "OrderUpdate",
    "ParamError",
    "bracket",
    "buy",
    "cancel",
    "hold",
    "sell",
    "target_percent",
    "target_shares",
]
