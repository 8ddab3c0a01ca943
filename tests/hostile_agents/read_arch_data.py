# expect: rule=file-access line=16 status=failed error=PermissionError match=sp500.csv.gz
"""Look-ahead through the file system: the S&P 500 index history shipped in arch's data
package, read by polars' lazy native scanner (no Python audit event)."""

import numpy as np
import polars as pl

from farm_dagster.sdk import Agent, hold

SITE = np.get_include().split("/numpy/")[0]
SP500 = SITE + "/arch/data/sp500/sp500.csv.gz"


class ReadArchData(Agent):
    def setup(self, ctx):
        self.future = pl.scan_csv(SP500).collect()

    def on_bar(self, ctx):
        return hold(ctx.symbols[0], reasoning=f"{self.future.height} future rows")
