"""A worker's ceiling: a submitted task may only narrow it.

A worker that takes tasks from a queue (a trust boundary) has a ceiling, a
:class:`~hardexec.policyfile.PolicyFile`: the most a task may hold, use and touch. A submitted
:class:`~hardexec.runner.TaskSpec` and :class:`~hardexec.Policy` may ask for less — fewer
capabilities, lower limits, more confinement — never for more. :func:`narrow` gives the task
and policy to run, each field the stricter of the two, or raises
:class:`~hardexec.errors.CeilingError` listing every field that asks for more (all of them, not
the first); such a task is never run. A field the submitted policy leaves at its default
(``None``, empty) asks for nothing: the ceiling's value applies.

The rules, field by field ("asked" is the submitted value, "ceiling" the worker's):

``security``
    - ``drop_all_caps``: a ceiling that drops gives a policy that drops; it keeps what the task
      keeps if the task drops too (each capability must be one the ceiling keeps), else the
      ceiling's ``keep_caps``. A ceiling that does not drop takes the task's as given.
    - ``no_new_privs``, ``fail_on_cap_error``: either one's True.
    - ``user``, ``group``, ``supplementary_groups``: compared by the numeric ids they resolve
      to (:attr:`SecurityConfig.identity`), not by name. Where the ceiling sets an id
      (``group`` is set by ``user`` too: the user's primary group and groups), the task must
      leave it out or ask for the same id; its supplementary groups must be among the
      ceiling's. Where the ceiling leaves an id as inherited, the task's applies.
``rlimits``
    Each limit: the lower one (asked above the ceiling's is a violation); ``None`` on either
    side takes the other's. ``disable_core_dumps``: either one's True.
``cgroups``
    A ceiling with a group gives a group: ``memory`` and ``pids`` the lower (asked above is a
    violation), ``cpu`` the smaller share of a CPU (quota / period; no quota is no limit),
    ``fail_on_error`` either one's True, ``keep_at_exit`` the ceiling's (the worker owns its
    groups: a task asking to keep its group is a violation). A ceiling without one takes the
    task's group as asked (more containment is fine).
``cgroup_parent``
    The ceiling's: where groups are made on the worker's machine is the worker's to choose; a
    task naming another directory is a violation.
``die_with_parent``
    Either one's True.
``confinement``
    A ceiling without one takes the task's; a task without one gets the ceiling's. Both:

    - ``namespaces``: both sets (the ceiling's are always kept). ``hostname``: the ceiling's
      when it names one (a task naming another is a violation), else the task's. ``umask``:
      both masks (bitwise or). ``best_effort``: only when both say so (a task asking for it
      under a ceiling that fails closed is a violation; a task whose confinement does not ask
      for it gets its confinement enforced, the ceiling's rules included).
    - ``fs``: with ceiling rules, each rule the task gives must lie at or beneath a ceiling
      rule's path (compared part by part: ``/a`` covers ``/a/b``, not ``/ab``), with access
      within what the ceiling rules covering it allow together (as Landlock adds them up:
      ``ro`` < ``rx``, ``ro`` < ``rw``, ``rx`` and ``rw`` < ``rwx``; ``rx`` and ``rw`` are
      incomparable); the task's rules are then the ones enforced. A task path with a ``..`` part
      is a violation (through a symlink the kernel resolves it elsewhere than its text says). A
      task without rules gets the ceiling's; a ceiling without rules takes the task's.
      ``fs_dependencies``: with rules on both sides, only when both say so; a task asking for
      it (the default) under a ceiling that does not is a violation, since it adds paths
      beyond the rules.
    - ``tcp_bind``, ``tcp_connect``: as Landlock reads them, either list given means TCP is
      restricted and the other list's absence means "no port". A restricting ceiling takes the
      task's lists if the task restricts too (each port must be in the ceiling's list of the
      same kind), else its own. A ceiling that does not restrict takes the task's.
    - ``syscalls``: ``default`` either one's True. ``deny``: both lists; for a syscall both
      deny, the ceiling's action wins (the task's entry naming it is dropped, and the ceiling's
      entries come after the task's, since later entries win). ``allow``: under a ceiling's
      allow-list, the task's allow-list must stay within it once groups are expanded
      (``@default`` is always allowed), and it is the one enforced; a task without one gets
      the ceiling's. Under a deny-list ceiling, the task's allow-list (narrower) applies, with
      the ceiling's denies.

The task (:class:`TaskSpec`) against the ceiling's ``run`` table (:class:`RunSettings`):

- ``timeout``: the lower one (asked above is a violation); ``None`` takes the other's.
- ``kill_after``: the task's, not above the ceiling's (a violation); a task that leaves the
  default (5 s) gets the ceiling's. A ceiling with a timeout but no ``kill_after`` means 5 s,
  as a policy file does, and bounds the task's by that.
- ``env_policy``: compared as the set of variables let through (``"inherit"`` all,
  ``"clear"`` none, a tuple those). A task that says ``"inherit"`` (the default) asks for
  nothing: the ceiling's policy applies — the worker's environment holds its broker's
  credentials, and a ceiling of ``"clear"`` must never leak it. Names the ceiling does not
  let through are a violation.
- ``env``: the ceiling's variables are set over the task's (the worker has the last word, as
  ``Runner(env=)`` does).
- ``max_output``: not a field of the task; the worker applies it itself (``OutputLimits``).

Every other field of a task (its program, script, directory, input, retries, ...) is passed
through: :data:`FIELDS` names each field of each record and what is done with it.

:func:`narrow` is pure: it reads nothing and starts nothing, beyond what building a policy does
itself (user and group names are resolved, a ``cgroup_parent`` is checked). Its result is built
by the records' own constructors, so it is a policy hardexec validated.

Not caught by :func:`narrow`: a ceiling path rule's directory that tasks may write to (``rw``)
may get a symlink made in it, and a later task's rule naming that link is, to the kernel, a rule
for where the link points (the exec stage opens rule paths following links). The worker calls
:func:`check_resolved` just before the run, which resolves each rule's links and checks again;
a link swapped between that check and the stage's open still wins the race, so give such
directories to one task each, or no task rules beneath them.
"""

