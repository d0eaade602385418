"""Landlock, the policy side: access rights, the kernel's ABI, and a confinement's ruleset.

What is here only computes: :func:`compile_rules` turns a :class:`Confinement` into a
:class:`Ruleset` whose :meth:`Ruleset.blob` the exec stage reads (``--landlock-fd``, see
``hardexec.plan``) to create, fill and enforce the kernel ruleset. Nothing here enforces
anything, and nothing decides whether a partly enforceable policy may run:
:attr:`Ruleset.unenforced` reports what this kernel cannot restrict and the caller fails closed
unless the confinement asks for best effort.

The rights are those of ``linux/landlock.h``. Each Landlock ABI version adds some; a ruleset may
only *handle* rights its kernel knows, and a handled right is denied everywhere a rule does not
allow it.
"""

from __future__ import annotations

import os
import stat

from .._record import frozen
from ..errors import PolicyError, shown
from .config import ACCESS

TYPE_CHECKING = False
if TYPE_CHECKING:  # collections.abc costs start-up time the CLI would pay for annotations
    from collections.abc import Sequence

    from .config import Confinement

__all__ = [
    "ACCESS_RIGHTS",
    "FS_ALL",
    "FS_EXECUTE",
    "FS_FILE_ONLY",
    "FS_IOCTL_DEV",
    "FS_MAKE_BLOCK",
    "FS_MAKE_CHAR",
    "FS_MAKE_DIR",
    "FS_MAKE_FIFO",
    "FS_MAKE_REG",
    "FS_MAKE_SOCK",
    "FS_MAKE_SYM",
    "FS_READ_DIR",
    "FS_READ_FILE",
    "FS_REFER",
    "FS_REMOVE_DIR",
    "FS_REMOVE_FILE",
    "FS_TRUNCATE",
    "FS_WRITE_FILE",
    "LATEST_ABI",
    "NET_ALL",
    "NET_BIND_TCP",
    "NET_CONNECT_TCP",
    "Ruleset",
    "abi",
    "compile_rules",
    "fs_rights",
    "net_rights",
]

# LANDLOCK_ACCESS_FS_* (ABI 1 unless said).
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2: link or rename a file to another directory
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5: ioctl on character and block devices
FS_ALL = (1 << 16) - 1  # every filesystem right hardexec knows

# LANDLOCK_SCOPE_* (ABI 6).
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1
SCOPE_ALL = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL

# LANDLOCK_ACCESS_NET_* (ABI 4).
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
NET_ALL = NET_BIND_TCP | NET_CONNECT_TCP

# The rights a rule on a non-directory may carry: the kernel refuses (EINVAL) any other there,
# since they are about a directory's entries (listing, creating, removing, renaming).
FS_FILE_ONLY = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

# What each access word of a PathRule allows (config.ACCESS names them).
_RO = FS_READ_FILE | FS_READ_DIR
ACCESS_RIGHTS: dict[str, int] = {
    "ro": _RO,
    "rx": _RO | FS_EXECUTE,
    # Not device nodes: a program that may make one could reach any device through it (a
    # block device's raw disk, /dev/kmem's kind): only rwx, which allows everything.
    "rw": FS_ALL & ~(FS_EXECUTE | FS_MAKE_CHAR | FS_MAKE_BLOCK),
    "rwx": FS_ALL,
}

# ABI 6 (scoping of abstract unix sockets and signals) and 7 (audit logging flags) add no
# filesystem or network right; a newer kernel supports at least what 7 does.
LATEST_ABI = 7
_FS_BY_ABI = {
    1: (1 << 13) - 1,
    2: (1 << 14) - 1,
    3: (1 << 15) - 1,
    4: (1 << 15) - 1,
    5: FS_ALL,
}

# The filesystem rights whose absence makes a path rule mean less than it says, with the words
# a warning uses. FS_REFER is not one: on ABI 1 the kernel always refuses to reparent a file
# (link or rename to another directory), which is stricter than any rule hardexec makes.
_FS_NAMES = ((FS_TRUNCATE, "truncate"), (FS_IOCTL_DEV, "ioctl on devices"))
_NET_NAMES = ((NET_BIND_TCP, "TCP bind"), (NET_CONNECT_TCP, "TCP connect"))
_PORT_WORDS = ((NET_BIND_TCP, "bind"), (NET_CONNECT_TCP, "connect"))
_NO_LANDLOCK = "Landlock (the kernel has none)"

# landlock_create_ruleset's number: 444 in the unified syscall table every architecture
# Python runs on uses (x86_64, i386, aarch64, arm, riscv, ppc, s390x), except alpha. MIPS offsets
# it by its ABI (o32, n32, n64), which the machine name does not tell: there abi() says 0.
_CREATE_RULESET = {"alpha": 554}
_CREATE_RULESET_VERSION = 1 << 0

_abi: int | None = None


