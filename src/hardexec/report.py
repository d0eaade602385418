"""The exec stage's report pipe: what the stage writes, and how the parent turns it into Python.

Same idea as CPython's ``_posixsubprocess`` error pipe: the stage inherits the write end and marks
it close-on-exec, so end-of-file without a fatal record means ``execve`` of the program succeeded.
Each record is one ASCII line::

    W <step> <errno> <arg|->     a best-effort step failed; the stage went on
    F <step> <errno> <arg|->     the stage aborted before exec; it exits right after
    T trace 0 -                  (``--trace-exec``) the stage stops now for its tracer

The third field names the capability a record is about (``keep_caps``, ``bounding_set``,
``ambient_raise``), the resource (``setrlimit``), the signal (``ignore_signals``), or ``-``.
"""

from __future__ import annotations

import errno as errno_mod
import os
import sys
import warnings

from ._record import frozen
from .caps import cap_name
from .errors import StageError, StageWarning, VerifyError
from .policy import RLIMIT_CORE, RLIMIT_FIELDS, Policy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["StageReport", "caller_stacklevel", "parse_report", "read_all"]


# What the record's third field names, for details the user can act on.
_CAP_DETAIL = {
    "bounding_set": "dropping CAP_{} from the bounding set, the first drop that failed",
    "ambient_raise": "raising CAP_{} in the ambient set",
}
_RLIMIT_NAMES = {number: name for name, number in [*RLIMIT_FIELDS.values(), ("CORE", RLIMIT_CORE)]}
# The capability a step needs from the process that starts the stage (capabilities(7)).
_NEEDS = {
    "setgroups": "SETGID",
    "setresgid": "SETGID",
    "setresuid": "SETUID",
    "bounding_set": "SETPCAP",
}


def _own_sets() -> dict[str, int]:
    """This process's CapPrm/CapEff/CapAmb (read only to explain a failure)."""
    sets = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("CapPrm:", "CapEff:", "CapAmb:")):
                name, value = line.split(":")
                sets[name] = int(value, 16)
    return sets


def _keep_detail(cap: int) -> str:
    name = cap_name(cap)
    if not _own_sets().get("CapPrm", 0) >> cap & 1:
        return f"CAP_{name} is not in the launcher's permitted set"
    return (
        f"CAP_{name} is in the launcher's permitted set but not in its ambient set, so it was "
        "lost when the exec stage started (a program without file capabilities keeps only "
        "ambient ones across exec); raise it into the launcher's inheritable and ambient sets "
        f"first (setpriv --inh-caps +{name.lower()} --ambient-caps +{name.lower()}), or launch "
        "as root"
    )


# Why a confinement step fails with EPERM (the kernel refused: the launcher lacked it).
_CONFINE_NEEDS = {
    "unshare": "the launcher lacks CAP_SYS_ADMIN",
    "userns": "this host does not let the launcher create a user namespace",
    "hostname": "the launcher lacks CAP_SYS_ADMIN in the new uts namespace",
    "securebits": "the launcher lacks CAP_SETPCAP",
    "landlock": "Landlock needs no_new_privs or CAP_SYS_ADMIN",
    "seccomp": "seccomp needs no_new_privs or CAP_SYS_ADMIN",
}


def _confine_detail(step: str) -> str:
    if step in ("unshare", "hostname") and _own_sets().get("CapEff", 0) >> 21 & 1:
        # The launcher holds CAP_SYS_ADMIN, so the refusal comes from above it.
        return (
            "the kernel refused although the launcher holds CAP_SYS_ADMIN: something above "
            "hardexec (a container's seccomp filter or a security module) forbids it"
        )
    return _CONFINE_NEEDS[step]


def _trace_detail(number: int) -> str:
    """Why the stage could not be traced (verify), and what the caller can have instead."""
    if number == errno_mod.ESRCH:
        return "the launcher stopped tracing the exec stage before the program started"
    reasons = []
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = f.read().strip()
        if scope in ("2", "3"):  # 1 lets a process be traced by its parent
            reasons.append(f"Yama ptrace_scope {scope}")
    except OSError:
        pass
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            status[name] = value.strip()
    if status.get("Seccomp", "0") != "0":
        reasons.append("a seccomp filter hardexec itself runs under")
    if status.get("TracerPid", "0") != "0":
        reasons.append("hardexec is itself traced (a debugger's -f follows the stage)")
    reasons.append("a security module")
    return (
        "the kernel refused to let hardexec trace the program at its exec ("
        + ", or ".join(reasons)
        + "), so it was not started; without verify the policy is still applied, every step "
        "failing closed as the stage reports, but what the program holds after its exec is not "
        "checked"
    )


