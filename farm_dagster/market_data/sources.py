"""Real daily prices shipped inside PyPI wheels: loaded offline, shaped as ``market_data.ohlcv`` rows.

Why these: the platform must run end to end on a fresh machine without network or API keys, and
on real prices rather than only synthetic ones. Three installed packages carry real history:

| key | package | symbols | kind |
|---|---|---|---|
| ``bokeh_stocks`` | bokeh-sampledata | AAPL, FB, GOOG, IBM, MSFT | OHLCV, split/dividend-adjusted, 2000-2013 |
| ``arch_indices`` | arch | SPX (S&P 500), COMP (NASDAQ Composite) | index OHLCV, 1999-2018 |
| ``skfolio_sp500`` | skfolio | 20 S&P 500 stocks (AAPL.ADJ, MSFT.ADJ, ...) | adjusted close only, 1990-2022 |
| ``skfolio_sp500_index`` | skfolio | SP500 | index close only, 1990-2022 |
| ``skfolio_factors`` | skfolio | MTUM, QUAL, SIZE, USMV, VLUE | ETF adjusted close only, 2014-2022 |

Naming rules (so a symbol means one series): a close-only series whose ticker is also an OHLCV
symbol of another source gets the suffix ``.ADJ`` (skfolio's AAPL and MSFT become ``AAPL.ADJ``
and ``MSFT.ADJ``). The S&P 500 appears twice on purpose, under two names: ``SPX`` is arch's OHLCV
index, ``SP500`` is skfolio's close-only series of the same index (its closes equal SPX's closes
to 1e-4 over 1999-2018). Close-only series keep open/high/low NULL and ``close_only=true``.
Timestamps follow :mod:`farm_dagster.market_data.schema` (00:00 UTC of the session date).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from farm_dagster.market_data.schema import (
    ADJ_SUFFIX,
    concat_ohlcv,
    ohlcv_frame,
    session_timestamps,
)

BOKEH_TICKERS: tuple[str, ...] = ("AAPL", "FB", "GOOG", "IBM", "MSFT")
ARCH_SYMBOLS: dict[str, str] = {"sp500": "SPX", "nasdaq": "COMP"}  # arch.data module -> stored symbol
OHLCV_SYMBOLS: frozenset[str] = frozenset(BOKEH_TICKERS) | frozenset(ARCH_SYMBOLS.values())

SOURCE_BOKEH = "bokeh-sampledata (Quandl WIKI, public domain)"
SOURCE_ARCH = "arch.data (index OHLCV as shipped by arch)"
SOURCE_SKFOLIO_STOCKS = "skfolio sp500_dataset (adjusted close)"
SOURCE_SKFOLIO_INDEX = "skfolio sp500_index (close)"
SOURCE_SKFOLIO_FACTORS = "skfolio factors_dataset (ETF adjusted close)"


@dataclass(frozen=True)
class RealSource:
    """One family of real series: how to load it and where it comes from (for the README)."""

    key: str
    source: str  # value of the ``source`` column; writes replace rows per source
    package: str
    origin: str
    licence: str
    loader: Callable[[], pd.DataFrame]


def close_only_name(symbol: str) -> str:
    """Stored name of a close-only series: ``.ADJ`` appended when an OHLCV series owns the ticker."""
    return f"{symbol}{ADJ_SUFFIX}" if symbol in OHLCV_SYMBOLS else symbol


def load_bokeh_stocks() -> pd.DataFrame:
    """AAPL, FB, GOOG, IBM, MSFT daily OHLCV from bokeh-sampledata, split- and dividend-adjusted.

    The source's open/high/low/close are raw prices: a split shows up as a price crash (AAPL
    halves on 2005-02-28) that would fire every trend agent's sell signal on an event that cost
    holders nothing. Each bar is scaled by the source's own factor ``adj_close / close`` (volume
    by its inverse), the usual back-adjustment; one positive factor per bar keeps
    low <= open, close <= high exact, and the adjusted close equals the source's ``adj_close``.
    """
    from bokeh_sampledata import stocks

    data = stocks.data
    frames = []
    for ticker, rows in data.groupby("ticker", sort=True):
        factor = (rows["adj_close"] / rows["close"]).to_numpy()
        frames.append(
            ohlcv_frame(
                str(ticker),
                session_timestamps(rows["date"]),
                open=rows["open"].to_numpy() * factor,
                high=rows["high"].to_numpy() * factor,
                low=rows["low"].to_numpy() * factor,
                close=rows["close"].to_numpy() * factor,
                volume=rows["volume"].to_numpy() / factor,
                source=SOURCE_BOKEH,
                adjusted=True,
            )
        )
    return concat_ohlcv(frames)


def load_arch_indices() -> pd.DataFrame:
    """S&P 500 (SPX) and NASDAQ Composite (COMP) daily index OHLCV from arch.data."""
    from arch.data import nasdaq, sp500

    frames = []
    for module, symbol in ((sp500, "SPX"), (nasdaq, "COMP")):
        data = module.load()
        frames.append(
            ohlcv_frame(
                symbol,
                session_timestamps(data.index),
                open=data["Open"].to_numpy(),
                high=data["High"].to_numpy(),
                low=data["Low"].to_numpy(),
                close=data["Close"].to_numpy(),
                volume=data["Volume"].to_numpy(),
                source=SOURCE_ARCH,
                adjusted=False,  # index levels: arch's 'Adj Close' equals 'Close'
            )
        )
    return concat_ohlcv(frames)


def _close_only(prices: pd.DataFrame, source: str) -> pd.DataFrame:
    """Wide (date x ticker) adjusted closes -> close-only rows; NaN closes are dropped, not filled."""
    stamps = session_timestamps(prices.index)
    frames = []
    for ticker in prices.columns:
        closes = prices[ticker].to_numpy(dtype="float64")
        keep = ~pd.isna(closes)
        frames.append(
            ohlcv_frame(
                close_only_name(str(ticker)), stamps[keep], close=closes[keep], source=source, adjusted=True
            )
        )
    return concat_ohlcv(frames)


def load_skfolio_sp500() -> pd.DataFrame:
    """20 S&P 500 constituents, adjusted close only, from skfolio (AAPL/MSFT stored as *.ADJ)."""
    from skfolio.datasets import load_sp500_dataset

    return _close_only(load_sp500_dataset(), SOURCE_SKFOLIO_STOCKS)


def load_skfolio_sp500_index() -> pd.DataFrame:
    """The S&P 500 index close from skfolio, stored as SP500 (arch's OHLCV of it is SPX)."""
    from skfolio.datasets import load_sp500_index

    return _close_only(load_sp500_index(), SOURCE_SKFOLIO_INDEX)


def load_skfolio_factors() -> pd.DataFrame:
    """Five factor ETFs (MTUM, QUAL, SIZE, USMV, VLUE), adjusted close only, from skfolio."""
    from skfolio.datasets import load_factors_dataset

    return _close_only(load_factors_dataset(), SOURCE_SKFOLIO_FACTORS)


_SKFOLIO_TERMS = (
    "skfolio is BSD-3-Clause; its datasets are provided 'solely for testing and example purposes' "
    "(stale, not for trading decisions)."
)

REAL_SOURCES: dict[str, RealSource] = {
    s.key: s
    for s in (
        RealSource(
            key="bokeh_stocks",
            source=SOURCE_BOKEH,
            package="bokeh-sampledata",
            origin="Quandl WIKI Prices (archived copy), daily OHLCV back-adjusted for splits and dividends with "
            "the source's adj_close, 2000-03-01..2013-03-01; "
            "GOOG is WIKI's pre-2014 GOOGL history.",
            licence="Public domain (Quandl WIKI publisher notice); loader code BSD-3-Clause.",
            loader=load_bokeh_stocks,
        ),
        RealSource(
            key="arch_indices",
            source=SOURCE_ARCH,
            package="arch",
            origin="arch.data.sp500 and arch.data.nasdaq: S&P 500 (stored as SPX) and NASDAQ Composite "
            "(stored as COMP) daily index OHLCV with volume, 1999-01-04..2018-12-31.",
            licence="Shipped as example data inside arch (NCSA licence).",
            loader=load_arch_indices,
        ),
        RealSource(
            key="skfolio_sp500",
            source=SOURCE_SKFOLIO_STOCKS,
            package="skfolio",
            origin="skfolio.datasets.load_sp500_dataset: 20 S&P 500 constituents, daily adjusted close, "
            "1990-01-02..2022-12-28; AAPL and MSFT stored as AAPL.ADJ and MSFT.ADJ.",
            licence=_SKFOLIO_TERMS,
            loader=load_skfolio_sp500,
        ),
        RealSource(
            key="skfolio_sp500_index",
            source=SOURCE_SKFOLIO_INDEX,
            package="skfolio",
            origin="skfolio.datasets.load_sp500_index: S&P 500 index daily close (stored as SP500), "
            "1990-01-02..2022-12-28.",
            licence=_SKFOLIO_TERMS,
            loader=load_skfolio_sp500_index,
        ),
        RealSource(
            key="skfolio_factors",
            source=SOURCE_SKFOLIO_FACTORS,
            package="skfolio",
            origin="skfolio.datasets.load_factors_dataset: iShares factor ETFs MTUM, QUAL, SIZE, USMV, "
            "VLUE, daily adjusted close, 2014-01-02..2022-12-28.",
            licence=_SKFOLIO_TERMS,
            loader=load_skfolio_factors,
        ),
    )
}


def load_source(key: str) -> pd.DataFrame:
    """Rows of one registered source; the error lists the known keys."""
    try:
        spec = REAL_SOURCES[key]
    except KeyError:
        raise KeyError(f"unknown real source {key!r}; known: {', '.join(REAL_SOURCES)}") from None
    return spec.loader()


def load_real_ohlcv(keys: Iterable[str] | None = None) -> pd.DataFrame:
    """Every real series (or those of ``keys``) as one long frame of ``market_data.ohlcv`` rows."""
    return concat_ohlcv([load_source(key) for key in (keys or REAL_SOURCES)])


def sources_markdown() -> str:
    """One bullet per source (package, origin, licence): for the README and the asset's metadata."""
    return "\n".join(
        f"- **{s.key}** (`{s.package}`, source `{s.source}`): {s.origin} Licence: {s.licence}"
        for s in REAL_SOURCES.values()
    )
