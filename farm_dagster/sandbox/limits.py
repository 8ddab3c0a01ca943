"""Resource limits of one sandboxed agent process."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 600
    memory_mb: int = 2048
    wall_seconds: float = 1800.0
    file_size_bytes: int = 0
    max_open_files: int = 64
    max_processes: int = 0  # extra processes the agent may start (0: none)
    # Threads native libraries (polars, BLAS) may still start after the lockdown; counted with the
    # processes by RLIMIT_NPROC, which is why it is a limit and not unlimited.
    max_threads: int = 16
    # uid the child drops to when started as root. None: a uid of its own (base + pid), so that
    # RLIMIT_NPROC counts this sandbox alone and sandboxes cannot signal each other; 65534: nobody.
    sandbox_uid: int | None = None

    @classmethod
    def from_settings(cls, settings: object) -> SandboxLimits:
        return cls(
            cpu_seconds=int(getattr(settings, "sandbox_cpu_seconds", cls.cpu_seconds)),
            memory_mb=int(getattr(settings, "sandbox_memory_mb", cls.memory_mb)),
            wall_seconds=float(getattr(settings, "sandbox_wall_seconds", cls.wall_seconds)),
        )
