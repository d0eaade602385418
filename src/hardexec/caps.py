"""Linux capabilities: names, numbers, parsing, and 64-bit capability sets.

:class:`Capability` names every capability the kernel defines today (0..40). Kernels newer than
this module may define more; wherever hardexec accepts capabilities it also accepts plain numbers
up to 63, the last one the v3 ``capget``/``capset`` ABI (two 32-bit words) can express.

:class:`CapSet` is an immutable set of capabilities over those 64 bits, laid out like the kernel's
v3 ABI (and solti-exec's ``KeepMask``): word 0 holds caps 0..31, word 1 holds caps 32..63.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import PolicyError

__all__ = ["MAX_CAP", "Capability", "CapSet", "parse_cap"]

#: The last capability number the v3 capability ABI can carry (two u32 words).
MAX_CAP = 63


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
        return parse_cap(value, field=field)


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

_BY_NAME: dict[str, Capability] = {cap.name: cap for cap in Capability}


def parse_cap(value: object, *, field: str = "capability") -> int:
    """Parse one capability; see :meth:`Capability.parse`. ``field`` names it in errors."""
    if isinstance(value, bool):  # True is an int; never a capability
        raise PolicyError(f"{field}: {value!r} is not a capability")
    if isinstance(value, int):
        return _from_number(value, field, value)
    if not isinstance(value, str):
        raise PolicyError(f"{field}: {value!r} is not a capability name or number")
    text = value.strip()
    if text.isascii() and text.isdecimal():  # not Arabic-Indic digits, say
        return _from_number(int(text), field, value)
    key = text.upper()
    if key.startswith("CAP_"):
        key = key[4:]
    if key in _BY_NAME:
        return _BY_NAME[key]
    import difflib  # only on this error path: it costs start-up time otherwise

    close = difflib.get_close_matches(key, _BY_NAME, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `hardexec caps` lists them"
    raise PolicyError(f"{field}: unknown capability {value!r}{hint}")


def _from_number(number: int, field: str, shown: object) -> int:
    if 0 <= number <= MAX_CAP:
        return Capability(number) if number in _NUMBERS else number
    raise PolicyError(f"{field}: capability number {shown!r} is outside 0..{MAX_CAP}")


_NUMBERS = frozenset(int(cap) for cap in Capability)


def cap_name(number: int) -> str:
    """``NET_ADMIN`` for 12; the bare number (``"41"``) for a capability this module predates."""
    return Capability(number).name if number in _NUMBERS else str(number)


@dataclass(frozen=True, slots=True)
class CapSet:
    """An immutable set of capabilities over 64 bits (the v3 ABI's two u32 words).

    Build one with ``CapSet.of(Capability.CHOWN, "net_admin", 40)`` or ``CapSet.from_hex(...)``.
    Membership of any number outside 0..63 (or of a non-number) is ``False``, never an error.
    """

    mask: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.mask, int) or isinstance(self.mask, bool):
            raise PolicyError(f"CapSet.mask: {self.mask!r} is not an integer")
        if not 0 <= self.mask < 1 << (MAX_CAP + 1):
            raise PolicyError(f"CapSet.mask: {self.mask:#x} does not fit in 64 bits")

    @classmethod
    def of(cls, *caps: str | int) -> CapSet:
        """A set of the given capabilities (names or numbers, any spelling ``parse`` accepts)."""
        return cls.from_caps(caps)

    @classmethod
    def from_caps(cls, caps: Iterable[str | int], *, field: str = "capability") -> CapSet:
        """A set of the given capabilities; duplicates are idempotent."""
        mask = 0
        for index, cap in enumerate(caps):
            mask |= 1 << parse_cap(cap, field=f"{field}[{index}]")
        return cls(mask)

    @classmethod
    def from_words(cls, word0: int, word1: int) -> CapSet:
        """From the v3 ABI words: ``word0`` = caps 0..31, ``word1`` = caps 32..63."""
        for name, word in (("word0", word0), ("word1", word1)):
            if not 0 <= word <= 0xFFFFFFFF:
                raise PolicyError(f"CapSet.{name}: {word!r} is not a 32-bit word")
        return cls(word0 | word1 << 32)

    @classmethod
    def from_hex(cls, text: str) -> CapSet:
        """From hex as ``/proc/<pid>/status`` prints it (``000001fffeffffff``); ``0x`` optional."""
        digits = text.strip()
        if digits[:2].lower() == "0x":
            digits = digits[2:]
        try:
            mask = int(digits, 16) if digits and "_" not in digits else -1
        except ValueError:
            mask = -1
        if not 0 <= mask < 1 << (MAX_CAP + 1):
            raise PolicyError(f"capability mask: {text!r} is not a 64-bit hex number")
        return cls(mask)

    @classmethod
    def all_known(cls) -> CapSet:
        """Every capability :class:`Capability` names (0..40)."""
        return cls.from_caps(Capability)

    @property
    def words(self) -> tuple[int, int]:
        """The two u32 words of the v3 ABI: (caps 0..31, caps 32..63)."""
        return self.mask & 0xFFFFFFFF, self.mask >> 32

    def to_hex(self) -> str:
        """16 hex digits, as in ``/proc/<pid>/status`` (``CapEff: 0000000000000400``)."""
        return f"{self.mask:016x}"

    def names(self) -> list[str]:
        """Names in ascending number order (bare numbers for caps newer than this module)."""
        return [cap_name(number) for number in self]

    def issubset(self, other: CapSet) -> bool:
        """True when every capability here is also in ``other``."""
        return self.mask & ~other.mask == 0

    def __contains__(self, cap: object) -> bool:
        if isinstance(cap, bool) or not isinstance(cap, int):
            return False
        return 0 <= cap <= MAX_CAP and bool(self.mask >> cap & 1)

    def __iter__(self) -> Iterator[int]:
        for number in range(MAX_CAP + 1):
            if self.mask >> number & 1:
                yield Capability(number) if number in _NUMBERS else number

    def __len__(self) -> int:
        return self.mask.bit_count()

    def __bool__(self) -> bool:
        return self.mask != 0

    def __or__(self, other: CapSet) -> CapSet:
        return CapSet(self.mask | other.mask) if isinstance(other, CapSet) else NotImplemented

    def __and__(self, other: CapSet) -> CapSet:
        return CapSet(self.mask & other.mask) if isinstance(other, CapSet) else NotImplemented

    def __sub__(self, other: CapSet) -> CapSet:
        return CapSet(self.mask & ~other.mask) if isinstance(other, CapSet) else NotImplemented

    def __str__(self) -> str:
        return ",".join(self.names()) or "(none)"

    def __repr__(self) -> str:
        return f"CapSet({', '.join(self.names())})" if self else "CapSet()"
