"""Every setting of the platform, in one place, read from the environment (prefix ``FARM_``).

Why one object: the API, the Dagster code location, the ingester and the paper traders all read
the same variables, so a profile switch (``FARM_PROFILE=local|gcp``) changes every backend at once.
A missing or invalid setting fails at start with the variable's name, not deep inside a run.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Profile(StrEnum):
    LOCAL = "local"
    GCP = "gcp"


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the environment variable."""


class FarmSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FARM_", extra="ignore", case_sensitive=False)

    profile: Profile = Field(
        Profile.LOCAL, description="local (embedded: DuckDB, files, SQLite, Redis) or gcp"
    )
    home: Path = Field(Path(".farm"), description="data home of the local profile")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="cache and (local) bus")
    redis_auth: SecretStr | None = Field(None, description="Memorystore AUTH string (gcp profile)")
    redis_ca_cert: Path | None = Field(
        None, description="Memorystore server CA PEM, enables TLS (gcp profile)"
    )

    gcp_project: str | None = Field(None, description="GCP project id (gcp profile)")
    bq_dataset_prefix: str = Field("", description="prefix for BigQuery datasets, e.g. 'dev_'")
    bq_location: str = Field("US", description="BigQuery location")
    gcs_bucket: str | None = Field(None, description="Cloud Storage bucket for artifacts (gcp profile)")
    firestore_database: str = Field("(default)", description="Firestore database id")
    topic_market_data: str = Field("market-data", description="bus topic for bars")
    topic_news_data: str = Field("news-data", description="bus topic for news")
    topic_backtest_requests: str = Field("backtest-requests", description="bus topic for backtest requests")

    alpaca_api_key: SecretStr | None = Field(None, description="Alpaca key id (live data / paper broker)")
    alpaca_secret_key: SecretStr | None = Field(None, description="Alpaca secret key")
    alpaca_paper: bool = Field(True, description="use Alpaca's paper endpoint")

    sandbox_cpu_seconds: int = Field(600, ge=1, description="CPU-time limit of one agent process")
    sandbox_memory_mb: int = Field(
        2048, ge=64, description="memory (data segment) limit of one agent process, MB"
    )
    sandbox_wall_seconds: int = Field(1800, ge=1, description="wall-clock limit of one agent run")

    @model_validator(mode="after")
    def _gcp_needs_names(self) -> FarmSettings:
        if self.profile is Profile.GCP:
            missing = [
                f"FARM_{name.upper()}" for name in ("gcp_project", "gcs_bucket") if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"profile gcp needs {', '.join(missing)}")
        return self

    @property
    def home_dir(self) -> Path:
        path = self.home.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def warehouse_path(self) -> Path:
        return self.home_dir / "warehouse.duckdb"

    @property
    def objects_dir(self) -> Path:
        return self.home_dir / "objects"

    @property
    def opstore_path(self) -> Path:
        return self.home_dir / "operational.sqlite"

    @property
    def dagster_home(self) -> Path:
        return self.home_dir / "dagster"


def _explain(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item.get("loc", ()) if part != "__root__"]
        var = f"FARM_{loc[0].upper()}" if loc else "settings"
        lines.append(f"{var}: {item.get('msg')}")
    return "invalid settings: " + "; ".join(lines)


def load_settings(**overrides: object) -> FarmSettings:
    """Read and validate the settings; raise :class:`SettingsError` naming the variable on failure."""
    try:
        return FarmSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(_explain(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> FarmSettings:
    return load_settings()
