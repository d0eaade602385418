"""cgroup v2, the parent's side: where groups go, one group per program, usage, kill, removal.

Every filesystem step happens here, in the parent, before the spawn (solti-exec allocated and
formatted inside pre_exec). The exec stage only writes "0" to the ``cgroup.procs`` fd opened here,
so the program and all its descendants are inside from their first instruction.

The kernel's rules surface as :class:`CgroupError` naming the group and the rule: controllers not
enabled in ``cgroup.subtree_control``, the no-internal-processes rule (EBUSY), a parent not
delegated to us (EACCES/EPERM), no cgroup v2 at all.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import itertools
import logging
import os
import re
import select
import signal
import threading
import time
from pathlib import Path

from .errors import CgroupError, PolicyError
from .policy import CgroupLimits
from .usage import Usage

__all__ = ["Cgroup", "check_parent", "default_parent", "group_name", "v2_mount"]

logger = logging.getLogger("hardexec")
_USAGE_FILES = ("cpu.stat", "memory.peak", "memory.events", "pids.peak")
_MOUNTINFO = "/proc/self/mountinfo"
_SELF_CGROUP = "/proc/self/cgroup"
_sequence = itertools.count()


def v2_mount() -> Path:
    """Where the cgroup v2 hierarchy is mounted (its root, not a bind of a subtree)."""
    mounts = []
    with open(_MOUNTINFO) as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype == "cgroup2" and fields[3] == "/":
                mounts.append(_unescape(fields[4]))
    if not mounts:
        raise CgroupError(
            errno.ENOENT, "no cgroup v2 hierarchy is mounted (no cgroup2 in /proc/self/mountinfo)"
        )
    return Path("/sys/fs/cgroup" if "/sys/fs/cgroup" in mounts else mounts[0])


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def default_parent() -> Path:
    """The group this process lives in: its ``0::`` line of ``/proc/self/cgroup``.

    Never the hierarchy's root by surprise: when this process lives elsewhere, that is where
    its programs' groups go; when it cannot be told, it is an error, not a fallback.
    """
    with open(_SELF_CGROUP) as f:
        for line in f:
            if line.startswith("0::"):
                relative = line[3:].rstrip("\n")
                break
        else:
            raise CgroupError(
                errno.ENOENT,
                "this process is in no cgroup v2 group (no 0:: line in /proc/self/cgroup)",
            )
    if relative.endswith(" (deleted)"):
        raise CgroupError(errno.ENOENT, f"this process's cgroup {relative} has been removed")
    return v2_mount() / relative.lstrip("/")


def check_parent(path: str | os.PathLike[str]) -> str:
    """Validate an explicit ``cgroup_parent``: an existing cgroup v2 directory, by absolute path."""
    try:
        text = os.fspath(path)
    except TypeError:
        text = None
    if not isinstance(text, str):
        raise PolicyError(f"cgroup_parent: expected a str path, got {path!r}")
    shown = _shorten(os.fspath(path))
    if "\0" in os.fspath(path):
        raise PolicyError(f"cgroup_parent: {shown} contains a NUL byte")
    parent = Path(path)
    if not parent.is_absolute():
        raise PolicyError(f"cgroup_parent: {shown} is not an absolute path")
    try:
        os.stat(parent / "cgroup.controllers")
    except FileNotFoundError:
        if not parent.is_dir():
            raise PolicyError(f"cgroup_parent: {shown} does not exist") from None
    except OSError as err:  # ENAMETOOLONG, ENOTDIR, EACCES, …
        raise PolicyError(f"cgroup_parent: {shown}: {err.strerror}") from None
    if not (parent / "cgroup.controllers").is_file():
        raise PolicyError(
            f"cgroup_parent: {shown} is not a cgroup v2 group (it has no "
            "cgroup.controllers: a cgroup v1 hierarchy, or not a cgroup at all)"
        )
    return str(parent)


def _shorten(text: str, keep: int = 80) -> str:
    """``repr`` of a user's value, cut in the middle when long (a 4 KiB path is no message)."""
    if len(text) <= keep:
        return repr(text)
    return repr(text[: keep // 2]) + f"…({len(text)} characters)…" + repr(text[-keep // 2 :])


def group_name(runner: str = "hardexec", slot: str | None = None) -> str:
    """``{runner}-{slot}-{seq:x}-{timestamp:x}`` as solti-exec names groups, made safe.

    ``slot`` defaults to this process's pid, ``seq`` counts groups made by this process and the
    timestamp is in microseconds, so names never repeat. Anything but letters, digits, ``_ . -``
    becomes ``_``, so a name can neither climb out of the parent nor hide as a dot-file.
    """
    slot = str(os.getpid()) if slot is None else slot
    raw = f"{runner}-{slot}-{next(_sequence):x}-{time.time_ns() // 1000:x}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw).lstrip(".")[:255] or "_"


_ORPHAN = re.compile(r"hardexec-([0-9]+)-[0-9a-f]+-([0-9a-f]+)")
# A group younger than this is never swept: its maker may be one this process cannot see (in
# another pid namespace) that has not moved its program in yet.
_ORPHAN_AGE = 60  # s
_swept: set[Path] = set()


def _sweep_once(base: Path) -> None:
    """Remove the empty groups a hardexec that is gone left in ``base`` (once per process and
    parent): one killed with kill -9 never removed its own. Only empty ones, a minute old or
    more, made by a pid that no longer exists: a group still holding processes is not this
    process's to end."""
    if base in _swept:
        return
    _swept.add(base)
    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        match = _ORPHAN.fullmatch(entry.name)
        if match is None or int(match[1]) == os.getpid():
            continue
        if time.time() - int(match[2], 16) / 1e6 < _ORPHAN_AGE:
            continue
        try:
            os.kill(int(match[1]), 0)
            continue  # its maker still runs (or the pid is someone's): not ours to judge
        except ProcessLookupError:
            pass
        except OSError:
            continue
        with contextlib.suppress(OSError):  # EBUSY: it still holds processes
            os.rmdir(entry.path)


def _read(path: Path) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write(path: Path, value: str) -> None:
    """One write(2), so the kernel's errno is the one raised (buffered I/O would blur it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def enable_controllers(parent: Path, needed: tuple[str, ...]) -> None:
    """Make ``needed`` controllers available to groups under ``parent``, or say why not."""
    enabled = (_read(parent / "cgroup.subtree_control") or "").split()
    missing = [name for name in needed if name not in enabled]
    if not missing:
        return
    available = (_read(parent / "cgroup.controllers") or "").split()
    absent = [name for name in missing if name not in available]
    if absent:
        raise CgroupError(
            errno.EOPNOTSUPP,
            f"the {' and '.join(absent)} controller{'s are' if len(absent) > 1 else ' is'} not "
            f"available in {parent} (its cgroup.controllers offers: {' '.join(available) or 'none'}"
            "); it may be bound to a cgroup v1 hierarchy, or not delegated to this group",
        )
    request = " ".join("+" + name for name in missing)
    try:
        _write(parent / "cgroup.subtree_control", request)
    except OSError as err:
        if err.errno == errno.EBUSY:
            raise CgroupError(
                err.errno,
                f"cannot enable {' '.join(missing)} for groups under {parent}: it holds processes "
                "itself, and the kernel's no-internal-processes rule forbids both; give a "
                "cgroup_parent whose own processes live in a leaf group",
            ) from None
        raise _explain(err, f"writing '{request}' to {parent}/cgroup.subtree_control") from None


def _explain(err: OSError, doing: str) -> CgroupError:
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the group is not delegated to this user"
    elif err.errno == errno.ENOENT:
        why = "it does not exist"
    else:
        why = err.strerror or "failed"
    return CgroupError(err.errno or errno.EIO, f"{doing}: {why}")


class Cgroup:
    """One program's group: created with its limits before spawn, removed once empty.

    Attributes:
        path: the group's directory.
        limits: the limits written into it.
        procs_fd: ``cgroup.procs`` opened for writing, for the exec stage to join (-1 once closed).
    """

    def __init__(self, path: Path, limits: CgroupLimits, procs_fd: int) -> None:
        self.path = path
        self.limits = limits
        self.procs_fd = procs_fd
        if not limits.keep_at_exit:
            with _made_lock:
                _made_here.add(path)

    @classmethod
    def create(cls, limits: CgroupLimits, parent: str | os.PathLike[str] | None = None) -> Cgroup:
        """Make a new group under ``parent`` (default: :func:`default_parent`) with ``limits``."""
        base = Path(parent) if parent is not None else default_parent()
        _sweep_once(base)
        enable_controllers(base, limits.controllers())
        path = base / group_name()
        try:
            os.mkdir(path, 0o755)
        except OSError as err:
            raise _explain(err, f"creating {path}") from None
        try:
            for name, value in limits.files().items():
                try:
                    _write(path / name, value)
                except FileNotFoundError:
                    controller = name.partition(".")[0]
                    raise CgroupError(
                        errno.ENOENT,
                        f"{path}/{name} does not exist: the {controller} controller is not "
                        f"enabled in {base}/cgroup.subtree_control",
                    ) from None
                except OSError as err:
                    raise _explain(err, f"writing {value!r} to {path}/{name}") from None
            try:
                procs_fd = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
            except OSError as err:
                raise _explain(err, f"opening {path}/cgroup.procs") from None
        except BaseException:
            os.rmdir(path)
            raise
        return cls(path, limits, procs_fd)

    def wait_empty(self, timeout: float | None = None) -> bool:
        """Wait until no process is left in the group (or it is gone); False on timeout.

        Sleeps on the kernel's notification (``cgroup.events`` changes are POLLPRI), no polling.
        """
        return _wait_empty(self.path, timeout)

    def close_fd(self) -> None:
        """Close the parent's ``cgroup.procs`` fd (the stage has its own copy)."""
        if self.procs_fd >= 0:
            os.close(self.procs_fd)
            self.procs_fd = -1

    def usage(self) -> Usage:
        """What the group used so far (final once it is empty)."""
        return Usage.from_cgroup_files({name: _read(self.path / name) for name in _USAGE_FILES})

    def pids(self) -> list[int]:
        """The processes in the group now (``[]`` once it is gone)."""
        return [int(pid) for pid in (_read(self.path / "cgroup.procs") or "").split()]

    def populated(self) -> bool:
        """Whether any process is still in the group (or the group is gone)."""
        events = _read(self.path / "cgroup.events")
        return events is not None and "populated 1" in events

    def kill(self) -> None:
        """SIGKILL every process in the group, daemonised and setsid'd ones included.

        ``cgroup.kill`` (Linux 5.14+) does it atomically; before that, the group is frozen so
        nothing can fork away, and each pid in ``cgroup.procs`` is killed until none is left.
        """
        try:
            _write(self.path / "cgroup.kill", "1")
            return
        except FileNotFoundError:
            if not self.path.exists():
                return
        with contextlib.suppress(OSError):  # without the freezer a fork may slip by a round
            _write(self.path / "cgroup.freeze", "1")
        for _ in range(100):
            pids = (_read(self.path / "cgroup.procs") or "").split()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)

    def remove(self) -> bool:
        """Remove the group now if it is empty, else as soon as it empties; True if gone now."""
        self.close_fd()
        try:
            if self.populated():
                raise OSError(errno.EBUSY, "populated")
            remove_tree(self.path)
        except FileNotFoundError:
            pass
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise
            _janitor().watch(self.path)
            return False
        _forget(self.path)
        return True

    def __repr__(self) -> str:
        return f"Cgroup({str(self.path)!r})"


class _Janitor(threading.Thread):
    """Removes groups that still held processes when their program ended, once they empty.

    The kernel signals each change of ``cgroup.events`` as POLLPRI; one daemon thread waits on
    all of them. (Groups whose processes outlive the interpreter stay, like their processes.)
    """

    def __init__(self) -> None:
        super().__init__(name="hardexec-cgroup-janitor", daemon=True)
        self._lock = threading.Lock()
        self._poll = select.poll()
        self._watched: dict[int, Path] = {}
        self._wake_read, self._wake_write = os.pipe()
        self._poll.register(self._wake_read, select.POLLIN)

    def watch(self, path: Path) -> None:
        try:
            fd = os.open(path / "cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        with self._lock:
            self._watched[fd] = path
            self._poll.register(fd, select.POLLPRI | select.POLLERR)
        os.write(self._wake_write, b"x")  # re-check at once: it may have emptied meanwhile

    def run(self) -> None:
        while True:
            for fd, _ in self._poll.poll():
                if fd == self._wake_read:
                    os.read(self._wake_read, 4096)
            try:
                self._sweep()
            except Exception:  # keep watching the others; say what went wrong
                logger.exception("hardexec: removing a finished program's cgroup failed")

    def _sweep(self) -> None:
        with self._lock:
            for fd, path in list(self._watched.items()):
                try:
                    busy = "populated 1" in os.pread(fd, 4096, 0).decode()
                    if busy:
                        continue
                    remove_tree(path)
                except OSError as err:
                    # ENODEV/ENOENT: someone else removed it; EBUSY: a child group lingers, so
                    # wait for the next event
                    if err.errno not in (errno.ENODEV, errno.ENOENT):
                        continue
                self._poll.unregister(fd)
                os.close(fd)
                del self._watched[fd]
                _forget(path)

    def close_fds(self) -> None:
        """Close every fd this janitor holds (in a forked child, where its thread is gone)."""
        for fd in [*self._watched, self._wake_read, self._wake_write]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._watched.clear()

    def pending(self) -> list[Path]:
        """Groups still waiting to empty."""
        with self._lock:
            return list(self._watched.values())


_janitor_lock = threading.Lock()
_janitor_thread: _Janitor | None = None


def _janitor() -> _Janitor:
    global _janitor_thread
    with _janitor_lock:
        if _janitor_thread is None:
            _janitor_thread = _Janitor()
            _janitor_thread.start()
        return _janitor_thread


def _wait_empty(path: Path, timeout: float | None) -> bool:
    try:
        fd = os.open(path / "cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI | select.POLLERR)
        deadline = None if timeout is None else time.monotonic() + timeout
        while "populated 1" in os.pread(fd, 4096, 0).decode():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            poller.poll(None if left is None else max(1, int(left * 1000)))
        return True
    except OSError as err:
        if err.errno in (errno.ENODEV, errno.ENOENT):  # removed meanwhile: empty by definition
            return True
        raise
    finally:
        os.close(fd)


# Groups this process made that still exist (keep_at_exit=False): at interpreter exit, what
# runs in them is killed and they are removed, since nothing else ever would (the janitor is
# a daemon thread and dies with the interpreter).
_made_here: set[Path] = set()
_made_lock = threading.Lock()
_EXIT_WAIT = 5.0  # s: SIGKILL'd processes are gone in milliseconds; this bounds a stuck exit


def _forget(path: Path) -> None:
    with _made_lock:
        _made_here.discard(path)


def _after_fork_in_child() -> None:
    """A forked child owns none of its parent's groups, and has no janitor thread.

    Without this, a child that returns to the interpreter's exit (os.fork() and sys.exit(),
    classic daemonising, pre-fork servers) would kill its parent's running programs.
    """
    global _janitor_thread, _made_lock, _janitor_lock
    _made_here.clear()
    _made_lock = threading.Lock()
    _janitor_lock = threading.Lock()
    if _janitor_thread is not None:  # its thread did not survive the fork; its fds did
        _janitor_thread.close_fds()
        _janitor_thread = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def remove_tree(path: Path) -> None:
    """rmdir ``path`` and any group the program made inside it, deepest first (empty only).

    A program that manages cgroups itself (a container runtime, say) may leave child groups,
    which a plain rmdir refuses (EBUSY); ``cgroup.kill`` has ended their processes already.
    The program chose the tree's depth and names, so the walk holds at most two directory fds
    and a list of names (no recursion, no path longer than one name): neither depth, nor
    PATH_MAX, nor RLIMIT_NOFILE stops it.
    """
    names: list[str] = []  # from the top down to where the walk is
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    here = os.open(path, flags)
    try:
        while True:
            with os.scandir(here) as entries:
                sub = next((e.name for e in entries if e.is_dir(follow_symlinks=False)), None)
            if sub is not None:  # down
                below = os.open(sub, flags, dir_fd=here)
                os.close(here)
                here = below
                names.append(sub)
            elif names:  # empty of groups: up, and remove it
                above = os.open("..", flags, dir_fd=here)
                os.close(here)
                here = above
                os.rmdir(names.pop(), dir_fd=here)
            else:
                break
    finally:
        os.close(here)
    os.rmdir(path)


def _clean_up_at_exit() -> None:
    with _made_lock:
        paths = list(_made_here)
    for path in paths:
        try:
            group = Cgroup(path, CgroupLimits(keep_at_exit=True), -1)
            group.kill()
            _wait_empty(path, _EXIT_WAIT)
            remove_tree(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            logger.warning("hardexec: could not remove the cgroup %s at exit: %s", path, err)
        _forget(path)


atexit.register(_clean_up_at_exit)


def pending_removal() -> list[Path]:
    """Groups of finished programs that still hold processes, to be removed once they empty."""
    return _janitor_thread.pending() if _janitor_thread is not None else []
