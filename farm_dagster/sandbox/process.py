"""Run an entry function in a separate, locked-down Python process and talk to it.

Messages travel through shared-memory mailboxes where the processor allows it, else through the
pipes (:mod:`farm_dagster.sandbox.channel`). Why inherited fds (not stdin/stdout): the agent's
prints cannot corrupt the protocol, and the channel is a few file descriptors and a mapping made
before the child's lockdown. The child runs in its own session, so :meth:`SandboxProcess.close` kills
the whole process group, including anything the agent managed to start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from farm_dagster.sandbox.channel import (
    Channel,
    ChannelClosed,
    SharedChannel,
    create_region,
    shared_memory_supported,
)
from farm_dagster.sandbox.limits import SandboxLimits

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_STDERR_TAIL = 8192


class SandboxError(RuntimeError):
    """Base of the sandbox failures the runner turns into a run status."""


class SandboxTimeout(SandboxError):
    """No answer within the wall-clock limit."""


@dataclass(frozen=True)
class SandboxExit:
    returncode: int | None
    signal: str | None
    reason: str
    stderr_tail: str


class SandboxCrashed(SandboxError):
    """The child died; ``exit.reason`` says why in words (cpu limit, memory limit, killed ...)."""

    def __init__(self, exit: SandboxExit) -> None:
        super().__init__(exit.reason)
        self.exit = exit


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """Peak resident memory (VmHWM) of one live process image in MB; None when it cannot be read.

    Why not ``ru_maxrss``: Linux carries a forked child's high-water mark across ``exec``, so a
    child of a big process reports at least its parent's size; VmHWM belongs to the new image.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def explain_exit(returncode: int | None, stderr_tail: str) -> tuple[str | None, str]:
    """(signal name, reason in words) for a finished child."""
    memory = "MemoryError" in stderr_tail or "Cannot allocate memory" in stderr_tail
    if returncode is None:
        return None, "still running"
    if returncode < 0:
        name = _signal_name(-returncode)
        if -returncode == signal.SIGXCPU:
            return name, "cpu limit exceeded"
        if -returncode == signal.SIGXFSZ:
            return name, "file size limit exceeded"
        if -returncode == signal.SIGKILL:
            return (
                name,
                "memory limit exceeded" if memory else "killed (SIGKILL: cpu or memory limit, or stopped)",
            )
        return name, f"killed by {name}"
    if memory:
        return None, "memory limit exceeded"
    if returncode == 0:
        return None, "exited before finishing the run"
    return None, f"exited with code {returncode}"


