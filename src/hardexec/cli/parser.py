"""The full ``hardexec`` command line, with argparse: help, errors, and every spelling.

:func:`hardexec.cli.args.parse_run` reads the common ``hardexec run`` command line without it
(argparse and the re module it needs cost as much as the interpreter's own start-up); anything
it does not recognise comes here, so argparse has the last word on what is accepted.
"""

from __future__ import annotations

import argparse
import sys

from .args import REPEATED
from .confine_options import FLAGS_HELP, OPTIONS_HELP
from .options import EXIT_FAILURE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"hardexec: {message}; try '{self.prog} --help'", file=sys.stderr)
        sys.exit(EXIT_FAILURE)


def parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The whole command line and its commands' own parsers (``run``, ``caps``)."""
    top = _Parser(prog="hardexec", description="Run programs with least privilege.")
    top.add_argument(
        "--version",
        action=_Version,
        nargs=0,
        default=argparse.SUPPRESS,
        help="print the version and exit",
    )
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run a command under a policy",
        usage="hardexec run [OPTIONS] -- COMMAND [ARG...]",
        description="Run COMMAND with the given privileges and ceilings. Exit status: the "
        "command's own (killed by signal N: hardexec dies of N too, a shell shows 128+N); "
        "127 not found; 126 not executable; 125 hardexec failed; 124 timed out. With no "
        "cgroup option, --usage, --timeout, --max-output, --json-result, syscall filter or "
        "--verify, hardexec replaces "
        "itself with the command (same pid); otherwise it stays to supervise it: signals "
        "forwarded, the terminal handed over, leftovers killed.",
    )
    add_run_options(run)
    explaining = sub.add_parser(
        "explain",
        help="what run would give COMMAND, and how exposed it stays, without running it",
        usage="hardexec explain [OPTIONS] [--json] -- COMMAND [ARG...]",
        description="Say what 'hardexec run' with the same options would give COMMAND (its "
        "capability sets, NoNewPrivs, ids, limits, cgroup, confinement, warnings) and an "
        "exposure score, without running anything. Exit status 0; 125 when the run would be "
        "refused (the explanation is printed all the same).",
    )
    explaining.add_argument(
        "--json", action="store_true", help="one JSON document (schema version 1)"
    )
    add_run_options(explaining)
    learning = sub.add_parser(
        "learn",
        help="run a command once under observation; write the narrowest policy it needed",
        usage="hardexec learn -o FILE [OPTIONS] -- COMMAND [ARG...]",
        description="Run COMMAND under the given options while recording every syscall it, its "
        "threads and its children make, then write a policy file (.toml or .json) with those "
        "options plus: an allow-list of those syscalls, a network namespace if it made no "
        "socket but unix ones, and cgroup ceilings from its peaks where they can be measured. "
        "`hardexec run --policy FILE -- COMMAND ...` then runs it the same way. Exit status: "
        "the command's own; 125 when hardexec failed (FILE is checked before COMMAND runs).",
    )
    learning.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the policy file to write"
    )
    add_run_options(learning)

    working, submitting = _fleet_parsers(sub)
    listing = _caps_parser(sub)
    checking = sub.add_parser(
        "check",
        help="what this host can enforce, and why not",
        usage="hardexec check [--json] [--need FEATURE,...]",
    )
    checking.add_argument(
        "--json", action="store_true", help="one JSON document (schema version 1)"
    )
    from .check import FEATURES  # the one list of what --need takes

    checking.add_argument(
        "--need",
        metavar="FEATURE,...",
        help=f"exit 1 unless each is usable: {', '.join(FEATURES)}",
    )
    from .export import add_parser as add_export_parser

    exporting = add_export_parser(sub)
    return top, {
        "run": run,
        "explain": explaining,
        "learn": learning,
        "caps": listing,
        "check": checking,
        "worker": working,
        "submit": submitting,
        "export": exporting,
    }


