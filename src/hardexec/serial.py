"""Policies as plain data: ``dict``/JSON in and out, versioned, strict, lossless.

What lets a policy cross a process or machine boundary (a file, a queue), and be written by
hand. The shape mirrors the classes field by field; capabilities are written by name::

    {"version": 1,
     "security": {"drop_all_caps": true, "keep_caps": ["NET_BIND_SERVICE"], ...},
     "rlimits": {"max_open_files": 1024, ...},
     "cgroups": {"memory": 268435456, "cpu": {"quota": 50000, "period": 100000}, ...},
     "cgroup_parent": null,
     "die_with_parent": false}

Reading is strict: an unknown key, a missing or unknown ``version``, or a value of the wrong
shape is a :class:`PolicyError` naming its key path (``policy.security.keep_caps[1]: …``);
every value is then validated exactly as the classes validate it when built in Python.
``Policy.from_dict(policy.to_dict()) == policy`` for every policy.
"""

from __future__ import annotations

from ._record import fields
from .caps import CapSet
from .errors import PolicyError
from .policy import CgroupLimits, CpuMax, Policy, RlimitConfig, SecurityConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["POLICY_VERSION", "policy_from_dict", "policy_to_dict"]

#: The version written into, and required from, a policy's plain form.
POLICY_VERSION = 1

# Which record class a field holding a record takes, for reading.
_NESTED: dict[type, dict[str, type]] = {
    Policy: {"security": SecurityConfig, "rlimits": RlimitConfig, "cgroups": CgroupLimits},
    CgroupLimits: {"cpu": CpuMax},
}


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    """``policy`` as plain data (JSON-ready), with its ``version``."""
    if not isinstance(policy, Policy):
        raise TypeError(f"expected a hardexec.Policy, got {type(policy).__name__}")
    return {"version": POLICY_VERSION, **_to_plain(policy)}


def policy_from_dict(data: object) -> Policy:
    """A :class:`Policy` from its plain form; a :class:`PolicyError` names what is wrong where."""
    if not isinstance(data, dict):
        raise PolicyError(f"policy: expected an object, got {_shown(data)}")
    if "version" not in data:
        raise PolicyError(f"policy.version: missing (this hardexec writes {POLICY_VERSION})")
    version = data["version"]
    if version != POLICY_VERSION or isinstance(version, bool):
        raise PolicyError(
            f"policy.version: {_shown(version)} is not a version this hardexec reads "
            f"({POLICY_VERSION})"
        )
    rest = {key: value for key, value in data.items() if key != "version"}
    return _from_plain(Policy, rest, "policy")


def _to_plain(record: Any) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for item in fields(record):
        if not item.init:
            continue  # derived in __post_init__ (identity): rebuilt on reading
        value = getattr(record, item.name)
        if isinstance(value, CapSet):
            value = value.names()
        elif isinstance(value, tuple):
            value = list(value)
        elif hasattr(value, "__record_fields__"):
            value = _to_plain(value)
        plain[item.name] = value
    return plain


def _from_plain(cls: type, data: object, path: str) -> Any:
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: expected an object, got {_shown(data)}")
    known = {item.name: item for item in fields(cls) if item.init}
    nested = _NESTED.get(cls, {})
    values = {}
    for key, value in data.items():
        if key not in known:
            names = ", ".join(known)
            raise PolicyError(f"{path}.{key}: unknown key (known here: {names})")
        if key in nested and value is not None:
            values[key] = _from_plain(nested[key], value, f"{path}.{key}")
        else:
            values[key] = value
    try:
        return cls(**values)
    except PolicyError as err:
        # The classes name fields from the policy's root ("security.keep_caps[1]"), or their
        # own ("CapSet.mask"): say where in this document that is.
        message = str(err)
        if path != "policy" and not message.startswith(path.removeprefix("policy.")):
            message = f"{path}: {message}"
        raise PolicyError(
            message if message.startswith("policy") else f"policy.{message}"
        ) from None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
