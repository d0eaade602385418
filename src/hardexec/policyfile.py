"""Policy files (TOML or JSON) and the built-in profiles.

A policy file is a :class:`~hardexec.Policy` in the plain form :mod:`hardexec.serial` reads and
writes, plus a ``run`` table of what a run needs around the policy (its environment, time and
output), which the command line would otherwise give as options::

    # web.toml
    version = 1

    [security]
    drop_all_caps = true
    keep_caps = ["NET_BIND_SERVICE"]
    no_new_privs = true
    user = "www-data"

    [rlimits]
    max_open_files = 1024
    disable_core_dumps = true

    [cgroups]
    memory = 268435456          # bytes
    pids = 64

    [confinement]
    namespaces = ["ipc", "uts"]
    syscalls = { default = true, deny = ["ptrace:EPERM"] }
    fs = [{ path = "/srv/www", access = "ro" }, { path = "/var/log/web", access = "rw" }]

    [run]
    env_policy = "clear"        # "inherit", "clear" or a list of names to keep
    env = { LANG = "C.UTF-8" }
    timeout = 3600.0            # seconds
    kill_after = 5.0
    max_output = 10485760       # bytes of stdout and of stderr

Every key is optional but ``version``; one left out takes the class's default (TOML has no
null, so "no value" is written by leaving the key out), but for one: a file's cgroup is
enforced (``fail_on_error = true``) unless the file says ``fail_on_error = false``, as a ceiling
asked on the command line is. Unknown keys are errors, as is a value
of the wrong shape; the message names the file, the key path and the value::

    web.toml: security.keep_caps[1]: unknown capability 'NET_BIND'; did you mean ...

:data:`PROFILES` are policy files built in: ``strict``, ``service`` and ``none``. They, a file
and command-line options combine in that order, each over the one before (:func:`merge`): a
table merges key by key, any other value (a list, a number, ``confinement.syscalls`` as a
whole) replaces the one before it.
"""

from __future__ import annotations

import json
import os

from . import serial
from ._record import MISSING, fields, frozen
from .errors import PolicyError
from .errors import shown as _shown
from .policy import Policy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "FORMATS",
    "PROFILES",
    "PolicyFile",
    "RunSettings",
    "dumps",
    "file_plain",
    "from_dict",
    "from_plain",
    "load",
    "load_dict",
    "loads",
    "merge",
    "profile",
    "to_dict",
]

#: The formats a policy file may be written in, by file-name suffix.
FORMATS = {".toml": "toml", ".json": "json"}
_MAX_FILE_BYTES = 4 << 20  # a policy is configuration: anything larger is a mistake
# Tables written on one line in TOML (a syscall filter's allow, deny and default read as one).
_SHORT_TABLES = frozenset({("confinement", "syscalls")})
# Tables written inline in TOML.
_INLINE = frozenset({*_SHORT_TABLES, ("run", "env")})


@frozen
class RunSettings:
    """What a run needs around its policy, as a policy file's ``run`` table gives it.

    Attributes:
        env_policy: ``"inherit"`` (hardexec's environment), ``"clear"`` (nothing, then a
            default ``PATH``) or a tuple of the names to keep.
        env: ``(name, value)`` pairs set over what ``env_policy`` keeps.
        timeout: seconds before the program's tree is ended; ``None``: no timeout.
        kill_after: seconds between the timeout's SIGTERM and SIGKILL; ``None``: 5.
        max_output: bytes of stdout and of stderr passed through; ``None``: all.
    """

    env_policy: str | tuple[str, ...] = "inherit"
    env: tuple[tuple[str, str], ...] = ()
    timeout: float | None = None
    kill_after: float | None = None
    max_output: int | None = None

    def __post_init__(self) -> None:
        from .runner.spec import TaskSpec

        # The runner's own checks, with its messages' "task." made this table's name.
        try:
            task = TaskSpec(
                argv=("-",),
                env=self.env,
                env_policy=self.env_policy,
                timeout=self.timeout,
                kill_after=5.0 if self.kill_after is None else self.kill_after,
            )
        except PolicyError as err:
            raise PolicyError(_renamed(str(err), "task.", "run.")) from None
        object.__setattr__(self, "env", task.env)
        object.__setattr__(self, "env_policy", task.env_policy)
        object.__setattr__(self, "timeout", task.timeout)
        if self.kill_after is not None:
            object.__setattr__(self, "kill_after", task.kill_after)
            if self.timeout is None:
                raise PolicyError(
                    "run.kill_after: needs run.timeout (it is the grace after the timeout's "
                    "SIGTERM)"
                )
        if self.max_output is not None:
            value = self.max_output
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PolicyError(
                    f"run.max_output: expected bytes, at least 1, got {_shown(value)}"
                )


