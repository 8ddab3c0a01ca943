# expect: rule=file-access line=16 status=failed error=PermissionError match=sp500_dataset.csv.gz
"""Look-ahead through the file system: skfolio's 20-stock price data set (1990-2022), read by
polars' native CSV reader (no Python audit event)."""

import numpy as np
import polars as pl

from farm_dagster.sdk import Agent, hold

SITE = np.get_include().split("/numpy/")[0]
DATASET = SITE + "/skfolio/datasets/data/sp500_dataset.csv.gz"


class ReadSkfolioData(Agent):
    def setup(self, ctx):
        self.future = pl.read_csv(DATASET)

    def on_bar(self, ctx):
        return hold(ctx.symbols[0], reasoning=f"{self.future.height} future rows")
