"""The one launch core under every spawning surface (sync, async, wrap, the command line).

A hardened spawn is: the program's group (if any), its environment and supplementary groups
written to sealed memfds, a report pipe, and the exec-stage argv that ties them together. The
stage itself is spawned with an *empty* environment: the program's own (LD_PRELOAD, LD_AUDIT,
PYTHONPATH, …) must never act inside the privileged stage, so it travels by fd and reaches
only the program's execve.

This module imports nothing heavy (no subprocess, no asyncio, no threads): ``hardexec run``
in exec mode goes through it straight to ``execve``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import warnings

from ._record import replace
from .errors import CgroupError, HardexecError, PolicyError, StageWarning
from .plan import StrOrBytesPath, compile_plan
from .policy import Policy
from .report import StageReport, caller_stacklevel, hardexec_logger, parse_report

try:  # the C module under `signal`, without its enum classes: their creation costs start-up
    import _signal as signal
except ImportError:  # not CPython
    import signal  # type: ignore[no-redef]
from .stage import stage_command

TYPE_CHECKING = False  # typing is not imported here: `hardexec run` execs through this module
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, NoReturn, TypeAlias

    from .cgroups import Cgroup
    from .confine.compile import Confined
    from .confine.notify import Listener

    Args: TypeAlias = StrOrBytesPath | Sequence[StrOrBytesPath]

__all__ = [
    "Launch",
    "check_policy",
    "exec_stage",
    "kill_tree",
    "policy_applies",
    "process_group_alive",
    "signal_tree",
]

_EMPTY = Policy()
_platform_warned = False
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
# subprocess's restore_signals=True resets exactly these (CPython ignores them at start-up).
_MAX_ID = 0xFFFFFFFF  # uid_t/gid_t: what subprocess overflows on
_RESTORED = (signal.SIGPIPE, signal.SIGXFSZ)


def check_policy(policy: Policy | None) -> Policy:
    """``policy`` itself, or the empty policy for ``None``; a TypeError for anything else."""
    if policy is None:
        return _EMPTY
    if not isinstance(policy, Policy):
        raise TypeError(f"policy: expected hardexec.Policy or None, got {type(policy).__name__}")
    return policy


def policy_applies(policy: Policy) -> bool:
    """Whether the policy needs the stage here (warns once, and ignores it, off Linux)."""
    global _platform_warned
    if policy.is_empty():
        return False
    if sys.platform.startswith("linux"):
        return True
    if not _platform_warned:
        _platform_warned = True
        warnings.warn(
            f"hardexec policies are only enforced on Linux; on {sys.platform} they are ignored",
            RuntimeWarning,
            stacklevel=caller_stacklevel(),
        )
    return False


def program_argv(args: Args, kwargs: dict[str, Any]) -> tuple[list[StrOrBytesPath], Any]:
    """subprocess's own rules for args/shell/executable, done here because the stage execs.

    Returns the program's argv and the file to exec (``None``: search ``argv[0]`` on PATH).
    """
    shell = kwargs.pop("shell", False)
    executable = kwargs.pop("executable", None)
    if isinstance(args, (str, bytes)):
        argv: list[StrOrBytesPath] = [args]
    elif isinstance(args, os.PathLike):
        if shell:
            raise TypeError("path-like args is not allowed when shell is true")
        argv = [args]
    else:
        argv = list(args)
    if shell:
        argv = ["/bin/sh", "-c", *argv]
        if executable is not None:
            argv[0] = executable
        executable = None
    if not argv:
        raise ValueError("args: the program's argument list is empty")
    return argv, executable


def env_block(env: Mapping[Any, Any] | None) -> bytes:
    """The program's environment as ``NAME=value\\0`` entries, validated as subprocess does.

    ``None`` is this process's environment (what subprocess gives a child without ``env=``).
    """
    if env is None:
        # os.environb's own dict when it has one: its mapping interface decodes and checks
        # every entry again, which made this the dearest part of a spawn. Entries of the
        # process's environment can hold neither NUL nor "=" in a name.
        raw = getattr(os.environb, "_data", None)
        items = raw.items() if isinstance(raw, dict) else os.environb.items()
        return b"".join([b"%s=%s\0" % item for item in items])
    entries = []
    for key, value in env.items():
        name = os.fsencode(key)
        if b"=" in name:
            raise ValueError("illegal environment variable name")
        entry = name + b"=" + os.fsencode(value)
        if b"\0" in entry:
            raise ValueError("embedded null byte")
        entries.append(entry + b"\0")
    return b"".join(entries)


def sealed_memfd(name: str, data: bytes) -> int:
    """A close-on-exec memfd holding ``data``, sealed against any change, numbered 3 or above."""
    fd = _above_stdio(os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING))
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _above_stdio(fd: int) -> int:
    """``fd``, or a duplicate of it numbered 3 or above (closing the original).

    The stage's stdio is dup'ed onto 0..2; an fd of ours there would be clobbered (CPython's
    _posixsubprocess moves its own error pipe out of that range the same way).
    """
    low = []
    try:
        while fd < 3:
            low.append(fd)
            fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        for number in low:
            os.close(number)
    return fd


def report_pipe() -> tuple[int, int]:
    """The report pipe: both ends close-on-exec here, the write end numbered 3 or above."""
    read_fd, write_fd = os.pipe()
    try:
        return read_fd, _above_stdio(write_fd)
    except BaseException:
        os.close(read_fd)
        raise


def inheritable_fds() -> tuple[int, ...]:
    """This process's inheritable fds above 2 (what ``close_fds=False`` hands a child)."""
    fds = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                fds.append(fd)
        except OSError:  # the listing's own fd, closed by now
            pass
    return tuple(fds)


