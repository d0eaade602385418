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

    __slots__ = ("dropped", "name", "passed", "pending", "pipe", "target")

    def __init__(self, name: str, pipe: Any, target: int) -> None:
        self.name = name
        self.pipe = pipe  # the file object Popen made; None once closed
        self.target = target
        self.passed = 0
        self.dropped = 0
        self.pending = memoryview(b"")  # read, within the cap, not yet written

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None
        self.pending = memoryview(b"")


class Passthrough:
    """The program's stdout and stderr copied to hardexec's own, byte for byte, up to ``limit``
    bytes each; the rest is read (so the program never blocks on a full pipe) and counted.

    It never blocks the supervisor: a pipe is read only when what it gave before has been
    written, and written only when select says hardexec's fd can take it, at most PIPE_BUF at a
    time (a pipe that is writable takes that much without blocking). A reader of hardexec's
    output that stops reading therefore stops the program as it would without hardexec, and
    the timeout still fires; a reader that goes away closes the program's pipe, so the program
    gets EPIPE (or SIGPIPE) as it would.
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

    def readers(self) -> list[int]:
        """The pipes to read now."""
        return [s.pipe.fileno() for s in self._streams if s.pipe is not None and not s.pending]

    def writers(self) -> list[int]:
        """hardexec's fds with output waiting for them."""
        return list({s.target for s in self._streams if s.pending})

    @property
    def open(self) -> bool:
        """Whether any pipe is still open or any output still unwritten."""
        return any(s.pipe is not None or s.pending for s in self._streams)

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
            stream.close()
            return
        room = max(self.limit - stream.passed, 0)
        stream.pending = memoryview(data)[:room]
        stream.passed += len(stream.pending)
        stream.dropped += len(data) - len(stream.pending)

    def _write(self, stream: _Stream) -> None:
        try:
            written = os.write(stream.target, stream.pending[: select.PIPE_BUF])
        except BlockingIOError:  # hardexec's own fd is non-blocking and full: later
            return
        except BrokenPipeError:  # our reader left: so does the program's output
            stream.close()
            return
        stream.pending = stream.pending[written:]

    def drain(self, timeout: float) -> None:
        """Copy until every pipe is closed and its output written, for at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self.open:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, writable, _ = select.select(self.readers(), self.writers(), [], left)
            self.ready(readable, writable)

    def finish(self) -> None:
        """Drain what the ended tree left in the pipes, then close them."""
        self.drain(_EOF_AFTER_END)
        for stream in self._streams:
            stream.close()


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
                stdout_bytes=dropped.get("stdout", 0), stderr_bytes=dropped.get("stderr", 0)
            ),
            warnings=tuple(warnings),
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
    """One line per stream that lost output over ``--max-output``, printed and returned."""
    lines = []
    for name in ("stdout", "stderr"):
        dropped = copier.dropped.get(name, 0)
        if dropped:
            line = f"{name}: {dropped} bytes over --max-output {limit_text} were dropped"
            print(f"hardexec: {line}", file=sys.stderr)
            lines.append(line)
    return lines
