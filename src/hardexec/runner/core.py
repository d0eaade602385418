"""The :class:`Runner`: many hardened tasks at once, on asyncio (solti-exec's
``SubprocessRunner``)."""

from __future__ import annotations

import asyncio
import inspect

from ..errors import PolicyError, TaskFailed
from ..spawn_core import check_policy
from .attempt import Attempt, Outlet, logger, spawn_error_text, transient
from .config import LogConfig, OutputLimits
from .metrics import Metrics
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
_END = object()  # the stream's last queue item: the task is over


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

    Guarantees, for every task: it runs in its own process group (and cgroup, with one); it
    reads ``/dev/null`` unless given input; when :meth:`run` returns or raises, the program is
    reaped and what it left running has been killed; memory held for its output stays within
    ``output.max_bytes`` per stream and ``log.max_line_bytes`` per line being read.
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
        self.concurrency = concurrency
        self.name = name
        # Validated as a task's env is: no empty names, no '=', no NUL.
        self.env = dict(env_pairs(env or {}, "runner.env"))
        if sink is not None and not callable(sink):
            raise PolicyError(f"runner.sink: {sink!r} is not callable")
        self.sink = sink
        self.metrics = Metrics() if metrics is None else metrics
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None
        self._running: set[Attempt] = set()

    # --- the surface -------------------------------------------------------------------------

    async def run(self, spec: TaskSpec, *, policy: Policy | None = None) -> Result:
        """Run ``spec`` to its end (retries included) and return its :class:`Result`.

        Raises the spawn error of a task that could not start (``FileNotFoundError``,
        :class:`StageError`, …; transient ones after its retries), and :class:`TaskFailed` for a
        non-zero end with ``fail_on_non_zero``. Cancelled, it ends the task's tree (SIGTERM,
        ``kill_after``, SIGKILL; a second cancel skips the grace) and re-raises once the tree
        is dead.
        """
        return await self._run(spec, policy, self._outlet(queued=False))

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
                raise PolicyError(f"specs[{index}]: expected a TaskSpec, got {spec!r}")
        tasks = [asyncio.ensure_future(self.run(spec, policy=policy)) for spec in specs]
        try:
            return list(await asyncio.gather(*tasks, return_exceptions=return_exceptions))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # every tree ended
            raise

    def cancel(self, name: str | None = None) -> int:
        """End running tasks (all, or those named ``name``) as a timeout would; their results
        say ``cancelled``. Returns how many were told."""
        told = 0
        for attempt in list(self._running):
            if name is None or attempt.label == name:
                attempt.cancel()
                told += 1
        return told

    # --- inside ------------------------------------------------------------------------------

    def _outlet(self, queued: bool) -> Outlet:
        sink = self.sink
        is_async = sink is not None and _is_async(sink)
        outlet = Outlet(None if is_async else sink, queued or is_async)
        outlet.feeds_async_sink = is_async
        return outlet

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:  # a runner outlives loops
            self._slots = asyncio.Semaphore(self.concurrency)
            self._slots_loop = loop
        return self._slots

    async def _run(self, spec: TaskSpec, policy: Policy | None, outlet: Outlet) -> Result:
        if not isinstance(spec, TaskSpec):
            raise PolicyError(f"spec: expected a TaskSpec, got {spec!r}")
        policy = self.policy if policy is None else check_policy(policy)
        consumer = None
        if outlet.feeds_async_sink:
            consumer = asyncio.ensure_future(self._feed_async_sink(outlet))
        try:
            result = await self._attempts(spec, policy, outlet)
            outlet.put(Event("exit", result.name, result.attempts, result=result))
            return result
        finally:
            if consumer is not None:
                outlet.queue.put_nowait(_END)  # type: ignore[union-attr]
                await asyncio.shield(consumer)

    async def _attempts(self, spec: TaskSpec, policy: Policy, outlet: Outlet) -> Result:
        attempts = spec.retries + 1
        loop = asyncio.get_running_loop()
        for number in range(1, attempts + 1):
            attempt = Attempt(
                spec,
                policy,
                number,
                log=self.log,
                output=self.output,
                fixed_env=self.env,
                outlet=outlet,
            )
            started = loop.time()
            async with self._slot():
                self._running.add(attempt)
                try:
                    result = await attempt.run()
                except asyncio.CancelledError:
                    self._count("cancelled", loop.time() - started)
                    raise
                except BaseException as err:
                    self._count("spawn_failed", loop.time() - started)
                    if number < attempts and transient(err):
                        logger.warning(
                            "task %s: attempt %d could not start (%s); trying again",
                            spec.label,
                            number,
                            spawn_error_text(err),
                            extra={"task": spec.label},
                        )
                        await asyncio.sleep(_delay(spec, number))
                        continue
                    raise
                finally:
                    self._running.discard(attempt)
            self._count(result.outcome, result.duration)
            if result.ok or not spec.fail_on_non_zero or result.cancelled:
                break
            if number < attempts:
                logger.warning(
                    "task %s: %s; trying again",
                    spec.label,
                    result.describe(),
                    extra={"task": spec.label},
                )
                await asyncio.sleep(_delay(spec, number))
        if spec.fail_on_non_zero and not result.ok:
            raise TaskFailed(result)
        return result

    def _count(self, outcome: str, seconds: float) -> None:
        try:
            self.metrics.task_finished(self.name, outcome, seconds)
        except Exception:  # metrics must never change a task's outcome
            logger.exception("hardexec: the runner's metrics raised")

    async def _feed_async_sink(self, outlet: Outlet) -> None:
        queue = outlet.queue
        assert queue is not None and self.sink is not None
        while (event := await queue.get()) is not _END:
            outlet.taken()
            await self._deliver(event)

    async def _deliver(self, event: Event) -> None:
        sink = self.sink
        if sink is None:
            return
        try:
            value = sink(event)
            if inspect.isawaitable(value):
                await value
        except Exception:
            logger.exception("hardexec: the output sink raised on %s", event.kind)

    async def _stream(self, spec: TaskSpec, policy: Policy | None) -> AsyncIterator[Event]:
        outlet = Outlet(None, True)  # this loop hands events to the sink too
        queue = outlet.queue
        assert queue is not None
        task = asyncio.ensure_future(self._run(spec, policy, outlet))
        task.add_done_callback(lambda _: queue.put_nowait(_END))
        try:
            while (event := await queue.get()) is not _END:
                outlet.taken()
                await self._deliver(event)
                yield event
            await task  # raises the task's error, if it had one
        finally:
            if not task.done():
                task.cancel()
                while not task.done():  # the tree must be dead before we go on
                    try:
                        await asyncio.shield(task)
                    except asyncio.CancelledError:
                        task.cancel()
                    except BaseException:
                        break
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: no "never retrieved" noise


def _is_async(sink: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(sink) or inspect.iscoroutinefunction(
        getattr(sink, "__call__", None)  # noqa: B004  (an object with an async __call__)
    )


def _delay(spec: TaskSpec, attempt: int) -> float:
    return min(spec.backoff * 2 ** (attempt - 1), _MAX_BACKOFF)
