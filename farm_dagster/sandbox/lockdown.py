"""Lock a sandboxed child down before the first line of agent code runs.

Called by the child bootstrap (farm_dagster.sandbox.child) after the trusted modules are imported.
Layers, each holding even if the one above it is bypassed:

1. an audit hook (sys.addaudithook) turning network, processes, native code, file writes and
   imports outside the allow-list into clear Python errors: the readable layer, not the wall;
2. Landlock (kernel): the process may only *read* the stdlib, the packages it runs on (those
   loaded at lockdown, the ones agents may import and their dependencies), farm_dagster's own
   package and system libraries -- not site-packages as a whole (data packages hold real prices),
   not the repository, the data home or /tmp; no write, no TCP, no signals or abstract sockets
   outside the sandbox;
3. seccomp (kernel): no exec, no new processes, no sockets, no ptrace/namespaces/bpf/io_uring;
4. a network namespace of its own (no interface but a down loopback);
5. an unprivileged uid of its own when started as root, no new privileges, not dumpable;
6. rlimits: CPU seconds, address space, file size, open files, processes, no core dumps.

Every layer is best effort where the kernel may refuse it; the LockdownReport says which held.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import errno
import importlib
import importlib.machinery
import math
import os
import platform
import re
import resource
import stat
import struct
import sys
import sysconfig
import tempfile
from _thread import get_ident
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from farm_dagster.sandbox.limits import SandboxLimits

SANDBOX_UID_BASE = 2_000_000_000  # + pid: a uid no account uses, unique per live sandbox
NOGROUP_GID = 65534
_AS_HEADROOM = 4096 * 1024 * 1024

# Stdlib modules the allowed libraries import lazily at run time (e.g. datetime.strptime).
RUNTIME_HELPER_MODULES = frozenset(
    {
        "_strptime",
        "encodings",
        "unicodedata",
        "decimal",
        "_decimal",
        "_pydecimal",
        "fractions",
        "numbers",
        "random",
        "bisect",
        "heapq",
        "copy",
        "json",
        "zoneinfo",
        "_zoneinfo",
        "tzdata",
        "calendar",
        "locale",
        "string",
        "textwrap",
        "pprint",
        "reprlib",
        "csv",
        "statistics",
        "dateutil",
        "pytz",
        "six",
    }
)


@dataclass
class LockdownReport:
    """What the lockdown achieved; sent to the parent so a run records how it was contained."""

    uid: int
    gid: int
    dropped_privileges: bool
    network_isolated: bool
    network_detail: str
    landlock: bool
    landlock_detail: str
    seccomp: bool
    seccomp_detail: str
    no_new_privs: bool
    audit_hook: bool
    workdir: str
    threads: int
    rlimits: dict[str, tuple[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    readable: list[str] = field(default_factory=list)  # trees and files the process may read
    listable: list[str] = field(default_factory=list)  # directories whose names it may list

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SandboxViolation(PermissionError):
    """An operation the sandbox forbids; the message says what and why in plain words."""


class SandboxImportDenied(ModuleNotFoundError):
    """An import outside the allow-list (a ModuleNotFoundError so optional-import fallbacks work)."""


# ---------------------------------------------------------------------------------------- libc
_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


def _errno_text() -> str:
    code = ctypes.get_errno()
    return f"{errno.errorcode.get(code, code)}: {os.strerror(code)}"


# -------------------------------------------------------------------------------------- paths
# System files a locked-down interpreter still touches: shared libraries its extension modules
# load late (polars' runtime, pandas' C code), the C.UTF-8 locale, time zones, the null devices.
# Deliberately not /usr/lib or /usr/local/lib: they hold whole Python installations of their own.
_SYSTEM_READ_PATHS = (
    "/usr/lib64",
    "/lib64",
    "/usr/lib/locale",
    "/usr/share/zoneinfo",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
)
# Entries of the standard library directory that are other packages' installations, not the stdlib.
_NOT_STDLIB = frozenset({"site-packages", "dist-packages"})
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class PathSet:
    """Files and directory trees; membership walks up a path's parents instead of scanning roots
    (the audit hook asks on every open and import, so this stays O(depth))."""

    def __init__(self, roots: Iterable[str]) -> None:
        self.roots = frozenset(roots)

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        while True:
            if path in self.roots:
                return True
            parent = os.path.dirname(path)
            if parent == path:
                return False
            path = parent


@dataclass(frozen=True)
class ReadRules:
    """What the sandbox may read, built from what the agent process needs rather than from where
    Python happens to be installed: site-packages also holds data packages (bokeh_sampledata's
    stock prices, arch's and skfolio's data sets) that would be the future for a backtest.

    ``code``: package and stdlib trees, readable; ``system``: libraries, locale, time zones,
    devices, readable; ``listable``: import path directories whose *names* may be listed (so a
    late import can look a module up), without reading any file in them.
    """

    code: tuple[str, ...]
    system: tuple[str, ...]
    listable: tuple[str, ...]

    @property
    def readable(self) -> tuple[str, ...]:
        return self.code + self.system


def _real(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.fspath(path))


def _stdlib_entries() -> tuple[str, list[str]]:
    """The stdlib directory and its entries, less the site-packages trees it may contain."""
    stdlib = _real(sysconfig.get_path("stdlib"))
    entries = [os.path.join(stdlib, name) for name in os.listdir(stdlib) if name not in _NOT_STDLIB]
    entries += [_real(p) for p in sys.path if p.endswith(".zip") and os.path.isfile(p)]
    return stdlib, entries


def _module_locations(module: Any) -> list[str]:
    """Where a top-level module lives: its package directory, or its single file."""
    spec = getattr(module, "__spec__", None)
    locations = list(getattr(spec, "submodule_search_locations", None) or getattr(module, "__path__", []))
    if not locations:
        origin = getattr(spec, "origin", None) or getattr(module, "__file__", None)
        locations = [origin] if isinstance(origin, str) else []
    return [_real(p) for p in locations if isinstance(p, str) and os.path.isabs(p)]


def _spec_locations(name: str) -> list[str]:
    """Locations of a top-level module that is not imported yet (finding its spec imports nothing)."""
    try:
        spec = importlib.machinery.PathFinder.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin not in (None, "built-in", "frozen"):
        locations = [spec.origin]
    return [_real(p) for p in locations if isinstance(p, str) and os.path.isabs(p)]


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def _distribution_closure(tops: Iterable[str], site_dirs: Iterable[str]) -> list[str]:
    """Top-level files and directories of the distributions behind ``tops`` and of everything they
    require to run (extras left out): e.g. pandas -> numpy, dateutil, pytz, tzdata, six, and
    polars -> its native runtime package, which polars imports only when it is itself imported.

    The wheel's own ``.dist-info`` (METADATA, RECORD) is read directly rather than through
    importlib.metadata: that module imports email and socket into the process about to be locked
    (loaded modules are importable by agents without an audit event) and costs ~30 ms a start.
    """
    dist_infos: dict[str, tuple[str, str]] = {}
    for site in site_dirs:
        for entry in os.listdir(site):
            if entry.endswith(".dist-info"):
                name = entry.removesuffix(".dist-info").rpartition("-")[0]
                dist_infos.setdefault(_normalized(name), (site, os.path.join(site, entry)))
    locations: list[str] = []
    seen: set[str] = set()
    todo = [_normalized(top) for top in tops]
    while todo:
        name = todo.pop()
        if name in seen or name not in dist_infos:
            continue
        seen.add(name)
        site, info = dist_infos[name]
        headers = _read(os.path.join(info, "METADATA")).partition("\n\n")[0]
        for line in headers.splitlines():
            requirement = line.removeprefix("Requires-Dist:")
            match = _REQUIREMENT_NAME.match(requirement.strip())
            if requirement != line and match and "extra" not in requirement.partition(";")[2]:
                todo.append(_normalized(match.group(0)))
        record = _read(os.path.join(info, "RECORD"))
        firsts = {line.partition(",")[0].split("/", 1)[0] for line in record.splitlines()}
        for first in firsts - {"", "..", "__pycache__"}:
            path = os.path.join(site, first)
            if os.path.exists(path):
                locations.append(_real(path))
    return locations


def sandbox_read_rules(allowed_modules: Iterable[str]) -> ReadRules:
    """The read allow-list of a sandboxed process, built at lockdown time from: the stdlib; the
    top-level package of every module already loaded (the host, numpy, backtrader...); the
    packages agents may import (``allowed_modules``) and their run-time dependencies; system
    libraries. Never a directory on the import path itself (site-packages, the repository root),
    so its other entries (data packages, the data home, the tests) stay unreadable."""
    stdlib, stdlib_entries = _stdlib_entries()
    stdlib_tree = PathSet([stdlib])
    modules: list[str] = []
    for name in list(sys.modules):
        if "." not in name and name != "__main__":
            modules += _module_locations(sys.modules[name])
    third_party = []
    for name in sorted({m.partition(".")[0] for m in allowed_modules}):
        found = _spec_locations(name) if name not in sys.modules else _module_locations(sys.modules[name])
        modules += found
        if any(p not in stdlib_tree for p in found):
            third_party.append(name)
    entries = {_real(p) for p in sys.path if p and os.path.isdir(p)}
    site_dirs = {_real(sysconfig.get_path(key)) for key in ("purelib", "platlib")} & entries
    modules += _distribution_closure(third_party, sorted(site_dirs))
    # A location that holds an import path entry would open all of it (say, a module whose
    # "package" is the repository root): refuse it, whatever put it there.
    holding_entries = {a for e in entries for a in (e, *map(str, Path(e).parents))}
    code = set(stdlib_entries)
    code.update(p for p in modules if p not in holding_entries and os.path.exists(p))
    listable = {stdlib} | site_dirs
    system = {_real(p) for p in _system_paths() if os.path.exists(p)}
    return ReadRules(tuple(sorted(code)), tuple(sorted(system)), tuple(sorted(listable)))


def _system_paths() -> list[str]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    paths = [f"/usr/lib/{multiarch}", f"/lib/{multiarch}", *_SYSTEM_READ_PATHS]
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if libdir and soname:  # a shared libpython, but not the directory holding the stdlib
        paths.append(os.path.join(libdir, soname))
    return paths


def _make_workdir() -> str:
    """cwd = an empty directory nobody can write to: one shared per uid, or a fresh one removed
    at once (a removed cwd stays empty forever, but os.getcwd() then fails, hence the shared one)."""
    shared = os.path.join(tempfile.gettempdir(), f"farm-sandbox-empty-{os.geteuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(shared, 0o555)
    try:
        info = os.lstat(shared)
        if (
            stat.S_ISDIR(info.st_mode)
            and info.st_uid == os.geteuid()
            and not info.st_mode & 0o222
            and not os.listdir(shared)
        ):
            os.chdir(shared)
            return shared
    except OSError:
        pass
    workdir = tempfile.mkdtemp(prefix="farm-sandbox-")
    os.chmod(workdir, 0o555)
    os.chdir(workdir)
    with contextlib.suppress(OSError):
        os.rmdir(workdir)
    return workdir


def _readable_by_anyone(path: str) -> bool:
    """Can an unprivileged uid reach and read ``path``? (pyenv under /root: it cannot.)"""
    current = Path(path)
    try:
        if not current.stat().st_mode & stat.S_IROTH:
            return False
        for part in (current, *current.parents):
            if not part.stat().st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------------ rlimits
def _set_rlimits(limits: SandboxLimits, report: LockdownReport) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used_cpu = math.ceil(usage.ru_utime + usage.ru_stime)
    cpu = used_cpu + max(1, int(limits.cpu_seconds))  # the agent's budget, not the imports'
    memory = limits.memory_mb * 1024 * 1024
    wanted = {
        "CPU": (resource.RLIMIT_CPU, cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL 1 s later
        # DATA counts heap and private writable mappings (what a memory bomb grows); AS only backs
        # it up, with room for library text and allocator reservations (polars maps ~700 MB).
        "DATA": (resource.RLIMIT_DATA, memory, memory),
        "AS": (resource.RLIMIT_AS, memory + _AS_HEADROOM, memory + _AS_HEADROOM),
        "FSIZE": (resource.RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
        "NOFILE": (resource.RLIMIT_NOFILE, limits.max_open_files, limits.max_open_files),
        "CORE": (resource.RLIMIT_CORE, 0, 0),
        "MEMLOCK": (resource.RLIMIT_MEMLOCK, 0, 0),
        "MSGQUEUE": (resource.RLIMIT_MSGQUEUE, 0, 0),
    }
    for name, (which, soft, hard) in wanted.items():
        try:
            resource.setrlimit(which, (soft, hard))
            report.rlimits[name] = (soft, hard)
        except (ValueError, OSError) as exc:
            report.notes.append(f"RLIMIT_{name} not set: {exc}")


def _set_nproc(limits: SandboxLimits, report: LockdownReport) -> None:
    """Processes + threads of the (sandbox-own) uid: what runs now, plus the configured headroom."""
    nproc = report.threads + max(0, limits.max_processes) + max(0, limits.max_threads)
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        report.rlimits["NPROC"] = (nproc, nproc)
    except (ValueError, OSError) as exc:
        report.notes.append(f"RLIMIT_NPROC not set: {exc}")


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


# ---------------------------------------------------------------------------- network + users
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def _isolate_network(report: LockdownReport, is_root: bool) -> None:
    libc = _c()
    flags = CLONE_NEWNET if is_root else CLONE_NEWUSER | CLONE_NEWNET
    if libc.unshare(ctypes.c_int(flags)) == 0:
        report.network_isolated = True
        report.network_detail = "new network namespace" + ("" if is_root else " (in a new user namespace)")
    else:
        report.network_detail = f"unshare refused ({_errno_text()}); relying on seccomp and Landlock"


def _drop_privileges(limits: SandboxLimits, report: LockdownReport) -> None:
    uid = limits.sandbox_uid if limits.sandbox_uid is not None else SANDBOX_UID_BASE + os.getpid()
    try:
        os.setgroups([])
        os.setresgid(NOGROUP_GID, NOGROUP_GID, NOGROUP_GID)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        report.notes.append(f"could not drop root: {exc}")
        return
    report.dropped_privileges = True
    report.uid, report.gid = os.getuid(), os.getgid()


_CAPSET_SYSCALL = {"x86_64": 126, "aarch64": 91}
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_CAPBSET_DROP = 24


def _drop_capabilities(report: LockdownReport) -> None:
    """Stay uid 0 but without any capability: used when the interpreter is unreadable to others."""
    libc = _c()
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EINVAL:
            break  # past the last capability the kernel knows
    arch = platform.machine()
    if arch not in _CAPSET_SYSCALL:
        report.notes.append(f"capabilities kept: no capset number for {arch}")
        return
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2 words, all empty
    if libc.syscall(_CAPSET_SYSCALL[arch], header, data) != 0:
        report.notes.append(f"capabilities kept: capset refused ({_errno_text()})")
        return
    report.dropped_privileges = True
    report.notes.append(
        "uid 0 kept (the interpreter is not readable by other users), all capabilities dropped"
    )


PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38


def _no_new_privs(report: LockdownReport) -> None:
    libc = _c()
    report.no_new_privs = libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        report.notes.append(f"PR_SET_DUMPABLE refused ({_errno_text()})")


# ------------------------------------------------------------------------------------ Landlock
_SYS_LANDLOCK_CREATE, _SYS_LANDLOCK_ADD, _SYS_LANDLOCK_RESTRICT = 444, 445, 446
_LL_EXECUTE, _LL_WRITE_FILE, _LL_READ_FILE, _LL_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_LL_FS_V1 = (1 << 13) - 1
_LL_REFER, _LL_TRUNCATE, _LL_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_LL_NET_BIND_TCP, _LL_NET_CONNECT_TCP = 1 << 0, 1 << 1
_LL_SCOPE_ABSTRACT_UNIX, _LL_SCOPE_SIGNAL = 1 << 0, 1 << 1


def _landlock_rules(rules: ReadRules) -> list[tuple[str, int]]:
    """(path, access) pairs: trees read in full, import directories listed by name only."""
    pairs = []
    for path in rules.readable:
        access = _LL_READ_FILE | (_LL_READ_DIR if os.path.isdir(path) else 0)
        if path in ("/dev/null", "/dev/zero"):
            access |= _LL_WRITE_FILE
        pairs.append((path, access))
    pairs += [(path, _LL_READ_DIR) for path in rules.listable]
    return pairs


def _landlock(rules: ReadRules, report: LockdownReport) -> None:
    libc = _c()
    abi = libc.syscall(_SYS_LANDLOCK_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        report.landlock_detail = f"not available ({_errno_text()})"
        return
    fs = _LL_FS_V1 | (_LL_REFER if abi >= 2 else 0) | (_LL_TRUNCATE if abi >= 3 else 0)
    fs |= _LL_IOCTL_DEV if abi >= 5 else 0
    net = _LL_NET_BIND_TCP | _LL_NET_CONNECT_TCP if abi >= 4 else 0
    scoped = _LL_SCOPE_ABSTRACT_UNIX | _LL_SCOPE_SIGNAL if abi >= 6 else 0
    if abi >= 6:
        attr = struct.pack("=QQQ", fs, net, scoped)
    elif abi >= 4:
        attr = struct.pack("=QQ", fs, net)
    else:
        attr = struct.pack("=Q", fs)
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = libc.syscall(_SYS_LANDLOCK_CREATE, buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        report.landlock_detail = f"ruleset refused ({_errno_text()})"
        return
    try:
        for path, access in _landlock_rules(rules):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd), 12)
                if libc.syscall(
                    _SYS_LANDLOCK_ADD, ctypes.c_int(ruleset), ctypes.c_int(1), rule, ctypes.c_uint32(0)
                ):
                    report.notes.append(f"Landlock rule for {path} refused ({_errno_text()})")
            finally:
                os.close(fd)
        if libc.syscall(_SYS_LANDLOCK_RESTRICT, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            report.landlock_detail = f"restrict_self refused ({_errno_text()})"
            return
    finally:
        os.close(ruleset)
    report.landlock = True
    parts = ["read-only filesystem allow-list"]
    if net:
        parts.append("no TCP bind/connect")
    if scoped:
        parts.append("no signals or abstract sockets outside the sandbox")
    report.landlock_detail = f"ABI {abi}: " + ", ".join(parts)


# ------------------------------------------------------------------------------------- seccomp
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "socket": 41, "socketpair": 53, "bind": 49, "listen": 50, "accept": 43, "connect": 42, "accept4": 288,
        "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "clone3": 435, "execveat": 322, "ptrace": 101,
        "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
        "process_vm_readv": 310, "process_vm_writev": 311, "bpf": 321, "userfaultfd": 323,
        "perf_event_open": 298, "keyctl": 250, "add_key": 248, "request_key": 249, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 246, "kexec_file_load": 320,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "pidfd_getfd": 438, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "personality": 135, "acct": 163, "swapon": 167, "swapoff": 168, "reboot": 169,
        "quotactl": 179, "name_to_handle_at": 303, "open_by_handle_at": 304,
    },
    "aarch64": {
        "socket": 198, "socketpair": 199, "bind": 200, "listen": 201, "accept": 202, "connect": 203,
        "accept4": 242, "clone": 220, "execve": 221, "clone3": 435, "execveat": 281, "ptrace": 117,
        "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
        "process_vm_readv": 270, "process_vm_writev": 271, "bpf": 280, "userfaultfd": 282,
        "perf_event_open": 241, "keyctl": 219, "add_key": 217, "request_key": 218, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 104, "kexec_file_load": 294,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "pidfd_getfd": 438, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "personality": 92, "acct": 89, "swapon": 224, "swapoff": 225, "reboot": 142,
        "quotactl": 60, "name_to_handle_at": 264, "open_by_handle_at": 265,
    },
}  # fmt: skip
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
_PROCESS_SYSCALLS = frozenset({"fork", "vfork"})
_CLONE_THREAD = 0x00010000
_RET_KILL_PROCESS, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06


def _seccomp_program(arch: str, allow_processes: bool) -> list[tuple[int, int, int, int]]:
    """BPF: wrong arch -> kill; denied syscalls -> EPERM; clone3 -> ENOSYS (libc falls back to
    clone, whose flags we can inspect); clone without CLONE_THREAD (a new process) -> EPERM."""
    table = _SYSCALLS[arch]
    denied = [nr for name, nr in table.items() if name not in ("clone", "clone3")]
    if allow_processes:
        denied = [table[n] for n in table if n not in ("clone", "clone3") and n not in _PROCESS_SYSCALLS]
    # (op, jt_label, jf_label, k) with labels resolved below; None means "next instruction".
    prog: list[tuple[int, Any, Any, int]] = [
        (_LD_W_ABS, None, None, 4),
        (_JEQ, None, "kill", _AUDIT_ARCH[arch]),
        (_LD_W_ABS, None, None, 0),
    ]
    if arch == "x86_64":
        prog.append((_JGE, "eperm", None, 0x40000000))  # the x32 ABI would dodge the table
    prog += [(_JEQ, "eperm", None, nr) for nr in denied]
    prog.append((_JEQ, "enosys", None, table["clone3"]))
    if not allow_processes:
        prog.append((_JEQ, "clone", None, table["clone"]))
    prog.append((_RET, None, None, _RET_ALLOW))
    labels = {}
    tail = [
        ("clone", (_LD_W_ABS, None, None, 16)),  # args[0] low word: the clone flags
        (None, (_JSET, "allow", "eperm", _CLONE_THREAD)),
        ("allow", (_RET, None, None, _RET_ALLOW)),
        ("eperm", (_RET, None, None, _RET_ERRNO | errno.EPERM)),
        ("enosys", (_RET, None, None, _RET_ERRNO | errno.ENOSYS)),
        ("kill", (_RET, None, None, _RET_KILL_PROCESS)),
    ]
    for label, ins in tail:
        if label:
            labels[label] = len(prog)
        prog.append(ins)
    out = []
    for i, (op, jt, jf, k) in enumerate(prog):
        jt_off = 0 if jt is None else labels[jt] - i - 1
        jf_off = 0 if jf is None else labels[jf] - i - 1
        if not (0 <= jt_off < 256 and 0 <= jf_off < 256):
            raise ValueError("seccomp program too long for BPF jumps")
        out.append((op, jt_off, jf_off, k))
    return out


def _seccomp(allow_processes: bool, report: LockdownReport) -> None:
    arch = platform.machine()
    if arch not in _SYSCALLS:
        report.seccomp_detail = f"not installed: no syscall table for {arch}"
        return
    program = _seccomp_program(arch, allow_processes)
    filters = (ctypes.c_uint64 * len(program))()
    for i, (op, jt, jf, k) in enumerate(program):
        filters[i] = struct.unpack("=Q", struct.pack("=HBBI", op, jt, jf, k))[0]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program), ctypes.cast(filters, ctypes.c_void_p))
    seccomp_set_mode_filter, filter_flag_tsync = 1, 1
    rc = _c().syscall(
        _SYS_SECCOMP[arch],
        ctypes.c_uint(seccomp_set_mode_filter),
        ctypes.c_uint(filter_flag_tsync),
        ctypes.byref(fprog),
    )
    if rc != 0:
        report.seccomp_detail = f"refused ({_errno_text() if rc < 0 else f'thread {rc} could not sync'})"
        return
    report.seccomp = True
    what = "exec, sockets, ptrace, namespaces, bpf, io_uring" + ("" if allow_processes else ", new processes")
    report.seccomp_detail = f"all threads: denied {what}"


# --------------------------------------------------------------------------------- audit hook
_ALWAYS_DENIED_PREFIXES = (
    "socket.",
    "subprocess.",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.kill",
    "os.killpg",
    "os.startfile",
    "os.add_dll_directory",
    "os.chdir",
    "os.chmod",
    "os.chown",
    "os.chflags",
    "os.lchflags",
    "os.lchmod",
    "os.lchown",
    "os.link",
    "os.symlink",
    "os.mkdir",
    "os.rmdir",
    "os.remove",
    "os.rename",
    "os.truncate",
    "os.utime",
    "os.setxattr",
    "os.removexattr",
    "pty.",
    "ctypes.",
    "mmap.",
    "resource.",
    "sqlite3.",
    "urllib.",
    "http.",
    "ftplib.",
    "smtplib.",
    "poplib.",
    "imaplib.",
    "nntplib.",
    "telnetlib.",
    "webbrowser.",
    "shutil.",
    "tempfile.",
    "syslog.",
    "fcntl.",
    "signal.pthread_kill",
    "sys._current_frames",
    "sys.addaudithook",
    "sys.remote_exec",
    "cpython.remote_debugger_script",
    "builtins.input",
    "builtins.breakpoint",
    "pdb.",
    "setopencodehook",
    "_winapi.",
    "winreg.",
    "msvcrt.",
)
_FORK_EVENTS = ("os.fork", "os.forkpty")
_READ_PATH_EVENTS = frozenset({"os.listdir", "os.scandir", "os.walk", "os.fwalk", "glob.glob", "glob.glob/2"})
# Events ordinary code of any origin may raise.
_HARMLESS_EVENTS = frozenset({"os.putenv", "os.unsetenv", "os.getxattr", "os.listxattr", "time.sleep"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

_DESCRIBE = {
    "socket.": "network access",
    "subprocess.": "starting programs",
    "os.system": "starting programs",
    "os.exec": "starting programs",
    "os.posix_spawn": "starting programs",
    "os.spawn": "starting programs",
    "os.fork": "starting processes",
    "os.kill": "signalling processes",
    "ctypes.": "native code (ctypes)",
    "sys._getframe": "reading interpreter frames",
    "object.__setattr__": "changing the platform's classes",
    "object.__delattr__": "changing the platform's classes",
    "gc.": "reading interpreter internals (gc)",
    "object.__getattr__": "reading interpreter internals",
    "exec": "running code built at run time",
    "compile": "compiling code at run time",
}


def _describe(event: str) -> str:
    for prefix, words in _DESCRIBE.items():
        if event.startswith(prefix):
            return words
    return f"'{event}'"


class _AuditPolicy:
    """The decision for every audit event raised after the lockdown.

    Three classes of events: always denied (network, processes, native code, file changes),
    checked (open/listdir: the same read allow-list as Landlock's; import: allow-list), and the rest,
    which only trusted code may raise (code whose file lies in the trusted roots). The caller test
    is a tripwire, not a wall (trusted higher-order functions can call untrusted callables): the
    always-denied list and the kernel layers are what must hold.
    """

    def __init__(
        self,
        rules: ReadRules,
        allowed_tops: frozenset[str],
        allow_processes: bool,
    ) -> None:
        self.readable = PathSet(rules.readable)
        self.listable = frozenset(rules.listable)
        self.code_roots = PathSet(rules.code)
        self.allowed_tops = allowed_tops
        self.allow_processes = allow_processes
        self.busy: set[int] = set()
        self.getframe: Callable[[int], Any] = sys._getframe
        self.importlib_dirs = PathSet([os.path.dirname(os.path.realpath(importlib.__file__))])
        entries = {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
        self.path_entries = sorted(entries, key=len, reverse=True)  # most specific first

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        ident = get_ident()
        if ident in self.busy:
            return  # events raised by the policy's own checks
        self.busy.add(ident)
        try:
            try:
                raiser = self.getframe(1)  # the Python code that raised the event
            except ValueError:
                raiser = None  # raised by the interpreter itself, no Python code involved
            self.check(event, args, raiser)
        finally:
            self.busy.discard(ident)

    def deny(self, what: str) -> SandboxViolation:
        return SandboxViolation(f"sandbox: {what} is not allowed for agents")

    def check(self, event: str, args: tuple[Any, ...], raiser: Any) -> None:
        if event == "open":
            self.check_open(args)
        elif event == "import":
            self.check_import(str(args[0]), raiser)
        elif event in _READ_PATH_EVENTS:
            self.check_read_path(args[0] if args else ".", listing=True)
        elif event.startswith(_ALWAYS_DENIED_PREFIXES):
            raise self.deny(_describe(event))
        elif event.startswith(_FORK_EVENTS):
            if not self.allow_processes:
                raise self.deny(_describe(event))
        elif event in _HARMLESS_EVENTS:
            return
        elif event == "exec" and raiser is not None and self.in_importlib(raiser):
            self.check_module_exec(args[0], raiser)  # importlib.import_module raises no "import"
        elif not self.trusted(raiser):
            if event in ("object.__setattr__", "object.__delattr__") and self.own_object(args[0]):
                return
            raise self.deny(_describe(event))

    def check_open(self, args: tuple[Any, ...]) -> None:
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writing = bool(isinstance(flags, int) and flags & _WRITE_FLAGS)
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            writing = True
        if writing:
            raise self.deny(f"writing files ({path!r})")
        if isinstance(path, int):
            return  # an already-open descriptor: nothing new is reached
        self.check_read_path(path)

    def check_read_path(self, path: Any, *, listing: bool = False) -> None:
        """Landlock's rule, readably: files under the read allow-list; names in import directories."""
        if path is None or isinstance(path, int):
            return
        try:
            text = os.fsdecode(path)
            real = os.path.realpath(text)
        except (TypeError, ValueError, OSError):
            raise self.deny(f"reading {path!r}") from None
        if real in self.readable or (listing and real in self.listable):
            return
        raise SandboxViolation(
            f"sandbox: reading {text!r} is not allowed for agents: only the Python standard library "
            "and the packages agents run on are readable (no data files)"
        )

    def check_import(self, module: str, raiser: Any) -> None:
        top = module.partition(".")[0]
        if top not in self.allowed_tops and not self.trusted(self.requester(raiser)):
            raise SandboxImportDenied(f"sandbox: importing '{module}' is not allowed for agents", name=module)

    def check_module_exec(self, code: Any, raiser: Any) -> None:
        """A module body run by importlib: same rule as an import, keyed by the module's file."""
        filename = getattr(code, "co_filename", "")
        top = self.module_top(filename) if isinstance(filename, str) else None
        if top is not None and top not in self.allowed_tops and not self.trusted(self.requester(raiser)):
            raise SandboxImportDenied(f"sandbox: importing '{top}' is not allowed for agents", name=top)

    def module_top(self, filename: str) -> str | None:
        real = os.path.realpath(filename)
        for entry in self.path_entries:
            if real.startswith(entry + os.sep):
                first = real[len(entry) + 1 :].split(os.sep, 1)[0]
                return first.partition(".")[0]
        return None

    def in_importlib(self, frame: Any) -> bool:
        filename = frame.f_code.co_filename
        return filename.startswith("<frozen importlib") or filename in self.importlib_dirs

    def requester(self, frame: Any) -> Any:
        """The first frame outside importlib: who asked for an import (``import_module``'s caller)."""
        while frame is not None and self.in_importlib(frame):
            frame = frame.f_back
        return frame

    def trusted(self, frame: Any) -> bool:
        """Is this frame's code part of the trusted installation?"""
        if frame is None:
            return True
        filename = frame.f_code.co_filename
        return filename.startswith("<frozen ") or filename in self.code_roots

    def own_object(self, obj: Any) -> bool:
        """True for classes/functions the agent defined (their module is not a trusted one)."""
        module_name = getattr(obj, "__module__", None)
        if not isinstance(module_name, str) or module_name == "builtins":
            return False
        module = sys.modules.get(module_name)
        if module is None:
            return True
        origin = getattr(module, "__file__", None)
        return not (isinstance(origin, str) and os.path.realpath(origin) in self.code_roots)


# -------------------------------------------------------------------------------------- entry
def _guarded_import(original: Callable[..., Any], agent_tops: frozenset[str], policy: _AuditPolicy) -> Any:
    """``import os`` in agent code fails although os is loaded (loaded modules raise no audit
    event). A readable layer only: the wall is what os's functions are denied, not the import."""

    def guarded(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        if level == 0 and name.partition(".")[0] not in agent_tops and not policy.trusted(sys._getframe(1)):
            raise SandboxImportDenied(f"sandbox: importing '{name}' is not allowed for agents", name=name)
        return original(name, globals, locals, fromlist, level)

    return guarded


class _UnreadableImportGuard:
    """A meta-path finder making a late import of a package the sandbox may not read a
    ModuleNotFoundError. Why: trusted libraries probe optional dependencies with ``try: import x
    except ImportError`` (pandas tries pyarrow); Landlock's PermissionError would break them."""

    def __init__(self, readable: PathSet) -> None:
        self.readable = readable

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if path is not None:
            return None  # a submodule: it lives in its (readable) parent package
        try:
            later = sys.meta_path[sys.meta_path.index(self) + 1 :]
        except ValueError:
            return None
        for finder in later:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        locations = list(spec.submodule_search_locations or [])
        if isinstance(spec.origin, str) and os.path.isabs(spec.origin):
            locations.append(spec.origin)
        if all(os.path.realpath(p) in self.readable for p in locations):
            return spec
        raise SandboxImportDenied(
            f"sandbox: importing '{name}' is not allowed for agents (its files are not readable here)",
            name=name,
        )


def _install_import_guard(readable: PathSet) -> None:
    """Right before the path finder, after the builtin and frozen importers."""
    finders = sys.meta_path
    at = next((i for i, f in enumerate(finders) if f is importlib.machinery.PathFinder), len(finders))
    finders.insert(at, _UnreadableImportGuard(readable))


LAST_REPORT: LockdownReport | None = None  # what the bootstrap's lock_down achieved in this process


def lock_down(
    limits: SandboxLimits | None = None,
    allowed_modules: Iterable[str] | None = None,
    *,
    audit_hook: bool = True,
) -> LockdownReport:
    """Apply every layer, in an order where each still has the rights it needs.

    ``audit_hook=False`` exists only for tests proving the kernel layers hold on their own.
    """
    global LAST_REPORT
    limits = limits or SandboxLimits()
    if allowed_modules is None:
        from farm_dagster.validation import ALLOWED_MODULES

        allowed_modules = ALLOWED_MODULES
    is_root = os.geteuid() == 0
    report = LockdownReport(
        uid=os.getuid(),
        gid=os.getgid(),
        dropped_privileges=False,
        network_isolated=False,
        network_detail="",
        landlock=False,
        landlock_detail="",
        seccomp=False,
        seccomp_detail="",
        no_new_privs=False,
        audit_hook=False,
        workdir="",
        threads=_thread_count(),
    )
    loaded_tops = {name.partition(".")[0] for name in list(sys.modules)}
    rules = sandbox_read_rules(allowed_modules)
    report.readable, report.listable = list(rules.readable), list(rules.listable)
    allowed_tops = frozenset(
        {m.partition(".")[0] for m in allowed_modules} | loaded_tops | RUNTIME_HELPER_MODULES | {"__future__"}
    )

    report.workdir = _make_workdir()
    _set_rlimits(limits, report)
    _isolate_network(report, is_root)  # before dropping root: unshare(CLONE_NEWNET) needs it
    if is_root and all(_readable_by_anyone(root) for root in rules.code):
        _set_nproc(limits, report)  # counted against the sandbox's own uid once it is dropped
        _drop_privileges(limits, report)
    elif is_root:  # RLIMIT_NPROC does not bind uid 0: seccomp is the wall against new processes
        _drop_capabilities(report)
    else:  # RLIMIT_NPROC would count every process of the user; seccomp denies new processes
        report.notes.append("not started as root: uid unchanged, RLIMIT_NPROC not set")
    _no_new_privs(report)
    _landlock(rules, report)
    _seccomp(limits.max_processes > 0, report)
    _install_import_guard(PathSet(rules.readable))

    os.environ["POLARS_SKIP_CPU_CHECK"] = "1"  # its check shells out to gcc through ctypes
    if audit_hook:
        policy = _AuditPolicy(rules, allowed_tops, limits.max_processes > 0)
        sys.addaudithook(policy)
        agent_tops = frozenset(
            {m.partition(".")[0] for m in allowed_modules} | {"__future__"} | RUNTIME_HELPER_MODULES
        )
        builtins.__import__ = _guarded_import(builtins.__import__, agent_tops, policy)
        report.audit_hook = True
    LAST_REPORT = report
    return report


def probe(channel: Any) -> None:
    """Sandbox self-test entry (``farm_dagster.sandbox.lockdown:probe``) for tests and diagnostics.

    Sends the lockdown report, then runs each received snippet (UTF-8 source, file ``probe.py``)
    in a fresh namespace and answers ``{"ok", "error_type", "message", "result"}`` as JSON, where
    ``result`` is the ``repr`` of the snippet's variable ``result``.
    """
    import json

    report = LAST_REPORT.to_dict() if LAST_REPORT is not None else None
    channel.send(json.dumps({"report": report}).encode())
    while True:
        try:
            code = channel.recv().decode("utf-8")
        except EOFError:
            return
        namespace: dict[str, Any] = {"__name__": "probe"}
        answer: dict[str, Any] = {"ok": True, "error_type": None, "message": None, "result": None}
        try:
            exec(compile(code, "probe.py", "exec"), namespace)  # noqa: S102 - sandboxed child
            answer["result"] = repr(namespace.get("result"))[:2000]
        except BaseException as exc:  # noqa: BLE001 - the probe reports whatever the snippet hit
            answer.update(ok=False, error_type=type(exc).__name__, message=str(exc)[:2000])
        channel.send(json.dumps(answer).encode())
