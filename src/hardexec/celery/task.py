"""The worker's side of one task: from the message's plain data to a dead tree and a Result.

A message carries a :class:`~hardexec.runner.TaskSpec` and a :class:`~hardexec.Policy` in
:mod:`hardexec.serial`'s plain form. The queue is a trust boundary, so the worker reads them
strictly, narrows them to its ceiling (:func:`hardexec.ceiling.narrow`: a task asking for more
is refused, never run), puts the tree in a group of the worker's directory
(:mod:`hardexec.treeguard`) and runs it with the runner, on one event loop per pool process.

Signals a pool process receives while a task runs:

- SIGTERM (``revoke(terminate=True)``, Celery's hard time limit, a cold shutdown): the task's
  groups are killed at once, then the pool's own handler ends the process as it would have;
- SIGUSR1 (Celery's soft time limit): the task is cancelled the runner's way (SIGTERM to the
  tree, ``kill_after``, SIGKILL), then :class:`SoftTimeLimitExceeded` is raised as Celery does.

Nothing here imports Celery at module level except the soft-limit exception, when it fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import stat
import threading

from .._record import replace
from ..ceiling import check_resolved, narrow
from ..errors import (
    CgroupError,
    HardexecError,
    PolicyError,
    SpawnFailed,
    TaskFailed,
)
from ..policy import CgroupLimits, Policy
from ..runner import LogConfig, OutputLimits, Runner
from ..serial import policy_from_dict, result_to_dict, task_from_dict
from ..treeguard import Guard, kill_groups_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    from ..policyfile import PolicyFile
    from ..runner import Event, Result

__all__ = ["DEFAULT_MAX_OUTPUT", "STREAM_DELAY", "Stream", "WorkerSettings", "execute"]

#: Bytes of each stream a result keeps when the ceiling sets no ``run.max_output``: a result
#: lives in the backend (Redis: one value), so it is bounded however much a task prints.
DEFAULT_MAX_OUTPUT = 1 << 20
logger = logging.getLogger("hardexec")
#: Seconds a streamed line waits at most for others to go with it.
STREAM_DELAY = 0.1
_STREAM_BATCH = 200  # lines in one message at most


class WorkerSettings:
    """What a worker's pool processes need to run tasks: set once in the main process, before
    the pool forks (each pool process makes its own loop and runner on its first task).

    Args:
        ceiling: the most any task may get (:class:`~hardexec.policyfile.PolicyFile`).
        directory: the worker's cgroup directory (:attr:`hardexec.treeguard.Guard.path`), or
            ``None`` until the guard starts (or when the worker runs without it).
        name: the worker's name in logs and results' warnings.
    """

    def __init__(
        self, ceiling: PolicyFile, directory: Path | None, name: str, *, guard: bool = True
    ) -> None:
        self.ceiling = ceiling
        self.directory = directory
        self.name = name
        self.guard = guard
        self.refusal: str | None = None  # why the guard could not start: tasks are refused
        self._guard: Guard | None = None
        self._guard_pid = -1
        self._started = False
        limit = ceiling.run.max_output
        self.output = OutputLimits(max_bytes=DEFAULT_MAX_OUTPUT if limit is None else limit)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Runner | None = None
        self._pid = -1
        self.streaming: Stream | None = None  # the running task's, when its submitter asked

    def _event(self, event: Event) -> None:
        if self.streaming is not None:
            self.streaming.add(event)

    def start_guard(self) -> None:
        """In the worker's main process, before the pool forks: make the worker's cgroup
        directory and start its keeper (:class:`~hardexec.treeguard.Guard`). Raises
        :class:`CgroupError` when either cannot be had (and records why: every task is refused
        from then on)."""
        if self._started:
            return  # the command starts it before Celery, whose worker_init asks again
        self._started = True
        if self.ceiling.run.env_policy == "inherit":
            logger.warning(
                "hardexec: this worker's ceiling lets tasks inherit its environment (broker "
                'URL, credentials): give it run.env_policy = "clear" or the names to let through'
            )
        if not self.guard:
            logger.warning(
                "hardexec: no tree guard: what a task starts (setsid, a daemon) may outlive it "
                "and its pool process; only the program itself dies with its pool process"
            )
            return
        guard = Guard(self.ceiling.policy.cgroup_parent)
        try:
            self.directory = guard.start()
        except HardexecError as err:  # CgroupError; PolicyError for a parent that is no group
            self.refusal = str(err)
            logger.error("hardexec: this worker refuses tasks: %s", err)
            raise
        self._guard = guard
        self._guard_pid = os.getpid()
        logger.info("hardexec: tasks' groups go in %s", self.directory)

    def stop_guard(self) -> None:
        """At the worker's end, in its main process: stop the keeper, end and remove what is
        left in the directory. A no-op elsewhere (a pool process's exit)."""
        if self._guard is None or self._guard_pid != os.getpid():
            return
        self._guard.stop()
        self._guard = None

    def check_guard(self) -> None:
        """Refuse the task (CgroupError) unless the guard runs: nothing would end its tree."""
        if not self.guard:
            return
        if self._guard is None or self.directory is None:
            why = self.refusal or "its main process never made its cgroup directory"
        elif not self._guard.keeper_alive():
            why = "its keeper (the process that ends the trees a dead worker leaves) is gone"
            # Stop taking tasks this worker would only refuse (others can run them): a warm
            # shutdown of the main process, which lets running tasks end.
            logger.critical("hardexec: %s: this worker stops", why)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._guard_pid, signal.SIGTERM)
        else:
            return
        raise CgroupError(errno.EAGAIN, f"this worker's tree guard is not running: {why}")

    def runner(self) -> tuple[asyncio.AbstractEventLoop, Runner]:
        """This process's loop and runner (made anew in a process forked since)."""
        if self._pid != os.getpid() or self._loop is None or self._runner is None:
            self._loop = asyncio.new_event_loop()
            # Lines are the task's data, for its result: not the worker's log.
            log = LogConfig(log_lines=False)
            self._runner = Runner(
                output=self.output, log=log, concurrency=1, name=self.name, sink=self._event
            )
            self._pid = os.getpid()
        return self._loop, self._runner