def merge_identity(policy: Policy, kwargs: dict[str, Any]) -> Policy:
    """subprocess's ``user=``/``group=``/``extra_groups=`` folded into the policy's identity.

    The stage applies them in the kernel's order with the rest; one given both ways with
    different values is an error rather than a silent choice.
    """
    given = {
        "user": kwargs.pop("user", None),
        "group": kwargs.pop("group", None),
        "supplementary_groups": kwargs.pop("extra_groups", None),
    }
    given = {name: value for name, value in given.items() if value is not None}
    if not given:
        return policy
    security = policy.security
    for name in ("user", "group"):  # subprocess's own checks, with its exception types
        value = given.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > _MAX_ID:
            raise OverflowError(f"{name} id {value} is too large")
    if "supplementary_groups" in given:
        if isinstance(given["supplementary_groups"], (str, bytes)):
            raise ValueError("Groups must be a list, not a string")  # subprocess's own words
        given["supplementary_groups"] = tuple(given["supplementary_groups"])
    wanted = replace(security, **{name: given[name] for name in given})  # resolves the names
    for name, value in given.items():
        mine = getattr(security, name)
        same = _same_ids(name, security.identity, wanted.identity)
        if mine is not None and not same:
            keyword = "extra_groups" if name == "supplementary_groups" else name
            raise PolicyError(
                f"{keyword}={value!r} conflicts with the policy's security.{name}={mine!r}; "
                "give the identity in one place"
            )
    return policy.with_security(wanted)


def _same_ids(name: str, mine: Any, wanted: Any) -> bool:
    """Whether two identities agree on ``name`` once names are resolved (nobody == 65534)."""
    if name == "user":
        return mine.uid == wanted.uid
    if name == "group":
        return mine.gid == wanted.gid
    return set(mine.groups or ()) == set(wanted.groups or ())  # a set: order and repeats aside


def ignored_at_exec(restore_signals: bool) -> tuple[int, ...]:
    """The signals subprocess would leave ignored in the child that the stage must re-ignore.

    With ``restore_signals=True`` subprocess resets SIGPIPE/SIGXFSZ to default; with False the
    child inherits our dispositions, which the native stage passes on by itself but the Python
    twin (whose own start-up ignores both) cannot know.
    """
    if restore_signals:
        return ()
    return tuple(sig for sig in _RESTORED if signal.getsignal(sig) == signal.SIG_IGN)


