"""Trend entries protected by a stop-loss that the agent raises as the price climbs.

Buys a symbol (an equal share of equity) when its close is above its slow average, then keeps a
sell stop under the position, ``stop_pct`` below the highest close since entry. Raising the stop
means cancelling the open stop order and placing a new one: a trailing stop, by hand. Positions
are left only through the stop.
"""

from farm_dagster.sdk import Agent, Context, cancel, sell, target_percent


class TrendStopLoss(Agent):
    params = {"slow": 50, "stop_pct": 0.08, "raise_step": 0.02}

    def setup(self, ctx: Context) -> None:
        self.peak: dict[str, float] = {}  # symbol -> highest close since entry

    def on_bar(self, ctx: Context):
        stop_pct, raise_step = self.params["stop_pct"], self.params["raise_step"]
        slow = ctx.sma(None, self.params["slow"])
        closes = ctx.prices()
        held = ctx.position_array()
        stops = {order.symbol: order for order in ctx.open_orders() if order.order_type == "stop"}
        weight = 1.0 / len(ctx.symbols)
        budget = weight * ctx.equity  # an entry that cannot buy one share would be sized to nothing
        decisions = []
        for i, symbol in enumerate(ctx.symbols):
            close = float(closes[i])
            if close != close:  # the symbol has no bar today
                continue
            if held[i] <= 0:
                self.peak.pop(symbol, None)
                if slow[i] < close <= budget:  # a NaN average (warm-up) compares False
                    gap = close / slow[i] - 1.0
                    decisions.append(
                        target_percent(
                            symbol,
                            weight,
                            confidence=min(1.0, gap * 10),
                            reasoning=f"close {gap:.1%} above its {self.params['slow']}-bar average",
                            inputs={"close": close, "sma_slow": slow[i]},
                        )
                    )
                continue
            peak = max(self.peak.get(symbol, close), close)
            self.peak[symbol] = peak
            level = round(peak * (1.0 - stop_pct), 4)
            stop = stops.get(symbol)
            if stop is not None and level <= stop.stop_price * (1.0 + raise_step):
                continue  # the stop in place is close enough
            if stop is not None:
                decisions.append(cancel(stop, reasoning=f"replace the stop at {stop.stop_price:.2f}"))
            decisions.append(
                sell(
                    symbol,
                    float(held[i]),
                    stop=level,
                    confidence=0.5,
                    reasoning=f"protect the position: stop {stop_pct:.0%} under the peak {peak:.2f}",
                    inputs={"peak": peak, "stop": level},
                )
            )
        return decisions