class SandboxProcess:
    """One sandboxed child running ``entry`` (``"module:function"``, called with its channel).

    ``shared_memory``: messages through shared-memory mailboxes (:class:`SharedChannel`); None
    means wherever :func:`shared_memory_supported`, False forces the pipes (:class:`Channel`).
    """

    def __init__(
        self,
        entry: str = "farm_dagster.engine.host:main",
        limits: SandboxLimits | None = None,
        *,
        allowed_modules: tuple[str, ...] | None = None,
        prepare: dict[str, Any] | None = None,
        shared_memory: bool | None = None,
    ) -> None:
        self.entry = entry
        self.shared_memory = shared_memory_supported() if shared_memory is None else shared_memory
        self.limits = limits or SandboxLimits()
        self.allowed_modules = allowed_modules
        # Handed to the entry module's ``prepare`` before the lockdown (see sandbox/child.py):
        # written by the trusted parent, never by the agent.
        self.prepare = prepare
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: Channel | SharedChannel | None = None
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        self._reader: threading.Thread | None = None
        self._deadline = 0.0
        self._exit: SandboxExit | None = None

    # ------------------------------------------------------------------ life
    def start(self) -> SandboxProcess:
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        region = None
        if self.shared_memory:
            try:
                region = create_region()
            except OSError:  # no memfd or no seals here (a kernel or runtime without them): pipes
                self.shared_memory = False
        config = {
            "limits": asdict(self.limits),
            "allowed_modules": self.allowed_modules,
            "prepare": self.prepare,
            "shared_region_fd": region,
        }
        cmd = [
            sys.executable,
            "-B",
            "-m",
            "farm_dagster.sandbox.child",
            self.entry,
            str(to_child_r),
            str(to_parent_w),
            json.dumps(config),
        ]
        env = {  # nothing of the parent's environment (secrets) reaches the agent
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(_PROJECT_ROOT),
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        try:
            self._proc = subprocess.Popen(
                cmd,
                pass_fds=(to_child_r, to_parent_w) if region is None else (to_child_r, to_parent_w, region),
                start_new_session=True,
                env=env,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                close_fds=True,
            )
            if region is None:
                self._channel = Channel(to_parent_r, to_child_w)
            else:
                self._channel = SharedChannel(to_parent_r, to_child_w, region, "parent")
        finally:
            os.close(to_child_r)
            os.close(to_parent_w)
            if region is not None:
                os.close(region)  # the mapping stays
        self._deadline = time.monotonic() + self.limits.wall_seconds
        if isinstance(self._channel, SharedChannel):
            self._channel.deadline = self._deadline  # a send waiting for the agent gives up with it
        self._reader = threading.Thread(target=self._drain_stderr, name="sandbox-stderr", daemon=True)
        self._reader.start()
        return self

    def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        stream = self._proc.stderr
        while chunk := stream.read1(65536):
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size > 4 * _STDERR_TAIL and len(self._stderr) > 1:
                self._stderr_size -= len(self._stderr.popleft())

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def peak_rss_mb(self) -> float | None:
        """The sandboxed process's peak resident memory so far in MB (None once it has exited)."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return peak_rss_mb(self._proc.pid)

    @property
    def stderr_tail(self) -> str:
        return b"".join(self._stderr)[-_STDERR_TAIL:].decode("utf-8", errors="replace")

    # ------------------------------------------------------------- messages
    def send(self, payload: bytes) -> None:
        assert self._channel is not None, "start() first"
        try:
            self._channel.send(payload)
        except TimeoutError:
            limit = f"wall-clock limit of {self.limits.wall_seconds:g}s"
            raise SandboxTimeout(f"the agent did not take its next message within the {limit}") from None
        except (BrokenPipeError, ChannelClosed, OSError):
            raise self._crashed() from None

    def recv(self, timeout: float | None = None) -> bytes:
        """Next message; SandboxTimeout past ``timeout`` or the wall-clock limit, SandboxCrashed on death."""
        assert self._channel is not None, "start() first"
        left = self._deadline - time.monotonic()
        wall = timeout is None or timeout >= left
        try:
            return self._channel.recv(left if wall else timeout)
        except TimeoutError:
            limit = (
                f"wall-clock limit of {self.limits.wall_seconds:g}s" if wall else f"timeout of {timeout:g}s"
            )
            raise SandboxTimeout(f"no answer from the agent within the {limit}") from None
        except ChannelClosed:
            raise self._crashed() from None

    def ready(self) -> bool:
        """True when the child's next message (or its death) can be read without waiting."""
        return self._channel is None or self._channel.ready()

    def _crashed(self) -> SandboxCrashed:
        assert self._proc is not None
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
        return SandboxCrashed(self._finish())

    # ------------------------------------------------------------------ end
    def _kill(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)

    def _finish(self) -> SandboxExit:
        if self._exit is None:
            assert self._proc is not None
            if self._reader is not None:
                self._reader.join(timeout=2)
            tail = self.stderr_tail
            sig, reason = explain_exit(self._proc.returncode, tail)
            self._exit = SandboxExit(self._proc.returncode, sig, reason, tail)
        return self._exit

    def close(self) -> SandboxExit | None:
        """Kill the child's whole process group and release the pipes. Safe to call twice."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=0.2)  # a child that sent DONE is already on its way out
        self._kill()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._proc.stderr is not None:
            with contextlib.suppress(OSError):
                if self._reader is not None:
                    self._reader.join(timeout=2)
                self._proc.stderr.close()
        return self._finish()

    @property
    def status(self) -> SandboxExit | None:
        """How the child ended (None while it runs)."""
        if self._exit is None and self._proc is not None and self._proc.poll() is not None:
            return self._finish()
        return self._exit

    def __enter__(self) -> SandboxProcess:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()
