"""What a run would give a program, and how exposed it stays, without running anything.

:func:`explain` puts together, for one program and one policy, from this process and this host:

- the **prediction** (:mod:`hardexec.predict`): the five capability sets, NoNewPrivs and ids
  the program would hold after its exec, the capability warnings, and whether hardexec would
  refuse the run;
- the **rlimits** the stage would set (soft = hard = min(asked, the launcher's hard limit)),
  as numbers and readable sizes;
- the **cgroup**: where the group would go (:func:`hardexec.cgroups.default_parent`, or
  ``cgroup_parent``), the files written (``memory.max``, ``pids.max``, ``cpu.max``), and whether
  the parent offers the controllers they need; nothing is created;
- the **confinement** in words, as ``confine.compile`` compiles it for this kernel and this
  program: Landlock rules with the automatic dependencies (``confine/deps.py``), TCP ports,
  the seccomp filter, namespaces (``user`` added for a launcher without CAP_SYS_ADMIN), umask,
  host name, and what best effort would leave out;
- the **warnings** the run would give (capability steps, best-effort confinement, the cgroup)
  and the launcher's notes (an implied ``no_new_privs``);
- an **exposure score**, 0.0 (fully confined) to 10.0 (unconfined root), in the manner of
  ``systemd-analyze security``: each check of :data:`CHECKS` that fails adds its weight, and
  the sum is normalised to 10 (:func:`score`).

Refusals: a run hardexec would refuse (a capability step that must not be skipped, an identity
step the launcher cannot take, a confinement this kernel cannot enforce, a cgroup that cannot
be made when it is required, a program that cannot be found or executed — a ``#!`` script's
interpreter included —, a verified run whose program would hold more than the policy, or one
with a pid namespace) is an explanation with ``refused`` set; :func:`explain` itself raises
only for a bad argument.
"""

from __future__ import annotations

import errno
import os

from ._record import field, frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from .caps import CapSet
    from .confine.compile import Confined
    from .confine.config import Confinement
    from .policy import Policy
    from .predict import Launcher, Prediction
    from .runner.spec import TaskSpec

__all__ = [
    "CHECKS",
    "CgroupPlan",
    "Check",
    "CheckResult",
    "Explanation",
    "Rlimit",
    "explain",
    "level",
    "score",
]

SCHEMA_VERSION = 1


@frozen
class Check:
    """One check of the exposure score: it fails when the program stays exposed this way.

    Attributes:
        name: a stable identifier (``caps.sys_admin``, ``seccomp``, ...).
        weight: what a failure adds to the score before it is normalised.
        title: what is checked, in a few words.
        why: what a failure leaves open.
    """

    name: str
    weight: float
    title: str
    why: str


