"""What ``hardexec run`` adds as a runner does: a timeout that ends the tree, output passed
through within a cap, and the run's :class:`hardexec.Result` written as JSON.

The supervisor (:mod:`.supervise`) stays synchronous (terminal hand-over and job control
need a blocking ``waitid``), so these are its small helpers; the policy of each — the order
SIGTERM, ``--kill-after``, SIGKILL to the whole tree; what a result holds — is the runner's
(:func:`hardexec.spawn_core.signal_tree`, :class:`hardexec.runner.Result`).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..spawn import Popen
    from .options import Request

_CHUNK = 1 << 16
_EOF_AFTER_END = 1.0  # s for output to close once the tree is ended (an escapee may hold it)


class Clock:
    """``--timeout``: SIGTERM to the tree when it expires, SIGKILL ``kill_after`` s later."""

    def __init__(self, timeout: float | None, kill_after: float) -> None:
        self.start = time.monotonic()
        self.timeout = timeout
        self.kill_after = kill_after
        self.timed_out = False
        self._next = None if timeout is None else self.start + timeout

    def left(self) -> float | None:
        """Seconds until the next step is due (``None``: no step is due, ever)."""
        return None if self._next is None else max(0.0, self._next - time.monotonic())

    def deadline_left(self) -> float | None:
        """Seconds until the timeout (negative: past), ``None`` without one."""
        if self.timeout is None:
            return None
        return self.start + self.timeout - time.monotonic()

    def tick(self, child: Popen) -> None:
        """Take the step that is due, if one is (the program must still be unreaped)."""
        from ..spawn_core import signal_tree

        if self._next is None or time.monotonic() < self._next:
            return
        if not self.timed_out:
            self.timed_out = True
            signal_tree(child.cgroup, child.pid, signal.SIGTERM)
            self._next = time.monotonic() + self.kill_after
        else:
            signal_tree(child.cgroup, child.pid, signal.SIGKILL)
            self._next = None


class _Stream:
    """One of the program's output pipes and the fd of hardexec's it goes to."""

    __slots__ = ("dropped", "lost", "name", "passed", "pending", "pipe", "target", "write")

    def __init__(self, name: str, pipe: Any, target: int) -> None:
        self.name = name
        self.pipe = pipe  # the file object Popen made; None once closed
        self.target = target
        self.write = _Writer(target)
        self.passed = 0
        self.dropped = 0  # over the cap
        self.lost = 0  # within the cap, but never written: the end came first
        self.pending = memoryview(b"")  # read, within the cap, not yet written

    def close(self) -> None:
        """Stop: what is still pending or unread in the pipe is counted as lost."""
        self.lost += len(self.pending)
        self.pending = memoryview(b"")
        if self.pipe is not None:
            self.lost += _unread(self.pipe.fileno())
            self.pipe.close()
            self.pipe = None


class Passthrough:
    """The program's stdout and stderr copied to hardexec's own, byte for byte, up to ``limit``
    bytes each; the rest is read (so the program never blocks on a full pipe) and counted.

    It never blocks the supervisor: a pipe is read only when what it gave before has been
    written, and written only when select says hardexec's fd can take some, without blocking
    (a terminal or a pipe is written through a non-blocking file description of its own, so
    the shell's stays as it is). A reader of hardexec's output that stops reading therefore
    stops the program as it would without hardexec, and the timeout still fires; a reader that
    goes away closes the program's pipe, so the program gets EPIPE (or SIGPIPE) as it would.
    """

    def __init__(self, child: Popen, limit: int) -> None:
        self.limit = limit
        self._streams = [
            _Stream(name, getattr(child, name), target)
            for name, target in (("stdout", 1), ("stderr", 2))
            if getattr(child, name) is not None
        ]

    @property
    def dropped(self) -> dict[str, int]:
        """Bytes of each stream dropped over the cap."""
        return {stream.name: stream.dropped for stream in self._streams}

    @property
    def lost(self) -> dict[str, int]:
        """Bytes of each stream within the cap but never written (see :meth:`finish`)."""
        return {stream.name: stream.lost for stream in self._streams}

    def readers(self) -> list[int]:
        """The pipes to read now."""
        return [s.pipe.fileno() for s in self._streams if s.pipe is not None and not s.pending]

    def writers(self) -> list[int]:
        """hardexec's fds with output waiting for them."""
        return list({s.target for s in self._streams if s.pending})

    def ready(self, readable: list[int], writable: list[int]) -> None:
        """Do what select said can be done now."""
        for stream in self._streams:
            if stream.pending and stream.target in writable:
                self._write(stream)
            elif stream.pipe is not None and stream.pipe.fileno() in readable:
                self._read(stream)

    def _read(self, stream: _Stream) -> None:
        data = os.read(stream.pipe.fileno(), _CHUNK)
        if not data:
            stream.pipe.close()
            stream.pipe = None
            return
        room = max(self.limit - stream.passed, 0)
        stream.pending = memoryview(data)[:room]
        stream.passed += len(stream.pending)
        stream.dropped += len(data) - len(stream.pending)

    def _write(self, stream: _Stream) -> None:
        try:
            written = stream.write(stream.pending)
        except BlockingIOError:  # full after all: wait for the next select
            return
        except BrokenPipeError:  # our reader left: so does the program's output
            stream.close()
            return
        stream.pending = stream.pending[written:]

    def finish(self, clock: Clock) -> None:
        """The tree is ended: copy what is left, then close the pipes.

        Output waiting for a slow reader of ours is waited for (the program, had it written
        it directly, would have waited too) — until the timeout, if one is set and not yet
        past. A pipe that stays open (a process outside the tree holds it) gets
        ``_EOF_AFTER_END`` s of reading. Whatever is left then is counted as lost.
        """
        reading = _EOF_AFTER_END
        while any(s.pipe is not None or s.pending for s in self._streams):
            writers = self.writers()
            if not writers and reading <= 0:
                break
            left = clock.deadline_left()
            if writers and left is not None and left <= 0:
                break
            # Writing: as long as the reader takes (up to the timeout, if any). Reading: the
            # time left for a pipe still open.
            wait = left if writers else reading
            started = time.monotonic()
            readable, writable, _ = select.select(self.readers(), writers, [], wait)
            if not writers:
                reading -= time.monotonic() - started
            self.ready(readable, writable)
        for stream in self._streams:
            stream.close()
            stream.write.close()


class _Writer:
    """Writes to ``fd`` without blocking (BlockingIOError when it is full).

    A pipe or a terminal is reopened through /proc/self/fd with O_NONBLOCK: a file
    description of hardexec's own, so the shell's (shared with hardexec's fd 1) keeps its
    flags. A socket is sent to with MSG_DONTWAIT. A regular file never blocks.
    """

    atomic = False  # no file description of our own: PIPE_BUF at a time, at least atomic

    def __init__(self, fd: int) -> None:
        import stat

        self.fd = fd
        self.own = -1
        self.sock: Any = None
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return
        if stat.S_ISSOCK(mode):
            import socket

            self.sock = socket.socket(fileno=os.dup(fd))
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            with contextlib.suppress(OSError):  # a device that refuses: PIPE_BUF at a time
                self.own = os.open(
                    f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
                )
            self.atomic = self.own < 0

    def __call__(self, data: memoryview) -> int:
        if self.sock is not None:
            import socket

            return self.sock.send(data, socket.MSG_DONTWAIT)
        if self.own >= 0:
            return os.write(self.own, data)
        return os.write(self.fd, data[: select.PIPE_BUF] if self.atomic else data)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.own >= 0:
            os.close(self.own)
            self.own = -1


def _unread(fd: int) -> int:
    """Bytes waiting in the pipe ``fd`` (FIONREAD), 0 if that cannot be told."""
    import fcntl
    import struct
    import termios

    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    except OSError:
        return 0


class ResultFile:
    """``--json-result FILE``: written to a new file beside FILE, renamed over it at the end.

    hardexec runs as root, often with FILE in a directory others can write (``/tmp``): the
    temporary file is made with O_EXCL (never an existing file, never through a symlink), and
    the rename replaces the name FILE, not what a planted symlink points at. It is made before
    anything runs, so a path that cannot be written refuses the run. A program that could not
    be started still gets a result (no pid, no status, the reason in ``warnings``), so FILE
    never holds an earlier run's.
    """

    def __init__(self, path: str) -> None:
        import tempfile

        from .options import fail

        self.path = path
        if os.path.isdir(path):
            fail(f"--json-result: {path!r} is a directory")
        folder = os.path.dirname(os.path.abspath(path))
        try:
            self.fd, self.temp = tempfile.mkstemp(prefix=".hardexec-result-", dir=folder)
        except OSError as err:
            fail(f"--json-result: {path!r}: {err.strerror}")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(self.fd, 0o644 & ~umask)  # as a plain O_CREAT would have made it

    def write_unstarted(self, req: Request, clock: Clock, reason: str) -> None:
        """The result of a run whose program never started: ``reason`` in its warnings."""
        from ..runner.result import Result

        name = os.path.basename(req.argv[0]) or req.argv[0]
        duration = time.monotonic() - clock.start
        self._put(Result(name=name, duration=duration, warnings=(reason,)))

    def write(
        self,
        req: Request,
        child: Popen,
        *,
        clock: Clock,
        copier: Passthrough | None,
        warnings: list[str],
    ) -> None:
        """The run as a :class:`hardexec.Result`, JSON, in place of FILE.

        Its ``stdout``/``stderr`` are empty: the command passes output through, it keeps none.
        """
        from ..runner.result import Result, Truncation

        code = child.returncode
        assert code is not None
        usage = child.usage
        dropped = copier.dropped if copier else {}
        lost = copier.lost if copier else {}
        result = Result(
            name=os.path.basename(req.argv[0]) or req.argv[0],
            pid=child.pid,
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            duration=time.monotonic() - clock.start,
            timed_out=clock.timed_out,
            oom_killed=usage.oom_killed if usage is not None else None,
            usage=usage,
            truncated=Truncation(
                stdout_bytes=dropped.get("stdout", 0) + lost.get("stdout", 0),
                stderr_bytes=dropped.get("stderr", 0) + lost.get("stderr", 0),
            ),
            warnings=(*warnings, *child.stage_notes),  # what hardexec did unasked, too
            denied_syscalls=child.denied_syscalls,
        )
        self._put(result)

    def _put(self, result: Any) -> None:
        import json

        with os.fdopen(self.fd, "w") as f:
            json.dump(result.to_dict(), f, indent=2)
            f.write("\n")
        try:
            os.rename(self.temp, self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(self.temp)
            print(f"hardexec: --json-result: {self.path!r}: {err.strerror}", file=sys.stderr)


def say_dropped(copier: Passthrough, limit_text: str) -> list[str]:
    """One line per stream that lost output (over ``--max-output``, or not taken before the
    end by hardexec's reader), printed and returned."""
    lines = []
    for name in ("stdout", "stderr"):
        dropped, lost = copier.dropped.get(name, 0), copier.lost.get(name, 0)
        if dropped:
            lines.append(f"{name}: {dropped} bytes over --max-output {limit_text} were dropped")
        if lost:
            lines.append(f"{name}: {lost} bytes were not taken by hardexec's reader in time")
    for line in lines:
        print(f"hardexec: {line}", file=sys.stderr)
    return lines
