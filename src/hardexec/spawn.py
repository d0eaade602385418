"""Spawning under a policy: mirrors of ``subprocess.run``/``Popen`` and ``asyncio``'s exec.

Each call turns the policy into an exec-stage command line and spawns *that* with the ordinary
spawner, so subprocess keeps its vfork() fast path and no Python runs between fork and exec.
The stage reports on a close-on-exec pipe; the parent reads it to end-of-file (which arrives the
moment the program is exec'd) and raises what the stage reported, like subprocess does for a
missing program. One :class:`_Launch` holds that logic for every surface (sync, async, wrap).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from typing import IO, Any

from .errors import StageWarning
from .plan import StrOrBytesPath, compile_plan
from .policy import Policy
from .report import StageReport, caller_stacklevel, parse_report, read_all
from .stage import stage_command

__all__ = ["Popen", "Wrapped", "create_subprocess_exec", "run", "wrap"]

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
    """One hardened spawn: the stage argv, the report pipe, and turning the report into Python."""

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
        if report:
            self.read_fd, self.write_fd = _report_pipe()
            pass_fds += (self.write_fd,)
        report_fd = self.write_fd if report else None
        self.argv = [*stage, *plan.stage_args(report_fd, executable), *argv]
        self.pass_fds = pass_fds
        self.kwargs = kwargs

    def spawned(self) -> None:
        """Drop the parent's copy of the write end: only the stage holds it now."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def finish(self, data: bytes) -> StageReport:
        """Close both pipe ends and decode what the stage wrote before its exec (or its end)."""
        self.close()
        return parse_report(data, self.program)

    def close(self) -> None:
        """Close whatever is still open (idempotent)."""
        self.spawned()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


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
        stage_warnings: the warnings the exec stage reported, in order.
    """

    policy: Policy
    stage_warnings: tuple[StageWarning, ...]

    def __init__(self, args: Args, *, policy: Policy | None = None, **kwargs: Any) -> None:
        self.policy = _check_policy(policy)
        self.stage_warnings = ()
        if not _applies(self.policy):
            super().__init__(args, **kwargs)
            return
        launch = _Launch(args, self.policy, kwargs)
        try:
            super().__init__(launch.argv, pass_fds=launch.pass_fds, **launch.kwargs)
        except BaseException:
            launch.close()
            raise
        self.args = args  # what the caller passed, as subprocess reports it
        try:
            launch.spawned()
            report = launch.finish(read_all(launch.read_fd))
        except BaseException:  # interrupted while the stage ran: end it, leave nothing behind
            launch.close()
            self._abandon()
            raise
        self.stage_warnings = report.warnings
        if report.error is not None:
            self._abandon(kill=False)
        try:
            report.emit()
        except BaseException:
            if self.returncode is None:  # a warning the caller made an error: the program runs
                self._abandon()
            raise

    def _abandon(self, kill: bool = True) -> None:
        """End the stage (it exits by itself after a fatal report), reap it, close its pipes."""
        if kill:
            self.kill()
        self.wait()
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()


def run(
    args: Args,
    *,
    policy: Policy | None = None,
    input: bytes | str | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """:func:`subprocess.run` with a policy; same arguments, same result, same exceptions."""
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
            process.kill()
            process.wait()
            raise
        except BaseException:
            process.kill()
            raise
        retcode = process.poll()
        if check and retcode:
            raise subprocess.CalledProcessError(retcode, process.args, stdout, stderr)
    return subprocess.CompletedProcess(process.args, retcode, stdout, stderr)


async def create_subprocess_exec(
    program: StrOrBytesPath,
    *args: StrOrBytesPath,
    policy: Policy | None = None,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    limit: int = 2**16,
    **kwds: Any,
) -> asyncio.subprocess.Process:
    """:func:`asyncio.create_subprocess_exec` with a policy.

    Raises :class:`StageError` / ``FileNotFoundError`` like :class:`Popen`, after reaping the
    stage. Cancelled while the stage runs, it kills and reaps the stage before re-raising.
    """
    policy = _check_policy(policy)
    spawn = asyncio.create_subprocess_exec
    streams = {"stdin": stdin, "stdout": stdout, "stderr": stderr, "limit": limit}
    if not _applies(policy):
        return await spawn(program, *args, **streams, **kwds)
    launch = _Launch([program, *args], policy, kwds)
    try:
        proc = await spawn(*launch.argv, pass_fds=launch.pass_fds, **streams, **launch.kwargs)
    except BaseException:
        launch.close()
        raise
    try:
        launch.spawned()
        report = launch.finish(await _read_all_async(launch.read_fd))
    except BaseException:
        launch.close()
        proc.kill()
        await asyncio.shield(proc.wait())
        raise
    if report.error is not None:
        await proc.wait()
    try:
        report.emit()
    except BaseException:
        if proc.returncode is None:  # a warning the caller made an error: the program runs
            proc.kill()
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
    """

    def __init__(self, launch: _Launch | None, argv: list[StrOrBytesPath]):
        self._launch = launch
        self.argv: list[StrOrBytesPath] = launch.argv if launch else argv
        self.pass_fds: tuple[int, ...] = launch.pass_fds if launch else ()
        self.report: StageReport | None = None

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
        """Close both pipe ends (idempotent)."""
        if self._launch:
            self._launch.close()

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
