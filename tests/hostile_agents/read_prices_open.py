# expect: rule=forbidden-builtin line=16 status=failed error=SandboxViolation match=stocks.csv.gz
"""Look-ahead through the file system: the real future prices shipped in bokeh-sampledata's
stocks.csv.gz, opened with open() from the site-packages directory numpy reveals."""

import numpy as np

from farm_dagster.sdk import Agent, hold

SITE = np.get_include().split("/numpy/")[0]
STOCKS = SITE + "/bokeh_sampledata/_data/stocks.csv.gz"


class ReadPricesOpen(Agent):
    def setup(self, ctx):
        # the whole 2000-2013 history, future bars included
        with open(STOCKS, "rb") as handle:
            self.future = handle.read()

    def on_bar(self, ctx):
        return hold(ctx.symbols[0], reasoning=f"{len(self.future)} bytes of the future")
