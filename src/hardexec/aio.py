"""The asyncio mirror: :func:`create_subprocess_exec` with a policy, and its :class:`Process`.

Kept apart from :mod:`hardexec.spawn` so that ``import hardexec`` (and the command line) does
not import asyncio; the launch itself is :mod:`hardexec.spawn_core`'s, shared with every surface.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import warnings
from typing import IO, TYPE_CHECKING, Any

from .errors import PolicyError, StageWarning
from .plan import StrOrBytesPath
from .policy import Policy
from .spawn_core import Launch, check_policy, kill_tree, policy_applies
from .usage import Usage

if TYPE_CHECKING:
    from .cgroups import Cgroup
    from .confine.notify import Listener
    from .verify import Tracee

__all__ = ["Process", "create_subprocess_exec"]


class Process(asyncio.subprocess.Process):
    """:class:`asyncio.subprocess.Process` plus :attr:`usage`, :attr:`stage_warnings`,
    :attr:`stage_notes`, :attr:`denied_syscalls`, :attr:`cgroup` and :meth:`kill_tree`, as on
    :class:`Popen`.

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
        self.stage_notes: tuple[str, ...] = ()
        self._listener: Listener | None = None

    @property
    def denied_syscalls(self) -> dict[str, int]:
        """The syscalls refused so far by the seccomp filter: name → how many times."""
        return self._listener.denied() if self._listener is not None else {}

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
        kill_tree(self._exit.cgroup, self.pid, self.returncode, self._kill_unreaped)

    def _kill_unreaped(self) -> None:
        # Not self.kill(): asyncio's transport calls Popen.send_signal, which polls first, and
        # that poll reaps a program the group kill just ended, before asyncio's child watcher
        # can: the watcher then finds no child and reports exit status 255 instead of -9.
        # Until asyncio has seen the exit the pid is still our (possibly zombie) child, so a
        # plain kill(2) reaches the right process and reaps nothing.
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

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
    verify: bool = False,
    **kwds: Any,
) -> Process:
    """:func:`asyncio.create_subprocess_exec` with a policy; returns a :class:`Process`.

    Raises :class:`StageError` / ``FileNotFoundError`` like :class:`Popen`, after reaping the
    stage. Cancelled while the stage runs, it kills and reaps the stage before re-raising.

    ``verify=True`` checks the program against the policy at its exec, before its first
    instruction, as :class:`hardexec.Popen` does (:class:`~hardexec.errors.VerifyError` once
    it is killed and reaped), from the event loop's thread, without blocking it. It needs
    asyncio's own event loop waiting for children on pidfds (``PidfdChildWatcher``: the default
    from Python 3.12; on 3.11, ``asyncio.set_child_watcher(asyncio.PidfdChildWatcher())``): a
    watcher that calls ``waitpid`` would take the stop the check is made at, so any other is
    refused with a :class:`~hardexec.errors.PolicyError` before anything is spawned.
    """
    policy = check_policy(policy)
    loop = asyncio.get_running_loop()
    streams = {"stdin": stdin, "stdout": stdout, "stderr": stderr}
    launch = _launch([program, *args], policy, kwds, verify, loop)
    exit_hook = _ExitHook(launch.cgroup if launch else None)
    try:
        if launch is None:
            argv, extra = [program, *args], kwds
        else:
            argv, extra = launch.argv, {**launch.kwargs, "pass_fds": launch.pass_fds}
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(limit, loop, exit_hook), *argv, **streams, **extra
        )
    except OSError as err:
        if launch is None:
            raise
        launch.release()
        raise launch.spawn_failed(err) from None
    except BaseException:
        if launch is not None:
            launch.release()
        raise
    proc = Process(transport, protocol, loop, exit_hook)
    if launch is None:
        return proc
    proc._listener = launch.listener
    proc.stage_notes = launch.confined.notes if launch.confined is not None else ()
    try:
        data, tracee = await _stage_report(launch, proc.pid)
        report = launch.finish(data)
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
    if tracee is not None and tracee.at_exec:
        await _verified(proc, tracee, launch)
    return proc


