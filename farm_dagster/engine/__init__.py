"""Backtest engine: wire protocol, broker/accounting, sandboxed hosts and the parent runner.

Kept import-light on purpose: the sandboxed child imports ``farm_dagster.engine.host`` before it
locks down, and must not pay for pandas or Dagster on every start.
"""
