"""Static validation of agent code: the rules, their lines, and that real agents pass untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm_dagster.validation import (
    ALLOWED_MODULES,
    MAX_CODE_BYTES,
    AgentValidationError,
    is_module_allowed,
    validate_agent_code,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NATIVE_HEADER = "from farm_dagster.sdk import Agent\n\n\nclass A(Agent):\n    def on_bar(self, ctx):\n"


def _rules(code: str) -> list[tuple[str, int]]:
    return [(i.rule, i.line) for i in validate_agent_code(code).issues]


def _body(*lines: str) -> str:
    """A native agent whose on_bar holds ``lines`` (first body line is line 6)."""
    return NATIVE_HEADER + "".join(f"        {line}\n" for line in lines)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.stem)
def test_every_example_agent_passes(path: Path) -> None:
    report = validate_agent_code(path.read_text(), path.name)
    assert report.ok, report.messages()
    assert report.kind == ("backtrader" if path.stem.startswith("bt_") else "native")
    assert report.class_name


def test_backtrader_convention_and_submodules() -> None:
    code = (
        "import backtrader as bt\nimport backtrader.indicators as btind\nimport numpy.linalg\n"
        "from collections.abc import Sequence\n\n\nclass Agent(bt.Strategy):\n"
        "    params = (('period', 10),)\n\n    def __init__(self):\n"
        "        self.sma = btind.SMA(self.data.close, period=self.p.period)\n\n"
        "    def next(self):\n        self.fmel_confidence = 0.7\n        if self.data.close[0] > self.sma[0]:\n"
        "            self.buy()\n"
    )
    report = validate_agent_code(code)
    assert (report.ok, report.kind, report.class_name) == (True, "backtrader", "Agent"), report.messages()


def test_user_base_class_between_agent_and_leaf_is_one_agent() -> None:
    code = (
        "from farm_dagster.sdk import Agent\n\nclass Base(Agent):\n    pass\n\nclass Mine(Base):\n    pass\n"
    )
    report = validate_agent_code(code)
    assert (report.ok, report.class_name) == (True, "Mine")


def test_agent_class_count() -> None:
    none = validate_agent_code("import numpy as np\nx = np.zeros(3)\n")
    assert [(i.rule, i.line) for i in none.issues] == [("agent-class", 1)]
    two = "from farm_dagster.sdk import Agent\n\nclass A(Agent):\n    pass\n\nclass B(Agent):\n    pass\n"
    assert _rules(two) == [("agent-class", 6)]
    assert "exactly one" in validate_agent_code(two).issues[0].message


def test_syntax_error_names_its_line() -> None:
    report = validate_agent_code("import numpy\n\nclass A(:\n    pass\n", "mine.py")
    assert [(i.rule, i.line) for i in report.issues] == [("syntax", 3)]
    assert report.messages()[0].startswith("mine.py:3: syntax: ")


def test_size_limit() -> None:
    report = validate_agent_code("#" * (MAX_CODE_BYTES + 1))
    assert [i.rule for i in report.issues] == ["size-limit"]


def test_pathological_nesting_is_a_clean_rejection() -> None:
    assert _rules("x = " + "(" * 300 + "1" + ")" * 300)[0][0] == "syntax"
    assert _rules("x = " + "-" * 100_000 + "1")[0][0] == "syntax"


@pytest.mark.parametrize(
    "module",
    [
        "os",
        "sys",
        "subprocess",
        "socket",
        "ctypes",
        "importlib",
        "builtins",
        "gc",
        "inspect",
        "pickle",
        "io",
        "pathlib",
        "shutil",
        "threading",
        "multiprocessing",
        "signal",
        "resource",
        "marshal",
        "types",
        "code",
        "numpy.ctypeslib",
        "pandas.io",
        "numpy._core",
        "farm_dagster.engine",
        "time",
        "urllib.request",
    ],
)
def test_forbidden_imports(module: str) -> None:
    assert not is_module_allowed(module)
    report = validate_agent_code(f"import {module}\n" + NATIVE_HEADER + "        pass\n")
    assert report.issues[0].rule == "forbidden-import" and report.issues[0].line == 1
    assert "agents may import" in report.issues[0].message and "numpy" in report.issues[0].message


def test_allowed_imports() -> None:
    for name in ALLOWED_MODULES | {
        "numpy.linalg",
        "collections.abc",
        "backtrader.indicators",
        "pandas.tseries",
    }:
        assert is_module_allowed(name), name
    assert _rules("from os import path\n" + NATIVE_HEADER + "        pass\n") == [("forbidden-import", 1)]
    assert _rules("from farm_dagster import sdk\n\nclass A(sdk.Agent):\n    pass\n") == []
    assert _rules("from . import helper\n" + NATIVE_HEADER + "        pass\n") == [("relative-import", 1)]


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("x = ().__class__", "dunder-access"),
        ("x = ctx.__dict__", "dunder-access"),
        ("x = int.__subclasses__()", "dunder-access"),
        ("x = self.on_bar.__globals__", "dunder-access"),
        ("x = __builtins__", "dunder-access"),
        ("__name__ = 'numpy'", "dunder-access"),
        ("x = __import__('os')", "forbidden-builtin"),
        ("eval('1')", "forbidden-builtin"),
        ("exec('x = 1')", "forbidden-builtin"),
        ("compile('1', 'f', 'eval')", "forbidden-builtin"),
        ("open('/etc/passwd')", "forbidden-builtin"),
        ("x = globals()", "forbidden-builtin"),
        ("x = vars(ctx)", "forbidden-builtin"),
        ("breakpoint()", "forbidden-builtin"),
        ("x = memoryview(b'1')", "forbidden-builtin"),
        ("x = getattr(ctx, '__class__')", "dunder-access"),
        ("x = getattr(ctx, '_' + '_class__')", "dynamic-attribute"),
        ("g = getattr", "dynamic-attribute"),
        ("x = gen.gi_frame", "frame-access"),
        ("x = err.tb_frame.f_back.f_globals", "frame-access"),
    ],
)
def test_dangerous_expressions(line: str, rule: str) -> None:
    issues = validate_agent_code(_body(line)).issues
    assert (issues[0].rule, issues[0].line) == (rule, 6), issues


def test_module_reach_through_and_file_access() -> None:
    head = "import logging\nimport numpy as np\nimport pandas as pd\n"
    code = head + _body(
        "logging.os.system('id')",
        "np.load('x.npy')",
        "pd.read_csv('/etc/passwd')",
        "frame.to_csv('/tmp/x')",
        "np.mean = len",
        "x = np._core",
    )
    assert _rules(code) == [
        ("forbidden-import", 9),
        ("file-access", 10),
        ("file-access", 11),
        ("file-access", 12),
        ("module-mutation", 13),
        ("private-access", 14),
    ]


def test_harmless_lookalikes_pass() -> None:
    code = "import datetime\nimport numpy as np\n" + _body(
        "super().__init__()",
        "name = type(self).__name__",
        "self.signal = datetime.time(9, 30)",
        "x = getattr(self, 'window', 20)",
        "s = frame.to_csv()",
        "self.io = np.ones(3)",
    )
    report = validate_agent_code(code)
    assert report.ok, report.messages()


def test_error_wraps_the_report() -> None:
    report = validate_agent_code("import os\n")
    err = AgentValidationError(report)
    assert err.report is report and "agent.py:1: forbidden-import" in str(err)