#: The exposure checks, in the order they are shown. The score is the sum of the weights of
#: those that fail, normalised to 0..10 by the sum of all weights (:func:`score`).
CHECKS: tuple[Check, ...] = (
    Check(
        "caps.sys_admin",
        1.5,
        "holds CAP_SYS_ADMIN",
        "nearly root: mount, namespaces, BPF and most of the kernel's privileged interfaces",
    ),
    Check(
        "caps.escalating",
        1.0,
        "holds a capability that leads to root",
        "SYS_MODULE, SYS_RAWIO, SYS_PTRACE, DAC_OVERRIDE, SETUID, SETPCAP, BPF, ...: each is "
        "enough to take the whole machine",
    ),
    Check(
        "caps.any",
        0.5,
        "holds any capability",
        "every capability held is a privileged kernel path the program can reach",
    ),
    Check(
        "caps.bounding",
        0.4,
        "a bounding set, and no no_new_privs",
        "a set-user-ID-root or file-capability program it runs gains what the bounding set "
        "holds, whatever it holds itself",
    ),
    Check(
        "uid0",
        1.0,
        "runs as uid 0",
        "root owns most files, /proc/sys and the cgroup files: it can write them without any "
        "capability",
    ),
    Check(
        "no_new_privs",
        0.7,
        "no_new_privs is off",
        "set-user-ID programs and file capabilities can raise its privileges",
    ),
    Check(
        "seccomp",
        0.8,
        "no syscall filter",
        "the kernel's whole syscall surface is reachable",
    ),
    Check(
        "network",
        0.6,
        "the host's network (no network namespace)",
        "it can connect, listen and send anywhere the host can (Landlock's TCP rules leave UDP "
        "and unix sockets open)",
    ),
    Check(
        "fs.write",
        0.8,
        "the whole filesystem writable",
        "no Landlock rule denies writing: it can change any file its uid may write",
    ),
    Check(
        "fs.read",
        0.5,
        "the whole filesystem readable",
        "no Landlock rule denies reading: it can read any file its uid may, keys and tokens "
        "included",
    ),
    Check(
        "pid_ns",
        0.3,
        "no pid namespace",
        "it sees the host's processes, and can signal those of its uid",
    ),
    Check(
        "ipc_ns",
        0.1,
        "no IPC namespace",
        "it shares System V IPC and POSIX message queues with the host",
    ),
    Check(
        "tree",
        0.3,
        "no cgroup and no pid namespace",
        "a descendant that calls setsid() escapes the tree kill and outlives the program",
    ),
    Check(
        "limit.pids",
        0.3,
        "no process limit (pids.max, RLIMIT_NPROC)",
        "a fork bomb can exhaust the host's process table",
    ),
    Check(
        "limit.memory",
        0.4,
        "no memory limit (memory.max, RLIMIT_AS)",
        "it can take the host's memory, and the OOM killer may pick someone else",
    ),
    Check(
        "limit.cpu",
        0.2,
        "no CPU limit (cpu.max, RLIMIT_CPU)",
        "it can keep every CPU busy for as long as it runs",
    ),
    Check(
        "limit.nofile",
        0.1,
        "no open-file limit (RLIMIT_NOFILE)",
        "it can hold as many files and sockets as the launcher may",
    ),
    Check(
        "limit.fsize",
        0.1,
        "no file-size limit (RLIMIT_FSIZE)",
        "it can fill the disk",
    ),
    Check(
        "limit.core",
        0.2,
        "core dumps allowed (RLIMIT_CORE)",
        "a crash writes its memory, secrets included, to disk",
    ),
)

# Capabilities any one of which is enough to become full root (the "caps.escalating" check).
ESCALATING = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_PTRACE",
    "SYS_BOOT",
    "SETFCAP",
    "MKNOD",
    "MAC_ADMIN",
    "BPF",
    "NET_ADMIN",
    "SYS_ADMIN",
    "CHECKPOINT_RESTORE",
)


@frozen
class CheckResult:
    """One check's outcome for this run.

    Attributes:
        check: the :class:`Check`.
        passed: True when the program is not exposed this way.
        detail: what decided it, in words.
    """

    check: Check
    passed: bool
    detail: str = ""


@frozen
class Rlimit:
    """One rlimit the stage would set: soft = hard = ``value``.

    Attributes:
        name: ``NOFILE``, ``FSIZE``, ``CORE``, ...
        resource: its setrlimit number.
        asked: what the policy asks.
        value: what the program gets: min(asked, the launcher's hard limit).
        readable: ``value`` in words (``64M`` for a size, ``1024`` for a count).
    """

    name: str
    resource: int
    asked: int
    value: int
    readable: str


@frozen
class CgroupPlan:
    """The cgroup the run would make (nothing is made to find out).

    Attributes:
        parent: the directory the group would go in, or None when none can be found.
        name: the group's name pattern (``hardexec-<pid>-<seq>-<time>``).
        files: ``(file, value)`` written into it: ``memory.max``, ``pids.max``, ``cpu.max``.
        controllers: the controllers those need enabled in the parent.
        usable: whether the parent offers them (and cgroup v2 is there at all).
        why: why not, in the kernel's terms, else None.
        required: whether a group that cannot be made refuses the run (``fail_on_error``).
    """

    parent: str | None
    name: str
    files: tuple[tuple[str, str], ...]
    controllers: tuple[str, ...]
    usable: bool
    why: str | None = None
    required: bool = False


