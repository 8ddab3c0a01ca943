"""Breakouts traded with brackets: every entry goes out with its stop-loss and its take-profit.

When a symbol closes above its highest close of the last ``lookback`` bars, the agent buys an equal
share of equity at the next open, with a sell stop ``stop_pct`` below the close and a sell limit
``target_pct`` above it. The exits wait for the entry to fill; whichever fills first cancels the
other. ``ctx.order_updates()`` tells the agent how each bracket ended, which it keeps as a running
hit rate and reports as its confidence.
"""

import numpy as np

from farm_dagster.sdk import Agent, Context, bracket


class BreakoutBracket(Agent):
    params = {"lookback": 20, "stop_pct": 0.04, "target_pct": 0.08}

    def setup(self, ctx: Context) -> None:
        self.wins, self.losses = 0, 0
        self.win_level: dict[str, float] = {}  # symbol -> exit price that counts as a win

    def on_bar(self, ctx: Context):
        for update in ctx.order_updates():
            if update.status == "filled" and update.side == "SELL":
                # A sell that fills is an exit: at or above the entry's target is a win.
                if update.price >= self.win_level.get(update.symbol, np.inf):
                    self.wins += 1
                else:
                    self.losses += 1
        lookback = self.params["lookback"]
        if ctx.bars_seen <= lookback:
            return None
        highs = ctx.history_all("close", lookback + 1)[:-1].max(axis=0)  # the bars before this one
        closes = ctx.prices()
        held = ctx.position_array()
        busy = {order.symbol for order in ctx.open_orders()}
        hit_rate = (self.wins + 1) / (self.wins + self.losses + 2)  # Laplace: 0.5 before any exit
        decisions = []
        for i, symbol in enumerate(ctx.symbols):
            close = float(closes[i])
            if held[i] != 0 or symbol in busy or not close > highs[i]:
                continue
            shares = int(ctx.equity / len(ctx.symbols) / close)
            if shares < 1:
                continue
            target = close * (1 + self.params["target_pct"])
            self.win_level[symbol] = target * 0.999  # an exit at the limit counts as a win
            decisions += bracket(
                symbol,
                shares,
                stop=close * (1 - self.params["stop_pct"]),
                take_profit=target,
                confidence=hit_rate,
                reasoning=f"close {close:.2f} broke the {lookback}-bar high {highs[i]:.2f}",
                inputs={"close": close, "high": float(highs[i]), "hit_rate": hit_rate},
            )
        return decisions
