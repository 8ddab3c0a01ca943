"""The native example agents in ``examples/``: every one runs in the engine tests and the vectorbt cross-check."""

NATIVE_EXAMPLES = (
    "ma_crossover.py",
    "rsi_mean_reversion.py",
    "momentum_rotation.py",
    "buy_and_hold.py",
    "trend_stop_loss.py",
    "breakout_bracket.py",
)
