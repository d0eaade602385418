"""What a program may hold: frozen, validated policy dataclasses.

A policy is checked when it is built, so a mistake surfaces as a :class:`PolicyError` naming the
field and the value long before anything is spawned. User and group names are resolved then too.
"""

from __future__ import annotations

import grp
import math
import os
import pwd

from ._record import field, frozen, replace
from .caps import CapSet
from .confine.config import Confinement
from .errors import PolicyError, shown

TYPE_CHECKING = False  # collections.abc and typing cost start-up time: annotations only
if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "CgroupLimits",
    "CpuMax",
    "Identity",
    "Policy",
    "RlimitConfig",
    "SecurityConfig",
]

# setresuid/setresgid treat (uid_t)-1 as "leave unchanged", so it can never name an identity.
_MAX_ID = 0xFFFFFFFE
_MAX_GROUPS = 65536  # the kernel's NGROUPS_MAX
_MAX_RLIMIT = 2**63 - 1  # RLIM_INFINITY is 2**64-1; anything near it is "no limit" in disguise
_CPU_PERIOD = (1000, 1_000_000)  # µs: the kernel's bounds for cpu.max's period
_MAX_CPU_QUOTA = 2**63 // 1000  # µs: the kernel rejects quotas whose ns overflow


@frozen
class Identity:
    """The numeric identity a program runs with, resolved from a :class:`SecurityConfig`.

    ``None`` means "leave as inherited". ``groups == ()`` means "clear supplementary groups".
    """

    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None


@frozen
class SecurityConfig:
    """Capability and identity policy of the program (solti-exec's ``SecurityConfig``).

    Args:
        drop_all_caps: drop every capability except ``keep_caps`` from all five sets
            (bounding, permitted, effective, inheritable, ambient) — for root too.
        keep_caps: capabilities that survive ``drop_all_caps`` (names or numbers; see
            :meth:`Capability.parse`). Given without ``drop_all_caps`` it is an error, not a no-op.
        no_new_privs: set ``PR_SET_NO_NEW_PRIVS``: set-uid bits and file capabilities grant nothing.
        fail_on_cap_error: abort the spawn when a capability step fails (default: warn and go on).
        user: run as this user (name or uid). Defaults ``group`` to the user's primary group and
            ``supplementary_groups`` to the user's groups from the group database.
        group: run with this primary group (name or gid).
        supplementary_groups: exactly these supplementary groups (names or gids); ``[]`` clears.
            When ``user`` or ``group`` is set and this is not, root's own groups never leak through.

    After construction ``keep_caps`` is a :class:`CapSet`, and ``identity`` holds the numeric
    ids the names resolved to (resolved once, here, so a typo fails before any spawn).
    """

    drop_all_caps: bool = False
    keep_caps: CapSet | Iterable[str | int] = field(default_factory=CapSet)
    no_new_privs: bool = False
    fail_on_cap_error: bool = False
    user: str | int | None = None
    group: str | int | None = None
    supplementary_groups: Iterable[str | int] | None = None
    identity: Identity = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("drop_all_caps", "no_new_privs", "fail_on_cap_error"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise PolicyError(f"security.{name}: expected True or False, got {value!r}")
        keep = self.keep_caps
        if not isinstance(keep, CapSet):
            if isinstance(keep, (str, bytes, int)) or hasattr(keep, "keys"):
                raise PolicyError(
                    f"security.keep_caps: expected a list of capabilities, got {keep!r}"
                )
            keep = CapSet.from_caps(keep, field="security.keep_caps")
            object.__setattr__(self, "keep_caps", keep)
        if keep and not self.drop_all_caps:
            raise PolicyError(
                f"security.keep_caps: [{keep}] is given but security.drop_all_caps is False; "
                "keep_caps names what survives drop_all_caps, so set drop_all_caps=True"
            )
        if self.supplementary_groups is not None:
            if isinstance(self.supplementary_groups, (str, bytes, int)) or hasattr(
                self.supplementary_groups, "keys"
            ):
                raise PolicyError(
                    "security.supplementary_groups: expected a list of groups, "
                    f"got {self.supplementary_groups!r}"
                )
            object.__setattr__(self, "supplementary_groups", tuple(self.supplementary_groups))
        object.__setattr__(self, "identity", _resolve_identity(self))

    def is_empty(self) -> bool:
        """True when nothing is configured (``fail_on_cap_error`` alone changes nothing)."""
        return not (
            self.drop_all_caps
            or self.keep_caps
            or self.no_new_privs
            or self.user is not None
            or self.group is not None
            or self.supplementary_groups is not None
        )


# setrlimit resource numbers (asm-generic/resource.h; the same on every Linux architecture
# hardexec builds for) of each RlimitConfig field.
RLIMIT_FIELDS = {
    "max_open_files": ("NOFILE", 7),
    "max_file_size_bytes": ("FSIZE", 1),
    "address_space": ("AS", 9),
    "cpu_seconds": ("CPU", 0),
    "max_processes": ("NPROC", 6),
    "stack": ("STACK", 3),
}
RLIMIT_CORE = 4


@frozen
class RlimitConfig:
    """POSIX resource limits of the program (solti-exec's ``RlimitConfig``, extended).

    Each limit given becomes a hard ceiling the program cannot raise: soft = hard =
    min(requested, the launcher's hard limit). ``None`` leaves a limit as inherited.

    Args:
        max_open_files: RLIMIT_NOFILE, file descriptors.
        max_file_size_bytes: RLIMIT_FSIZE; writing beyond it fails (SIGXFSZ / EFBIG).
        disable_core_dumps: RLIMIT_CORE = 0.
        address_space: RLIMIT_AS, bytes of virtual memory.
        cpu_seconds: RLIMIT_CPU, seconds of CPU time; then the program is killed.
        max_processes: RLIMIT_NPROC, processes of the program's real user (all of them, not only
            the program's own: prefer ``CgroupLimits.pids`` for a per-program count).
        stack: RLIMIT_STACK, bytes.
    """

    max_open_files: int | None = None
    max_file_size_bytes: int | None = None
    disable_core_dumps: bool = False
    address_space: int | None = None
    cpu_seconds: int | None = None
    max_processes: int | None = None
    stack: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.disable_core_dumps, bool):
            value = self.disable_core_dumps
            raise PolicyError(f"rlimits.disable_core_dumps: expected True or False, got {value!r}")
        for name in RLIMIT_FIELDS:
            _check_count(f"rlimits.{name}", getattr(self, name), _MAX_RLIMIT)

    def limits(self) -> tuple[tuple[int, int], ...]:
        """``(resource, value)`` pairs of every configured limit, core dumps included."""
        pairs = [
            (number, getattr(self, name))
            for name, (_, number) in RLIMIT_FIELDS.items()
            if getattr(self, name) is not None
        ]
        if self.disable_core_dumps:
            pairs.append((RLIMIT_CORE, 0))
        return tuple(sorted(pairs))

    def is_empty(self) -> bool:
        """True when no limit is configured."""
        return not self.limits()