@frozen
class PolicyFile:
    """A policy file's content: the :class:`~hardexec.Policy` and the run's settings.

    Attributes:
        policy: what the program may hold, use and touch.
        run: its environment, time and output.
    """

    policy: Policy = Policy()
    run: RunSettings = RunSettings()

    def __post_init__(self) -> None:
        if not isinstance(self.policy, Policy):
            raise PolicyError(f"policy: expected a hardexec.Policy, got {_shown(self.policy)}")
        if not isinstance(self.run, RunSettings):
            raise PolicyError(f"run: expected a RunSettings, got {_shown(self.run)}")


# --- reading -------------------------------------------------------------------------------


def load(path: str | os.PathLike[str]) -> PolicyFile:
    """Read the policy file at ``path``: TOML (``.toml``) or JSON (``.json``).

    Raises:
        PolicyError: the file cannot be read, is not a regular file, is writable by its group
            or others or owned by someone other than root or this user (or a directory or
            symlink on its path is), is not valid
            TOML/JSON, or holds an unknown key or a bad value; the message starts with the
            file's name, then the key path.
    """
    return from_dict(load_dict(path), os.fspath(path))


def load_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The plain content of the policy file at ``path``, parsed but not yet checked."""
    name = os.fspath(path)
    suffix = os.path.splitext(name)[1].lower()
    if suffix not in FORMATS:
        raise PolicyError(f"{name}: not a policy file name (it must end in .toml or .json)")
    try:
        # Non-blocking: a FIFO named like a policy must be refused, not waited on.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        _check_path(name)
        with open(os.open(name, flags), "rb") as f:
            _check_owner(name, os.fstat(f.fileno()))
            data = f.read(_MAX_FILE_BYTES + 1)
    except OSError as err:
        raise PolicyError(f"{name}: cannot read it: {err.strerror or err}") from None
    if len(data) > _MAX_FILE_BYTES:
        raise PolicyError(f"{name}: larger than {_MAX_FILE_BYTES >> 20} MiB; not a policy")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PolicyError(f"{name}: not UTF-8 text (byte {err.start})") from None
    return _parse(text, FORMATS[suffix], name)


def _check_owner(name: str, st: os.stat_result) -> None:
    """A policy decides what a program may do with root's power: one that someone else can
    change is refused, as sudo and sshd refuse such configuration files."""
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise PolicyError(f"{name}: not a regular file")
    if st.st_mode & 0o022:
        raise PolicyError(
            f"{name}: writable by its group or others (mode {stat.S_IMODE(st.st_mode):04o}); a "
            "policy must be writable only by its owner (chmod go-w)"
        )
    if st.st_uid not in (0, os.geteuid()):
        raise PolicyError(
            f"{name}: owned by uid {st.st_uid}, neither root nor this user ({os.geteuid()})"
        )


def _check_path(name: str) -> None:
    """Whoever may replace a directory entry on the way to the file chooses the policy: every
    directory on the path, as given and as resolved, must be writable only by its owner (or
    sticky, as /tmp is) and owned by root or this user, and so must every symlink on it."""
    import stat

    me = os.geteuid()
    for path in dict.fromkeys((os.path.abspath(name), os.path.realpath(name))):
        parts = path.split("/")
        for end in range(2, len(parts) + 1):
            here = "/".join(parts[:end])
            try:
                st = os.lstat(here)
            except OSError:
                return  # opening the file says what is missing
            kind = "symlink" if stat.S_ISLNK(st.st_mode) else "directory"
            if end == len(parts) and kind != "symlink":
                break  # the file itself: checked on the opened fd
            if st.st_uid not in (0, me):
                raise PolicyError(
                    f"{name}: the {kind} {here} on its path is owned by uid {st.st_uid}, neither "
                    f"root nor this user ({me}), who could replace the policy"
                )
            if kind == "directory" and st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
                raise PolicyError(
                    f"{name}: the directory {here} on its path is writable by its group or "
                    f"others (mode {stat.S_IMODE(st.st_mode):04o}), who could replace the policy"
                )


def loads(text: str, *, fmt: str = "toml", name: str = "<policy>") -> PolicyFile:
    """Read a policy file's text; ``fmt`` is ``"toml"`` or ``"json"``; ``name`` starts messages."""
    return from_dict(_parse(text, fmt, name), name)