def abi() -> int:
    """The running kernel's Landlock ABI version; 0 when it has no Landlock or it is disabled.

    Asked once (``landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)``) and
    cached for the life of the process: the kernel's answer cannot change while it runs. Any
    failure counts as 0 (ENOSYS: not built in; EOPNOTSUPP: not enabled at boot; EPERM: a
    container's seccomp filter refusing the call), so a policy needing Landlock fails closed.
    """
    return _kernel_abi()


def _kernel_abi() -> int:  # compile_rules' parameter named abi hides the public function
    global _abi
    if _abi is None:
        _abi = _query_abi()
    return _abi


def _query_abi() -> int:
    system = os.uname()
    if system.sysname != "Linux":
        return 0
    machine = system.machine
    if machine.startswith("mips"):
        return 0
    # ctypes costs milliseconds to import; only a policy with Landlock rules gets here.
    import ctypes

    syscall = ctypes.CDLL(None, use_errno=True).syscall
    syscall.restype = ctypes.c_long
    # syscall() is variadic: every argument must be passed at its full width, or the kernel
    # reads whatever the upper half of the register held.
    version = syscall(
        ctypes.c_long(_CREATE_RULESET.get(machine, 444)),
        ctypes.c_void_p(None),
        ctypes.c_size_t(0),
        ctypes.c_uint32(_CREATE_RULESET_VERSION),
    )
    return max(int(version), 0)


def fs_rights(version: int) -> int:
    """The filesystem rights Landlock ABI ``version`` can handle (0 for version 0)."""
    if version <= 0:
        return 0
    return _FS_BY_ABI[min(version, 5)]


def net_rights(version: int) -> int:
    """The network rights Landlock ABI ``version`` can handle (TCP bind and connect from 4)."""
    return NET_ALL if version >= 4 else 0


@frozen
class Ruleset:
    """A confinement's Landlock rules, fitted to one kernel ABI; what the exec stage applies.

    Attributes:
        abi: the Landlock ABI the ruleset was made for.
        handled_fs: the filesystem rights the ruleset handles, denied wherever no rule allows
            them: every right the ABI has when any path rule is given, else 0.
        handled_net: the network rights handled: TCP bind and connect when either port list is
            given (the other list's absence then means "none", as ``Confinement`` documents),
            on ABI 4 and later; else 0.
        rules: ``(absolute path, allowed rights)``: the confinement's rules, then the
            dependencies not already named, one per path (several rules on a path are merged),
            masked to ``handled_fs`` and, on a non-directory, to the rights a file can have.
        ports: ``(port, allowed rights)``, ascending.
        unenforced: what was asked but this ABI cannot restrict, in words for a warning
            (``"truncate"``, ``"ioctl on devices"``, ``"TCP bind"``, ``"TCP connect"``,
            ``"Landlock (the kernel has none)"``); empty when everything is enforced.
        access: the access word of each rule (of the union, for merged ones), for messages.
        found: for each rule, whether it was only added as a dependency of the program.
        scoped: the IPC scopes (ABI 6): abstract unix sockets and signals of processes
            outside the program's own Landlock domain are refused; applied with any rule
            where the kernel has them (not a right a rule asks for: never "unenforced").
    """

    abi: int
    handled_fs: int
    handled_net: int
    rules: tuple[tuple[str, int], ...]
    ports: tuple[tuple[int, int], ...]
    unenforced: tuple[str, ...]
    access: tuple[str, ...] = ()
    found: tuple[bool, ...] = ()
    scoped: int = 0

    def is_empty(self) -> bool:
        """True when the ruleset handles nothing (the kernel refuses such a ruleset): nothing
        this kernel can restrict was asked, so the stage must not be given it."""
        return not (self.handled_fs or self.handled_net)

    def blob(self) -> bytes:
        """The stage's ``--landlock-fd`` contents: NUL-terminated entries, exactly

        ``fs=HEX``, ``net=HEX`` (only when ``handled_net`` is not 0), ``scope=HEX`` (only when
        ``scoped`` is not 0), one ``path=HEX:PATH`` per
        rule, one ``port=HEX:PORT`` per port; HEX in lowercase hexadecimal without ``0x``,
        PORT in decimal, PATH the path's bytes (``os.fsencode``). The stage numbers the rules
        path entries first, then port entries, from 0 (see :meth:`describe_rule`).
        """
        parts = [b"fs=%x\0" % self.handled_fs]
        if self.handled_net:
            parts.append(b"net=%x\0" % self.handled_net)
        if self.scoped:
            parts.append(b"scope=%x\0" % self.scoped)
        parts.extend(b"path=%x:%s\0" % (rights, os.fsencode(path)) for path, rights in self.rules)
        parts.extend(b"port=%x:%d\0" % (rights, port) for port, rights in self.ports)
        return b"".join(parts)

    def describe_rule(self, index: int) -> str:
        """Rule ``index`` of :meth:`blob` in words, for a stage error about it:
        ``path rule /srv/data (ro)``, ``TCP port 8080 (bind)``.

        An index the ruleset does not have (a confused report) is described as such rather
        than raising: this runs while an error is being reported.
        """
        if 0 <= index < len(self.rules):
            path = self.rules[index][0]
            word = self.access[index] if index < len(self.access) else ""
            if index < len(self.found) and self.found[index]:
                word += ", needed to start the program"
            return f"path rule {path} ({word})" if word else f"path rule {path}"
        port_index = index - len(self.rules)
        if 0 <= port_index < len(self.ports):
            port, rights = self.ports[port_index]
            kinds = [word for bit, word in _PORT_WORDS if rights & bit]
            return f"TCP port {port} ({', '.join(kinds)})"
        return f"Landlock rule #{index} (not in the ruleset)"


