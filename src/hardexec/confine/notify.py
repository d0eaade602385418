"""The parent's side of seccomp user notification: answer the program's denied syscalls, and
count them, so a run can say which syscalls were refused and how often.

The stage installs its filter with a listener and sends the listener's fd over a socket (the
filter lets exactly that ``sendmsg`` through). A thread here receives it, then answers every
notification: the syscall never runs; the program gets the rule's errno, or is killed (a
``kill`` rule). A syscall is counted before it is answered, so once the program has seen the
answer — and so once it has exited — the count includes it. The thread ends by itself when
the last process using the filter is gone (the listener then reports a hang-up), or when the
stage ends without sending a listener. If this process dies first, the kernel answers every
later notification with ENOSYS: the syscall is refused all the same.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .seccomp import Filter

__all__ = ["Listener"]

# linux/seccomp.h: SECCOMP_IOCTL_NOTIF_RECV/SEND/ID_VALID (_IOWR/_IOW on '!', the structs'
# sizes: seccomp_notif 80 bytes, seccomp_notif_resp 24).
_RECV, _SEND, _ID_VALID = 0xC0502100, 0xC0182101, 0x40082102
_NOTIF = struct.Struct("=QIIiIQ6Q")  # id, pid, flags, data.nr, data.arch, data.ip, args
_RESP = struct.Struct("=QqiI")  # id, val, error, flags


class Listener:
    """Answers and counts one spawn's denied syscalls (see the module docstring)."""

    def __init__(self, sock: socket.socket, filt: Filter) -> None:
        self._sock = sock
        self._filter = filt
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="hardexec-seccomp", daemon=True)

    def start(self) -> None:
        """Start answering (after the stage was spawned with the socket's other end)."""
        self._thread.start()

    def close(self) -> None:
        """Close the socket of a listener that was never started (the spawn failed)."""
        self._sock.close()

    def denied(self) -> dict[str, int]:
        """The syscalls refused so far: name → how many times."""
        with self._lock:
            return dict(self._counts)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (it does once no process uses the filter)."""
        self._thread.join(timeout)

    def _run(self) -> None:
        listener = -1
        try:
            listener = self._receive()
            if listener >= 0:
                self._serve(listener)
        finally:
            self._sock.close()
            if listener >= 0:
                os.close(listener)

    def _receive(self) -> int:
        """The listener fd the stage sends, or -1 when it ended without sending one."""
        fds = array.array("i")
        try:
            _, ancillary, _, _ = self._sock.recvmsg(1, socket.CMSG_SPACE(fds.itemsize))
        except OSError:
            return -1
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        for extra in fds[1:]:  # never more than one from the stage; never leak one either
            os.close(extra)
        return fds[0] if fds else -1

    def _serve(self, listener: int) -> None:
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        buf = bytearray(_NOTIF.size)
        while True:
            ready = poller.poll()
            events = ready[0][1] if ready else 0
            if events & select.POLLIN:
                buf[:] = bytes(_NOTIF.size)  # the kernel wants it zeroed
                try:
                    fcntl.ioctl(listener, _RECV, buf, True)
                except OSError as err:
                    if err.errno in (errno.ENOENT, errno.EINTR):  # the caller died meanwhile
                        continue
                    return
                self._answer(listener, buf)
            elif events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return  # no process uses the filter any more

    def _answer(self, listener: int, buf: bytearray) -> None:
        notif_id, pid, _, nr, _, _, *_ = _NOTIF.unpack(buf)
        filt = self._filter
        verdict = filt.verdicts.get(nr, filt.default)
        name = filt.names.get(nr, f"syscall {nr}")
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
        err = verdict.errno if verdict is not None and not verdict.kill else errno.EPERM
        if verdict is not None and verdict.kill:
            _kill(listener, notif_id, pid)
        with contextlib.suppress(OSError):  # ENOENT: the caller is gone (killed, or a signal)
            fcntl.ioctl(listener, _SEND, _RESP.pack(notif_id, 0, -err, 0))


def _kill(listener: int, notif_id: int, pid: int) -> None:
    """SIGKILL the process whose syscall ``notif_id`` is, never a reuse of its pid.

    While the notification is pending its thread is alive and blocked, so its id cannot be
    reused; ID_VALID after taking a pidfd (or just before kill(2), for a thread other than
    the leader, which pidfd_open refuses before Linux 6.9) proves it still is.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = -1
    try:
        fcntl.ioctl(listener, _ID_VALID, struct.pack("=Q", notif_id))
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)  # any thread's SIGKILL ends the whole process
    except OSError:
        pass  # no longer pending: it is gone already
    finally:
        if pidfd >= 0:
            os.close(pidfd)
