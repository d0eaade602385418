"""A fleet worker's tree guard: every task's tree lives in a cgroup inside the worker's own
directory, and a small keeper process that outlives the worker ends what the worker leaves.

Layout: ``<parent>/hardexec-worker-<pid>-<µs>/hardexec-<maker pid>-<seq>-<µs>``. The first pid is
the worker's main process (the one that made the directory: ``hardexec worker``, or the Celery
main process of a user's own app); each group inside is named by the pool process that spawned
into it (:func:`hardexec.cgroups.group_name`). A program gets ``die_with_parent``, so when its
pool process dies the kernel ends the program itself; what the program started lives on in its
group, and that is what the guard ends.

Who ends what:

- a pool process that receives SIGTERM (``revoke(terminate=True)``, the first step of Celery's
  hard time limit) kills its own groups before it dies (:func:`kill_groups_of`);
- the keeper (``python -m hardexec.treeguard``, started by :meth:`Guard.start`, in a session of
  its own and in the directory's leaf :data:`KEEPER_GROUP`) wakes every :data:`REAP_INTERVAL`
  seconds (:func:`reap_once`) and ends the groups whose maker is no longer a living child of
  the main process that started before its group (kill -9 of a pool process, the hard time
  limit's SIGKILL, the OOM killer; a pid reused since), and the tree of a maker stopped for
  :data:`STOPPED_GRACE` seconds; when the main process itself dies (kill -9 of the whole
  worker), it ends every group, removes the directory and exits;
- :meth:`Guard.stop` (the worker's normal end) stops the keeper and ends what is left, and a
  worker that starts removes what dead workers left (:func:`sweep_dead_workers`): directories
  whose keeper leaf is empty, a minute old or more, of a pid not alive here. The leaf, not the
  pid, says a worker lives: a worker of another pid namespace shares the cgroup tree but not
  the pids.

This module knows nothing of Celery: it is files under cgroup v2, pids and one process.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from .cgroups import Cgroup, check_parent, default_parent, remove_tree
from .errors import CgroupError
from .policy import CgroupLimits

__all__ = [
    "REAP_INTERVAL",
    "STOPPED_GRACE",
    "KEEPER_GROUP",
    "Guard",
    "WorkerDir",
    "kill_groups_of",
    "reap_once",
    "sweep_dead_workers",
]

logger = logging.getLogger("hardexec")
#: Seconds between two looks of the keeper for groups whose maker died.
REAP_INTERVAL = 0.25
#: Seconds a pool process may stay stopped (SIGSTOP, a remote control's revoke with it)
#: before its task's tree is killed: while it is stopped, nothing enforces the task's timeout.
STOPPED_GRACE = 2.0
# btime is whole seconds and a start time whole clock ticks: a living maker may look up to
# this much younger than its group.
_CLOCK_SLACK = 2.0
#: The leaf of a worker's directory its keeper lives in: populated, the worker is alive.
KEEPER_GROUP = "keeper"
_WORKER = re.compile(r"hardexec-worker-([0-9]+)-([0-9a-f]+)")
_GROUP = re.compile(r"hardexec-([0-9]+)-[0-9a-f]+-[0-9a-f]+")
# A dead worker's directory younger than this is left alone: it may be one being made, whose
# keeper has not joined its leaf yet.
_DEAD_WORKER_AGE = 60  # s
_EMPTY_WAIT = 10.0  # s for a killed group to empty (a process in D state takes a while)


class WorkerDir:
    """The worker's own cgroup directory, made at start, removed (with what is left) at close.

    Args:
        parent: where to make it (a cgroup v2 directory; default: the group this process is in).
    """

    def __init__(self, parent: str | os.PathLike[str] | None = None) -> None:
        base = Path(check_parent(parent)) if parent is not None else default_parent()
        sweep_dead_workers(base)
        self.path = base / f"hardexec-worker-{os.getpid()}-{time.time_ns() // 1000:x}"
        try:
            os.mkdir(self.path, 0o755)
        except OSError as err:
            raise CgroupError(
                err.errno,
                f"cannot make the worker's cgroup directory {self.path}: {err.strerror} (the "
                "worker keeps each task's tree in a group of its own, so that it ends when the "
                "process running it dies; give the ceiling a cgroup_parent this user may write)",
            ) from None
        try:  # a group with no limits: a worker that cannot make one must not take tasks
            Cgroup.create(CgroupLimits(), self.path).remove()
        except BaseException:
            with contextlib.suppress(OSError):
                os.rmdir(self.path)
            raise

    def close(self) -> None:
        """Kill every group left in the directory and remove it (the worker is ending)."""
        kill_groups_of(self.path, None)
        _remove_all(self.path)

    def __repr__(self) -> str:
        return f"WorkerDir({str(self.path)!r})"


def kill_groups_of(directory: Path, maker: int | None) -> list[Path]:
    """SIGKILL every process in the groups ``maker`` made in ``directory`` (every group: None).

    Returns the groups killed. ``cgroup.kill`` reaches daemonised and setsid'd processes too; it
    is a write of one byte, safe to call from a signal handler that is about to die."""
    killed = []
    for path in _groups(directory):
        if maker is None or _maker(path) == maker:
            _kill(path)
            killed.append(path)
    return killed


def _handle(path: Path) -> Cgroup:
    """A group this process did not make (``keep_at_exit``: not this process's to remove)."""
    return Cgroup(path, CgroupLimits(keep_at_exit=True), -1)


def _kill(path: Path) -> None:
    """SIGKILL what is in the group at ``path`` (gone already, or going: nothing to do)."""
    with contextlib.suppress(OSError):
        _handle(path).kill()


def _groups(directory: Path) -> list[Path]:
    try:
        with os.scandir(directory) as entries:
            return [
                Path(e.path)
                for e in entries
                if e.is_dir(follow_symlinks=False) and _GROUP.fullmatch(e.name)
            ]
    except OSError:
        return []


def _maker(path: Path) -> int:
    match = _GROUP.fullmatch(path.name)
    assert match is not None  # _groups lists only these
    return int(match[1])


def _remove_all(directory: Path) -> None:
    """Remove ``directory`` once its groups (killed already) are empty."""
    for path in _groups(directory):
        _remove_group(path)
    try:
        remove_tree(directory)
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.warning("hardexec: could not remove the worker's cgroup %s: %s", directory, err)


def _remove_group(path: Path) -> bool:
    deadline = time.monotonic() + _EMPTY_WAIT
    while True:
        try:
            remove_tree(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() > deadline:
                logger.warning("hardexec: could not remove the cgroup %s: %s", path, err)
                return False
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: someone's; not ours to judge
    return True


def sweep_dead_workers(base: Path) -> None:
    """Kill and remove what workers that died (kill -9 of the whole worker) left in ``base``."""
    try:
        with os.scandir(base) as entries:
            names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for name in names:
        match = _WORKER.fullmatch(name)
        # A living worker's keeper is in the directory's own leaf: that says it lives, in any
        # pid namespace (a pid seen from here may be another namespace's, or nobody's).
        if match is None or _populated(base / name / KEEPER_GROUP) or _alive(int(match[1])):
            continue
        if time.time() - int(match[2], 16) / 1e6 < _DEAD_WORKER_AGE:
            continue
        logger.warning("hardexec: removing %s, left by a worker that is gone", base / name)
        kill_groups_of(base / name, None)
        _remove_all(base / name)


def _populated(group: Path) -> bool:
    try:
        return _handle(group).populated()
    except OSError:
        return False


def _join(group: Path) -> bool:
    """Move this process into ``group`` (writing 0 moves the writer)."""
    try:
        with open(group / "cgroup.procs", "w") as f:
            f.write("0")
        return True
    except OSError:
        return False


def _stat(pid: int) -> tuple[str, int, int] | None:
    """A process's state letter, parent pid and start time (``/proc/PID/stat``), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def reap_once(directory: Path, main: int, stopped: dict[int, float] | None = None) -> int:
    """End the groups in ``directory`` whose maker is not a living child of ``main`` (nor
    ``main`` itself: a pool of threads runs tasks there); returns how many were removed.

    A maker is living only if it started before its group was made: a pid reused by a newer
    process (a pool process forked after the first one died) does not keep a dead task's tree.
    With ``stopped`` (the keeper's memory across rounds: pid → when first seen stopped), the
    tree of a maker stopped for :data:`STOPPED_GRACE` seconds is killed (not removed: the maker
    may go on, and removes its group itself): a stopped pool process enforces no timeout.
    """
    removed = 0
    for path in _groups(directory):
        maker = _maker(path)
        stat = _stat(maker)
        if maker == main:
            continue
        living = stat is not None and stat[0] not in "ZX" and stat[1] == main
        if living and _started(stat[2]) <= _made(path) + _CLOCK_SLACK:  # type: ignore[index]
            if stopped is not None:
                _stopped(path, maker, stat[0], stopped)  # type: ignore[index]
            continue
        logger.warning(
            "hardexec: the process %d that ran a task is gone: ending its tree (%s)",
            maker,
            path.name,
        )
        _kill(path)
        if _remove_group(path):
            removed += 1
    return removed


def _stopped(path: Path, maker: int, state: str, stopped: dict[int, float]) -> None:
    if state not in "Tt":
        stopped.pop(maker, None)
        return
    since = stopped.setdefault(maker, time.monotonic())
    if time.monotonic() - since >= STOPPED_GRACE:
        if _populated(path):
            logger.warning(
                "hardexec: the process %d that runs a task is stopped: ending its tree (%s)",
                maker,
                path.name,
            )
        _kill(path)


def _made(path: Path) -> float:
    """When a group was made: the µs timestamp its name ends with (epoch seconds)."""
    return int(path.name.rsplit("-", 1)[1], 16) / 1e6


def _started(ticks: int) -> float:
    """A process's start (``/proc/PID/stat`` field 22, clock ticks since boot) in epoch seconds."""
    return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")


@functools.cache  # the keeper asks for each group, four times a second; it never changes
def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def _keep(directory: Path, main: int, ready: int) -> int:
    """The keeper's life: reap while ``main`` lives, end everything when it dies."""
    try:
        pidfd = os.pidfd_open(main)
    except OSError as err:
        os.write(ready, f"cannot watch the worker (pid {main}): {err.strerror}\n".encode())
        return 1
    if os.getppid() != main:  # it died before the pidfd was taken: that pid may be another's
        os.write(ready, b"the worker exited before its keeper started\n")
        return 1
    if not _join(directory / KEEPER_GROUP):
        os.write(ready, f"cannot join {directory / KEEPER_GROUP}\n".encode())
        return 1
    os.write(ready, b"ready\n")
    os.close(ready)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    stopped: dict[int, float] = {}
    while not poller.poll(REAP_INTERVAL * 1000):
        if not directory.exists():
            return 0  # the worker ended and cleaned up (Guard.stop)
        try:
            reap_once(directory, main, stopped)
        except Exception:  # the guard must keep guarding: log, go on
            logger.exception("hardexec: the worker's keeper failed a round")
    if directory.exists():
        logger.warning("hardexec: the worker (pid %d) is gone: ending its tasks' trees", main)
        kill_groups_of(directory, None)
        # Out of its own leaf, so that the directory can go; where that is refused (a parent
        # that may hold no process), the directory stays, and a later worker's sweep takes it.
        if _join(directory.parent):
            _remove_all(directory)
    return 0


class Guard:
    """The worker's directory and its keeper: :meth:`start` in the worker's main process before
    it takes tasks, :meth:`stop` at its end.

    Args:
        parent: where the directory goes (default: the group this process is in).
    """

    def __init__(self, parent: str | os.PathLike[str] | None = None) -> None:
        self.parent = parent
        self.directory: WorkerDir | None = None
        self.keeper: subprocess.Popen[bytes] | None = None
        self._keeper_start: int | None = None

    @property
    def path(self) -> Path | None:
        """The directory tasks' groups go in (``None`` until started)."""
        return None if self.directory is None else self.directory.path

    def start(self) -> Path:
        """Make the directory and start the keeper; the directory's path.

        Raises :class:`CgroupError` when either cannot be had: a worker must not take tasks
        whose trees nothing would end."""
        if self.directory is not None:
            return self.directory.path
        directory = WorkerDir(self.parent)
        try:
            os.mkdir(directory.path / KEEPER_GROUP)
            self.keeper, self._keeper_start = _start_keeper(directory.path)
        except BaseException:
            directory.close()
            raise
        self.directory = directory
        return directory.path

    def keeper_alive(self) -> bool:
        """Whether the keeper still runs (a pool process asks before each task)."""
        if self.keeper is None:
            return False
        stat = _stat(self.keeper.pid)
        # Stopped (T, t: SIGSTOP, a tracer) counts as gone: it would reap nothing meanwhile.
        return stat is not None and stat[0] not in "ZXTt" and stat[2] == self._keeper_start

    def stop(self) -> None:
        """Stop the keeper, end every group left and remove the directory."""
        if self.keeper is not None:
            with contextlib.suppress(ProcessLookupError):
                self.keeper.send_signal(signal.SIGCONT)  # a stopped one would never see TERM
                self.keeper.terminate()
            try:
                self.keeper.wait(_EMPTY_WAIT)
            except subprocess.TimeoutExpired:
                self.keeper.kill()
                self.keeper.wait()
            self.keeper = None
        if self.directory is not None:
            _remove_group(self.directory.path / KEEPER_GROUP)
            self.directory.close()
            self.directory = None


def _start_keeper(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        # A session of its own: the terminal's ^C, and signals to the worker's process group,
        # must not end the one process that cleans up after the worker.
        keeper = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-m",
                "hardexec.treeguard",
                str(os.getpid()),
                str(directory),
                str(write_end),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            pass_fds=(write_end,),
            start_new_session=True,
        )
    finally:
        os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as answers:
            answer = answers.readline().decode(errors="replace").strip()
    except BaseException:
        keeper.kill()
        keeper.wait()
        raise
    stat = _stat(keeper.pid)
    if answer != "ready" or stat is None:
        keeper.kill()
        keeper.wait()
        raise CgroupError(
            errno.ECHILD, f"the worker's keeper did not start: {answer or 'it exited'}"
        )
    return keeper, stat[2]


def main(argv: list[str]) -> int:
    """``python -m hardexec.treeguard MAIN_PID DIRECTORY READY_FD`` (started by :class:`Guard`)."""
    logging.basicConfig(format="[%(asctime)s: %(levelname)s/keeper] %(message)s")
    main_pid, directory, ready = int(argv[0]), Path(argv[1]), int(argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return _keep(directory, main_pid, ready)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
