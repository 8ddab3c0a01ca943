# expect: rule=file-access line=15 status=failed error=PermissionError match=warehouse.duckdb
"""Look-ahead through the data home: the platform's own DuckDB warehouse (every stored bar) under
FARM_HOME, read natively by polars. The test writes the path of a real data home in place of
FARM_HOME_DIR before the run."""

import polars as pl

from farm_dagster.sdk import Agent, hold

WAREHOUSE = "FARM_HOME_DIR/warehouse.duckdb"


class ReadWarehouse(Agent):
    def setup(self, ctx):
        self.future = pl.read_csv(WAREHOUSE, has_header=False, truncate_ragged_lines=True)

    def on_bar(self, ctx):
        return hold(ctx.symbols[0], reasoning=f"{self.future.height} rows of the warehouse")
