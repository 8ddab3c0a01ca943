"""Real market data (offline, from installed wheels), the synthetic generator, the store and the assets."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.market_data import (
    market_data_ohlcv,
    market_data_ohlcv_checks,
    synthetic_ohlcv,
    synthetic_ohlcv_checks,
)
from farm_dagster.market_data.checks import run_all_checks
from farm_dagster.market_data.schema import OHLCV_COLUMNS
from farm_dagster.market_data.sources import (
    REAL_SOURCES,
    SOURCE_ARCH,
    SOURCE_BOKEH,
    SOURCE_SKFOLIO_INDEX,
    load_real_ohlcv,
    load_source,
)
from farm_dagster.market_data.store import load_panel, read_ohlcv, summary, write_ohlcv
from farm_dagster.market_data.synthetic import (
    synthetic_ohlcv as generate_synthetic,
)
from farm_dagster.market_data.synthetic import (
    synthetic_panel,
    synthetic_source,
    synthetic_timestamps,
)
from farm_dagster.resources.tables import OHLCV, OHLCV_SYNTHETIC
from farm_dagster.resources.warehouse_duckdb import DuckDBWarehouse


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return load_real_ohlcv()


@pytest.fixture(scope="module")
def loaded_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dg.ExecuteInProcessResult]:
    """The real asset and its checks materialized once into a DuckDB file (copied per test)."""
    path = tmp_path_factory.mktemp("md") / "warehouse.duckdb"
    result = dg.materialize(
        [market_data_ohlcv, *market_data_ohlcv_checks],
        resources={"warehouse": DuckDBWarehouse(path=str(path))},
        raise_on_error=False,
    )
    return path, result


@pytest.fixture
def loaded(loaded_db: tuple[Path, dg.ExecuteInProcessResult], tmp_path: Path) -> DuckDBWarehouse:
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(loaded_db[0], copy)
    return DuckDBWarehouse(path=str(copy))


# --- real sources -------------------------------------------------------------------------------


def test_real_data_has_27_or_more_symbols_from_every_source(real: pd.DataFrame) -> None:
    assert list(real.columns) == list(OHLCV_COLUMNS)
    symbols = set(real["symbol"])
    assert len(symbols) >= 27
    assert {"AAPL", "FB", "GOOG", "IBM", "MSFT", "SPX", "COMP", "SP500", "AAPL.ADJ", "MSFT.ADJ"} <= symbols
    assert {"MTUM", "QUAL", "SIZE", "USMV", "VLUE"} <= symbols
    assert set(real["source"]) == {s.source for s in REAL_SOURCES.values()}
    # One source per symbol: a symbol names exactly one series.
    assert (real.groupby("symbol")["source"].nunique() == 1).all()
    assert (real["timeframe"] == "1d").all()


def test_close_only_series_never_get_invented_high_low(real: pd.DataFrame) -> None:
    close_only = real[real["close_only"]]
    full = real[~real["close_only"]]
    assert len(close_only) and len(full)
    assert close_only[["open", "high", "low", "volume"]].isna().all().all()
    assert close_only["close"].notna().all()
    assert full[["open", "high", "low", "close"]].notna().all().all()
    # Flags are per series, never mixed inside one symbol.
    assert (real.groupby("symbol")["close_only"].nunique() == 1).all()
    assert set(full["source"]) == {SOURCE_BOKEH, SOURCE_ARCH}
    # Stocks are back-adjusted for splits and dividends; index levels need no adjustment.
    assert full.loc[full["source"] == SOURCE_BOKEH, "adjusted"].all()
    assert not full.loc[full["source"] == SOURCE_ARCH, "adjusted"].any()
    assert close_only["adjusted"].all()


def test_timestamps_are_utc_midnight_of_the_session_date(real: pd.DataFrame) -> None:
    stamps = pd.DatetimeIndex(real["timestamp"])
    assert str(stamps.tz) == "UTC"
    assert (stamps == stamps.normalize()).all()
    # The first bokeh bar is the 2000-03-01 session.
    aapl = real[real["symbol"] == "AAPL"]
    assert aapl["timestamp"].min() == pd.Timestamp("2000-03-01", tz="UTC")


def test_values_match_the_packages(real: pd.DataFrame) -> None:
    from arch.data import nasdaq
    from bokeh_sampledata import stocks
    from skfolio.datasets import load_sp500_dataset

    ibm = real[real["symbol"] == "IBM"].reset_index(drop=True)
    assert len(ibm) == len(stocks.IBM["date"])
    factor = np.asarray(stocks.IBM["adj_close"]) / np.asarray(stocks.IBM["close"])
    assert np.allclose(ibm["high"], np.asarray(stocks.IBM["high"]) * factor)
    assert np.allclose(ibm["close"], stocks.IBM["adj_close"])
    assert ibm["timestamp"].iloc[-1] == pd.Timestamp(stocks.IBM["date"][-1], tz="UTC")

    # The split is gone: AAPL's 2:1 split of 2005-02-28 no longer shows as a 50 % crash.
    # (Real crashes stay: 2000-09-29's -52 % was an earnings warning, not a split.)
    aapl = real[real["symbol"] == "AAPL"].set_index("timestamp")["close"].pct_change()
    raw = pd.Series(stocks.AAPL["close"], index=pd.to_datetime(stocks.AAPL["date"], utc=True)).pct_change()
    split_day = pd.Timestamp("2005-02-28", tz="UTC")
    assert raw[split_day] < -0.45 and abs(aapl[split_day]) < 0.05
    assert aapl[pd.Timestamp("2000-09-29", tz="UTC")] < -0.5

    comp = real[real["symbol"] == "COMP"].reset_index(drop=True)
    raw = nasdaq.load()
    assert np.allclose(comp["low"], raw["Low"]) and np.allclose(comp["volume"], raw["Volume"])

    adj = real[real["symbol"] == "MSFT.ADJ"].reset_index(drop=True)
    assert np.allclose(adj["close"], load_sp500_dataset()["MSFT"].to_numpy())
    # bokeh's adjusted OHLCV MSFT and skfolio's adjusted close-only MSFT.ADJ are different series
    # (different vendors, adjusted as of different dates).
    msft = real[real["symbol"] == "MSFT"].set_index("timestamp")["close"]
    joined = adj.set_index("timestamp")["close"].reindex(msft.index)
    assert not np.allclose(msft, joined)


def test_sp500_names_are_unambiguous(real: pd.DataFrame) -> None:
    spx = real[real["symbol"] == "SPX"].set_index("timestamp")
    sp500 = real[real["symbol"] == "SP500"].set_index("timestamp")
    assert set(spx["source"]) == {SOURCE_ARCH} and not spx["close_only"].any()
    assert set(sp500["source"]) == {SOURCE_SKFOLIO_INDEX} and sp500["close_only"].all()
    both = spx.index.intersection(sp500.index)
    assert len(both) > 4000
    assert np.allclose(spx.loc[both, "close"], sp500.loc[both, "close"], atol=1e-3)


def test_registry_names_origins_and_licences() -> None:
    assert len(REAL_SOURCES) == 5
    for spec in REAL_SOURCES.values():
        assert spec.origin and spec.licence and spec.package
        assert set(load_source(spec.key)["source"]) == {spec.source}
    with pytest.raises(KeyError, match="bokeh_stocks"):
        load_source("nope")


def test_real_data_passes_every_check(real: pd.DataFrame) -> None:
    outcomes = run_all_checks(real)
    assert [o.name for o in outcomes] == [
        "ohlc_consistency",
        "no_duplicates",
        "positive_prices",
        "calendar_gaps",
    ]
    for outcome in outcomes:
        assert outcome.passed, str(outcome)


# --- synthetic ----------------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed() -> None:
    a = generate_synthetic(4, 300, seed=7)
    b = generate_synthetic(4, 300, seed=7)
    c = generate_synthetic(4, 300, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["close"], c["close"])
    assert synthetic_panel(4, 300, seed=7).data_version == synthetic_panel(4, 300, seed=7).data_version
    assert synthetic_panel(4, 300, seed=7).data_version != synthetic_panel(4, 300, seed=8).data_version
    # Symbol i is the same series whatever the universe size.
    assert np.array_equal(synthetic_panel(3, 50, seed=1).close, synthetic_panel(9, 50, seed=1).close[:, :3])


@pytest.mark.parametrize("timeframe", ["1d", "1m"])
def test_synthetic_bars_are_consistent_and_labelled(timeframe: str) -> None:
    frame = generate_synthetic(6, 2_000, seed=3, timeframe=timeframe)
    assert len(frame) == 12_000
    assert set(frame["symbol"].astype(str)) == {f"SYN{i:04d}" for i in range(1, 7)}
    assert set(frame["source"].astype(str)) == {synthetic_source(3)} == {"synthetic (seeded, seed=3)"}
    assert set(frame["timeframe"].astype(str)) == {timeframe}
    lo, hi = frame["low"], frame["high"]
    assert (lo <= frame[["open", "close"]].min(axis=1)).all()
    assert (hi >= frame[["open", "close"]].max(axis=1)).all()
    assert (lo > 0).all() and (frame["volume"] >= 0).all()
    for outcome in run_all_checks(frame)[:3]:
        assert outcome.passed, str(outcome)


def test_synthetic_panel_matches_long_frame() -> None:
    panel = synthetic_panel(5, 400, seed=11, timeframe="1m")
    frame = generate_synthetic(5, 400, seed=11, timeframe="1m")
    wide = frame.pivot(index="timestamp", columns="symbol", values="high")
    assert np.array_equal(panel.high, wide.to_numpy())
    assert np.array_equal(panel.timestamps, wide.index.as_unit("ns").asi8)


def test_synthetic_minute_bars_follow_new_york_hours() -> None:
    stamps = synthetic_timestamps(390 * 3 + 10, "1m", start="2024-03-07")  # spans the DST switch
    local = stamps.tz_convert("America/New_York")
    minutes = local.hour * 60 + local.minute
    assert minutes.min() == 9 * 60 + 30 and minutes.max() == 15 * 60 + 59
    assert (local.dayofweek < 5).all()
    assert stamps.is_monotonic_increasing and stamps.is_unique
    with pytest.raises(ValueError, match="timeframe"):
        synthetic_timestamps(5, "5m")


def test_synthetic_panel_in_blocks_and_long_daily_calendars() -> None:
    # 40 symbols span several generation blocks; the 100 x 100,000 scale run lives in bench/.
    panel = synthetic_panel(40, 20_000, seed=0, timeframe="1m")
    assert panel.close.shape == (20_000, 40) and panel.close.flags.c_contiguous
    assert np.all(panel.low <= np.minimum(panel.open, panel.close))
    assert np.all(panel.high >= np.maximum(panel.open, panel.close))
    assert np.all(panel.low > 0)
    # 100,000 daily bars do not fit after 2000 in pandas' range: the default start moves back.
    days = synthetic_timestamps(100_000, "1d")
    assert days.is_unique and days.is_monotonic_increasing and len(days) == 100_000
    assert (days.dayofweek < 5).all()
    with pytest.raises(ValueError, match="timestamp range"):
        synthetic_timestamps(200_000, "1d")


# --- store --------------------------------------------------------------------------------------


def test_write_is_idempotent_per_source(warehouse: DuckDBWarehouse) -> None:
    bokeh = load_source("bokeh_stocks")
    arch = load_source("arch_indices")
    write_ohlcv(warehouse, pd.concat([bokeh, arch]))
    write_ohlcv(warehouse, bokeh)  # re-run of one source replaces only its rows
    stored = warehouse.read(OHLCV)
    assert len(stored) == len(bokeh) + len(arch)
    assert stored.groupby("source").size().to_dict() == {SOURCE_BOKEH: len(bokeh), SOURCE_ARCH: len(arch)}


def test_summary_and_load_panel(warehouse: DuckDBWarehouse) -> None:
    frame = pd.concat([load_source("bokeh_stocks"), load_source("skfolio_sp500_index")])
    write_ohlcv(warehouse, frame)
    table = summary(warehouse)
    assert list(table.columns) == ["symbol", "rows", "first", "last", "source", "close_only"]
    expected = frame.groupby("symbol").size()
    assert table.set_index("symbol")["rows"].to_dict() == expected.to_dict()
    assert table.set_index("symbol").loc["SP500", "close_only"]
    assert table.set_index("symbol").loc["FB", "first"] == frame[frame["symbol"] == "FB"]["timestamp"].min()

    panel = load_panel(warehouse, ["IBM", "SP500"], "2010-01-01", "2010-12-31")
    assert panel.symbols == ("IBM", "SP500") and panel.close_only == (False, True)
    assert panel.index.min() >= pd.Timestamp("2010-01-01", tz="UTC")
    assert panel.index.max() == pd.Timestamp("2010-12-31", tz="UTC")
    ibm = frame[(frame["symbol"] == "IBM") & (frame["timestamp"].dt.year == 2010)]
    assert np.allclose(panel.frame("close")["IBM"].to_numpy(), ibm["close"].to_numpy())
    # A close-only series trades at its close inside the panel, but the table keeps NULLs.
    assert np.array_equal(panel.frame("high")["SP500"], panel.frame("close")["SP500"])
    with pytest.raises(ValueError, match="NOPE"):
        load_panel(warehouse, ["IBM", "NOPE"], "2010-01-01", "2010-12-31")
    with pytest.raises(ValueError, match="FB"):
        load_panel(warehouse, ["FB"], "2001-01-01", "2001-12-31")  # FB listed in 2012


def test_summary_of_missing_table_is_empty(warehouse: DuckDBWarehouse) -> None:
    assert summary(warehouse).empty


def test_load_panel_end_date_covers_the_whole_day_of_minute_bars(warehouse: DuckDBWarehouse) -> None:
    frame = generate_synthetic(2, 390 * 2, seed=5, timeframe="1m", start="2024-01-02")
    warehouse.write(OHLCV_SYNTHETIC, frame)
    rows = read_ohlcv(warehouse, None, "2024-01-02", "2024-01-02", timeframe="1m", spec=OHLCV_SYNTHETIC)
    assert len(rows) == 2 * 390
    panel = load_panel(warehouse, ["SYN0002"], None, "2024-01-03", timeframe="1m", spec=OHLCV_SYNTHETIC)
    assert panel.n_bars == 780


def test_load_panel_refuses_duplicated_bars(warehouse: DuckDBWarehouse) -> None:
    bokeh = load_source("bokeh_stocks")
    write_ohlcv(warehouse, pd.concat([bokeh, bokeh.iloc[[3]]]))
    with pytest.raises(ValueError, match=r"AAPL 2000-03-06 x2"):
        load_panel(warehouse, ["AAPL"])


# --- Dagster ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_materialize_real_asset_and_checks_pass(
    loaded_db: tuple[Path, dg.ExecuteInProcessResult], real: pd.DataFrame
) -> None:
    _, result = loaded_db
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {"ohlc_consistency", "no_duplicates", "positive_prices", "calendar_gaps"}
    for evaluation in evaluations.values():
        assert evaluation.passed, evaluation.description
    metadata = result.asset_materializations_for_node("market_data_ohlcv")[0].metadata
    assert metadata["rows"].value == len(real)
    assert metadata["symbols"].value == real["symbol"].nunique() >= 27
    assert metadata["first_bar"].value.startswith("1990-01-02")
    assert sum(v["rows"] for v in metadata["rows_per_source"].value.values()) == len(real)
    assert "| AAPL.ADJ" in metadata["preview"].value


@pytest.mark.slow
def test_rematerializing_does_not_duplicate(loaded: DuckDBWarehouse, real: pd.DataFrame) -> None:
    result = dg.materialize([market_data_ohlcv], resources={"warehouse": loaded})
    assert result.success
    table = summary(loaded)
    assert int(table["rows"].sum()) == len(real)


def test_synthetic_asset_writes_its_own_table(warehouse: DuckDBWarehouse) -> None:
    config = {"n_symbols": 3, "n_bars": 500, "seed": 9, "timeframe": "1d"}
    for seed in (9, 10):  # a second run with another seed replaces the table, no duplicates
        result = dg.materialize(
            [synthetic_ohlcv, *synthetic_ohlcv_checks],
            resources={"warehouse": warehouse},
            run_config={"ops": {"synthetic_ohlcv": {"config": {**config, "seed": seed}}}},
        )
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())
    assert not warehouse.table_exists(OHLCV)  # the real table stays clean
    stored = warehouse.read(OHLCV_SYNTHETIC)
    assert len(stored) == 1_500
    assert set(stored["source"]) == {"synthetic (seeded, seed=10)"}
    metadata = result.asset_materializations_for_node("synthetic_ohlcv")[0].metadata
    assert metadata["synthetic"].value is True and metadata["rows"].value == 1_500