from __future__ import annotations

import os
import stat

from ._record import replace
from .confine.config import ACCESS, Confinement, PathRule, SyscallFilter
from .errors import CeilingError, shown
from .policy import (
    RLIMIT_FIELDS,
    CgroupLimits,
    CpuMax,
    Policy,
    RlimitConfig,
    SecurityConfig,
)
from .policyfile import PolicyFile, RunSettings
from .runner.spec import TaskSpec

__all__ = ["FIELDS", "check_resolved", "narrow"]

#: Every field of every record :func:`narrow` reads, and what it does with it (a test fails when
#: a record gains a field this does not name: a new field must get a rule, or be passed through
#: on purpose).
FIELDS: dict[type, dict[str, str]] = {
    Policy: {
        "security": "narrowed field by field",
        "rlimits": "narrowed field by field",
        "cgroups": "narrowed field by field; the ceiling's group when the task has none",
        "cgroup_parent": "the ceiling's (the task's must be None or the same)",
        "die_with_parent": "either's True",
        "confinement": "narrowed field by field; either's when the other has none",
    },
    SecurityConfig: {
        "drop_all_caps": "the ceiling's True wins",
        "keep_caps": "a subset of the ceiling's when it drops",
        "no_new_privs": "either's True",
        "fail_on_cap_error": "either's True",
        "user": "the ceiling's uid when it sets one",
        "group": "the ceiling's gid when it sets one (by group or user)",
        "supplementary_groups": "a subset of the ceiling's when it sets them",
        "identity": "derived: resolved again when the result is built",
    },
    RlimitConfig: {
        **{name: "the lower" for name in RLIMIT_FIELDS},
        "disable_core_dumps": "either's True",
    },
    CgroupLimits: {
        "cpu": "the smaller share",
        "memory": "the lower",
        "pids": "the lower",
        "fail_on_error": "either's True",
        "keep_at_exit": "the ceiling's (the task may not ask for True)",
    },
    CpuMax: {
        "quota": "compared as quota / period",
        "period": "compared as quota / period",
    },
    Confinement: {
        "fs": "within the ceiling's rules",
        "fs_dependencies": "both must say so",
        "tcp_bind": "within the ceiling's ports",
        "tcp_connect": "within the ceiling's ports",
        "syscalls": "narrowed field by field",
        "namespaces": "both sets",
        "hostname": "the ceiling's when it names one",
        "umask": "both masks",
        "best_effort": "both must say so",
    },
    SyscallFilter: {
        "allow": "within the ceiling's allow-list",
        "deny": "both lists, the ceiling's action winning",
        "default": "either's True",
    },
    PathRule: {
        "path": "at or beneath a ceiling rule's path",
        "access": "within the ceiling's access there",
    },
    RunSettings: {
        "env_policy": "the task's names within the ceiling's",
        "env": "set over the task's",
        "timeout": "the lower",
        "kill_after": "not above the ceiling's",
        "max_output": "passed through: the worker applies it (OutputLimits)",
    },
    TaskSpec: {
        "argv": "passed through: the program is the task's",
        "body": "passed through",
        "script_args": "passed through",
        "cwd": "passed through: the fs rules, not the directory, bound what it reaches",
        "env": "the ceiling's run.env set over it",
        "env_policy": "within the ceiling's run.env_policy",
        "input": "passed through",
        "timeout": "the lower of it and run.timeout",
        "kill_after": "not above run.kill_after",
        "drain_timeout": "at most the ceiling's kill_after (5 s unsaid) when it bounds time",
        "retries": "passed through (the ceiling has no field for it)",
        "backoff": "passed through",
        "fail_on_non_zero": "passed through",
        "name": "passed through",
        "max_script_bytes": "passed through: the body has arrived already",
    },
}

