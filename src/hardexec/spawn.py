"""Spawning under a policy: mirrors of ``subprocess.run``/``Popen`` and ``asyncio``'s exec.

Each call turns the policy into an exec-stage command line and spawns *that* with the ordinary
spawner, so subprocess keeps its vfork() fast path and no Python runs between fork and exec.
The stage reports on a close-on-exec pipe; the parent reads it to end-of-file (which arrives the
moment the program is exec'd) and raises what the stage reported, like subprocess does for a
missing program. One :class:`_Launch` holds that logic for every surface (sync, async, wrap).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import IO, Any

from .cgroups import Cgroup
from .errors import CgroupError, StageWarning
from .plan import StrOrBytesPath, compile_plan
from .policy import Policy
from .report import StageReport, caller_stacklevel, parse_report, read_all
from .stage import stage_command
from .usage import Usage

__all__ = [
    "CompletedProcess",
    "Popen",
    "Process",
    "Wrapped",
    "create_subprocess_exec",
    "run",
    "wrap",
]

logger = logging.getLogger("hardexec")

Args = StrOrBytesPath | Sequence[StrOrBytesPath]
_EMPTY = Policy()
_platform_warned = False


def _check_policy(policy: Policy | None) -> Policy:
    if policy is None:
        return _EMPTY
    if not isinstance(policy, Policy):
        raise TypeError(f"policy: expected hardexec.Policy or None, got {type(policy).__name__}")
    return policy


def _applies(policy: Policy) -> bool:
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


def _program_argv(args: Args, kwargs: dict[str, Any]) -> tuple[list[StrOrBytesPath], Any]:
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


class _Launch:
    """One hardened spawn: cgroup, stage argv, report pipe, and the report turned into Python."""

    def __init__(self, args: Args, policy: Policy, kwargs: dict[str, Any], report: bool = True):
        for name in ("user", "group", "extra_groups"):
            if kwargs.get(name) is not None:
                raise TypeError(
                    f"{name}=: with a policy, give the identity in SecurityConfig "
                    "(user/group/supplementary_groups) so it is applied in the right order"
                )
        plan = compile_plan(policy)
        stage = stage_command()
        argv, executable = _program_argv(args, kwargs)
        pass_fds = tuple(kwargs.pop("pass_fds", ()))
        if kwargs.pop("close_fds", True) is False:
            # subprocess would override close_fds=False because we pass a fd; inheriting every
            # inheritable fd explicitly is what close_fds=False means.
            pass_fds += _inheritable_fds()
        self.program = executable if executable is not None else argv[0]
        self.read_fd = self.write_fd = -1
        self.setup_warnings: list[StageWarning] = []
        self.cgroup = self._make_cgroup(policy)  # before the pipe: a refusal leaks nothing
        try:
            if report:
                self.read_fd, self.write_fd = _report_pipe()
                pass_fds += (self.write_fd,)
        except BaseException:
            self.release()
            raise
        cgroup_fd = self.cgroup.procs_fd if self.cgroup else None
        if cgroup_fd is not None:
            pass_fds += (cgroup_fd,)
        report_fd = self.write_fd if report else None
        self.argv = [*stage, *plan.stage_args(report_fd, executable, cgroup_fd), *argv]
        self.pass_fds = pass_fds
        self.kwargs = kwargs

    def _make_cgroup(self, policy: Policy) -> Cgroup | None:
        limits = policy.cgroups
        if limits is None:
            return None
        try:
            return Cgroup.create(limits, policy.cgroup_parent)
        except CgroupError as err:
            if limits.fail_on_error:
                raise
            # The reference's default: run without the group, and say why.
            self.setup_warnings.append(StageWarning("cgroup", err.errno, err.strerror or ""))
            return None

    def spawned(self) -> None:
        """Drop the parent's copies of the fds only the stage needs now."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1
        if self.cgroup is not None:
            self.cgroup.close_fd()

    def finish(self, data: bytes) -> StageReport:
        """Close our fds and decode what the stage wrote before its exec (or its end)."""
        self.close()
        report = parse_report(data, self.program)
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
        if self.cgroup is not None:
            self.cgroup.remove()


def _inheritable_fds() -> tuple[int, ...]:
    fds = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                fds.append(fd)
        except OSError:  # the listing's own fd, closed by now
            pass
    return tuple(fds)


def _report_pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe()  # both close-on-exec in the parent (PEP 446)
    # The stage's stdio is dup'ed onto 0..2; a write end there would be clobbered (CPython's
    # _posixsubprocess moves its own error pipe out of that range the same way).
    low = []
    while write_fd < 3:
        low.append(write_fd)
        write_fd = os.dup(write_fd)
    for fd in low:
        os.close(fd)
    return read_fd, write_fd


