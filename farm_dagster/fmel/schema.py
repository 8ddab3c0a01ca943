"""The ``fmel.trading_decisions`` table: partitioned by day of ``timestamp``, clustered by agent and user."""

from __future__ import annotations

from farm_dagster.resources.tables import FLOAT, INT, JSON, STRING, TIMESTAMP, TableSpec, register

FMEL_DECISIONS = register(
    TableSpec(
        name="fmel.trading_decisions",
        columns=(
            ("decision_id", STRING),
            ("decision_point", INT),  # bar index of the run (0 = first bar)
            ("agent_id", STRING),
            ("user_id", STRING),
            ("run_id", STRING),
            ("mode", STRING),  # backtest | paper
            ("timestamp", TIMESTAMP),  # the bar the agent decided on
            ("symbol", STRING),  # null on a multi-symbol bar where the agent decided nothing
            ("action", STRING),  # BUY | SELL | HOLD | CANCEL (a TARGET is logged as the trade it implies)
            ("quantity", FLOAT),  # shares implied at decision time
            ("price", FLOAT),  # the symbol's close the agent saw
            ("order_type", STRING),
            ("limit_price", FLOAT),
            ("stop_price", FLOAT),  # stop, stop-limit and trailing stops (a trailing stop's starting level)
            ("trail_amount", FLOAT),  # trailing stops: distance from the close, in price...
            ("trail_percent", FLOAT),  # ...or as a fraction of the close
            ("expires_at", TIMESTAMP),  # a non-market order still open on a bar after this is withdrawn
            ("target_shares", FLOAT),
            ("target_percent", FLOAT),
            ("confidence", FLOAT),
            ("reasoning", STRING),
            ("inputs", JSON),  # named feature values the agent reported
            ("data_read", JSON),  # {symbol|"*": {"fields": [...], "lookback": n|null}}
            ("cash", FLOAT),
            ("equity", FLOAT),
            ("positions", JSON),  # {symbol: shares}, before this bar's orders
            ("events", JSON),  # [{type: submitted|filled|cancelled|rejected|trade_opened|trade_closed, ...}]
            ("code_hash", STRING),
            ("data_version", STRING),
        ),
        partition_by="timestamp",
        cluster_by=("agent_id", "user_id"),
        description="FMEL: every decision point of every agent (backtest and paper), with what it read, "
        "what it did, how sure it was, the portfolio around it and the order/trade events that followed.",
    )
)
