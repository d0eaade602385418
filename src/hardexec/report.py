"""The exec stage's report pipe: what the stage writes, and how the parent turns it into Python.

Same idea as CPython's ``_posixsubprocess`` error pipe: the stage inherits the write end and marks
it close-on-exec, so end-of-file without a fatal record means ``execve`` of the program succeeded.
Each record is one ASCII line::

    W <step> <errno> <arg|->     a best-effort step failed; the stage went on
    F <step> <errno> <arg|->     the stage aborted before exec; it exits right after

The third field names the capability a record is about (``keep_caps``, ``bounding_set``,
``ambient_raise``), the resource (``setrlimit``), or ``-``.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import os
import sys
import warnings
from dataclasses import dataclass

from .caps import cap_name
from .errors import StageError, StageWarning
from .policy import RLIMIT_CORE, RLIMIT_FIELDS

__all__ = ["StageReport", "caller_stacklevel", "parse_report", "read_all"]

logger = logging.getLogger("hardexec")
logger.addHandler(logging.NullHandler())  # a library: output only where the app configures it

# What the record's third field names, for details the user can act on.
_CAP_DETAIL = {
    "keep_caps": "CAP_{} is not in the launcher's permitted set, so it cannot be kept",
    "bounding_set": "dropping CAP_{} from the bounding set, the first drop that failed",
    "ambient_raise": "raising CAP_{} in the ambient set",
}
_RLIMIT_NAMES = {number: name for name, number in [*RLIMIT_FIELDS.values(), ("CORE", RLIMIT_CORE)]}


def _detail(step: str, arg: str) -> str:
    if not arg.isdecimal():
        return ""
    if step == "setrlimit":
        return "RLIMIT_" + _RLIMIT_NAMES.get(int(arg), arg)
    return _CAP_DETAIL[step].format(cap_name(int(arg))) if step in _CAP_DETAIL else ""


@dataclass(frozen=True, slots=True)
class StageReport:
    """Everything the stage said before exec: warnings, and the error that aborted it (if any)."""

    warnings: tuple[StageWarning, ...] = ()
    error: OSError | None = None

    def emit(self) -> None:
        """Issue the warnings (``warnings`` and the ``hardexec`` logger); raise the error if any.

        Warnings are attributed to the caller's line, outside hardexec, like subprocess's own.
        """
        for warning in self.warnings:
            logger.warning("exec stage: %s", warning)
            warnings.warn(warning, stacklevel=caller_stacklevel())
        if self.error is not None:
            raise self.error


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def caller_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` in the calling function that names the first frame
    outside hardexec: warnings point at the user's line, whichever API they came through."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    return level


def parse_report(
    data: bytes, program: str | bytes | os.PathLike[str] | os.PathLike[bytes]
) -> StageReport:
    """Decode the stage's records. ``program`` names the file for an ``exec`` failure."""
    found: list[StageWarning] = []
    error: OSError | None = None
    for line in data.decode("ascii", "replace").splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[0] not in ("W", "F") or not parts[2].isdecimal():
            return StageReport(tuple(found), StageError("report", errno_mod.EPROTO, repr(line)))
        kind, step, number, arg = parts[0], parts[1], int(parts[2]), parts[3]
        detail = _detail(step, arg)
        if kind == "W":
            found.append(StageWarning(step, number, detail))
        elif step == "exec":
            # Exactly what subprocess raises: FileNotFoundError, PermissionError, … with filename.
            error = OSError(number, os.strerror(number), os.fsdecode(program))
        else:
            error = StageError(step, number, detail)
    return StageReport(tuple(found), error)


def read_all(fd: int) -> bytes:
    """Read ``fd`` to end-of-file (blocking); the stage's records are tiny."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)
