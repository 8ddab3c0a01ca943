"""Shared fixtures: real Redis, real DuckDB/SQLite files in temp dirs, settings pointing at them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from farm_dagster.local_services import RedisStartError, free_port, start_redis_server
from farm_dagster.resources.bus_redis import RedisStreamsBus
from farm_dagster.resources.cache_redis import RedisCache
from farm_dagster.resources.object_store_local import LocalObjectStore
from farm_dagster.resources.opstore_sqlite import SQLiteOperationalStore
from farm_dagster.resources.warehouse_duckdb import DuckDBWarehouse
from farm_dagster.settings import FarmSettings, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent

# GCP emulator and Memorystore-like fixtures live beside this file.
pytest_plugins = ["tests.conftest_gcp"]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: $REDIS_URL when given, else a private redis-server started for this session."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        proc = start_redis_server(
            tmp_path_factory.mktemp("redis"),
            ["--port", str(port), "--bind", "127.0.0.1"],
            redis.Redis.from_url(url),
        )
    except RedisStartError as exc:
        pytest.fail(str(exc))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[str]:
    """A flushed database for one test (xdist workers use different db numbers)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int("".join(ch for ch in worker if ch.isdigit()) or 0) % 15 + 1
    base = redis_url.rsplit("/", 1)[0]
    url = f"{base}/{index}"
    redis.Redis.from_url(url).flushdb()
    yield url
    redis.Redis.from_url(url).flushdb()


@pytest.fixture
def settings(tmp_path: Path, redis_db: str, monkeypatch: pytest.MonkeyPatch) -> FarmSettings:
    """Settings of the local profile with the data home in a temp dir (also exported to the env)."""
    home = tmp_path / "farm-home"
    monkeypatch.setenv("FARM_PROFILE", "local")
    monkeypatch.setenv("FARM_HOME", str(home))
    monkeypatch.setenv("FARM_REDIS_URL", redis_db)
    # The CLI exports DAGSTER_HOME; setting it here first lets monkeypatch restore it after the test.
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    from farm_dagster.settings import get_settings

    get_settings.cache_clear()
    return load_settings()


@pytest.fixture
def warehouse(tmp_path: Path) -> DuckDBWarehouse:
    return DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))


@pytest.fixture
def object_store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(root=str(tmp_path / "objects"))


@pytest.fixture
def opstore(tmp_path: Path) -> SQLiteOperationalStore:
    return SQLiteOperationalStore(path=str(tmp_path / "operational.sqlite"))


@pytest.fixture
def cache(redis_db: str) -> RedisCache:
    return RedisCache(url=redis_db)


@pytest.fixture
def bus(redis_db: str) -> RedisStreamsBus:
    return RedisStreamsBus(url=redis_db, ack_deadline_seconds=2.0)  # same margin as the Pub/Sub contract bus
