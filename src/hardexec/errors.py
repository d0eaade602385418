"""hardexec's one error hierarchy.

Every exception hardexec raises on its own account derives from :class:`HardexecError`.
Two of them also derive from the built-in class a caller would already catch:
a bad policy is a :class:`ValueError`, and an aborted exec stage is an :class:`OSError`
(the way :class:`subprocess.Popen` raises ``FileNotFoundError`` for a missing program).
"""

from __future__ import annotations

import os

__all__ = [
    "CeilingError",
    "CgroupError",
    "SpawnFailed",
    "HardexecError",
    "PolicyError",
    "StageError",
    "StageWarning",
    "TaskFailed",
    "VerifyError",
]


class HardexecError(Exception):
    """Base class of every error hardexec raises itself."""


class PolicyError(HardexecError, ValueError):
    """A policy (or an option that builds one) is invalid.

    Raised before anything is spawned. The message names the field and the value.
    """


class CeilingError(PolicyError):
    """A submitted task asks for more than the worker's ceiling allows (see
    :mod:`hardexec.ceiling`); it is not run.

    Attributes:
        violations: one line per field that asks for more, such as
            ``rlimits.max_open_files: 4096 is above the ceiling's 1024``.

    ``str(err)`` is ``the task asks for more than this worker allows: `` and the violations
    joined by ``; ``. Built from that message alone (``CeilingError(message)``, as Celery
    rebuilds an exception from its type and args on the client's side), ``violations`` is
    read back from it.
    """

    PREFIX = "the task asks for more than this worker allows: "

    def __init__(self, message: str, *, violations: tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        if violations is None:
            text = str(message)
            body = text[len(self.PREFIX) :] if text.startswith(self.PREFIX) else text
            violations = tuple(body.split("; "))
        self.violations = tuple(violations)

    # Pickling needs nothing of its own: the default keeps args (the message) and __dict__
    # (the violations as they were, even one holding "; ").


class SpawnFailed(HardexecError):
    """A task's program could not be started where it was sent (a fleet worker): the spawn
    error's whole message, as text, so that it survives the trip back (Celery rebuilds an
    exception from its type and arguments, and an ``OSError``'s file name is not one).

    Attributes:
        errno: the spawn error's errno (``ENOENT``: not found, ``EACCES``: not executable), or
            ``None``.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message, errno)
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0])


class StageError(HardexecError, OSError):
    """The exec stage aborted before ``execve`` of the program.

    Attributes:
        step: the stage step that failed (``"capset"``, ``"setresuid"``, ``"no_new_privs"``, …).
        errno: the ``errno`` value the kernel returned for that step.
        detail: extra context (for example which capability was missing), or ``""``.

    ``str(err)`` reads like ``capset failed: [Errno 1] Operation not permitted``.
    """

    def __init__(self, step: str, errno: int, detail: str = "") -> None:
        strerror = os.strerror(errno) if errno else "failed"
        super().__init__(errno, strerror)
        self.step = step
        self.detail = detail

    def __str__(self) -> str:
        return describe(self.step, self.errno, self.detail)

    def __repr__(self) -> str:
        return f"StageError(step={self.step!r}, errno={self.errno!r}, detail={self.detail!r})"

    def __reduce__(self):  # keep step/detail when pickled (multiprocessing, concurrent.futures)
        return (type(self), (self.step, self.errno, self.detail))


class VerifyError(StageError):
    """A verified run (``verify=True``, ``--verify``) was refused: the program held more than
    the policy allows at its exec, or it could not be checked.

    Attributes:
        step: ``"verify"`` when the check found a difference (the program was killed before
            its first instruction), ``"trace"`` when the kernel would not let hardexec stop
            the program at its exec (it was never started).
        errno: ``EPERM`` for a difference; the kernel's errno for ``trace``.
        detail: what was wrong, in words.
        differences: each field of ``/proc/PID/status`` that went beyond the policy, in
            words (``CapPrm 0000000000002000 (NET_RAW)``); empty for ``trace``.

    ``str(err)`` reads like ``verify: the program holds CapPrm 0000000000002000 (NET_RAW)
    beyond the policy (none); it was killed before its first instruction``.
    """

    def __init__(
        self, step: str, errno: int, detail: str = "", differences: tuple[str, ...] = ()
    ) -> None:
        super().__init__(step, errno, detail)
        self.differences = tuple(differences)

    def __str__(self) -> str:
        if self.step == "verify":
            return f"verify: {self.detail}"
        return super().__str__()

    def __repr__(self) -> str:
        return (
            f"VerifyError(step={self.step!r}, errno={self.errno!r}, detail={self.detail!r}, "
            f"differences={self.differences!r})"
        )

    def __reduce__(self):  # keep the differences when pickled
        return (type(self), (self.step, self.errno, self.detail, self.differences))


class CgroupError(HardexecError, OSError):
    """The program's cgroup could not be set up (raised before spawn when it is required).

    ``str(err)`` names the group and the kernel rule: ``[Errno 16] cannot enable memory for
    groups under /sys/fs/cgroup/x: it holds processes itself, …``.
    """


class TaskFailed(HardexecError):
    """A task run with ``fail_on_non_zero`` did not exit 0 (non-zero status, signal, timeout).

    Attributes:
        result: the task's :class:`hardexec.runner.Result`, output and all.
    """

    def __init__(self, result: object) -> None:
        super().__init__(result)
        self.result = result

    def __str__(self) -> str:
        return f"task {self.result.describe()}"  # type: ignore[attr-defined]

    def __reduce__(self):  # the result travels with it (multiprocessing, a queue)
        return (type(self), (self.result,))


class StageWarning(UserWarning):
    """A best-effort step of the exec stage failed; the program was started anyway.

    Attributes mirror :class:`StageError`: ``step``, ``errno``, ``detail``; ``cause`` is the
    kernel's reason alone where ``detail`` wraps it in more words (the cgroup warnings), else "".
    """

    def __init__(self, step: str, errno: int, detail: str = "", cause: str = "") -> None:
        self.step = step
        self.errno = errno
        self.detail = detail
        self.cause = cause
        super().__init__(describe(step, errno, detail))


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters; any value will do (an int too
    large for ``repr`` is described by its size)."""
    try:
        text = repr(value)
    except ValueError:  # beyond sys.get_int_max_str_digits()
        return f"<an integer of {value.bit_length()} bits>"  # type: ignore[attr-defined]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(step: str, errno: int, detail: str = "") -> str:
    """One line for a failed stage step: ``capset failed: [Errno 1] Operation not permitted``."""
    text = f"{step} failed: [Errno {errno}] {os.strerror(errno)}"
    return f"{text} ({detail})" if detail else text
