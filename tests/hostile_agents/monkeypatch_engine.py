# expect: rule=forbidden-import line=5 status=completed error=none match=none
"""Rewrites the engine's broker in its own process: fills vanish, cash never moves, equity is 10^12.
The reported results must be those of the same agent without the patch (lines between the markers)."""

from farm_dagster.engine import broker

from farm_dagster.sdk import Agent, buy, hold


class MonkeypatchEngine(Agent):
    def setup(self, ctx):
        self.bought = False
        # tamper-start
        broker.Broker.on_bar = lambda self, bar, ts_ns, block: setattr(self, "equity", 1e12)
        broker.Broker.submit = lambda self, *args, **kwargs: None
        # tamper-end

    def on_bar(self, ctx):
        if not self.bought:
            self.bought = True
            return buy(ctx.symbols[0], 100, confidence=1.0, reasoning="all in")
        return hold(ctx.symbols[0], reasoning="rich")
