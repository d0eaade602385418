"""Policies, tasks and results as plain data: ``dict``/JSON in and out, versioned, strict,
lossless.

What lets them cross a process or machine boundary (a file, a queue), and be written by hand.
Each shape mirrors its class field by field, with a top-level ``version``.

A :class:`~hardexec.Policy`; capabilities are written by name::

    {"version": 1,
     "security": {"drop_all_caps": true, "keep_caps": ["NET_BIND_SERVICE"], ...},
     "rlimits": {"max_open_files": 1024, ...},
     "cgroups": {"memory": 268435456, "cpu": {"quota": 50000, "period": 100000}, ...},
     "cgroup_parent": null,
     "die_with_parent": false,
     "confinement": {"fs": [{"path": "/usr", "access": "rx"}, {"path": "/tmp", "access": "rw"}],
                     "fs_dependencies": true, "tcp_bind": [], "tcp_connect": [443],
                     "syscalls": {"allow": null, "deny": ["ptrace", "mount:EACCES"],
                                  "default": true},
                     "namespaces": ["net", "uts"], "hostname": "box", "umask": 63,
                     "best_effort": false}}

``confinement`` is ``null`` (nothing confined) or every field of a
:class:`~hardexec.confine.Confinement`: ``fs`` a list of path rules as objects, ``syscalls``
``null`` or a filter whose ``allow`` is ``null`` (deny-list mode) or a list; ``umask`` is a
number (JSON has no octal: ``0o077`` is 63).

A :class:`~hardexec.TaskSpec`; ``env`` is an object (its order kept), ``env_policy`` is
``"inherit"``, ``"clear"`` or a list of names, and the stdin bytes are base64 text under
``input_base64`` (``null``: no input)::

    {"version": 1,
     "argv": ["python3"], "body": "print('hi')", "script_args": ["-v"],
     "cwd": "/src", "env": {"LANG": "C.UTF-8"}, "env_policy": ["HOME", "PATH"],
     "input_base64": "aGkK", "timeout": 600.0, "kill_after": 5.0, "drain_timeout": 5.0,
     "retries": 0, "backoff": 0.5, "fail_on_non_zero": false, "name": null,
     "max_script_bytes": 2097152}

A :class:`~hardexec.Result`; ``usage`` is an object or ``null``, ``truncated`` an object::

    {"version": 1,
     "name": "make", "pid": 4242, "exit_code": 0, "signal": null, "duration": 1.25,
     "timed_out": false, "cancelled": false, "oom_killed": false,
     "usage": {"source": "cgroup", "cpu_user": 0.5, "cpu_system": 0.1, "cpu_throttled": 0.0,
               "memory_peak": 1048576, "pids_peak": 3, "oom_killed": false},
     "stdout": "...", "stderr": "",
     "truncated": {"stdout_bytes": 0, "stdout_lines": 0, "stderr_bytes": 0,
                   "stderr_lines": 0, "lines_cut": 0},
     "warnings": [], "attempts": 1, "denied_syscalls": {"ptrace": 2}}

``denied_syscalls`` maps each syscall the policy's seccomp filter refused to how many times
(a whole number, at least 1); ``{}`` without a filter.

Reading is strict: an unknown key, a missing or unknown ``version``, a missing required key
(a task's ``argv``, a result's ``name``, a usage's ``source``, a path rule's ``path``), or a
value of the wrong shape is a :class:`PolicyError` naming its key path
(``policy.security.keep_caps[1]: …``, ``policy.confinement.fs[0].access: …``,
``task.argv[1]: …``, ``result.usage.cpu_user: …``); other keys left out take the class's
default, which is also how a document from before a key existed reads (no ``confinement``:
``null``; no ``denied_syscalls``: ``{}``). Policy and task values are then validated exactly
as the classes validate them when built in Python (the confinement's lists checked first to
be lists: its class would take a lone port or name, and read an object as its keys); a
result's records check nothing themselves, so their reader checks each value's type.
``X.from_dict(json.loads(json.dumps(x.to_dict()))) == x`` for every policy, task and result
(text with lone surrogates, such as ``os.fsdecode`` gives, needs ``json.dumps``'s default
``ensure_ascii=True`` to survive being encoded).

A version changes when a key a reader knows changes its meaning or shape, not when a key is
added: ``confinement`` and ``denied_syscalls`` joined version 1. Every reader refuses keys it
does not know, so an older hardexec refuses what this one writes (naming the new key) instead
of running a policy without its confinement, and every document it wrote reads the same here.
"""

