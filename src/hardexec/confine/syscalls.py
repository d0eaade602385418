"""The native architecture's syscall numbers, read from the kernel headers.

A seccomp filter matches syscall numbers, and the numbers differ between architectures (``read``
is 0 on x86_64, 63 on aarch64) and grow with every kernel. hardexec commits no table of its
own: the source of truth is the ``__NR_*`` macros of the Linux headers.

Where the table comes from, first found wins (:func:`table`):

1. ``_syscalls.json`` next to this module, written at build time by setup.py's ``build_py``
   step from :func:`build_table` (the headers of the machine that built hardexec);
2. at run time, the installed header ``asm/unistd_64.h`` (a plain list of numbers on x86_64,
   and on aarch64 with headers from Linux 6.11 on);
3. at run time, the C preprocessor on ``<asm/unistd.h>`` (:func:`generate`), which also
   resolves the macro layers of older aarch64 headers (``asm-generic/unistd.h``).

Each candidate is checked against a few numbers known per architecture, so that a table for
another architecture (a cross compiler, a stale file) is never used.

Only the standard library is imported at module level, and nothing of hardexec: setup.py loads
this file on its own, before hardexec is installed.
"""

from __future__ import annotations

import functools
import json
import os
import re

__all__ = [
    "AUDIT_ARCH_AARCH64",
    "AUDIT_ARCH_X86_64",
    "KNOWN_ELSEWHERE",
    "PACKAGED",
    "arch_audit",
    "build_table",
    "generate",
    "native_arch",
    "parse_header",
    "table",
]

AUDIT_ARCH_X86_64 = 0xC000003E  # EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
AUDIT_ARCH_AARCH64 = 0xC00000B7  # EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
PACKAGED = "_syscalls.json"  # the build's table, next to this module

_AUDIT = {"x86_64": AUDIT_ARCH_X86_64, "aarch64": AUDIT_ARCH_AARCH64}
_MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}  # other spellings of uname's machine
# Numbers that tell the architectures' tables apart, and that the filter itself relies on
# (the stage's sendmsg and execve, a process's exit_group).
_PROBES = {
    "x86_64": {"read": 0, "sendmsg": 46, "execve": 59, "exit_group": 231},
    "aarch64": {"read": 63, "exit_group": 94, "sendmsg": 211, "execve": 221},
}
_X32_SYSCALL_BIT = 0x40000000  # x32's numbers carry it: not the native ABI
# __NR_ macros that are not syscalls (asm-generic's count and the start of a reserved range).
_NOT_SYSCALLS = frozenset({"syscalls", "arch_specific_syscall"})
# Syscall names are lower case: __NR_SYSCALL_BASE (arm) and the like are not syscalls.
_HEADER_LINE = re.compile(r"^#define[ \t]+__NR_([a-z_][a-z0-9_]*)[ \t]+(\d+)[ \t]*$", re.MULTILINE)
_SYSCALL_MACRO = re.compile(r"__NR_([a-z_][a-z0-9_]*)")
_DEFINE = re.compile(r"^#define[ \t]+(\w+)(?:[ \t]+(.*?))?[ \t]*$", re.MULTILINE)
_TOKEN = re.compile(r"\s*(?:(0[xX][0-9a-fA-F]+|\d+)[uUlL]*|(\w+)|([()+-]))")

# Names that a table hardexec loads may lack and that are still not typos, so that one policy
# serves every host: the legacy calls only x86_64 has (aarch64 uses the generic table, with
# only the *at forms), calls of i386 and other ports that hardexec's groups name, calls newer
# than the headers a table may come from (Linux 6.2 on), and lookup_dcookie (gone in 6.8).
KNOWN_ELSEWHERE = frozenset(
    {
        # x86_64, not aarch64
        "_sysctl", "access", "afs_syscall", "alarm", "arch_prctl", "chmod", "chown", "creat",
        "create_module", "dup2", "epoll_create", "epoll_ctl_old", "epoll_wait",
        "epoll_wait_old", "eventfd", "fork", "futimesat", "get_kernel_syms", "get_thread_area",
        "getdents", "getpgrp", "getpmsg", "inotify_init", "ioperm", "iopl", "lchown", "link",
        "lstat", "mkdir", "mknod", "modify_ldt", "open", "pause", "pipe", "poll", "putpmsg",
        "query_module", "readlink", "rename", "rmdir", "security", "select",
        "set_thread_area", "signalfd", "stat", "symlink", "sysfs", "time", "tuxcall",
        "unlink", "uselib", "ustat", "utime", "utimes", "vfork", "vserver",
        # i386 and other ports
        "pciconfig_iobase", "pciconfig_read", "pciconfig_write", "stime", "umount", "vm86",
        "vm86old",
        # newer than Linux 6.1's headers
        "cachestat", "fchmodat2", "file_getattr", "file_setattr", "futex_requeue",
        "futex_wait", "futex_wake", "getxattrat", "listmount", "listxattrat",
        "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "map_shadow_stack",
        "mseal", "open_tree_attr", "removexattrat", "setxattrat", "statmount", "uprobe",
        "uretprobe",
        # removed
        "lookup_dcookie",
    }
)  # fmt: skip


