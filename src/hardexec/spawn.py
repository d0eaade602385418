"""Spawning under a policy: mirrors of ``subprocess.run``/``Popen``, and ``wrap`` for any spawner.

Each call turns the policy into an exec-stage command line and spawns *that* with the ordinary
spawner, so subprocess keeps its vfork() fast path and no Python runs between fork and exec.
The stage reports on a close-on-exec pipe; the parent reads it to end-of-file (which arrives the
moment the program is exec'd) and raises what the stage reported, like subprocess does for a
missing program. :mod:`hardexec.spawn_core` holds that logic for every surface; the asyncio
mirror is :mod:`hardexec.aio`.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import subprocess
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import PolicyError, StageWarning
from .plan import StrOrBytesPath
from .policy import Policy
from .report import StageReport, read_all
from .spawn_core import Launch, check_policy, kill_tree, policy_applies
from .usage import Usage

if TYPE_CHECKING:
    from .cgroups import Cgroup
    from .confine.notify import Listener
    from .spawn_core import Args
    from .verify import Tracee

__all__ = ["CompletedProcess", "Popen", "Wrapped", "run", "wrap"]

logger = logging.getLogger("hardexec")

# subprocess.Popen's parameters that may be given by position, in order, read from this
# CPython's own Popen (no copy to drift from it): bufsize, executable, stdin, stdout, …
_init_code = subprocess.Popen.__init__.__code__
_POSITIONAL = _init_code.co_varnames[2 : _init_code.co_argcount]  # after self and args


def _keywords(positional: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """subprocess.Popen's positional parameters, named (``Popen(cmd, None)``: bufsize=None)."""
    if len(positional) > len(_POSITIONAL):
        raise TypeError(
            f"Popen() takes at most {len(_POSITIONAL) + 1} positional arguments "
            f"({len(positional) + 1} given)"
        )
    named = dict(zip(_POSITIONAL, positional, strict=False))
    for name in named:
        if name in kwargs:
            raise TypeError(f"Popen() got multiple values for argument '{name}'")
    return {**named, **kwargs}


