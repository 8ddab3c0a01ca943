"""Build the five resources for the active profile: the only place that switches on FARM_PROFILE.

Dagster's `Definitions`, the API, the ingester and the paper traders all call
:func:`build_resources`, so one environment variable moves every process to the same backends.
"""

from __future__ import annotations

from typing import Any

from farm_dagster.settings import FarmSettings, Profile, get_settings

RESOURCE_KEYS = ("warehouse", "object_store", "opstore", "cache", "bus")


def build_resources(settings: FarmSettings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    if settings.profile is Profile.GCP:
        return _gcp(settings)
    return _local(settings)


def _local(settings: FarmSettings) -> dict[str, Any]:
    from farm_dagster.resources.bus_redis import RedisStreamsBus
    from farm_dagster.resources.cache_redis import RedisCache
    from farm_dagster.resources.object_store_local import LocalObjectStore
    from farm_dagster.resources.opstore_sqlite import SQLiteOperationalStore
    from farm_dagster.resources.warehouse_duckdb import DuckDBWarehouse

    return {
        "warehouse": DuckDBWarehouse(path=str(settings.warehouse_path)),
        "object_store": LocalObjectStore(root=str(settings.objects_dir)),
        "opstore": SQLiteOperationalStore(path=str(settings.opstore_path)),
        "cache": RedisCache(url=settings.redis_url),
        "bus": RedisStreamsBus(url=settings.redis_url),
    }


def _gcp(settings: FarmSettings) -> dict[str, Any]:
    from farm_dagster.resources.bus_pubsub import PubSubBus
    from farm_dagster.resources.cache_memorystore import MemorystoreCache
    from farm_dagster.resources.object_store_gcs import GCSObjectStore
    from farm_dagster.resources.opstore_firestore import FirestoreStore
    from farm_dagster.resources.warehouse_bigquery import BigQueryWarehouse

    project = settings.gcp_project or ""
    return {
        "warehouse": BigQueryWarehouse(
            project=project, dataset_prefix=settings.bq_dataset_prefix, location=settings.bq_location
        ),
        "object_store": GCSObjectStore(project=project, bucket=settings.gcs_bucket or ""),
        "opstore": FirestoreStore(project=project, database=settings.firestore_database),
        "cache": MemorystoreCache(
            url=settings.redis_url,
            auth_string=settings.redis_auth.get_secret_value() if settings.redis_auth else None,
            server_ca_path=str(settings.redis_ca_cert) if settings.redis_ca_cert else None,
        ),
        "bus": PubSubBus(project=project),
    }
