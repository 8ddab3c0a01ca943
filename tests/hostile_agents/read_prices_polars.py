# expect: rule=file-access line=16 status=failed error=PermissionError match=stocks.csv.gz
"""Look-ahead through the file system with polars' native reader, which raises no Python audit
event: only the kernel (Landlock) stands between it and bokeh-sampledata's stocks.csv.gz."""

import numpy as np
import polars as pl

from farm_dagster.sdk import Agent, hold

SITE = np.get_include().split("/numpy/")[0]
STOCKS = SITE + "/bokeh_sampledata/_data/stocks.csv.gz"


class ReadPricesPolars(Agent):
    def setup(self, ctx):
        self.future = pl.read_csv(STOCKS)

    def on_bar(self, ctx):
        return hold(ctx.symbols[0], reasoning=f"{self.future.height} future rows")
