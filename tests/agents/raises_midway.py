from farm_dagster.sdk import Agent, buy, hold


class RaisesMidway(Agent):
    """Buys on its first bar, holds, then fails on its 30th bar (a bug in the user's own code)."""

    params = {"fail_at": 30}

    def setup(self, ctx):
        self.seen = 0

    def on_bar(self, ctx):
        self.seen += 1
        if self.seen == 1:
            return buy(ctx.symbols[0], 10, confidence=0.9, reasoning="first bar: get in")
        if self.seen >= self.params["fail_at"]:
            ratio = ctx.price(ctx.symbols[0]) / 0.0
            return hold(ctx.symbols[0], reasoning=f"unreachable {ratio}")
        return hold(ctx.symbols[0], confidence=0.5, reasoning="holding")
