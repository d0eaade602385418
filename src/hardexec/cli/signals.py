"""The supervisor's signals and terminal: forwarding to the program, and job control.

:class:`Signals` installs the forwarding handlers (and the wake-up pipe the supervisor sleeps
on); :class:`Terminal` hands the controlling terminal to the program's process group and takes
it back. See :mod:`hardexec.cli.supervise` for the duties they serve.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal

# Every signal someone may send hardexec to reach the program: those whose default action
# would end hardexec with no clean-up (leaving the program's tree and group behind), and the
# harmless ones a program may wait for. Not the faults hardexec itself would raise (SEGV, BUS,
# ILL, FPE, TRAP), not SIGPIPE/SIGXFSZ (CPython ignores them), not the job-control ones
# (handled below), not SIGCHLD (hardexec's own wake-up).
FORWARDED = (
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGPWR,
    signal.SIGIO,
    signal.SIGSYS,
    signal.SIGXCPU,
    signal.SIGABRT,
    signal.SIGSTKFLT,
    signal.SIGWINCH,
    signal.SIGURG,
    *range(signal.SIGRTMIN, signal.SIGRTMAX + 1),
)
# Told to end by one of these, hardexec ends what the program left behind as well.
_ENDING = frozenset((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))


class Signals:
    """Forwarding handlers, installed over every forwarded signal not inherited as ignored."""

    def __init__(self) -> None:
        self.pgid: int | None = None  # the program's group, once it exists and until reaped
        self.pending: list[int] = []
        self.told_to_end = False
        self.on_continue = lambda: None
        self.wake_fd, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._previous: dict[int, object] = {}
        if signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN:
            # Ignored, the kernel would reap the program itself and its status would be lost.
            self._install(signal.SIGCHLD, signal.SIG_DFL)
        for signum in FORWARDED:
            if signal.getsignal(signum) != signal.SIG_IGN:
                self._install(signum, self._forward)
        if signal.getsignal(signal.SIGCONT) != signal.SIG_IGN:
            self._install(signal.SIGCONT, self._continued)

    def _install(self, signum: int, handler: object) -> None:
        self._previous[signum] = signal.signal(signum, handler)  # type: ignore[arg-type]

    def _forward(self, signum: int, _frame: object) -> None:
        if signum in _ENDING:
            self.told_to_end = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"\0")
        if self.pgid is None:
            self.pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pgid, signum)  # the program (its pid is its group's id), as kill(1) meant

    def wake_on_child(self) -> None:
        """Make SIGCHLD (the program stopped or ended) wake :meth:`wait` and select."""
        self._install(signal.SIGCHLD, self._wake)

    def _wake(self, _signum: int, _frame: object) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"\0")

    def _continued(self, _signum: int, _frame: object) -> None:
        self.on_continue()

    def attach(self, pgid: int) -> None:
        """The program runs: forward to its group, starting with what arrived meanwhile."""
        self.pgid = pgid
        pending, self.pending = self.pending, []
        for signum in pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pgid, signum)

    def wait(self, timeout: float) -> None:
        """Sleep until ``timeout`` s pass or a forwarded signal arrives."""
        ready, _, _ = select.select([self.wake_fd], [], [], timeout)
        if ready:
            os.read(self.wake_fd, 4096)

    def restore(self) -> None:
        """Put back the dispositions hardexec started with."""
        self.pgid = None
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        os.close(self.wake_fd)
        os.close(self._wake_write)


class Terminal:
    """The controlling terminal, handed to the program's group while hardexec holds it."""

    def __init__(self) -> None:
        self.fd = -1
        self.given = False
        with contextlib.suppress(OSError):  # no controlling terminal: nothing to hand over
            self.fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)

    def _owner(self) -> int | None:
        try:
            return os.tcgetpgrp(self.fd) if self.fd >= 0 else None
        except OSError:
            return None

    def holds(self, pgid: int) -> bool:
        """Whether ``pgid`` is the terminal's foreground group."""
        return self._owner() == pgid

    def give(self, pgid: int) -> None:
        """Make ``pgid`` the foreground group, if hardexec is it now."""
        if self.fd >= 0 and self._owner() == os.getpgrp():
            self.given = self._set(pgid) or self.given

    def take_back(self) -> None:
        """Make hardexec's group the foreground group again, if it gave the terminal away."""
        if self.given:
            self._set(os.getpgrp())
            self.given = False

    def _set(self, pgid: int) -> bool:
        # From the background, tcsetpgrp raises SIGTTOU (stopping us) unless it is ignored.
        previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(self.fd, pgid)
            return True
        except OSError:
            return False
        finally:
            signal.signal(signal.SIGTTOU, previous)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