@frozen
class CpuMax:
    """cgroup v2 ``cpu.max``: at most ``quota`` µs of CPU per ``period`` µs (``None``: no cap).

    ``CpuMax(quota=50_000, period=100_000)`` is half a CPU; a quota above the period allows
    more than one CPU (``200_000``/``100_000`` is two), as systemd's ``CPUQuota=200%`` does.
    """

    quota: int | None = None
    period: int = 100_000

    def __post_init__(self) -> None:
        if self.period is None:  # _check_count lets None through: it means "no limit" elsewhere
            raise PolicyError("cgroups.cpu.period: None (give the period in µs, 100000 by default)")
        _check_count("cgroups.cpu.period", self.period, _MAX_RLIMIT)
        low, high = _CPU_PERIOD
        if not low <= self.period <= high:
            raise PolicyError(f"cgroups.cpu.period: {self.period} µs is outside {low}..{high}")
        _check_count(
            "cgroups.cpu.quota", self.quota, _MAX_CPU_QUOTA, zero="process would get no CPU"
        )
        if self.quota is not None and self.quota < _CPU_PERIOD[0]:
            raise PolicyError(
                f"cgroups.cpu.quota: {self.quota} µs is below the kernel's minimum of "
                f"{_CPU_PERIOD[0]} µs"
            )

    @classmethod
    def from_fraction(cls, cpus: float, period: int = 100_000) -> CpuMax:
        """``cpus`` CPUs' worth of time: ``CpuMax.from_fraction(0.5)`` is 50 000/100 000."""
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not cpus > 0:
            raise PolicyError(f"cgroups.cpu: {cpus!r} CPUs is not a positive number")
        if not math.isfinite(cpus) or cpus * period > _MAX_CPU_QUOTA:
            raise PolicyError(f"cgroups.cpu: {cpus!r} CPUs is more than the kernel can express")
        return cls(quota=round(cpus * period), period=period)

    def to_file(self) -> str:
        """The line written to ``cpu.max``: ``"50000 100000"`` or ``"max 100000"``."""
        return f"{'max' if self.quota is None else self.quota} {self.period}"