def tasks_run_as_root(ceiling: PolicyFile) -> bool:
    """Whether tasks under ``ceiling`` may run as uid 0 (a root worker, no ``security.user``).

    Without a capability, uid 0 still owns most of the system: it may move itself out of its
    cgroup (cgroup v2 checks ``cgroup.procs``'s permissions, and root owns it) and so out of the
    guard's reach, signal any root process (the keeper, the pool), open the broker's socket
    where root may, and write root's files where no Landlock rule stops it.
    """
    if os.geteuid() != 0:
        return False
    return ceiling.policy.security.identity.uid in (None, 0)


def execute(
    settings: WorkerSettings,
    spec_data: object,
    policy_data: object,
    publish: Callable[[list[list[str]]], None] | None = None,
) -> dict[str, Any]:
    """Run one task from its message and return its Result in plain form.

    With ``publish``, the program's lines are sent through it as they come, in batches of
    ``[stream, text]`` pairs (at most :data:`STREAM_DELAY` seconds late), up to the ceiling's
    output cap per stream.

    Raises :class:`~hardexec.errors.PolicyError` for a message that is not a task,
    :class:`~hardexec.errors.CeilingError` for a task asking for more than the ceiling (nothing
    runs in either case), and :class:`~hardexec.errors.SpawnFailed` for a task that could not
    start. A task with ``fail_on_non_zero`` that failed returns its result all the same: the
    submitter's :meth:`~hardexec.celery.Submission.get` raises its ``TaskFailed``.
    """
    settings.check_guard()
    spec = task_from_dict(spec_data)
    policy = None if policy_data is None else policy_from_dict(policy_data)
    if spec.cwd is None:  # not the worker's own directory: that is nothing of the task's
        spec = replace(spec, cwd="/")
    spec, policy = narrow(settings.ceiling, spec, policy)
    check_resolved(settings.ceiling, policy)  # links in the task's path rules, resolved here
    _check_cwd(spec.cwd, policy)
    policy = _guarded(policy, settings.directory)
    if publish is not None:
        loop, _ = settings.runner()
        settings.streaming = Stream(loop, publish, settings.output.max_bytes)
    try:
        result = _run(settings, spec, policy)
    except TaskFailed as failed:  # fail_on_non_zero: the submitter raises it, from the Result
        result = failed.result  # type: ignore[assignment]
    except PolicyError:
        raise
    except OSError as err:  # StageError included: the whole message, the file name with it
        # The errno says "not found" (or "not executable") of the program only when exec said
        # it, not hardexec's own steps (a rule's missing path is ENOENT too; a cgroup EACCES).
        number = None if isinstance(err, HardexecError) else err.errno
        raise SpawnFailed(f"{_short(spec.argv[0])} could not be started: {err}", number) from None
    finally:
        if settings.streaming is not None:
            settings.streaming.flush()
            settings.streaming = None
    return result_to_dict(result)