def _launch(
    argv: list[StrOrBytesPath],
    policy: Policy,
    kwds: dict[str, Any],
    verify: bool,
    loop: asyncio.AbstractEventLoop,
) -> Launch | None:
    """The spawn's launch (None: no policy to apply), verify's conditions checked first."""
    if not isinstance(verify, bool):
        raise TypeError(f"verify: expected True or False, got {verify!r}")
    if verify:
        if not policy_applies(policy):
            raise PolicyError("verify=True needs a policy to verify the program against")
        _check_watcher(loop)
    return Launch(argv, policy, kwds, verify=verify) if policy_applies(policy) else None


async def _stage_report(launch: Launch, pid: int) -> tuple[bytes, Tracee | None]:
    """What the stage reported, read to end-of-file; verifying, the stage is followed to the
    program's exec stop meanwhile (its tracee is returned, at the stop or ended)."""
    launch.spawned()
    if not launch.verify:
        return await read_all_async(launch.read_fd), None
    from .verify import Tracee

    tracee = Tracee(pid)
    return await follow_async(tracee, launch.read_fd), tracee


async def _verified(proc: Process, tracee: Tracee, launch: Launch) -> None:
    """At the program's exec stop: let it run if it conforms, else kill it and raise."""
    from .verify import differences, refusal

    try:
        found = differences(tracee.status(), launch.policy, launch.confined)
        if not found:
            tracee.release()
            return
    except BaseException:
        proc.kill_tree()
        await asyncio.shield(proc.wait())
        raise
    proc.kill_tree()  # it dies before its first instruction
    await asyncio.shield(proc.wait())
    raise refusal(found, proc.stage_warnings)


def _check_watcher(loop: asyncio.AbstractEventLoop) -> None:
    """Refuse verify where asyncio's child watcher would take the program's exec stop."""
    if not isinstance(loop, asyncio.SelectorEventLoop):
        raise PolicyError(
            f"verify=True needs asyncio's own event loop; {type(loop).__name__} waits for its "
            "children its own way, which could take the stop at the program's exec"
        )
    get = getattr(asyncio, "get_child_watcher", None)
    if get is None:  # Python 3.14+: asyncio waits on a pidfd wherever it can open one
        from asyncio.unix_events import can_use_pidfd  # type: ignore[attr-defined]

        if can_use_pidfd():
            return
        name = "a thread calling waitpid() (this process cannot open pidfds)"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            watcher = get()
        if isinstance(watcher, asyncio.PidfdChildWatcher):
            return
        name = type(watcher).__name__
    raise PolicyError(
        f"verify=True: asyncio's child watcher is {name}, which waits with waitpid() and would "
        "take the stop at the program's exec that hardexec checks it at; use "
        "asyncio.PidfdChildWatcher (asyncio.set_child_watcher(asyncio.PidfdChildWatcher()))"
    )


async def follow_async(tracee: Tracee, fd: int) -> bytes:
    """:func:`read_all_async` for a verified spawn: the report, with the stage followed (in this,
    the spawning, thread) to the program's exec stop or the stage's end.

    The pipe wakes us for the stage's records: its ``T`` record just before it stops for the
    tracer, end-of-file at its exec or its end. A signal that stops the stage in between wakes
    nothing, so the stage is also looked at after each pause (1 ms, doubling up to 50 ms).
    """
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks = []
    pause = 0.001
    while not tracee.follow(block=False):
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            woken = loop.create_future()
            loop.add_reader(fd, _resolve, woken)
            timer = loop.call_later(pause, _resolve, woken)
            try:
                await woken
            finally:
                timer.cancel()
                loop.remove_reader(fd)
            pause = min(pause * 2, 0.05)
            continue
        if not chunk:  # end-of-file: exec'd (the exec stop is at hand) or ended
            tracee.follow()
            break
        chunks.append(chunk)
        if not tracee.ready and b"T trace" in b"".join(chunks):
            tracee.follow(until_ready=True)  # the stage stops right after writing it
        pause = 0.001
    chunks.append(await read_all_async(fd))  # the rest: the write end is closed by now
    return b"".join(chunks)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # the reader may fire again before it is removed
        future.set_result(None)


async def read_all_async(fd: int) -> bytes:
    """Read ``fd`` to end-of-file without blocking the event loop (the stage's report pipe)."""
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
