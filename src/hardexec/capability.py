"""The :class:`Capability` enum: every capability of the Linux kernel, by name and number.

Its own module, imported on first use (``hardexec.Capability``, ``hardexec.caps.Capability``):
creating an enum, and importing :mod:`enum` at all, is a good part of what ``hardexec run``
would otherwise spend starting up, and parsing capabilities needs only the names
(:data:`hardexec.caps.NAMES`).
"""

from __future__ import annotations

import enum

from .caps import parse_cap

__all__ = ["Capability"]


class Capability(enum.IntEnum):
    """Every capability of the Linux kernel, by number (see capabilities(7))."""

    CHOWN = 0
    DAC_OVERRIDE = 1
    DAC_READ_SEARCH = 2
    FOWNER = 3
    FSETID = 4
    KILL = 5
    SETGID = 6
    SETUID = 7
    SETPCAP = 8
    LINUX_IMMUTABLE = 9
    NET_BIND_SERVICE = 10
    NET_BROADCAST = 11
    NET_ADMIN = 12
    NET_RAW = 13
    IPC_LOCK = 14
    IPC_OWNER = 15
    SYS_MODULE = 16
    SYS_RAWIO = 17
    SYS_CHROOT = 18
    SYS_PTRACE = 19
    SYS_PACCT = 20
    SYS_ADMIN = 21
    SYS_BOOT = 22
    SYS_NICE = 23
    SYS_RESOURCE = 24
    SYS_TIME = 25
    SYS_TTY_CONFIG = 26
    MKNOD = 27
    LEASE = 28
    AUDIT_WRITE = 29
    AUDIT_CONTROL = 30
    SETFCAP = 31
    MAC_OVERRIDE = 32
    MAC_ADMIN = 33
    SYSLOG = 34
    WAKE_ALARM = 35
    BLOCK_SUSPEND = 36
    AUDIT_READ = 37
    PERFMON = 38
    BPF = 39
    CHECKPOINT_RESTORE = 40

    @property
    def description(self) -> str:
        """One line saying what the capability allows."""
        return _DESCRIPTIONS[self]

    @property
    def kernel_name(self) -> str:
        """The name as the kernel headers and capabilities(7) spell it: ``CAP_NET_ADMIN``."""
        return "CAP_" + self.name

    @classmethod
    def parse(cls, value: str | int, *, field: str = "capability") -> int:
        """Parse a capability given as a name or a number.

        Accepts ``NET_ADMIN``, ``CAP_NET_ADMIN``, ``net_admin``, ``cap_net_admin`` and ``12``.
        Returns the :class:`Capability` member, or a plain ``int`` for 41..63 (capabilities of
        kernels newer than this module). Anything else raises :class:`PolicyError` naming
        ``field`` and the value, with close names suggested for a misspelling.
        """
        number = parse_cap(value, field=field)
        return cls(number) if number in cls._value2member_map_ else number


_DESCRIPTIONS: dict[Capability, str] = {
    Capability.CHOWN: "make arbitrary changes to file UIDs and GIDs",
    Capability.DAC_OVERRIDE: "bypass file read, write and execute permission checks",
    Capability.DAC_READ_SEARCH: "bypass file read and directory read/search permission checks",
    Capability.FOWNER: "bypass checks that require the caller to own the file",
    Capability.FSETID: "keep set-user-ID and set-group-ID bits when a file is modified",
    Capability.KILL: "bypass permission checks for sending signals",
    Capability.SETGID: "set arbitrary GIDs and supplementary groups",
    Capability.SETUID: "set arbitrary UIDs",
    Capability.SETPCAP: "change capability sets and the bounding set; set securebits",
    Capability.LINUX_IMMUTABLE: "set the immutable and append-only file attributes",
    Capability.NET_BIND_SERVICE: "bind a socket to a privileged port (below 1024)",
    Capability.NET_BROADCAST: "make socket broadcasts and listen to multicasts (unused)",
    Capability.NET_ADMIN: "administer networking: interfaces, routes, firewall, sockets options",
    Capability.NET_RAW: "use RAW and PACKET sockets; bind to any address (transparent proxy)",
    Capability.IPC_LOCK: "lock memory (mlock, mlockall, MAP_LOCKED, SHM_LOCK)",
    Capability.IPC_OWNER: "bypass permission checks on System V IPC objects",
    Capability.SYS_MODULE: "load and unload kernel modules",
    Capability.SYS_RAWIO: "raw I/O port access (iopl, ioperm), /dev/mem and /dev/kmem",
    Capability.SYS_CHROOT: "use chroot(2) and change mount namespaces with setns(2)",
    Capability.SYS_PTRACE: "trace and inspect arbitrary processes (ptrace, process_vm_readv)",
    Capability.SYS_PACCT: "switch process accounting on and off (acct)",
    Capability.SYS_ADMIN: "a wide range of system administration: mount, sethostname, …",
    Capability.SYS_BOOT: "reboot and load a new kernel (kexec_load)",
    Capability.SYS_NICE: "raise priority and change scheduling of arbitrary processes",
    Capability.SYS_RESOURCE: "override resource limits, quotas and reserved space",
    Capability.SYS_TIME: "set the system clock and the real-time hardware clock",
    Capability.SYS_TTY_CONFIG: "vhangup(2) and privileged ioctls on virtual terminals",
    Capability.MKNOD: "create special files with mknod(2)",
    Capability.LEASE: "establish leases on arbitrary files",
    Capability.AUDIT_WRITE: "write records to the kernel audit log",
    Capability.AUDIT_CONTROL: "enable and disable kernel auditing; change audit rules",
    Capability.SETFCAP: "set arbitrary capabilities on a file",
    Capability.MAC_OVERRIDE: "override Mandatory Access Control (Smack)",
    Capability.MAC_ADMIN: "change Mandatory Access Control configuration (Smack)",
    Capability.SYSLOG: "privileged syslog(2) operations; see kernel addresses in /proc",
    Capability.WAKE_ALARM: "trigger something that will wake the system",
    Capability.BLOCK_SUSPEND: "employ features that can block system suspend",
    Capability.AUDIT_READ: "read the audit log via a multicast netlink socket",
    Capability.PERFMON: "employ performance monitoring (perf_event_open)",
    Capability.BPF: "employ privileged BPF operations",
    Capability.CHECKPOINT_RESTORE: "checkpoint/restore operations (set_tid, map_files)",
}
