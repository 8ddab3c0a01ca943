"""Start a private redis-server (tests and benchmarks: a real Redis, never a mock).

The machine's own Redis may hold other data; tests and benchmarks start their own on a free port
and stop it afterwards. Setup installs Debian's redis-server when it is missing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis


class RedisStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis_server(
    workdir: Path, args: Sequence[str], client: redis.Redis, timeout_seconds: float = 10.0
) -> subprocess.Popen[bytes]:
    """Run ``redis-server <args>`` without persistence in ``workdir``; return once ``client`` gets a PONG."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisStartError(
            "redis-server is not installed: run scripts/setup.sh (it installs Debian's redis-server)"
        )
    proc = subprocess.Popen(
        [binary, *args, "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            client.ping()
            return proc
        except redis.ConnectionError as exc:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RedisStartError(f"redis-server {' '.join(args)} did not start: {exc}") from None
            time.sleep(0.05)