_DEFAULT_KILL_AFTER = 5.0  # TaskSpec's default, and what a policy file's None means
_PATH = 160  # characters of a path a message shows (whole, but for one that is no path)


def narrow(
    ceiling: PolicyFile, spec: TaskSpec, policy: Policy | None = None
) -> tuple[TaskSpec, Policy]:
    """The task and policy to run: the submitted ones within the ceiling.

    Args:
        ceiling: the worker's ceiling (its policy and run settings).
        spec: the submitted task.
        policy: the submitted policy; ``None`` asks for nothing (the ceiling applies).

    Returns:
        ``(task, policy)``: ``spec`` with the ceiling's time and environment rules applied,
        and the effective policy, each field the stricter of the two (see the module doc).

    Raises:
        CeilingError: the submission asks for more than the ceiling allows; its
            ``violations`` name every such field, one line each.
        PolicyError: the effective policy is invalid where this host checks it (a user or
            group name that no longer resolves, a ``cgroup_parent`` that is gone).
        TypeError: an argument is not of its type.
    """
    if not isinstance(ceiling, PolicyFile):
        raise TypeError(f"ceiling: expected a PolicyFile, got {type(ceiling).__name__}")
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"spec: expected a TaskSpec, got {type(spec).__name__}")
    if policy is None:
        policy = Policy()
    elif not isinstance(policy, Policy):
        raise TypeError(f"policy: expected a Policy or None, got {type(policy).__name__}")
    top = ceiling.policy
    out: list[str] = []
    security = _security(top.security, policy.security, out)
    rlimits = _rlimits(top.rlimits, policy.rlimits, out)
    cgroups = _cgroups(top.cgroups, policy.cgroups, out)
    parent = top.cgroup_parent
    if policy.cgroup_parent is not None and policy.cgroup_parent != parent:
        where = "the group the worker runs in" if parent is None else shown(parent, _PATH)
        out.append(
            f"cgroup_parent: {shown(policy.cgroup_parent, _PATH)}, but the worker chooses "
            f"where its groups are made ({where})"
        )
    confinement = _confinement(top.confinement, policy.confinement, out)
    task = _task(ceiling.run, spec, out)
    if out:
        raise CeilingError(CeilingError.PREFIX + "; ".join(out), violations=tuple(out))
    return task, Policy(
        security=security,
        rlimits=rlimits,
        cgroups=cgroups,
        cgroup_parent=parent,
        die_with_parent=top.die_with_parent or policy.die_with_parent,
        confinement=confinement,
    )