def _parse(text: str, fmt: str, name: str) -> dict[str, Any]:
    if text.startswith("\ufeff"):
        raise PolicyError(f"{name}: starts with a byte-order mark; save it as UTF-8 without one")
    if fmt == "toml":
        import tomllib

        _check_dotted_keys(text, name)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise PolicyError(f"{name}: not valid TOML: {err}") from None
        except RecursionError:
            raise PolicyError(f"{name}: not valid TOML: nested too deeply") from None
        except ValueError as err:  # an integer of more digits than Python converts
            raise PolicyError(f"{name}: not valid TOML: {err}") from None
    elif fmt == "json":
        try:
            data = json.loads(text, object_pairs_hook=_no_repeats, parse_constant=_no_constant)
        except RecursionError:
            raise PolicyError(f"{name}: not valid JSON: nested too deeply") from None
        except ValueError as err:  # json.JSONDecodeError, and ours
            raise PolicyError(f"{name}: not valid JSON: {err}") from None
    else:
        raise PolicyError(f"fmt: {_shown(fmt)} is not a policy file format (toml, json)")
    if not isinstance(data, dict):
        raise PolicyError(f"{name}: expected an object of keys, got {type(data).__name__}")
    _check_text(data, name)
    return data


# No key of a policy is more than four deep; tomllib takes time and memory quadratic in the
# parts of a dotted key, so a long one is refused before it is parsed.
_MAX_KEY_DOTS = 32
_MAX_DEPTH = 16


def _check_dotted_keys(text: str, name: str) -> None:
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        key = stripped if stripped.startswith("[") else stripped.split("=", 1)[0]
        if key.count(".") > _MAX_KEY_DOTS:
            raise PolicyError(f"{name}: line {number}: a key of more than {_MAX_KEY_DOTS} parts")


def _check_text(data: object, name: str) -> None:
    """Refuse text that is not Unicode (a lone surrogate, which JSON can escape) anywhere, and
    nesting deeper than any policy has: both would fail later, far from the file."""
    todo: list[tuple[object, str, int]] = [(data, "", 0)]
    while todo:
        value, path, depth = todo.pop()
        if depth > _MAX_DEPTH:
            raise PolicyError(f"{name}: {path or 'the top'}: nested deeper than a policy goes")
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and not _is_unicode(key):
                    raise PolicyError(f"{name}: {_shown(key)}: a key that is not Unicode text")
                todo.append((item, where, depth + 1))
        elif isinstance(value, list):
            todo.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str) and not _is_unicode(value):
            from .serial import key_shown

            where = ".".join(key_shown(part) for part in path.split("."))
            raise PolicyError(f"{name}: {where}: not Unicode text (a lone surrogate)")


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # TOML refuses a key given twice; JSON's last one would silently win.
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"key {key!r} given twice")
        found[key] = value
    return found


