"""What a program may touch: the confinement half of a :class:`~hardexec.Policy`.

Frozen and validated at construction like the rest of the policy: a mistake is a
:class:`PolicyError` naming the field and the value. Nothing here reads the kernel; what this
host can enforce is decided when the policy is compiled for a spawn (see ``confine.compile``).
"""

from __future__ import annotations

import os

from .._record import frozen
from ..errors import PolicyError, shown

__all__ = ["ACCESS", "NAMESPACES", "Confinement", "PathRule", "SyscallFilter"]

# Landlock path rules: what each access word allows beneath the path (see confine.landlock).
ACCESS = ("ro", "rx", "rw", "rwx")
"""The access words of a :class:`PathRule`: read; read and execute; read and write (everything
but executing and making device nodes); everything."""
NAMESPACES = ("net", "pid", "ipc", "uts")
"""The namespace kinds :attr:`Confinement.namespaces` may name."""
_MAX_RULES = 4096
_MAX_HOSTNAME = 64  # the kernel's __NEW_UTS_LEN


def _fspath(value: object, name: str) -> str:
    try:
        path = os.fspath(value)  # type: ignore[call-overload]
    except TypeError:
        raise PolicyError(f"{name}: expected a path, got {shown(value)}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        raise PolicyError(f"{name}: the path is empty")
    if "\0" in path:
        raise PolicyError(f"{name}: the path {path!r} contains a NUL byte")
    # Joined, not normalised: "a/../b" through a symlink "a" is not "b" to the kernel, which
    # resolves the rule's path when the stage opens it.
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


@frozen
class PathRule:
    """One Landlock rule: ``access`` beneath ``path`` (a directory) or to it (a file).

    Args:
        path: absolute, or relative to the current directory when the rule is made.
        access: ``"ro"`` (read files, list directories), ``"rx"`` (also execute), ``"rw"``
            (everything but executing and making device nodes: write, create, remove, rename,
            truncate, device ioctls), ``"rwx"`` (everything).
    """

    path: str
    access: str = "ro"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _fspath(self.path, "path_rule.path"))
        if self.access not in ACCESS:
            raise PolicyError(
                f"path_rule.access: {shown(self.access)} is not one of {', '.join(ACCESS)}"
            )


@frozen
class SyscallFilter:
    """A seccomp filter, compiled by hardexec, installed as the stage's last step before exec.

    Args:
        allow: allow-list mode: only these syscalls (names or ``@group``\\s) and hardexec's
            always-allowed ``@default`` group run; any other gets ENOSYS (glibc falls back on
            ENOSYS, as it does for clone3). ``None``: deny-list mode, everything else runs.
        deny: syscalls or groups refused, each optionally with ``:ACTION`` (an errno name such
            as ``EPERM`` — the default — or ``EACCES``, ``ENOSYS``; or ``kill`` to kill the
            process). A deny wins over an allow.
        default: include hardexec's documented default deny-list (``@default-deny``, in the
            spirit of container runtimes' defaults).

    Other ABIs are refused whatever the rules say: i386 ``int 0x80`` on x86_64, and syscall
    numbers with the x32 bit, kill the process.
    """

    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()
    default: bool = False

    def __post_init__(self) -> None:
        for name in ("allow", "deny"):
            value = getattr(self, name)
            if value is None and name == "allow":
                continue
            if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
                raise PolicyError(f"syscalls.{name}: expected a list of names, got {shown(value)}")
            items = tuple(value)
            for index, item in enumerate(items):
                if not isinstance(item, str) or not item:
                    raise PolicyError(
                        f"syscalls.{name}[{index}]: expected a name, got {shown(item)}"
                    )
            object.__setattr__(self, name, items)
        if not isinstance(self.default, bool):
            raise PolicyError(
                f"syscalls.default: expected True or False, got {shown(self.default)}"
            )
        if self.allow is None and not self.deny and not self.default:
            raise PolicyError("syscalls: nothing to filter (give allow, deny or default=True)")
        from .seccomp import check_rules  # the tables load only for a policy that filters

        check_rules(self)