def check_resolved(ceiling: PolicyFile, policy: Policy) -> None:
    """Check the task's own path rules against the filesystem (this reads it, so the worker
    calls it just before the run, after :func:`narrow`).

    :func:`narrow` compares rules as written; the exec stage opens them later, following links,
    with the worker's privileges. So a rule the task chose (any that is not one of the ceiling's
    own, as written) must:

    - exist, and name its target itself: no symlink on its path, which also refuses ``/proc``'s
      magic links (``/proc/self/root`` is ``/``, ``/proc/self/cwd`` the task's directory) and
      a system's own links (``/bin`` into ``/usr/bin``);
    - lie within the ceiling's rules, theirs resolved;
    - have only directories on its path that root alone may change (owned by root, no group or
      other write bit, or sticky with the entry root's): elsewhere a task, or any user, could
      swap in a link between this check and the stage's open.

    Raises:
        CeilingError: naming each such rule and why.
    """
    top, mine = ceiling.policy.confinement, policy.confinement
    if top is None or not top.fs or mine is None:
        return
    own = {(rule.path, rule.access) for rule in top.fs}
    real = Confinement(
        fs=tuple(PathRule(os.path.realpath(r.path), r.access) for r in top.fs),
        fs_dependencies=top.fs_dependencies,
    )
    out: list[str] = []
    for index, rule in enumerate(mine.fs):
        if (rule.path, rule.access) in own:
            continue  # the operator's own rule, as the ceiling gives it
        where = f"confinement.fs[{index}]: {shown(rule.path, _PATH)} ({rule.access})"
        try:
            target = os.path.realpath(rule.path, strict=True)
        except OSError as err:
            out.append(f"{where}: {err.strerror}")
            continue
        if target != os.path.normpath(rule.path):
            out.append(
                f"{where} has a link on its path (it leads to {shown(target, _PATH)}): a task's "
                "rule must name its target itself"
            )
            continue
        beyond: list[str] = []
        _fs(real, Confinement(fs=(PathRule(target, rule.access),), fs_dependencies=False), beyond)
        if beyond:
            out.append(f"{where} is beyond the ceiling's path rules, their links resolved")
            continue
        open_dir = _swappable(target)
        if open_dir is not None:
            out.append(
                f"{where}: {shown(open_dir, _PATH)} on its path may be written by others than "
                "root, who could put a link there before the rule is used; a task's rule may "
                "name only what root alone controls (or be one of the ceiling's own)"
            )
    if out:
        raise CeilingError(CeilingError.PREFIX + "; ".join(out), violations=tuple(out))


def _swappable(path: str) -> str | None:
    """The first directory on ``path`` in which someone but root could replace the next entry
    (its owner is not root, or a group or other write bit is set: in a sticky directory, unless
    the entry is root's too), or None."""
    parts = [part for part in path.split("/") if part]
    for depth in range(len(parts)):
        parent = "/" + "/".join(parts[:depth])
        here, entry = os.lstat(parent), os.lstat(os.path.join(parent, parts[depth]))
        if here.st_uid != 0:
            return parent
        if not here.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            continue
        if here.st_mode & stat.S_ISVTX and entry.st_uid == 0:
            continue  # /tmp: root's entry cannot be renamed or removed by anyone else
        return parent
    return None


# --- security ------------------------------------------------------------------------------