def _no_constant(word: str) -> None:
    raise ValueError(f"{word} is not a number a policy can hold")


def from_dict(data: object, name: str = "<policy>") -> PolicyFile:
    """A :class:`PolicyFile` from its plain form (a parsed file); ``name`` starts messages.

    Raises:
        PolicyError: an unknown or missing key, or a bad value, named by its key path.
    """
    return from_plain(file_plain(data, name), name)


def file_plain(data: object, name: str = "<policy>") -> dict[str, Any]:
    """A parsed file's content in :mod:`hardexec.serial`'s plain form (plus its ``run``
    table), with only the keys the file gives: what :func:`merge` combines."""
    if not isinstance(data, dict):
        raise PolicyError(f"{name}: expected an object of keys, got {_shown(data)}")
    body = _file_forms(data, name)
    cgroups = body.get("cgroups")
    if isinstance(cgroups, dict) and "fail_on_error" not in cgroups:
        # A file's ceiling is a ceiling enforced unless it says otherwise (the API's records
        # default to best effort; an operator's file fails closed).
        body = {**body, "cgroups": {**cgroups, "fail_on_error": True}}
    return body


def from_plain(data: dict[str, Any], name: str = "<policy>") -> PolicyFile:
    """A :class:`PolicyFile` from :func:`file_plain`'s form (files and options combined)."""
    known = ["run", *(item.name for item in fields(Policy) if item.init)]
    for key in data:
        if key != "version" and key not in known:  # a file's top level has run, serial's not
            raise PolicyError(
                f"{name}: {serial.key_shown(key)}: unknown key (known here: {', '.join(known)})"
            )
    body = {key: value for key, value in data.items() if key != "run"}
    try:
        policy = serial.policy_from_dict(body)
    except PolicyError as err:
        raise PolicyError(f"{name}: {_renamed(str(err), 'policy.', '')}") from None
    try:
        run = _run_settings(data.get("run", {}))
    except PolicyError as err:
        raise PolicyError(f"{name}: {err}") from None
    return PolicyFile(policy=policy, run=run)


def _file_forms(body: dict[str, Any], name: str) -> dict[str, Any]:
    """What a file says differently from :mod:`hardexec.serial`'s plain form, made that form:
    a umask as octal text; and what a file must not say: a relative path (it would mean
    another place from each directory hardexec is started in)."""
    confinement = body.get("confinement")
    if isinstance(confinement, dict):
        confinement = dict(confinement)
        umask = confinement.get("umask")
        if umask is not None:
            if not isinstance(umask, str) or not umask or not set(umask) <= set("01234567"):
                hint = f'"0{umask:o}"' if isinstance(umask, int) and 0 <= umask <= 0o777 else ""
                raise PolicyError(
                    f'{name}: confinement.umask: expected octal text such as "077", got '
                    f"{_shown(umask)}" + (f" (as a number it reads as {hint})" if hint else "")
                )
            confinement["umask"] = int(umask, 8)
        rules = confinement.get("fs")
        if isinstance(rules, list):
            for index, rule in enumerate(rules):
                path = rule.get("path") if isinstance(rule, dict) else None
                if isinstance(path, str) and not path.startswith("/"):
                    raise PolicyError(
                        f"{name}: confinement.fs[{index}].path: {_shown(path)} is relative; a "
                        "policy file's paths must be absolute"
                    )
        body = {**body, "confinement": confinement}
    parent = body.get("cgroup_parent")
    if isinstance(parent, str) and not parent.startswith("/"):
        raise PolicyError(
            f"{name}: cgroup_parent: {_shown(parent)} is relative; a policy file's paths must be "
            "absolute"
        )
    return body


