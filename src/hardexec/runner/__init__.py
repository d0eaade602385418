"""The task runner: many hardened tasks at once on asyncio, with streamed and capped output,
timeouts and cancellation that end the whole tree, retries, metrics and truthful results.

    runner = Runner(policy=policy, concurrency=32, name="ci")
    result = await runner.run(TaskSpec.command(["make", "test"], cwd="/src", timeout=600))

Modules, in the order data flows: :mod:`.spec` (what a task is), :mod:`.config` (line and
output caps), :mod:`.attempt` (one attempt, spawn to a dead tree), :mod:`.lines` (bytes →
capped lines → capped memory), :mod:`.result`, :mod:`.metrics`, :mod:`.core` (the Runner).
"""

from __future__ import annotations

from ..errors import TaskFailed
from .config import LogConfig, OutputLimits
from .core import Runner
from .metrics import Metrics, PrometheusMetrics
from .result import Event, Result, Truncation
from .spec import TaskSpec

__all__ = [
    "Event",
    "LogConfig",
    "Metrics",
    "OutputLimits",
    "PrometheusMetrics",
    "Result",
    "Runner",
    "TaskFailed",
    "TaskSpec",
    "Truncation",
]
