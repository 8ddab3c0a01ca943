"""The Farm: a Dagster data platform for trading agents.

Importing the package points numba's cache at a folder of the project so that vectorbt's and our
jitted functions compile once per machine, not once per process (Dagster runs are processes).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("NUMBA_CACHE_DIR", str(PROJECT_ROOT / ".cache" / "numba"))

__version__ = "0.1.0"
