"""Verified runs: the program stopped at its exec, its credentials compared with the policy
before it has run one instruction of its own (``verify=True``, ``hardexec run --verify``).

The steps of a verified spawn:

1. The exec stage runs with ``--trace-exec`` (see :mod:`hardexec.plan`): its first step is
   ``PTRACE_TRACEME``, so the thread that spawned it becomes its tracer; then it stops itself.
   At that stop the tracer sets ``PTRACE_O_EXITKILL`` (if the tracer dies from then on, the
   kernel kills the stage or the program, whichever runs) and ``PTRACE_O_TRACEEXEC``, and
   continues it. A signal that reaches the stage before its exec stops it too: it is passed
   on, and a stop (SIGSTOP, ^Z) is given back to the program once it is detached.
2. The stage applies the policy and calls ``execve``. The kernel loads the program and, before
   returning to it, stops it (``PTRACE_EVENT_EXEC``): the program's credentials are final and
   not one instruction of it has run.
3. The tracer reads ``/proc/PID/status`` and compares it with the policy (:func:`differences`):

   - with ``drop_all_caps``: each of CapInh, CapPrm, CapEff, CapBnd and CapAmb within
     ``keep_caps``;
   - ``NoNewPrivs: 1`` when the policy sets ``no_new_privs`` or its confinement implies it;
   - ``Uid`` and ``Gid``: all four fields (real, effective, saved, filesystem) the policy's
     user and group when it sets them, else among the launcher's own ids (a set-user-ID or
     set-group-ID file would have changed them);
   - ``Groups``: exactly the policy's supplementary groups, when it sets them;
   - ``Seccomp: 2`` when the policy filters syscalls.

4. Conforming: ``PTRACE_DETACH``, and the program runs; signals sent to it while it was
   stopped stay pending and are delivered as usual. Beyond the policy: SIGKILL (which ends it
   before its first instruction), reaped, and :class:`~hardexec.errors.VerifyError` naming
   each difference.

The tracer is the spawning thread, as the kernel ties tracing to a thread: ``Popen`` checks
before it returns, asyncio in the event loop's thread. The exec under a tracer is the exec the
program would have had untraced when the launcher holds CAP_SYS_PTRACE (root does): the kernel
records the stage's credentials at ``PTRACE_TRACEME`` as the tracer's, which is why that step
comes before the stage drops any. A launcher without CAP_SYS_PTRACE gets the kernel's rule for
traced execs instead: set-user-ID bits and file capabilities grant nothing beyond what the
program already held. Where the kernel refuses ``PTRACE_TRACEME`` (Yama ``ptrace_scope`` 3, a
security module, a seccomp filter the launcher runs under, a launcher that is itself traced
with ``-f``), the run is refused (``VerifyError``, step ``trace``); it never runs unverified.
Not with a pid namespace: there hardexec's relay, not the launcher, is the program's parent.

The guarantee: a verified program that runs at all held, at its exec, nothing beyond what the
checks above see in the policy. It covers that exec only: what the program later execs is not
checked (without ``no_new_privs`` a set-user-ID or file-capability program it runs can gain
what the bounding set allows), and what ``/proc/PID/status`` does not show (Landlock, rlimits,
the cgroup) rests on the stage's steps, which fail closed as always. The cost is one stop and
one detach more per spawn (``bench/spawn.py``: about 0.1 ms).

ctypes is imported only here, and this module only for a verified spawn.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import threading
import time

from .caps import CapSet
from .errors import PolicyError, VerifyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from .confine.compile import Confined
    from .errors import StageWarning
    from .policy import Policy

__all__ = ["Tracee", "check_verifiable", "differences", "refusal"]

PTRACE_CONT, PTRACE_KILL, PTRACE_DETACH = 7, 8, 17
PTRACE_SETOPTIONS, PTRACE_GETSIGINFO = 0x4200, 0x4202
PTRACE_O_TRACEEXEC, PTRACE_O_EXITKILL = 0x10, 0x100000
PTRACE_EVENT_EXEC = 4
SI_USER, SI_TKILL = 0, -6
_WALL = 0x40000000  # __WALL: the stage is a traced child whatever its exit signal
# A tracing stop with no news of it for this long was taken by another waiter (s).
_STOLEN_AFTER = 0.2
_EXEC_STOP = signal.SIGTRAP | PTRACE_EVENT_EXEC << 8  # the si_code of the exec event's stop
_ENDED = (os.CLD_EXITED, os.CLD_KILLED, os.CLD_DUMPED)
CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")

_libc = None


_UNION = 16 if ctypes.sizeof(ctypes.c_void_p) == 8 else 12  # where siginfo_t's union starts


class _SigInfo(ctypes.Structure):
    # siginfo_t (128 bytes) as far as kill(2) and the ptrace stops fill it: si_pid and si_uid
    # open the union, which is 8-aligned on 64-bit (after padding), at byte 12 on 32-bit.
    _fields_ = [
        ("signo", ctypes.c_int),
        ("errno", ctypes.c_int),
        ("code", ctypes.c_int),
        ("_pad", ctypes.c_byte * (_UNION - 12)),
        ("pid", ctypes.c_int),
        ("uid", ctypes.c_uint),
        ("_rest", ctypes.c_byte * (128 - _UNION - 8)),
    ]


def _ptrace(request: int, pid: int, data: int | ctypes.Array | _SigInfo = 0) -> int:
    """ptrace(2); returns 0 or the errno."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        _libc.ptrace.restype = ctypes.c_long
    arg = ctypes.byref(data) if isinstance(data, ctypes.Structure) else data
    if _libc.ptrace(request, pid, None, arg) < 0:
        return ctypes.get_errno()
    return 0


