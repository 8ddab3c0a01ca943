"""The market-data checks: pass on real data, fail with a precise message on data corrupted on purpose.

Two levels: the pure check functions on frames, and the Dagster asset checks against a DuckDB
warehouse holding the real table with one corruption written into it.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.market_data import market_data_ohlcv, market_data_ohlcv_checks
from farm_dagster.market_data import sources
from farm_dagster.market_data.checks import (
    Severity,
    check_calendar_gaps,
    check_no_duplicates,
    check_ohlc_consistency,
    check_positive_prices,
)
from farm_dagster.market_data.sources import SOURCE_BOKEH, load_real_ohlcv, load_source
from farm_dagster.market_data.synthetic import synthetic_ohlcv
from farm_dagster.resources.tables import OHLCV
from farm_dagster.resources.warehouse_duckdb import DuckDBWarehouse


@pytest.fixture(scope="module")
def bokeh() -> pd.DataFrame:
    return load_source("bokeh_stocks")


def _row(frame: pd.DataFrame, symbol: str, date: str) -> int:
    hits = frame.index[(frame["symbol"] == symbol) & (frame["timestamp"] == pd.Timestamp(date, tz="UTC"))]
    assert len(hits) == 1, f"{symbol} {date} not in fixture"
    return int(hits[0])


# --- corrupted fixtures: each check fails with a message naming symbol, date and values -------


def high_below_low(frame: pd.DataFrame) -> pd.DataFrame:
    bad = frame.copy()
    i = _row(bad, "AAPL", "2001-05-03")
    bad.loc[i, "high"] = bad.loc[i, "low"] - 1.0
    return bad


def duplicated_bar(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.loc[[_row(frame, "IBM", "2005-06-01")]]], ignore_index=True)


def zero_price(frame: pd.DataFrame) -> pd.DataFrame:
    bad = frame.copy()
    # A zero low keeps low <= open, close <= high true, so only the price check should object.
    bad.loc[_row(bad, "MSFT", "2010-02-01"), "low"] = 0.0
    return bad


def test_ohlc_fails_on_high_below_low(bokeh: pd.DataFrame) -> None:
    bad = high_below_low(bokeh)
    i = _row(bad, "AAPL", "2001-05-03")
    outcome = check_ohlc_consistency(bad)
    assert not outcome.passed and outcome.severity is Severity.ERROR
    high, low = bad.loc[i, "high"], bad.loc[i, "low"]
    assert f"AAPL 2001-05-03: high {float(high)!r} < low {float(low)!r}" in outcome.message
    assert outcome.metadata["failing_rows"] == 1
    assert outcome.metadata["failing_by_rule"]["high_below_low"] == 1
    assert outcome.failing_rows["symbol"].tolist() == ["AAPL"]
    assert check_ohlc_consistency(bokeh).passed


def test_duplicates_fail_on_duplicated_bar(bokeh: pd.DataFrame) -> None:
    outcome = check_no_duplicates(duplicated_bar(bokeh))
    assert not outcome.passed and outcome.severity is Severity.ERROR
    assert "IBM 2005-06-01 x2" in outcome.message
    assert outcome.metadata["duplicate_keys"] == 1 and outcome.metadata["extra_rows"] == 1
    assert len(outcome.failing_rows) == 2
    assert check_no_duplicates(bokeh).passed


def test_positive_prices_fail_on_zero_price(bokeh: pd.DataFrame) -> None:
    outcome = check_positive_prices(zero_price(bokeh))
    assert not outcome.passed and outcome.severity is Severity.ERROR
    assert "MSFT 2010-02-01: low 0.0 is not a positive finite price" in outcome.message
    assert outcome.metadata["failing_by_rule"] == {"low_not_positive": 1}
    assert check_positive_prices(bokeh).passed


def test_ohlc_rules_each_named() -> None:
    base = synthetic_ohlcv(1, 6, seed=1)
    bad = base.copy()
    bad.loc[0, "low"] = bad.loc[0, "open"] + 1  # low above open; high lifted so high >= low holds
    bad.loc[0, "high"] = bad.loc[0, "low"] + 1
    bad.loc[1, "open"] = np.nan  # NULL on a full bar
    bad.loc[2, "close"] = np.nan
    bad.loc[3, "close_only"] = True  # a close-only bar that carries open/high/low
    outcome = check_ohlc_consistency(bad)
    rules = outcome.metadata["failing_by_rule"]
    assert rules["low_above_open"] == 1 and rules["ohl_null_on_ohlcv_bar"] == 1
    assert rules["close_null"] == 1 and rules["ohl_on_close_only_bar"] == 1
    assert outcome.metadata["failing_rows"] == 4
    assert "never invented" in outcome.message


def test_close_only_rows_are_exempt_for_their_null_fields() -> None:
    frame = load_source("skfolio_factors")
    assert frame["close_only"].all() and frame["high"].isna().all()
    assert check_ohlc_consistency(frame).passed
    assert check_positive_prices(frame).passed


def test_positive_prices_flag_negative_volume_and_infinite_price() -> None:
    bad = synthetic_ohlcv(2, 5, seed=2)
    bad.loc[1, "volume"] = -5.0
    bad.loc[7, "high"] = np.inf
    outcome = check_positive_prices(bad)
    assert outcome.metadata["failing_by_rule"] == {"high_not_positive": 1, "volume_negative": 1}
    assert "volume -5.0 is negative" in outcome.message and "high inf" in outcome.message


def test_messages_stay_short_on_many_failures() -> None:
    bad = synthetic_ohlcv(3, 200, seed=4)
    bad["close"] = 0.0
    outcome = check_positive_prices(bad)
    assert outcome.metadata["failing_rows"] == 600
    assert "and 595 more" in outcome.message
    assert len(outcome.failing_rows) == 10
    assert outcome.metadata["failing_by_symbol"] == {"SYN0001": 200, "SYN0002": 200, "SYN0003": 200}


# --- calendar gaps -----------------------------------------------------------------------------


def test_gap_report_counts_missing_sessions_per_symbol() -> None:
    frame = load_real_ohlcv(["arch_indices", "skfolio_factors"])
    dropped = pd.to_datetime(["2010-05-03", "2010-05-04", "2011-01-05"], utc=True)
    gappy = frame[~((frame["symbol"] == "SPX") & frame["timestamp"].isin(dropped))]
    gappy = gappy[
        ~((gappy["symbol"] == "MTUM") & (gappy["timestamp"] == pd.Timestamp("2015-07-01", tz="UTC")))
    ]
    outcome = check_calendar_gaps(gappy)
    assert not outcome.passed and outcome.severity is Severity.WARN
    per_symbol = outcome.metadata["per_symbol"]
    assert set(per_symbol) == {"SPX", "MTUM"}
    assert per_symbol["SPX"]["missing_sessions"] == 3
    assert per_symbol["SPX"]["missing_examples"] == ["2010-05-03", "2010-05-04", "2011-01-05"]
    assert per_symbol["MTUM"]["missing_sessions"] == 1
    assert outcome.metadata["missing_sessions_total"] == 4
    assert "SPX: 3 missing session(s), e.g. 2010-05-03" in outcome.message
    assert set(outcome.failing_rows["problem"]) == {"missing_session"}
    assert check_calendar_gaps(frame).passed


def test_gap_report_flags_bars_on_non_sessions() -> None:
    frame = load_source("arch_indices")
    extra = frame[frame["symbol"] == "COMP"].iloc[[100]].copy()
    extra["timestamp"] = pd.Timestamp("2010-07-04", tz="UTC")  # a Sunday, Independence Day
    outcome = check_calendar_gaps(pd.concat([frame, extra], ignore_index=True))
    assert not outcome.passed
    assert outcome.metadata["per_symbol"]["COMP"]["off_calendar_bars"] == 1
    assert "COMP: 1 bar(s) on non-sessions, e.g. 2010-07-04" in outcome.message


def test_gap_check_skips_intraday_rows() -> None:
    minute = synthetic_ohlcv(2, 100, seed=1, timeframe="1m")
    outcome = check_calendar_gaps(minute)
    assert outcome.passed and outcome.metadata["intraday_rows_skipped"] == 200


# --- Dagster asset checks on a corrupted warehouse ---------------------------------------------


@pytest.fixture(scope="module")
def real_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("checks") / "warehouse.duckdb"
    result = dg.materialize([market_data_ohlcv], resources={"warehouse": DuckDBWarehouse(path=str(path))})
    assert result.success
    return path


def _run_checks(warehouse: DuckDBWarehouse) -> tuple[dg.ExecuteInProcessResult, dict]:
    result = dg.materialize(
        [market_data_ohlcv, *market_data_ohlcv_checks],
        resources={"warehouse": warehouse},
        selection=dg.AssetSelection.checks(*market_data_ohlcv_checks),
        raise_on_error=False,
    )
    return result, {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("corrupt", "check_name", "expected"),
    [
        (high_below_low, "ohlc_consistency", "AAPL 2001-05-03: high "),
        (duplicated_bar, "no_duplicates", "IBM 2005-06-01 x2"),
        (zero_price, "positive_prices", "MSFT 2010-02-01: low 0.0 is not a positive finite price"),
    ],
)
def test_asset_checks_fail_on_corrupted_table(
    real_db: Path, tmp_path: Path, corrupt, check_name: str, expected: str
) -> None:
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(real_db, copy)
    warehouse = DuckDBWarehouse(path=str(copy))
    rows = warehouse.read(OHLCV, where={"source": SOURCE_BOKEH}).sort_values(["symbol", "timestamp"])
    warehouse.write(OHLCV, corrupt(rows.reset_index(drop=True)), replace_where={"source": SOURCE_BOKEH})

    result, evaluations = _run_checks(warehouse)
    assert not result.success  # a failing blocking ERROR check fails the run
    failed = evaluations[check_name]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert expected in failed.description
    assert expected in failed.metadata["message"].value
    assert "failing_rows_sample" in failed.metadata
    others = {name: e.passed for name, e in evaluations.items() if name != check_name}
    assert others == dict.fromkeys(others, True)


@pytest.mark.slow
def test_gap_check_warns_without_blocking(real_db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(real_db, copy)
    warehouse = DuckDBWarehouse(path=str(copy))
    rows = warehouse.read(OHLCV, where={"source": SOURCE_BOKEH})
    gone = pd.Timestamp("2008-10-10", tz="UTC")
    warehouse.write(
        OHLCV,
        rows[~((rows["symbol"] == "GOOG") & (rows["timestamp"] == gone))],
        replace_where={"source": SOURCE_BOKEH},
    )
    result, evaluations = _run_checks(warehouse)
    assert result.success
    gaps = evaluations["calendar_gaps"]
    assert not gaps.passed and gaps.severity == dg.AssetCheckSeverity.WARN
    assert "GOOG: 1 missing session(s), e.g. 2008-10-10" in gaps.description
    assert gaps.metadata["per_symbol"].value["GOOG"]["missing_sessions"] == 1


@pytest.mark.slow
def test_blocking_check_stops_downstream_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A corrupted source reaching the asset: the blocking check fails and skips what depends on it."""
    spec = sources.REAL_SOURCES["bokeh_stocks"]
    monkeypatch.setattr(
        sources,
        "REAL_SOURCES",
        {"bokeh_stocks": dataclasses.replace(spec, loader=lambda: zero_price(spec.loader()))},
    )

    @dg.asset(deps=[market_data_ohlcv])
    def downstream() -> None:
        raise AssertionError("must not run on corrupt bars")

    result = dg.materialize(
        [market_data_ohlcv, *market_data_ohlcv_checks, downstream],
        resources={"warehouse": DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))},
        raise_on_error=False,
    )
    assert not result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["positive_prices"].passed
    assert "MSFT 2010-02-01: low 0.0" in evaluations["positive_prices"].description
    assert "downstream" not in {e.step_key for e in result.get_step_success_events()}
    assert "downstream" not in {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
