"""Moving-average crossover written the way the platform we replace took agents: a backtrader Strategy.

The Farm runs this file unchanged (``farm backtest examples/bt_sma_crossover.py --symbols AAPL ...``):
``next()`` is called once per bar, orders go through ``self.buy`` / ``self.close``, and the two
optional attributes ``fmel_confidence`` (0..1) and ``fmel_reasoning`` (text) explain each call in
the decision log (FMEL). The same file runs in plain backtrader, which the tests use as a reference.
"""

import backtrader as bt


class Agent(bt.Strategy):
    params = (
        ("fast", 10),
        ("slow", 30),
        ("allocation", 0.95),  # fraction of cash spent on an entry; the rest absorbs an opening gap
    )

    def __init__(self):
        self.fast_ma = bt.indicators.SMA(self.data.close, period=self.p.fast)
        self.slow_ma = bt.indicators.SMA(self.data.close, period=self.p.slow)
        self.crossover = bt.indicators.CrossOver(self.fast_ma, self.slow_ma)
        self.fmel_confidence = 0.5
        self.fmel_reasoning = "warming up the moving averages"

    def next(self):
        fast, slow = self.fast_ma[0], self.slow_ma[0]
        spread = (fast - slow) / slow
        # A wider gap between the averages is a clearer trend: map 0..5% spread onto 0.5..1.0.
        self.fmel_confidence = min(1.0, 0.5 + 10.0 * abs(spread))

        if not self.position:
            if self.crossover[0] > 0:
                size = int(self.broker.getcash() * self.p.allocation / self.data.close[0])
                self.buy(size=size)
                self.fmel_reasoning = (
                    f"fast SMA {fast:.2f} crossed above slow SMA {slow:.2f}: buy {size} shares"
                )
            else:
                self.fmel_reasoning = (
                    f"flat; fast SMA {fast:.2f} vs slow {slow:.2f}, waiting for a golden cross"
                )
        elif self.crossover[0] < 0:
            self.close()
            self.fmel_reasoning = f"fast SMA {fast:.2f} crossed below slow SMA {slow:.2f}: close the position"
        else:
            self.fmel_reasoning = f"holding {self.position.size} shares while fast SMA stays above slow"
