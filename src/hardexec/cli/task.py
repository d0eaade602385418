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


class Passthrough:
    """The program's stdout and stderr copied to hardexec's own, byte for byte, up to ``limit``
    bytes each; the rest is read (so the program never blocks on a full pipe) and counted."""

    def __init__(self, child: Popen, limit: int) -> None:
        self.limit = limit
        self.passed = {"stdout": 0, "stderr": 0}
        self.dropped = {"stdout": 0, "stderr": 0}
        self.streams: dict[int, tuple[str, int]] = {}  # pipe fd → (its name, hardexec's fd)
        for name, target in (("stdout", 1), ("stderr", 2)):
            pipe = getattr(child, name)
            if pipe is not None:
                self.streams[pipe.fileno()] = (name, target)
        self._files = [child.stdout, child.stderr]

    def fds(self) -> list[int]:
        """The pipes still open."""
        return list(self.streams)

    def pump(self, fd: int) -> None:
        """Copy what ``fd`` has now (one read); at end of file, stop watching it."""
        name, target = self.streams[fd]
        data = os.read(fd, _CHUNK)
        if not data:
            del self.streams[fd]
            return
        room = max(self.limit - self.passed[name], 0)
        if room:
            _write_all(target, data[:room])
            self.passed[name] += min(room, len(data))
        self.dropped[name] += max(len(data) - room, 0)

    def drain(self, timeout: float) -> None:
        """Copy until every pipe is closed, for at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self.streams:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select(self.fds(), [], [], left)
            for fd in ready:
                self.pump(fd)

    def finish(self) -> None:
        """Drain what the ended tree left in the pipes, then close them."""
        self.drain(_EOF_AFTER_END)
        self.streams.clear()
        for pipe in self._files:
            if pipe is not None:
                pipe.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BrokenPipeError:  # our reader left: the program's output goes nowhere now
            return
        except BlockingIOError:  # hardexec's own stdout is non-blocking: wait until writable
            select.select([], [fd], [])


def open_result_file(path: str) -> int:
    """Open (create) ``--json-result``'s file before anything runs, so a bad path refuses the
    run rather than losing its result; returns the fd."""
    from .options import fail

    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as err:
        fail(f"--json-result: {path!r}: {err.strerror}")


def write_result(
    fd: int,
    req: Request,
    child: Popen,
    *,
    clock: Clock,
    copier: Passthrough | None,
    warnings: list[str],
) -> None:
    """The run as a :class:`hardexec.Result`, JSON, into ``fd`` (then closed).

    Its ``stdout``/``stderr`` are empty: the command passes output through, it keeps none.
    """
    import json

    from ..runner.result import Result, Truncation

    code = child.returncode
    assert code is not None
    usage = child.usage
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
            stdout_bytes=copier.dropped["stdout"] if copier else 0,
            stderr_bytes=copier.dropped["stderr"] if copier else 0,
        ),
        warnings=tuple(warnings),
    )
    with os.fdopen(fd, "w") as f, contextlib.suppress(BrokenPipeError):
        json.dump(result.to_dict(), f, indent=2)
        f.write("\n")


def say_dropped(copier: Passthrough, limit_text: str) -> list[str]:
    """One line per stream that lost output over ``--max-output``, printed and returned."""
    lines = []
    for name in ("stdout", "stderr"):
        dropped = copier.dropped[name]
        if dropped:
            line = f"{name}: {dropped} bytes over --max-output {limit_text} were dropped"
            print(f"hardexec: {line}", file=sys.stderr)
            lines.append(line)
    return lines
