"""What one task is: :class:`TaskSpec` (command or script), validated when it is built.

A spec is plain, frozen data (it crosses processes and machines as JSON through
:mod:`hardexec.serial`); what it needs from the machine it runs on — the environment it
inherits, the script's memfd — is resolved only when an attempt starts (:mod:`.attempt`).
"""

from __future__ import annotations

import math
import os

from .._record import frozen
from ..errors import PolicyError
from ..errors import shown as _shown

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

__all__ = [
    "DEFAULT_PATH",
    "INTERPRETERS",
    "MAX_NAME",
    "MAX_SCRIPT_BYTES",
    "TaskSpec",
    "env_pairs",
    "resolve_env",
]

#: The interpreters script mode knows by name, and the argv each starts with. The script's path
#: (``/dev/fd/N``, a sealed memfd) follows. Node resolves its main module's links, and a memfd's
#: link names no file, so it is told to keep the path as given.
INTERPRETERS: dict[str, tuple[str, ...]] = {
    "bash": ("bash",),
    "sh": ("sh",),
    "python": ("python3",),
    "node": ("node", "--preserve-symlinks-main"),
}
MAX_SCRIPT_BYTES = 2 << 20  # 2 MiB: a script is a program's text, not its data
MAX_NAME = 256  # characters of a task's name
#: PATH given to a task whose environment is cleared and that names none itself.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_ENV_POLICIES = ("inherit", "clear")
_MAX_RETRIES = 1000
_MAX_TIMEOUT = 10**9  # s (about 31 years): asyncio's timers overflow far beyond


