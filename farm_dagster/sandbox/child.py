"""Bootstrap of a sandboxed child: ``python -m farm_dagster.sandbox.child ENTRY RFD WFD CONFIG``.

Order matters: import the trusted modules (the entry's module pulls numpy, the SDK and the
engine) while imports are still unrestricted, let the entry's module prepare what the lockdown
would make slower or impossible (its ``prepare(spec)``, given the parent's ``prepare`` config: the
host maps the agent's history buffer in one go), then lock the process down, then hand the channel
to the entry function, which is the first place agent code can run.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any


def _lock_down(limits: Any, allowed_modules: Any) -> None:
    try:
        from farm_dagster.sandbox.lockdown import lock_down
    except ImportError as exc:  # pragma: no cover - lockdown.py ships with the sandbox package
        print(f"sandbox: lockdown unavailable ({exc}); running with process isolation only", file=sys.stderr)
        return
    if allowed_modules is None:
        lock_down(limits)
    else:
        lock_down(limits, tuple(allowed_modules))


def main(argv: list[str] | None = None) -> int:
    entry, read_fd, write_fd, raw_config = (argv if argv is not None else sys.argv[1:])[:4]
    config = json.loads(raw_config)
    from farm_dagster.sandbox.channel import Channel, SharedChannel
    from farm_dagster.sandbox.limits import SandboxLimits

    module_name, _, func_name = entry.partition(":")
    module = importlib.import_module(module_name)  # trusted imports happen here
    func = getattr(module, func_name)
    region = config.get("shared_region_fd")
    if region is None:
        channel: Channel | SharedChannel = Channel(int(read_fd), int(write_fd))
    else:  # mapped now: the lockdown forbids mmap, and the fd is closed before any agent code
        channel = SharedChannel(int(read_fd), int(write_fd), int(region), "child")
        os.close(int(region))
    if config.get("prepare") is not None and hasattr(module, "prepare"):
        module.prepare(config["prepare"])  # the parent's spec, before any agent code exists
    _lock_down(SandboxLimits(**config["limits"]), config.get("allowed_modules"))
    func(channel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