def native_arch() -> str:
    """This machine's architecture as the kernel names it (``x86_64``, ``aarch64``, …)."""
    machine = os.uname().machine
    return _MACHINES.get(machine, machine)


def arch_audit() -> int:
    """The AUDIT_ARCH_* value of the native architecture, as seccomp_data.arch carries it.

    Raises:
        PolicyError: hardexec has no seccomp support for this architecture.
    """
    arch = native_arch()
    try:
        return _AUDIT[arch]
    except KeyError:
        raise _policy_error(_unsupported(arch)) from None


def generate(cc: str | None = None) -> dict[str, int]:
    """The syscall table of the compiler's target, from ``cc -E -dM -`` on ``<asm/unistd.h>``.

    Args:
        cc: the C compiler command (split like a shell would, so ``"gcc -m64"`` works);
            default ``$CC``, else ``cc``.

    Returns:
        ``{name: number}`` for every ``__NR_name`` macro whose value is an integer, directly
        or through other macros added or subtracted (the generic table's ``__NR3264_*``
        layer); x32 numbers are left out.

    Raises:
        OSError: the compiler could not be run, failed, or printed no syscall numbers.
    """
    return _generate(cc)[1]


def build_table(cc: str | None = None) -> dict[str, object]:
    """The document setup.py writes as ``_syscalls.json``: ``{"arch": …, "syscalls": {…}}``.

    The architecture is the compiler's target, so a cross build is labelled as such (and then
    ignored at run time on a machine of another architecture). Raises OSError like
    :func:`generate`.
    """
    arch, numbers = _generate(cc)
    return {"arch": arch or native_arch(), "syscalls": dict(sorted(numbers.items()))}


def table() -> dict[str, int]:
    """``{name: number}`` for the native architecture (cached; do not change it).

    Raises:
        PolicyError: no table can be had here: an architecture hardexec does not support, or
            hardexec installed without the kernel headers and no headers or compiler now.
    """
    found = _load(native_arch())
    if isinstance(found, str):
        raise _policy_error(found)
    return found


@functools.cache
def _load(arch: str) -> dict[str, int] | str:
    """The table for ``arch``, or why there is none (cached either way: the fallbacks run a
    compiler, which a policy built in a loop should not pay for each time)."""
    if arch not in _AUDIT:
        return _unsupported(arch)
    packaged = os.path.join(os.path.dirname(os.path.abspath(__file__)), PACKAGED)
    found = _from_packaged(arch, packaged) or _from_header(arch) or _from_compiler(arch)
    if found is not None:
        # Headers older than the running kernel lack its newest calls, which a deny rule could
        # then not name: those from 424 on have one number on every architecture.
        found = {**UNIFIED, **found}
    if found is None:
        return (
            f"syscalls: no syscall table for {arch}: hardexec was installed without kernel "
            "headers, and neither asm/unistd_64.h nor a C compiler is found here (install the "
            "Linux headers, e.g. linux-libc-dev or kernel-headers, and a C compiler, then "
            "reinstall hardexec)"
        )
    return found


# Syscalls numbered 424 and up share their number across architectures (asm-generic and
# x86_64 alike since Linux 5.1): kept here for headers older than the kernel (Debian 12's are
# 6.1's). Up to Linux 6.17.
UNIFIED = {
    "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_open": 434, "clone3": 435,
    "close_range": 436, "openat2": 437, "pidfd_getfd": 438, "faccessat2": 439,
    "process_madvise": 440, "epoll_pwait2": 441, "mount_setattr": 442, "quotactl_fd": 443,
    "landlock_create_ruleset": 444, "landlock_add_rule": 445, "landlock_restrict_self": 446,
    "memfd_secret": 447, "process_mrelease": 448, "futex_waitv": 449,
    "set_mempolicy_home_node": 450, "cachestat": 451, "fchmodat2": 452,
    "map_shadow_stack": 453, "futex_wake": 454, "futex_wait": 455, "futex_requeue": 456,
    "statmount": 457, "listmount": 458, "lsm_get_self_attr": 459, "lsm_set_self_attr": 460,
    "lsm_list_modules": 461, "mseal": 462, "setxattrat": 463, "getxattrat": 464,
    "listxattrat": 465, "removexattrat": 466, "open_tree_attr": 467, "file_getattr": 468,
    "file_setattr": 469,
}  # fmt: skip


def _unsupported(arch: str) -> str:
    return (
        f"syscalls: no syscall table for {arch}: hardexec filters syscalls on x86_64 and "
        "aarch64 only"
    )


def _policy_error(message: str) -> Exception:
    # Imported here rather than at the top: setup.py runs this file outside the package.
    from ..errors import PolicyError

    return PolicyError(message)


def _usable(arch: str, numbers: dict[str, int]) -> bool:
    """Whether ``numbers`` is a table of ``arch`` (and not of another architecture)."""
    return all(numbers.get(name) == nr for name, nr in _PROBES[arch].items())