def _detail(
    kind: str,
    step: str,
    number: int,
    arg: str,
    *,
    root_program: bool,
    nnp: bool,
    describe_rule: Callable[[int], str] | None = None,
) -> str:
    if step in ("landlock_path", "landlock_rule") and arg.isdecimal() and describe_rule:
        return describe_rule(int(arg))
    if number == errno_mod.EPERM and step in _CONFINE_NEEDS:
        return _confine_detail(step)
    if step == "setrlimit" and arg.isdecimal():
        return "RLIMIT_" + _RLIMIT_NAMES.get(int(arg), arg)
    if step == "ignore_signals" and arg.isdecimal():
        return f"signal {arg}"
    if step == "die_with_parent" and number == errno_mod.ESRCH:
        return "the launcher exited before the program started"
    parts = []
    if step == "keep_caps" and arg.isdecimal():
        parts.append(_keep_detail(int(arg)))
    elif step in _CAP_DETAIL and arg.isdecimal():
        parts.append(_CAP_DETAIL[step].format(cap_name(int(arg))))
    if number == errno_mod.EPERM and step in _NEEDS:
        # The kernel refused: whatever the launcher holds, it did not include this.
        parts.append(f"the launcher lacks CAP_{_NEEDS[step]}")
    if step == "bounding_set" and kind == "F" and root_program:
        parts.append("no CAP_SETPCAP: root would regain every capability at exec")
    elif step == "bounding_set" and kind == "W" and not nnp:
        parts.append(
            "set-user-ID and file-capability programs it runs can regain what stays in the "
            "bounding set; no_new_privs prevents that"
        )
    return "; ".join(parts)


def _root_program(policy: Policy | None) -> bool:
    """Whether the program runs as uid 0 with execve's root rule in force (as the stage sees)."""
    if policy is None or policy.security.no_new_privs:
        return False
    uid = policy.security.identity.uid
    if uid is not None:
        return uid == 0
    ruid, euid, _ = os.getresuid()
    return ruid == 0 or euid == 0


@frozen
class StageReport:
    """Everything the stage said before exec: warnings, and the error that aborted it (if any)."""

    warnings: tuple[StageWarning, ...] = ()
    error: OSError | None = None

    def emit(self, warn: bool = True) -> None:
        """Issue the warnings (``warnings`` and the ``hardexec`` logger); raise the error if any.

        Warnings are attributed to the caller's line, outside hardexec, like subprocess's own.
        ``warn=False`` logs them only (a caller that reports them itself: the runner's results).
        """
        if self.warnings:
            logger = hardexec_logger()
        for warning in self.warnings:
            logger.warning("exec stage: %s", warning)
            if warn:
                warnings.warn(warning, stacklevel=caller_stacklevel())
        if self.error is not None:
            raise self.error


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def hardexec_logger():  # -> logging.Logger
    """The ``hardexec`` logger, imported on first use (logging costs start-up time)."""
    import logging

    logger = logging.getLogger("hardexec")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())  # a library: output only where the app says
    return logger


def caller_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` in the calling function that names the first frame
    outside hardexec: warnings point at the user's line, whichever API they came through."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    return level


def parse_report(
    data: bytes,
    program: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    policy: Policy | None = None,
    describe_rule: Callable[[int], str] | None = None,
) -> StageReport:
    """Decode the stage's records. ``program`` names the file for an ``exec`` failure;
    ``policy`` (the one applied) lets the details say why a step failed; ``describe_rule``
    names the Landlock rule a record's index is about."""
    found: list[StageWarning] = []
    error: OSError | None = None
    for line in data.decode("ascii", "replace").splitlines():
        parts = line.split()
        if parts == ["T", "trace", "0", "-"]:
            continue  # the stage stopped for its tracer (verify): nothing to report
        if len(parts) != 4 or parts[0] not in ("W", "F") or not parts[2].isdecimal():
            return StageReport(tuple(found), StageError("report", errno_mod.EPROTO, repr(line)))
        kind, step, number, arg = parts[0], parts[1], int(parts[2]), parts[3]
        nnp = policy is not None and policy.security.no_new_privs
        detail = (
            _trace_detail(number)
            if step == "trace"
            else _detail(
                kind,
                step,
                number,
                arg,
                root_program=_root_program(policy),
                nnp=nnp,
                describe_rule=describe_rule,
            )
        )
        if kind == "W":
            found.append(StageWarning(step, number, detail))
        elif step == "exec":
            # Exactly what subprocess raises: FileNotFoundError, PermissionError, … with filename.
            error = OSError(number, os.strerror(number), os.fsdecode(program))
        elif step == "trace":
            error = VerifyError(step, number, detail)
        else:
            error = StageError(step, number, detail)
    return StageReport(tuple(found), error)


def read_all(fd: int) -> bytes:
    """Read ``fd`` to end-of-file (blocking); the stage's records are tiny."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)