def _short(text: str, keep: int = 200) -> str:
    """``repr`` of a task's text for a message: a program's name may be megabytes long."""
    return repr(text) if len(text) <= keep else repr(text[:keep]) + f"…({len(text)} characters)"


def _check_cwd(cwd: str | None, policy: Policy) -> None:
    """The task's user must be able to enter its working directory.

    The directory is entered before the exec stage changes identity, as the worker (root), so
    a task running as nobody could otherwise start in, and read relative names of, a directory
    nobody may not search (``/root/...``). Each directory on the resolved path needs the
    search bit for the task's uid, gid or groups."""
    ids = policy.security.identity
    if cwd is None or ids.uid in (None, 0):
        return
    gids = {ids.gid, *(ids.groups or ())} - {None}
    path = os.path.realpath(cwd)
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts) + 1):
        here = "/" + "/".join(parts[:depth])
        try:
            st = os.stat(here)
        except OSError as err:
            raise PolicyError(f"task.cwd: {cwd!r}: {here}: {err.strerror}") from None
        if st.st_uid == ids.uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            raise PolicyError(
                f"task.cwd: {cwd!r}: the task's user (uid {ids.uid}) may not enter {here}"
            )


def _guarded(policy: Policy, directory: Path | None) -> Policy:
    """The policy with its tree in a group of the worker's directory, enforced: the guard is
    what ends a tree whose pool process was killed, so a group that cannot be made refuses the
    task rather than run it unguarded."""
    if directory is None:
        return replace(policy, die_with_parent=True)
    group = policy.cgroups if policy.cgroups is not None else CgroupLimits()
    return replace(
        policy,
        cgroups=replace(group, fail_on_error=True, keep_at_exit=False),
        cgroup_parent=str(directory),
        die_with_parent=True,
    )


def _run(settings: WorkerSettings, spec: Any, policy: Policy) -> Result:
    loop, runner = settings.runner()
    if threading.current_thread() is not threading.main_thread():
        # A threads pool: signals are the main thread's; Celery's own handling applies.
        return loop.run_until_complete(runner.run(spec, policy=policy))
    soft = _SoftLimit(loop, runner)
    directory = settings.directory
    previous_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        if directory is not None:
            kill_groups_of(directory, os.getpid())
        signal.signal(signal.SIGTERM, previous_term)
        if callable(previous_term):
            previous_term(signum, frame)
        else:
            os.kill(os.getpid(), signum)

    previous_soft = signal.signal(signal.SIGUSR1, soft.fired)
    signal.signal(signal.SIGTERM, on_term)
    try:
        result = loop.run_until_complete(runner.run(spec, policy=policy))
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGUSR1, previous_soft)
    if soft.hit:
        from celery.exceptions import SoftTimeLimitExceeded

        raise SoftTimeLimitExceeded(f"soft time limit exceeded: {result.describe()}")
    return result


class Stream:
    """The running task's lines on their way to its submitter: batched (a message per line
    would cost the backend more than the line), each stream cut at ``limit`` bytes, as the
    result is."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        publish: Callable[[list[list[str]]], None],
        limit: int | None,
    ) -> None:
        self.loop = loop
        self.publish = publish
        self.left = {"stdout": limit, "stderr": limit}
        self.batch: list[list[str]] = []
        self.timer: asyncio.TimerHandle | None = None

    def add(self, event: Event) -> None:
        if event.kind != "line" or event.stream is None:
            return
        left = self.left[event.stream]
        size = len(event.text.encode(errors="replace")) + 1
        if left is not None:
            if left < size:
                if left >= 0:
                    note = f"[hardexec: streaming of {event.stream} stops at the output cap]"
                    self.batch.append([event.stream, note])
                    self.left[event.stream] = -1
                return
            self.left[event.stream] = left - size
        self.batch.append([event.stream, event.text])
        if len(self.batch) >= _STREAM_BATCH:
            self.flush()
        elif self.timer is None:
            self.timer = self.loop.call_later(STREAM_DELAY, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.batch:
            batch, self.batch = self.batch, []
            try:
                self.publish(batch)
            except Exception as err:  # the result still carries the output
                logger.warning("hardexec: could not stream a task's lines: %s", err)


class _SoftLimit:
    """Celery's soft time limit, turned into the runner's cancel (run on the loop, not raised
    into whatever line the task's code was at)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, runner: Runner) -> None:
        self.loop = loop
        self.runner = runner
        self.hit = False

    def fired(self, signum: int, frame: Any) -> None:
        self.hit = True
        self.loop.call_soon_threadsafe(self.runner.cancel)