class Launch:
    """One hardened spawn: its group, memfds, report pipe, the stage argv, and the report.

    The surfaces spawn :attr:`argv` with :attr:`pass_fds` and :attr:`kwargs` (``env={}`` among
    them), call :meth:`spawned`, then :meth:`finish` with what the pipe held. With ``verify``
    the stage lets the spawning thread trace it (``--trace-exec``; :mod:`hardexec.verify`).
    """

    def __init__(
        self,
        args: Args,
        policy: Policy,
        kwargs: dict[str, Any],
        report: bool = True,
        verify: bool = False,
    ):
        kwargs = dict(kwargs)
        policy = merge_identity(policy, kwargs)
        if verify:
            if not report:
                raise ValueError("verify needs the report pipe: its parent is the tracer")
            from .verify import check_verifiable

            check_verifiable(policy)  # before any fd or group: a refusal leaks nothing
        plan = compile_plan(policy)
        stage = stage_command()
        argv, executable = program_argv(args, kwargs)
        environment = env_block(kwargs.pop("env", None))  # a bad env fails before anything
        pass_fds = tuple(kwargs.pop("pass_fds", ()))
        if kwargs.pop("close_fds", True) is False:
            if pass_fds:
                warnings.warn(
                    "pass_fds overriding close_fds.", RuntimeWarning, stacklevel=caller_stacklevel()
                )
            else:  # we pass fds of our own, so subprocess would override close_fds=False
                pass_fds = inheritable_fds()
        ignore = ignored_at_exec(kwargs.get("restore_signals", True))
        self.policy = policy
        self.verify = verify
        self.program = executable if executable is not None else argv[0]
        self.read_fd = self.write_fd = -1
        self._fds: list[int] = []  # the stage's own fds: closed in the parent once it runs
        self.setup_warnings: list[StageWarning] = []
        self.listener: Listener | None = None
        self._listening = False
        # Before any fd or group: a confinement this kernel cannot enforce leaks nothing.
        self.confined = _confine(policy, self.program, kwargs.get("cwd"), environment)
        if self.confined is not None:
            self.setup_warnings.extend(self.confined.warnings)
            for note in self.confined.notes:
                hardexec_logger().info("%s", note)
        self.cgroup = self._make_cgroup(policy)
        try:
            env_fd = self._keep(sealed_memfd("hardexec-env", environment))
            groups = plan.groups_data()
            groups_fd = self._keep(sealed_memfd("hardexec-groups", groups)) if groups else None
            confined_fds = self._confined_fds()
            if report:
                self.read_fd, self.write_fd = report_pipe()
                self._fds.append(self.write_fd)
        except BaseException:
            self.release()
            raise
        cgroup_fd = self.cgroup.procs_fd if self.cgroup else None
        options = plan.stage_args(
            self.write_fd if report else None,
            executable,
            cgroup_fd,
            env_fd=env_fd,
            groups_fd=groups_fd,
            ignore_signals=ignore,
            confined=self.confined,
            trace_exec=verify,
            **confined_fds,
        )
        self.argv = [*stage, *options, *argv]
        self.pass_fds = pass_fds + tuple(self._fds) + ((cgroup_fd,) if cgroup_fd else ())
        kwargs["env"] = {}  # the stage's own: fixed and empty
        self.kwargs = kwargs

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def _confined_fds(self) -> dict[str, int]:
        """The memfds of the Landlock rules and seccomp filter, and the listener's socket."""
        c, fds = self.confined, {}
        if c is None:
            return fds
        if c.ruleset is not None:
            fds["landlock_fd"] = self._keep(sealed_memfd("hardexec-landlock", c.ruleset.blob()))
        if c.filter is not None:
            code = c.filter.code
            if c.notify:
                import socket

                from .confine.notify import Listener
                from .confine.seccomp import with_notify_fd

                ours, theirs = socket.socketpair(
                    socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC
                )
                self.listener = Listener(ours, c.filter)
                fds["notify_fd"] = self._keep(_above_stdio(theirs.detach()))
                code = with_notify_fd(c.filter, fds["notify_fd"])
            fds["seccomp_fd"] = self._keep(sealed_memfd("hardexec-seccomp", code))
        return fds

    def describe_rule(self, index: int) -> str:
        """What Landlock rule ``index`` of this spawn is (for a stage report about it)."""
        ruleset = self.confined.ruleset if self.confined is not None else None
        return ruleset.describe_rule(index) if ruleset is not None else f"rule {index}"

    def _make_cgroup(self, policy: Policy) -> Cgroup | None:
        limits = policy.cgroups
        if limits is None:
            return None
        from .cgroups import Cgroup

        try:
            return Cgroup.create(limits, policy.cgroup_parent)
        except CgroupError as err:
            if limits.fail_on_error:
                raise
            # solti-exec's default: run without the group, and say so, and why.
            files = limits.files()
            without = (
                "without its cgroup limits ("
                + ", ".join(f"{name}={value}" for name, value in files.items())
                + ")"
                if files
                else "without a cgroup of its own (no usage from it, no cgroup.kill)"
            )
            reason = err.strerror or ""
            self.setup_warnings.append(
                StageWarning("cgroup", err.errno, f"the program runs {without}: {reason}", reason)
            )
            return None

    def spawned(self) -> None:
        """Drop the parent's copies of the fds only the stage needs now."""
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        self.write_fd = -1
        if self.cgroup is not None:
            self.cgroup.close_fd()
        if self.listener is not None and not self._listening:
            self._listening = True  # the hub owns its socket now
            self.listener.start()

    def finish(self, data: bytes) -> StageReport:
        """Close our fds and decode what the stage wrote before its exec (or its end)."""
        self.close()
        report = parse_report(data, self.program, self.policy, self.describe_rule)

        if any(w.step == "cgroup_join" for w in report.warnings) and self.cgroup is not None:
            self.cgroup.remove()  # best effort: the program runs outside its (empty) group
            self.cgroup = None
        return StageReport((*self.setup_warnings, *report.warnings), report.error)

    def close(self) -> None:
        """Close whatever fd is still open (idempotent); the group itself stays."""
        self.spawned()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1

    def release(self) -> None:
        """Close everything and remove the group (now if empty, else once it empties)."""
        self.close()
        if self.listener is not None and not self._listening:
            self.listener.close()  # never started (a failed spawn): its socket would leak
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None

    def spawn_failed(self, err: OSError) -> OSError:
        """What the spawn of the stage raised, naming the program rather than the stage.

        E2BIG is the program's argument list (the stage adds a few short options): it is said
        of the program, as subprocess would say it.
        """
        if err.errno == errno.E2BIG:
            return OSError(err.errno, os.strerror(err.errno), os.fsdecode(self.program))
        return err


