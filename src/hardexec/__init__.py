"""hardexec: run programs with least privilege on Linux.

Capabilities dropped to an allowlist in all five sets, no privilege gain, a switched identity,
resource ceilings (rlimits, a cgroup v2 group per program), whole-tree kill, and a truthful
report of what the program received and used — through mirrors of :mod:`subprocess` and
:mod:`asyncio` that never run Python between fork and exec.
"""

from .caps import Capability, CapSet
from .cgroups import Cgroup
from .errors import CgroupError, HardexecError, PolicyError, StageError, StageWarning
from .policy import CgroupLimits, CpuMax, Identity, Policy, RlimitConfig, SecurityConfig
from .spawn import (
    CompletedProcess,
    Popen,
    Process,
    Wrapped,
    create_subprocess_exec,
    run,
    wrap,
)
from .usage import Usage

__all__ = [
    "CapSet",
    "Capability",
    "Cgroup",
    "CgroupError",
    "CgroupLimits",
    "CompletedProcess",
    "CpuMax",
    "HardexecError",
    "Identity",
    "Policy",
    "PolicyError",
    "Popen",
    "Process",
    "RlimitConfig",
    "SecurityConfig",
    "StageError",
    "StageWarning",
    "Usage",
    "Wrapped",
    "create_subprocess_exec",
    "run",
    "wrap",
]

__version__ = "0.1.0"
