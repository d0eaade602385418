"""Policy → exec-stage arguments. The only module that knows the stage's command line.

The stage reads like util-linux ``setpriv``: one option per step, applied in a fixed,
kernel-correct order whatever order the options come in::

    hardexec-stage [--report-fd=N] [--env-fd=N] [--cgroup-fd=N [--cgroup-strict]]
                   [--rlimit=RES:VALUE...] [--umask=OCTAL] [--unshare=NS,NS...]
                   [--hostname=NAME] [--landlock-fd=N] [--uid=N] [--gid=N]
                   [--groups-fd=N | --clear-groups] [--drop-caps=KEEPHEX] [--strict]
                   [--lock-securebits] [--nnp] [--ignore-signals=N,N] [--die-with-parent=PID]
                   [--seccomp-fd=N [--seccomp-notify-fd=N]] [--trace-exec[=PID]] [--exec=PATH]
                   -- PROGRAM [ARG...]

``--drop-caps`` takes the kept set as 16 hex digits (``/proc/<pid>/status`` form);
``--rlimit`` a setrlimit resource number and its value; ``--cgroup-fd`` the group's
``cgroup.procs``, opened by the parent; ``--env-fd`` a memfd of the program's environment
(``NAME=value\0`` entries; the stage itself starts with an empty one); ``--groups-fd`` a memfd
of native 32-bit gids.

Confinement:

- ``--umask=OCTAL``: 1 to 4 octal digits, at most 0777.
- ``--unshare=LIST``: any of ``user,net,ipc,uts,pid`` (comma-separated, any order). ``user``
  (the parent adds it when the launcher lacks CAP_SYS_ADMIN) is unshared together with the rest,
  then the stage writes ``deny`` to ``/proc/self/setgroups`` and maps its own euid and egid
  (``"ID ID 1"``) in ``uid_map``/``gid_map``, so the program still sees its own ids. ``net``
  also brings ``lo`` up. ``pid``: the stage forks twice (see stage.c): the namespace's init,
  then the program's process, and stays as the relay between the parent and the program.
- ``--hostname=NAME``: sethostname in the new uts namespace.
- ``--landlock-fd=N``: a memfd of NUL-terminated entries: ``fs=HEX`` (handled filesystem
  rights), ``net=HEX`` (handled network rights; absent: the ruleset attribute is the 8-byte
  ABI-1 form), ``scope=HEX`` (ABI-6 scopes: the 24-byte form), then ``path=HEX:PATH`` and
  ``port=HEX:PORT`` rules (rule indexes count path
  entries, then port entries, from 0). The ruleset is built early (paths resolved with the
  launcher's privileges) and enforced late.
- ``--lock-securebits``: SECBIT_NOROOT, SECBIT_NOROOT_LOCKED and SECBIT_NO_SETUID_FIXUP_LOCKED
  for a program left as uid 0 after the capability drop (exec never hands root its
  capabilities back, and the program cannot undo it).
- ``--seccomp-fd=N``: a memfd holding the filter (``struct sock_filter`` array), installed as the
  last step before execve. ``--seccomp-notify-fd=N``: a unix socket; the filter is installed
  with SECCOMP_FILTER_FLAG_NEW_LISTENER and the listener fd is sent to the parent over it
  (SCM_RIGHTS, one data byte ``L``), which then answers the program's denied syscalls and
  counts them.

Report steps the confinement adds (arg ``-`` unless said): ``userns``, ``unshare``,
``loopback``, ``hostname``, ``landlock`` (create or enforce), ``landlock_path`` (arg: rule
index; opening the path), ``landlock_rule`` (arg: rule index; adding it), ``pid_ns`` (a fork),
``securebits`` (best effort unless ``--strict``, like the capability steps), ``seccomp_fd``
and ``landlock_fd`` (reading the memfd), ``seccomp`` (install), ``seccomp_notify`` (sending
the listener). Every confinement step fails closed: best effort is decided by the parent,
which leaves out of the plan what this kernel cannot do and warns.

Verification (``--trace-exec``, for ``verify=True``): the first step after the memfds are read,
while the stage still has the launcher's credentials, is ``PTRACE_TRACEME``; then a ``T trace 0
-`` record on the report pipe and a SIGSTOP of the stage itself, at which the parent sets
``PTRACE_O_EXITKILL | PTRACE_O_TRACEEXEC`` and continues it. The kernel then stops the program
at its execve, before its first instruction, for the parent to check (:mod:`hardexec.verify`).
Step ``trace`` (fails closed): TRACEME refused (Yama, a security module, a seccomp filter the
launcher runs under, a stage already traced), or ESRCH when the stage was continued with no
tracer (the launcher died before it set EXITKILL). Not with ``--unshare=pid``: the relay
would be the program's parent, and the tracer.

Both stage implementations (``stage.c`` and ``twin.py``) parse exactly this.
"""

from __future__ import annotations

import array
import os

from ._record import frozen
from .caps import CapSet
from .policy import Identity, Policy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .confine.compile import Confined

__all__ = ["Plan", "compile_plan"]

StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]