def _ports(value: object, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        value = (value,)
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise PolicyError(f"{name}: expected a list of ports, got {shown(value)}")
    ports = tuple(value)  # type: ignore[arg-type]
    for index, port in enumerate(ports):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise PolicyError(f"{name}[{index}]: expected a TCP port 0..65535, got {shown(port)}")
    return tuple(sorted(set(ports)))


@frozen
class Confinement:
    """Files, syscalls, network and the process tree a program may touch.

    Args:
        fs: Landlock path rules (:class:`PathRule`, or ``(path, access)`` pairs). When any is
            given, everything else on the filesystem is denied.
        fs_dependencies: also allow what the program needs to start: its own file and its ELF
            interpreter (read and execute), the libraries that loads and ``/etc/ld.so.cache``
            (read), and the interpreter of a ``#!`` script with its own dependencies. Not an
            interpreter's own library (Python's standard library, ...): give a rule for it.
            The program's headers choose what is added: for a program you do not trust, turn
            this off and list what it may read.
        tcp_bind: TCP ports the program may bind (Landlock); any other bind is refused.
        tcp_connect: TCP ports the program may connect to (Landlock); any other is refused.
            Either list makes the other's absence mean "none".
        syscalls: a :class:`SyscallFilter`, or None.
        namespaces: new namespaces for the program: ``net`` (only a loopback, up), ``pid``
            (its whole tree ends with it), ``ipc``, ``uts``. As root directly; without
            CAP_SYS_ADMIN through a user namespace mapping the caller's own uid and gid.
        hostname: the host name inside the new ``uts`` namespace.
        umask: the program's file mode creation mask (e.g. ``0o077``).
        best_effort: apply what this kernel can enforce and warn about the rest, instead of
            refusing the run (the default: fail closed).
    """

    fs: tuple[PathRule, ...] = ()
    fs_dependencies: bool = True
    tcp_bind: tuple[int, ...] = ()
    tcp_connect: tuple[int, ...] = ()
    syscalls: SyscallFilter | None = None
    namespaces: tuple[str, ...] = ()
    hostname: str | None = None
    umask: int | None = None
    best_effort: bool = False

    def __post_init__(self) -> None:
        fs = self.fs
        if isinstance(fs, str | bytes | PathRule) or not hasattr(fs, "__iter__"):
            raise PolicyError(f"confinement.fs: expected a list of path rules, got {shown(fs)}")
        rules = []
        for index, rule in enumerate(fs):
            if isinstance(rule, PathRule):
                rules.append(rule)
                continue
            if not isinstance(rule, tuple | list) or len(rule) != 2:
                raise PolicyError(
                    f"confinement.fs[{index}]: expected a PathRule or (path, access), "
                    f"got {shown(rule)}"
                )
            try:
                rules.append(PathRule(*rule))
            except PolicyError as err:
                raise PolicyError(f"confinement.fs[{index}]: {err}") from None
        if len(rules) > _MAX_RULES:
            raise PolicyError(f"confinement.fs: {len(rules)} rules, at most {_MAX_RULES}")
        object.__setattr__(self, "fs", tuple(rules))
        for name in ("fs_dependencies", "best_effort"):
            if not isinstance(getattr(self, name), bool):
                value = shown(getattr(self, name))
                raise PolicyError(f"confinement.{name}: expected True or False, got {value}")
        for name in ("tcp_bind", "tcp_connect"):
            object.__setattr__(self, name, _ports(getattr(self, name), f"confinement.{name}"))
        if self.syscalls is not None and not isinstance(self.syscalls, SyscallFilter):
            raise PolicyError(
                f"confinement.syscalls: expected a SyscallFilter, got {shown(self.syscalls)}"
            )
        self._check_namespaces()
        umask = self.umask
        if umask is not None and (
            isinstance(umask, bool) or not isinstance(umask, int) or not 0 <= umask <= 0o777
        ):
            raise PolicyError(f"confinement.umask: expected 0o000..0o777, got {shown(umask)}")

    def _check_namespaces(self) -> None:
        spaces = self.namespaces
        if isinstance(spaces, str):
            spaces = (spaces,)
        if not hasattr(spaces, "__iter__"):
            raise PolicyError(f"confinement.namespaces: expected a list, got {shown(spaces)}")
        spaces = tuple(spaces)
        for index, name in enumerate(spaces):
            if name not in NAMESPACES:
                raise PolicyError(
                    f"confinement.namespaces[{index}]: {shown(name)} is not one of "
                    + ", ".join(NAMESPACES)
                )
        object.__setattr__(self, "namespaces", tuple(n for n in NAMESPACES if n in spaces))
        host = self.hostname
        if host is None:
            return
        if "uts" not in self.namespaces:
            raise PolicyError("confinement.hostname: needs the uts namespace (namespaces=['uts'])")
        if (
            not isinstance(host, str)
            or not host
            or len(host.encode()) > _MAX_HOSTNAME
            or not host.isascii()
            or not all(c.isalnum() or c in "-." for c in host)
        ):
            raise PolicyError(
                f"confinement.hostname: {shown(host)} is not a host name (1..64 letters, digits, "
                "'-' and '.')"
            )

    @property
    def landlock(self) -> bool:
        """Whether any Landlock rule (path or TCP) is asked for."""
        return bool(self.fs or self.tcp_bind or self.tcp_connect)

    def is_empty(self) -> bool:
        """True when nothing is confined."""
        return not (self.landlock or self.syscalls or self.namespaces or self.umask is not None)