def _fleet_parsers(sub: Any) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """``worker`` and ``submit`` (:mod:`hardexec.cli.fleet`)."""
    working: argparse.ArgumentParser = sub.add_parser(
        "worker",
        help="a Celery worker that runs submitted tasks within a ceiling policy",
        usage="hardexec worker --broker URL [--ceiling FILE] [--profile NAME] [--user NAME] "
        "[OPTIONS]",
        description="Run a Celery worker (prefork pool) whose tasks run through hardexec's "
        "runner. A submitted policy may only narrow the ceiling: a task asking for more is "
        "refused, never run. Each task's tree lives in a cgroup of the worker's own, and ends "
        "when the process running it dies.",
    )
    _broker_options(working)
    working.add_argument(
        "--ceiling", metavar="FILE", help="the most a task may get (a policy file)"
    )
    working.add_argument(
        "--profile", metavar="NAME", help="a profile as the ceiling (--ceiling goes over it)"
    )
    working.add_argument(
        "--user",
        metavar="NAME",
        help="the user every task runs as (the ceiling's security.user; a root worker needs one, "
        "or --allow-root-tasks)",
    )
    working.add_argument(
        "--concurrency", type=int, default=2, metavar="N", help="tasks at once (default 2)"
    )
    working.add_argument("--name", metavar="NAME", help="the worker's name (Celery's hostname)")
    working.add_argument("--loglevel", default="warning", metavar="LEVEL", help="Celery's")
    working.add_argument(
        "--visibility-timeout",
        type=float,
        metavar="SECONDS",
        help="Redis redelivers a task its worker took and never finished (the whole worker "
        "killed) after this long; it must be longer than any task runs (default: Celery's, "
        "3600)",
    )
    working.add_argument(
        "--allow-root-tasks",
        action="store_true",
        help="accept a ceiling without security.user: tasks run as uid 0 (which, even without "
        "a capability, can leave its cgroup, signal the worker and open the broker's socket)",
    )
    working.add_argument(
        "--no-guard",
        action="store_true",
        help="no cgroup per task (for hosts without a writable cgroup v2): what a task starts "
        "may outlive it, and only the program itself dies with its pool process",
    )
    submitting: argparse.ArgumentParser = sub.add_parser(
        "submit",
        help="send a command to the fleet under a policy; print its output and exit as it did",
        usage="hardexec submit --broker URL [OPTIONS] -- COMMAND [ARG...]",
        description="Send COMMAND, with the policy the run options ask for, to a worker; wait "
        "for it and print its output. Exit status: the command's own; 124 timed out; 125 "
        "refused by the worker (its ceiling, a bad policy); 127 not found there; 126 not "
        "executable there.",
    )
    _broker_options(submitting)
    submitting.add_argument("--json", action="store_true", help="print the Result as JSON")
    submitting.add_argument(
        "--no-wait", action="store_true", help="print the task id and exit at once"
    )
    submitting.add_argument(
        "--stream", action="store_true", help="print the program's lines as they come"
    )
    submitting.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="how long to wait for the result (default: as long as it takes)",
    )
    add_run_options(submitting)
    for action in submitting._actions:  # run's options a worker decides, not a task: unlisted
        if action.dest in ("verify", "max_output", "json_result", "keep_leftovers"):
            action.help = argparse.SUPPRESS
    return working, submitting