class Popen(subprocess.Popen):
    """:class:`subprocess.Popen` that applies ``policy`` to the program before it starts.

    Every other argument behaves as in :class:`subprocess.Popen`, positional ones included.
    ``user``/``group``/``extra_groups`` join the policy's identity (applied by the stage, in the
    kernel's order); given both there and in the policy with other values, they are an error.
    A stage abort raises :class:`StageError` (an ``OSError``) from the constructor, with no child
    left behind; a missing program raises ``FileNotFoundError`` exactly as subprocess does.
    Best-effort failures are issued as :class:`StageWarning` and kept in :attr:`stage_warnings`
    (``warn=False``: kept and logged only, for a caller that reports them itself).

    ``verify=True`` checks the program before it runs one instruction: stopped by the kernel
    at its exec, its ``/proc/PID/status`` is compared with the policy (with ``drop_all_caps``,
    all five capability sets within ``keep_caps``; NoNewPrivs when set or implied; all four
    Uid and Gid fields, and the supplementary groups, as the policy's identity; Seccomp 2
    under a syscall filter). Beyond it, the program is killed and reaped and the constructor
    raises :class:`~hardexec.errors.VerifyError` listing each difference; where the kernel
    will not let hardexec trace the stage, the run is refused with the same error (step
    ``trace``). Details and the guarantee: :mod:`hardexec.verify`. The check runs in the
    calling thread (the kernel's tracer), before the constructor returns.

    Attributes:
        policy: the policy applied (an empty :class:`Policy` when none was given).
        stage_warnings: what could not be applied (best effort), in order.
        cgroup: the program's own cgroup, while it has one (``policy.cgroups``).
        usage: what the program used, once it has been waited for (:class:`Usage`): from its
            cgroup when it had one, else from ``wait4``'s rusage.
        denied_syscalls: the syscalls the policy's seccomp filter refused so far, name →
            count (complete once the program has exited; empty without a filter).
        stage_notes: what hardexec did that the policy did not say, one sentence each (e.g.
            no_new_privs implied by a seccomp filter).
    """

    policy: Policy
    stage_warnings: tuple[StageWarning, ...]
    cgroup: Cgroup | None
    usage: Usage | None

    def __init__(
        self,
        args: Args,
        *positional: Any,
        policy: Policy | None = None,
        warn: bool = True,
        verify: bool = False,
        _later: bool = False,
        **kwargs: Any,
    ) -> None:
        self.policy = check_policy(policy)
        self.stage_warnings = ()
        self.stage_notes: tuple[str, ...] = ()
        self.cgroup = None
        self.usage = None
        self._rusage: resource.struct_rusage | None = None
        self._launch: Launch | None = None
        self._listener: Listener | None = None
        self._tracee: Tracee | None = None
        self._warn = warn
        kwargs = _keywords(positional, kwargs)
        if not isinstance(verify, bool):
            raise TypeError(f"verify: expected True or False, got {verify!r}")
        if verify and not policy_applies(self.policy):
            raise PolicyError("verify=True needs a policy to verify the program against")
        if not policy_applies(self.policy):
            super().__init__(args, **kwargs)
            return
        launch = Launch(args, self.policy, kwargs, verify=verify)
        self.policy = launch.policy  # with subprocess's user=/group=/extra_groups= folded in
        try:
            super().__init__(launch.argv, pass_fds=launch.pass_fds, **launch.kwargs)
        except OSError as err:
            launch.release()
            raise launch.spawn_failed(err) from None
        except BaseException:
            launch.release()
            raise
        self.args = args  # what the caller passed, as subprocess reports it
        self.cgroup = launch.cgroup  # set before any reaping: the exit hook removes it
        self._launch = launch
        self._listener = launch.listener
        self.stage_notes = launch.confined.notes if launch.confined is not None else ()
        try:
            launch.spawned()
        except BaseException:
            self._report_failed()
            raise
        if verify:
            from .verify import Tracee

            self._tracee = Tracee(self.pid)
        if _later:
            # The caller (the task runner) reads the report without blocking its event loop,
            # from _report_fd() (following _tracee, when verifying, in this same thread), and
            # hands it to _finish_report(): a slow stage (the Python twin) must not stall every
            # other task.
            return
        try:
            if self._tracee is not None:
                self._tracee.follow()  # to the program's exec, or the stage's end
            data = read_all(launch.read_fd)
        except BaseException:  # interrupted while the stage ran: end it, leave nothing behind
            self._report_failed()
            raise
        self._finish_report(data)

    @property
    def denied_syscalls(self) -> dict[str, int]:
        """The syscalls refused so far by the seccomp filter: name → how many times."""
        return self._listener.denied() if self._listener is not None else {}

    def _report_fd(self) -> int:
        """The stage's report pipe while its report is pending, else -1."""
        return self._launch.read_fd if self._launch is not None else -1

    def _finish_report(self, data: bytes) -> None:
        """Take the stage's report: keep its warnings, raise its error (the stage reaped)."""
        launch, self._launch = self._launch, None
        if launch is None:
            return
        try:
            report = launch.finish(data)
        except BaseException:
            launch.close()
            self._abandon()
            raise
        self.cgroup = launch.cgroup  # None again if the stage could not join it
        self.stage_warnings = report.warnings
        if report.error is not None:
            self._abandon(kill=False)
        try:
            report.emit(self._warn)
        except BaseException:
            if self.returncode is None:  # a warning the caller made an error: the program runs
                self._abandon()
            raise
        self._verified(launch)

    def _verified(self, launch: Launch) -> None:
        """At the program's exec (verify): let it run if it conforms, else kill it and raise."""
        tracee = self._tracee
        if tracee is None or not tracee.at_exec:
            self._tracee = None
            return  # not verifying, or the stage ended without exec: nothing ran
        from .verify import differences, refusal

        try:
            found = differences(tracee.status(), launch.policy, launch.confined)
            if not found:
                tracee.release()
                self._tracee = None
                return
        except BaseException:
            self._abandon()
            raise
        self._abandon()  # SIGKILL: it dies before its first instruction; reaped
        raise refusal(found, self.stage_warnings)

    def _report_failed(self) -> None:
        """The report could not be read (an interruption): end the stage, leave nothing."""
        launch, self._launch = self._launch, None
        if launch is not None:
            launch.close()
        self._abandon()

    def kill_tree(self) -> None:
        """SIGKILL the program and every process it started, daemonised or setsid'd ones too.

        With a cgroup: ``cgroup.kill`` (Linux 5.14+; before that, frozen and killed pid by pid).
        Without one: the process group when the program leads one (``process_group=0`` or
        ``start_new_session=True``), else the program alone. Like :meth:`kill`, it does not
        wait; the group is removed once its last process has exited.
        """
        kill_tree(self.cgroup, self.pid, self.returncode, self.kill)

    def _abandon(self, kill: bool = True) -> None:
        """End the stage (it exits by itself after a fatal report), reap it, close its pipes."""
        if kill and self._tracee is not None and self.returncode is None:
            # Traced by us: subprocess's kill() polls first, and the poll would take a ptrace
            # stop for an end. Killed, it reports no stop again; its pid is ours till reaped.
            self._tracee.kill()
        self._tracee = None
        if kill:
            self.kill_tree()
        self.wait()
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()

    # --- reaping: subprocess's own hooks, extended to keep the rusage and finish the group ----
    # wait4 instead of waitpid so the program's rusage is not lost; every reaping path
    # (wait, poll, communicate, __del__) goes through _try_wait or _internal_poll, and
    # then _handle_exitstatus.

    def _try_wait(self, wait_flags: int) -> tuple[int, int]:
        try:
            pid, sts, rusage = os.wait4(self.pid, wait_flags)
        except ChildProcessError:  # SIGCHLD ignored: the status is gone (as in subprocess)
            return self.pid, 0
        if pid == self.pid:
            self._rusage = rusage
        return pid, sts

    def _internal_poll(
        self,
        _deadstate: int | None = None,
        _wait4: Any = os.wait4,
        _WNOHANG: int = os.WNOHANG,
        _ECHILD: int = errno.ECHILD,
        **_ignored: Any,
    ) -> int | None:
        # Mirrors subprocess's own; called from __del__, so it refers to nothing global.
        if self.returncode is None:
            if not self._waitpid_lock.acquire(False):
                return None  # another thread is waiting
            try:
                if self.returncode is not None:
                    return self.returncode
                pid, sts, rusage = _wait4(self.pid, _WNOHANG)
                if pid == self.pid:
                    self._rusage = rusage
                    self._handle_exitstatus(sts)
            except OSError as e:
                if _deadstate is not None:
                    self.returncode = _deadstate
                elif e.errno == _ECHILD:
                    self.returncode = 0
            finally:
                self._waitpid_lock.release()
        return self.returncode

    def _handle_exitstatus(self, sts: int, *args: Any, **kwargs: Any) -> None:
        super()._handle_exitstatus(sts, *args, **kwargs)
        if self.usage is not None or self.returncode is None:
            return
        try:
            group = self.cgroup
            if group is not None:
                self.usage = group.usage()
                group.remove()  # now, or by the janitor once the last leftover exits
            elif self._rusage is not None:
                self.usage = Usage.from_rusage(self._rusage)
        except Exception:  # never let accounting break wait(); say so instead
            logger.exception("hardexec: finishing the cgroup of pid %d failed", self.pid)


