"""Local helper processes for tests and benchmarks: a private redis-server, background services.

Tests and benchmarks use real parts, never mocks: the machine's own Redis may hold other data, so
they start their own on a free port and stop it afterwards (setup installs Debian's redis-server
when it is missing); Dagster's daemon and webserver run as background process groups that are
always torn down, children included.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
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


def stop_process_group(proc: subprocess.Popen[bytes], timeout_seconds: float = 30.0) -> None:
    """SIGTERM the group ``proc`` leads (a daemon and its code server), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextmanager
def background_process(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` in its own process group (stderr to ``log_path``) for the ``with`` block."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            list(args), cwd=cwd, env=dict(env), stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
        )
        try:
            yield proc
        finally:
            stop_process_group(proc)
