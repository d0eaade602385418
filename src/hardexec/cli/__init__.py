"""The ``hardexec`` command.

``hardexec run [OPTIONS] -- COMMAND [ARG...]`` runs COMMAND under a policy. With nothing to
supervise (no cgroup option, no ``--usage``, ``--timeout``, ``--max-output``,
``--json-result`` or syscall filter, whose denials it counts) hardexec replaces itself with
the exec stage, as
setpriv(1) does: same pid, nothing of hardexec stays resident. Otherwise it stays, forwards
signals, hands over the terminal, and kills what the program left behind when it ends
(:mod:`hardexec.cli.supervise`).

Exit status: the program's own; killed by signal N, hardexec dies of signal N too (a shell shows
128+N); 124 when ``--timeout`` ended it (as timeout(1)); 127 when it was not found; 126 when it
could not be executed; 125 when hardexec itself
failed (bad option or policy, a cgroup or limit that cannot be applied, an exec stage abort),
with one line on stderr naming the option or the step and errno. Bare ``hardexec`` prints its
usage and exits 2. ``hardexec caps`` lists the capabilities; ``hardexec caps --decode HEX``
names a mask's caps; ``hardexec caps current [--pid N] [--json]`` decodes what a process holds;
``hardexec check [--json] [--need FEATURE,...]`` says what this host can enforce;
``hardexec explain [OPTIONS] [--json] -- COMMAND`` says what ``run`` would give COMMAND;
``hardexec learn -o FILE [OPTIONS] -- COMMAND`` writes the policy a run of COMMAND needed
(:mod:`hardexec.cli.learn`); ``hardexec export k8s [OPTIONS] --image IMAGE -- COMMAND`` writes
the Kubernetes Pod or Job of that policy (:mod:`hardexec.cli.export`).

Start-up matters (the command is a prefix to other commands), so this package imports only
argparse up front and the rest of hardexec when, and as far as, a command needs it.
"""

from __future__ import annotations

import os
import sys

from .options import (
    EXIT_FAILURE,
    EXIT_NOEXEC,
    EXIT_NOTFOUND,
    EXIT_USAGE,
    Request,
    fail,
    format_size,
    parse_size,
    request,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import Namespace
    from collections.abc import Sequence
    from typing import NoReturn

__all__ = [
    "EXIT_FAILURE",
    "EXIT_NOEXEC",
    "EXIT_NOTFOUND",
    "EXIT_USAGE",
    "format_size",
    "main",
    "parse_size",
]


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911  (one per command)
    """Entry point of the ``hardexec`` command; returns the exit status.

    Called as the command (``argv`` is ``None``), a program killed by signal N makes hardexec
    die of signal N too, so its caller sees the same wait status; called with an ``argv`` (from
    Python), it returns 128+N instead. Either way, ``run`` with nothing to supervise replaces
    the calling process with the program (as the command does) and so never returns.
    """
    if sys.stderr is None:  # started with fd 2 closed: say nothing rather than on stdout
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115  (for the rest of the process)
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        from .parser import parser

        parser()[0].print_help(sys.stderr)
        return EXIT_USAGE
    ns = None
    if args[:1] == ["run"]:
        from .args import parse_run

        ns = parse_run(args[1:])
    if ns is None:
        ns = _parse_fully(args)
        if ns.command == "check":
            from .check import check

            return check(ns.json, ns.need)
        if ns.command == "caps":
            if ns.what == "current" or ns.pid is not None or ns.json:
                from .current import current

                return current(ns)
            return _caps(ns.decode)
        if ns.command == "worker":
            from .fleet import worker_command

            return worker_command(ns)
        if ns.command == "submit":
            from .fleet import submit_command

            return submit_command(request(ns), ns)
        if ns.command == "explain":
            from .explain import explain_command

            return explain_command(request(ns), ns.json)
        if ns.command == "export":
            from .export import export_command

            return export_command(ns)
    if getattr(ns, "command", "run") == "learn":
        from .learn import learn_command

        status = learn_command(request(ns), ns.output)
    else:
        status = _run(request(ns))
    if status < 0:
        if argv is None:
            _die_of(-status)
        return 128 - status
    return status


def _parse_fully(args: list[str]) -> Namespace:
    """Every command line :func:`parse_run` defers: argparse reads it, or exits saying why."""
    from .parser import parser

    top, commands = parser()
    ns, extras = top.parse_known_args(args)
    if ns.command is None:  # only options, and none of ours
        top.error(f"unrecognized arguments: {' '.join(extras)}" if extras else "no command given")
    if extras:
        commands[ns.command].error(f"unrecognized arguments: {' '.join(extras)}")
    return ns


def _run(req: Request) -> int:
    if req.policy.confinement is not None:
        from .confine_options import check_paths

        check_paths(req.policy.confinement, req.typed_confinement, req.source)
    if req.supervise:
        from .supervise import supervise

        return supervise(req)
    return _exec(req)


def _exec(req: Request) -> int:
    """Become the exec stage: from here on the stage's messages and exit statuses are ours."""
    import errno

    from ..errors import HardexecError
    from ..spawn_core import exec_stage

    if req.task is not None and req.task.cwd is not None:
        try:
            os.chdir(req.task.cwd)
        except OSError as err:
            fail(f"--cwd: {req.task.cwd!r}: {err.strerror}")
    try:
        exec_stage(req.argv, req.policy, req.env)
    except HardexecError as err:
        from .supervise import in_cli_words

        fail(in_cli_words(str(err)))
    except OSError as err:
        if err.errno == errno.E2BIG:  # the program's arguments, as a shell says it
            print(f"hardexec: {req.argv[0]}: {err.strerror}", file=sys.stderr)
            return EXIT_NOEXEC
        fail(f"cannot start the exec stage: {err}")


def _die_of(signum: int) -> NoReturn:
    """Die of the signal that killed the program, without a core dump of our own."""
    import resource
    import signal

    sys.stdout.flush()
    sys.stderr.flush()
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    if signum != signal.SIGKILL:  # the one whose disposition cannot be set, nor needs to be
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    sys.exit(128 + signum)  # a signal whose default is not to end a process


def _caps(decode: str | None) -> int:
    from ..caps import Capability, CapSet
    from ..errors import HardexecError

    try:
        if decode is not None:
            try:
                print(CapSet.from_hex(decode))
            except HardexecError as err:
                fail(f"--decode: {str(err).split(': ', 1)[-1]}")
            return 0
        for cap in Capability:
            print(f"{cap.value:>2}  {cap.name:<20}{cap.description}")
    except BrokenPipeError:  # `hardexec caps | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
