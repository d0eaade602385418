"""Confinement: what a program may touch — files and TCP ports (Landlock), syscalls (seccomp),
namespaces (network, pid, ipc, uts) and its umask. See :class:`Confinement`."""

from .config import ACCESS, NAMESPACES, Confinement, PathRule, SyscallFilter

__all__ = ["ACCESS", "NAMESPACES", "Confinement", "PathRule", "SyscallFilter"]