class Popen(subprocess.Popen):
    """:class:`subprocess.Popen` that applies ``policy`` to the program before it starts.

    Every other argument behaves as in :class:`subprocess.Popen` (they are keyword-only here).
    A stage abort raises :class:`StageError` (an ``OSError``) from the constructor, with no child
    left behind; a missing program raises ``FileNotFoundError`` exactly as subprocess does.
    Best-effort failures are issued as :class:`StageWarning` and kept in :attr:`stage_warnings`.

    Attributes:
        policy: the policy applied (an empty :class:`Policy` when none was given).
        stage_warnings: what could not be applied (best effort), in order.
        cgroup: the program's own cgroup, while it has one (``policy.cgroups``).
        usage: what the program used, once it has been waited for (:class:`Usage`): from its
            cgroup when it had one, else from ``wait4``'s rusage.
    """

    policy: Policy
    stage_warnings: tuple[StageWarning, ...]
    cgroup: Cgroup | None
    usage: Usage | None

    def __init__(self, args: Args, *, policy: Policy | None = None, **kwargs: Any) -> None:
        self.policy = _check_policy(policy)
        self.stage_warnings = ()
        self.cgroup = None
        self.usage = None
        self._rusage: resource.struct_rusage | None = None
        if not _applies(self.policy):
            super().__init__(args, **kwargs)
            return
        launch = _Launch(args, self.policy, kwargs)
        try:
            super().__init__(launch.argv, pass_fds=launch.pass_fds, **launch.kwargs)
        except BaseException:
            launch.release()
            raise
        self.args = args  # what the caller passed, as subprocess reports it
        self.cgroup = launch.cgroup  # set before any reaping: the exit hook removes it
        try:
            launch.spawned()
            report = launch.finish(read_all(launch.read_fd))
        except BaseException:  # interrupted while the stage ran: end it, leave nothing behind
            launch.close()
            self._abandon()
            raise
        self.cgroup = launch.cgroup  # None again if the stage could not join it
        self.stage_warnings = report.warnings
        if report.error is not None:
            self._abandon(kill=False)
        try:
            report.emit()
        except BaseException:
            if self.returncode is None:  # a warning the caller made an error: the program runs
                self._abandon()
            raise

    def kill_tree(self) -> None:
        """SIGKILL the program and every process it started, daemonised or setsid'd ones too.

        With a cgroup: ``cgroup.kill`` (Linux 5.14+; before that, frozen and killed pid by pid).
        Without one: the process group when the program leads one (``process_group=0`` or
        ``start_new_session=True``), else the program alone. Like :meth:`kill`, it does not
        wait; the group is removed once its last process has exited.
        """
        _kill_tree(self.cgroup, self.pid, self.returncode, self.kill)

    def _abandon(self, kill: bool = True) -> None:
        """End the stage (it exits by itself after a fatal report), reap it, close its pipes."""
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


def _kill_tree(
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
    kill()


class CompletedProcess(subprocess.CompletedProcess[Any]):
    """:class:`subprocess.CompletedProcess` plus what hardexec knows of the run.

    Attributes:
        usage: what the program used (see :attr:`Popen.usage`).
        stage_warnings: what could not be applied (best effort).
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
    ) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.usage = usage
        self.stage_warnings = stage_warnings


def run(
    args: Args,
    *,
    policy: Policy | None = None,
    input: bytes | str | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: Any,
) -> CompletedProcess:
    """:func:`subprocess.run` with a policy; same arguments, same result, same exceptions.

    One difference, the point of a tree: on a timeout or an exception, everything the program
    started is killed too (:meth:`Popen.kill_tree`), not only the program.
    """
    if input is not None:
        if kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with Popen(args, policy=policy, **kwargs) as process:
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
    )


class Process(asyncio.subprocess.Process):
    """:class:`asyncio.subprocess.Process` plus :attr:`usage`, :attr:`stage_warnings`,
    :attr:`cgroup` and :meth:`kill_tree`, as on :class:`Popen`.

    ``usage`` comes from the program's cgroup (asyncio reaps the child itself, so there is no
    rusage to read): without ``policy.cgroups`` it stays ``None``.
    """

    def __init__(
        self,
        transport: asyncio.SubprocessTransport,
        protocol: asyncio.subprocess.SubprocessStreamProtocol,
        loop: asyncio.AbstractEventLoop,
        exit: _ExitHook,
    ) -> None:
        super().__init__(transport, protocol, loop)
        self._exit = exit
        self.stage_warnings: tuple[StageWarning, ...] = ()

    @property
    def cgroup(self) -> Cgroup | None:
        """The program's own cgroup, while it has one."""
        return self._exit.cgroup

    @property
    def usage(self) -> Usage | None:
        """What the program used, once it has exited (cgroup only)."""
        return self._exit.usage

    def kill_tree(self) -> None:
        """SIGKILL the program and every process it started (see :meth:`Popen.kill_tree`)."""
        _kill_tree(self._exit.cgroup, self.pid, self.returncode, self.kill)

    async def wait(self) -> int:
        """Wait for the program to exit; then :attr:`usage` is set and the group removed."""
        returncode = await super().wait()
        self._exit.finish()
        return returncode


