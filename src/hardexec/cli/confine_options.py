"""``hardexec run``'s confinement options → a :class:`~hardexec.confine.Confinement`."""

from __future__ import annotations

import os
import re

from .options import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..confine import Confinement
    from .args import Namespace

__all__ = ["OPTIONS_HELP", "check_paths", "confinement"]

# option, attribute, metavar, help — one table for args.py's reader and argparse alike
OPTIONS_HELP = (
    ("--fs-ro", "fs_ro", "PATH", "Landlock: PATH may be read (files, directory listings)"),
    ("--fs-rx", "fs_rx", "PATH", "Landlock: PATH may be read and executed"),
    (
        "--fs-rw",
        "fs_rw",
        "PATH",
        "Landlock: PATH may be read and written (not executed, no device nodes made)",
    ),
    ("--fs-rwx", "fs_rwx", "PATH", "Landlock: anything beneath PATH"),
    (
        "--tcp-bind",
        "tcp_bind",
        "PORTS",
        "Landlock: TCP ports it may bind (comma-separated; either list restricts both)",
    ),
    ("--tcp-connect", "tcp_connect", "PORTS", "Landlock: TCP ports it may connect to"),
    ("--syscalls", "syscalls", "default", "seccomp: hardexec's default deny-list"),
    (
        "--syscalls-allow",
        "syscalls_allow",
        "LIST",
        "seccomp allow-list: names and @groups (comma-separated), and @default; others get "
        "ENOSYS; with sendmsg allowed, what is refused is counted",
    ),
    (
        "--syscalls-deny",
        "syscalls_deny",
        "LIST",
        "seccomp: refuse these (NAME[:EPERM|:ENOSYS|...|:kill], @groups)",
    ),
    ("--net", "net", "none", "a network namespace with only a loopback"),
    ("--hostname", "hostname", "NAME", "host name in a new uts namespace (implies --uts-ns)"),
    ("--umask", "umask", "MODE", "the program's umask (octal, e.g. 077)"),
)
FLAGS_HELP = (
    (
        "--no-fs-deps",
        "no_fs_deps",
        "Landlock: do not allow what the program needs to start (its file, loader, libraries)",
    ),
    ("--pid-ns", "pid_ns", "a pid namespace: the program's whole tree ends with it"),
    ("--ipc-ns", "ipc_ns", "a new IPC namespace"),
    ("--uts-ns", "uts_ns", "a new uts namespace (host name)"),
)
_FIELD_OPTIONS = (
    (r"syscalls\.allow\[\d+\]", "--syscalls-allow"),
    (r"syscalls\.deny\[\d+\]", "--syscalls-deny"),
    (r"confinement\.hostname", "--hostname"),
    (r"confinement\.umask", "--umask"),
)


def _items(values: list[str], option: str) -> list[str]:
    items = [item for value in values for item in value.split(",")]
    if "" in items:
        fail(f"{option}: {','.join(values)!r} has an empty item")
    return items


def _ports(values: list[str], option: str) -> list[int]:
    ports = []
    for item in _items(values, option):
        if not (item.isascii() and item.isdigit()) or int(item) > 65535:
            fail(f"{option}: {item!r} is not a TCP port (0..65535)")
        ports.append(int(item))
    return ports


def check_paths(c: Confinement | None, typed: Confinement | None = None, source: str = "") -> None:
    """Exit 125 naming the option (or the file and key) when a rule's path does not exist:
    before anything runs, in the user's words (the stage would refuse it too, as
    "landlock_path ... rule N"). ``typed``: the options' own confinement; ``source``: where
    the rest came from."""
    own = set(typed.fs) if typed is not None else set()
    for index, rule in enumerate(c.fs if c is not None else ()):
        if not os.path.exists(rule.path):
            where = (
                f"--fs-{rule.access}"
                if rule in own or not source
                else (f"{source}: confinement.fs[{index}].path")
            )
            fail(f"{where}: {rule.path!r}: No such file or directory")


def confinement(ns: Namespace, *, base_has_rules: bool = False) -> Confinement | None:
    """The confinement the options ask for, or None; exits 125 naming the option on a mistake.

    ``base_has_rules``: a profile or policy file under the options gives path rules (which
    ``--no-fs-deps`` may then apply to).
    """
    from ..confine import Confinement, PathRule, SyscallFilter
    from ..errors import PolicyError

    rules = []
    for access in ("ro", "rx", "rw", "rwx"):
        for path in getattr(ns, f"fs_{access}"):
            try:
                rules.append(PathRule(path, access))
            except PolicyError as err:
                fail(f"--fs-{access}: {str(err).partition(': ')[2]}")
    if ns.no_fs_deps and not rules and not base_has_rules:
        fail("--no-fs-deps: no --fs-* rule is given (it turns off their automatic dependencies)")
    if ns.syscalls not in (None, "default"):
        fail(f"--syscalls: {ns.syscalls!r}: the only list is 'default' (see --syscalls-deny)")
    if ns.net not in (None, "none"):
        fail(f"--net: {ns.net!r}: only 'none' (a namespace with only a loopback) is offered")
    namespaces = [
        name
        for name, on in (
            ("net", ns.net == "none"),
            ("pid", ns.pid_ns),
            ("ipc", ns.ipc_ns),
            ("uts", ns.uts_ns or ns.hostname is not None),
        )
        if on
    ]
    umask = None
    if ns.umask is not None:
        if not re.fullmatch(r"[0-7]{1,4}", ns.umask) or int(ns.umask, 8) > 0o777:
            fail(f"--umask: {ns.umask!r} is not an octal mode 000..777")
        umask = int(ns.umask, 8)
    try:
        syscalls = None
        if ns.syscalls or ns.syscalls_allow or ns.syscalls_deny:
            allow = _items(ns.syscalls_allow, "--syscalls-allow") if ns.syscalls_allow else None
            syscalls = SyscallFilter(
                allow=allow,
                deny=_items(ns.syscalls_deny, "--syscalls-deny"),
                default=ns.syscalls == "default",
            )
        c = Confinement(
            fs=rules,
            fs_dependencies=not ns.no_fs_deps,
            tcp_bind=_ports(ns.tcp_bind, "--tcp-bind"),
            tcp_connect=_ports(ns.tcp_connect, "--tcp-connect"),
            syscalls=syscalls,
            namespaces=namespaces,
            hostname=ns.hostname,
            umask=umask,
            best_effort=ns.best_effort,
        )
    except PolicyError as err:
        message = str(err)
        for pattern, option in _FIELD_OPTIONS:
            message = re.sub(pattern, option, message)
        fail(message)
    return None if c.is_empty() else c
