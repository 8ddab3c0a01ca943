"""The `agents` dynamic partitions: one partition per submitted agent, added by the submission sensor."""

from __future__ import annotations

import dagster as dg

agents_partitions = dg.DynamicPartitionsDefinition(name="agents")