@frozen
class Explanation:
    """Everything :func:`explain` found, for text or :meth:`to_dict`.

    Attributes:
        argv: the program and its arguments.
        launcher: the launching process's credentials (before).
        prediction: what the program would hold (after its exec).
        rlimits: the rlimits it would get.
        cgroup: its cgroup, or None without one.
        confinement: the confinement in words: ``(topic, text)`` pairs.
        warnings: the warnings the run would give.
        notes: the launcher's notes (an implied ``no_new_privs``).
        refused: why hardexec would refuse the run, or None.
        exit_status: ``hardexec run``'s exit status when refused (125, 126, 127), else None.
        checks: each exposure check's outcome, in :data:`CHECKS` order.
        score: the exposure score, 0.0 .. 10.0 (:func:`score`).
        timeout: the task's timeout in seconds, or None.
    """

    argv: tuple[str, ...]
    launcher: Launcher
    prediction: Prediction
    rlimits: tuple[Rlimit, ...] = ()
    cgroup: CgroupPlan | None = None
    confinement: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    refused: str | None = None
    exit_status: int | None = None
    checks: tuple[CheckResult, ...] = ()
    score: float = 0.0
    timeout: float | None = None
    policy: Policy | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """This explanation as JSON-ready data, schema ``"version": 1``.

        Keys: ``version``, ``argv``, ``program`` (the file execve would run, or null),
        ``refused`` (null or one line), ``exit_status``, ``launcher`` and ``predicted`` (each
        ``sets`` — ``CapInh`` .. ``CapAmb`` as ``{"hex", "caps"}`` — ``no_new_privs``, ``uids``,
        ``gids``, ``groups``, ``securebits``; ``predicted`` also ``user_namespace`` and
        ``trace``), ``rlimits`` (``name``, ``resource``, ``asked``, ``value``, ``readable``),
        ``cgroup`` (null, or ``parent``, ``name``, ``files``, ``controllers``, ``usable``,
        ``why``, ``required``), ``confinement`` (``[topic, text]`` pairs), ``warnings``,
        ``notes``, ``timeout``, ``score``, ``level`` (:func:`level`), ``checks`` (``name``,
        ``weight``, ``title``, ``why``, ``passed``, ``detail``).
        """
        p, launcher = self.prediction, self.launcher

        def sets(found: dict[str, Any]) -> dict[str, Any]:
            return {name: {"hex": s.to_hex(), "caps": s.names()} for name, s in found.items()}

        return {
            "version": SCHEMA_VERSION,
            "argv": list(self.argv),
            "program": p.program,
            "refused": self.refused,
            "exit_status": self.exit_status,
            "launcher": {
                "sets": sets(_launcher_sets(launcher)),
                "no_new_privs": launcher.no_new_privs,
                "uids": list(launcher.uids),
                "gids": list(launcher.gids),
                "groups": list(launcher.groups),
                "securebits": launcher.securebits,
            },
            "predicted": {
                "sets": sets(p.sets()),
                "no_new_privs": p.no_new_privs,
                "uids": list(p.uids),
                "gids": list(p.gids),
                "groups": list(p.groups),
                "securebits": p.securebits,
                "user_namespace": p.user_namespace,
                "trace": list(p.trace),
            },
            "rlimits": [
                {
                    "name": r.name,
                    "resource": r.resource,
                    "asked": r.asked,
                    "value": r.value,
                    "readable": r.readable,
                }
                for r in self.rlimits
            ],
            "cgroup": None
            if self.cgroup is None
            else {
                "parent": self.cgroup.parent,
                "name": self.cgroup.name,
                "files": dict(self.cgroup.files),
                "controllers": list(self.cgroup.controllers),
                "usable": self.cgroup.usable,
                "why": self.cgroup.why,
                "required": self.cgroup.required,
            },
            "confinement": [list(pair) for pair in self.confinement],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "timeout": self.timeout,
            "score": self.score,
            "level": level(self.score),
            "checks": [
                {
                    "name": r.check.name,
                    "weight": r.check.weight,
                    "title": r.check.title,
                    "why": r.check.why,
                    "passed": r.passed,
                    "detail": r.detail,
                }
                for r in self.checks
            ],
        }