class _ExitHook:
    """Reads a finished program's usage and removes its group: when asyncio reports the exit,
    which may come before the caller has its :class:`Process` (or never awaits it)."""

    def __init__(self, cgroup: Cgroup | None) -> None:
        self.cgroup = cgroup
        self.usage: Usage | None = None

    def finish(self) -> None:
        group, self.cgroup = self.cgroup, None
        if group is not None:
            self.usage = group.usage()
            group.remove()


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop, exit: _ExitHook) -> None:
        super().__init__(limit=limit, loop=loop)
        self._exit = exit

    def process_exited(self) -> None:
        self._exit.finish()
        super().process_exited()


async def create_subprocess_exec(
    program: StrOrBytesPath,
    *args: StrOrBytesPath,
    policy: Policy | None = None,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    limit: int = 2**16,
    **kwds: Any,
) -> Process:
    """:func:`asyncio.create_subprocess_exec` with a policy; returns a :class:`Process`.

    Raises :class:`StageError` / ``FileNotFoundError`` like :class:`Popen`, after reaping the
    stage. Cancelled while the stage runs, it kills and reaps the stage before re-raising.
    """
    policy = _check_policy(policy)
    loop = asyncio.get_running_loop()
    streams = {"stdin": stdin, "stdout": stdout, "stderr": stderr}
    launch = _Launch([program, *args], policy, kwds) if _applies(policy) else None
    exit_hook = _ExitHook(launch.cgroup if launch else None)
    try:
        if launch is None:
            argv, extra = [program, *args], kwds
        else:
            argv, extra = launch.argv, {**launch.kwargs, "pass_fds": launch.pass_fds}
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(limit, loop, exit_hook), *argv, **streams, **extra
        )
    except BaseException:
        if launch is not None:
            launch.release()
        raise
    proc = Process(transport, protocol, loop, exit_hook)
    if launch is None:
        return proc
    try:
        launch.spawned()
        report = launch.finish(await _read_all_async(launch.read_fd))
    except BaseException:
        launch.close()
        proc.kill_tree()
        await asyncio.shield(proc.wait())
        raise
    exit_hook.cgroup = launch.cgroup  # None again if the stage could not join it
    proc.stage_warnings = report.warnings
    if report.error is not None:
        await proc.wait()
    try:
        report.emit()
    except BaseException:
        if proc.returncode is None:  # a warning the caller made an error: the program runs
            proc.kill_tree()
            await asyncio.shield(proc.wait())
        raise
    return proc


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # the reader may fire again before it is removed
        future.set_result(None)


async def _read_all_async(fd: int) -> bytes:
    """Read ``fd`` to end-of-file without blocking the event loop."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            readable = loop.create_future()
            loop.add_reader(fd, _resolve, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class Wrapped:
    """A program's argv wrapped in the exec stage, for any spawner (trio, anyio, …).

    Spawn :attr:`argv` with :attr:`pass_fds` inherited, call :meth:`spawned` right after, then
    :meth:`check` to learn whether the stage reached exec (it raises what :class:`Popen` would)::

        with hardexec.wrap(["id"], policy) as w:
            proc = await trio.lowlevel.open_process(w.argv, pass_fds=w.pass_fds)
            w.spawned()
            w.check()   # blocks until the program is exec'd; use report_fd to wait yourself

    Made with ``report=False`` there is no pipe: the stage writes one line to stderr and exits
    125 (126/127 when the program cannot be executed / is not found), like env(1).

    With ``policy.cgroups`` the group is made by :func:`wrap`; :attr:`cgroup` gives its usage
    and kill, and :meth:`close` (the ``with`` block's end) removes it once it is empty.
    """

    def __init__(self, launch: _Launch | None, argv: list[StrOrBytesPath]):
        self._launch = launch
        self.argv: list[StrOrBytesPath] = launch.argv if launch else argv
        self.pass_fds: tuple[int, ...] = launch.pass_fds if launch else ()
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
    argv: Sequence[StrOrBytesPath], policy: Policy | None = None, *, report: bool = True
) -> Wrapped:
    """Wrap ``argv`` so that spawning the result applies ``policy``; see :class:`Wrapped`."""
    policy = _check_policy(policy)
    argv = list(argv)
    if not _applies(policy):
        return Wrapped(None, argv)
    return Wrapped(_Launch(argv, policy, {}, report=report), argv)