def _run_settings(data: object) -> RunSettings:
    from .serial import key_shown

    if not isinstance(data, dict):  # its type only: a misplaced value may be a secret
        raise PolicyError(f"run: expected a table of keys, got {type(data).__name__}")
    known = [item.name for item in fields(RunSettings)]
    for key in data:
        if key not in known:
            raise PolicyError(f"run.{key_shown(key)}: unknown key (known here: {', '.join(known)})")
    values = dict(data)
    policy = values.get("env_policy")
    if isinstance(policy, list):
        values["env_policy"] = tuple(policy)
    elif policy is not None and not isinstance(policy, str):
        what = type(policy).__name__  # not the value: a misplaced env table may hold secrets
        raise PolicyError(f"run.env_policy: expected 'inherit', 'clear' or a list, got {what}")
    env = values.get("env")
    if env is not None:
        if not isinstance(env, dict):
            what = type(env).__name__  # not the value: it may hold secrets
            raise PolicyError(f"run.env: expected a table of names to values, got {what}")
        values["env"] = tuple(env.items())
    for key in ("timeout", "kill_after"):
        if isinstance(values.get(key), bool):  # True would pass as 1 second
            raise PolicyError(f"run.{key}: expected seconds, got {values[key]!r}")
    return RunSettings(**values)


def _renamed(message: str, old: str, new: str) -> str:
    """``message`` with the key-path prefix ``old`` at its start made ``new``."""
    return new + message[len(old) :] if message.startswith(old) else message


# --- writing -------------------------------------------------------------------------------


def to_dict(doc: PolicyFile) -> dict[str, Any]:
    """``doc`` as plain data, with only what differs from the defaults (how a file says it)."""
    if not isinstance(doc, PolicyFile):
        raise TypeError(f"expected a hardexec.policyfile.PolicyFile, got {type(doc).__name__}")
    plain = serial.policy_to_dict(doc.policy)
    version = plain.pop("version")
    out: dict[str, Any] = {"version": version, **_pruned(Policy, plain)}
    confinement = out.get("confinement")
    if confinement is not None and "umask" in confinement:
        # Octal text: TOML and JSON numbers are decimal, and 77 is not 0o077.
        confinement["umask"] = f"{confinement['umask']:03o}"
    if doc.policy.cgroups is not None:
        # Said only when false: a file's cgroup fails closed unless it says otherwise.
        cgroups = out["cgroups"]
        cgroups.pop("fail_on_error", None)
        if not doc.policy.cgroups.fail_on_error:
            cgroups["fail_on_error"] = False
    run = {}
    for item in fields(RunSettings):
        value = getattr(doc.run, item.name)
        if value == item.default:
            continue
        if item.name == "env":
            value = dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        run[item.name] = value
    if run:
        out["run"] = run
    return out


def _pruned(cls: type, plain: dict[str, Any]) -> dict[str, Any]:
    """``plain`` (a ``cls`` record's) without the values that are ``cls``'s defaults."""
    nested = serial._NESTED.get(cls, {})
    out = {}
    for item in fields(cls):
        if not item.init or item.name not in plain:
            continue
        value = plain[item.name]
        default = _default_plain(item)
        if item.name in nested and isinstance(value, dict):
            inner = _pruned(nested[item.name], value)
            # A record the default leaves out (None) is kept even when it is all defaults: its
            # presence is what it says (``cgroups = {}``: a group with no limits).
            if inner or default is None:
                out[item.name] = inner
        elif value != default:
            out[item.name] = value
    return out


def _default_plain(item: Any) -> Any:
    if item.default is not MISSING:
        value = item.default
    elif item.default_factory is not MISSING:
        value = item.default_factory()
    else:
        return MISSING
    if hasattr(value, "names"):  # a CapSet
        return value.names()
    if hasattr(value, "__record_fields__"):
        return serial._to_plain(value)
    return list(value) if isinstance(value, tuple) else value


