"""Booting the VM tier's kernel with virtme-ng: shared by tests/vm and bench/spawn.py --vm.

The VM sees the host's filesystem read-only and runs one shell command as root; its cgroup v2
offers the memory, pids and cpu controllers this host's lacks (DESIGN.md).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path


def vng() -> str | None:
    """virtme-ng's command, preferably the one installed beside this Python."""
    beside = Path(sys.executable).parent / "vng"
    return str(beside) if beside.exists() else shutil.which("vng")


def kernel() -> str | None:
    """The newest installed kernel image."""
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    return kernels[-1] if kernels else None


def why_not() -> str | None:
    """Why the VM cannot be booted here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "the VM tier needs Linux"
    if os.geteuid() != 0:
        return "the VM tier needs root (cgroup v2 limits are set by root inside the VM)"
    if vng() is None:
        return "virtme-ng (vng) is not installed: ./run-tests installs it"
    if kernel() is None:
        return "no /boot/vmlinuz-*: ./run-tests installs linux-image-amd64"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed: ./run-tests installs qemu-system-x86"
    return None


def command(shell_command: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that boot the VM and run ``shell_command`` in it."""
    argv = [
        vng() or "vng",
        "--disable-kvm",  # KVM hangs at boot on this machine kind (DESIGN.md)
        "-r", kernel() or "",
        "--memory", "1G",
        "--cpus", "2",
        "--exec", shell_command,
    ]  # fmt: skip
    # vng starts its helpers (virtme-run, …) by name: they sit beside it
    path = f"{Path(argv[0]).parent}:{os.environ.get('PATH', '')}"
    return argv, {**os.environ, "PATH": path}
