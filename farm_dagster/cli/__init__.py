"""The `farm` command line: one typer app, one module per command group."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="farm",
    help="The Farm: backtest trading agents honestly, explain every decision, rank them.",
    no_args_is_help=True,
    add_completion=False,
)

# Each module adds its commands to `app`; imported here so `farm --help` lists them all.
from farm_dagster.cli import backtest, demo, ops  # noqa: E402, F401
