"""Jobs and schedules: one job per use (load market data, backtest one agent, refresh the leaderboard)."""
