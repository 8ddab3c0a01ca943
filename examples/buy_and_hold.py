"""Buy-and-hold benchmark: invest equally in every symbol on its first tradable bar, then hold."""

from farm_dagster.sdk import Agent, Context, hold, target_percent


class BuyAndHold(Agent):
    def setup(self, ctx: Context):
        self.bought = set()

    def on_bar(self, ctx: Context):
        prices = ctx.prices()
        weight = 0.99 / len(ctx.symbols)  # a sliver of cash left for costs
        decisions = []
        for i, symbol in enumerate(ctx.symbols):
            if symbol in self.bought or prices[i] != prices[i]:
                continue
            self.bought.add(symbol)
            decisions.append(
                target_percent(symbol, weight, confidence=1.0, reasoning="benchmark: buy and hold")
            )
        if not decisions and ctx.bar_index == 0:
            return hold(ctx.symbols[0], reasoning="no prices yet")
        return decisions
