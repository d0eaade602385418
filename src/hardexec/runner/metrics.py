"""Counters and duration histograms per outcome, behind one small interface.

A runner reports every finished task to its ``metrics`` object: ``task_finished(runner,
outcome, seconds)`` with ``outcome`` one of ``success``, ``failure``, ``timeout``,
``cancelled``, ``spawn_failed``. :class:`Metrics` keeps them in memory (always available as
``runner.metrics``); :class:`PrometheusMetrics` exports them through ``prometheus_client``
(the optional ``prometheus`` extra). Anything with that one method will do.
"""

from __future__ import annotations

import bisect
import threading

from .result import OUTCOMES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    class MetricsSink(Protocol):
        """What a runner reports to."""

        def task_finished(self, runner: str, outcome: str, seconds: float) -> None: ...


__all__ = ["BUCKETS", "Metrics", "PrometheusMetrics"]

#: Histogram bucket upper bounds, in seconds (a process spawn is ~1 ms; a CI job, minutes).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)


class Metrics:
    """In-memory counters and histograms, per (runner, outcome); thread-safe.

    ``metrics.count("ci", "success")``, ``metrics.histogram("ci", "success")`` → bucket counts
    (cumulative, as Prometheus has them, the last one ``+Inf``), ``metrics.snapshot()`` → all of
    it as plain data.
    """

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._sums: dict[tuple[str, str], float] = {}
        self._hist: dict[tuple[str, str], list[int]] = {}

    def task_finished(self, runner: str, outcome: str, seconds: float) -> None:
        """Count one finished task."""
        _check(outcome)
        key = (runner, outcome)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            self._sums[key] = self._sums.get(key, 0.0) + seconds
            hist = self._hist.setdefault(key, [0] * (len(self.buckets) + 1))
            hist[bisect.bisect_left(self.buckets, seconds)] += 1

    def count(self, runner: str, outcome: str) -> int:
        """How many tasks of ``runner`` ended with ``outcome``."""
        _check(outcome)
        with self._lock:
            return self._counts.get((runner, outcome), 0)

    def histogram(self, runner: str, outcome: str) -> list[int]:
        """Cumulative bucket counts (``le`` each of :attr:`buckets`, then ``+Inf``)."""
        _check(outcome)
        with self._lock:
            raw = list(self._hist.get((runner, outcome), [0] * (len(self.buckets) + 1)))
        total, out = 0, []
        for value in raw:
            total += value
            out.append(total)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Everything, as ``{runner: {outcome: {"count", "sum", "buckets"}}}``."""
        with self._lock:
            keys = list(self._counts)
        shot: dict[str, Any] = {}
        for runner, outcome in keys:
            shot.setdefault(runner, {})[outcome] = {
                "count": self.count(runner, outcome),
                "sum": self._sums[(runner, outcome)],
                "buckets": self.histogram(runner, outcome),
            }
        return shot


def _check(outcome: str) -> None:
    """A misspelt outcome is an error, not a count of zero."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome: {outcome!r} is not one of {', '.join(OUTCOMES)}")


class PrometheusMetrics:
    """The same figures as Prometheus metrics (needs ``prometheus_client``).

    ``hardexec_tasks_total{runner,outcome}`` (a counter) and
    ``hardexec_task_duration_seconds{runner,outcome}`` (a histogram with :data:`BUCKETS`), in
    ``registry`` (default: ``prometheus_client``'s global one).
    """

    def __init__(self, registry: Any = None, namespace: str = "hardexec") -> None:
        try:
            import prometheus_client
        except ImportError:
            raise ImportError(
                "PrometheusMetrics needs prometheus_client: pip install 'hardexec[prometheus]'"
            ) from None
        kwargs = {} if registry is None else {"registry": registry}
        self.tasks = prometheus_client.Counter(
            "tasks",
            "Tasks finished, by outcome.",
            ["runner", "outcome"],
            namespace=namespace,
            **kwargs,
        )
        self.duration = prometheus_client.Histogram(
            "task_duration_seconds",
            "Seconds from spawn to the end of the task's tree, by outcome.",
            ["runner", "outcome"],
            namespace=namespace,
            buckets=BUCKETS,
            **kwargs,
        )

    def task_finished(self, runner: str, outcome: str, seconds: float) -> None:
        """Count one finished task."""
        self.tasks.labels(runner=runner, outcome=outcome).inc()
        self.duration.labels(runner=runner, outcome=outcome).observe(seconds)
