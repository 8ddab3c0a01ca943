"""Cross-sectional momentum rotation: each month, hold the strongest symbols of the universe.

On the first bar of every month the agent ranks symbols by their return over the lookback and
targets an equal weight in the top ``top_n``; everything else is sold.
"""

import numpy as np

from farm_dagster.sdk import Agent, Context, target_percent


class MomentumRotation(Agent):
    params = {"lookback": 126, "top_n": 2}

    def setup(self, ctx: Context):
        self.month = None

    def on_bar(self, ctx: Context):
        month = (ctx.time.year, ctx.time.month)
        if month == self.month:
            return None
        self.month = month
        momentum = ctx.returns(None, self.params["lookback"])
        ranked = [i for i in np.argsort(-np.nan_to_num(momentum, nan=-np.inf)) if momentum[i] == momentum[i]]
        winners = set(ranked[: self.params["top_n"]])
        if not winners:
            return None
        weight = 0.99 / len(winners)  # keep a little cash for costs
        held = ctx.position_array()
        decisions = []
        for i, symbol in enumerate(ctx.symbols):
            if i in winners:
                rank = ranked.index(i)
                decisions.append(
                    target_percent(
                        symbol,
                        weight,
                        confidence=1.0 - rank / max(1, len(ranked)),
                        reasoning=f"momentum rank {rank + 1} of {len(ranked)}",
                        inputs={"momentum": momentum[i], "rank": rank + 1},
                    )
                )
            elif held[i] != 0:
                decisions.append(
                    target_percent(
                        symbol,
                        0.0,
                        confidence=0.5,
                        reasoning="dropped out of the top",
                        inputs={"momentum": momentum[i]},
                    )
                )
        return decisions
