"""Settings: one place, profile switch, and errors that name the variable."""

from __future__ import annotations

import pytest

from farm_dagster.resources.bus_pubsub import PubSubBus
from farm_dagster.resources.bus_redis import RedisStreamsBus
from farm_dagster.resources.factory import RESOURCE_KEYS, build_resources
from farm_dagster.resources.warehouse_bigquery import BigQueryWarehouse
from farm_dagster.resources.warehouse_duckdb import DuckDBWarehouse
from farm_dagster.settings import Profile, SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "FARM_PROFILE",
        "FARM_GCP_PROJECT",
        "FARM_GCS_BUCKET",
        "FARM_HOME",
        "FARM_SANDBOX_CPU_SECONDS",
    ):
        monkeypatch.delenv(var, raising=False)


def test_default_profile_is_local_and_embedded(tmp_path, monkeypatch):
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    settings = load_settings()
    assert settings.profile is Profile.LOCAL
    resources = build_resources(settings)
    assert set(resources) == set(RESOURCE_KEYS)
    assert isinstance(resources["warehouse"], DuckDBWarehouse)
    assert isinstance(resources["bus"], RedisStreamsBus)
    assert resources["warehouse"].path.startswith(str(tmp_path / "home"))


def test_gcp_profile_switches_every_backend(monkeypatch):
    monkeypatch.setenv("FARM_PROFILE", "gcp")
    monkeypatch.setenv("FARM_GCP_PROJECT", "farm-prod")
    monkeypatch.setenv("FARM_GCS_BUCKET", "farm-artifacts")
    resources = build_resources(load_settings())
    assert isinstance(resources["warehouse"], BigQueryWarehouse)
    assert isinstance(resources["bus"], PubSubBus)
    assert resources["warehouse"].project == "farm-prod"


def test_gcp_profile_without_project_names_the_variables(monkeypatch):
    monkeypatch.setenv("FARM_PROFILE", "gcp")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "FARM_GCP_PROJECT" in str(err.value) and "FARM_GCS_BUCKET" in str(err.value)


@pytest.mark.parametrize(
    ("var", "value"),
    [("FARM_PROFILE", "azure"), ("FARM_SANDBOX_CPU_SECONDS", "0"), ("FARM_SANDBOX_CPU_SECONDS", "lots")],
)
def test_invalid_values_name_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        load_settings()


def test_cli_reports_bad_settings_without_a_traceback(monkeypatch):
    from typer.testing import CliRunner

    from farm_dagster.cli import app
    from farm_dagster.settings import get_settings

    monkeypatch.setenv("FARM_PROFILE", "azure")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["demo", "--data-only"])
    get_settings.cache_clear()
    assert result.exit_code != 0
    assert "FARM_PROFILE" in result.output
    assert "Traceback" not in result.output
