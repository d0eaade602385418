"""The ``hardexec`` command.

``hardexec run [OPTIONS] -- COMMAND [ARG...]`` runs COMMAND under a policy and exits with its
status: the program's own; 128+N when a signal N killed it; 127 when it was not found; 126 when
it could not be executed; 125 when hardexec itself failed (bad option or policy, or an exec stage
abort), with one line on stderr naming the option or the step and errno.
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
from .policy import Policy, SecurityConfig
from .spawn import Popen

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
}
_FIELD = re.compile(r"security\.\w+(?:\[\d+\])?")

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


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hardexec", description="Run programs with least privilege.")
    parser.add_argument("--version", action="version", version=f"hardexec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run a command under a policy",
        usage="hardexec run [OPTIONS] -- COMMAND [ARG...]",
        description="Run COMMAND with the given privileges. Exit status: the command's own; "
        "128+N if killed by signal N; 127 not found; 126 not executable; 125 hardexec failed.",
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
        "--strict", action="store_true", help="fail instead of warning when a capability step fails"
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
            )
        )
    except HardexecError as err:
        _fail(
            _FIELD.sub(lambda m: _OPTION_OF_FIELD.get(m.group().split("[")[0], m.group()), str(err))
        )


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
    except HardexecError as err:  # StageError and friends, before the OSError catch-all
        _fail(str(err))
    except OSError as err:  # the program exists but cannot be executed
        print(f"hardexec: {argv[0]}: {err.strerror}", file=sys.stderr)
        return EXIT_NOEXEC
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - status if status < 0 else status


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