def _security(top: SecurityConfig, asked: SecurityConfig, out: list[str]) -> SecurityConfig:
    drop, keep = asked.drop_all_caps, asked.keep_caps
    if top.drop_all_caps:
        drop = True
        if asked.drop_all_caps:
            extra = keep - top.keep_caps
            if extra:
                names = extra.names()
                kept = ", ".join(top.keep_caps.names()) or "none"
                out.append(
                    f"security.keep_caps: {', '.join(names)} {_is(names)} not kept by this "
                    f"worker's ceiling (it keeps {kept})"
                )
        else:
            keep = top.keep_caps  # the task left capabilities alone: the ceiling's apply
    mine, theirs = top.identity, asked.identity
    user = asked.user
    if mine.uid is not None:
        user = top.user
        if asked.user is not None and theirs.uid != mine.uid:
            out.append(
                f"security.user: {shown(asked.user)} (uid {theirs.uid}), the ceiling runs tasks "
                f"as {shown(top.user)} (uid {mine.uid})"
            )
    group = asked.group
    if mine.gid is not None:
        group = top.group  # None here means the ceiling's user's primary group: the same
        if asked.group is not None and theirs.gid != mine.gid:
            if top.group is not None:
                allowed = f"group {shown(top.group)} (gid {mine.gid})"
            else:
                allowed = f"gid {mine.gid} (the primary group of {shown(top.user)})"
            out.append(
                f"security.group: {shown(asked.group)} (gid {theirs.gid}), the ceiling runs "
                f"tasks with {allowed}"
            )
    groups = asked.supplementary_groups
    if mine.groups is not None:
        if asked.supplementary_groups is None:
            if top.supplementary_groups is not None or top.user is not None:
                groups = top.supplementary_groups  # with the ceiling's user: its groups again
            else:
                groups = mine.groups  # a ceiling group alone clears them, whoever the user
        else:
            given = dict(zip(theirs.groups or (), asked.supplementary_groups, strict=True))
            extra = [gid for gid in given if gid not in mine.groups]
            if extra:
                shown_extra = [_group_shown(given[gid], gid) for gid in extra]
                ids = ", ".join(str(gid) for gid in mine.groups)
                out.append(
                    f"security.supplementary_groups: {', '.join(shown_extra)} {_is(extra)} not "
                    f"among the ceiling's supplementary groups ({f'gid {ids}' if ids else 'none'})"
                )
    return SecurityConfig(
        drop_all_caps=drop,
        keep_caps=keep if drop else (),
        no_new_privs=top.no_new_privs or asked.no_new_privs,
        fail_on_cap_error=top.fail_on_cap_error or asked.fail_on_cap_error,
        user=user,
        group=group,
        supplementary_groups=groups,
    )


def _group_shown(given: str | int, gid: int) -> str:
    return f"gid {gid}" if given == gid or given == str(gid) else f"{shown(given)} (gid {gid})"


# --- limits --------------------------------------------------------------------------------


def _lower(
    name: str, top: int | float | None, asked: int | float | None, out: list[str]
) -> int | float | None:
    """The lower of two optional limits; asking above the ceiling's is a violation."""
    if top is None:
        return asked
    if asked is None:
        return top
    if asked > top:
        out.append(f"{name}: {_amount(asked)} is above the ceiling's {_amount(top)}")
        return top
    return asked


def _amount(value: int | float) -> str:
    """A limit as a message says it: seconds (floats, the times) or a plain count."""
    return f"{value:g} s" if isinstance(value, float) else str(value)


def _rlimits(top: RlimitConfig, asked: RlimitConfig, out: list[str]) -> RlimitConfig:
    values = {
        name: _lower(f"rlimits.{name}", getattr(top, name), getattr(asked, name), out)
        for name in RLIMIT_FIELDS
    }
    return RlimitConfig(
        disable_core_dumps=top.disable_core_dumps or asked.disable_core_dumps, **values
    )


def _cgroups(
    top: CgroupLimits | None, asked: CgroupLimits | None, out: list[str]
) -> CgroupLimits | None:
    if top is None:
        return asked  # a group of the task's own: more containment than none
    if asked is None:
        return top
    if asked.keep_at_exit and not top.keep_at_exit:
        out.append(
            "cgroups.keep_at_exit: True, but the worker owns its groups (they end with their "
            "processes when it exits)"
        )
    return CgroupLimits(
        cpu=_cpu(top.cpu, asked.cpu, out),
        memory=_lower("cgroups.memory", top.memory, asked.memory, out),
        pids=_lower("cgroups.pids", top.pids, asked.pids, out),
        fail_on_error=top.fail_on_error or asked.fail_on_error,
        keep_at_exit=top.keep_at_exit,
    )


def _cpu(top: CpuMax | None, asked: CpuMax | None, out: list[str]) -> CpuMax | None:
    if top is None or top.quota is None:
        return asked if asked is not None else top
    if asked is None:
        return top
    # quota/period compared without rounding: a.q / a.p > t.q / t.p
    if asked.quota is None or asked.quota * top.period > top.quota * asked.period:
        out.append(f"cgroups.cpu: {_cpus(asked)} is above the ceiling's {_cpus(top)}")
        return top
    return asked


def _cpus(cpu: CpuMax) -> str:
    if cpu.quota is None:
        return "no limit"
    return f"{cpu.quota / cpu.period:g} CPUs ({cpu.quota}/{cpu.period} µs)"