def compile_rules(
    c: Confinement, deps: Sequence[tuple[str, str]] = (), abi: int | None = None
) -> Ruleset | None:
    """``c``'s Landlock rules as a :class:`Ruleset` for Landlock ABI ``abi`` (the kernel's when
    None), or None when ``c`` has no Landlock rule at all.

    Args:
        c: the confinement.
        deps: more ``(path, access word)`` rules, added after ``c.fs``: what the program needs
            to start (``confine.deps.dependencies``, when ``c.fs_dependencies``). Ignored when
            ``c`` has no path rule (the filesystem is then not restricted at all).
        abi: the Landlock ABI to fit the ruleset to; None asks the kernel (:func:`abi`).

    Each path is looked at (``os.stat``, following symlinks as the stage's ``open`` will): a
    rule on anything but a directory keeps only the rights a file can have. A path that cannot
    be looked at keeps its rights; the stage reports it when it fails to open it.

    Raises:
        PolicyError: a dependency with an unknown access word or an unusable path.
    """
    if not c.landlock:
        return None
    version = _kernel_abi() if abi is None else abi
    if version <= 0:
        return Ruleset(version, 0, 0, (), (), (_NO_LANDLOCK,))
    unenforced: list[str] = []
    handled_fs = fs_rights(version) if c.fs else 0
    if c.fs:
        unenforced.extend(word for bit, word in _FS_NAMES if not handled_fs & bit)
    handled_net = 0
    if c.tcp_bind or c.tcp_connect:
        handled_net = net_rights(version)
        unenforced.extend(word for bit, word in _NET_NAMES if not handled_net & bit)
    rules, words, found = _path_rules(c, deps, handled_fs) if handled_fs else ((), (), ())
    ports: dict[int, int] = {}
    if handled_net:
        for port in c.tcp_bind:
            ports[port] = ports.get(port, 0) | NET_BIND_TCP
        for port in c.tcp_connect:
            ports[port] = ports.get(port, 0) | NET_CONNECT_TCP
    return Ruleset(
        abi=version,
        handled_fs=handled_fs,
        handled_net=handled_net,
        rules=rules,
        ports=tuple(sorted(ports.items())),
        unenforced=tuple(unenforced),
        access=words,
        found=found,
        # Not the filesystem, but the same "nothing else": no abstract unix socket or signal
        # reaches a process outside the program's domain (the launcher, the host's daemons).
        scoped=SCOPE_ALL if version >= 6 and (handled_fs or handled_net) else 0,
    )


def _path_rules(
    c: Confinement, deps: Sequence[tuple[str, str]], handled: int
) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...], tuple[bool, ...]]:
    """The merged, masked path rules, their access words and whether each is a dependency."""
    merged: dict[str, int] = {}  # insertion order: the first mention of a path sets its place
    automatic: dict[str, bool] = {}
    for rule in c.fs:
        merged[rule.path] = merged.get(rule.path, 0) | ACCESS_RIGHTS[rule.access]
        automatic[rule.path] = False
    for index, dep in enumerate(deps):
        path, word = _dependency(dep, index)
        merged[path] = merged.get(path, 0) | ACCESS_RIGHTS[word]
        automatic.setdefault(path, True)
    rules, words = [], []
    for path, rights in merged.items():
        # The union of access words: one of them (ro < rx, rw < rwx), or rw and rx together.
        words.append(next((w for w in ACCESS if ACCESS_RIGHTS[w] == rights), "rw+rx"))
        rules.append((path, rights & handled & _mask_for(path)))
    return tuple(rules), tuple(words), tuple(automatic[path] for path in merged)


def _dependency(dep: object, index: int) -> tuple[str, str]:
    if not isinstance(dep, tuple | list) or len(dep) != 2:
        raise PolicyError(f"dependencies[{index}]: expected (path, access), got {shown(dep)}")
    path, word = dep
    if word not in ACCESS_RIGHTS:
        raise PolicyError(f"dependencies[{index}]: {shown(word)} is not one of {', '.join(ACCESS)}")
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str) or not path or "\0" in path:
        raise PolicyError(f"dependencies[{index}]: {shown(path)} is not a usable path")
    return os.path.abspath(path), word


def _mask_for(path: str) -> int:
    """The rights a rule on ``path`` may carry: all on a directory, the file ones elsewhere."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return FS_ALL  # the stage's open of it fails and names the rule
    return FS_ALL if stat.S_ISDIR(mode) else FS_FILE_ONLY
