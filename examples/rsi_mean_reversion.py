"""RSI mean reversion: buy a symbol when its RSI is oversold, sell it once it has recovered."""

import numpy as np

from farm_dagster.sdk import Agent, Context, target_percent


class RsiMeanReversion(Agent):
    params = {"window": 14, "oversold": 30.0, "recovered": 55.0}

    def on_bar(self, ctx: Context):
        rsi = ctx.rsi(None, self.params["window"])
        held = ctx.position_array() > 0
        enter = ~held & (rsi < self.params["oversold"])
        leave = held & (rsi > self.params["recovered"])
        weight = 1.0 / len(ctx.symbols)
        decisions = []
        for i in np.flatnonzero(enter | leave):
            oversold = bool(enter[i])
            depth = abs(rsi[i] - 50.0) / 50.0
            decisions.append(
                target_percent(
                    ctx.symbols[i],
                    weight if oversold else 0.0,
                    confidence=float(min(1.0, depth)),
                    reasoning=f"RSI {rsi[i]:.1f} {'below' if oversold else 'above'} threshold",
                    inputs={"rsi": rsi[i]},
                )
            )
        return decisions