def _launcher_sets(launcher: Launcher) -> dict[str, Any]:
    return {
        "CapInh": launcher.inh,
        "CapPrm": launcher.prm,
        "CapEff": launcher.eff,
        "CapBnd": launcher.bnd,
        "CapAmb": launcher.amb,
    }


def score(results: Sequence[CheckResult]) -> float:
    """The exposure score: the failed checks' weights over all the weights, times 10, to one
    decimal (0.0: every check passes; 10.0: every check fails)."""
    total = sum(r.check.weight for r in results)
    failed = sum(r.check.weight for r in results if not r.passed)
    return round(10 * failed / total, 1) if total else 0.0


#: The words for a score, as ``systemd-analyze security`` gives them: up to each bound.
LEVELS = ((2.0, "OK"), (5.0, "MEDIUM"), (8.0, "EXPOSED"), (10.0, "UNSAFE"))


def level(value: float) -> str:
    """``OK`` (up to 2.0), ``MEDIUM`` (5.0), ``EXPOSED`` (8.0) or ``UNSAFE`` for a score."""
    return next(word for bound, word in LEVELS if value <= bound or bound == LEVELS[-1][0])


# ---- rlimits ----------------------------------------------------------------------------

_SIZES = {"FSIZE", "AS", "STACK", "CORE"}


def readable_size(value: int) -> str:
    """``64M`` for 67108864 (exact, powers of 1024), else the bytes with one rounded unit."""
    units = (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10))
    for unit, size in units:
        if value >= size and value % size == 0:
            return f"{value // size}{unit}"
    for unit, size in units:
        if value >= size:
            return f"{value} bytes (~{value / size:.1f}{unit})"
    return f"{value} bytes"


def _rlimits(policy: Policy) -> tuple[Rlimit, ...]:
    import resource

    from .policy import RLIMIT_CORE, RLIMIT_FIELDS

    names = {number: name for name, number in [*RLIMIT_FIELDS.values(), ("CORE", RLIMIT_CORE)]}
    found = []
    for number, asked in policy.rlimits.limits():
        hard = resource.getrlimit(number)[1]
        value = asked if hard == resource.RLIM_INFINITY else min(asked, hard)
        name = names[number]
        if name == "CORE" and value == 0:
            text = "0 (no core dumps)"
        elif name in _SIZES:
            text = readable_size(value)
        elif name == "CPU":
            text = f"{value} s of CPU"
        else:
            text = str(value)
        found.append(Rlimit(name, number, asked, value, text))
    return tuple(found)