from __future__ import annotations

import base64
import math
import sys

from ._record import MISSING, fields
from .caps import CapSet
from .confine.config import Confinement, PathRule, SyscallFilter
from .errors import PolicyError
from .errors import shown as _shown
from .policy import CgroupLimits, CpuMax, Policy, RlimitConfig, SecurityConfig
from .runner.result import Result, Truncation
from .runner.spec import TaskSpec
from .usage import Usage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Reader = Callable[[str, Any], Any]

__all__ = [
    "POLICY_VERSION",
    "RESULT_VERSION",
    "TASK_VERSION",
    "policy_from_dict",
    "policy_to_dict",
    "result_from_dict",
    "result_to_dict",
    "task_from_dict",
    "task_to_dict",
]

#: The version written into, and required from, a policy's plain form.
POLICY_VERSION = 1
#: The version written into, and required from, a task's plain form.
TASK_VERSION = 1
#: The version written into, and required from, a result's plain form.
RESULT_VERSION = 1

# Which record class a field holding a record takes, for reading.
_NESTED: dict[type, dict[str, type]] = {
    Policy: {
        "security": SecurityConfig,
        "rlimits": RlimitConfig,
        "cgroups": CgroupLimits,
        "confinement": Confinement,
    },
    CgroupLimits: {"cpu": CpuMax},
    Confinement: {"syscalls": SyscallFilter},
}
# Which record class each item of a field holding a list of records takes, for reading.
_NESTED_ITEMS: dict[type, dict[str, type]] = {Confinement: {"fs": PathRule}}
# The fields read only from a list (what each holds, and whether null is one too): their
# classes would also take a lone port or name, and would read an object as its keys.
_LISTS: dict[type, dict[str, tuple[str, bool]]] = {
    # Capabilities and groups too: a table's keys read as the list would grant them all.
    SecurityConfig: {
        "keep_caps": ("capabilities", False),
        "supplementary_groups": ("groups", True),
    },
    Confinement: {
        "fs": ("path rules", False),
        "tcp_bind": ("ports", False),
        "tcp_connect": ("ports", False),
        "namespaces": ("names", False),
    },
    SyscallFilter: {"allow": ("names", True), "deny": ("names", False)},
}
# What a record's own messages start with where that is not its key path (a path rule says
# "path_rule.access" as an item of a list; a filter says "syscalls" without its parent's name):
# swapped for the key path.
_OWN_NAMES: dict[type, str] = {PathRule: "path_rule", SyscallFilter: "syscalls"}


# --- policies ------------------------------------------------------------------------------


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    """``policy`` as plain data (JSON-ready), with its ``version``."""
    _expect_type(policy, Policy, "hardexec.Policy")
    return {"version": POLICY_VERSION, **_to_plain(policy)}


def policy_from_dict(data: object) -> Policy:
    """A :class:`Policy` from its plain form; a :class:`PolicyError` names what is wrong where."""
    return _from_plain(Policy, _unversioned("policy", data, POLICY_VERSION), "policy")


def _to_plain(record: Any) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for item in fields(record):
        if not item.init:
            continue  # derived in __post_init__ (identity): rebuilt on reading
        value = getattr(record, item.name)
        if isinstance(value, CapSet):
            value = value.names()
        elif isinstance(value, tuple):
            value = [_to_plain(v) if hasattr(v, "__record_fields__") else v for v in value]
        elif hasattr(value, "__record_fields__"):
            value = _to_plain(value)
        elif hasattr(value, "keys"):  # a mapping (what dict() looks for), not always a dict
            value = dict(value)  # a copy, too: the record's own stays out of the caller's hands
        plain[item.name] = value
    return plain


