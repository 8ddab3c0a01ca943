"""lock_down in real child processes: first through the sandbox bootstrap with every layer (the
probe entry runs snippets as agent code would), then each kernel layer on its own, with the audit
hook left out, to show it holds without the Python-level layer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm_dagster.sandbox.limits import SandboxLimits
from farm_dagster.sandbox.process import SandboxCrashed, SandboxProcess

LIMITS = SandboxLimits(cpu_seconds=1, memory_mb=512, wall_seconds=20)
PROJECT = Path(__file__).resolve().parents[1]


class Probe:
    def __init__(self, limits: SandboxLimits = LIMITS) -> None:
        self.proc = SandboxProcess("farm_dagster.sandbox.lockdown:probe", limits).start()
        self.report = json.loads(self.proc.recv(timeout=20))["report"]

    def run(self, code: str) -> dict:
        self.proc.send(textwrap.dedent(code).encode())
        return json.loads(self.proc.recv(timeout=15))


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe()
    try:
        yield p
    finally:
        p.proc.close()


def _denied(answer: dict, error_type: str, words: str) -> None:
    assert not answer["ok"], answer
    assert answer["error_type"] == error_type, answer
    assert words in answer["message"], answer


def test_report_says_every_layer_held(probe: Probe) -> None:
    r = probe.report
    assert r["audit_hook"] and r["seccomp"] and r["landlock"] and r["no_new_privs"]
    assert r["network_isolated"], r["network_detail"]
    assert r["dropped_privileges"], r["notes"]
    assert r["rlimits"]["FSIZE"] == [0, 0] and r["rlimits"]["NOFILE"] == [64, 64]
    assert r["rlimits"]["DATA"] == [512 * 2**20] * 2


def test_agent_level_denials(probe: Probe) -> None:
    # os is reached through an allowed module, as an attacker would once `import os` is refused
    _denied(probe.run("import os"), "SandboxImportDenied", "importing 'os'")
    _denied(probe.run("import sqlite3"), "SandboxImportDenied", "importing 'sqlite3'")
    _denied(
        probe.run("import logging; logging.sys.modules['importlib'].import_module('sqlite3')"),
        "SandboxImportDenied",
        "sqlite3",
    )
    _denied(probe.run("import logging; logging.os.fork()"), "SandboxViolation", "starting processes")
    _denied(probe.run("import logging; logging.os.system('true')"), "SandboxViolation", "starting programs")
    _denied(
        probe.run("import logging; logging.sys.modules['importlib'].import_module('socket')"),
        "SandboxImportDenied",
        "socket",
    )
    _denied(probe.run("open('/tmp/farm-lockdown-x', 'w')"), "SandboxViolation", "writing files")
    assert not os.path.exists("/tmp/farm-lockdown-x")
    _denied(probe.run("open('/etc/passwd').read()"), "SandboxViolation", "reading '/etc/passwd'")
    _denied(probe.run("import logging; logging.sys._getframe(0)"), "SandboxViolation", "frames")
    _denied(probe.run("import numpy; numpy.ctypeslib.ctypes.CDLL(None)"), "SandboxViolation", "ctypes")
    _denied(probe.run("eval('1 + 1')"), "SandboxViolation", "code at run time")


def test_allowed_libraries_still_work(probe: Probe) -> None:
    checks = {
        "import numpy as np; result = float(np.linalg.inv(np.eye(3) * 2).sum())": "1.5",
        "import pandas as pd; result = float(pd.Series([1.0, 2, 3, 4]).rolling(2).mean().iloc[-1])": "3.5",
        "import polars as pl; result = pl.DataFrame({'a': [1, 2, 3]})['a'].sum()": "6",
        "import datetime; result = datetime.datetime.strptime('2020-02-03', '%Y-%m-%d').day": "3",
        "import logging; logging.getLogger('agent').warning('hello'); result = 1": "1",
        "import backtrader as bt; result = bt.Strategy.__name__": "'Strategy'",
        "import statistics; result = statistics.median([3, 1, 2])": "2",
    }
    for code, want in checks.items():
        answer = probe.run(code)
        assert answer["ok"], answer
        assert answer["result"] == want, (code, answer)


def test_memory_bomb_gets_a_memory_error_and_the_process_survives(probe: Probe) -> None:
    _denied(probe.run("hoard = [bytearray(50_000_000) for _ in range(100)]"), "MemoryError", "")
    assert probe.run("result = sum(range(10))")["result"] == "45"


def test_cpu_loop_is_killed_by_rlimit_cpu() -> None:
    probe = Probe(SandboxLimits(cpu_seconds=1, memory_mb=512, wall_seconds=60))
    try:
        probe.proc.send(b"while True:\n    pass\n")
        with pytest.raises(SandboxCrashed) as caught:
            probe.proc.recv(timeout=30)
        assert caught.value.exit.reason == "cpu limit exceeded"
        assert caught.value.exit.signal == "SIGXCPU"
    finally:
        probe.proc.close()


KERNEL_ONLY = """
import errno, json, os, socket, subprocess, sys
import numpy
from farm_dagster.sandbox.limits import SandboxLimits
from farm_dagster.sandbox.lockdown import lock_down

report = lock_down(SandboxLimits(cpu_seconds=5, memory_mb=512), audit_hook=False)
out = {"report": report.to_dict()}

def attempt(name, fn):
    try:
        fn()
        out[name] = "allowed"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc.errno))

attempt("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
attempt("unix_socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
attempt("write_tmp", lambda: open("/tmp/farm-kernel-only-x", "w"))
attempt("read_passwd", lambda: open("/etc/passwd").read())
attempt("read_project", lambda: open(os.path.join(sys.argv[1], "pyproject.toml")).read())
attempt("read_numpy", lambda: open(numpy.__file__).read())

def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)

attempt("fork", fork)
attempt("exec", lambda: subprocess.run(["/bin/true"], check=True))
attempt("signal_parent", lambda: os.kill(os.getppid(), 0))
sys.stdout.write(json.dumps(out))
"""


def test_kernel_layers_hold_without_the_audit_hook() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KERNEL_ONLY, str(PROJECT)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert not out["report"]["audit_hook"]
    assert out["socket"] == "EPERM" and out["unix_socket"] == "EPERM"  # seccomp
    assert out["write_tmp"] == "EACCES" and not os.path.exists("/tmp/farm-kernel-only-x")  # Landlock
    assert out["read_passwd"] == "EACCES" and out["read_project"] == "EACCES"  # Landlock
    assert out["read_numpy"] == "allowed"  # the trusted installation stays readable
    assert out["fork"] == "EPERM" and out["exec"] == "EPERM"  # seccomp
    assert out["signal_parent"] == "EPERM"  # Landlock signal scope / other uid
