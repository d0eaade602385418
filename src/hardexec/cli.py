"""The ``hardexec`` command.

``hardexec run [OPTIONS] -- COMMAND [ARG...]`` runs COMMAND under a policy and exits with its
status: the program's own; 128+N when a signal N killed it; 127 when it was not found; 126 when
it could not be executed; 125 when hardexec itself failed (bad option or policy, a required
cgroup that cannot be set up, or an exec stage abort), with one line on stderr naming the option
or the step and errno. A program the OOM killer ended is said to be so.
``hardexec caps`` lists the capabilities; ``hardexec caps --decode HEX`` names a mask's caps.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .caps import Capability, CapSet
from .errors import HardexecError
from .policy import CgroupLimits, CpuMax, Policy, RlimitConfig, SecurityConfig
from .spawn import Popen
from .usage import Usage

EXIT_FAILURE = 125  # hardexec itself failed, as env(1), chroot(1), timeout(1) use it
EXIT_NOEXEC = 126
EXIT_NOTFOUND = 127

# Policy errors name dataclass fields; at the shell the user typed options.
_OPTION_OF_FIELD = {
    "security.keep_caps": "--keep-cap",
    "security.user": "--user",
    "security.group": "--group",
    "security.supplementary_groups": "--groups",
    "security.drop_all_caps": "--drop-all-caps",
    "rlimits.max_open_files": "--nofile",
    "rlimits.max_file_size_bytes": "--fsize",
    "rlimits.address_space": "--as",
    "rlimits.cpu_seconds": "--cpu-seconds",
    "rlimits.max_processes": "--nproc",
    "rlimits.stack": "--stack",
    "cgroups.memory": "--memory",
    "cgroups.pids": "--pids",
    "cgroups.cpu.quota": "--cpus/--cpu-max quota",
    "cgroups.cpu.period": "--cpu-max period",
    "cgroups.cpu": "--cpus",
    "cgroup_parent": "--cgroup-parent",
}
_FIELD = re.compile(
    "|".join(re.escape(name) + r"(?:\[\d+\])?" for name in sorted(_OPTION_OF_FIELD, key=len)[::-1])
)

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(\d+)([KMGT]?)(?:I?B)?", re.IGNORECASE)

# Forwarded to the program so that `kill <hardexec>` reaches it, as sudo and tini do.
_FORWARDED = (
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(EXIT_FAILURE)


def _fail(message: str) -> NoReturn:
    print(f"hardexec: {message}", file=sys.stderr)
    sys.exit(EXIT_FAILURE)


def parse_size(text: str, option: str) -> int:
    """``64M`` → 67108864. Suffixes K, M, G, T are powers of 1024 (``KiB``/``KB`` read alike)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        _fail(f"{option}: {text!r} is not a size (a whole number with an optional K, M, G suffix)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def format_size(size: int) -> str:
    """The shortest exact spelling: 67108864 → ``64M``."""
    for unit in ("T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def _count(text: str, option: str) -> int:
    if not text.strip().isdecimal():
        _fail(f"{option}: {text!r} is not a whole number")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hardexec", description="Run programs with least privilege.")
    parser.add_argument("--version", action="version", version=f"hardexec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run a command under a policy",
        usage="hardexec run [OPTIONS] -- COMMAND [ARG...]",
        description="Run COMMAND with the given privileges and ceilings. Exit status: the "
        "command's own; 128+N if killed by signal N; 127 not found; 126 not executable; "
        "125 hardexec failed.",
    )
    caps = run.add_argument_group("capabilities")
    caps.add_argument(
        "--drop-all-caps",
        action="store_true",
        help="drop every capability (bounding, permitted, effective, inheritable, ambient) "
        "except those kept",
    )
    caps.add_argument(
        "--keep-cap",
        metavar="CAP",
        action="append",
        default=[],
        help="keep CAP (NET_ADMIN, cap_net_admin, 12, …); repeatable; needs --drop-all-caps",
    )
    caps.add_argument(
        "--no-new-privs", action="store_true", help="set-uid bits and file caps grant nothing"
    )
    caps.add_argument(
        "--strict",
        action="store_true",
        help="fail instead of warning when a capability step or the cgroup cannot be applied",
    )
    ids = run.add_argument_group("identity")
    ids.add_argument("--user", metavar="USER", help="run as USER (name or uid)")
    ids.add_argument(
        "--group", metavar="GROUP", help="primary group (default: USER's primary group)"
    )
    ids.add_argument(
        "--groups",
        metavar="G1,G2",
        help="supplementary groups, comma-separated; '' clears them (default: USER's groups)",
    )
    limits = run.add_argument_group(
        "resource limits", "each is a hard ceiling the program cannot raise (SIZE: 10M, 2G, …)"
    )
    limits.add_argument("--nofile", metavar="N", help="open files (RLIMIT_NOFILE)")
    limits.add_argument("--fsize", metavar="SIZE", help="largest file written (RLIMIT_FSIZE)")
    limits.add_argument("--no-core", action="store_true", help="no core dumps (RLIMIT_CORE=0)")
    limits.add_argument("--as", dest="address_space", metavar="SIZE", help="RLIMIT_AS")
    limits.add_argument("--cpu-seconds", metavar="N", help="CPU seconds, then killed")
    limits.add_argument("--nproc", metavar="N", help="processes of the user (RLIMIT_NPROC)")
    limits.add_argument("--stack", metavar="SIZE", help="stack size (RLIMIT_STACK)")
    group = run.add_argument_group(
        "cgroup v2", "a group of its own for the program and everything it starts"
    )
    group.add_argument("--memory", metavar="SIZE", help="memory.max (OOM-killed beyond)")
    group.add_argument("--pids", metavar="N", help="pids.max: processes and threads at once")
    group.add_argument("--cpus", metavar="FRACTION", help="CPUs' worth of time (0.5, 2)")
    group.add_argument("--cpu-max", metavar="QUOTA/PERIOD", help="cpu.max in µs (50000/100000)")
    group.add_argument(
        "--cgroup", action="store_true", help="a group with no limits (usage, tree kill)"
    )
    group.add_argument(
        "--cgroup-parent", metavar="DIR", help="make the group in DIR (default: our own group)"
    )
    run.add_argument(
        "--usage", action="store_true", help="print what the program used, on stderr, at exit"
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    listing = sub.add_parser("caps", help="list capabilities, or decode a mask")
    listing.add_argument(
        "--decode", metavar="HEX", help="print the names in a mask such as 0000000000003000"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hardexec`` command; returns the exit status."""
    ns = _parser().parse_args(argv)
    if ns.command == "run":
        return _run(ns)
    try:
        return _caps(ns.decode)
    except BrokenPipeError:  # `hardexec caps | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _caps(decode: str | None) -> int:
    if decode is not None:
        try:
            print(CapSet.from_hex(decode))
        except HardexecError as err:
            _fail(f"--decode: {str(err).split(': ', 1)[-1]}")
        return 0
    for cap in Capability:
        print(f"{cap.value:>2}  {cap.name:<20}{cap.description}")
    return 0


def _rlimits(ns: argparse.Namespace) -> RlimitConfig:
    def opt(value: str | None, option: str, size: bool = False) -> int | None:
        if value is None:
            return None
        return parse_size(value, option) if size else _count(value, option)

    return RlimitConfig(
        max_open_files=opt(ns.nofile, "--nofile"),
        max_file_size_bytes=opt(ns.fsize, "--fsize", size=True),
        disable_core_dumps=ns.no_core,
        address_space=opt(ns.address_space, "--as", size=True),
        cpu_seconds=opt(ns.cpu_seconds, "--cpu-seconds"),
        max_processes=opt(ns.nproc, "--nproc"),
        stack=opt(ns.stack, "--stack", size=True),
    )


def _cpu(ns: argparse.Namespace) -> CpuMax | None:
    if ns.cpus is not None and ns.cpu_max is not None:
        _fail("--cpus and --cpu-max say the same thing twice; give one")
    if ns.cpus is not None:
        try:
            return CpuMax.from_fraction(float(ns.cpus))
        except ValueError:
            _fail(f"--cpus: {ns.cpus!r} is not a number of CPUs (0.5, 2)")
    if ns.cpu_max is not None:
        quota, _, period = ns.cpu_max.partition("/")
        return CpuMax(
            quota=None if quota == "max" else _count(quota, "--cpu-max quota"),
            period=_count(period, "--cpu-max period") if period else 100_000,
        )
    return None


def _cgroups(ns: argparse.Namespace) -> CgroupLimits | None:
    cpu = _cpu(ns)
    memory = parse_size(ns.memory, "--memory") if ns.memory is not None else None
    pids = _count(ns.pids, "--pids") if ns.pids is not None else None
    if not (ns.cgroup or cpu or memory is not None or pids is not None):
        if ns.cgroup_parent is not None:
            _fail("--cgroup-parent: no cgroup is asked for (--memory, --pids, --cpus, --cgroup)")
        return None
    return CgroupLimits(cpu=cpu, memory=memory, pids=pids, fail_on_error=ns.strict)


def _policy(ns: argparse.Namespace) -> Policy:
    groups = None
    if ns.groups is not None:
        groups = ns.groups.split(",") if ns.groups else []
        if "" in groups:
            _fail(f"--groups: {ns.groups!r} has an empty item")
    if ns.keep_cap and not ns.drop_all_caps:
        _fail(f"--keep-cap {ns.keep_cap[0]}: needs --drop-all-caps (keep names what survives it)")
    try:
        return Policy(
            security=SecurityConfig(
                drop_all_caps=ns.drop_all_caps,
                keep_caps=ns.keep_cap,
                no_new_privs=ns.no_new_privs,
                fail_on_cap_error=ns.strict,
                user=ns.user,
                group=ns.group,
                supplementary_groups=groups,
            ),
            rlimits=_rlimits(ns),
            cgroups=_cgroups(ns),
            cgroup_parent=ns.cgroup_parent,
        )
    except HardexecError as err:
        _fail(_FIELD.sub(lambda m: _option_of(m.group()), str(err)))


def _option_of(field: str) -> str:
    return _OPTION_OF_FIELD.get(field.split("[", maxsplit=1)[0], field)


def _run(ns: argparse.Namespace) -> int:
    argv = ns.argv[1:] if ns.argv[:1] == ["--"] else ns.argv
    if not argv:
        _fail("run: no command given (hardexec run [OPTIONS] -- COMMAND [ARG...])")
    policy = _policy(ns)

    child: Popen | None = None
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if child is None:
            pending.append(signum)
        elif not _terminal_sent_it(signum, child):
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # printed below, in the command's own words
            child = Popen(argv, policy=policy)
        for warning in child.stage_warnings:
            print(f"hardexec: warning: {warning}", file=sys.stderr)
        for signum in pending:
            forward(signum, None)
        status = child.wait()
    except FileNotFoundError as err:
        print(f"hardexec: {argv[0]}: {err.strerror}", file=sys.stderr)
        return EXIT_NOTFOUND
    except HardexecError as err:  # StageError, CgroupError, …: before the OSError catch-all
        _fail(str(err))
    except OSError as err:  # the program exists but cannot be executed
        print(f"hardexec: {argv[0]}: {err.strerror}", file=sys.stderr)
        return EXIT_NOEXEC
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _say_how_it_ended(child, status, policy, ns.usage)
    return 128 - status if status < 0 else status


def _say_how_it_ended(child: Popen, status: int, policy: Policy, usage_wanted: bool) -> None:
    usage = child.usage
    if usage is not None and usage.oom_killed:
        memory = policy.cgroups.memory if policy.cgroups else None
        limit = f" (memory.max={format_size(memory)})" if memory else ""
        if status == -signal.SIGKILL:
            print(f"hardexec: killed by the OOM killer{limit}", file=sys.stderr)
        else:
            print(f"hardexec: the OOM killer killed a process of the group{limit}", file=sys.stderr)
    if usage_wanted and usage is not None:
        print(f"hardexec: usage: {_describe_usage(usage)}", file=sys.stderr)


def _describe_usage(usage: Usage) -> str:
    parts = []
    if usage.cpu_user is not None and usage.cpu_system is not None:
        parts.append(f"cpu {usage.cpu_user:.3f}s user {usage.cpu_system:.3f}s system")
    if usage.cpu_throttled is not None:
        parts.append(f"throttled {usage.cpu_throttled:.3f}s")
    if usage.memory_peak is not None:
        parts.append(f"memory peak {usage.memory_peak}")
    if usage.pids_peak is not None:
        parts.append(f"pids peak {usage.pids_peak}")
    if usage.oom_killed is not None:
        parts.append(f"oom killed {'yes' if usage.oom_killed else 'no'}")
    return ", ".join(parts) + f" (from {usage.source})"


def _terminal_sent_it(signum: int, child: Popen) -> bool:
    """True for ^C / ^\\ typed at our terminal: the kernel already sent it to the program too."""
    if signum not in (signal.SIGINT, signal.SIGQUIT):
        return False
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # no controlling terminal: someone ran kill(1) on us
    try:
        foreground = os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        foreground = False
    finally:
        os.close(fd)
    try:
        same_group = os.getpgid(child.pid) == os.getpgrp()
    except OSError:
        same_group = False
    return foreground and same_group


if __name__ == "__main__":
    sys.exit(main())