def _broker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        metavar="URL",
        help="redis://[:PASSWORD@]HOST:PORT/DB, rediss://… (TLS) or redis+socket:///PATH "
        "(default: $HARDEXEC_BROKER, which, unlike the command line, other users cannot read)",
    )
    p.add_argument("--backend", metavar="URL", help="the result backend (default: the broker)")
    p.add_argument("--queue", metavar="NAME", help="the queue (default: Celery's, 'celery')")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Every ``hardexec run`` option, and ``-- COMMAND [ARG...]``, added to ``p``: the commands
    that take a run's policy (``run``, ``explain``, ``learn``) read it alike."""
    files = p.add_argument_group(
        "policy files",
        "a profile, then a file, then the options: each over the one before (a table merges key "
        "by key; an option replaces the key it sets, but namespace and syscall options add to "
        "what is there)",
    )
    files.add_argument(
        "--profile",
        metavar="NAME",
        action="append",
        default=[],
        help="start from a built-in profile: strict, service or none (see the README)",
    )
    files.add_argument(
        "--policy",
        metavar="FILE",
        action="append",
        default=[],
        help="read the policy from FILE (.toml or .json)",
    )
    caps = _add_verify(p.add_argument_group("capabilities"))
    caps.add_argument(
        "--drop-all-caps",
        action="store_true",
        help="drop every capability (bounding, permitted, effective, inheritable, ambient) "
        "except those kept",
    )
    caps.add_argument(
        "--keep-cap",
        metavar="CAP[,CAP]",
        action="append",
        default=[],
        help="keep CAP (NET_ADMIN, cap_net_admin, 12, …); comma list and repeatable; "
        "needs --drop-all-caps",
    )
    caps.add_argument(
        "--no-new-privs", action="store_true", help="set-uid bits and file caps grant nothing"
    )
    caps.add_argument(
        "--strict",
        action="store_true",
        help="fail instead of warning when a capability step cannot be applied",
    )
    ids = p.add_argument_group("identity")
    ids.add_argument("--user", metavar="USER", help="run as USER (name or uid)")
    ids.add_argument(
        "--group", metavar="GROUP", help="primary group (default: USER's primary group)"
    )
    ids.add_argument(
        "--groups",
        metavar="G1,G2",
        help="supplementary groups, comma-separated; '' clears them (default: USER's groups)",
    )
    limits = p.add_argument_group(
        "resource limits", "each is a hard ceiling the program cannot raise (SIZE: 10M, 2G, …)"
    )
    limits.add_argument("--nofile", metavar="N", help="open files (RLIMIT_NOFILE)")
    limits.add_argument("--fsize", metavar="SIZE", help="largest file written (RLIMIT_FSIZE)")
    limits.add_argument("--no-core", action="store_true", help="no core dumps (RLIMIT_CORE=0)")
    limits.add_argument("--as", dest="address_space", metavar="SIZE", help="RLIMIT_AS")
    limits.add_argument("--cpu-seconds", metavar="N", help="CPU seconds, then killed")
    limits.add_argument("--nproc", metavar="N", help="processes of the user (RLIMIT_NPROC)")
    limits.add_argument("--stack", metavar="SIZE", help="stack size (RLIMIT_STACK)")
    group = p.add_argument_group(
        "cgroup v2",
        "a group of its own for the program and everything it starts; a limit that cannot be "
        "applied refuses the run (exit 125) unless --best-effort",
    )
    group.add_argument("--memory", metavar="SIZE", help="memory.max (OOM-killed beyond)")
    group.add_argument("--pids", metavar="N", help="pids.max: processes and threads at once")
    group.add_argument("--cpus", metavar="FRACTION", help="CPUs' worth of time (0.5, 2)")
    group.add_argument("--cpu-max", metavar="QUOTA/PERIOD", help="cpu.max in µs (50000/100000)")
    group.add_argument(
        "--cgroup", action="store_true", help="a group with no limits (usage, tree kill)"
    )
    group.add_argument(
        "--cgroup-parent",
        metavar="DIR",
        help="make the group in DIR, a cgroup v2 group delegated to you (default: our own group)",
    )
    group.add_argument(
        "--best-effort",
        action="store_true",
        help="if the group, its limits or a confinement this kernel lacks cannot be applied, "
        "warn and run WITHOUT them",
    )
    group.add_argument(
        "--keep-leftovers",
        action="store_true",
        help="when the program ends, wait for what it started instead of killing it",
    )
    task = p.add_argument_group(
        "the task", "its time, environment and output (DURATION: 30s, 5m, 1.5h, 200ms; SIZE: 10M)"
    )
    task.add_argument(
        "--timeout",
        metavar="DURATION",
        help="then SIGTERM to the program's tree, SIGKILL after --kill-after; exit 124",
    )
    task.add_argument(
        "--kill-after", metavar="DURATION", help="grace between SIGTERM and SIGKILL (default 5s)"
    )
    task.add_argument(
        "--env-clear", action="store_true", help="start from an empty environment (PATH is set)"
    )
    task.add_argument(
        "--env-keep",
        metavar="NAME",
        action="append",
        default=[],
        help="keep NAME from hardexec's environment, and clear the rest; repeatable",
    )
    task.add_argument(
        "--env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="set NAME to VALUE (over what is kept); repeatable",
    )
    task.add_argument("--cwd", metavar="DIR", help="run the program in DIR")
    task.add_argument(
        "--max-output",
        metavar="SIZE",
        help="pass at most SIZE of stdout and of stderr through; the rest is counted and dropped",
    )
    task.add_argument(
        "--json-result",
        metavar="FILE",
        help="write the run's result (status, signal, duration, timeout, usage, warnings, what "
        "was dropped) to FILE as JSON",
    )
    confine = p.add_argument_group(
        "confinement",
        "what the program may touch; what this kernel cannot enforce refuses the run unless "
        "--best-effort (then a warning names it)",
    )
    for option, dest, metavar, meaning in OPTIONS_HELP:
        repeat = dest in REPEATED
        confine.add_argument(
            option,
            dest=dest,
            metavar=metavar,
            action="append" if repeat else "store",
            default=[] if repeat else None,
            help=meaning + ("; repeatable" if repeat else ""),
        )
    for option, dest, meaning in FLAGS_HELP:
        confine.add_argument(option, dest=dest, action="store_true", help=meaning)
    p.add_argument(
        "--usage", action="store_true", help="print what the program used, on stderr, at exit"
    )
    p.add_argument("argv", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def _add_verify(group: Any) -> Any:
    group.add_argument(
        "--verify",
        action="store_true",
        help="check the program's capability sets, NoNewPrivs, ids, groups and seccomp mode "
        "against the policy at its exec, before its first instruction; beyond it, it is killed "
        "(exit 125); hardexec supervises",
    )
    return group


def _caps_parser(sub: Any) -> argparse.ArgumentParser:
    """``hardexec caps``: the capabilities, a mask decoded, or what a process holds."""
    listing: argparse.ArgumentParser = sub.add_parser(
        "caps",
        help="list capabilities, decode a mask, or show what a process holds",
        usage="hardexec caps [--decode HEX] | hardexec caps current [--pid N] [--json]",
    )
    listing.add_argument(
        "what",
        nargs="?",
        choices=["current"],
        help="current: a process's five capability sets, NoNewPrivs and seccomp mode",
    )
    listing.add_argument(
        "--decode", metavar="HEX", help="print the names in a mask such as 0000000000003000"
    )
    listing.add_argument(
        "--pid", metavar="N", help="with current: that process (default: hardexec's own)"
    )
    listing.add_argument("--json", action="store_true", help="with current: as JSON")
    return listing


class _Version(argparse.Action):
    """``--version``, reading the version only when asked (it imports the package's root)."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        from .. import __version__

        print(f"hardexec {__version__}")
        sys.exit(0)
