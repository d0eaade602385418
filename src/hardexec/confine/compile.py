"""A policy's confinement, made concrete for this kernel and one spawn.

Landlock rules, the seccomp program and the namespace list are worked out here, in the parent,
so that the exec stage only applies them. This is also where best effort is decided: what the
kernel cannot enforce either refuses the run (a :class:`StageError` before anything is
spawned, the default) or is left out with a warning naming it (``best_effort=True``).
Everything that depends only on the policy is compiled once per policy (cached); what depends
on the program (its dependencies for Landlock) once per program file.
"""

from __future__ import annotations

import errno
import functools
import os
import time

from .._record import frozen
from ..errors import StageError, StageWarning
from .config import Confinement

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..policy import Policy
    from .landlock import Ruleset
    from .seccomp import Filter, WatchFilter

__all__ = ["Confined", "confine"]

CAP_SYS_ADMIN = 21
#: How a refusal names the way out; the command line says its option instead.
BEST_EFFORT = "best_effort=True"


@frozen
class Confined:
    """What the stage is asked to do for one spawn (see plan.py for the options)."""

    umask: int | None = None
    unshare: tuple[str, ...] = ()
    hostname: str | None = None
    ruleset: Ruleset | None = None
    filter: Filter | None = None
    notify: bool = False
    implied_nnp: bool = False
    warnings: tuple[StageWarning, ...] = ()
    notes: tuple[str, ...] = ()


@functools.cache
def _own_caps() -> tuple[int, int]:
    """This process's (CapEff, CapPrm): whether it could unshare or confine without nnp."""
    eff = prm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                eff = int(line.split()[1], 16)
            elif line.startswith("CapPrm:"):
                prm = int(line.split()[1], 16)
    return eff, prm


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


@functools.cache
def seccomp_actions() -> frozenset[str]:
    """The seccomp actions this kernel offers (empty: no seccomp filter support)."""
    text = _read("/proc/sys/kernel/seccomp/actions_avail")
    return frozenset(text.split()) if text else frozenset()


def namespace_refused(name: str) -> str | None:
    """Why this host refuses a namespace kind before we try (a zero max_*_namespaces)."""
    limit = _read(f"/proc/sys/user/max_{name}_namespaces")
    if limit == "0":
        return f"user.max_{name}_namespaces is 0 on this host"
    if name == "user" and _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return "kernel.unprivileged_userns_clone is 0 on this host"
    return None


def _holds(policy: Policy, userns: bool, cap: int) -> bool:
    """Whether the program's process still holds ``cap`` when Landlock and seccomp are
    applied (inside its own user namespace: there, not over this process)."""
    sec = policy.security
    if userns:  # full capabilities inside the new user namespace, unless dropped
        return not sec.drop_all_caps or cap in sec.keep_caps
    eff, prm = _own_caps()
    if sec.drop_all_caps:
        return cap in sec.keep_caps and bool(prm >> cap & 1)
    uid = sec.identity.uid
    if uid is not None and uid != 0:
        return False  # setresuid away from 0 clears the capabilities
    return bool(eff >> cap & 1)


def _refuse_or_warn(
    c: Confinement, step: str, what: str, why: str, warnings: list[StageWarning]
) -> None:
    if not c.best_effort:
        raise StageError(
            step,
            errno.EOPNOTSUPP,
            f"{what}: cannot be enforced here, {why} ({BEST_EFFORT} runs without it)",
        )
    warnings.append(StageWarning(step, errno.EOPNOTSUPP, f"{what}: not enforced, {why}", why))


# Recent answers, per policy object and program: a runner spawning the same task many times
# pays for the policy's compilation (hashing it, the dependencies' checks) once a second, not
# once a spawn. The entry holds the policy, so its id cannot be reused while it is cached.
_recent: dict[tuple[object, ...], tuple[Policy, float, Confined | None]] = {}
_FRESH = 1.0  # s: a program replaced meanwhile gets its new dependencies after at most this
_RECENT_MAX = 256


def confine(
    policy: Policy,
    program: str | bytes | None = None,
    env_path: str | bytes | None = None,
    *,
    listen: bool = True,
) -> Confined | None:
    """The stage's confinement for one spawn of ``program``; None when the policy has none.

    ``listen``: a parent stays to answer seccomp notifications (and count denied syscalls);
    False when hardexec execs the stage itself (nothing is left to listen).

    Raises :class:`StageError` (nothing spawned) when something asked for cannot be enforced
    on this kernel and the policy is not best effort.
    """
    from .landlock import abi

    key = (id(policy), program, env_path, listen, abi(), seccomp_actions())
    now = time.monotonic()
    hit = _recent.get(key)
    if hit is not None and hit[0] is policy and now - hit[1] < _FRESH:
        return hit[2]
    found = _confine(policy, program, env_path, listen)
    if len(_recent) >= _RECENT_MAX:
        _recent.clear()
    _recent[key] = (policy, now, found)
    return found