@frozen
class Plan:
    """A policy flattened to what the stage needs: masks, ids and flags."""

    drop_caps: bool
    keep: CapSet
    strict: bool
    no_new_privs: bool
    identity: Identity
    rlimits: tuple[tuple[int, int], ...] = ()
    cgroup_strict: bool = False
    die_with_parent: bool = False
    lock_securebits: bool = False

    def groups_data(self) -> bytes | None:
        """What ``--groups-fd`` carries (native 32-bit gids), or None when no list is set."""
        groups = self.identity.groups
        return None if not groups else array.array("I", groups).tobytes()

    def stage_args(
        self,
        report_fd: int | None,
        executable: StrOrBytesPath | None = None,
        cgroup_fd: int | None = None,
        *,
        env_fd: int | None = None,
        groups_fd: int | None = None,
        parent: int | None = None,
        ignore_signals: tuple[int, ...] = (),
        confined: Confined | None = None,
        landlock_fd: int | None = None,
        seccomp_fd: int | None = None,
        notify_fd: int | None = None,
        trace_exec: bool = False,
    ) -> list[str | bytes | os.PathLike[str] | os.PathLike[bytes]]:
        """The stage's options up to and including ``--`` (the program's argv follows).

        ``groups_fd`` must hold :meth:`groups_data` when that is not None; ``parent`` is the
        pid that must stay the stage's parent (with ``die_with_parent``). ``confined`` is the
        spawn's confinement; ``landlock_fd`` and ``seccomp_fd`` hold its ruleset blob and
        filter, ``notify_fd`` the socket its seccomp listener is sent over. ``trace_exec``
        asks the stage to let the parent trace it and stop the program at its exec (verify).
        """
        args: list[str | bytes | os.PathLike[str] | os.PathLike[bytes]] = []
        if report_fd is not None:
            args.append(f"--report-fd={report_fd}")
        if env_fd is not None:
            args.append(f"--env-fd={env_fd}")
        if cgroup_fd is not None:
            args.append(f"--cgroup-fd={cgroup_fd}")
            if self.cgroup_strict:
                args.append("--cgroup-strict")
        args.extend(f"--rlimit={resource}:{value}" for resource, value in self.rlimits)
        c = confined
        if c is not None:
            args.extend(_early_args(c, landlock_fd))
        ident = self.identity
        if ident.uid is not None:
            args.append(f"--uid={ident.uid}")
        if ident.gid is not None:
            args.append(f"--gid={ident.gid}")
        if ident.groups == ():
            args.append("--clear-groups")
        elif ident.groups is not None:
            if groups_fd is None:
                raise ValueError("stage_args: the plan sets groups, so it needs groups_fd")
            args.append(f"--groups-fd={groups_fd}")
        if self.drop_caps:
            args.append(f"--drop-caps={self.keep.to_hex()}")
        if self.strict:
            args.append("--strict")
        if self.lock_securebits:
            args.append("--lock-securebits")
        if self.no_new_privs or (c is not None and c.implied_nnp):
            args.append("--nnp")
        if ignore_signals:
            args.append("--ignore-signals=" + ",".join(map(str, sorted(ignore_signals))))
        if self.die_with_parent:
            args.append(f"--die-with-parent={parent if parent is not None else os.getpid()}")
        if c is not None and c.filter is not None:
            args.extend(_filter_args(c, seccomp_fd, notify_fd))
        if trace_exec:
            # Named, so the stage dies with this process until it is armed (EXITKILL), and a
            # stage whose launcher died first never makes init its tracer.
            args.append(f"--trace-exec={os.getpid()}")
        if executable is not None:
            path = os.fspath(executable)
            args.append(b"--exec=" + path if isinstance(path, bytes) else "--exec=" + path)
        args.append("--")
        return args


def _early_args(c: Confined, landlock_fd: int | None) -> list[str]:
    """The options of the confinement steps that come before the identity switch."""
    args = []
    if c.umask is not None:
        args.append(f"--umask={c.umask:o}")
    if c.unshare:
        args.append("--unshare=" + ",".join(c.unshare))
    if c.hostname is not None:
        args.append("--hostname=" + c.hostname)
    if c.ruleset is not None:
        if landlock_fd is None:
            raise ValueError("stage_args: the confinement has Landlock rules: landlock_fd")
        args.append(f"--landlock-fd={landlock_fd}")
    return args


def _filter_args(c: Confined, seccomp_fd: int | None, notify_fd: int | None) -> list[str]:
    if seccomp_fd is None:
        raise ValueError("stage_args: the confinement filters syscalls: seccomp_fd")
    args = [f"--seccomp-fd={seccomp_fd}"]
    if c.notify:
        if notify_fd is None:
            raise ValueError("stage_args: the filter notifies: notify_fd")
        args.append(f"--seccomp-notify-fd={notify_fd}")
    return args


def compile_plan(policy: Policy) -> Plan:
    """Flatten a (validated) policy into a :class:`Plan`."""
    sec = policy.security
    return Plan(
        drop_caps=sec.drop_all_caps,
        keep=sec.keep_caps if isinstance(sec.keep_caps, CapSet) else CapSet(),
        strict=sec.fail_on_cap_error,
        no_new_privs=sec.no_new_privs,
        identity=sec.identity,
        rlimits=policy.rlimits.limits(),
        cgroup_strict=policy.cgroups is not None and policy.cgroups.fail_on_error,
        die_with_parent=policy.die_with_parent,
        lock_securebits=sec.drop_all_caps and _program_uid(sec.identity) == 0,
    )


def _program_uid(identity: Identity) -> int:
    """The uid the program runs as: the policy's, else this process's effective one."""
    return identity.uid if identity.uid is not None else os.geteuid()