def _confine(
    policy: Policy, program: StrOrBytesPath, cwd: Any, environment: bytes, listen: bool = True
) -> Confined | None:
    """The spawn's confinement (None without one), for ``program`` run from ``cwd``."""
    if policy.confinement is None or policy.confinement.is_empty():
        return None
    from .confine.compile import confine

    path = os.fsencode(program)
    env_path = next(
        (entry[5:] for entry in environment.split(b"\0") if entry.startswith(b"PATH=")), None
    )
    if cwd is not None:  # the stage runs in cwd: relative names are relative to it
        where = os.fsencode(cwd)
        if b"/" in path and not path.startswith(b"/"):
            path = os.path.join(where, path)
        elif b"/" not in path and env_path is not None:
            env_path = b":".join(
                d if d.startswith(b"/") else os.path.join(where, d) if d else where
                for d in env_path.split(b":")
            )
    return confine(policy, path, env_path, listen=listen)


def exec_time_environ() -> dict[bytes, bytes]:
    """The environment this process was started with, as execve gave it.

    Not ``os.environ``: CPython may have changed that at start-up (C-locale coercion adds or
    rewrites ``LC_CTYPE``), and a command that passes its environment on must pass it as it came,
    as a C tool would. The first of duplicate names wins, as getenv(3) finds it.
    """
    found: dict[bytes, bytes] = {}
    for entry in _exec_time_block().split(b"\0")[:-1]:
        name, sep, value = entry.partition(b"=")
        if sep and name not in found:
            found[name] = value
    return found


def _exec_time_block() -> bytes:
    with open("/proc/self/environ", "rb") as f:
        return f.read()


def exec_stage(
    argv: Sequence[StrOrBytesPath], policy: Policy, env: Mapping[Any, Any] | None = None
) -> NoReturn:
    """Replace this process with the exec stage running ``argv`` under ``policy`` (setpriv-like).

    Same pid, no resident Python: the stage applies the policy and execs the program, or prints
    one line on stderr and exits 125 (hardexec failed), 126 (cannot execute) or 127 (not
    found). ``env`` is the program's environment (default: this process's as it was started,
    byte for byte: see :func:`exec_time_environ`); it reaches the program through a memfd, and
    the stage itself runs with an empty one. Signal dispositions are those subprocess gives a child
    (SIGPIPE and SIGXFSZ back to default, which CPython ignores at start-up). A policy with a
    cgroup needs a resident supervisor to remove the group, so it is refused here.
    """
    policy = check_policy(policy)
    if policy.cgroups is not None:
        raise HardexecError("exec_stage: a policy with cgroups needs a supervising parent")
    argv = list(argv)
    if not argv:
        raise ValueError("argv: the program's argument list is empty")
    plan = compile_plan(policy)
    stage = stage_command()
    fds: list[int] = []
    try:
        environment = _exec_time_block() if env is None else env_block(env)
        fds.append(env_fd := sealed_memfd("hardexec-env", environment))
        groups = plan.groups_data()
        groups_fd = None
        if groups:
            fds.append(groups_fd := sealed_memfd("hardexec-groups", groups))
        # Nothing stays to answer seccomp notifications: denials are plain errnos here.
        confined = _confine(policy, argv[0], None, environment, listen=False)
        confined_fds = {}
        if confined is not None:
            for warning in confined.warnings:
                print(f"hardexec: warning: {warning}", file=sys.stderr)
            for note in confined.notes:
                print(f"hardexec: note: {note}", file=sys.stderr)
            if confined.ruleset is not None:
                blob = confined.ruleset.blob()
                fds.append(fd := sealed_memfd("hardexec-landlock", blob))
                confined_fds["landlock_fd"] = fd
            if confined.filter is not None:
                fds.append(fd := sealed_memfd("hardexec-seccomp", confined.filter.code))
                confined_fds["seccomp_fd"] = fd
        for fd in fds:
            os.set_inheritable(fd, True)
        # The stage keeps our pid, so "the parent" it must die with is ours.
        options = plan.stage_args(
            None,
            None,
            None,
            env_fd=env_fd,
            groups_fd=groups_fd,
            parent=os.getppid(),
            confined=confined,
            **confined_fds,
        )
        previous = {sig: signal.signal(sig, signal.SIG_DFL) for sig in _RESTORED}
        try:
            os.execve(stage[0], [*stage, *options, *argv], {})
        except OSError as err:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if err.errno == errno.E2BIG:
                raise OSError(err.errno, os.strerror(err.errno), os.fsdecode(argv[0])) from None
            raise
    finally:  # reached only when execve failed: leave nothing open
        for fd in fds:
            os.close(fd)
    raise AssertionError("unreachable: execve returns only by raising")


