"""The :class:`Runner`: many hardened tasks at once, on asyncio (solti-exec's
``SubprocessRunner``)."""

from __future__ import annotations

import asyncio
import inspect

from .._record import replace
from ..errors import PolicyError, TaskFailed
from ..spawn_core import check_policy
from .attempt import Attempt, spawn_error_text, transient
from .config import LogConfig, OutputLimits
from .metrics import Metrics
from .outlet import END, Outlet, escape, logger
from .result import Event, Result
from .spec import TaskSpec, env_pairs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping
    from typing import Any

    from ..policy import Policy
    from .metrics import MetricsSink

__all__ = ["Runner"]

_MAX_BACKOFF = 60.0  # s between two attempts, at most


class _Task:
    """One task while it runs: which attempt is current, and whether it was cancelled."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.attempt: Attempt | None = None
        self.cancelled = False
        self.woken = asyncio.Event()  # a cancel ends a backoff sleep or a wait for a slot

    def cancel(self) -> None:
        self.cancelled = True
        self.woken.set()
        if self.attempt is not None:
            self.attempt.cancel()


class Runner:
    """Runs :class:`TaskSpec` s under one policy, at most ``concurrency`` at a time.

    Args:
        policy: the :class:`~hardexec.Policy` every task runs under (a task may be given its own
            in :meth:`run`). With ``policy.cgroups`` every attempt gets a fresh cgroup.
        log: line caps and logging (:class:`LogConfig`).
        output: what results keep of each stream (:class:`OutputLimits`).
        concurrency: tasks running at once; more wait their turn.
        name: the runner's name in logs and metrics.
        env: variables set for every task, over the task's own (the runner has the last word).
        sink: called with every :class:`Event` (start, line, exit) of every task; a coroutine
            function is awaited, and while it lags the task's output is not read further.
        metrics: what finished tasks are counted in (default: an in-memory :class:`Metrics`,
            readable as :attr:`metrics`; :class:`PrometheusMetrics` exports them).
        die_with_parent: every program gets ``die_with_parent`` (SIGKILL when the thread
            running the event loop exits, a ``kill -9`` of the runner included); False leaves
            the policy as it is.
        verify: every attempt's program is checked against its policy at its exec, before
            its first instruction (see :class:`hardexec.Popen`); beyond it, the program is
            killed and :meth:`run` raises :class:`~hardexec.errors.VerifyError` (not retried).

    Guarantees, for every task: it runs in its own process group (and cgroup, with one); it
    reads ``/dev/null`` unless given input; when :meth:`run` returns or raises, the program is
    reaped and what it left running has been killed; memory held for its output stays within
    ``output.max_bytes`` per stream, plus a few read chunks in flight.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        log: LogConfig | None = None,
        output: OutputLimits | None = None,
        concurrency: int = 16,
        name: str = "hardexec",
        env: Mapping[str, str] | None = None,
        sink: Callable[[Event], Any] | None = None,
        metrics: MetricsSink | None = None,
        die_with_parent: bool = True,
        verify: bool = False,
    ) -> None:
        self.policy = check_policy(policy)
        self.log = LogConfig() if log is None else log
        self.output = OutputLimits() if output is None else output
        if not isinstance(self.log, LogConfig):
            raise PolicyError(f"runner.log: expected a LogConfig, got {self.log!r}")
        if not isinstance(self.output, OutputLimits):
            raise PolicyError(f"runner.output: expected an OutputLimits, got {self.output!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise PolicyError(f"runner.concurrency: {concurrency!r} is not a positive number")
        if not isinstance(name, str) or not name or "\0" in name:
            raise PolicyError(f"runner.name: {name!r} is not a name")
        if not isinstance(die_with_parent, bool):
            raise PolicyError(
                f"runner.die_with_parent: expected True or False, got {die_with_parent!r}"
            )
        self.concurrency = concurrency
        self.name = name
        self.die_with_parent = die_with_parent
        if not isinstance(verify, bool):
            raise PolicyError(f"runner.verify: expected True or False, got {verify!r}")
        self.verify = verify
        # Validated as a task's env is: no empty names, no '=', no NUL.
        self.env = dict(env_pairs(env or {}, "runner.env"))
        if sink is not None and not callable(sink):
            raise PolicyError(f"runner.sink: {sink!r} is not callable")
        self.sink = sink
        if metrics is not None and not callable(getattr(metrics, "task_finished", None)):
            raise PolicyError(f"runner.metrics: {metrics!r} has no task_finished() method")
        self.metrics = Metrics() if metrics is None else metrics
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[_Task] = set()

    # --- the surface -------------------------------------------------------------------------

    async def run(self, spec: TaskSpec, *, policy: Policy | None = None) -> Result:
        """Run ``spec`` to its end (retries included) and return its :class:`Result`.

        Raises the spawn error of a task that could not start (``FileNotFoundError``,
        :class:`StageError`, …; transient ones after its retries), and :class:`TaskFailed` for a
        non-zero end with ``fail_on_non_zero``. Cancelled, it ends the task's tree (SIGTERM,
        ``kill_after``, SIGKILL; a second cancel skips the grace) and re-raises once the tree
        is dead.
        """
        sink = self.sink
        is_async = sink is not None and _is_async(sink)
        outlet = Outlet(None if is_async else sink, queued=is_async)
        if not is_async:
            return await self._run(spec, policy, outlet)
        feeder = asyncio.ensure_future(self._feed(outlet))
        try:
            result = await self._run(spec, policy, outlet)
        except BaseException:
            # Ended by an error or a cancel (the tree is dead by now): a sink that lags must
            # not hold the caller, so it is cancelled rather than waited for.
            feeder.cancel()
            await asyncio.wait([feeder])
            raise
        outlet.queue.put_nowait(END)  # type: ignore[union-attr]
        await _finish(feeder)  # the sink has seen every event, the exit included
        return result

    def stream(self, spec: TaskSpec, *, policy: Policy | None = None) -> AsyncIterator[Event]:
        """Run ``spec`` and yield its events as they happen: ``start``, every ``line``, and
        last ``exit`` (its ``result`` set). Errors are raised as :meth:`run` raises them.

        A consumer that lags slows the task's output down (nothing piles up in memory). Leaving
        the loop early ends the task's tree; wrap the iterator in :func:`contextlib.aclosing`
        to have that happen before the loop's next statement.
        """
        return self._stream(spec, policy)

    async def map(
        self,
        specs: Iterable[TaskSpec],
        *,
        policy: Policy | None = None,
        return_exceptions: bool = False,
    ) -> list[Result | BaseException]:
        """Run every spec (at most ``concurrency`` at once); the results in the specs' order.

        The first error (a spawn error, :class:`TaskFailed`) is raised once the other tasks'
        trees have been ended, unless ``return_exceptions``, which puts errors in the list.
        """
        specs = list(specs)
        for index, spec in enumerate(specs):
            if not isinstance(spec, TaskSpec):
                raise PolicyError(f"specs[{index}]: expected a TaskSpec, got {type(spec).__name__}")
        tasks = [asyncio.ensure_future(self.run(spec, policy=policy)) for spec in specs]
        try:
            return list(await asyncio.gather(*tasks, return_exceptions=return_exceptions))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # every tree ended
            raise

    def cancel(self, name: str | None = None) -> int:
        """End tasks (all, or those named ``name``) as a timeout would — running, waiting for a
        slot or between attempts; their results say ``cancelled``. Returns how many were told."""
        told = 0
        for task in list(self._tasks):
            if name is None or task.label == name:
                task.cancel()
                told += 1
        return told

    # --- inside ------------------------------------------------------------------------------

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:  # a runner outlives loops
            self._slots = asyncio.Semaphore(self.concurrency)
            self._slots_loop = loop
        return self._slots

    async def _run(self, spec: TaskSpec, policy: Policy | None, outlet: Outlet) -> Result:
        if not isinstance(spec, TaskSpec):
            raise PolicyError(f"spec: expected a TaskSpec, got {type(spec).__name__}")
        policy = self.policy if policy is None else check_policy(policy)
        if self.die_with_parent and not policy.die_with_parent:
            policy = replace(policy, die_with_parent=True)
        task = _Task(spec.label)
        self._tasks.add(task)
        started = asyncio.get_running_loop().time()
        outcome = "spawn_failed"
        try:
            result = await self._attempts(spec, policy, outlet, task)
            outcome = result.outcome
            outlet.put(Event("exit", result.name, result.attempts, result=result))
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except TaskFailed as failed:
            outcome = failed.result.outcome  # type: ignore[attr-defined]
            outlet.put(Event("exit", spec.label, failed.result.attempts, result=failed.result))  # type: ignore[attr-defined]
            raise
        finally:
            self._tasks.discard(task)
            self._count(outcome, asyncio.get_running_loop().time() - started)
        return result

    async def _attempts(
        self, spec: TaskSpec, policy: Policy, outlet: Outlet, task: _Task
    ) -> Result:
        attempts = spec.retries + 1
        result: Result | None = None
        for number in range(1, attempts + 1):
            slots = self._slot()
            if not await _acquire(slots, task):
                break  # cancelled while waiting for a slot
            failed: BaseException | None = None
            try:
                attempt = Attempt(
                    spec,
                    policy,
                    number,
                    log=self.log,
                    output=self.output,
                    fixed_env=self.env,
                    outlet=outlet,
                    verify=self.verify,
                )
                task.attempt = attempt
                try:
                    result = await attempt.run()
                except BaseException as err:
                    if not (number < attempts and transient(err) and not task.cancelled):
                        raise
                    failed = err
                finally:
                    task.attempt = None
            finally:
                slots.release()  # not held while backing off
            if failed is not None:
                logger.warning(
                    "task %s: attempt %d could not start (%s); trying again",
                    escape(spec.label),
                    number,
                    spawn_error_text(failed),
                    extra={"task": escape(spec.label)},
                )
            elif result.ok or not spec.fail_on_non_zero or result.cancelled or task.cancelled:
                break
            elif number < attempts:
                logger.warning(
                    "task %s: %s; trying again",
                    escape(spec.label),
                    escape(result.describe()),
                    extra={"task": escape(spec.label)},
                )
            if number < attempts:
                await self._backoff(spec, number, task)
        if result is None:  # cancelled before any attempt ran
            return Result(name=spec.label, cancelled=True, attempts=0)
        if task.cancelled and not result.cancelled:
            result = replace(result, cancelled=True)  # cancelled between attempts
        if spec.fail_on_non_zero and not result.ok and not result.cancelled:
            raise TaskFailed(result)
        return result

    async def _backoff(self, spec: TaskSpec, attempt: int, task: _Task) -> None:
        delay = min(spec.backoff * 2 ** (attempt - 1), _MAX_BACKOFF)
        with_cancel = asyncio.ensure_future(task.woken.wait())
        try:
            await asyncio.wait([with_cancel], timeout=delay)
        finally:
            with_cancel.cancel()

    def _count(self, outcome: str, seconds: float) -> None:
        try:
            self.metrics.task_finished(self.name, outcome, seconds)
        except Exception:  # metrics must never change a task's outcome
            logger.exception("hardexec: the runner's metrics raised")

    async def _feed(self, outlet: Outlet) -> None:
        base = _cancels()
        async for event in outlet.events():
            await self._deliver(event, base)

    async def _deliver(self, event: Event, base: int) -> None:
        """``event`` to the sink. ``base``: how many cancels the current task had before."""
        sink = self.sink
        if sink is None:
            return
        try:
            value = sink(event)
            if inspect.isawaitable(value):
                await value
        except asyncio.CancelledError:
            if _cancels() > base:
                raise  # we are cancelled, not only the sink's own await
            logger.exception("hardexec: the output sink raised on %s", event.kind)
        except Exception:
            logger.exception("hardexec: the output sink raised on %s", event.kind)

    async def _stream(self, spec: TaskSpec, policy: Policy | None) -> AsyncIterator[Event]:
        outlet = Outlet(None, queued=True)  # this loop hands events to the sink too
        queue = outlet.queue
        assert queue is not None
        task = asyncio.ensure_future(self._run(spec, policy, outlet))
        task.add_done_callback(lambda _: queue.put_nowait(END))
        base = _cancels()
        try:
            async for event in outlet.events():
                await self._deliver(event, base)
                yield event
            await task  # raises the task's error, if it had one
        finally:
            if not task.done():
                task.cancel()
                await _finish(task)  # the tree is dead before we go on
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: no "never retrieved" noise


async def _acquire(slots: asyncio.Semaphore, task: _Task) -> bool:
    """Take a slot, or give up (False) when the task is cancelled first."""
    if task.cancelled:
        return False
    acquire = asyncio.ensure_future(slots.acquire())
    woken = asyncio.ensure_future(task.woken.wait())
    try:
        await asyncio.wait([acquire, woken], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled: a slot taken meanwhile goes back
        _give_back(acquire, slots)
        raise
    finally:
        woken.cancel()
    if acquire.done() and not task.cancelled:
        return True
    _give_back(acquire, slots)
    return False


def _give_back(acquire: asyncio.Future[Any], slots: asyncio.Semaphore) -> None:
    """Cancel a pending acquire, or release the slot it got."""
    if not acquire.done():
        acquire.cancel()
    elif not acquire.cancelled() and acquire.exception() is None:
        slots.release()


async def _finish(task: asyncio.Future[Any]) -> None:
    """Wait for ``task`` to end even if we are cancelled meanwhile (each cancel of ours is
    passed on to it: it skips the grace); then re-raise that cancel, never swallow it."""
    base = _cancels()
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                task.cancel()
        except BaseException:
            break
    if _cancels() > base:
        raise asyncio.CancelledError


def _cancels() -> int:
    """Cancel requests pending on the current task (``Task.cancelling``): compared before and
    after a wait, they tell a cancel of ours from one that only ended what we awaited."""
    me = asyncio.current_task()
    return me.cancelling() if me is not None else 0


def _is_async(sink: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(sink) or inspect.iscoroutinefunction(
        getattr(sink, "__call__", None)  # noqa: B004  (an object with an async __call__)
    )
