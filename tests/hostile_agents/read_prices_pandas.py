# expect: rule=file-access line=16 status=failed error=SandboxViolation match=stocks.csv.gz
"""Look-ahead through the file system with pandas' C reader: bokeh-sampledata's stocks.csv.gz
(pandas opens the path in Python, so the audit hook names it; Landlock would refuse it next)."""

import numpy as np
import pandas as pd

from farm_dagster.sdk import Agent, hold

SITE = np.get_include().split("/numpy/")[0]
STOCKS = SITE + "/bokeh_sampledata/_data/stocks.csv.gz"


class ReadPricesPandas(Agent):
    def setup(self, ctx):
        self.future = pd.read_csv(STOCKS, engine="c")

    def on_bar(self, ctx):
        return hold(ctx.symbols[0], reasoning=f"{len(self.future)} future rows")
