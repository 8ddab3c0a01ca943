"""Static checks on submitted agent code, run before anything executes.

Validation is a *filter*, not a wall: it turns the common mistakes and the obvious attacks into
clear messages (file, line, rule) before a sandbox is spent on them. The wall is the sandboxed
child process (farm_dagster.sandbox), which must hold even for code that never went through here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Literal

AgentKind = Literal["native", "backtrader"]

MAX_CODE_BYTES = 200 * 1024

# Modules an agent may import (a submodule of one of them is allowed unless listed below).
ALLOWED_MODULES: frozenset[str] = frozenset(
    {
        "numpy",
        "pandas",
        "polars",
        "math",
        "statistics",
        "collections",
        "dataclasses",
        "typing",
        "datetime",
        "functools",
        "itertools",
        "logging",
        "farm_dagster.sdk",
        "backtrader",
    }
)
# Language switches, not libraries.
_ALWAYS_ALLOWED_IMPORTS = frozenset({"__future__"})

# Submodules of allowed packages that reach files, the network, native code or test machinery.
FORBIDDEN_SUBMODULES: frozenset[str] = frozenset(
    {
        "numpy.ctypeslib",
        "numpy.distutils",
        "numpy.f2py",
        "numpy.testing",
        "numpy.lib.format",
        "numpy.lib.npyio",
        "pandas.io",
        "pandas.testing",
        "pandas.util",
        "polars.io",
        "logging.config",
        "logging.handlers",
        "backtrader.stores",
        "backtrader.plot",
    }
)

# Builtins that execute code, reach files or the interpreter's internals.
FORBIDDEN_BUILTINS: dict[str, str] = {
    "eval": "runs arbitrary code",
    "exec": "runs arbitrary code",
    "compile": "builds code at run time",
    "open": "reaches files",
    "__import__": "imports modules around the allow-list",
    "globals": "exposes the interpreter's internals",
    "locals": "exposes the interpreter's internals",
    "vars": "exposes the interpreter's internals",
    "breakpoint": "starts a debugger",
    "input": "waits for a keyboard that does not exist",
    "memoryview": "exposes raw memory",
    "id": "exposes memory addresses",
    "help": "starts an interactive helper",
    "exit": "stops the interpreter",
    "quit": "stops the interpreter",
}
# Dynamic attribute builtins: allowed only with a literal, harmless attribute name.
_ATTR_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})

# Dunder names that are harmless to read (everything else dunder is forbidden).
_ALLOWED_DUNDER_ATTRS = frozenset({"__init__", "__name__", "__qualname__", "__doc__", "__post_init__"})
_ALLOWED_DUNDER_NAMES = frozenset({"__name__", "__doc__"})

# Non-dunder attributes that hand out frames, code objects or their globals.
FORBIDDEN_ATTRS: frozenset[str] = frozenset(
    {
        "f_back",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_code",
        "f_trace",
        "tb_frame",
        "tb_next",
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "ag_frame",
        "ag_code",
        "ag_await",
        "co_code",
        "func_globals",
        "func_code",
        "currentframe",
        "_getframe",
    }
)

# Modules that must not be reached through an allowed one (e.g. `logging.os`).
FORBIDDEN_MODULE_NAMES: frozenset[str] = frozenset(
    {
        "os",
        "posix",
        "nt",
        "sys",
        "subprocess",
        "_posixsubprocess",
        "socket",
        "_socket",
        "ssl",
        "ctypes",
        "_ctypes",
        "cffi",
        "importlib",
        "builtins",
        "gc",
        "inspect",
        "pickle",
        "_pickle",
        "io",
        "_io",
        "pathlib",
        "shutil",
        "tempfile",
        "threading",
        "_thread",
        "multiprocessing",
        "concurrent",
        "asyncio",
        "signal",
        "resource",
        "marshal",
        "types",
        "code",
        "codeop",
        "runpy",
        "pty",
        "fcntl",
        "mmap",
        "select",
        "selectors",
        "urllib",
        "http",
        "requests",
        "weakref",
        "operator",
        "copyreg",
        "atexit",
        "faulthandler",
        "sysconfig",
        "platform",
        "linecache",
        "traceback",
        "pdb",
        "zipimport",
        "pkgutil",
    }
)

# Functions of numpy/pandas/polars that read or write files.
FILE_FUNCTIONS: frozenset[str] = frozenset(
    {
        "load",
        "save",
        "savez",
        "savez_compressed",
        "loadtxt",
        "savetxt",
        "genfromtxt",
        "fromfile",
        "memmap",
        "fromregex",
        "read_csv",
        "read_table",
        "read_fwf",
        "read_json",
        "read_html",
        "read_xml",
        "read_excel",
        "read_parquet",
        "read_orc",
        "read_feather",
        "read_pickle",
        "read_hdf",
        "read_sql",
        "read_sql_query",
        "read_sql_table",
        "read_sas",
        "read_spss",
        "read_stata",
        "read_clipboard",
        "read_ipc",
        "read_avro",
        "read_database",
        "read_delta",
        "scan_csv",
        "scan_parquet",
        "scan_ipc",
        "scan_ndjson",
        "scan_delta",
        "HDFStore",
        "ExcelWriter",
    }
)
# Methods that write files when given a path (harmless-looking names like to_json stay allowed).
FILE_METHODS: frozenset[str] = frozenset(
    {
        "to_csv",
        "to_parquet",
        "to_pickle",
        "to_excel",
        "to_feather",
        "to_hdf",
        "to_sql",
        "to_stata",
        "to_orc",
        "to_clipboard",
        "tofile",
        "dump",
        "write_csv",
        "write_parquet",
        "write_ipc",
        "write_json",
        "write_ndjson",
        "write_avro",
        "write_excel",
        "write_database",
        "write_delta",
        "sink_parquet",
        "sink_csv",
        "sink_ipc",
    }
)

_SDK_MODULE = "farm_dagster.sdk"
_SDK_BASES = frozenset({"Agent"})
_BT_MODULE = "backtrader"
_BT_BASES = frozenset({"Strategy", "SignalStrategy"})


@dataclass(frozen=True)
class ValidationIssue:
    line: int
    col: int
    rule: str
    message: str

    def render(self, filename: str = "agent.py") -> str:
        """`agent.py:3: forbidden-import: ...`: the form users see in the CLI and the API."""
        return f"{filename}:{self.line}: {self.rule}: {self.message}"


@dataclass
class ValidationReport:
    ok: bool
    kind: AgentKind | None
    class_name: str | None
    issues: list[ValidationIssue] = field(default_factory=list)
    filename: str = "agent.py"

    def messages(self) -> list[str]:
        return [issue.render(self.filename) for issue in self.issues]

    def __str__(self) -> str:
        if self.ok:
            return f"{self.filename}: ok ({self.kind} agent {self.class_name})"
        return "\n".join(self.messages())


class AgentValidationError(ValueError):
    """Raised by callers that refuse to run code with a failed report."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(str(report))
        self.report = report