# ---- the cgroup -------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _cgroup(policy: Policy) -> tuple[CgroupPlan | None, str | None]:
    """The group the run would make, and the warning it would give when it cannot."""
    limits = policy.cgroups
    if limits is None:
        return None, None
    from . import cgroups
    from .errors import CgroupError, StageWarning

    files = tuple(limits.files().items())
    needed = limits.controllers()
    name = f"hardexec-{os.getpid()}-<seq>-<time>"
    parent: str | None = None
    why: str | None = None
    number = errno.EOPNOTSUPP
    try:
        base = (
            policy.cgroup_parent if policy.cgroup_parent is not None else cgroups.default_parent()
        )
        parent = str(base)
        enabled = (_read(os.path.join(parent, "cgroup.subtree_control")) or "").split()
        offered = (_read(os.path.join(parent, "cgroup.controllers")) or "").split()
        absent = [c for c in needed if c not in offered]
        missing = [c for c in needed if c not in enabled]
        if absent:
            why = (
                f"the {' and '.join(absent)} controller{'s are' if len(absent) > 1 else ' is'} "
                f"not available in {parent} (its cgroup.controllers offers: "
                f"{' '.join(offered) or 'none'}); it may be bound to a cgroup v1 hierarchy, or "
                "not delegated to this group"
            )
        elif missing and (_read(os.path.join(parent, "cgroup.procs")) or "").strip():
            number = errno.EBUSY
            why = (
                f"cannot enable {' '.join(missing)} for groups under {parent}: it holds "
                "processes itself (the kernel's no-internal-processes rule)"
            )
        elif not os.access(parent, os.W_OK):
            number = errno.EACCES
            why = f"creating a group in {parent}: the group is not delegated to this user"
    except (CgroupError, OSError) as err:
        number = err.errno or errno.ENOENT
        why = err.strerror or str(err)
    plan = CgroupPlan(
        parent=parent,
        name=name,
        files=files,
        controllers=needed,
        usable=why is None,
        why=why,
        required=limits.fail_on_error,
    )
    if why is None or limits.fail_on_error:
        return plan, None
    # Launch._make_cgroup's words: the program runs without the group.
    without = (
        "without its cgroup limits (" + ", ".join(f"{n}={v}" for n, v in files) + ")"
        if files
        else "without a cgroup of its own (no usage from it, no cgroup.kill)"
    )
    return plan, str(StageWarning("cgroup", number, f"the program runs {without}: {why}", why))


# ---- the confinement in words -----------------------------------------------------------


def _asked(c: Confinement) -> tuple[tuple[str, str], ...]:
    words = [("asked fs " + rule.access, rule.path) for rule in c.fs]
    for name in ("tcp_bind", "tcp_connect"):
        if getattr(c, name):
            words.append(("asked " + name, ", ".join(map(str, getattr(c, name)))))
    if c.syscalls is not None:
        words.append(("asked seccomp", "allow-list" if c.syscalls.allow else "deny-list"))
    if c.namespaces:
        words.append(("asked namespaces", ", ".join(c.namespaces)))
    return tuple(words)


def _confinement(policy: Policy, confined: Confined | None) -> tuple[tuple[str, str], ...]:
    c = policy.confinement
    if c is None or c.is_empty():
        return ()
    if confined is None:  # refused before it was compiled: say what was asked
        return _asked(c)
    words: list[tuple[str, str]] = []
    if confined.unshare:
        spaces = list(confined.unshare)
        text = ", ".join(spaces)
        if "user" in spaces and "user" not in c.namespaces:
            text += " (user added: the launcher lacks CAP_SYS_ADMIN; the program keeps its ids)"
        words.append(("namespaces", text))
    if "net" in confined.unshare:
        words.append(("network", "a namespace of its own with only lo, up"))
    if confined.hostname is not None:
        words.append(("hostname", confined.hostname))
    if confined.umask is not None:
        words.append(("umask", f"{confined.umask:04o}"))
    ruleset = confined.ruleset
    if ruleset is not None:
        if ruleset.handled_fs:
            words.append(("landlock", f"ABI {ruleset.abi}: every file access not allowed below"))
        for index, (path, _) in enumerate(ruleset.rules):
            access = ruleset.access[index] if index < len(ruleset.access) else ""
            dep = index < len(ruleset.found) and ruleset.found[index]
            words.append(("fs " + access, path + (" (needed to start the program)" if dep else "")))
        if ruleset.handled_net:
            bind = [str(port) for port, rights in ruleset.ports if rights & 1]
            connect = [str(port) for port, rights in ruleset.ports if rights & 2]
            words.append(("tcp bind", ", ".join(bind) or "none"))
            words.append(("tcp connect", ", ".join(connect) or "none"))
        if ruleset.scoped:
            words.append(("scopes", "no abstract unix sockets or signals outside its domain"))
        for what in ruleset.unenforced:
            words.append(("not enforced", what))
    f = c.syscalls
    if f is not None and confined.filter is not None:
        if f.allow is not None:
            mode = "allow-list: " + ", ".join(("@default", *f.allow)) + "; the rest get ENOSYS"
        else:
            mode = "deny-list"
            if f.default:
                mode += ": hardexec's default (@default-deny)"
        words.append(("seccomp", mode))
        if f.deny:
            words.append(("seccomp deny", ", ".join(f.deny)))
        words.append(
            (
                "seccomp counts",
                "denied syscalls are counted" if confined.notify else "denials are not counted",
            )
        )
    if c.best_effort:
        words.append(("best effort", "what this kernel cannot enforce is left out, with a warning"))
    return tuple(words)