class CompletedProcess(subprocess.CompletedProcess[Any]):
    """:class:`subprocess.CompletedProcess` plus what hardexec knows of the run.

    Attributes:
        usage: what the program used (see :attr:`Popen.usage`).
        stage_warnings: what could not be applied (best effort).
        denied_syscalls: what the seccomp filter refused (see :attr:`Popen.denied_syscalls`).
        stage_notes: what hardexec did that the policy did not say (see :attr:`Popen.stage_notes`).
    """

    def __init__(
        self,
        args: Any,
        returncode: int,
        stdout: Any = None,
        stderr: Any = None,
        *,
        usage: Usage | None = None,
        stage_warnings: tuple[StageWarning, ...] = (),
        denied_syscalls: dict[str, int] | None = None,
        stage_notes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.usage = usage
        self.stage_warnings = stage_warnings
        self.denied_syscalls = denied_syscalls or {}
        self.stage_notes = stage_notes


def run(
    args: Args,
    *,
    policy: Policy | None = None,
    input: bytes | str | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    verify: bool = False,
    **kwargs: Any,
) -> CompletedProcess:
    """:func:`subprocess.run` with a policy; same arguments, same result, same exceptions.

    One difference, the point of a tree: on a timeout or an exception, everything the program
    started is killed too (:meth:`Popen.kill_tree`), not only the program.

    ``verify=True``: the program is checked against the policy at its exec, before its first
    instruction, and killed (:class:`~hardexec.errors.VerifyError`) if it holds more; see
    :class:`Popen`.
    """
    if input is not None:
        if kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with Popen(args, policy=policy, verify=verify, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill_tree()
            process.wait()
            raise
        except BaseException:
            process.kill_tree()
            raise
        retcode = process.poll()
        if check and retcode:
            raise subprocess.CalledProcessError(retcode, process.args, stdout, stderr)
    return CompletedProcess(
        process.args,
        retcode,
        stdout,
        stderr,
        usage=process.usage,
        stage_warnings=process.stage_warnings,
        denied_syscalls=process.denied_syscalls,
        stage_notes=process.stage_notes,
    )


class Wrapped:
    """A program's argv wrapped in the exec stage, for any spawner (trio, anyio, …).

    Spawn :attr:`argv` with :attr:`pass_fds` inherited and :attr:`env` as the environment (it
    is empty: the program's own, ``wrap(env=…)`` or this process's, reaches it through an fd, so
    nothing of it acts in the privileged stage), call :meth:`spawned` right after, then
    :meth:`check` to learn whether the stage reached exec (it raises what :class:`Popen` would)::

        with hardexec.wrap(["id"], policy) as w:
            proc = await trio.lowlevel.open_process(w.argv, pass_fds=w.pass_fds, env=w.env)
            w.spawned()
            w.check()   # blocks until the program is exec'd; use report_fd to wait yourself

    Made with ``report=False`` there is no pipe: the stage writes one line to stderr and exits
    125 (126/127 when the program cannot be executed / is not found), like env(1).

    With ``policy.cgroups`` the group is made by :func:`wrap`; :attr:`cgroup` gives its usage
    and kill, and :meth:`close` (the ``with`` block's end) removes it once it is empty.
    """

    def __init__(self, launch: Launch | None, argv: list[StrOrBytesPath], env: Any = None):
        self._launch = launch
        self.argv: list[StrOrBytesPath] = launch.argv if launch else argv
        self.pass_fds: tuple[int, ...] = launch.pass_fds if launch else ()
        self.env: dict[str, str] | None = launch.kwargs["env"] if launch else env
        self.report: StageReport | None = None

    @property
    def cgroup(self) -> Cgroup | None:
        """The program's cgroup, when the policy asks for one and it could be made."""
        launch = self._launch
        return launch.cgroup if launch is not None else None

    @property
    def report_fd(self) -> int:
        """The read end of the report pipe (-1 when there is none), to await EOF on."""
        return self._launch.read_fd if self._launch else -1

    def spawned(self) -> None:
        """Close the parent's copy of the write end; call right after spawning."""
        if self._launch:
            self._launch.spawned()

    def check(self) -> StageReport:
        """Read the stage's report to EOF, issue its warnings and raise its error (if any).

        The process belongs to the caller's spawner: on an error, reap it (the stage exits by
        itself); if a warning is raised as an error, the program is running and yours to end.
        """
        if self.report is None:
            if self._launch is None or self._launch.read_fd < 0:
                self.report = StageReport()
            else:
                self._launch.spawned()
                self.report = self._launch.finish(read_all(self._launch.read_fd))
        self.report.emit()
        return self.report

    def close(self) -> None:
        """Close both pipe ends and remove the group once it is empty (idempotent)."""
        if self._launch:
            self._launch.release()

    def __enter__(self) -> Wrapped:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wrap(
    argv: Sequence[StrOrBytesPath],
    policy: Policy | None = None,
    *,
    report: bool = True,
    env: Mapping[str, str] | None = None,
) -> Wrapped:
    """Wrap ``argv`` so that spawning the result applies ``policy``; see :class:`Wrapped`.

    ``env`` is the program's environment (default: this process's). Spawn with
    :attr:`Wrapped.env`, not with it.
    """
    policy = check_policy(policy)
    argv = list(argv)
    if not policy_applies(policy):
        return Wrapped(None, argv, None if env is None else dict(env))
    kwargs = {} if env is None else {"env": env}
    return Wrapped(Launch(argv, policy, kwargs, report=report), argv)
