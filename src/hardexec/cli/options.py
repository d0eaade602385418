"""``hardexec run`` options → a :class:`Policy` and what the command must do around it.

Every refusal is one line on stderr naming the option and the value, then exit 125, before
anything is spawned. Values are read strictly: ASCII digits only (an Arabic-Indic three is refused,
never read as 3), no NUL bytes, sizes and CPU counts the kernel can actually hold.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here anyway
    from argparse import Namespace
    from typing import Any, NoReturn

    from ..confine import Confinement
    from ..policy import CgroupLimits, CpuMax, Policy, RlimitConfig
    from ..policyfile import PolicyFile, RunSettings
    from ..runner.spec import TaskSpec

EXIT_USAGE = 2  # bare `hardexec`: a usage error, as argparse and most commands have it
EXIT_TIMEOUT = 124  # timed out, as timeout(1) says it
EXIT_FAILURE = 125  # hardexec itself failed, as env(1), chroot(1), timeout(1) use it
EXIT_NOEXEC = 126
EXIT_NOTFOUND = 127

# Policy errors name dataclass fields; at the shell the user typed options.
_OPTION_OF_FIELD = {
    "security.keep_caps": "--keep-cap",
    "security.user": "--user",
    "security.group": "--group",
    "security.supplementary_groups": "--groups",
    "security.drop_all_caps": "--drop-all-caps",
    "rlimits.max_open_files": "--nofile",
    "rlimits.max_file_size_bytes": "--fsize",
    "rlimits.address_space": "--as",
    "rlimits.cpu_seconds": "--cpu-seconds",
    "rlimits.max_processes": "--nproc",
    "rlimits.stack": "--stack",
    "cgroups.memory": "--memory",
    "cgroups.pids": "--pids",
    "cgroups.cpu.quota": "--cpus/--cpu-max quota",
    "cgroups.cpu.period": "--cpu-max period",
    "cgroups.cpu": "--cpus",
    "cgroup_parent": "--cgroup-parent",
    "task.env_policy": "--env-keep",
    "task.env": "--env",
    "task.cwd": "--cwd",
    "task.timeout": "--timeout",
    "task.kill_after": "--kill-after",
    "task.max_output": "--max-output",
    "confinement.fs_dependencies": "--no-fs-deps",
    "confinement.tcp_bind": "--tcp-bind",
    "confinement.tcp_connect": "--tcp-connect",
    "confinement.syscalls": "--syscalls*",
    "confinement.hostname": "--hostname",
    "confinement.umask": "--umask",
}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_MIN_CPU_QUOTA = 1000  # µs: the kernel's smallest cpu.max quota
_MAX_CPU_QUOTA = 2**63 // 1000  # µs: the kernel rejects cpu.max quotas whose ns overflow
_PATH_MAX = 4096  # bytes, the terminating NUL included (linux/limits.h)
_CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"


def fail(message: str) -> NoReturn:
    """``hardexec: MESSAGE`` on stderr, exit 125."""
    print(f"hardexec: {message}", file=sys.stderr)
    sys.exit(EXIT_FAILURE)


def parse_size(text: str, option: str) -> int:
    """``64M`` → 67108864. Suffixes K, M, G, T are powers of 1024 (``KiB``/``KB`` read alike)."""
    body = text.strip().upper()
    body = body[:-2] if body.endswith("IB") else body[:-1] if body.endswith("B") else body
    unit = body[-1:] if body[-1:] in ("K", "M", "G", "T") else ""
    digits = body[: len(body) - len(unit)]
    if not _ascii_digits(digits):
        fail(f"{option}: {text!r} is not a size (a whole number, then K, M, G or T if need be)")
    return int(digits) * _UNITS[unit]


def _ascii_digits(text: str) -> bool:
    """0-9 only, at least one (``str.isdecimal`` takes every script's digits)."""
    return text.isascii() and text.isdecimal()


def format_size(size: int) -> str:
    """The shortest exact spelling: 67108864 → ``64M``."""
    for unit in ("T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def _count(text: str, option: str) -> int:
    value = text.strip()
    if not _ascii_digits(value):
        fail(f"{option}: {text!r} is not a whole number")
    return int(value)


class Request:
    """What ``hardexec run`` was asked: the program, its policy, and the supervisor's duties.

    Attributes:
        argv: the program's argv.
        policy: the policy to apply.
        supervise: stay resident (a cgroup or usage was asked); otherwise exec the stage.
        usage: print what the program used at exit.
        keep_leftovers: wait for what the program started instead of killing it.
        best_effort: run without the cgroup when it cannot be applied (with a warning).
        ceilings: the cgroup options as typed (``--memory 64M``), for messages.
        task: the program as a runner task (:class:`hardexec.TaskSpec`): its timeout and grace,
            cwd and environment options, validated as the runner validates them.
        env: the program's environment (bytes, as hardexec was started with it, then the
            ``--env*`` options), or ``None`` for hardexec's own, unchanged.
        max_output: bytes of stdout and of stderr passed through (``None``: all, untouched).
        json_result: where to write the run's :class:`hardexec.Result` as JSON.
        verify: check the program against the policy at its exec (``--verify``; see
            :mod:`hardexec.verify`); it makes hardexec supervise.
        source: where the policy came from, for messages (``--policy web.toml``, …).
        typed_confinement: what the confinement options alone asked for (for messages).
        declared: the policy as asked, before hardexec added what supervising needs
            (``die_with_parent``); what :meth:`policy_file` writes.
    """

    def __init__(
        self,
        argv: list[str],
        policy: Policy,
        *,
        supervise: bool,
        usage: bool = False,
        keep_leftovers: bool = False,
        best_effort: bool = False,
        ceilings: tuple[str, ...] = (),
        task: TaskSpec | None = None,
        env: dict[bytes, bytes] | None = None,
        max_output: int | None = None,
        json_result: str | None = None,
        verify: bool = False,
        source: str = "the options",
        typed_confinement: Confinement | None = None,
        declared: Policy | None = None,
    ) -> None:
        self.task = task
        self.env = env
        self.max_output = max_output
        self.json_result = json_result
        self.argv = argv
        self.policy = policy
        self.supervise = supervise
        self.usage = usage
        self.keep_leftovers = keep_leftovers
        self.best_effort = best_effort
        self.ceilings = ceilings
        self.verify = verify
        self.source = source
        self.typed_confinement = typed_confinement
        self.declared = policy if declared is None else declared

    def policy_file(self) -> PolicyFile:
        """What this run asks for, as a policy file holds it (``hardexec run --policy`` of it
        asks for the same): the policy, and the run's environment, time and output."""
        from ..policyfile import PolicyFile, RunSettings

        task = self.task
        run = RunSettings()
        if task is not None:
            timed = task.timeout is not None
            run = RunSettings(
                env_policy=task.env_policy,
                env=task.env,
                timeout=task.timeout,
                kill_after=task.kill_after if timed and task.kill_after != 5.0 else None,
                max_output=self.max_output,
            )
        return PolicyFile(policy=self.declared, run=run)


def request(ns: Namespace) -> Request:
    """Check the ``run`` options and build the :class:`Request` (or exit 125 saying why).

    A ``--profile``, then a ``--policy`` file, then the options: each over the one before
    (:func:`hardexec.policyfile.merge`). An option given replaces the value of the key it sets;
    a namespace option adds its namespace to those already asked for, and syscall options add
    to the filter already asked for.
    """
    _refuse_nul(ns)
    argv = ns.argv[1:] if ns.argv[:1] == ["--"] else ns.argv
    if not argv:
        command = getattr(ns, "command", None) or "run"
        fail(f"{command}: no command given (hardexec {command} [OPTIONS] -- COMMAND [ARG...])")
    base, source = _base(ns)
    typed_cgroup = any(_given(ns, dest) for dest in _CGROUP_DESTS)
    if ns.cgroup_parent is not None and base.get("cgroups") is None and not typed_cgroup:
        fail("--cgroup-parent: no cgroup is asked for (--memory, --pids, --cpus, --cgroup)")
    from .confine_options import confinement

    has_rules = bool((base.get("confinement") or {}).get("fs"))
    confined = confinement(ns, base_has_rules=has_rules)
    ceilings = _ceilings(ns)
    if base.get("cgroups") is not None and not typed_cgroup:
        ceilings = (*ceilings, f"the cgroup of {source}")
    merged = _merged(ns, base, confined)
    settings = merged.pop("run", {})
    doc = _document(merged, settings, source, ns)
    policy, run = doc.policy, doc.run
    if ns.best_effort and policy.cgroups is None and policy.confinement is None:
        fail(
            "--best-effort: no cgroup (--memory, --pids, --cpus, --cpu-max, --cgroup) or "
            "confinement (--fs-*, --tcp-*, --syscalls*, --net, --*-ns, --hostname) is asked for"
        )
    max_output = run.max_output  # never 0: refused when it was read (_document)
    if ns.kill_after is not None and run.timeout is None:
        fail("--kill-after: needs --timeout (it is the grace after the timeout's SIGTERM)")
    confinement_ = policy.confinement
    supervise = (
        policy.cgroups is not None
        or ns.usage
        or bool(run.timeout or max_output or ns.json_result)
        # A filter's denied syscalls are counted by a listener in a resident parent.
        or (confinement_ is not None and confinement_.syscalls is not None)
    )
    if ns.verify and confinement_ is not None and "pid" in confinement_.namespaces:
        fail(
            "--verify cannot be combined with --pid-ns: in a pid namespace hardexec's relay is "
            "the program's parent, so hardexec cannot stop the program at its exec to check it"
        )
    supervise = supervise or ns.verify  # the check is made by a resident parent, the tracer
    if ns.keep_leftovers and (run.timeout or max_output):
        # Waiting for leftovers is unbounded and reads no pipes: it would void either option.
        fail("--keep-leftovers cannot be combined with --timeout or --max-output")
    if ns.keep_leftovers and not supervise:
        fail(
            "--keep-leftovers: hardexec does not supervise this run (no cgroup option, no "
            "--usage, --timeout, --max-output, --json-result or syscall filter), so it kills "
            "nothing and there is nothing to keep"
        )
    declared = policy  # as asked: what a policy file of this run says
    if supervise and not policy.die_with_parent:
        # A supervised program must not outlive its supervisor, even a kill -9 of it.
        from .._record import replace

        policy = replace(policy, die_with_parent=True)
    where = "--keep-cap" if ns.keep_cap else f"{source}: security.keep_caps"
    _check_caps_exist(policy, where)
    if policy.cgroup_parent is not None and policy.cgroups is None:
        fail(f"{source}: cgroup_parent: no cgroup is asked for (a cgroups table, or --cgroup)")
    if policy.cgroups is not None and policy.cgroups.keep_at_exit:
        fail(
            f"{source}: cgroups.keep_at_exit: the command removes its group when the program "
            "ends (the key is for the Python API); use --keep-leftovers to wait for what is left"
        )
    task = _task(ns, argv, run)
    return Request(
        argv=list(argv),
        policy=policy,
        supervise=supervise,
        usage=ns.usage,
        keep_leftovers=ns.keep_leftovers,
        best_effort=ns.best_effort,
        ceilings=ceilings,
        task=task,
        env=_environment(task),
        max_output=max_output,
        json_result=ns.json_result,
        verify=ns.verify,
        source=source,
        typed_confinement=confined,
        declared=declared,
    )


def _base(ns: Namespace) -> tuple[dict[str, Any], str]:
    """The plain policy the options go over: ``--profile``'s, then ``--policy``'s file over it;
    and how to name where it came from in messages."""
    from ..errors import PolicyError
    from ..policyfile import PROFILES, load_dict, merge

    base: dict[str, Any] = {"version": 1}
    named = []
    for option, given in (("--profile", ns.profile), ("--policy", ns.policy)):
        if len(given) > 1:
            fail(f"{option}: given {len(given)} times ({', '.join(map(repr, given))}); give one")
    profile = ns.profile[0] if ns.profile else None
    policy_path = ns.policy[0] if ns.policy else None
    if profile is not None:
        if profile not in PROFILES:
            fail(f"--profile: {profile!r} is not a profile ({', '.join(PROFILES)})")
        base = PROFILES[profile]
        named.append(f"--profile {profile}")
    if policy_path is not None:
        from ..policyfile import file_plain, from_plain

        # A name that would forge a line of its own (a newline, an escape) is quoted.
        shown = policy_path if policy_path.isprintable() else repr(policy_path)
        try:
            data = file_plain(load_dict(policy_path), shown)
            from_plain(data, shown)  # checked alone first: its errors name only the file
        except PolicyError as err:
            fail(str(err))
        base = merge(base, data)
        named.append(f"--policy {shown}")
    return base, " and ".join(named) or "the options"


# What each option sets in a policy file's plain form.
_KEYS_OF_DEST: dict[str, tuple[str, ...]] = {
    "drop_all_caps": ("security", "drop_all_caps"),
    "keep_cap": ("security", "keep_caps"),
    "no_new_privs": ("security", "no_new_privs"),
    "strict": ("security", "fail_on_cap_error"),
    "user": ("security", "user"),
    "group": ("security", "group"),
    "groups": ("security", "supplementary_groups"),
    "nofile": ("rlimits", "max_open_files"),
    "fsize": ("rlimits", "max_file_size_bytes"),
    "no_core": ("rlimits", "disable_core_dumps"),
    "address_space": ("rlimits", "address_space"),
    "cpu_seconds": ("rlimits", "cpu_seconds"),
    "nproc": ("rlimits", "max_processes"),
    "stack": ("rlimits", "stack"),
    "memory": ("cgroups", "memory"),
    "pids": ("cgroups", "pids"),
    "cpus": ("cgroups", "cpu"),
    "cpu_max": ("cgroups", "cpu"),
    "cgroup_parent": ("cgroup_parent",),
    **{f"fs_{access}": ("confinement", "fs") for access in ("ro", "rx", "rw", "rwx")},
    "no_fs_deps": ("confinement", "fs_dependencies"),
    "tcp_bind": ("confinement", "tcp_bind"),
    "tcp_connect": ("confinement", "tcp_connect"),
    "syscalls": ("confinement", "syscalls"),
    "syscalls_allow": ("confinement", "syscalls"),
    "syscalls_deny": ("confinement", "syscalls"),
    "hostname": ("confinement", "hostname"),
    "umask": ("confinement", "umask"),
}
_CGROUP_DESTS = ("memory", "pids", "cpus", "cpu_max", "cgroup")
_NAMESPACE_DESTS = ("net", "pid_ns", "ipc_ns", "uts_ns", "hostname")


def _given(ns: Namespace, dest: str) -> bool:
    value = getattr(ns, dest)
    return value not in (None, False, [])


def _merged(ns: Namespace, base: dict[str, Any], confined: Any) -> dict[str, Any]:
    """``base`` with what the options say over it, as plain data."""
    from .. import serial
    from ..policyfile import merge

    own = serial.policy_to_dict(_policy(ns).with_confinement(confined))
    over: dict[str, Any] = {}

    def put(path: tuple[str, ...], value: Any) -> None:
        table = over
        for key in path[:-1]:
            table = table.setdefault(key, {})
        table[path[-1]] = value

    def own_value(path: tuple[str, ...]) -> Any:
        value: Any = own
        for key in path:
            value = value[key]
        return value

    for dest, path in _KEYS_OF_DEST.items():
        if dest == "no_fs_deps" and ns.no_fs_deps:
            put(path, False)  # alone (the rules are the file's) it makes no confinement of its own
        elif _given(ns, dest):
            put(path, own_value(path))
    if ns.cgroup:
        put(("cgroups",), {})
    namespaces = [n for n in own_value(("confinement", "namespaces"))] if confined else []
    if namespaces:
        before = (base.get("confinement") or {}).get("namespaces", [])
        put(("confinement", "namespaces"), [*before, *(n for n in namespaces if n not in before)])
    syscalls = over.get("confinement", {}).get("syscalls")
    if syscalls is not None:
        over["confinement"]["syscalls"] = _syscalls_over(base, syscalls)
    merged = merge(base, over)
    # From the command line a ceiling asked is a ceiling enforced, unless --best-effort: a
    # file's own fail_on_error = false (or best_effort = true) covers the file's, not the
    # options' (the table is one, so then it is enforced as a whole).
    if merged.get("cgroups") is not None:
        cgroups = merged["cgroups"] = dict(merged["cgroups"])
        if ns.best_effort:
            cgroups["fail_on_error"] = False
        elif any(_given(ns, dest) for dest in _CGROUP_DESTS):
            cgroups["fail_on_error"] = True
        else:
            cgroups.setdefault("fail_on_error", True)
    if merged.get("confinement") is not None:
        if ns.best_effort:
            merged["confinement"] = {**merged["confinement"], "best_effort": True}
        elif confined is not None or ns.no_fs_deps:
            merged["confinement"] = {**merged["confinement"], "best_effort": False}
    run = _run_options(ns, dict(merged.get("run", {})))
    if run:
        merged["run"] = run
    return merged


def _syscalls_over(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The options' syscall filter over the base's: they add to it, never silently take away.
    ``--syscalls default`` turns the default list on, ``--syscalls-deny`` adds rules,
    ``--syscalls-allow`` gives the allow-list."""
    before = (base.get("confinement") or {}).get("syscalls")
    if not isinstance(before, dict):
        return own
    deny = [*before.get("deny", []), *(r for r in own["deny"] if r not in before.get("deny", []))]
    return {
        "allow": own["allow"] if own["allow"] is not None else before.get("allow"),
        "deny": deny,
        "default": bool(own["default"] or before.get("default")),
    }


def _run_options(ns: Namespace, run: dict[str, Any]) -> dict[str, Any]:
    """``run``, a policy file's ``run`` table, with what the options say over it."""
    if ns.timeout is not None:
        run["timeout"] = parse_duration(ns.timeout, "--timeout")
    if ns.kill_after is not None:
        run["kill_after"] = parse_duration(ns.kill_after, "--kill-after")
    if ns.env_keep:
        run["env_policy"] = list(ns.env_keep)  # keeping names means clearing the rest
    elif ns.env_clear:
        run["env_policy"] = "clear"
    if ns.env:
        env = dict(run.get("env", {}))
        for item in ns.env:
            name, equals, value = item.partition("=")
            if not equals:  # not quoted: a value given by mistake may be a secret
                fail("--env: an item without '=' (expected NAME=VALUE)")
            env[name] = value
        run["env"] = env
    if ns.max_output is not None:
        run["max_output"] = parse_size(ns.max_output, "--max-output")
    return run


def _document(merged: dict[str, Any], run: dict[str, Any], source: str, ns: Namespace) -> Any:
    """The merged plain form read as a policy file: a mistake left only by combining them (each
    was checked alone) is named with both."""
    from ..errors import PolicyError
    from ..policyfile import from_plain

    security = merged.get("security", {})
    if ns.keep_cap and not security.get("drop_all_caps"):
        fail(f"--keep-cap {ns.keep_cap[0]}: needs --drop-all-caps (keep names what survives it)")
    if ns.max_output is not None and run.get("max_output") == 0:
        fail("--max-output: 0 would drop all output; give a size, or send it to /dev/null")
    try:
        return from_plain({**merged, "run": run}, f"the policy of {source}")
    except PolicyError as err:
        message = str(err).removeprefix(f"the policy of {source}: ")
        key = message.split(":", 1)[0].split("[", 1)[0]
        run_dests = {"timeout": "timeout", "kill_after": "kill_after", "max_output": "max_output"}
        by_option = {".".join(path) for dest, path in _KEYS_OF_DEST.items() if _given(ns, dest)}
        by_option |= {f"run.{k}" for k, dest in run_dests.items() if _given(ns, dest)}
        if ns.env or ns.env_keep or ns.env_clear:
            by_option |= {"run.env", "run.env_policy"}
        if key in by_option or source == "the options":
            # A value an option gave: say it in the option's words.
            fail(_in_options(_renamed_run(message)))
        fail(f"the policy of {source}: {message}")


def _renamed_run(message: str) -> str:
    """``run.timeout`` → ``task.timeout``, the field names ``_in_options`` knows."""
    import re

    return re.sub(r"(?<![\w/.-])run\.(?=[a-z_]+)", "task.", message)


def parse_duration(text: str, option: str) -> float:
    """``30s``, ``5m``, ``1.5h``, ``200ms``, ``2d`` or plain seconds (``30``, ``0.5``)."""
    body = text.strip().lower()
    unit = next((u for u in ("ms", "s", "m", "h", "d") if body.endswith(u)), "")
    number = body[: len(body) - len(unit)]
    whole, dot, fraction = number.partition(".")
    if not (whole or fraction) or not all(p == "" or _ascii_digits(p) for p in (whole, fraction)):
        fail(f"{option}: {text!r} is not a duration (30s, 5m, 1.5h, 200ms, or seconds)")
    return float(f"{whole or 0}{dot}{fraction}") * _DURATION_UNITS[unit or "s"]


def _task(ns: Namespace, argv: list[str], run: RunSettings) -> TaskSpec:
    """The run as a runner task: the runner's own validation of time, cwd and environment."""
    from ..errors import PolicyError
    from ..runner.spec import TaskSpec

    try:
        task = TaskSpec(
            argv=tuple(argv),
            env=run.env,
            env_policy=run.env_policy,
            cwd=ns.cwd,
            timeout=run.timeout,
            kill_after=5.0 if run.kill_after is None else run.kill_after,
        )
        task.check_cwd()
    except PolicyError as err:
        fail(_in_options(str(err)))
    return task


def _environment(task: TaskSpec) -> dict[bytes, bytes] | None:
    """The program's environment, if the policy or an ``--env*`` option changes hardexec's."""
    if task.env_policy == "inherit" and not task.env:
        return None
    from ..runner.spec import resolve_env
    from ..spawn_core import exec_time_environ

    return resolve_env(task, base=exec_time_environ())


def _refuse_nul(ns: Namespace) -> None:
    """No value can hold a NUL byte: the kernel would cut it short (execve, paths, names)."""
    from .args import OPTIONS

    for option, dest in OPTIONS.items():
        value = getattr(ns, dest)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and "\0" in item:
                fail(f"{option}: {item!r} contains a NUL byte")
    argv = ns.argv[1:] if ns.argv[:1] == ["--"] else ns.argv
    for index, arg in enumerate(argv):
        if "\0" in arg:
            fail(f"the command's argument {index} {arg!r} contains a NUL byte")


def _ceilings(ns: Namespace) -> tuple[str, ...]:
    """The cgroup options given, as typed, in a fixed order."""
    typed = [
        (f"--{name.replace('_', '-')} {getattr(ns, name)}")
        for name in ("memory", "pids", "cpus", "cpu_max")
        if getattr(ns, name) is not None
    ]
    if ns.cgroup:
        typed.append("--cgroup")
    return tuple(typed)


def _policy(ns: Namespace) -> Policy:
    """The policy the options alone ask for (their keys go over a profile's and a file's)."""
    from ..errors import HardexecError
    from ..policy import Policy, SecurityConfig

    groups = None
    if ns.groups is not None:
        groups = ns.groups.split(",") if ns.groups else []
        if "" in groups:
            fail(f"--groups: {ns.groups!r} has an empty item")
        for item in groups:
            _refuse_foreign_digits(item, "--groups")
    for option, value in (("--user", ns.user), ("--group", ns.group)):
        if value is not None:
            _refuse_foreign_digits(value, option)
    keep = _keep_caps(ns.keep_cap)
    if ns.cgroup_parent is not None and len(os.fsencode(ns.cgroup_parent)) >= _PATH_MAX:
        fail(
            f"--cgroup-parent: a path of {len(os.fsencode(ns.cgroup_parent))} bytes is longer "
            f"than the kernel allows ({_PATH_MAX - 1})"
        )
    try:
        policy = Policy(
            security=SecurityConfig(
                # Read here with what it needs; it counts only where it is given (_merged).
                drop_all_caps=ns.drop_all_caps or bool(keep),
                keep_caps=keep,
                no_new_privs=ns.no_new_privs,
                fail_on_cap_error=ns.strict,
                user=ns.user,
                group=ns.group,
                supplementary_groups=groups,
            ),
            rlimits=_rlimits(ns),
            cgroups=_cgroups(ns),
            cgroup_parent=ns.cgroup_parent,
        )
    except (HardexecError, ValueError) as err:
        fail(_in_options(str(err)))
    except OSError as err:  # only --cgroup-parent touches the filesystem here
        fail(f"--cgroup-parent: {ns.cgroup_parent!r}: {err.strerror or err}")
    return policy


def _in_options(message: str) -> str:
    """A policy error in the user's words: ``security.user`` → ``--user``."""
    import re

    names = sorted(_OPTION_OF_FIELD, key=len, reverse=True)
    fields = re.compile("|".join(re.escape(name) + r"(?:\[\d+\])?" for name in names))
    return fields.sub(lambda m: _option_of(m.group()), message)


def _option_of(field: str) -> str:
    return _OPTION_OF_FIELD.get(field.split("[", maxsplit=1)[0], field)


def _refuse_foreign_digits(value: str, option: str) -> None:
    """Arabic-Indic or other non-ASCII digits are decimal to Python; refuse, never read them."""
    text = value.strip()
    if not text.isascii() and any(char.isdecimal() for char in text):
        fail(f"{option}: {value!r} has non-ASCII digits; give an id in 0-9 or a name")


def _keep_caps(values: list[str]) -> list[str]:
    """``--keep-cap a,b --keep-cap c`` → ``[a, b, c]``."""
    caps = []
    for value in values:
        items = value.split(",")
        if "" in (item.strip() for item in items):
            fail(f"--keep-cap: {value!r} has an empty item")
        for item in items:
            if not item.isascii():
                fail(f"--keep-cap: {item!r} is not a capability name or number (ASCII only)")
            caps.append(item.strip())
    return caps


def _check_caps_exist(policy: Policy, where: str = "--keep-cap") -> None:
    """A kept capability the running kernel does not have is a mistake, not a no-op."""
    keep = policy.security.keep_caps
    if not keep:
        return
    try:
        with open(_CAP_LAST_CAP) as f:
            last = int(f.read())
    except (OSError, ValueError):
        return  # nothing to compare with; the stage reports what fails
    beyond = [cap for cap in keep if cap > last]  # type: ignore[union-attr]
    if beyond:
        from ..caps import cap_name

        fail(
            f"{where}: capability {', '.join(map(str, beyond))} does not exist on this kernel "
            f"(its last is {last}, {cap_name(last)}, per {_CAP_LAST_CAP})"
        )


def _rlimits(ns: Namespace) -> RlimitConfig:
    from ..policy import RlimitConfig

    def opt(value: str | None, option: str, size: bool = False) -> int | None:
        if value is None:
            return None
        return parse_size(value, option) if size else _count(value, option)

    return RlimitConfig(
        max_open_files=opt(ns.nofile, "--nofile"),
        max_file_size_bytes=opt(ns.fsize, "--fsize", size=True),
        disable_core_dumps=ns.no_core,
        address_space=opt(ns.address_space, "--as", size=True),
        cpu_seconds=opt(ns.cpu_seconds, "--cpu-seconds"),
        max_processes=opt(ns.nproc, "--nproc"),
        stack=opt(ns.stack, "--stack", size=True),
    )


def _cpu(ns: Namespace) -> CpuMax | None:
    from ..policy import CpuMax

    if ns.cpus is not None and ns.cpu_max is not None:
        fail("--cpus and --cpu-max say the same thing twice; give one")
    if ns.cpus is not None:
        return CpuMax(quota=_cpus_quota(ns.cpus), period=100_000)
    if ns.cpu_max is not None:
        quota, _, period = ns.cpu_max.partition("/")
        return CpuMax(
            quota=None if quota == "max" else _count(quota, "--cpu-max quota"),
            period=_count(period, "--cpu-max period") if period else 100_000,
        )
    return None


def _cpus_quota(text: str, period: int = 100_000) -> int:
    """``0.5`` → 50000 µs per 100000, computed exactly (no float: ``inf``, ``1e308`` refused)."""
    value = text.strip()
    whole, _, fraction = value.partition(".")
    parts_ok = all(part == "" or _ascii_digits(part) for part in (whole, fraction))
    if not (whole or fraction) or not parts_ok:
        fail(f"--cpus: {text!r} is not a number of CPUs (0.5, 2)")
    digits = len(fraction)
    scaled = int(whole or "0") * 10**digits + int(fraction or "0")
    quota = (scaled * period * 2 + 10**digits) // (2 * 10**digits)  # round half up
    if quota > _MAX_CPU_QUOTA:
        fail(f"--cpus: {text!r} is more than cpu.max can hold (at most {_MAX_CPU_QUOTA // period})")
    if quota < _MIN_CPU_QUOTA:
        fail(f"--cpus: {text!r} is less than cpu.max allows ({_MIN_CPU_QUOTA / period} CPU)")
    return quota


def _cgroups(ns: Namespace) -> CgroupLimits | None:
    from ..policy import CgroupLimits

    cpu = _cpu(ns)
    memory = parse_size(ns.memory, "--memory") if ns.memory is not None else None
    pids = _count(ns.pids, "--pids") if ns.pids is not None else None
    if not (ns.cgroup or cpu or memory is not None or pids is not None):
        return None
    # From the command line a ceiling asked is a ceiling enforced: refuse unless --best-effort.
    return CgroupLimits(cpu=cpu, memory=memory, pids=pids, fail_on_error=not ns.best_effort)