def _confine(
    policy: Policy, program: str | bytes | None, env_path: str | bytes | None, listen: bool
) -> Confined | None:
    c = policy.confinement
    if c is None or c.is_empty():
        return None
    warnings: list[StageWarning] = []
    notes: list[str] = []
    unshare = list(c.namespaces)
    userns = False
    if unshare:
        if not _own_caps()[0] >> CAP_SYS_ADMIN & 1:
            userns = True
            unshare.insert(0, "user")
        for name in tuple(unshare):
            why = namespace_refused(name)
            if why is not None:
                _refuse_or_warn(c, "unshare", f"the {name} namespace", why, warnings)
                unshare.remove(name)
        if userns and "user" not in unshare:
            unshare = []  # without the user namespace none of the others can be made
    hostname = c.hostname if "uts" in unshare else None
    ruleset = _ruleset(c, program, env_path, warnings)
    filt, notify = _filter(c, warnings, listen, notes)
    implied = False
    confining = ruleset is not None or filt is not None
    nnp = policy.security.no_new_privs
    if confining and not nnp and not _holds(policy, userns, CAP_SYS_ADMIN):
        implied = True
        notes.append(
            "no_new_privs is implied: Landlock and seccomp need it when the program does "
            "not hold CAP_SYS_ADMIN"
        )
    return Confined(
        umask=c.umask,
        unshare=tuple(unshare),
        hostname=hostname,
        ruleset=ruleset,
        filter=filt,
        notify=notify,
        implied_nnp=implied,
        warnings=tuple(warnings),
        notes=tuple(notes),
    )


def _ruleset(
    c: Confinement,
    program: str | bytes | None,
    env_path: str | bytes | None,
    warnings: list[StageWarning],
) -> Ruleset | None:
    if not c.landlock:
        return None
    from . import landlock

    deps: tuple[tuple[str, str], ...] = ()
    if c.fs and c.fs_dependencies and program is not None:
        from .deps import dependencies

        path = os.fsdecode(env_path) if env_path is not None else None
        deps = dependencies(program, path)
    ruleset = _compile_rules(c, deps, landlock.abi())
    if ruleset is None:
        return None
    if ruleset.unenforced:
        abi = landlock.abi()
        if abi:
            why = f"this kernel's Landlock ABI is {abi}"
            what = "Landlock rules for " + ", ".join(ruleset.unenforced)
        else:
            why, what = "this kernel has no Landlock", "the Landlock rules"
        _refuse_or_warn(c, "landlock", what, why, warnings)
        if not ruleset.handled_fs and not ruleset.handled_net:
            return None  # nothing at all is enforceable
    return ruleset


@functools.lru_cache(maxsize=256)
def _compile_rules(c: Confinement, deps: tuple[tuple[str, str], ...], abi: int) -> Ruleset | None:
    """The ruleset for a policy's rules, one program's dependencies and this kernel's ABI:
    once, not per spawn (the stage checks again whether each path it opens is a directory)."""
    from . import landlock

    return landlock.compile_rules(c, deps, abi)


def _filter(
    c: Confinement, warnings: list[StageWarning], listen: bool, notes: list[str]
) -> tuple[Filter | None, bool]:
    if c.syscalls is None:
        return None, False
    from .seccomp import WatchFilter

    if isinstance(c.syscalls, WatchFilter):
        return _watch(c.syscalls, listen), True
    actions = seccomp_actions()
    if not actions:
        _refuse_or_warn(c, "seccomp", "the syscall filter", "this kernel has no seccomp", warnings)
        return None, False
    from .seccomp import compile_filter, permits

    notify = listen and "user_notif" in actions
    if notify and not permits(c.syscalls, "sendmsg"):
        # The stage hands the listener over with one sendmsg, which the filter must let
        # through by its fd number: the program could put a socket of its own on that number.
        notify = False
        notes.append(
            "denied syscalls are refused in the kernel but not counted: the filter refuses "
            "sendmsg, with which the listener that counts them would be handed over"
        )
    elif listen and not notify:
        warnings.append(
            StageWarning(
                "seccomp",
                errno.EOPNOTSUPP,
                "denied syscalls are refused but not counted: this kernel lacks seccomp user "
                "notification",
            )
        )
    return compile_filter(c.syscalls, notify=notify), notify


def _watch(f: WatchFilter, listen: bool) -> Filter:
    """A watch filter's program; refused, whatever ``best_effort`` says, where it cannot work:
    a watch left out would learn nothing, and one without a listener would refuse every call."""
    from .seccomp import compile_watch

    why = None
    if not listen:
        why = "nothing stays to answer its notifications"
    elif "user_notif" not in seccomp_actions():
        why = "this kernel lacks seccomp user notification"
    elif _kernel() < (5, 5):
        why = "answering a notification with CONTINUE needs Linux 5.5"
    if why is not None:
        raise StageError("seccomp", errno.EOPNOTSUPP, f"watching syscalls: {why}")
    return compile_watch(f)


def _kernel() -> tuple[int, int]:
    """This kernel's (major, minor) version, from uname's release ("6.1.0-13-amd64")."""
    parts = os.uname().release.split(".", 2)
    if len(parts) < 2 or not parts[0].isdigit():
        return 0, 0
    minor = parts[1]
    digits = minor[: len(minor) - len(minor.lstrip("0123456789"))]
    return int(parts[0]), int(digits or 0)