def process_group_alive(pgid: int, but: int | None = None) -> bool:
    """Whether a living process (not a zombie) other than ``but`` is in process group ``pgid``.

    Zombies count as gone: they are dead, though their parent (init, for orphans) may take its
    time to reap them. A signal-0 probe first, so an empty group costs one syscall.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == but:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def signal_tree(cgroup: Cgroup | None, pid: int, signum: int) -> None:
    """``signum`` to the program ``pid`` and its tree: every process of its cgroup, else its
    process group (``pid`` leads it); SIGKILL: ``cgroup.kill`` and the process group too. The
    polite and the final step of ending a tree. A polite signal is followed by SIGCONT, so a
    stopped process gets it too (as timeout(1) does), and reaches each process once.

    The program itself is signalled by pid when it is not among those: it may have moved to
    another process group (setpgid into its parent's), which killpg would then miss. Call this
    only while the program is unreaped: until then ``pid`` (and the group id) names no one
    else.
    """
    signals = (signum,) if signum in (signal.SIGKILL, signal.SIGCONT) else (signum, signal.SIGCONT)
    for sig in signals:
        # Each process gets a polite signal once: a second SIGTERM, arriving after the first
        # one's handler ran (or pending across its exec), is "stop now" to many programs.
        if cgroup is not None:
            if sig == signal.SIGKILL:
                cgroup.kill()
                _signal(os.killpg, pid, sig)
                _signal(os.kill, pid, sig)
                continue
            members = cgroup.pids()
            for member in members:
                _signal(os.kill, member, sig)
            if pid not in members:  # it left the group (or was never counted): by pid too
                _signal(os.kill, pid, sig)
            continue
        _signal(os.killpg, pid, sig)
        try:
            leads = os.getpgid(pid) == pid
        except ProcessLookupError:
            continue
        if not leads:  # it moved to another process group: killpg missed it
            _signal(os.kill, pid, sig)


def _signal(send: Callable[[int, int], None], target: int, signum: int) -> None:
    try:  # (contextlib is not imported on the exec path)
        send(target, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        # A launcher without CAP_KILL cannot signal a program that switched to another user:
        # nothing more can be done from here (the caller's cgroup kill, if any, still can).
        pass


def kill_tree(
    cgroup: Cgroup | None, pid: int, returncode: int | None, kill: Callable[[], None]
) -> None:
    """The one tree kill of Popen and Process: the group, else the process group, else pid.

    The program itself is killed in every case, even when the group cannot hold it yet (a stage
    interrupted before it joined) or the group's kill misses it.
    """
    if cgroup is not None:
        cgroup.kill()
        if returncode is None:
            kill()
        return
    if returncode is not None:
        return  # reaped: its pid (and process group id) may already be someone else's
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
            return
    except ProcessLookupError:
        return
    except PermissionError:
        pass  # another user's, and no CAP_KILL: the program alone, by pid, may still be ours
    try:  # noqa: SIM105  (contextlib is not imported on the exec path)
        kill()
    except PermissionError:
        pass