# --- confinement ---------------------------------------------------------------------------


def _confinement(
    top: Confinement | None, asked: Confinement | None, out: list[str]
) -> Confinement | None:
    if top is None:
        return asked
    if asked is None:
        return top
    hostname = asked.hostname
    if top.hostname is not None:
        hostname = top.hostname
        if asked.hostname is not None and asked.hostname != top.hostname:
            out.append(
                f"confinement.hostname: {shown(asked.hostname)}, the ceiling names the host "
                f"{shown(top.hostname)}"
            )
    if asked.best_effort and not top.best_effort:
        out.append(
            "confinement.best_effort: True, but the ceiling's confinement is enforced (it "
            "fails closed)"
        )
    if top.umask is None or asked.umask is None:
        umask = top.umask if asked.umask is None else asked.umask
    else:
        umask = top.umask | asked.umask
    fs, dependencies = _fs(top, asked, out)
    bind, connect = _tcp(top, asked, out)
    return Confinement(
        fs=fs,
        fs_dependencies=dependencies,
        tcp_bind=bind,
        tcp_connect=connect,
        syscalls=_syscalls(top.syscalls, asked.syscalls, out),
        namespaces=(*top.namespaces, *asked.namespaces),
        hostname=hostname,
        umask=umask,
        best_effort=top.best_effort and asked.best_effort,
    )


def _parts(path: str) -> tuple[str, ...]:
    """A path's parts as written ("." and empty parts are nothing; ".." is kept: its meaning
    depends on the symlinks on the way, which only the kernel sees)."""
    return tuple(part for part in path.split("/") if part not in ("", "."))


def _fs(top: Confinement, asked: Confinement, out: list[str]) -> tuple[tuple[PathRule, ...], bool]:
    if not top.fs:
        return asked.fs, asked.fs_dependencies
    if not asked.fs:
        return top.fs, top.fs_dependencies
    from .confine.landlock import ACCESS_RIGHTS  # constants: Landlock's rights of each word

    if asked.fs_dependencies and not top.fs_dependencies:
        out.append(
            "confinement.fs_dependencies: True adds the program's own files beyond the path "
            "rules, and the ceiling does not (set fs_dependencies=False and give rules for them)"
        )
    ceiling = [(_parts(rule.path), ACCESS_RIGHTS[rule.access]) for rule in top.fs]
    for index, rule in enumerate(asked.fs):
        parts = _parts(rule.path)
        where = f"confinement.fs[{index}]: {shown(rule.path, _PATH)} ({rule.access})"
        if ".." in parts:
            out.append(
                f"{where} has a '..' part; paths are compared as written under a ceiling, so "
                "name the directory itself"
            )
            continue
        # Landlock adds up the rules of a path and of every directory above it.
        rights = 0
        for prefix, granted in ceiling:
            if parts[: len(prefix)] == prefix:
                rights |= granted
        wanted = ACCESS_RIGHTS[rule.access]
        if wanted & ~rights:
            if rights:
                word = next((w for w in ACCESS if ACCESS_RIGHTS[w] == rights), "rw+rx")
                allowed = f"the ceiling allows {word} there"
            else:
                allowed = "no ceiling rule covers it"
            out.append(f"{where} is beyond the ceiling's path rules ({allowed})")
    return asked.fs, asked.fs_dependencies  # True only where the ceiling's is (else refused)