# ---- the exposure checks ----------------------------------------------------------------


def _checks(
    policy: Policy, p: Prediction, confined: Confined | None, cgroup: CgroupPlan | None
) -> tuple[CheckResult, ...]:
    from .caps import CapSet

    held = p.prm | p.amb | p.eff
    where = " (in its own user namespace)" if p.user_namespace else ""
    unshare = confined.unshare if confined is not None else ()
    ruleset = confined.ruleset if confined is not None else None
    limits = dict(r for r in ((x.name, x.value) for x in _rlimits(policy)))
    files = dict(cgroup.files) if cgroup is not None and cgroup.usable else {}
    escalating = CapSet.of(*ESCALATING) & held
    fs_write = fs_read = False
    if ruleset is not None and ruleset.handled_fs:
        roots = [
            ruleset.access[i] if i < len(ruleset.access) else "rwx"
            for i, (path, _) in enumerate(ruleset.rules)
            if path == "/"
        ]
        fs_write = not any("w" in word for word in roots)
        fs_read = not roots
    admin = 21 in held
    regains = bool(p.bnd) and not p.no_new_privs
    outcomes = {
        "caps.sys_admin": (
            not admin,
            "CAP_SYS_ADMIN" + (" held" + where if admin else " not held"),
        ),
        "caps.escalating": (not escalating, _caps_words(escalating) + where),
        "caps.any": (not held, _caps_words(held) + where),
        "caps.bounding": (
            not regains,
            f"CapBnd {_caps_words(p.bnd)}, NoNewPrivs {int(p.no_new_privs)}",
        ),
        "uid0": (0 not in p.uids[:2], f"uid {p.uids[0]}, euid {p.uids[1]}"),
        "no_new_privs": (p.no_new_privs, "NoNewPrivs " + ("1" if p.no_new_privs else "0")),
        "seccomp": (
            confined is not None and confined.filter is not None,
            "a seccomp filter" if confined is not None and confined.filter is not None else "none",
        ),
        "network": ("net" in unshare, "a network namespace" if "net" in unshare else "host's"),
        "fs.write": (fs_write, "Landlock denies writes" if fs_write else "no Landlock write rule"),
        "fs.read": (fs_read, "Landlock denies reads" if fs_read else "no Landlock read rule"),
        "pid_ns": ("pid" in unshare, "a pid namespace" if "pid" in unshare else "host's"),
        "ipc_ns": ("ipc" in unshare, "an IPC namespace" if "ipc" in unshare else "host's"),
        "tree": (
            "pid" in unshare or (cgroup is not None and cgroup.usable),
            "a cgroup"
            if cgroup is not None and cgroup.usable
            else "a pid namespace"
            if "pid" in unshare
            else "neither",
        ),
        "limit.pids": (
            "pids.max" in files or "NPROC" in limits,
            _either(files, "pids.max", limits, "NPROC"),
        ),
        "limit.memory": (
            "memory.max" in files or "AS" in limits,
            _either(files, "memory.max", limits, "AS"),
        ),
        "limit.cpu": (
            "cpu.max" in files or "CPU" in limits,
            _either(files, "cpu.max", limits, "CPU"),
        ),
        "limit.nofile": ("NOFILE" in limits, _either({}, "", limits, "NOFILE")),
        "limit.fsize": ("FSIZE" in limits, _either({}, "", limits, "FSIZE")),
        "limit.core": (limits.get("CORE") == 0, _either({}, "", limits, "CORE")),
    }
    return tuple(CheckResult(check, *outcomes[check.name]) for check in CHECKS)