def _allowed_list() -> str:
    return ", ".join(sorted(ALLOWED_MODULES))


def is_module_allowed(name: str) -> bool:
    """True when `name` (dotted) is on the allow-list or is a harmless submodule of an entry."""
    if name in _ALWAYS_ALLOWED_IMPORTS:
        return True
    parts = name.split(".")
    if any(part.startswith("_") for part in parts):
        return False
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix in FORBIDDEN_SUBMODULES:
            return False
    return any(".".join(parts[:i]) in ALLOWED_MODULES for i in range(1, len(parts) + 1))


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _attr_chain(node: ast.Attribute) -> tuple[ast.expr, list[ast.Attribute]]:
    """Root expression and the attributes from the root outwards (`a.b.c` -> a, [.b, .c])."""
    chain: list[ast.Attribute] = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        chain.append(current)
        current = current.value
    chain.reverse()
    return current, chain


class _Checker:
    """Walks the tree iteratively (hostile files may nest deeply) and collects issues."""

    def __init__(self) -> None:
        self.issues: list[ValidationIssue] = []
        # local name -> dotted module it is bound to (`import numpy as np` -> np: numpy)
        self.module_aliases: dict[str, str] = {}
        # local name -> (module, attribute) for `from m import x as y`
        self.from_imports: dict[str, tuple[str, str]] = {}

    def add(self, node: ast.AST, rule: str, message: str) -> None:
        self.issues.append(
            ValidationIssue(getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1, rule, message)
        )

    # -- imports -------------------------------------------------------------------------------
    def check_import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not is_module_allowed(alias.name):
                self._forbidden_import(node, alias.name)
                continue
            if alias.asname:
                self.module_aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.module_aliases[top] = top

    def check_import_from(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.add(node, "relative-import", "relative imports are not allowed; an agent is a single file")
            return
        module = node.module or ""
        for alias in node.names:
            if alias.name == "*":
                if not is_module_allowed(module):
                    self._forbidden_import(node, module)
                else:
                    self.add(
                        node, "star-import", f"'from {module} import *' hides names; import them by name"
                    )
                continue
            full = f"{module}.{alias.name}"
            if alias.name.startswith("_") and module not in _ALWAYS_ALLOWED_IMPORTS:
                self.add(node, "private-access", f"'{alias.name}' is private to '{module}'")
            elif alias.name in FORBIDDEN_MODULE_NAMES:
                self._forbidden_import(node, full)
            elif is_module_allowed(module):
                local = alias.asname or alias.name
                self.from_imports[local] = (module, alias.name)
                if is_module_allowed(full):
                    self.module_aliases[local] = full
            elif is_module_allowed(full):
                self.module_aliases[alias.asname or alias.name] = full
            else:
                self._forbidden_import(
                    node, full if any(m.startswith(module + ".") for m in ALLOWED_MODULES) else module
                )

    def _forbidden_import(self, node: ast.AST, name: str) -> None:
        self.add(
            node,
            "forbidden-import",
            f"'{name}' is not allowed; agents may import {_allowed_list()} (and their public submodules)",
        )

    # -- names and attributes ------------------------------------------------------------------
    def check_name(self, node: ast.Name, parent: ast.AST | None) -> None:
        name = node.id
        if name in FORBIDDEN_BUILTINS:
            self.add(node, "forbidden-builtin", f"'{name}' is not allowed: it {FORBIDDEN_BUILTINS[name]}")
        elif _is_dunder(name) and (name not in _ALLOWED_DUNDER_NAMES or not isinstance(node.ctx, ast.Load)):
            self.add(node, "dunder-access", f"'{name}' reaches the interpreter's internals")
        elif name in _ATTR_BUILTINS and not (isinstance(parent, ast.Call) and parent.func is node):
            self.add(
                node,
                "dynamic-attribute",
                f"'{name}' may only be called directly, like {name}(obj, 'name'); use plain attribute access",
            )

    def check_attribute(self, node: ast.Attribute, parent: ast.AST | None) -> None:
        attr = node.attr
        if _is_dunder(attr):
            if attr not in _ALLOWED_DUNDER_ATTRS:
                self.add(node, "dunder-access", f"'.{attr}' reaches the interpreter's internals")
            return
        if attr in FORBIDDEN_ATTRS:
            self.add(node, "frame-access", f"'.{attr}' reaches interpreter frames or code objects")
            return
        if isinstance(parent, ast.Attribute) and parent.value is node:
            return  # the outermost attribute of the chain checks the whole chain once
        root, chain = _attr_chain(node)
        if not (isinstance(root, ast.Name) and root.id in self.module_aliases):
            return
        module = self.module_aliases[root.id]
        for link in chain:
            if link.attr in FORBIDDEN_MODULE_NAMES:
                self.add(
                    link, "forbidden-import", f"'{module}.{link.attr}' reaches a module agents may not use"
                )
                return
            if link.attr.startswith("_"):
                self.add(link, "private-access", f"'.{link.attr}' is private to '{module}'")
                return
        if isinstance(node.ctx, ast.Store | ast.Del):
            self.add(node, "module-mutation", f"changing '{module}' at run time is not allowed")
        elif attr in FILE_FUNCTIONS and len(chain) == 1:
            self.add(
                node,
                "file-access",
                f"'{root.id}.{attr}' reads or writes files; agents get data from the context",
            )

    # -- calls ---------------------------------------------------------------------------------
    def check_call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in _ATTR_BUILTINS:
            name_arg = node.args[1] if len(node.args) >= 2 else None
            if not (isinstance(name_arg, ast.Constant) and isinstance(name_arg.value, str)):
                self.add(
                    node,
                    "dynamic-attribute",
                    f"{func.id}() needs a literal attribute name, like {func.id}(obj, 'name')",
                )
                return
            attr = name_arg.value
            if (_is_dunder(attr) and attr not in _ALLOWED_DUNDER_ATTRS) or attr in FORBIDDEN_ATTRS:
                self.add(
                    node, "dunder-access", f"{func.id}(..., '{attr}') reaches the interpreter's internals"
                )
        elif isinstance(func, ast.Attribute) and func.attr in FILE_METHODS and (node.args or node.keywords):
            self.add(node, "file-access", f"'.{func.attr}(...)' writes files; agents may not write files")

    def check_global(self, node: ast.Global | ast.Nonlocal) -> None:
        for name in node.names:
            if _is_dunder(name):
                self.add(node, "dunder-access", f"'{name}' reaches the interpreter's internals")

    def run(self, tree: ast.Module) -> None:
        stack: list[tuple[ast.AST, ast.AST | None]] = [(tree, None)]
        imports: list[ast.AST] = []
        others: list[tuple[ast.AST, ast.AST | None]] = []
        while stack:
            node, parent = stack.pop()
            if isinstance(node, ast.Import | ast.ImportFrom):
                imports.append(node)
            else:
                others.append((node, parent))
            stack.extend((child, node) for child in ast.iter_child_nodes(node))
        # Imports first (in source order) so aliases are known wherever they are used.
        for node in sorted(imports, key=lambda n: (n.lineno, n.col_offset)):
            if isinstance(node, ast.Import):
                self.check_import(node)
            else:
                self.check_import_from(node)  # type: ignore[arg-type]
        for node, parent in others:
            if isinstance(node, ast.Name):
                self.check_name(node, parent)
            elif isinstance(node, ast.Attribute):
                self.check_attribute(node, parent)
            elif isinstance(node, ast.Call):
                self.check_call(node)
            elif isinstance(node, ast.Global | ast.Nonlocal):
                self.check_global(node)


def _base_kind(base: ast.expr, checker: _Checker) -> AgentKind | None:
    """Which agent base a class base expression names, if any."""
    if isinstance(base, ast.Name) and base.id in checker.from_imports:
        module, name = checker.from_imports[base.id]
        if module == _SDK_MODULE and name in _SDK_BASES:
            return "native"
        if module == _BT_MODULE and name in _BT_BASES:
            return "backtrader"
    if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
        module = checker.module_aliases.get(base.value.id)
        if module == _SDK_MODULE and base.attr in _SDK_BASES:
            return "native"
        if module == _BT_MODULE and base.attr in _BT_BASES:
            return "backtrader"
    return None


def _find_agent_class(
    tree: ast.Module, checker: _Checker
) -> tuple[AgentKind | None, str | None, list[ValidationIssue]]:
    """Exactly one top-level agent class; a user base class between it and Agent is fine."""
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    kinds: dict[str, AgentKind] = {}
    changed = True
    while changed:  # propagate through user-defined intermediate base classes
        changed = False
        for cls in classes:
            if cls.name in kinds:
                continue
            for base in cls.bases:
                kind = _base_kind(base, checker)
                if kind is None and isinstance(base, ast.Name) and base.id in kinds:
                    kind = kinds[base.id]
                if kind is not None:
                    kinds[cls.name] = kind
                    changed = True
                    break
    used_as_base = {
        base.id for cls in classes if cls.name in kinds for base in cls.bases if isinstance(base, ast.Name)
    }
    leaves = [cls for cls in classes if cls.name in kinds and cls.name not in used_as_base]
    if len(leaves) == 1:
        return kinds[leaves[0].name], leaves[0].name, []
    if not leaves:
        issue = ValidationIssue(
            1,
            1,
            "agent-class",
            "no agent class found; define one class deriving from Agent "
            "('from farm_dagster.sdk import Agent') or a backtrader strategy ('class Agent(bt.Strategy)')",
        )
        return None, None, [issue]
    names = ", ".join(cls.name for cls in leaves)
    issues = [
        ValidationIssue(
            cls.lineno,
            cls.col_offset + 1,
            "agent-class",
            f"found {len(leaves)} agent classes ({names}); a file must define exactly one",
        )
        for cls in leaves[1:]
    ]
    return None, None, issues


def validate_agent_code(code: str, filename: str = "agent.py") -> ValidationReport:
    """Check submitted agent source; every issue names its line and rule."""
    size = len(code.encode("utf-8", errors="surrogatepass"))
    if size > MAX_CODE_BYTES:
        issue = ValidationIssue(
            1, 1, "size-limit", f"the file is {size:,} bytes; agents are limited to {MAX_CODE_BYTES:,} bytes"
        )
        return ValidationReport(False, None, None, [issue], filename)
    try:
        tree = ast.parse(code, filename=filename)
    except SyntaxError as exc:
        detail = exc.msg or "invalid syntax"
        issue = ValidationIssue(exc.lineno or 1, exc.offset or 1, "syntax", f"{detail}")
        return ValidationReport(False, None, None, [issue], filename)
    except (ValueError, RecursionError, MemoryError) as exc:
        message = str(exc) if isinstance(exc, ValueError) else "the code is nested too deeply to check"
        return ValidationReport(False, None, None, [ValidationIssue(1, 1, "syntax", message)], filename)

    checker = _Checker()
    checker.run(tree)
    kind, class_name, class_issues = _find_agent_class(tree, checker)
    issues = sorted(checker.issues + class_issues, key=lambda i: (i.line, i.col, i.rule))
    ok = not issues
    return ValidationReport(ok, kind, class_name, issues, filename)
