"""Content identity of a backtest: same code + same data + same settings = same ``result_id``.

Hashes are of canonical bytes only (sorted-key compact JSON, UTF-8 source), never of object
reprs or timestamps, so they are stable across processes and machines.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from farm_dagster.engine.costs import BacktestSettings

# Bump when a change of the engine's semantics (fills, costs, accounting) changes results.
ENGINE_VERSION = "1"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_hash(code: str) -> str:
    return _sha(code.encode("utf-8", errors="surrogatepass"))


def settings_hash(settings: BacktestSettings) -> str:
    payload = {"engine_version": ENGINE_VERSION, "settings": asdict(settings)}
    return _sha(json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())


def result_id(code_hash_: str, data_version: str, settings_hash_: str) -> str:
    return _sha(f"{code_hash_}\x1f{data_version}\x1f{settings_hash_}".encode())
