"""hardexec: run programs with least privilege on Linux.

Capabilities dropped to an allowlist in all five sets, no privilege gain, a switched identity,
and a truthful report of what the program received — through mirrors of :mod:`subprocess` and
:mod:`asyncio` that never run Python between fork and exec.
"""

from .caps import Capability, CapSet
from .errors import HardexecError, PolicyError, StageError, StageWarning
from .policy import Identity, Policy, SecurityConfig
from .spawn import Popen, Wrapped, create_subprocess_exec, run, wrap

__all__ = [
    "CapSet",
    "Capability",
    "HardexecError",
    "Identity",
    "Policy",
    "PolicyError",
    "Popen",
    "SecurityConfig",
    "StageError",
    "StageWarning",
    "Wrapped",
    "create_subprocess_exec",
    "run",
    "wrap",
]

__version__ = "0.1.0"
