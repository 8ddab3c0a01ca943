"""The Broker's fill and accounting rules, checked bar by bar against the rules written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from farm_dagster.engine.broker import Broker
from farm_dagster.engine.costs import BacktestSettings, CostModel
from farm_dagster.engine.protocol import check_decision

DAY = 86_400 * 10**9
SYMBOLS = ("AAA", "BBB")
INDEX = {s: i for i, s in enumerate(SYMBOLS)}


def bar(o: float, h: float, lo: float, c: float, other: float = 50.0) -> np.ndarray:
    """(5, 2) block: symbol AAA with the given OHLC, BBB flat at ``other``."""
    return np.array([[o, other], [h, other], [lo, other], [c, other], [1e6, 1e6]], dtype=np.float64)


def decide(broker: Broker, t: int, seq: int = 0, **raw: object) -> None:
    checked = check_decision({"symbol": "AAA", **raw}, INDEX)
    assert checked.reject_reason is None, checked.reject_reason
    broker.submit(checked, f"d{t}-{seq}", t, t * DAY, seq)


def events(broker: Broker, kind: str) -> list[dict]:
    return [e for _, e in broker.events if e["type"] == kind]


def test_market_order_fills_at_next_open_never_on_its_own_bar() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=10_000))
    broker.on_bar(0, 0, bar(100, 101, 99, 100.5))
    decide(broker, 0, action="BUY", quantity=10)
    assert broker.positions[0] == 0 and broker.cash == 10_000  # nothing fills on the deciding bar
    broker.on_bar(1, DAY, bar(102, 104, 101, 103))
    assert broker.positions[0] == 10
    assert broker.cash == pytest.approx(10_000 - 10 * 102)
    assert broker.equity == pytest.approx(broker.cash + 10 * 103)
    assert broker.fills[0].price == 102 and broker.fills[0].decision_id == "d0-0"


def test_commission_per_share_percent_and_minimum() -> None:
    costs = CostModel(commission_per_share=0.01, commission_pct=0.001, min_commission=1.0)
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000, costs=costs))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=500)
    decide(broker, 0, action="BUY", quantity=1)
    broker.on_bar(1, DAY, bar(100, 100, 100, 100))
    big, small = broker.fills
    assert big.commission == pytest.approx(500 * 0.01 + 0.001 * 500 * 100)
    assert small.commission == pytest.approx(1.0)  # 0.01 + 0.1 is below the minimum
    assert broker.cash == pytest.approx(100_000 - 501 * 100 - big.commission - small.commission)


def test_slippage_bps_and_range_fraction_move_price_against_the_order_within_the_bar() -> None:
    costs = CostModel(slippage_bps=50, slippage_range_fraction=0.1)
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000, costs=costs))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=10)
    broker.on_bar(1, DAY, bar(100, 110, 95, 105))
    expected_buy = 100 * (1 + 0.005) + 0.1 * (110 - 95)
    assert broker.fills[0].price == pytest.approx(expected_buy)
    assert broker.fills[0].slippage_cost == pytest.approx((expected_buy - 100) * 10)
    decide(broker, 1, action="SELL", quantity=10)
    broker.on_bar(2, 2 * DAY, bar(96, 97, 95.5, 96))  # slipped price would be below the low: clamp
    assert broker.fills[1].price == 95.5


def test_limit_orders_fill_only_when_traded_through_at_open_or_limit() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=5, order_type="limit", limit_price=95)
    broker.on_bar(1, DAY, bar(99, 101, 96, 97))  # low 96 > 95: waits
    assert not broker.fills and len(broker.pending) == 1
    broker.on_bar(2, 2 * DAY, bar(97, 98, 94, 95))  # low 94 <= 95: fills at min(open, limit) = 95
    assert broker.fills[0].price == 95
    decide(broker, 2, action="SELL", quantity=5, order_type="limit", limit_price=99)
    broker.on_bar(3, 3 * DAY, bar(101, 102, 100, 101))  # gaps above the limit: fills at the open
    assert broker.fills[1].price == 101
    for fill in broker.fills:
        assert 94 <= fill.price <= 102


def test_stop_orders_trigger_when_traded_through_at_open_on_a_gap_else_at_the_stop() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=10, order_type="stop", stop_price=105)
    broker.on_bar(1, DAY, bar(101, 104, 99, 103))  # high 104 < 105: not triggered
    assert not broker.fills and len(broker.pending) == 1
    broker.on_bar(2, 2 * DAY, bar(103, 107, 102, 106))  # trades through 105 during the bar: at the stop
    assert broker.fills[0].price == 105 and broker.positions[0] == 10
    decide(broker, 2, action="SELL", quantity=4, order_type="stop", stop_price=100)
    decide(broker, 2, seq=1, action="SELL", quantity=6, order_type="stop", stop_price=90)
    broker.on_bar(3, 3 * DAY, bar(98, 99, 92, 95))  # opens below 100: the first stop fills at the open
    assert [f.price for f in broker.fills[1:]] == [98]
    broker.on_bar(4, 4 * DAY, bar(94, 95, 89, 90))  # low 89 <= 90: the second at its stop
    assert [f.price for f in broker.fills[1:]] == [98, 90] and broker.positions[0] == 0
    submitted = events(broker, "submitted")
    assert [e["stop_price"] for e in submitted] == [105, 100, 90]
    assert all("limit_price" not in e for e in submitted)


def test_stop_slippage_moves_against_the_order_and_stays_in_the_bar() -> None:
    costs = CostModel(slippage_bps=100)
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000, costs=costs))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=1, order_type="stop", stop_price=105)
    broker.on_bar(1, DAY, bar(103, 105.5, 102, 105))  # triggers at 105; +1% would be 106.05 > high
    assert broker.fills[0].price == 105.5


def test_stop_limit_triggers_then_fills_only_at_the_limit_or_better() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    # Sell stop 95, limit 94: a gap open at 92 triggers it, but 92..93 never reaches the limit.
    decide(broker, 0, action="BUY", quantity=20)
    broker.on_bar(1, DAY, bar(100, 100, 100, 100))
    decide(broker, 1, action="SELL", quantity=10, order_type="stop_limit", stop_price=95, limit_price=94)
    broker.on_bar(2, 2 * DAY, bar(92, 93, 90, 91))
    assert len(broker.fills) == 1 and broker.pending[0].triggered  # a limit order from now on
    broker.on_bar(3, 3 * DAY, bar(93, 96, 92, 95))  # trades up through 94: filled at the limit
    assert broker.fills[-1].price == 94
    # Triggered during the bar with the limit beyond the stop: filled at the stop (backtrader).
    decide(broker, 3, action="SELL", quantity=5, order_type="stop_limit", stop_price=90, limit_price=89)
    broker.on_bar(4, 4 * DAY, bar(93, 94, 88, 92))
    assert broker.fills[-1].price == 90
    # Triggered during the bar, limit between the stop and the close of a down bar: waits.
    decide(broker, 4, action="SELL", quantity=5, order_type="stop_limit", stop_price=90, limit_price=91)
    broker.on_bar(5, 5 * DAY, bar(95, 96, 89, 89.5))
    assert len(broker.fills) == 3 and broker.pending[0].triggered


def test_trailing_stop_follows_the_close_and_fills_where_a_stop_would() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=10)
    broker.on_bar(1, DAY, bar(100, 100, 100, 100))
    decide(broker, 1, action="SELL", quantity=10, order_type="trailing_stop", trail_amount=5.0)
    assert broker.pending[0].stop_price == 95  # from the close the agent saw
    broker.on_bar(2, 2 * DAY, bar(101, 110, 100, 108))  # not hit; the stop follows the close to 103
    assert broker.pending[0].stop_price == 103
    broker.on_bar(3, 3 * DAY, bar(107, 107, 104, 104))  # lower close: the stop never moves down
    assert broker.pending[0].stop_price == 103
    broker.on_bar(4, 4 * DAY, bar(104, 105, 101, 102))  # trades through 103: filled at the stop
    assert broker.fills[-1].price == 103 and broker.positions[0] == 0
    assert broker.event_log["d1-0"][0]["trail_amount"] == 5.0


def test_trailing_stop_limit_moves_its_limit_with_the_stop_until_triggered() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=10)
    broker.on_bar(1, DAY, bar(100, 100, 100, 100))
    decide(
        broker,
        1,
        action="SELL",
        quantity=10,
        order_type="trailing_stop_limit",
        stop_price=95,
        limit_price=94,
        trail_amount=5.0,
    )
    broker.on_bar(2, 2 * DAY, bar(101, 111, 100, 110))  # not reached: stop 105, limit keeps 1 below
    order = broker.pending[0]
    assert (order.stop_price, order.limit_price) == (105, 104)
    broker.on_bar(3, 3 * DAY, bar(103, 103.5, 102, 103))  # opens under the stop: a limit at 104, unfilled
    assert order.triggered and not broker.fills[1:] and (order.stop_price, order.limit_price) == (105, 104)
    broker.on_bar(4, 4 * DAY, bar(103, 109, 102, 108))  # triggered: no more trailing; trades up to 104
    assert (order.stop_price, order.limit_price) == (105, 104)
    assert broker.fills[-1].price == 104 and broker.positions[0] == 0


def test_market_on_close_fills_at_the_next_bars_close() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000))
    broker.on_bar(0, 0, bar(100, 101, 99, 100.5))
    decide(broker, 0, action="BUY", quantity=10, order_type="market_on_close")
    broker.on_bar(1, DAY, bar(102, 106, 101, 105))
    assert [(f.price, f.ts_ns) for f in broker.fills] == [(105, DAY)]
    assert broker.cash == pytest.approx(100_000 - 10 * 105)


def test_expiring_orders_are_withdrawn_after_their_time_and_market_orders_never_expire() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=1, order_type="limit", limit_price=90, expires_at=DAY)
    decide(broker, 0, seq=1, action="BUY", quantity=1, order_type="limit", limit_price=80, oco="0000000-000")
    decide(broker, 0, seq=2, action="BUY", quantity=2, expires_at=0)
    broker.on_bar(1, DAY, bar(95, 96, 94, 95))  # at its expiry time, not after: still open
    assert [f.quantity for f in broker.fills] == [2]  # the market order ignored its expiry
    assert len(broker.open_orders()) == 2
    broker.on_bar(2, 2 * DAY, bar(89, 90, 79, 85))  # would fill both limits, but the first expired
    assert [f.quantity for f in broker.fills] == [2] and not broker.open_orders()
    assert broker.event_log["d0-0"][-1]["reason"] == "expired"
    assert (
        broker.event_log["d0-0"][0]["expires_at"] == "1970-01-02T00:00:00Z"
    )  # the submitted event says when
    assert broker.event_log["d0-1"][-1]["reason"] == "OCO: order 1 cancelled"  # its group went with it


def test_oco_partners_expiring_on_one_bar_are_each_withdrawn_once() -> None:
    """Found by the random flows of test_broker_invariants: the first partner's expiry withdrew
    the second through the group, and the expiry loop then withdrew it again (two "cancelled"
    events for one order, and two updates for the agent)."""
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000), track_updates=True)
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=1, order_type="limit", limit_price=90, expires_at=0)
    stop_loss = {"action": "SELL", "quantity": 1, "order_type": "stop", "stop_price": 80}
    decide(broker, 0, seq=1, expires_at=0, oco="0000000-000", **stop_loss)
    broker.on_bar(1, DAY, bar(100, 100, 100, 100))
    assert not broker.open_orders()
    for did in ("d0-0", "d0-1"):
        assert [e["type"] for e in broker.event_log[did]] == ["submitted", "cancelled"], broker.event_log[did]
    assert sorted(update[1] for update in broker.take_updates()) == ["cancelled", "expired"]


def test_cancel_withdraws_an_open_order_and_a_stale_cancel_is_rejected() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=5)
    decide(broker, 0, seq=1, action="BUY", quantity=5, order_type="limit", limit_price=90)
    decide(broker, 0, seq=2, action="CANCEL", order_ref="0000000-000")  # same bar: never fills
    assert [o.seq for o in broker.open_orders()] == [1]
    broker.on_bar(1, DAY, bar(100, 101, 95, 100))
    assert not broker.fills
    decide(broker, 1, action="CANCEL", order_ref="0000000-001")
    decide(broker, 1, seq=1, action="CANCEL", order_ref="0000000-001")  # already gone
    broker.on_bar(2, 2 * DAY, bar(91, 92, 80, 85))  # would have filled the limit
    assert not broker.fills and not broker.open_orders()
    log = broker.event_log
    assert [e["type"] for e in log["d0-0"]] == ["submitted", "cancelled"]
    assert log["d0-2"] == [log["d0-0"][1]]  # the cancel's own row shows what it did
    assert log["d0-2"][0]["reason"] == "cancelled by the agent"
    assert log["d1-0"][0]["order_id"] == log["d0-1"][0]["order_id"]
    (stale,) = log["d1-1"]
    assert stale["type"] == "rejected" and "no open AAA order 0000000-001" in stale["reason"]


def test_cancel_must_name_the_orders_symbol() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=5, order_type="limit", limit_price=90)
    other = check_decision({"symbol": "BBB", "action": "CANCEL", "order_ref": "0000000-000"}, INDEX)
    broker.submit(other, "x", 0, 0, 1)
    assert len(broker.open_orders()) == 1
    assert "no open BBB order" in broker.event_log["x"][0]["reason"]


def test_bracket_children_wait_for_the_parent_then_the_first_exit_cancels_the_other() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=10, order_type="limit", limit_price=95)
    decide(
        broker,
        0,
        seq=1,
        action="SELL",
        quantity=10,
        order_type="stop",
        stop_price=90,
        parent_ref="0000000-000",
    )
    decide(
        broker,
        0,
        seq=2,
        action="SELL",
        quantity=10,
        order_type="limit",
        limit_price=99,
        parent_ref="0000000-000",
    )
    broker.on_bar(1, DAY, bar(100, 101, 96, 100))  # the limit 99 is traded, but the parent is still open
    assert not broker.fills and len(broker.open_orders()) == 3
    broker.on_bar(2, 2 * DAY, bar(96, 100, 94, 99))  # parent fills at 95; exits only from the next bar
    assert [(f.side, f.price) for f in broker.fills] == [("BUY", 95)]
    broker.on_bar(3, 3 * DAY, bar(98, 101, 97, 100))  # take-profit at 99; the stop-loss is cancelled
    assert [(f.side, f.price) for f in broker.fills] == [("BUY", 95), ("SELL", 99)]
    assert not broker.open_orders() and broker.positions[0] == 0
    (cancelled,) = [e for e in broker.event_log["d0-1"] if e["type"] == "cancelled"]
    assert cancelled["reason"] == f"bracket: order {broker.fills[1].order_id} filled"
    submitted = broker.event_log["d0-2"][0]
    assert submitted["parent_order_id"] == broker.fills[0].order_id


def test_cancelling_a_bracket_parent_cancels_its_children_and_orphans_are_refused() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=10, order_type="limit", limit_price=90)
    decide(
        broker,
        0,
        seq=1,
        action="SELL",
        quantity=10,
        order_type="stop",
        stop_price=85,
        parent_ref="0000000-000",
    )
    decide(broker, 1, action="CANCEL", order_ref="0000000-000")
    assert not broker.open_orders()
    assert broker.event_log["d0-1"][-1]["reason"].startswith("parent order 1 cancelled")
    decide(
        broker,
        1,
        seq=1,
        action="SELL",
        quantity=1,
        order_type="stop",
        stop_price=80,
        parent_ref="0000000-000",
    )
    assert "parent order 0000000-000 is not open" in broker.event_log["d1-1"][0]["reason"]
    assert not broker.open_orders()


def test_oco_first_fill_cancels_the_group_and_a_closed_partner_leaves_a_plain_order() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=5, order_type="stop", stop_price=104)
    decide(broker, 0, seq=1, action="BUY", quantity=5, order_type="limit", limit_price=96, oco="0000000-000")
    broker.on_bar(1, DAY, bar(100, 105, 95, 101))  # both trade; the first in fill order wins
    assert [f.price for f in broker.fills] == [104] and not broker.open_orders()
    assert broker.event_log["d0-1"][0]["oco_order_id"] == broker.fills[0].order_id
    assert broker.event_log["d0-1"][-1]["reason"] == f"OCO: order {broker.fills[0].order_id} filled"
    decide(broker, 1, action="SELL", quantity=5, order_type="limit", limit_price=200, oco="0000000-000")
    assert len(broker.open_orders()) == 1  # its partner is gone: a stand-alone order


def test_nan_bar_keeps_orders_waiting() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=10_000))
    broker.on_bar(0, 0, bar(10, 10, 10, 10))
    decide(broker, 0, action="BUY", quantity=3)
    broker.on_bar(1, DAY, bar(math.nan, math.nan, math.nan, math.nan))
    assert not broker.fills and broker.equity == pytest.approx(10_000)  # marked at the last real close
    broker.on_bar(2, 2 * DAY, bar(11, 12, 10, 11))
    assert broker.fills[0].price == 11 and broker.fills[0].ts_ns == 2 * DAY


def test_insufficient_cash_rejects_a_buy_and_shrinks_a_target() -> None:
    costs = CostModel(commission_per_share=1.0)
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=1_000, costs=costs))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=20)
    decide(broker, 0, action="TARGET", target_percent=1.0)
    broker.on_bar(1, DAY, bar(100, 100, 100, 100))
    rejected = events(broker, "rejected")
    assert len(rejected) == 1 and "insufficient cash" in rejected[0]["reason"]
    # 1.0 of equity = 10 shares, but 10 * 100 + 10 commission > 1000: shrink to 9 (909 <= 1000)
    assert broker.positions[0] == 9
    assert broker.cash == pytest.approx(1_000 - 9 * 100 - 9)


def test_shorts_need_the_switch_and_pay_borrow_for_the_time_held() -> None:
    no_short = Broker(SYMBOLS, BacktestSettings(initial_cash=10_000))
    no_short.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(no_short, 0, action="SELL", quantity=5)
    no_short.on_bar(1, DAY, bar(100, 100, 100, 100))
    assert (
        no_short.positions[0] == 0
        and "short selling is disabled" in events(no_short, "rejected")[0]["reason"]
    )

    rate = 0.0365
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=10_000, allow_short=True, borrow_rate_annual=rate))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="SELL", quantity=5)
    broker.on_bar(1, DAY, bar(100, 100, 100, 90))
    assert broker.positions[0] == -5
    assert broker.cash == pytest.approx(10_000 + 500)
    assert broker.equity == pytest.approx(10_000 + 500 - 5 * 90)
    broker.on_bar(2, 3 * DAY, bar(90, 90, 90, 90))  # two days short at a marked value of 450
    fee = 450 * rate * 2 / 365.25
    assert broker.borrow_paid == pytest.approx(fee)
    assert broker.cash == pytest.approx(10_500 - fee)


def test_round_trips_become_trades_with_net_pnl_and_flips_split() -> None:
    costs = CostModel(commission_per_share=0.5)
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=100_000, costs=costs, allow_short=True))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=10)
    broker.on_bar(1, DAY, bar(100, 100, 100, 100))
    decide(broker, 1, action="BUY", quantity=10)
    broker.on_bar(2, 2 * DAY, bar(110, 110, 110, 110))
    decide(broker, 2, action="TARGET", target_shares=-5)  # sell 25: close the 20 long, open 5 short
    broker.on_bar(3, 3 * DAY, bar(120, 120, 120, 120))
    assert broker.positions[0] == -5
    (closed,) = broker.trades
    entry = (10 * 100 + 10 * 110) / 20
    assert closed.entry_price == pytest.approx(entry)
    assert closed.pnl == pytest.approx(20 * (120 - entry) - 10 * 0.5 - 10 * 0.5 - 20 * 0.5)
    (short,) = broker.open_trades.values()
    assert short.direction == "short" and short.quantity == 5
    assert short.pnl == pytest.approx(-5 * 0.5)
    kinds = [e["type"] for _, e in broker.events]
    assert kinds.count("trade_opened") == 2 and kinds.count("trade_closed") == 1
    # cash is exactly the initial cash plus every fill's signed cash flow
    flows = sum((-1 if f.side == "BUY" else 1) * f.quantity * f.price - f.commission for f in broker.fills)
    assert broker.cash == pytest.approx(100_000 + flows)


def test_sells_fill_before_buys_within_a_bar() -> None:
    broker = Broker(SYMBOLS, BacktestSettings(initial_cash=1_000))
    broker.on_bar(0, 0, bar(100, 100, 100, 100))
    decide(broker, 0, action="BUY", quantity=10)
    broker.on_bar(1, DAY, bar(100, 100, 100, 100))
    assert broker.cash == 0
    buy_other = check_decision({"symbol": "BBB", "action": "BUY", "quantity": 20}, INDEX)
    broker.submit(buy_other, "buy-first", 1, DAY)  # submitted first, needs the cash of the sell
    decide(broker, 1, action="SELL", quantity=10)
    broker.on_bar(2, 2 * DAY, bar(100, 100, 100, 100))
    assert [f.side for f in broker.fills[1:]] == ["SELL", "BUY"]
    assert broker.positions.tolist() == [0, 20]


def test_event_templates_write_exactly_what_the_json_encoder_writes() -> None:
    """The hand-written templates are only a shortcut for ``dumps(event_dict(...))``, byte for byte."""
    from farm_dagster.engine.broker import event_dict, event_json
    from farm_dagster.engine.protocol import dumps

    ts = 1_700_000_000_000_000_000
    odd = [1e-07, 1e22, -0.0, 3, math.nan, math.inf, None, "x", True]
    events = [
        ("filled", ts, 7, 101.25, 10.0, "BUY", 0.5),
        ("filled", ts, 7, math.nan, 10.0, "SELL", 0.0),
        ("cancelled", ts, 7, "already at target"),
        ("rejected", ts, 7, 'quote " and \u00e9'),
        ("trade_opened", ts, "AAA", "long", 10.0, 99.5),
        ("trade_closed", ts, "AAA", "short", 10, 99.5, 101.0, -15.0),
        ("rejected_decision", ts, "bad"),
    ]
    for size in (10.0, 3, -2.5, math.inf):
        for order_type in ("market", "stop", "trailing_stop_limit", "mystery"):
            events.append(("submitted", ts, 3, "quantity", size, order_type, *([None] * 7)))
            for slot in range(7):
                for value in odd:
                    optional = [None] * 7
                    optional[slot] = value
                    events.append(("submitted", ts, 3, "target_percent", size, order_type, *optional))
    events.append(
        (
            "submitted",
            ts,
            3,
            "quantity",
            5.0,
            "stop_limit",
            9.5,
            10.0,
            1,
            2,
            0.5,
            None,
            "2024-01-02T16:00:00Z",
        )
    )
    for price in (123.45678912345678, 1e-05, 0.00012345678901234, 9.87654321e15, 1.5e16, 2.0**60):
        events.append(("filled", ts, 8, price, 3.0, "BUY", price / 7))
        events.append(("trade_closed", ts, "AAA", "long", 3.0, price, price * 1.1, price / 3))
    time = "2023-11-14T22:13:20Z"
    for event in events:
        assert event_json(event, time) == dumps(event_dict(event, time)), event


def test_float_text_spells_every_float_as_repr_does() -> None:
    """The fast float spelling behind the FMEL texts equals ``repr`` (what the JSON encoder writes)."""
    import random
    import struct

    from farm_dagster.engine.protocol import float_text

    rng = random.Random(20261125)
    values = [0.0, -0.0, 1e-4, -1e-4, 1e16, -1e16, 9999999999999998.0, 0.1, 1 / 3, 2.0**53, 5e-324]
    values += [1e-4 * (1 - 2**-53), 1.7976931348623157e308, 100.0, -81.0, 123456789012345.67]
    for _ in range(200_000):  # any bit pattern: every exponent, subnormals included
        value = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if value - value == 0.0:  # finite
            values.append(value)
    for _ in range(100_000):  # the magnitudes prices, sizes and P&L take, and their rounded forms
        value = rng.random() * 10 ** rng.uniform(-6, 18) * rng.choice((1, -1))
        values += [value, round(value, 2), float(int(value))]
    for value in values:
        assert float_text(value) == repr(value), repr(value)
