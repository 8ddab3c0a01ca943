"""FMEL, the decision log: one row per decision point of every agent, in every mode."""

from farm_dagster.fmel.rows import DecisionLog, LoggedDecision
from farm_dagster.fmel.schema import FMEL_DECISIONS

__all__ = ["FMEL_DECISIONS", "DecisionLog", "LoggedDecision"]
