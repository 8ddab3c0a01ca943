"""Moving-average crossover: hold a symbol while its fast average is above its slow average.

Works on any number of symbols (the universe is split equally); one vectorized indicator call per
bar covers all of them.
"""

import numpy as np

from farm_dagster.sdk import Agent, Context, target_percent


class MaCrossover(Agent):
    params = {"fast": 10, "slow": 30}

    def on_bar(self, ctx: Context):
        fast = ctx.sma(None, self.params["fast"])
        slow = ctx.sma(None, self.params["slow"])
        invested = ctx.position_array() > 0
        want = fast > slow  # NaN (not enough bars yet) compares False: stay out
        changes = np.flatnonzero(want != invested)
        if changes.size == 0:
            return None
        weight = 1.0 / len(ctx.symbols)
        decisions = []
        for i in changes:
            symbol = ctx.symbols[i]
            gap = (fast[i] - slow[i]) / slow[i] if slow[i] == slow[i] else 0.0
            decisions.append(
                target_percent(
                    symbol,
                    weight if want[i] else 0.0,
                    confidence=min(1.0, abs(gap) * 20),
                    reasoning=f"fast SMA {'above' if want[i] else 'below'} slow SMA",
                    inputs={"sma_fast": fast[i], "sma_slow": slow[i]},
                )
            )
        return decisions
