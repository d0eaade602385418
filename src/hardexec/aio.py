"""The asyncio mirror: :func:`create_subprocess_exec` with a policy, and its :class:`Process`.

Kept apart from :mod:`hardexec.spawn` so that ``import hardexec`` (and the command line) does
not import asyncio; the launch itself is :mod:`hardexec.spawn_core`'s, shared with every surface.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import IO, TYPE_CHECKING, Any

from .errors import StageWarning
from .plan import StrOrBytesPath
from .policy import Policy
from .spawn_core import Launch, check_policy, kill_tree, policy_applies
from .usage import Usage

if TYPE_CHECKING:
    from .cgroups import Cgroup
    from .confine.notify import Listener

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
    **kwds: Any,
) -> Process:
    """:func:`asyncio.create_subprocess_exec` with a policy; returns a :class:`Process`.

    Raises :class:`StageError` / ``FileNotFoundError`` like :class:`Popen`, after reaping the
    stage. Cancelled while the stage runs, it kills and reaps the stage before re-raising.
    """
    policy = check_policy(policy)
    loop = asyncio.get_running_loop()
    streams = {"stdin": stdin, "stdout": stdout, "stderr": stderr}
    launch = Launch([program, *args], policy, kwds) if policy_applies(policy) else None
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
        launch.spawned()
        report = launch.finish(await read_all_async(launch.read_fd))
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
