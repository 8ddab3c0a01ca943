# expect: rule=file-access line=11 status=failed error=PermissionError match=/etc/passwd
"""Reads a file through polars' native reader, which raises no Python audit event (Landlock stops it)."""

import polars as pl

from farm_dagster.sdk import Agent, hold


class PolarsReadFile(Agent):
    def on_bar(self, ctx):
        frame = pl.read_csv("/etc/passwd", has_header=False, separator=":")
        return hold(ctx.symbols[0], reasoning=str(frame.head()))
