"""What a program used, and whether the OOM killer ended it: from its cgroup, else from rusage."""

from __future__ import annotations

import resource
from typing import Literal

from ._record import frozen

__all__ = ["Usage"]


@frozen
class Usage:
    """Resources a finished program used. ``None`` means "not measured by this source".

    From the program's cgroup (``source="cgroup"``) the figures cover the program and every
    process it started; from ``wait4`` rusage (``source="rusage"``, when it had no group) they
    cover the program and the descendants it waited for.

    Attributes:
        cpu_user: seconds of CPU in user mode.
        cpu_system: seconds of CPU in the kernel.
        cpu_throttled: seconds the group was held back by ``cpu.max`` (cgroup only).
        memory_peak: the highest memory use in bytes (``memory.peak``, cgroup only: rusage's max
            RSS cannot be trusted here, since a vfork'd child's count starts from the launcher's
            own resident memory).
        pids_peak: the most processes the group held at once (``pids.peak``, Linux 6.1+).
        oom_killed: whether the OOM killer killed a process of the group (cgroup only).
    """

    source: Literal["cgroup", "rusage"]
    cpu_user: float | None = None
    cpu_system: float | None = None
    cpu_throttled: float | None = None
    memory_peak: int | None = None
    pids_peak: int | None = None
    oom_killed: bool | None = None

    @classmethod
    def from_rusage(cls, rusage: resource.struct_rusage) -> Usage:
        """From ``os.wait4``'s rusage: CPU times only (see ``memory_peak``)."""
        return cls(source="rusage", cpu_user=rusage.ru_utime, cpu_system=rusage.ru_stime)

    @classmethod
    def from_cgroup_files(cls, files: dict[str, str | None]) -> Usage:
        """From the texts of ``cpu.stat``, ``memory.peak``, ``memory.events``, ``pids.peak``
        (``None`` for a file the kernel does not have)."""
        cpu = _keyed(files.get("cpu.stat"))
        events = _keyed(files.get("memory.events"))
        return cls(
            source="cgroup",
            cpu_user=_seconds(cpu.get("user_usec")),
            cpu_system=_seconds(cpu.get("system_usec")),
            cpu_throttled=_seconds(cpu.get("throttled_usec")),
            memory_peak=_number(files.get("memory.peak")),
            pids_peak=_number(files.get("pids.peak")),
            oom_killed=events["oom_kill"] > 0 if "oom_kill" in events else None,
        )


def _keyed(text: str | None) -> dict[str, int]:
    """``"key value"`` lines (cpu.stat, memory.events) → {key: value}."""
    pairs = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdecimal():
            pairs[key] = int(value)
    return pairs


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdecimal() else None


def _seconds(usec: int | None) -> float | None:
    return None if usec is None else usec / 1e6