def check_verifiable(policy: Policy) -> None:
    """Refuse what cannot be verified, before anything is made (a pid namespace)."""
    confinement = policy.confinement
    if confinement is not None and "pid" in (confinement.namespaces or ()):
        raise PolicyError(
            "verify cannot be combined with confinement.namespaces 'pid': in a pid namespace "
            "hardexec's relay is the program's parent, so the launcher cannot stop the program "
            "at its exec to check it; drop one of them"
        )


class Tracee:
    """The exec stage, traced by this thread, followed up to the program's exec.

    Attributes:
        pid: the stage's (then the program's) pid.
        at_exec: stopped at the program's exec: check it, then :meth:`release` or kill it.
        ended: the stage ended without exec (its report says why); it is left unreaped.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ready = False  # the stage's own stop was met: EXITKILL and TRACEEXEC are set
        self.at_exec = False
        self.ended = False
        self._stop = 0  # a stop signal the stage got, given back to the program after detach
        self._unseen_since: float | None = None  # in a tracing stop nobody told us of, since
        self.taken = False  # its stop was taken by another waiter: it was killed

    def follow(self, block: bool = True, until_ready: bool = False) -> bool:
        """Handle the stage's stops until its exec or its end (``until_ready``: or its own
        stop, once met); without ``block``, only what has happened so far. Returns whether it
        is at its exec or has ended.

        Nothing is reaped: an ended stage is still the caller's to wait for.
        """
        # A stop that another waiter of this process takes (a thread or a SIGCHLD handler
        # calling waitpid(-1)) is never reported again: a blocking wait would last for ever.
        # So a watchdog thread looks at each blocked tracee and ends one in that state; the
        # polling callers (asyncio) look themselves at each poll.
        flags = os.WEXITED | os.WSTOPPED | os.WNOWAIT | _WALL | (0 if block else os.WNOHANG)
        if block:
            _watchdog().watch(self)
        try:
            while not (self.at_exec or self.ended or (until_ready and self.ready)):
                try:
                    info = os.waitid(os.P_PID, self.pid, flags)
                except ChildProcessError:  # SIGCHLD ignored here: the kernel reaped it already
                    self.ended = True
                    break
                if info is None:  # WNOHANG: still running, or stopped with the news taken
                    if self.stolen():
                        self.kill()
                        self.taken = True
                    else:
                        return False
                elif info.si_code in _ENDED:
                    self.ended = True
                else:
                    self._stopped(info.si_status & 0xFF)
        finally:
            if block:
                _watchdog().forget(self)
        if self.taken:
            raise VerifyError(
                "trace",
                errno.ECHILD,
                "another waiter in this process (a thread or a SIGCHLD handler calling "
                "waitpid(-1)) took the stop hardexec waits for, so the program cannot be "
                "checked; it was killed before it ran",
                (),
            )
        return True

    def stolen(self) -> bool:
        """Whether the stage is in a tracing stop whose news is gone (taken by another waiter),
        twice in a row, some time apart. Read first, then asked: while the tracer handles a
        stop its news stays (it waits with WNOWAIT) until the stage goes on."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            news = os.waitid(
                os.P_PID, self.pid, os.WEXITED | os.WSTOPPED | os.WNOWAIT | _WALL | os.WNOHANG
            )
        except (OSError, IndexError):
            return False
        if state != "t" or news is not None:
            self._unseen_since = None
            return False
        now = time.monotonic()
        if self._unseen_since is None:
            self._unseen_since = now
            return False
        return now - self._unseen_since >= _STOLEN_AFTER

    def _stopped(self, sig: int) -> None:
        info = _SigInfo()
        if _ptrace(PTRACE_GETSIGINFO, self.pid, info) == errno.EINVAL:
            # A group-stop (a stop signal passed on below): keep it for the program, which is
            # given it once detached; until then the stage goes on.
            self._stop = sig
            self._resume(0)
        elif info.signo == signal.SIGTRAP and info.code == _EXEC_STOP:
            self.at_exec = True
        elif (
            not self.ready
            and info.signo == signal.SIGSTOP
            and info.pid == self.pid
            and info.code in (SI_USER, SI_TKILL)
        ):
            err = _ptrace(PTRACE_SETOPTIONS, self.pid, PTRACE_O_EXITKILL | PTRACE_O_TRACEEXEC)
            if err and err != errno.ESRCH:  # ESRCH: killed meanwhile; waitid will say so
                raise OSError(err, f"ptrace(PTRACE_SETOPTIONS): {os.strerror(err)}")
            self.ready = True
            self._resume(0)
        else:  # a signal for the stage: pass it on
            if info.signo == signal.SIGCONT:
                self._stop = 0
            self._resume(info.signo)

    def _resume(self, sig: int) -> None:
        err = _ptrace(PTRACE_CONT, self.pid, sig)
        if err and err != errno.ESRCH:
            raise OSError(err, f"ptrace(PTRACE_CONT): {os.strerror(err)}")

    def status(self) -> dict[str, str]:
        """The program's ``/proc/PID/status`` as name → value (at its exec stop)."""
        with open(f"/proc/{self.pid}/status") as f:
            return dict(line.rstrip("\n").partition(":\t")[::2] for line in f if ":\t" in line)

    def kill(self) -> None:
        """SIGKILL the stage or the program: as its tracer (PTRACE_KILL, which since Linux 5.19
        sends SIGKILL whatever the tracee's ids), so a launcher without CAP_KILL can end a
        program that switched to another user; else kill(2)."""
        if _ptrace(PTRACE_KILL, self.pid) == 0:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def release(self) -> None:
        """Let the checked program run: detach, and give it a stop the stage was sent."""
        err = _ptrace(PTRACE_DETACH, self.pid, 0)
        if err and err != errno.ESRCH:
            raise OSError(err, f"ptrace(PTRACE_DETACH): {os.strerror(err)}")
        if self._stop:
            os.kill(self.pid, self._stop)


