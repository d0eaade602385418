"""Linux capabilities: names, numbers, parsing, and 64-bit capability sets.

:class:`Capability` names every capability the kernel defines today (0..40). Kernels newer than
this module may define more; wherever hardexec accepts capabilities it also accepts plain numbers
up to 63, the last one the v3 ``capget``/``capset`` ABI (two 32-bit words) can express.

:class:`CapSet` is an immutable set of capabilities over those 64 bits, laid out like the kernel's
v3 ABI (and solti-exec's ``KeepMask``): word 0 holds caps 0..31, word 1 holds caps 32..63.
"""

from __future__ import annotations

from ._record import frozen
from .errors import PolicyError

TYPE_CHECKING = False
if TYPE_CHECKING:  # collections.abc costs start-up time: annotations only
    from collections.abc import Iterable, Iterator

    from .capability import Capability

__all__ = ["MAX_CAP", "NAMES", "CapSet", "Capability", "cap_name", "parse_cap"]

#: The last capability number the v3 capability ABI can carry (two u32 words).
MAX_CAP = 63


#: Capability names by number, as the kernel defines them today (the :class:`Capability` enum
#: has the same members; a test keeps both in step). Parsing needs only these.
NAMES: tuple[str, ...] = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
)
_BY_NAME: dict[str, int] = {name: number for number, name in enumerate(NAMES)}


def __getattr__(name: str) -> object:
    if name == "Capability":  # built on first use: see hardexec.capability
        from .capability import Capability

        return Capability
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_cap(value: object, *, field: str = "capability") -> int:
    """Parse one capability to its number; see :meth:`Capability.parse` for the spellings.
    ``field`` names it in errors."""
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
        return number
    raise PolicyError(f"{field}: capability number {shown!r} is outside 0..{MAX_CAP}")


def cap_name(number: int) -> str:
    """``NET_ADMIN`` for 12; the bare number (``"41"``) for a capability this module predates."""
    return NAMES[number] if 0 <= number < len(NAMES) else str(number)


@frozen
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
        return cls((1 << len(NAMES)) - 1)

    @property
    def words(self) -> tuple[int, int]:
        """The two u32 words of the v3 ABI: (caps 0..31, caps 32..63)."""
        return self.mask & 0xFFFFFFFF, self.mask >> 32

    def to_hex(self) -> str:
        """16 hex digits, as in ``/proc/<pid>/status`` (``CapEff: 0000000000000400``)."""
        return f"{self.mask:016x}"

    def names(self) -> list[str]:
        """Names in ascending number order (bare numbers for caps newer than this module)."""
        return [cap_name(n) for n in range(MAX_CAP + 1) if self.mask >> n & 1]

    def issubset(self, other: CapSet) -> bool:
        """True when every capability here is also in ``other``."""
        return self.mask & ~other.mask == 0

    def __contains__(self, cap: object) -> bool:
        if isinstance(cap, bool) or not isinstance(cap, int):
            return False
        return 0 <= cap <= MAX_CAP and bool(self.mask >> cap & 1)

    def __iter__(self) -> Iterator[int]:
        """The :class:`Capability` members in the set (plain ints for caps newer than it)."""
        from .capability import Capability

        for number in range(MAX_CAP + 1):
            if self.mask >> number & 1:
                yield Capability(number) if number < len(NAMES) else number

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