@frozen
class TaskSpec:
    """One task for a :class:`~hardexec.runner.Runner`. Build it with :meth:`command` or
    :meth:`script`; every field is validated at construction (a :class:`PolicyError` names it).

    Attributes:
        argv: the program and its arguments (command mode), or the interpreter's argv (script
            mode). No shell is involved.
        body: the script's text (script mode), else ``None``. It reaches the interpreter as a
            sealed memfd (``/dev/fd/N``): no argv length limit, readable only by the task, gone
            when the attempt ends.
        script_args: arguments after the script's path (``$1``…, ``sys.argv[1:]``).
        cwd: the working directory (must exist when the task starts); ``None``: the runner's.
        env: variables set for the task, over what ``env_policy`` lets through.
        env_policy: ``"inherit"`` (the runner's environment), ``"clear"`` (nothing, then
            ``PATH=/usr/local/bin:/usr/bin:/bin`` unless ``env`` gives one) or a tuple of the
            names to let through.
        input: bytes (or text, UTF-8) for the task's stdin; ``None``: stdin is ``/dev/null``.
        timeout: seconds before the task's tree is ended (SIGTERM, ``kill_after``, SIGKILL).
        kill_after: seconds between SIGTERM and SIGKILL (default 5).
        drain_timeout: seconds output may stay open after the program exited (a daemonised
            grandchild holding stdout) before the tree is killed (default 5).
        retries: further attempts after a retryable failure (a non-zero exit with
            ``fail_on_non_zero``, a transient spawn error such as EAGAIN).
        backoff: seconds before the first retry; doubled for each next one (at most 60 s).
        fail_on_non_zero: raise :class:`~hardexec.TaskFailed` (carrying the result) when the task
            does not exit 0.
        name: the task's name in logs, events and metrics (default: the program's name).
        max_script_bytes: the largest script body accepted, in UTF-8 bytes (default 2 MiB).
    """

    argv: tuple[str, ...]
    body: str | None = None
    script_args: tuple[str, ...] = ()
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    env_policy: str | tuple[str, ...] = "inherit"
    input: bytes | None = None
    timeout: float | None = None
    kill_after: float = 5.0
    drain_timeout: float = 5.0
    retries: int = 0
    backoff: float = 0.5
    fail_on_non_zero: bool = False
    name: str | None = None
    max_script_bytes: int = MAX_SCRIPT_BYTES

    def __post_init__(self) -> None:
        _set = object.__setattr__
        _set(self, "argv", _strings("task.argv", self.argv))
        if not self.argv:
            raise PolicyError("task.argv: empty (name a program to run)")
        if self.argv[0] == "":
            raise PolicyError("task.argv[0]: empty program name")
        _set(self, "script_args", _strings("task.script_args", self.script_args))
        if self.script_args and self.body is None:
            raise PolicyError("task.script_args: given without a script")
        _set(self, "max_script_bytes", _whole("task.max_script_bytes", self.max_script_bytes))
        if self.max_script_bytes < 1:
            raise PolicyError(f"task.max_script_bytes: {self.max_script_bytes} is not positive")
        if self.body is not None:
            _check_script(self.body, self.max_script_bytes)
        if self.cwd is not None:
            if isinstance(self.cwd, os.PathLike):
                _set(self, "cwd", os.fspath(self.cwd))
            _text("task.cwd", self.cwd)
            if self.cwd == "":
                raise PolicyError("task.cwd: empty path")
        _set(self, "env", env_pairs(self.env))
        _set(self, "env_policy", _env_policy(self.env_policy))
        if self.input is not None:
            if isinstance(self.input, str):
                _set(self, "input", _utf8("task.input", self.input))
            elif isinstance(self.input, (bytearray, memoryview)):
                _set(self, "input", bytes(self.input))
            elif not isinstance(self.input, bytes):
                raise PolicyError(
                    f"task.input: expected bytes or text, got {type(self.input).__name__}"
                )
        if self.timeout is not None:
            _set(self, "timeout", _seconds("task.timeout", self.timeout))
        _set(self, "kill_after", _seconds("task.kill_after", self.kill_after, zero_ok=True))
        _set(
            self, "drain_timeout", _seconds("task.drain_timeout", self.drain_timeout, zero_ok=True)
        )
        _set(self, "retries", _whole("task.retries", self.retries))
        if not 0 <= self.retries <= _MAX_RETRIES:
            raise PolicyError(f"task.retries: {_shown(self.retries)} is not in 0..{_MAX_RETRIES}")
        _set(self, "backoff", _seconds("task.backoff", self.backoff, zero_ok=True))
        if not isinstance(self.fail_on_non_zero, bool):
            value = _shown(self.fail_on_non_zero)
            raise PolicyError(f"task.fail_on_non_zero: expected True or False, got {value}")
        if self.name is not None:
            _text("task.name", self.name)
            if not self.name:
                raise PolicyError("task.name: empty (leave it out for the program's name)")
            if len(self.name) > MAX_NAME:
                # It goes into every log line, event and metric label of the task.
                raise PolicyError(
                    f"task.name: {len(self.name)} characters (at most {MAX_NAME}: it labels "
                    "every log line, event and metric of the task)"
                )

    def __repr__(self) -> str:
        # Arguments, variables' values, the input and the body may carry secrets: a spec's
        # repr (in a log, a traceback) names the program and counts the rest.
        shown = [f"program={self.program!r}", f"args={len(self.argv) - 1}"]
        if self.body is not None:
            shown.append(f"body=<{len(_utf8('task.body', self.body))} bytes>")
        if self.script_args:
            shown.append(f"script_args={len(self.script_args)}")
        if self.env:
            shown.append(f"env=[{', '.join(name for name, _ in self.env)}]")
        if self.input is not None:
            shown.append(f"input=<{len(self.input)} bytes>")
        for name in ("cwd", "env_policy", "timeout", "retries", "fail_on_non_zero", "name"):
            value = getattr(self, name)
            if value not in (None, "inherit", 0, False):
                shown.append(f"{name}={value!r}")
        return f"TaskSpec({', '.join(shown)})"

    # --- the two ways to build one ---------------------------------------------------------

    @classmethod
    def command(
        cls,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> TaskSpec:
        """Run ``argv`` (no shell): ``TaskSpec.command(["make", "test"], cwd="/src", timeout=600)``.

        ``env`` is a mapping of variables to set; every other keyword is a field of the class.
        """
        if isinstance(argv, (str, bytes)):
            raise PolicyError(
                "task.argv: expected a list of arguments, got one string "
                "(no shell is involved: split it yourself)"
            )
        return cls(argv=argv, env=_env_arg(env), **fields)  # type: ignore[arg-type]

    @classmethod
    def script(
        cls,
        interpreter: str | Sequence[str],
        body: str,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> TaskSpec:
        """Run ``body`` with an interpreter: ``TaskSpec.script("python", "print('hi')")``.

        ``interpreter`` is ``"bash"``, ``"sh"``, ``"python"``, ``"node"`` or an argv of your own
        (``["perl", "-w"]``); the script's path is appended, then ``args``.
        """
        if isinstance(interpreter, str):
            argv = INTERPRETERS.get(interpreter)
            if argv is None:
                known = ", ".join(INTERPRETERS)
                raise PolicyError(
                    f"task.interpreter: unknown interpreter {interpreter!r} (known: {known}; "
                    "or give an argv such as ['perl', '-w'])"
                )
        else:
            argv = interpreter  # type: ignore[assignment]  (checked as argv is)
        return cls(
            argv=argv,
            body=body,
            script_args=args,
            env=_env_arg(env),
            **fields,  # type: ignore[arg-type]
        )

    # --- what the runner reads ---------------------------------------------------------------

    @property
    def program(self) -> str:
        """The program's name, as logs show it (never its arguments: they may hold secrets)."""
        return os.path.basename(self.argv[0]) or self.argv[0]

    @property
    def label(self) -> str:
        """The task's name in logs, events and metrics."""
        return self.name if self.name is not None else self.program

    def check_cwd(self) -> None:
        """A :class:`PolicyError` unless ``cwd`` is a directory here (or not given).

        Not checked at construction: a spec may be built on another machine than its runner's.
        """
        if self.cwd is not None and not os.path.isdir(self.cwd):
            what = "is not a directory" if os.path.exists(self.cwd) else "does not exist"
            raise PolicyError(f"task.cwd: {self.cwd!r} {what}")

    def to_dict(self) -> dict[str, object]:
        """This spec as plain, JSON-ready data, versioned (see :mod:`hardexec.serial`)."""
        from ..serial import task_to_dict

        return task_to_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> TaskSpec:
        """A spec from :meth:`to_dict`'s form; strict, like :meth:`Policy.from_dict`."""
        from ..serial import task_from_dict

        return task_from_dict(data)


def resolve_env(
    spec: TaskSpec, fixed: Mapping[str, str] | None = None, base: Mapping[Any, Any] | None = None
) -> dict[Any, Any]:
    """The task's environment: what ``env_policy`` lets through of ``base`` (default: this
    process's), the task's ``env`` over it, and the runner's ``fixed`` over that (solti-exec's
    rule: the runner has the last word).

    A ``base`` with bytes keys (the command's environment as it came, byte for byte) gives a
    bytes mapping: names and values given as text are encoded as the file system encodes them.
    """
    base = os.environ if base is None else base
    raw = isinstance(next(iter(base), ""), bytes)  # one kind of key throughout
    code = os.fsencode if raw else str
    policy = spec.env_policy
    if policy == "inherit":
        env = dict(base)
    elif policy == "clear":
        env = {}
    else:
        env = {code(name): base[code(name)] for name in policy if code(name) in base}
    env.update((code(name), code(value)) for name, value in spec.env)
    if policy != "inherit" and code("PATH") not in env:
        env[code("PATH")] = code(DEFAULT_PATH)
    if fixed:
        env.update((code(name), code(value)) for name, value in fixed.items())
    return env


# --- validation ----------------------------------------------------------------------------


def _text(field: str, value: object, secret: bool = False) -> str:
    """``value``, text without NUL. A ``secret`` one (an argument, a variable's value, the
    input) is never quoted in the message: messages end up in logs."""
    if not isinstance(value, str):
        what = type(value).__name__ if secret else _shown(value)
        raise PolicyError(f"{field}: expected text, got {what}")
    if "\0" in value:
        where = f"a NUL byte at offset {value.index(chr(0))}"
        raise PolicyError(
            f"{field}: contains {where}" if secret else f"{field}: {_shown(value)} contains {where}"
        )
    return value


def _strings(field: str, values: Iterable[object]) -> tuple[str, ...]:
    # The values are arguments (secrets, maybe): the message names their type only.
    what = f"expected a list of arguments, got {type(values).__name__}"
    if isinstance(values, (str, bytes)) or hasattr(values, "keys"):
        raise PolicyError(f"{field}: {what}")
    try:
        items = tuple(values)
    except TypeError:
        raise PolicyError(f"{field}: {what}") from None
    return tuple(
        _text(f"{field}[{i}]", os.fspath(v) if isinstance(v, os.PathLike) else v, secret=True)
        for i, v in enumerate(items)
    )


# Messages about arguments, variables, the input and the body name the type of a wrong value,
# never the value: these fields carry secrets, and messages end up in logs.


def _env_arg(env: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    if env is None:
        return ()
    if not hasattr(env, "items"):
        raise PolicyError(
            f"task.env: expected a mapping of names to values, got {type(env).__name__}"
        )
    return tuple(env.items())


def env_pairs(pairs: object, field: str = "task.env") -> tuple[tuple[str, str], ...]:
    """A mapping (or pairs) of variables, checked: names non-empty without ``=``, no NUL."""
    if hasattr(pairs, "items"):
        pairs = tuple(pairs.items())  # type: ignore[attr-defined]
    elif isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
        raise PolicyError(
            f"{field}: expected a mapping of names to values, got {type(pairs).__name__}"
        )
    out: dict[str, str] = {}
    for item in pairs:  # type: ignore[attr-defined]
        if not (isinstance(item, tuple) and len(item) == 2):
            raise PolicyError(f"{field}: expected (name, value) pairs, got {type(item).__name__}")
        name, value = item
        _env_name(f"{field}[{name!r}]" if isinstance(name, str) else field, name)
        _text(f"{field}[{name!r}]", value, secret=True)
        out[name] = value
    return tuple(out.items())


def _env_name(field: str, name: object) -> None:
    _text(field, name)
    if name == "":
        raise PolicyError(f"{field}: empty variable name")
    if "=" in name:  # type: ignore[operator]
        raise PolicyError(f"{field}: variable name {name!r} contains '='")


def _env_policy(policy: object) -> str | tuple[str, ...]:
    if isinstance(policy, str):
        if policy not in _ENV_POLICIES:
            raise PolicyError(
                f"task.env_policy: {policy!r} is not 'inherit', 'clear' or a list of names"
            )
        return policy
    try:
        if hasattr(policy, "keys"):
            raise TypeError  # a mapping is not a list of names
        names = tuple(policy)  # type: ignore[arg-type]
    except TypeError:
        raise PolicyError(
            f"task.env_policy: expected 'inherit', 'clear' or a list of names, got {_shown(policy)}"
        ) from None
    for i, name in enumerate(names):
        _env_name(f"task.env_policy[{i}]", name)
    return names


def _check_script(body: object, limit: int) -> None:
    if not isinstance(body, str):
        raise PolicyError(f"task.body: expected text, got {type(body).__name__}")
    if not body:
        raise PolicyError("task.body: empty script")
    size = len(_utf8("task.body", body))
    if size > limit:
        raise PolicyError(
            f"task.body: the script is {size} bytes, over the limit of {limit} "
            "(task.max_script_bytes)"
        )


def _utf8(field: str, text: str) -> bytes:
    """``text`` as UTF-8; lone surrogates from undecodable bytes (surrogateescape) go back to
    those bytes, any other is an error."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as err:
        raise PolicyError(
            f"{field}: character {err.start} cannot be encoded as UTF-8 ({err.reason})"
        ) from None


def _whole(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{field}: expected a whole number, got {_shown(value)}")
    return value


def _seconds(field: str, value: object, zero_ok: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PolicyError(f"{field}: expected a number of seconds, got {_shown(value)}")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float
        raise PolicyError(f"{field}: {_shown(value)} s is more than {_MAX_TIMEOUT} s") from None
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not zero_ok):
        raise PolicyError(f"{field}: {value!r} is not a positive number of seconds")
    if seconds > _MAX_TIMEOUT:
        raise PolicyError(f"{field}: {value!r} s is more than {_MAX_TIMEOUT} s")
    return seconds
