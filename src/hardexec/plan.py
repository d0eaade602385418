"""Policy → exec-stage arguments. The only module that knows the stage's command line.

The stage reads like util-linux ``setpriv``: one option per step, applied in a fixed,
kernel-correct order whatever order the options come in::

    hardexec-stage [--report-fd=N] [--env-fd=N] [--cgroup-fd=N [--cgroup-strict]]
                   [--rlimit=RES:VALUE...] [--uid=N] [--gid=N] [--groups-fd=N | --clear-groups]
                   [--drop-caps=KEEPHEX] [--strict] [--nnp] [--ignore-signals=N,N]
                   [--die-with-parent=PID] [--exec=PATH] -- PROGRAM [ARG...]

``--drop-caps`` takes the kept set as 16 hex digits (``/proc/<pid>/status`` form);
``--rlimit`` a setrlimit resource number and its value; ``--cgroup-fd`` the group's
``cgroup.procs``, opened by the parent; ``--env-fd`` a memfd of the program's environment
(``NAME=value\0`` entries; the stage itself starts with an empty one); ``--groups-fd`` a memfd
of native 32-bit gids.
Both stage implementations (``stage.c`` and ``twin.py``) parse exactly this.
"""

from __future__ import annotations

import array
import os

from ._record import frozen
from .caps import CapSet
from .policy import Identity, Policy

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
    ) -> list[str | bytes | os.PathLike[str] | os.PathLike[bytes]]:
        """The stage's options up to and including ``--`` (the program's argv follows).

        ``groups_fd`` must hold :meth:`groups_data` when that is not None; ``parent`` is the
        pid that must stay the stage's parent (with ``die_with_parent``).
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
        if self.no_new_privs:
            args.append("--nnp")
        if ignore_signals:
            args.append("--ignore-signals=" + ",".join(map(str, sorted(ignore_signals))))
        if self.die_with_parent:
            args.append(f"--die-with-parent={parent if parent is not None else os.getpid()}")
        if executable is not None:
            path = os.fspath(executable)
            args.append(b"--exec=" + path if isinstance(path, bytes) else "--exec=" + path)
        args.append("--")
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
    )