def _from_plain(cls: type, data: object, path: str) -> Any:
    known = {item.name: item for item in fields(cls) if item.init}
    plain = _check_keys(path, data, known, _required(cls))
    nested = _NESTED.get(cls, {})
    items = _NESTED_ITEMS.get(cls, {})
    lists = _LISTS.get(cls, {})
    values = {}
    for key, value in plain.items():
        where = f"{path}.{key}"
        if key in lists and not (isinstance(value, list) or (value is None and lists[key][1])):
            what, nullable = lists[key]
            also = " or null" if nullable else ""
            raise PolicyError(f"{where}: expected a list of {what}{also}, got {_shown(value)}")
        if key in nested and value is not None:
            values[key] = _from_plain(nested[key], value, where)
        elif key in items:
            kind = items[key]
            values[key] = [_from_plain(kind, v, f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            values[key] = value
    try:
        return cls(**values)
    except PolicyError as err:
        raise PolicyError(_located(cls, path, str(err))) from None


def _located(cls: type, path: str, message: str) -> str:
    """``message``, from ``cls`` read at ``path``, starting with its full key path."""
    own = _OWN_NAMES.get(cls)
    if (
        own is not None
        and message.startswith(own)
        and message[len(own) : len(own) + 1] in (".", "[", ":")
    ):
        return path + message[len(own) :]  # "syscalls.deny[1]: …" → "<path>.deny[1]: …"
    # The other classes name fields from the policy's root ("security.keep_caps[1]"), or their
    # own ("CapSet.mask"): say where in this document that is.
    if path != "policy" and not message.startswith(path.removeprefix("policy.")):
        message = f"{path}: {message}"
    return message if message.startswith("policy") else f"policy.{message}"


# --- tasks ---------------------------------------------------------------------------------

# The one field whose plain key is not its name: the key says how its bytes are written.
_TASK_KEYS = {"input": "input_base64"}


def task_to_dict(spec: TaskSpec) -> dict[str, Any]:
    """``spec`` as plain data (JSON-ready), with its ``version``."""
    _expect_type(spec, TaskSpec, "hardexec.TaskSpec")
    plain: dict[str, Any] = {"version": TASK_VERSION}
    for item in fields(spec):
        value = getattr(spec, item.name)
        if item.name == "env":
            value = dict(value)
        elif item.name == "input":
            value = None if value is None else base64.b64encode(value).decode("ascii")
        elif isinstance(value, tuple):
            value = list(value)
        plain[_TASK_KEYS.get(item.name, item.name)] = value
    return plain


def task_from_dict(data: object) -> TaskSpec:
    """A :class:`TaskSpec` from its plain form; a :class:`PolicyError` names what is wrong
    where."""
    plain = _unversioned("task", data, TASK_VERSION)
    names = {_TASK_KEYS.get(item.name, item.name): item.name for item in fields(TaskSpec)}
    _check_keys("task", plain, names, _required(TaskSpec))
    values = {}
    for key, value in plain.items():
        read = _TASK_READERS.get(key)
        values[names[key]] = value if read is None else read(f"task.{key}", value)
    # Every value now has the shape the class takes; the class validates each itself, with
    # messages that already name "task.<field>".
    return TaskSpec(**values)


def _arguments(path: str, value: object) -> tuple[Any, ...]:
    # Only a list: the class would take any iterable, and would read an object as its keys.
    if not isinstance(value, list):
        raise PolicyError(f"{path}: expected a list, got {type(value).__name__}")  # no values:
    return tuple(value)  # arguments may be secrets


def _env(path: str, value: object) -> tuple[tuple[Any, Any], ...]:
    if not isinstance(value, dict):
        what = type(value).__name__  # not the value: it may hold secrets
        raise PolicyError(f"{path}: expected an object of names to values, got {what}")
    return tuple(value.items())


def _env_policy(path: str, value: object) -> str | tuple[Any, ...]:
    if isinstance(value, str):
        return value  # which words are known is the class's to say
    if not isinstance(value, list):  # the class would read an object as its keys
        raise PolicyError(
            f"{path}: expected 'inherit', 'clear' or a list of names, got {_shown(value)}"
        )
    return tuple(value)


def _input(path: str, value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        what = type(value).__name__  # not the value: the input may be a secret
        raise PolicyError(f"{path}: expected base64 text or null, got {what}")
    try:
        # validate: a stray character is an error, not silently skipped
        return base64.b64decode(value, validate=True)
    except ValueError as err:  # binascii.Error, or text that is not ASCII
        raise PolicyError(f"{path}: not base64 text ({err})") from None


# How the plain keys whose JSON form is not the class's are read; others go to it as they are.
_TASK_READERS: dict[str, Reader] = {
    "argv": _arguments,
    "script_args": _arguments,
    "env": _env,
    "env_policy": _env_policy,
    "input_base64": _input,
}


# --- results -------------------------------------------------------------------------------


def result_to_dict(result: Result) -> dict[str, Any]:
    """``result`` as plain data (JSON-ready), with its ``version``."""
    _expect_type(result, Result, "hardexec.Result")
    return {"version": RESULT_VERSION, **_to_plain(result)}


def result_from_dict(data: object) -> Result:
    """A :class:`Result` from its plain form; a :class:`PolicyError` names what is wrong
    where."""
    return _record(Result, "result", _unversioned("result", data, RESULT_VERSION))


def _record(cls: type, path: str, data: object) -> Any:
    # Result, Usage and Truncation check nothing when built: every value is checked here.
    readers = _RESULT_READERS[cls]
    plain = _check_keys(path, data, readers, _required(cls))
    return cls(**{key: readers[key](f"{path}.{key}", value) for key, value in plain.items()})


def _scalar(
    what: str,
    test: Callable[[Any], bool],
    nullable: bool = False,
    convert: Callable[[Any], Any] | None = None,
) -> Reader:
    """A reader of one value that passes ``test`` (``what`` says what that is), or of null."""

    def read(path: str, value: object) -> object:
        if value is None and nullable:
            return None
        if not test(value):
            raise PolicyError(f"{path}: expected {what}, got {_shown(value)}")
        return value if convert is None else convert(value)

    return read


def _nested(cls: type, nullable: bool = False) -> Reader:
    def read(path: str, value: object) -> object:
        if value is None and nullable:
            return None
        if not isinstance(value, dict):
            also = " or null" if nullable else ""
            raise PolicyError(f"{path}: expected an object{also}, got {_shown(value)}")
        return _record(cls, path, value)

    return read


def _texts(path: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise PolicyError(f"{path}: expected a list, got {_shown(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise PolicyError(f"{path}[{index}]: expected text, got {_shown(item)}")
    return tuple(value)


def _counts(path: str, value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        raise PolicyError(
            f"{path}: expected an object of syscall names to counts, got {_shown(value)}"
        )
    for name, count in value.items():
        # JSON's keys are text; a dict built in Python may hold anything.
        if not isinstance(name, str) or not name:
            raise PolicyError(f"{path}: expected syscall names as keys, got {_shown(name)}")
        if not _is_whole(count) or count < 1:
            # A name the listener could not resolve is "syscall 435": not a dotted key.
            where = f"{path}.{name}" if name.isidentifier() else f"{path}[{name!r}]"
            raise PolicyError(f"{where}: expected a whole number, at least 1, got {_shown(count)}")
    return dict(value)  # a copy: the caller's stays theirs to change


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # Python's json reads NaN and Infinity; no result holds them
    # An int beyond a float's range (JSON has no limit) would overflow when made one.
    return _is_whole(value) and abs(value) <= sys.float_info.max  # type: ignore[operator]


def _is_flag(value: object) -> bool:
    return isinstance(value, bool)


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _is_source(value: object) -> bool:
    return isinstance(value, str) and value in ("cgroup", "rusage")


_TEXT = _scalar("text", _is_text)
_WHOLE = _scalar("a whole number", _is_whole)
_WHOLE_OR_NULL = _scalar("a whole number or null", _is_whole, nullable=True)
# A float field takes an int (JavaScript's JSON.stringify writes 2.0 as 2), made a float.
_NUMBER = _scalar("a number", _is_number, convert=float)
_NUMBER_OR_NULL = _scalar("a number or null", _is_number, nullable=True, convert=float)
# Python's words, as the classes' own messages (task.fail_on_non_zero, policy.*) use them.
_FLAG = _scalar("True or False", _is_flag)
_FLAG_OR_NULL = _scalar("True, False or null", _is_flag, nullable=True)

# Every field of the result's records, and how its value is read.
_RESULT_READERS: dict[type, dict[str, Reader]] = {
    Result: {
        "name": _TEXT,
        "pid": _WHOLE_OR_NULL,
        "exit_code": _WHOLE_OR_NULL,
        "signal": _WHOLE_OR_NULL,
        "duration": _NUMBER,
        "timed_out": _FLAG,
        "cancelled": _FLAG,
        "oom_killed": _FLAG_OR_NULL,
        "usage": _nested(Usage, nullable=True),
        "stdout": _TEXT,
        "stderr": _TEXT,
        "truncated": _nested(Truncation),
        "warnings": _texts,
        "attempts": _WHOLE,
        "denied_syscalls": _counts,
    },
    Usage: {
        "source": _scalar("'cgroup' or 'rusage'", _is_source),
        "cpu_user": _NUMBER_OR_NULL,
        "cpu_system": _NUMBER_OR_NULL,
        "cpu_throttled": _NUMBER_OR_NULL,
        "memory_peak": _WHOLE_OR_NULL,
        "pids_peak": _WHOLE_OR_NULL,
        "oom_killed": _FLAG_OR_NULL,
    },
    Truncation: {
        "stdout_bytes": _WHOLE,
        "stdout_lines": _WHOLE,
        "stderr_bytes": _WHOLE,
        "stderr_lines": _WHOLE,
        "lines_cut": _WHOLE,
    },
}


# --- shared --------------------------------------------------------------------------------


def _expect_type(value: object, cls: type, name: str) -> None:
    if not isinstance(value, cls):
        raise TypeError(f"expected a {name}, got {type(value).__name__}")


def _unversioned(path: str, data: object, version: int) -> dict[Any, Any]:
    """``data``, an object of this ``version``, without its ``version`` key."""
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: expected an object, got {_shown(data)}")
    if "version" not in data:
        raise PolicyError(f"{path}.version: missing (this hardexec writes {version})")
    found = data["version"]
    if found != version or not _is_whole(found):  # True == 1 == 1.0, but neither is a version
        raise PolicyError(
            f"{path}.version: {_shown(found)} is not a version this hardexec reads ({version})"
        )
    return {key: value for key, value in data.items() if key != "version"}


def _check_keys(
    path: str, data: object, known: Any, required: tuple[str, ...] = ()
) -> dict[Any, Any]:
    """``data``, checked to be an object with no key outside ``known``, every one of
    ``required``."""
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: expected an object, got {_shown(data)}")
    for key in data:
        if key not in known:
            names = ", ".join(known)
            raise PolicyError(f"{path}.{key_shown(key)}: unknown key (known here: {names})")
    for key in required:
        if key not in data:
            raise PolicyError(f"{path}.{key}: missing")
    return data


def key_shown(key: object) -> str:
    """A key for a message: as it is when it is a plain name, else quoted (a key may hold a
    newline or a terminal escape that would forge another line)."""
    if isinstance(key, str) and key.isprintable() and len(key) <= 60:
        return key
    return _shown(key)


def _required(cls: type) -> tuple[str, ...]:
    """The fields of ``cls`` without a default: a plain form must give them."""
    return tuple(
        item.name
        for item in fields(cls)
        if item.init and item.default is MISSING and item.default_factory is MISSING
    )
