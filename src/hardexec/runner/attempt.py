"""One attempt of one task, from spawn to a dead, reaped tree.

The program is spawned by :class:`hardexec.Popen` (the one spawn layer: the exec stage, the
cgroup, the report pipe) in a process group of its own. The parent then keeps it *unreaped*
until the end: its exit is learnt from a pidfd, so its pid (and process-group id) cannot be
reused while hardexec still signals it. The order of the end, every time:

1. the program exits (or the timeout or a cancel ends it: SIGTERM to the tree, ``kill_after``
   for it to go, SIGKILL to the tree);
2. its output drains, for at most ``drain_timeout`` (a daemonised grandchild may hold it);
3. the tree is killed — what the program left running never outlives it (solti-exec's rule):
   ``cgroup.kill`` with a cgroup (setsid'd processes included), else SIGKILL to the process
   group (a process that left the group escapes that: give the policy a cgroup);
4. the program is reaped (usage read, cgroup removed once empty).

Cancelling the coroutine at any point runs the same end (shielded; a second cancel skips the
grace) and re-raises only once the tree is dead. If even that shielded end is cancelled (a
second round of cancelling every task), the tree is killed and reaped synchronously. A loop
that shuts down (``asyncio.run`` returning with tasks left) cancels them once: they get
their grace, as any cancel does.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import subprocess
import termios
import threading
import time

from ..aio import follow_async, read_all_async
from ..errors import PolicyError, StageError
from ..spawn import Popen
from ..spawn_core import process_group_alive, sealed_memfd, signal_tree
from .outlet import Input, Outlet, Pipe, escape, logger
from .result import Event, Result, Truncation
from .spec import resolve_env

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from ..policy import Policy
    from .config import LogConfig, OutputLimits
    from .spec import TaskSpec

__all__ = ["Attempt", "spawn_error_text", "transient"]

_TRANSIENT = frozenset(
    (errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.EINTR, errno.ETXTBSY)
)
_EMPTY_TIMEOUT = 10.0  # s for a killed tree to be gone (a process in D state takes a while)
_EOF_AFTER_KILL = 1.0  # s for pipes to close once the tree is killed (a holder outside it: no)
_POLL = 0.005  # s between checks of a group (neither a cgroup nor a process group has an event
# asyncio can wait on: cgroup.events reports POLLPRI, which its selector does not watch)


def transient(err: BaseException) -> bool:
    """Whether a spawn error may pass if tried again (EAGAIN, ENOMEM, ETXTBSY, …).

    A missing or non-executable program, E2BIG and a bad policy never do."""
    if isinstance(err, PolicyError):
        return False
    return isinstance(err, OSError) and err.errno in _TRANSIENT


def spawn_error_text(err: BaseException) -> str:
    """A spawn error in one line, for logs."""
    if isinstance(err, StageError):
        return str(err)
    return f"{type(err).__name__}: {err}"


class Attempt:
    """One attempt: :meth:`run` spawns, supervises and ends it, and returns its :class:`Result`.

    :meth:`cancel` (the runner's ``cancel``) ends it as a timeout would, marked cancelled.
    """

    def __init__(
        self,
        spec: TaskSpec,
        policy: Policy,
        number: int,
        *,
        log: LogConfig,
        output: OutputLimits,
        fixed_env: Mapping[str, str] | None,
        outlet: Outlet,
        verify: bool = False,
    ) -> None:
        self.spec = spec
        self.policy = policy
        self.number = number
        self.log = log
        self.output = output
        self.fixed_env = fixed_env
        self.outlet = outlet
        self.verify = verify  # checked at its exec by this (the loop's) thread: hardexec.verify
        self.label = spec.label
        self.warnings: list[str] = []
        self.timed_out = False
        self.cancelled = False
        self._cancel = asyncio.Event()
        self._hurry = asyncio.Event()  # a second cancel: no more grace
        self._kill_at: float | None = None  # when SIGKILL is due, once SIGTERM was sent
        self.child: Popen | None = None
        self._pipes: list[Pipe] = []
        self._input: Input | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._handed: set[str] = set()  # child streams a transport owns (and will close)
        self._exited: asyncio.Future[None] | None = None
        self._pidfd = -1

    def cancel(self) -> None:
        """End the attempt (SIGTERM, grace, SIGKILL); its result says ``cancelled``."""
        self._cancel.set()

    async def run(self) -> Result:
        """Spawn, supervise, end; return the result. Spawn errors are raised as they are."""
        argv, script_fd = self._argv()
        try:
            self.child = await self._spawn(argv, script_fd)
        finally:
            if script_fd >= 0:
                os.close(script_fd)  # the task holds its own copy: the body dies with the tree
        start = time.monotonic()
        try:
            self._watch_exit()
            self._started(argv)
            # Shielded: a cancel meanwhile must not leave a pipe half connected (asyncio
            # closes it), or the program would die of SIGPIPE instead of having its grace.
            self._connecting = asyncio.ensure_future(self._connect())
            await asyncio.shield(self._connecting)
            await self._supervise(start)
        except BaseException:
            await self._end_for_sure()
            raise
        return self._result(time.monotonic() - start)

    # --- the start -----------------------------------------------------------------------------

    def _argv(self) -> tuple[list[str], int]:
        spec = self.spec
        spec.check_cwd()
        if spec.body is None:
            return list(spec.argv), -1
        fd = sealed_memfd("hardexec-script", spec.body.encode("utf-8", "surrogateescape"))
        return [*spec.argv, f"/dev/fd/{fd}", *spec.script_args], fd

    async def _spawn(self, argv: list[str], script_fd: int) -> Popen:
        spec = self.spec
        child = Popen(
            argv,
            policy=self.policy,
            warn=False,  # they go into the result (and the log), not to warnings
            stdin=subprocess.DEVNULL if spec.input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            process_group=0,
            cwd=spec.cwd,
            env=resolve_env(spec, self.fixed_env),
            pass_fds=(script_fd,) if script_fd >= 0 else (),
            verify=self.verify,
            _later=True,  # the stage's report is read below, without blocking the loop
        )
        if child._report_fd() >= 0:
            try:
                if child._tracee is not None:  # followed to the exec stop, in this thread
                    report = await follow_async(child._tracee, child._report_fd())
                else:
                    report = await read_all_async(child._report_fd())
            except BaseException:  # cancelled while the stage ran: end it, leave nothing
                child._report_failed()  # killed and reaped
                _wait_tree_gone(child)  # and what it may have started already, gone too
                raise
            child._finish_report(report)  # raises what Popen raises, the stage reaped
        return child

    def _started(self, argv: list[str]) -> None:
        child = self.child
        assert child is not None
        self.warnings.extend(str(w) for w in child.stage_warnings)
        self.warnings.extend(child.stage_notes)  # what hardexec did unasked: the result says it
        # The program's name and how many arguments, never their values (they carry secrets).
        count = len(argv) - 1
        logger.info(
            "task %s: started %s with %d argument%s, pid %d (attempt %d)",
            escape(self.label),
            escape(self.spec.program),
            count,
            "" if count == 1 else "s",
            child.pid,
            self.number,
            extra={"task": escape(self.label)},
        )
        self.outlet.put(Event("start", self.label, self.number, pid=child.pid))

    def _watch_exit(self) -> None:
        """Learn of the program's exit without reaping it (its pid stays ours until then)."""
        loop = asyncio.get_running_loop()
        child = self.child
        assert child is not None
        self._exited = loop.create_future()
        try:
            self._pidfd = os.pidfd_open(child.pid)
        except OSError:  # no pidfds (before Linux 5.3): a thread of its own waits, unreaping
            waiter = threading.Thread(
                target=_wait_without_reaping,
                args=(child.pid, loop, self._set_exited),
                name=f"hardexec-wait-{child.pid}",
                daemon=True,
            )
            waiter.start()
        else:
            loop.add_reader(self._pidfd, self._set_exited)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        child = self.child
        assert child is not None
        for name in ("stdout", "stderr"):
            pipe = Pipe(name, self)
            self._pipes.append(pipe)
            self._handed.add(name)  # from here the transport closes it, even if cancelled
            await loop.connect_read_pipe(lambda pipe=pipe: pipe, getattr(child, name))  # type: ignore[misc]
            assert pipe.transport is not None
            self.outlet.readers.append(pipe.transport)
        if self.spec.input is not None:
            self._input = Input()
            self._handed.add("stdin")
            transport, _ = await loop.connect_write_pipe(lambda: self._input, child.stdin)
            transport.write(self.spec.input)
            transport.close()  # after the data is written (or the program stops reading)

    def _set_exited(self) -> None:
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)

    # --- while it runs -------------------------------------------------------------------------

    async def _supervise(self, start: float) -> None:
        assert self._exited is not None
        spec = self.spec
        timeout = None if spec.timeout is None else start + spec.timeout - time.monotonic()
        cancel = asyncio.ensure_future(self._cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {self._exited, cancel}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancel.cancel()
        if not self._exited.done():
            if cancel in done:
                self.cancelled = True
            else:
                self.timed_out = True
            await self._terminate()
        await self._drain()
        await self._kill_tree()

    async def _terminate(self) -> None:
        """SIGTERM to the tree; up to ``kill_after`` for it to go; SIGKILL to what is left.

        Entered again (a cancel during a timeout's grace), it keeps the grace it gave first.
        """
        if self._kill_at is None:
            self._signal_tree(signal.SIGTERM)
            self._kill_at = time.monotonic() + self.spec.kill_after
        gone = asyncio.ensure_future(self._tree_gone())
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait(
                {gone, hurry},
                timeout=max(0.0, self._kill_at - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            gone.cancel()
            hurry.cancel()
        self._signal_tree(signal.SIGKILL)
        assert self._exited is not None
        await asyncio.shield(self._exited)  # SIGKILL: it goes now (the zombie stays ours)

    async def _tree_gone(self) -> None:
        """Return once the program has exited and its tree is gone (or its output closed)."""
        assert self._exited is not None
        await asyncio.shield(self._exited)  # cancelling this wait must not cancel the future
        group = self._group()
        pid = self.child.pid  # type: ignore[union-attr]
        # The cgroup, else the process group (the program is a zombie by now, and zombies
        # count as gone). Not the pipes: they may be paused for a slow consumer.
        while group.populated() if group is not None else process_group_alive(pid):
            await asyncio.sleep(_POLL * 4)

    async def _drain(self) -> None:
        """Let output drain after the exit, for at most ``drain_timeout`` of reading."""
        if not await self._wait_closed(self.spec.drain_timeout):
            self.warnings.append(
                f"output stayed open {self.spec.drain_timeout:g} s after the program exited "
                "(held by a process it left running): its tree was killed"
            )

    async def _wait_closed(self, budget: float) -> bool:
        """Wait until both pipes are closed, for ``budget`` seconds of reading; whether they
        are. Time the pipes spend paused for a slow consumer of ours does not count: that
        output is not held open by the task, it waits for us (unless the attempt is cancelled:
        then its consumer may be gone, and every second counts)."""
        outlet = self.outlet
        while pending := [pipe.closed for pipe in self._pipes if not pipe.closed.done()]:
            if self.cancelled:
                outlet.release()
                _, late = await asyncio.wait(pending, timeout=max(budget, 0.0))
                return not late
            paused = not outlet.flowing.is_set()
            if not paused and budget <= 0:
                return False
            change = asyncio.ensure_future((outlet.flowing if paused else outlet.stalled).wait())
            started = time.monotonic()
            try:
                await asyncio.wait(
                    [*pending, change],
                    timeout=None if paused else budget,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                change.cancel()
            if not paused:
                budget -= time.monotonic() - started
        return True

    # --- the end -------------------------------------------------------------------------------

    async def _kill_tree(self) -> None:
        """SIGKILL what the program left running, wait until it is gone, reap the program."""
        group = self._group()
        if group is not None and group.populated() and not (self.timed_out or self.cancelled):
            self.warnings.append("processes the program left running were killed")
        self._signal_tree(signal.SIGKILL)
        await self._close_pipes()
        await self._reap()

    def _group(self) -> Any:
        return self.child.cgroup if self.child is not None else None

    def _signal_tree(self, signum: int) -> None:
        child = self.child
        assert child is not None and child.returncode is None  # unreaped: its pid is ours
        signal_tree(child.cgroup, child.pid, signum)

    async def _close_pipes(self) -> None:
        # Killed holders close them at once; a holder outside the tree never does.
        await self._wait_closed(_EOF_AFTER_KILL)
        for pipe in self._pipes:
            if pipe.transport is not None and not pipe.closed.done():
                unread = _unread(pipe.transport)
                if unread:  # discarded with the pipe: counted, and said
                    pipe.buffer.dropped_bytes += unread
                    self.warnings.append(
                        f"{pipe.name}: {unread} bytes still unread when its pipe was closed"
                    )
                pipe.transport.close()  # connection_lost (soon): its last line is kept
        if self._input is not None:
            self._input.abort()
        self._close_unhanded()
        if pending := [pipe.closed for pipe in self._pipes if not pipe.closed.done()]:
            await asyncio.wait(pending)  # closed in the loop's next turn: lines and fds final

    async def _reap(self) -> None:
        child = self.child
        assert child is not None
        group = child.cgroup
        if group is not None:
            deadline = time.monotonic() + _EMPTY_TIMEOUT
            while group.populated() and time.monotonic() < deadline:
                await asyncio.sleep(_POLL)
        pgid = child.pid
        self._release_pidfd()
        child.wait()  # a zombie by now: wait4 returns at once (usage, the group removed)
        if group is None:  # killed members of its process group: until they are gone
            deadline = time.monotonic() + _EMPTY_TIMEOUT
            while process_group_alive(pgid) and time.monotonic() < deadline:
                await asyncio.sleep(_POLL)

    def _release_pidfd(self) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    async def _end_for_sure(self) -> None:
        """Interrupted mid-run: end the tree in a shielded task (a further cancel only skips
        the grace); if that task fails or is itself cancelled, end it all synchronously."""
        if self.child is None or self.child.returncode is not None:
            self._kill_now()
            return

        async def end() -> None:
            if self._connecting is not None and not self._connecting.done():
                await asyncio.wait([self._connecting])  # one turn of the loop at most
            if self._exited is not None and not self._exited.done():
                self.cancelled = True
                await self._terminate()
            await self._kill_tree()

        ending = asyncio.ensure_future(end())
        while not ending.done():
            try:
                await asyncio.shield(ending)
            except asyncio.CancelledError:
                self._hurry.set()
            except BaseException:
                break
        if not ending.done() or ending.cancelled() or ending.exception() is not None:
            self._kill_now()

    def _kill_now(self) -> None:
        """The last resort, with no awaiting: SIGKILL the tree, reap, close every fd."""
        self._release_pidfd()
        child = self.child
        if child is not None and child.returncode is None:
            with contextlib.suppress(Exception):
                signal_tree(child.cgroup, child.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                child.wait()
        for pipe in self._pipes:
            if pipe.transport is not None:
                pipe.transport.close()
        if self._input is not None:
            self._input.abort()
        self._close_unhanded()

    def _close_unhanded(self) -> None:
        """Close the child's pipes that no transport took (interrupted before it could)."""
        if self.child is None:
            return
        for name in ("stdin", "stdout", "stderr"):
            stream = getattr(self.child, name)
            if stream is not None and name not in self._handed:
                self._handed.add(name)
                stream.close()

    def _result(self, duration: float) -> Result:
        child = self.child
        assert child is not None and child.returncode is not None
        code = child.returncode
        usage = child.usage
        out, err = self._pipes
        result = Result(
            name=self.label,
            pid=child.pid,
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            duration=duration,
            timed_out=self.timed_out,
            cancelled=self.cancelled,
            oom_killed=usage.oom_killed if usage is not None else None,
            usage=usage,
            stdout=out.buffer.text(),
            stderr=err.buffer.text(),
            truncated=Truncation(
                stdout_bytes=out.buffer.dropped_bytes,
                stdout_lines=out.buffer.dropped_lines,
                stderr_bytes=err.buffer.dropped_bytes,
                stderr_lines=err.buffer.dropped_lines,
                lines_cut=out.splitter.cut + err.splitter.cut,
            ),
            warnings=tuple(self.warnings),
            attempts=self.number,
            denied_syscalls=child.denied_syscalls,
        )
        label = escape(self.label)
        logger.info("task %s: %s", label, escape(result.describe()), extra={"task": label})
        return result


def _unread(transport: asyncio.ReadTransport) -> int:
    """Bytes waiting in a read pipe (FIONREAD), 0 if that cannot be told."""
    pipe = transport.get_extra_info("pipe")
    try:
        return struct.unpack("i", fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    except (OSError, ValueError, AttributeError):
        return 0


def _wait_tree_gone(child: Popen) -> None:
    """Block until the killed program's tree is gone (SIGKILL'd processes take moments; a
    rare path: a cancel while the exec stage ran), at most ``_EMPTY_TIMEOUT``."""
    if child.cgroup is not None:
        child.cgroup.wait_empty(_EMPTY_TIMEOUT)
        return
    deadline = time.monotonic() + _EMPTY_TIMEOUT
    while process_group_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(_POLL)


def _wait_without_reaping(pid: int, loop: asyncio.AbstractEventLoop, done: Any) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(done)
