"""What a program may hold: frozen, validated policy dataclasses.

A policy is checked when it is built, so a mistake surfaces as a :class:`PolicyError` naming the
field and the value long before anything is spawned. User and group names are resolved then too.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass, field

from .caps import CapSet
from .errors import PolicyError

__all__ = ["Identity", "Policy", "SecurityConfig"]

# setresuid/setresgid treat (uid_t)-1 as "leave unchanged", so it can never name an identity.
_MAX_ID = 0xFFFFFFFE
_MAX_GROUPS = 65536  # the kernel's NGROUPS_MAX


@dataclass(frozen=True, slots=True)
class Identity:
    """The numeric identity a program runs with, resolved from a :class:`SecurityConfig`.

    ``None`` means "leave as inherited". ``groups == ()`` means "clear supplementary groups".
    """

    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SecurityConfig:
    """Capability and identity policy of the program (the reference's ``SecurityConfig``).

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
            if isinstance(keep, (str, bytes, int)):
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
            if isinstance(self.supplementary_groups, (str, bytes, int)):
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


@dataclass(frozen=True)
class Policy:
    """Everything hardexec applies to one program (the reference's ``SubprocessBackendConfig``).

    An empty policy (the default) spawns the program directly, exactly like :mod:`subprocess`.
    """

    security: SecurityConfig = field(default_factory=SecurityConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.security, SecurityConfig):
            raise PolicyError(f"policy.security: expected a SecurityConfig, got {self.security!r}")

    def with_security(self, security: SecurityConfig) -> Policy:
        """A copy of this policy with ``security`` replaced."""
        return dataclasses.replace(self, security=security)

    def is_empty(self) -> bool:
        """True when the policy changes nothing, so no exec stage is needed."""
        return self.security.is_empty()


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
        if not value.strip().isdecimal():
            return None
        value = int(value)
    if not 0 <= value <= _MAX_ID:
        raise PolicyError(f"{name}: id {value} is outside 0..{_MAX_ID}")
    return value
