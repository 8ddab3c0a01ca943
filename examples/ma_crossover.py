"""Moving-average crossover: hold a symbol while its fast average is above its slow average.

Works on any number of symbols (the universe is split equally); one vectorized indicator call per
bar covers all of them. An entry is only sent when the symbol's share of the equity buys at least
one whole share at the current close: otherwise the order would be sized to nothing at the fill
(as backtrader's ``order_target_percent`` sizes it to nothing), and the agent would send it again
on every bar, filling its decision log with orders that cannot fill.
"""

import numpy as np

from farm_dagster.sdk import Agent, Context, target_percent


class MaCrossover(Agent):
    params = {"fast": 10, "slow": 30}

    def on_bar(self, ctx: Context):
        fast = ctx.sma(None, self.params["fast"])
        slow = ctx.sma(None, self.params["slow"])
        invested = ctx.position_array() > 0
        weight = 1.0 / len(ctx.symbols)
        affordable = ctx.prices() <= weight * ctx.equity  # NaN (no bar) compares False
        want = fast > slow  # NaN (not enough bars yet) compares False: stay out
        changes = np.flatnonzero((want & affordable & ~invested) | (invested & ~want))
        if changes.size == 0:
            return None
        decisions = []
        # Python floats for the few symbols that change: numpy scalars cost more per operation.
        for i, f, s, w in zip(
            changes.tolist(),
            fast[changes].tolist(),
            slow[changes].tolist(),
            want[changes].tolist(),
            strict=True,
        ):
            gap = (f - s) / s if s > 0 else 0.0  # NaN (not enough bars yet) compares False
            decisions.append(
                target_percent(
                    ctx.symbols[i],
                    weight if w else 0.0,
                    confidence=min(1.0, abs(gap) * 20),
                    reasoning=f"fast SMA {'above' if w else 'below'} slow SMA",
                    inputs={"sma_fast": f, "sma_slow": s},
                )
            )
        return decisions
