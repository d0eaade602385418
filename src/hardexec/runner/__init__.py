"""The task runner: many hardened tasks at once on asyncio, with streamed and capped output,
timeouts and cancellation that end the whole tree, retries, metrics and truthful results.

    runner = Runner(policy=policy, concurrency=32, name="ci")
    result = await runner.run(TaskSpec.command(["make", "test"], cwd="/src", timeout=600))

Modules, in the order data flows: :mod:`.spec` (what a task is), :mod:`.config` (line and
output caps), :mod:`.attempt` (one attempt, spawn to a dead tree), :mod:`.lines` (bytes →
capped lines → capped memory), :mod:`.result`, :mod:`.metrics`, :mod:`.core` (the Runner).
Names are imported on first use: the command line reads :mod:`.spec` without asyncio.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..errors import TaskFailed
    from .config import LogConfig, OutputLimits
    from .core import Runner
    from .metrics import Metrics, PrometheusMetrics
    from .result import Event, Result, Truncation
    from .spec import TaskSpec

_WHERE = {
    "Event": ".result",
    "LogConfig": ".config",
    "Metrics": ".metrics",
    "OutputLimits": ".config",
    "PrometheusMetrics": ".metrics",
    "Result": ".result",
    "Runner": ".core",
    "TaskFailed": "..errors",
    "TaskSpec": ".spec",
    "Truncation": ".result",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'hardexec.runner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