def _tcp(
    top: Confinement, asked: Confinement, out: list[str]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if not (top.tcp_bind or top.tcp_connect):
        return asked.tcp_bind, asked.tcp_connect
    if not (asked.tcp_bind or asked.tcp_connect):
        return top.tcp_bind, top.tcp_connect
    for name in ("tcp_bind", "tcp_connect"):
        allowed = getattr(top, name)
        extra = [port for port in getattr(asked, name) if port not in allowed]
        if extra:
            ports = ", ".join(map(str, allowed)) or "none"
            out.append(
                f"confinement.{name}: port {', '.join(map(str, extra))} {_is(extra)} not "
                f"among the ceiling's ({ports})"
            )
    return asked.tcp_bind, asked.tcp_connect


def _members(entry: str) -> set[str]:
    """The syscall names a rule entry stands for (actions dropped), by hardexec's groups."""
    from .confine import groups

    name = entry.partition(":")[0]
    if not name.startswith("@"):
        return {name}
    return {member.partition(":")[0] for member in groups.expand(name)[0]}


def _syscalls(
    top: SyscallFilter | None, asked: SyscallFilter | None, out: list[str]
) -> SyscallFilter | None:
    if top is None:
        return asked
    if asked is None:
        return top
    allow = asked.allow if asked.allow is not None else top.allow
    if top.allow is not None and asked.allow is not None:
        allowed = set().union(*map(_members, (*top.allow, "@default")))
        beyond = []
        for entry in asked.allow:
            extra = sorted(_members(entry) - allowed)
            if extra:
                shown_extra = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
                beyond.append(entry if extra == [entry] else f"{entry} ({shown_extra})")
        if beyond:
            out.append(
                f"confinement.syscalls.allow: {', '.join(beyond)} {_is(beyond)} beyond the "
                "ceiling's allow-list"
            )
    # Among deny entries, names win over groups and a later entry over an earlier one
    # (confine.seccomp): the ceiling's come after the task's of their kind, and a name the
    # task denies that the ceiling denies too is the ceiling's to answer.
    theirs = set().union(*map(_members, top.deny), _members("@default-deny") if top.default else ())
    groups = [e for e in asked.deny if e.startswith("@") and e not in top.deny]
    names = [e for e in asked.deny if not e.startswith("@") and e.partition(":")[0] not in theirs]
    # default=True's @default-deny comes first of all: said again after the task's groups,
    # its actions (EPERM, clone3's ENOSYS) win over theirs.
    again = ("@default-deny",) if top.default and groups else ()
    deny = (
        *groups,
        *again,
        *(e for e in top.deny if e.startswith("@")),
        *names,
        *(e for e in top.deny if not e.startswith("@")),
    )
    return SyscallFilter(allow=allow, deny=deny, default=top.default or asked.default)


# --- the task ------------------------------------------------------------------------------


def _env_names(policy: str | tuple[str, ...]) -> frozenset[str] | None:
    """The variables an env_policy lets through; None: all of them."""
    if policy == "inherit":
        return None
    return frozenset() if policy == "clear" else frozenset(policy)


def _task(run: RunSettings, spec: TaskSpec, out: list[str]) -> TaskSpec:
    timeout = _lower("task.timeout", run.timeout, spec.timeout, out)
    bound = run.kill_after
    if bound is None and run.timeout is not None:
        bound = _DEFAULT_KILL_AFTER  # what the ceiling's file means by leaving it out
    kill_after = spec.kill_after
    if bound is not None:
        if spec.kill_after == _DEFAULT_KILL_AFTER:
            kill_after = bound  # the task left the default: the ceiling's grace applies
        else:
            kill_after = _lower("task.kill_after", bound, spec.kill_after, out)
    drain = spec.drain_timeout
    if bound is not None:
        # How long a tree may outlive its program holding its output (a daemonised grandchild):
        # the ceiling's time bound would mean nothing if a task could lengthen this at will.
        drain = _lower("task.drain_timeout", max(bound, _DEFAULT_KILL_AFTER), drain, out)
    env_policy = spec.env_policy
    if spec.env_policy == "inherit":
        env_policy = run.env_policy  # asks for nothing: never more than the ceiling lets out
    else:
        allowed = _env_names(run.env_policy)
        asked = spec.env_policy if isinstance(spec.env_policy, tuple) else ()
        extra = [name for name in asked if allowed is not None and name not in allowed]
        if extra:
            if run.env_policy == "clear":
                lets = "it clears the environment"
            else:
                lets = f"it lets through only {', '.join(run.env_policy)}"
            out.append(
                f"task.env_policy: {', '.join(extra)} {_is(extra)} not let through by the "
                f"ceiling ({lets})"
            )
    env = dict(spec.env)
    env.update(run.env)  # the worker has the last word
    return replace(
        spec,
        timeout=timeout,
        kill_after=kill_after,
        drain_timeout=drain,
        env_policy=env_policy,
        env=tuple(env.items()),
    )


def _is(items: object) -> str:
    return "is" if len(items) == 1 else "are"  # type: ignore[arg-type]
