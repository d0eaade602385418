"""hardexec: run programs with least privilege on Linux.

Capabilities dropped to an allowlist in all five sets, no privilege gain, a switched identity,
resource ceilings (rlimits, a cgroup v2 group per program), whole-tree kill, and a truthful
report of what the program received and used — through mirrors of :mod:`subprocess` and
:mod:`asyncio` that never run Python between fork and exec.

Names are imported on first use: ``import hardexec`` costs almost nothing, and asyncio is
loaded only by code that uses :func:`create_subprocess_exec`.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing itself is not imported: it costs start-up time
if TYPE_CHECKING:
    from typing import Any

    from .aio import Process, create_subprocess_exec
    from .capability import Capability
    from .caps import CapSet
    from .cgroups import Cgroup
    from .confine import Confinement, PathRule, SyscallFilter
    from .errors import (
        CeilingError,
        CgroupError,
        HardexecError,
        PolicyError,
        SpawnFailed,
        StageError,
        StageWarning,
        TaskFailed,
        VerifyError,
    )
    from .policy import CgroupLimits, CpuMax, Identity, Policy, RlimitConfig, SecurityConfig
    from .runner import (
        Event,
        LogConfig,
        Metrics,
        OutputLimits,
        PrometheusMetrics,
        Result,
        Runner,
        TaskSpec,
        Truncation,
    )
    from .spawn import CompletedProcess, Popen, Wrapped, run, wrap
    from .usage import Usage

_WHERE = {
    "CapSet": "caps",
    "Capability": "capability",
    "Cgroup": "cgroups",
    "CeilingError": "errors",
    "CgroupError": "errors",
    "CgroupLimits": "policy",
    "CompletedProcess": "spawn",
    "Confinement": "confine",
    "CpuMax": "policy",
    "Event": "runner",
    "HardexecError": "errors",
    "Identity": "policy",
    "LogConfig": "runner",
    "Metrics": "runner",
    "OutputLimits": "runner",
    "PathRule": "confine",
    "Policy": "policy",
    "PolicyError": "errors",
    "SpawnFailed": "errors",
    "Popen": "spawn",
    "Process": "aio",
    "PrometheusMetrics": "runner",
    "Result": "runner",
    "RlimitConfig": "policy",
    "Runner": "runner",
    "SecurityConfig": "policy",
    "StageError": "errors",
    "StageWarning": "errors",
    "SyscallFilter": "confine",
    "TaskFailed": "errors",
    "TaskSpec": "runner",
    "Truncation": "runner",
    "Usage": "usage",
    "VerifyError": "errors",
    "Wrapped": "spawn",
    "create_subprocess_exec": "aio",
    "run": "spawn",
    "wrap": "spawn",
}

__all__ = [
    "CapSet",
    "Capability",
    "CeilingError",
    "Cgroup",
    "CgroupError",
    "CgroupLimits",
    "CompletedProcess",
    "Confinement",
    "CpuMax",
    "Event",
    "HardexecError",
    "Identity",
    "LogConfig",
    "Metrics",
    "OutputLimits",
    "PathRule",
    "Policy",
    "PolicyError",
    "SpawnFailed",
    "Popen",
    "Process",
    "PrometheusMetrics",
    "Result",
    "RlimitConfig",
    "Runner",
    "SecurityConfig",
    "StageError",
    "StageWarning",
    "SyscallFilter",
    "TaskFailed",
    "TaskSpec",
    "Truncation",
    "Usage",
    "VerifyError",
    "Wrapped",
    "create_subprocess_exec",
    "run",
    "wrap",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'hardexec' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once is enough
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
