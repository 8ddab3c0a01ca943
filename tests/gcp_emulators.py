"""Start and stop the Google Cloud emulators (Pub/Sub, Firestore) the gcp resources are tested on.

They ship with the Google Cloud CLI as components and are Java programs. ``gcloud ... start`` runs
the Java server as a child, so each emulator gets its own process group (``start_new_session``)
and stopping it signals the whole group: no JVM outlives the test session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from farm_dagster.local_services import free_port


@dataclass(frozen=True)
class EmulatorKind:
    name: str
    command: tuple[str, ...]  # gcloud arguments before --host-port
    component_dir: str  # folder under <sdk>/platform when the component is installed
    component_id: str  # for the install hint
    env_var: str  # the variable the client libraries read


PUBSUB = EmulatorKind(
    "pubsub",
    ("beta", "emulators", "pubsub", "start"),
    "pubsub-emulator",
    "pubsub-emulator",
    "PUBSUB_EMULATOR_HOST",
)
FIRESTORE = EmulatorKind(
    "firestore",
    ("emulators", "firestore", "start"),
    "cloud-firestore-emulator",
    "cloud-firestore-emulator",
    "FIRESTORE_EMULATOR_HOST",
)


class EmulatorError(RuntimeError):
    """The emulator is installed but did not come up; the message carries its log's tail."""


@dataclass
class RunningEmulator:
    kind: EmulatorKind
    host: str  # "127.0.0.1:<port>", the value of kind.env_var
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_seconds: float

    def stop(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM the emulator's process group, SIGKILL what is left after the grace period."""
        if self.process.poll() is not None:
            return
        pgid = os.getpgid(self.process.pid)
        os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace_seconds)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # the JVM child may outlive the gcloud wrapper
        self.process.wait(timeout=grace_seconds)


def unavailable_reason(kind: EmulatorKind) -> str | None:
    """Why ``kind`` cannot run on this machine, or None when gcloud, the component and java exist."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return "the Google Cloud CLI (gcloud) is not installed"
    sdk_root = Path(os.path.realpath(gcloud)).parent.parent
    if not (sdk_root / "platform" / kind.component_dir).is_dir():
        return (
            f"the {kind.name} emulator is not installed in {sdk_root} "
            f"(gcloud components install {kind.component_id}, or apt-get install google-cloud-cli-{kind.component_id})"
        )
    if shutil.which("java") is None:
        return f"the {kind.name} emulator needs a Java runtime and `java` is not on PATH"
    return None


def start(kind: EmulatorKind, log_dir: Path, timeout_seconds: float = 90.0) -> RunningEmulator:
    """Start ``kind`` on a free local port and return once it answers HTTP ``GET /``."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorError("gcloud is not installed")
    port = free_port()
    host = f"127.0.0.1:{port}"
    log_path = log_dir / f"{kind.name}-emulator.log"
    env = {
        **os.environ,
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
    }
    began = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [gcloud, *kind.command, f"--host-port={host}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    running = RunningEmulator(kind, host, process, log_path, ready_seconds=0.0)
    deadline = began + timeout_seconds
    while True:
        if process.poll() is not None:
            raise EmulatorError(f"{kind.name} emulator exited with {process.returncode}:\n{_tail(log_path)}")
        if _answers(host):
            running.ready_seconds = time.monotonic() - began
            return running
        if time.monotonic() > deadline:
            running.stop()
            raise EmulatorError(
                f"{kind.name} emulator not ready after {timeout_seconds:.0f} s:\n{_tail(log_path)}"
            )
        time.sleep(0.1)


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP proxy


def _answers(host: str) -> bool:
    try:
        with _DIRECT.open(f"http://{host}/", timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
