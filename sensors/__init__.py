"""Sensors: submissions become runs; finished backtests refresh the leaderboard."""
