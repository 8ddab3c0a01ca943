"""lock_down in real child processes: first through the sandbox bootstrap with every layer (the
probe entry runs snippets as agent code would), then each kernel layer on its own, with the audit
hook left out, to show it holds without the Python-level layer.

The read allow-list is checked both ways: data that would be the future of a backtest (price
files shipped in packages, the data home's warehouse) is unreadable by Python and native readers
alike, and the libraries agents run on stay readable."""

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
from tests.test_hostile_corpus import DATA_FILES, SITE_PACKAGES, _panel, make_data_home

LIMITS = SandboxLimits(cpu_seconds=3, memory_mb=512, wall_seconds=20)  # see test_hostile_corpus.LIMITS
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


def _within(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(f"{root}{os.sep}")


def test_read_allow_list_names_packages_not_site_packages(probe: Probe) -> None:
    readable, listable = probe.report["readable"], probe.report["listable"]
    site = str(SITE_PACKAGES)
    for needed in ("numpy", "pandas", "polars", "backtrader", "dateutil", "pytz"):
        assert f"{site}/{needed}" in readable, needed
    assert any(p.startswith(f"{site}/_polars_runtime") for p in readable)  # polars' native half
    assert str(PROJECT / "farm_dagster") in readable
    for data_package in ("bokeh_sampledata", "arch", "skfolio", "pyarrow", "scipy"):
        assert not [p for p in readable if _within(p, SITE_PACKAGES / data_package)], data_package
    for tree in (SITE_PACKAGES, PROJECT):  # their other entries: data packages, the data home, tests
        assert not [p for p in readable if _within(str(tree), Path(p))], tree
    own = (PROJECT / "farm_dagster", SITE_PACKAGES)  # the venv may live in the repository
    assert not [p for p in readable if _within(p, PROJECT) and not any(_within(p, o) for o in own)]
    # /tmp itself and /proc stay closed; a checkout (and its venv) may itself live under /tmp.
    outside_own = [p for p in readable if not any(_within(p, o) for o in own)]
    assert not [p for p in outside_own if p == "/tmp" or p.startswith("/tmp/") or p.startswith("/proc")]
    assert site in listable and str(PROJECT) not in listable  # names only, to find modules


READERS = """
import numpy as np, polars as pl
result = {}
for name, path in TARGETS.items():
    for reader, read in {
        "open": lambda p: open(p, "rb").read(16),
        "numpy": lambda p: np.fromfile(p, dtype=np.uint8, count=16),
        "polars": lambda p: pl.read_csv(p, has_header=False, truncate_ragged_lines=True),
        "polars_scan": lambda p: pl.scan_csv(p, has_header=False).collect(),
    }.items():
        try:
            read(path)
            result[name + "/" + reader] = "READ"
        except Exception as exc:
            result[name + "/" + reader] = type(exc).__name__
"""


def test_future_data_is_unreadable_by_python_and_native_readers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_data_home(tmp_path / "farm-home", monkeypatch, _panel())
    stray = tmp_path / "prices.csv"  # a test tmp dir, as a worker of the test suite would leave
    stray.write_text("close\n1.0\n2.0\n")
    targets = {name: str(path) for name, path in DATA_FILES.items()} | {
        "warehouse": str(settings.warehouse_path),
        "dagster_home": str(settings.dagster_home / "dagster.yaml"),
        "repository": str(PROJECT / "pyproject.toml"),
        "tmp": str(stray),
    }
    assert all(os.path.isfile(p) for p in targets.values())  # readable here, outside the sandbox
    probe = Probe()
    try:
        answer = probe.run(f"TARGETS = {targets!r}\n" + READERS)
    finally:
        probe.proc.close()
    assert answer["ok"], answer
    outcomes = eval(answer["result"])  # noqa: S307 - the repr of a dict of str built by the snippet
    assert len(outcomes) == 4 * len(targets)
    assert set(outcomes.values()) <= {"SandboxViolation", "PermissionError"}, outcomes
    # native readers raise no audit event: their refusal is the kernel's (a plain PermissionError)
    assert outcomes["bokeh/polars"] == outcomes["warehouse/polars"] == "PermissionError"


def test_unreadable_packages_import_as_not_found(probe: Probe) -> None:
    # pandas probes pyarrow with `except ImportError`; an unreadable package must look absent
    answer = probe.run("import pandas as pd; result = float(pd.Series([1.0, 3.0]).mean())")
    assert answer["ok"] and answer["result"] == "2.0", answer
    trusted_import = "import logging; logging.sys.modules['importlib'].import_module('pyarrow')"
    _denied(probe.run(trusted_import), "SandboxImportDenied", "pyarrow")


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
        out[name] = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else type(exc).__name__

attempt("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
attempt("unix_socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
attempt("write_tmp", lambda: open("/tmp/farm-kernel-only-x", "w"))
attempt("read_passwd", lambda: open("/etc/passwd").read())
attempt("read_project", lambda: open(os.path.join(sys.argv[1], "pyproject.toml")).read())
attempt("read_numpy", lambda: open(numpy.__file__).read())
attempt("read_prices", lambda: open(sys.argv[2], "rb").read(16))
attempt("read_warehouse", lambda: open(sys.argv[3], "rb").read(16))
import polars as pl  # imported after the lockdown, as agents do: its files stay readable
attempt("polars_read_prices", lambda: pl.read_csv(sys.argv[2]))

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


def test_kernel_layers_hold_without_the_audit_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    warehouse = make_data_home(tmp_path / "farm-home", monkeypatch, _panel()).warehouse_path
    proc = subprocess.run(
        [sys.executable, "-c", KERNEL_ONLY, str(PROJECT), str(DATA_FILES["bokeh"]), str(warehouse)],
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
    assert out["read_prices"] == out["read_warehouse"] == "EACCES"  # Landlock: data stays out
    assert out["polars_read_prices"] == "PermissionError"  # polars' native read: no audit event
    assert out["read_numpy"] == "allowed"  # the trusted installation stays readable
    assert out["fork"] == "EPERM" and out["exec"] == "EPERM"  # seccomp
    assert out["signal_parent"] == "EPERM"  # Landlock signal scope / other uid