def _from_packaged(arch: str, path: str) -> dict[str, int] | None:
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (OSError, ValueError):
        return None  # absent (a source checkout) or damaged: the headers decide
    if not isinstance(document, dict) or document.get("arch") != arch:
        return None
    numbers = document.get("syscalls")
    if not isinstance(numbers, dict) or not all(
        isinstance(name, str) and type(nr) is int and 0 <= nr < _X32_SYSCALL_BIT
        for name, nr in numbers.items()
    ):
        return None
    return numbers if _usable(arch, numbers) else None


def parse_header(text: str) -> dict[str, int]:
    """``{name: number}`` from the text of a plain header such as ``asm/unistd_64.h``."""
    return {
        name: int(nr)
        for name, nr in _HEADER_LINE.findall(text)
        if name not in _NOT_SYSCALLS and int(nr) < _X32_SYSCALL_BIT
    }


def _from_header(arch: str) -> dict[str, int] | None:
    import sysconfig  # only this fallback needs it

    multiarch = {sysconfig.get_config_var("MULTIARCH"), f"{arch}-linux-gnu"} - {None, ""}
    paths = [f"/usr/include/{m}/asm/unistd_64.h" for m in sorted(multiarch)]
    paths.append("/usr/include/asm/unistd_64.h")  # distributions without multiarch
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                numbers = parse_header(f.read())
        except OSError:
            continue
        if _usable(arch, numbers):
            return numbers
    return None


def _from_compiler(arch: str) -> dict[str, int] | None:
    # "cc" from PATH, not $CC: at run time an environment variable should not choose what the
    # filter's numbers come from (PATH is trusted for the program anyway).
    try:
        target, numbers = _generate("cc")
    except OSError:
        return None
    if target not in (None, arch) or not _usable(arch, numbers):
        return None
    return numbers


def _generate(cc: str | None) -> tuple[str | None, dict[str, int]]:
    """(the compiler's target architecture if recognised, its syscall table)."""
    import shlex
    import subprocess

    command = [*shlex.split(cc or os.environ.get("CC") or "cc"), "-E", "-dM", "-"]
    shown = shlex.join(command)
    try:
        run = subprocess.run(
            command,
            input="#include <asm/unistd.h>\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise OSError(f"{shown}: {exc}") from exc
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines()
        raise OSError(f"{shown} failed: {lines[-1] if lines else f'status {run.returncode}'}")
    macros = {name: body or "" for name, body in _DEFINE.findall(run.stdout)}
    numbers = {}
    for macro, body in macros.items():
        match = _SYSCALL_MACRO.fullmatch(macro)
        if match is None or match[1] in _NOT_SYSCALLS:
            continue
        nr = _evaluate(body, macros, 0)
        if nr is not None and 0 <= nr < _X32_SYSCALL_BIT:
            numbers[match[1]] = nr
    if not numbers:
        raise OSError(f"{shown}: no syscall numbers in <asm/unistd.h>")
    return _target(macros), numbers


def _target(macros: dict[str, str]) -> str | None:
    """The architecture the compiler's predefined macros name, when it is one we know."""
    if "__x86_64__" in macros:
        return "x32" if "__ILP32__" in macros else "x86_64"
    if "__aarch64__" in macros:
        return "aarch64"
    return None


def _evaluate(body: str, macros: dict[str, str], depth: int) -> int | None:
    """The value of a macro body made of integers, other such macros, ``+``, ``-`` and
    parentheses (``(__NR_SYSCALL_BASE + 3)``, ``__NR3264_fcntl``); None for anything else."""
    if depth > 8:  # a definition that refers back to itself
        return None
    tokens: list[tuple[str, str, str]] = []
    pos = 0
    body = body.strip()
    while pos < len(body):
        match = _TOKEN.match(body, pos)
        if match is None:
            return None
        tokens.append(match.groups(""))  # type: ignore[arg-type]
        pos = match.end()
    values: list[int | str] = []
    for number, name, operator in tokens:
        if number:
            values.append(int(number, 0))
        elif name:
            if name not in macros:
                return None
            value = _evaluate(macros[name], macros, depth + 1)
            if value is None:
                return None
            values.append(value)
        else:
            values.append(operator)
    return _sum(values)


def _sum(items: list[int | str]) -> int | None:
    """Evaluate a token list of integers, ``+``, ``-`` (also unary) and parentheses."""
    pos = 0

    def expression() -> int | None:
        nonlocal pos
        total = term()
        while total is not None and pos < len(items) and items[pos] in ("+", "-"):
            sign = 1 if items[pos] == "+" else -1
            pos += 1
            value = term()
            total = None if value is None else total + sign * value
        return total

    def term() -> int | None:
        nonlocal pos
        if pos >= len(items):
            return None
        item = items[pos]
        pos += 1
        if isinstance(item, int):
            return item
        if item == "-":
            value = term()
            return None if value is None else -value
        if item == "(":
            value = expression()
            if pos >= len(items) or items[pos] != ")":
                return None
            pos += 1
            return value
        return None

    value = expression()
    return value if pos == len(items) else None