class _Watchdog(threading.Thread):
    """One thread a process, started at the first verified spawn: every few tenths of a
    second it looks at the tracees whose tracer is blocked waiting, and kills one whose stop
    was taken by another waiter (its tracer's wait then returns, and refuses the run)."""

    def __init__(self) -> None:
        super().__init__(name="hardexec-verify-watchdog", daemon=True)
        self._lock = threading.Lock()
        self._tracees: set[Tracee] = set()

    def watch(self, tracee: Tracee) -> None:
        with self._lock:
            self._tracees.add(tracee)

    def forget(self, tracee: Tracee) -> None:
        with self._lock:
            self._tracees.discard(tracee)

    def run(self) -> None:
        while True:
            time.sleep(_STOLEN_AFTER / 2)
            with self._lock:
                tracees = list(self._tracees)
            for tracee in tracees:
                if tracee.stolen():
                    tracee.taken = True
                    with contextlib.suppress(OSError):  # not the tracer thread: kill(2)
                        os.kill(tracee.pid, signal.SIGKILL)


_the_watchdog: _Watchdog | None = None
_watchdog_lock = threading.Lock()


def _watchdog() -> _Watchdog:
    global _the_watchdog
    with _watchdog_lock:
        if _the_watchdog is None:
            _the_watchdog = _Watchdog()
            _the_watchdog.start()
        return _the_watchdog