def _caps_words(caps: CapSet) -> str:
    """A set in a few words: its names, or how many and the first ones."""
    if not caps:
        return "none"
    names = caps.names()
    return ",".join(names) if len(names) <= 4 else f"{len(names)}: {','.join(names[:3])},..."


def _either(files: dict[str, str], name: str, limits: dict[str, int], rlimit: str) -> str:
    if name in files:
        return f"{name}={files[name]}"
    if rlimit in limits:
        return f"RLIMIT_{rlimit}={limits[rlimit]}"
    return "none"


def _missing_rule_path(confined: Confined | None) -> str | None:
    """The stage's refusal when a Landlock rule's path does not exist (it opens each one)."""
    ruleset = confined.ruleset if confined is not None else None
    if ruleset is None:
        return None
    from .errors import StageError

    for index, (path, _) in enumerate(ruleset.rules):
        if not os.path.lexists(path):
            return str(StageError("landlock_path", errno.ENOENT, ruleset.describe_rule(index)))
    return None


# ---- the whole --------------------------------------------------------------------------


def explain(
    argv: Sequence[str],
    policy: Policy | None = None,
    *,
    task: TaskSpec | None = None,
    env: Mapping[Any, Any] | None = None,
    verify: bool = False,
) -> Explanation:
    """What running ``argv`` under ``policy`` from this process would give it; nothing runs.

    Args:
        argv: the program and its arguments (``argv[0]`` is searched on ``PATH`` as the exec
            stage searches it).
        policy: the policy; None is the empty policy.
        task: the task's cwd, environment options and timeout (a :class:`hardexec.TaskSpec`),
            as the runner and ``hardexec run`` apply them.
        env: the program's environment, when given outright (it wins over ``task``'s); None:
            this process's, as ``task`` changes it.
        verify: a verified run (``verify=True``, ``hardexec run --verify``): the program's
            exec is traced by this process (which withholds set-user-ID and file-capability
            gains from a launcher without CAP_SYS_PTRACE), and a program that would hold more
            than the policy is refused, as :mod:`hardexec.verify` checks it.

    Returns:
        The :class:`Explanation`. A run hardexec would refuse has ``refused`` set.

    Raises:
        ValueError: ``argv`` is empty.
    """
    from .policy import Policy
    from .predict import gather, predict

    policy = policy if policy is not None else Policy()
    cwd = task.cwd if task is not None else None
    if env is None and task is not None and (task.env or task.env_policy != "inherit"):
        from .runner.spec import resolve_env

        env = resolve_env(task)
    inputs = gather(argv, policy, env=env, cwd=cwd, verify=verify)
    p = predict(inputs)
    cgroup, cgroup_warning = _cgroup(policy)
    refused, status = p.refused, p.exit_status
    # In the launcher's order: the confinement's warnings, the cgroup's, the stage's own.
    early = len(inputs.parent_warnings)
    cgroup_said = (cgroup_warning,) if cgroup_warning else ()
    warnings = p.warnings[:early] + cgroup_said + p.warnings[early:]
    if p.refused_step != "confinement":
        # The group is made after the confinement is compiled (a refusal there says nothing
        # else), and the stage opens the Landlock rules' paths before its capability steps.
        missing = _missing_rule_path(inputs.confined)
        if missing is not None:
            refused, status = missing, 125
            warnings = p.warnings[:early] + cgroup_said
        if cgroup is not None and not cgroup.usable and cgroup.required:
            refused, status = f"cgroup: {cgroup.why}", 125
            warnings = ()
    checks = _checks(policy, p, inputs.confined, cgroup)
    return Explanation(
        argv=tuple(os.fspath(a) for a in argv),
        launcher=inputs.launcher,
        prediction=p,
        rlimits=_rlimits(policy),
        cgroup=cgroup,
        confinement=_confinement(policy, inputs.confined),
        warnings=warnings,
        notes=p.notes,
        refused=refused,
        exit_status=status,
        checks=checks,
        score=score(checks),
        timeout=task.timeout if task is not None else None,
        policy=policy,
    )
