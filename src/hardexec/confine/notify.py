"""The parent's side of seccomp user notification: answer the program's denied syscalls, and
count them, so a run can say which syscalls were refused and how often.

The stage installs its filter with a listener and sends the listener's fd over a socket (the
filter lets exactly that ``sendmsg`` through). One thread of this process (the hub, started
on first use) receives it and then answers every notification of every spawn: the syscall
never runs; the program gets the rule's errno, or is killed (a ``kill`` rule). A syscall is
counted before it is answered, so once the program has seen the answer (and so once it has
exited) the count includes it. A listener is done when it hangs up (no process uses the
filter any more: the hub then closes it, just after the program is reaped), or when the stage
ends without sending one. If this process dies first, the
kernel answers every later notification with ENOSYS: the syscall is refused all the same.

One thread for all, not one per spawn: starting a thread costs more than the rest of a
confined spawn's Python work together, and a runner with many tasks would hold as many.

With a watch filter (:class:`~hardexec.confine.seccomp.WatchFilter`, ``hardexec learn``) every
syscall is notified: the hub records its name (and, for ``socket``/``socketpair``, the address
family in its first argument; for ``clone``, whether its flags ask for a new namespace; for
``connect``, ``bind`` and ``sendto``, what kind of address they name, read from the program's
memory through ``/proc/PID/mem``) and answers ``SECCOMP_USER_NOTIF_FLAG_CONTINUE``, so the call
runs as if no filter were there; a call the watch filter's own rules refuse is answered and
counted as a denial, as above. CONTINUE is for observing only: the kernel documents that a
supervisor cannot make a security decision with it (the program may change the arguments'
memory before the call runs), and none is made here.
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
import sys
import threading

from .groups import CLONE_NEW_FLAGS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .seccomp import Filter

__all__ = ["Listener", "address_kind", "pending", "start_hub"]

# linux/seccomp.h: SECCOMP_IOCTL_NOTIF_RECV/SEND/ID_VALID (_IOWR/_IOW on '!', the structs'
# sizes: seccomp_notif 80 bytes, seccomp_notif_resp 24).
_RECV, _SEND, _ID_VALID = 0xC0502100, 0xC0182101, 0x40082102
_NOTIF = struct.Struct("=QIIiIQ6Q")  # id, pid, flags, data.nr, data.arch, data.ip, args
_RESP = struct.Struct("=QqiI")  # id, val, error, flags
_ENDED = select.EPOLLHUP | select.EPOLLERR
_FLAG_CONTINUE = 1  # SECCOMP_USER_NOTIF_FLAG_CONTINUE: let the call run (Linux 5.5)
_SOCKET_CALLS = frozenset({"socket", "socketpair"})  # the family is their first argument
# Calls naming a peer or a local address: (argument of the sockaddr pointer, of its length).
_ADDRESS_CALLS = {"connect": (1, 2), "bind": (1, 2), "sendto": (4, 5)}
_MAX_ADDRESS = 128  # sizeof(struct sockaddr_storage)


class Listener:
    """Answers and counts one spawn's denied syscalls (see the module docstring)."""

    def __init__(self, sock: socket.socket, filt: Filter) -> None:
        self._sock: socket.socket | None = sock
        self._filter = filt
        self._counts: dict[str, int] = {}
        self._seen: dict[str, int] = {}  # watch: what ran
        self._families: dict[int, int] = {}  # watch: socket families made
        self._new_namespaces = 0  # watch: clones that asked for a new namespace
        self._addresses: dict[str, int] = {}  # watch: kinds of address connected, bound, sent to
        self._lock = threading.Lock()
        self._fd = -1  # the listener, once received

    def start(self) -> None:
        """Start answering: the hub receives the listener as soon as the stage sends it (call
        once the stage is spawned with the socket's other end)."""
        sock = self._sock
        assert sock is not None
        _hub().add_socket(sock.fileno(), self)

    def _receive(self) -> int:
        """The listener fd the stage sent, or -1 when it ended without sending one (the hub's
        thread, once the socket is readable)."""
        sock, self._sock = self._sock, None
        assert sock is not None
        fds = array.array("i")
        try:
            # Close-on-exec from the start: another child of this process must never inherit a
            # listener (it could answer a program's notifications, letting its syscalls run).
            _, ancillary, _, _ = sock.recvmsg(
                1, socket.CMSG_SPACE(fds.itemsize), socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
            )
        except OSError:
            ancillary = []
        finally:
            sock.close()
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        for extra in fds[1:]:  # never more than one from the stage; never leak one either
            os.close(extra)
        self._fd = fds[0] if fds else -1
        return self._fd

    def close(self) -> None:
        """Close the socket of a listener that was never started (the spawn failed)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def denied(self) -> dict[str, int]:
        """The syscalls refused so far: name → how many times."""
        with self._lock:
            return dict(self._counts)

    def seen(self) -> dict[str, int]:
        """With a watch filter: the syscalls that ran so far, name → how many times (a number
        without a name in this host's table is ``"syscall N"``). Empty otherwise."""
        with self._lock:
            return dict(self._seen)

    def families(self) -> dict[int, int]:
        """With a watch filter: the address families of the sockets made so far (``socket``
        and ``socketpair``), family number → how many calls. Empty otherwise."""
        with self._lock:
            return dict(self._families)

    def addresses(self) -> dict[str, int]:
        """With a watch filter: the kinds of address given to ``connect``, ``bind`` and
        ``sendto`` (see :func:`address_kind`; ``"unreadable"`` when the program's memory could
        not be read), kind → how many calls. Empty otherwise."""
        with self._lock:
            return dict(self._addresses)

    def new_namespaces(self) -> int:
        """With a watch filter: how many ``clone`` calls that ran asked for a new namespace
        (a ``CLONE_NEW*`` flag in their first argument). 0 otherwise."""
        with self._lock:
            return self._new_namespaces

    # --- called by the hub's thread only --------------------------------------------------

    def _answer(self) -> None:
        buf = bytearray(_NOTIF.size)  # the kernel wants it zeroed
        try:
            fcntl.ioctl(self._fd, _RECV, buf, True)
        except OSError:
            return  # ENOENT: the caller died meanwhile; anything else: the hang-up follows
        notif_id, pid, _, nr, _, _, *args = _NOTIF.unpack(buf)
        filt = self._filter
        name = filt.names.get(nr, f"syscall {nr}")
        if filt.watch:
            verdict = filt.judge(nr, args)
            if verdict is None:
                self._continue(notif_id, pid, name, args)
                return
        else:
            verdict = filt.verdicts.get(nr, filt.default)
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + 1
        kill = verdict is not None and verdict.kill
        err = verdict.errno if verdict is not None and not kill else errno.EPERM
        if kill:
            _kill(self._fd, notif_id, pid)
        with contextlib.suppress(OSError):  # ENOENT: the caller is gone (killed, or a signal)
            fcntl.ioctl(self._fd, _SEND, _RESP.pack(notif_id, 0, -err, 0))

    def _continue(self, notif_id: int, pid: int, name: str, args: list[int]) -> None:
        """Record a watched call, then let it run."""
        kind = None
        where = _ADDRESS_CALLS.get(name)
        if where is not None and args[where[0]]:
            data = self._read(notif_id, pid, args[where[0]], args[where[1]] & 0xFFFFFFFF)
            kind = "unreadable" if data is None else address_kind(data)
        with self._lock:
            if kind is not None:
                self._addresses[kind] = self._addresses.get(kind, 0) + 1
            self._seen[name] = self._seen.get(name, 0) + 1
            if name in _SOCKET_CALLS:
                family = args[0] & 0xFFFFFFFF  # an int argument: its low 32 bits
                self._families[family] = self._families.get(family, 0) + 1
            elif name == "clone" and args[0] & CLONE_NEW_FLAGS:
                self._new_namespaces += 1
        with contextlib.suppress(OSError):  # ENOENT: the caller is gone (killed, or a signal)
            fcntl.ioctl(self._fd, _SEND, _RESP.pack(notif_id, 0, 0, _FLAG_CONTINUE))

    def _read(self, notif_id: int, pid: int, address: int, length: int) -> bytes | None:
        """``length`` bytes (at most a sockaddr_storage) at ``address`` in the memory of the
        thread ``pid`` whose call ``notif_id`` is pending; None when they cannot be read.

        The fd is opened first, then the call is checked to be still pending (so ``pid`` was
        still that thread, not a reuse of its number, when the fd took hold of its memory).
        """
        try:
            fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.ioctl(self._fd, _ID_VALID, struct.pack("=Q", notif_id))
            return os.pread(fd, min(length, _MAX_ADDRESS), address)
        except (OSError, OverflowError):
            return None
        finally:
            os.close(fd)

    def _finish(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def address_kind(data: bytes) -> str:
    """What a ``struct sockaddr`` is, for learning what network a program needs:
    ``"unix-abstract"`` (an abstract unix address, or none: bind's autobind takes an abstract
    one; abstract addresses belong to a network namespace), ``"unix-path"``,
    ``"inet-loopback"``/``"inet"``, ``"inet6-loopback"``/``"inet6"`` (an IPv4-mapped loopback
    address is loopback), ``"family N"`` for another family, ``"unknown"`` when too short.
    """
    if len(data) < 2:
        return "unknown"
    family = int.from_bytes(data[:2], sys.byteorder)
    if family == socket.AF_UNIX:
        return "unix-abstract" if len(data) == 2 or data[2] == 0 else "unix-path"
    if family == socket.AF_INET and len(data) >= 8:
        return "inet-loopback" if data[4] == 127 else "inet"
    if family == socket.AF_INET6 and len(data) >= 24:
        address = data[8:24]
        loopback = address == bytes(15) + b"\x01" or (
            address[:12] == bytes(10) + b"\xff\xff" and address[12] == 127
        )
        return "inet6-loopback" if loopback else "inet6"
    if family in (socket.AF_INET, socket.AF_INET6):
        return "unknown"
    return f"family {family}"


class _Hub:
    """The one thread that serves every listener of this process.

    Sockets and listeners are added by the spawning thread straight into the hub's epoll set
    (epoll_ctl needs no wake-up of the thread waiting in epoll_wait). The hub wakes when a stage
    sends its listener — from then on every notification is answered, the stage's own last
    calls included, so no failure path of the stage can wait on an unanswered one — when a
    program is denied something, and when a filter's last process is gone. Only the hub closes
    what it was given, after removing it from the set, so an event never reaches a reused fd.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: dict[int, Listener] = {}  # socket fd → listener not yet received
        self._serving: dict[int, Listener] = {}  # listener fd → listener
        self._epoll = select.epoll()
        self._thread = threading.Thread(target=self._run, name="hardexec-seccomp", daemon=True)
        self._thread.start()

    def add_socket(self, fd: int, listener: Listener) -> None:
        with self._lock:
            self._sockets[fd] = listener
        self._epoll.register(fd, select.EPOLLIN)

    def _run(self) -> None:
        while True:
            for fd, events in self._epoll.poll():
                with self._lock:
                    waiting = self._sockets.get(fd)
                    listener = self._serving.get(fd) if waiting is None else None
                # A listener leaves the tables only once its fds are closed or moved, so that
                # pending() never says 0 while one is still open.
                if waiting is not None:  # the stage sent its listener, or ended
                    self._epoll.unregister(fd)
                    got = waiting._receive()
                    with self._lock:
                        del self._sockets[fd]
                        if got >= 0:
                            self._serving[got] = waiting
                    if got >= 0:
                        self._epoll.register(got, select.EPOLLIN)
                elif listener is None:
                    continue
                elif events & select.EPOLLIN:
                    listener._answer()
                elif events & _ENDED:  # no process uses the filter any more
                    self._epoll.unregister(fd)
                    listener._finish()
                    with self._lock:
                        del self._serving[fd]


_the_hub: _Hub | None = None
_hub_lock = threading.Lock()


def _hub() -> _Hub:
    global _the_hub
    if _the_hub is None:
        with _hub_lock:
            if _the_hub is None:
                _the_hub = _Hub()
    return _the_hub


def start_hub() -> None:
    """Start the hub now (its epoll fd is then open for the process's lifetime)."""
    _hub()


def pending() -> int:
    """How many listeners the hub still serves or waits for (their fds are open)."""
    hub = _the_hub
    if hub is None:
        return 0
    with hub._lock:
        return len(hub._sockets) + len(hub._serving)


def _forget_hub() -> None:
    # A forked child has no hub thread (only the forking one survives fork): it starts its own.
    global _the_hub, _hub_lock
    _the_hub, _hub_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_hub)


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