def _forget_watchdog() -> None:
    # A forked child has no watchdog thread (only the forking one survives fork).
    global _the_watchdog, _watchdog_lock
    _the_watchdog, _watchdog_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_watchdog)


def differences(status: Mapping[str, str], policy: Policy, confined: Confined | None) -> list[str]:
    """What the program holds beyond ``policy``, one phrase each (empty: it conforms).

    ``status`` is its ``/proc/PID/status``; ``confined`` the spawn's confinement (whether it
    implies no_new_privs, whether it filters syscalls).
    """
    found = []
    sec = policy.security
    if sec.drop_all_caps:
        keep = sec.keep_caps if isinstance(sec.keep_caps, CapSet) else CapSet()
        beyond = []
        for name in CAP_SETS:
            excess = CapSet.from_hex(status.get(name, "0")) - keep
            if excess:
                beyond.append(f"{name} {excess.to_hex()} ({_names(excess)})")
        if beyond:
            found.append(
                f"the program holds {', '.join(beyond)} beyond the policy ({_names(keep)})"
            )
    if (sec.no_new_privs or (confined is not None and confined.implied_nnp)) and status.get(
        "NoNewPrivs"
    ) != "1":
        found.append(f"NoNewPrivs is {status.get('NoNewPrivs', '?')}, the policy's is 1")
    ident = sec.identity
    for field, wanted, own in (
        ("Uid", ident.uid, os.getresuid()),
        ("Gid", ident.gid, os.getresgid()),
    ):
        ids = status.get(field, "").split()
        allowed = {wanted} if wanted is not None else set(own)
        if len(ids) != 4 or any(int(i) not in allowed for i in ids):
            whose = f"the policy's {wanted}" if wanted is not None else "the launcher's own"
            found.append(f"{field} is {' '.join(ids) or '?'}, not {whose}")
    if ident.groups is not None:
        groups = {int(g) for g in status.get("Groups", "").split()}
        if groups != set(ident.groups):
            held = " ".join(map(str, sorted(groups))) or "none"
            want = " ".join(map(str, sorted(set(ident.groups)))) or "none"
            found.append(f"Groups are {held}, the policy's are {want}")
    if confined is not None and confined.filter is not None and status.get("Seccomp") != "2":
        found.append(f"Seccomp is {status.get('Seccomp', '?')}, not 2 (the policy's filter)")
    return found


def _names(caps: CapSet, most: int = 6) -> str:
    names = caps.names()
    if not names:
        return "none"
    if len(names) > most:
        return ", ".join(names[: most - 1]) + f" and {len(names) - most + 1} more"
    return ", ".join(names)


def refusal(found: list[str], warnings: tuple[StageWarning, ...] = ()) -> VerifyError:
    """The error for a program found beyond its policy (and killed); ``warnings`` are the
    stage's, one of which may say why (a bounding set the launcher could not empty)."""
    detail = "; ".join(found) + "; it was killed before its first instruction"
    if any(w.step == "bounding_set" and w.errno == errno.EPERM for w in warnings):
        detail += " (CapBnd: the launcher lacks CAP_SETPCAP, so the stage could not empty it)"
    return VerifyError("verify", errno.EPERM, detail, tuple(found))