@frozen
class CgroupLimits:
    """A cgroup v2 group of its own for the program and all its descendants.

    Args:
        cpu: ``cpu.max``. memory: ``memory.max`` in bytes. pids: ``pids.max``.
        fail_on_error: refuse to spawn when the group cannot be set up or joined; by default
            (as in solti-exec) the program runs without it, and a warning says that it runs
            without the named limits and why.
        keep_at_exit: when the interpreter exits normally, hardexec kills whatever still runs
            in the groups it made and removes them (programs still running included); True
            leaves this group and its processes alone.

    A ``CgroupLimits()`` with no limit still gives the program a group: usage accounting and
    ``kill_tree()`` for everything it starts.
    """

    cpu: CpuMax | None = None
    memory: int | None = None
    pids: int | None = None
    fail_on_error: bool = False
    keep_at_exit: bool = False

    def __post_init__(self) -> None:
        if self.cpu is not None and not isinstance(self.cpu, CpuMax):
            raise PolicyError(f"cgroups.cpu: expected a CpuMax, got {self.cpu!r}")
        _check_count("cgroups.memory", self.memory, _MAX_RLIMIT)
        _check_count("cgroups.pids", self.pids, _MAX_RLIMIT)
        for name in ("fail_on_error", "keep_at_exit"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise PolicyError(f"cgroups.{name}: expected True or False, got {value!r}")

    def files(self) -> dict[str, str]:
        """Interface file → value to write, for each configured limit."""
        values = {}
        if self.cpu is not None:
            values["cpu.max"] = self.cpu.to_file()
        if self.memory is not None:
            values["memory.max"] = str(self.memory)
        if self.pids is not None:
            values["pids.max"] = str(self.pids)
        return values

    def controllers(self) -> tuple[str, ...]:
        """The controllers the limits need enabled in the parent's ``cgroup.subtree_control``."""
        return tuple(name.partition(".")[0] for name in self.files())


@frozen
class Policy:
    """Everything hardexec applies to one program (solti-exec's ``SubprocessBackendConfig``).

    An empty policy (the default) spawns the program directly, exactly like :mod:`subprocess`.

    Args:
        security: capabilities, no_new_privs, identity.
        rlimits: resource limits, applied by the exec stage.
        cgroups: a cgroup v2 group of the program's own, with limits; ``None``: no group.
        cgroup_parent: the cgroup v2 directory to create that group in; by default the group the
            calling process lives in (its ``0::`` line of ``/proc/self/cgroup``).
        die_with_parent: SIGKILL the program when the thread that spawned it exits
            (``PR_SET_PDEATHSIG``, set just before exec; if the launcher is already gone by then,
            the program is not started). The kernel ties it to the spawning *thread*, not the
            process: spawn from a thread that lives as long as the program should.
        confinement: what the program may touch: Landlock path and TCP rules, a seccomp filter,
            namespaces, umask (:class:`~hardexec.confine.Confinement`); ``None``: nothing.
    """

    security: SecurityConfig = field(default_factory=SecurityConfig)
    rlimits: RlimitConfig = field(default_factory=RlimitConfig)
    cgroups: CgroupLimits | None = None
    cgroup_parent: str | os.PathLike[str] | None = None
    die_with_parent: bool = False
    confinement: Confinement | None = None

    def __post_init__(self) -> None:
        for name, kind in (("security", SecurityConfig), ("rlimits", RlimitConfig)):
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise PolicyError(f"policy.{name}: expected a {kind.__name__}, got {value!r}")
        if self.cgroups is not None and not isinstance(self.cgroups, CgroupLimits):
            raise PolicyError(f"policy.cgroups: expected a CgroupLimits, got {self.cgroups!r}")
        if self.confinement is not None and not isinstance(self.confinement, Confinement):
            raise PolicyError(
                f"policy.confinement: expected a Confinement, got {self.confinement!r}"
            )
        if not isinstance(self.die_with_parent, bool):
            raise PolicyError(
                f"policy.die_with_parent: expected True or False, got {self.die_with_parent!r}"
            )
        if self.cgroup_parent is not None:
            from .cgroups import check_parent  # cgroups reads the filesystem; policy stays pure

            object.__setattr__(self, "cgroup_parent", check_parent(self.cgroup_parent))

    def with_security(self, security: SecurityConfig) -> Policy:
        """A copy of this policy with ``security`` replaced."""
        return replace(self, security=security)

    def with_confinement(self, confinement: Confinement | None) -> Policy:
        """A copy of this policy with ``confinement`` replaced."""
        return replace(self, confinement=confinement)

    def with_rlimits(self, rlimits: RlimitConfig) -> Policy:
        """A copy of this policy with ``rlimits`` replaced."""
        return replace(self, rlimits=rlimits)

    def with_cgroups(
        self, cgroups: CgroupLimits | None, parent: str | os.PathLike[str] | None = None
    ) -> Policy:
        """A copy of this policy with ``cgroups`` (and ``cgroup_parent``) replaced."""
        return replace(self, cgroups=cgroups, cgroup_parent=parent)

    def to_dict(self) -> dict[str, object]:
        """This policy as plain, JSON-ready data, versioned (see :mod:`hardexec.serial`)."""
        from .serial import policy_to_dict

        return policy_to_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> Policy:
        """A policy from :meth:`to_dict`'s form; strict: a :class:`PolicyError` names the key
        path of an unknown key or a bad value."""
        from .serial import policy_from_dict

        return policy_from_dict(data)

    def is_empty(self) -> bool:
        """True when the policy changes nothing, so no exec stage is needed."""
        return (
            self.security.is_empty()
            and self.rlimits.is_empty()
            and self.cgroups is None
            and not self.die_with_parent
            and (self.confinement is None or self.confinement.is_empty())
        )


def _check_count(name: str, value: object, maximum: int, zero: str = "") -> None:
    """``None``, or a positive int up to ``maximum``; zero gets solti-exec's message."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{name}: expected a whole number, got {value!r}")
    if value == 0:
        raise PolicyError(f"{name} cannot be zero" + (f" ({zero})" if zero else ""))
    if value < 0:
        raise PolicyError(f"{name}: {shown(value)} is negative")
    if value > maximum:
        raise PolicyError(f"{name}: {shown(value)} is larger than {maximum}")


def _resolve_identity(config: SecurityConfig) -> Identity:
    uid = gid = None
    groups = None
    account = None
    if config.user is not None:
        uid, account = _lookup_user(config.user)
    if config.group is not None:
        gid = _lookup_group(config.group, "security.group")
    elif uid is not None:
        if account is None:
            raise PolicyError(
                f"security.user: uid {uid} has no entry in the user database, so it has no "
                "primary group; give security.group too"
            )
        gid = account.pw_gid
    if config.supplementary_groups is not None:
        if len(config.supplementary_groups) > _MAX_GROUPS:
            raise PolicyError(
                f"security.supplementary_groups: {len(config.supplementary_groups)} groups; "
                f"the kernel allows at most {_MAX_GROUPS}"
            )
        groups = tuple(
            _lookup_group(g, f"security.supplementary_groups[{i}]")
            for i, g in enumerate(config.supplementary_groups)
        )
    elif account is not None:
        groups = tuple(os.getgrouplist(account.pw_name, gid))
    elif uid is not None or gid is not None:
        groups = ()  # a new identity never carries the launcher's groups by accident
    return Identity(uid=uid, gid=gid, groups=groups)


def _lookup_user(user: str | int) -> tuple[int, pwd.struct_passwd | None]:
    number = _as_id(user, "security.user")
    if number is not None:
        try:
            return number, pwd.getpwuid(number)
        except KeyError:
            return number, None
    try:
        account = pwd.getpwnam(user)  # type: ignore[arg-type]
    except KeyError:
        raise PolicyError(f"security.user: unknown user {user!r}") from None
    return account.pw_uid, account


def _lookup_group(group: str | int, name: str) -> int:
    number = _as_id(group, name)
    if number is not None:
        return number
    try:
        return grp.getgrnam(group).gr_gid  # type: ignore[arg-type]
    except KeyError:
        raise PolicyError(f"{name}: unknown group {group!r}") from None


def _as_id(value: object, name: str) -> int | None:
    """The number for an id given as int or decimal text; None for a name to look up."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PolicyError(f"{name}: expected a name or a number, got {value!r}")
    if isinstance(value, str):
        if not value.strip():
            raise PolicyError(f"{name}: empty name")
        if "\0" in value:
            raise PolicyError(f"{name}: {value!r} contains a NUL byte")
        text = value.strip()
        if not (text.isascii() and text.isdecimal()):
            if text.isdecimal():  # Arabic-Indic digits are decimal to Python, no id to the kernel
                raise PolicyError(f"{name}: {value!r} is not a name or an ASCII number")
            return None
        value = int(text)
    if not 0 <= value <= _MAX_ID:
        raise PolicyError(f"{name}: id {value} is outside 0..{_MAX_ID}")
    return value