def dumps(doc: PolicyFile, fmt: str = "toml") -> str:
    """``doc`` as a policy file's text, ``"toml"`` or ``"json"``; ``loads(dumps(d)) == d``.

    Raises:
        PolicyError: ``fmt`` is not a format, a value TOML cannot hold (null) differs from
            its default, or a text is not Unicode (a lone surrogate, as ``os.fsdecode`` makes
            of bytes that are not UTF-8).
    """
    plain = to_dict(doc)
    _check_text(plain, "policy")  # what loads would refuse is not written either
    if fmt == "json":
        return json.dumps(plain, indent=2) + "\n"
    if fmt != "toml":
        raise PolicyError(f"fmt: {_shown(fmt)} is not a policy file format (toml, json)")
    return _toml(plain)


def _toml(plain: dict[str, Any]) -> str:
    lines: list[str] = []
    _toml_table(plain, (), lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_table(table: dict[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    # Short tables of a syscall filter or an environment read best inline; tables of tables
    # (security, confinement, ...) get a header of their own.
    def inline(key: str, value: object) -> bool:
        return not isinstance(value, dict) or (*path, key) in _INLINE

    direct = [key for key, value in table.items() if inline(key, value)]
    if path and (direct or len(direct) == len(table)):  # an empty table still says it is there
        lines.extend(("", f"[{'.'.join(_toml_key(part) for part in path)}]"))
    for key in direct:
        where = ".".join((*path, key))
        lines.append(f"{_toml_key(key)} = {_toml_value(table[key], where)}")
    for key, value in table.items():
        if key not in direct:
            _toml_table(value, (*path, key), lines)


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else _toml_string(key)


def _toml_value(value: object, where: str) -> str:
    if value is None:
        raise PolicyError(f"{where}: null cannot be written in TOML (write the file as JSON)")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # finite: the classes refuse NaN and infinities
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, dict):
        items = (f"{_toml_key(k)} = {_toml_value(v, f'{where}.{k}')}" for k, v in value.items())
        return "{ " + ", ".join(items) + " }" if value else "{}"
    raise PolicyError(f"{where}: {_shown(value)} cannot be written in TOML")


def _toml_string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate (os.fsdecode's): TOML cannot hold it
            raise PolicyError(f"{text!r}: not valid Unicode text; cannot be written in TOML")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


# --- combining -----------------------------------------------------------------------------


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base`` (plain forms): tables merge key by key, every other value
    replaces the one in ``base``. Neither is changed."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# --- profiles ------------------------------------------------------------------------------

_STRICT: dict[str, Any] = {
    "version": 1,
    "security": {"drop_all_caps": True, "no_new_privs": True},
    "rlimits": {"disable_core_dumps": True},
    "confinement": {"syscalls": {"default": True}, "namespaces": ["net"]},
    "run": {"env_policy": "clear"},
}
#: The built-in profiles, as the plain form of a policy file (see the README for each one).
#:
#: - ``strict``: no capabilities, no_new_privs, no core dumps, the environment cleared but
#:   ``PATH``, hardexec's default syscall deny-list, and no network (a namespace with only a
#:   loopback).
#: - ``service``: ``strict``, keeping CAP_NET_BIND_SERVICE and the host's network.
#: - ``none``: nothing: the program runs as hardexec would run it without options.
PROFILES: dict[str, dict[str, Any]] = {
    "strict": _STRICT,
    "service": merge(
        _STRICT,
        {
            "security": {"keep_caps": ["NET_BIND_SERVICE"]},
            "confinement": {"namespaces": []},
        },
    ),
    "none": {"version": 1},
}


def profile(name: str) -> PolicyFile:
    """The built-in profile ``name`` (``strict``, ``service``, ``none``).

    Raises:
        PolicyError: no profile has that name.
    """
    if name not in PROFILES:
        raise PolicyError(f"profile: {_shown(name)} is not a profile ({', '.join(PROFILES)})")
    return from_dict(PROFILES[name], f"profile {name}")
