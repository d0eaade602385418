"""What a task did: :class:`Result` (plain, frozen data: it crosses processes as JSON),
:class:`Truncation` (what the caps left out) and :class:`Event` (one line, live)."""

from __future__ import annotations

import signal as _signal

from .._record import field, frozen
from ..usage import Usage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Literal

__all__ = ["OUTCOMES", "Event", "Result", "Truncation"]

#: How an attempt can end, as results and metrics name it.
OUTCOMES = ("success", "failure", "timeout", "cancelled", "spawn_failed")


@frozen
class Truncation:
    """What the caps left out of a result.

    Attributes:
        stdout_bytes, stdout_lines: dropped from stdout by :class:`OutputLimits`.
        stderr_bytes, stderr_lines: the same for stderr.
        lines_cut: lines shortened by :class:`LogConfig`'s caps (both streams).
    """

    stdout_bytes: int = 0
    stdout_lines: int = 0
    stderr_bytes: int = 0
    stderr_lines: int = 0
    lines_cut: int = 0

    def __bool__(self) -> bool:
        return any(
            (
                self.stdout_bytes,
                self.stdout_lines,
                self.stderr_bytes,
                self.stderr_lines,
                self.lines_cut,
            )
        )


@frozen
class Result:
    """One task's outcome: how it ended, what it printed (within the caps), what it used.

    Attributes:
        name: the task's name (``TaskSpec.label``).
        pid: the program's pid in its last attempt (``None`` if it never started).
        exit_code: its exit status, or ``None`` when a signal ended it.
        signal: the signal that ended it, or ``None``.
        duration: seconds from spawn to the end of the last attempt (the tree ended).
        timed_out: the timeout ended it.
        cancelled: :meth:`Runner.cancel` ended it.
        oom_killed: the OOM killer killed a process of its cgroup (``None``: no cgroup to say).
        usage: what it used (cgroup, else rusage), or ``None``.
        stdout, stderr: the lines kept, as text (see :class:`Truncation`).
        truncated: what the caps left out.
        warnings: what hardexec could not apply or had to do (best-effort steps, leftovers
            killed, output that stayed open), one sentence each.
        attempts: how many attempts ran.
        denied_syscalls: what the policy's seccomp filter refused, syscall name → how many
            times (empty without a filter).
    """

    name: str
    pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    duration: float = 0.0
    timed_out: bool = False
    cancelled: bool = False
    oom_killed: bool | None = None
    usage: Usage | None = None
    stdout: str = ""
    stderr: str = ""
    truncated: Truncation = Truncation()
    warnings: tuple[str, ...] = ()
    attempts: int = 1
    denied_syscalls: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Exit status 0, not ended by a signal, a timeout or a cancel."""
        return self.exit_code == 0 and not (self.timed_out or self.cancelled)

    @property
    def outcome(self) -> Literal["success", "failure", "timeout", "cancelled"]:
        """``"success"``, ``"failure"``, ``"timeout"`` or ``"cancelled"`` (metrics' labels)."""
        if self.cancelled:
            return "cancelled"
        if self.timed_out:
            return "timeout"
        return "success" if self.ok else "failure"

    @property
    def returncode(self) -> int | None:
        """subprocess's convention: the exit status, or ``-N`` for signal N."""
        return -self.signal if self.signal is not None else self.exit_code

    def describe(self) -> str:
        """One line: ``'make' exited with status 2 after 1.20 s (1 attempt)``."""
        if self.exit_code is not None:
            how = f"exited with status {self.exit_code}"
        elif self.signal is not None:
            try:
                how = f"was killed by {_signal.Signals(self.signal).name}"
            except ValueError:
                how = f"was killed by signal {self.signal}"
        else:
            how = "ended"
        if self.timed_out:
            how = f"timed out and {how}"
        elif self.cancelled:
            how = f"was cancelled and {how}"
        attempts = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        return f"{self.name!r} {how} after {self.duration:.2f} s ({attempts})"

    def to_dict(self) -> dict[str, object]:
        """This result as plain, JSON-ready data, versioned (see :mod:`hardexec.serial`)."""
        from ..serial import result_to_dict

        return result_to_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> Result:
        """A result from :meth:`to_dict`'s form; strict, like :meth:`Policy.from_dict`."""
        from ..serial import result_from_dict

        return result_from_dict(data)


@frozen
class Event:
    """Something a running task did, as a sink or :meth:`Runner.stream` receives it.

    Attributes:
        kind: ``"start"`` (the program runs; ``pid`` is set), ``"line"`` (``stream``,
            ``number`` and ``text`` are set) or ``"exit"`` (``result`` is set).
        task: the task's name.
        attempt: which attempt (1 for the first).
        stream: ``"stdout"`` or ``"stderr"`` for a line.
        number: the line's number in its stream, from 1.
        text: the line, without its newline, after the line caps.
        pid: the program's pid (``"start"``).
        result: the task's result (``"exit"``).
    """

    kind: str
    task: str
    attempt: int = 1
    stream: str | None = None
    number: int = 0
    text: str = ""
    pid: int | None = None
    result: Result | None = None
