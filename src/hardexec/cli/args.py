"""``hardexec run``'s options as one table, and a reader of the common command line.

The reader takes ``hardexec run [--option[=VALUE] | --option VALUE]... [--] COMMAND...`` with the
exact option names, and yields what argparse would (the same attribute names and defaults). For
anything else (``--help``, an unknown or abbreviated option, a value that looks like an option)
it returns ``None`` and the argparse parser (:mod:`hardexec.cli.parser`) decides, with its
messages. Tests check that both read every command line alike.
"""

from __future__ import annotations

# option → attribute, for every `run` option that takes a value
VALUES = {
    "--policy": "policy",
    "--profile": "profile",
    "--keep-cap": "keep_cap",
    "--user": "user",
    "--group": "group",
    "--groups": "groups",
    "--nofile": "nofile",
    "--fsize": "fsize",
    "--as": "address_space",
    "--cpu-seconds": "cpu_seconds",
    "--nproc": "nproc",
    "--stack": "stack",
    "--memory": "memory",
    "--pids": "pids",
    "--cpus": "cpus",
    "--cpu-max": "cpu_max",
    "--cgroup-parent": "cgroup_parent",
    "--timeout": "timeout",
    "--kill-after": "kill_after",
    "--env-keep": "env_keep",
    "--env": "env",
    "--cwd": "cwd",
    "--max-output": "max_output",
    "--json-result": "json_result",
    # confinement (cli/confine_options.py has their meaning)
    "--fs-ro": "fs_ro",
    "--fs-rx": "fs_rx",
    "--fs-rw": "fs_rw",
    "--fs-rwx": "fs_rwx",
    "--tcp-bind": "tcp_bind",
    "--tcp-connect": "tcp_connect",
    "--syscalls": "syscalls",
    "--syscalls-allow": "syscalls_allow",
    "--syscalls-deny": "syscalls_deny",
    "--net": "net",
    "--hostname": "hostname",
    "--umask": "umask",
}
# option → attribute, for every `run` flag
FLAGS = {
    "--drop-all-caps": "drop_all_caps",
    "--no-new-privs": "no_new_privs",
    "--strict": "strict",
    "--no-core": "no_core",
    "--cgroup": "cgroup",
    "--best-effort": "best_effort",
    "--keep-leftovers": "keep_leftovers",
    "--usage": "usage",
    "--env-clear": "env_clear",
    "--no-fs-deps": "no_fs_deps",
    "--pid-ns": "pid_ns",
    "--ipc-ns": "ipc_ns",
    "--uts-ns": "uts_ns",
    "--verify": "verify",
}
# collected in a list; for the others the last one wins
REPEATED = frozenset(
    (
        *("policy", "profile"),  # collected only to refuse a second one
        *("keep_cap", "env_keep", "env", "fs_ro", "fs_rx", "fs_rw", "fs_rwx"),
        *("tcp_bind", "tcp_connect", "syscalls_allow", "syscalls_deny"),
    )
)
OPTIONS = {**VALUES, **FLAGS}


class Namespace:
    """The options read, as attributes (argparse's ``Namespace`` without importing argparse)."""

    def __init__(self) -> None:
        self.command = "run"
        self.argv: list[str] = []
        for dest in VALUES.values():
            setattr(self, dest, [] if dest in REPEATED else None)
        for dest in FLAGS.values():
            setattr(self, dest, False)


def parse_run(args: list[str]) -> Namespace | None:
    """Read ``run``'s arguments (after the word ``run``), or ``None`` to defer to argparse."""
    ns = Namespace()
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("-") or arg == "--":
            ns.argv = args[index:]  # argparse's REMAINDER keeps a leading "--" too
            return ns
        name, equals, value = arg.partition("=")
        if name in FLAGS and not equals:
            setattr(ns, FLAGS[name], True)
        elif name in VALUES:
            if not equals:
                index += 1
                if index == len(args) or args[index].startswith("-"):
                    return None  # argparse says what is missing
                value = args[index]
            dest = VALUES[name]
            if dest in REPEATED:
                getattr(ns, dest).append(value)
            else:
                setattr(ns, dest, value)
        else:
            return None
        index += 1
    return ns
