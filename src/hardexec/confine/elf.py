"""ELF headers read with :mod:`struct`, never run: what kind of file a program is, its loader
(``PT_INTERP``) and what its dynamic section names (``DT_NEEDED``, ``DT_RPATH``, ``DT_RUNPATH``,
``DT_SONAME``), for :mod:`hardexec.confine.deps`. 32 and 64-bit, either byte order; every read
is bounded, so a crafted file cannot make a look-up hang or eat memory."""

from __future__ import annotations

import functools
import os
import stat
import struct
import sys

# Bounds (real programs stay far below each): program headers, dynamic section, needed names
# of one object, one string (PATH_MAX), a string table read at once.
_MAX_PHDRS = 65536  # bytes of program headers (the kernel refuses more)
_MAX_DYNAMIC = 65536  # bytes of dynamic section read
_MAX_NEEDED = 1024  # DT_NEEDED entries of one object
_MAX_STRING = 4096  # bytes of one string (PATH_MAX)
_MAX_STRTAB = 65536  # a string table up to this size is read at once, a larger one per string
SCRIPT_HEAD = 256  # what the kernel reads of a file to tell a #! script (BINPRM_BUF_SIZE)

ET_EXEC, ET_DYN = 2, 3
_PT_LOAD, _PT_DYNAMIC, _PT_INTERP = 1, 2, 3
_DT_NULL, _DT_NEEDED, _DT_STRTAB, _DT_STRSZ = 0, 1, 5, 10
_DT_SONAME, _DT_RPATH, _DT_RUNPATH = 14, 15, 29
EF_ARM_ABI_FLOAT_HARD = 0x400

# Debian's multiarch directory for (e_machine, ELF class, byte order): the default search of
# a program of that architecture. A machine not listed still gets /lib64, /usr/lib64, ...
MULTIARCH = {
    (3, 1, 1): "i386-linux-gnu",
    (62, 2, 1): "x86_64-linux-gnu",
    (62, 1, 1): "x86_64-linux-gnux32",
    (183, 2, 1): "aarch64-linux-gnu",
    (183, 2, 2): "aarch64_be-linux-gnu",
    (20, 1, 2): "powerpc-linux-gnu",
    (21, 2, 1): "powerpc64le-linux-gnu",
    (21, 2, 2): "powerpc64-linux-gnu",
    (22, 2, 2): "s390x-linux-gnu",
    (243, 2, 1): "riscv64-linux-gnu",
    (258, 2, 1): "loongarch64-linux-gnu",
}

# Per (class, byte order): ELF header, program header, dynamic entry.
_LAYOUTS: dict[tuple[int, int], tuple[struct.Struct, struct.Struct, struct.Struct]] = {}


def _layout(elf_class: int, data: int) -> tuple[struct.Struct, struct.Struct, struct.Struct]:
    key = (elf_class, data)
    found = _LAYOUTS.get(key)
    if found is None:
        order = "<" if data == 1 else ">"
        if elf_class == 2:
            found = (
                struct.Struct(order + "16xHHIQQQIHHH"),
                struct.Struct(order + "IIQQQQQQ"),
                struct.Struct(order + "qQ"),
            )
        else:
            found = (
                struct.Struct(order + "16xHHIIIIIHHH"),
                struct.Struct(order + "IIIIIIII"),
                struct.Struct(order + "iI"),
            )
        _LAYOUTS[key] = found
    return found


class Elf:
    """What the loader needs of one ELF object (strings decoded with ``os.fsdecode``)."""

    __slots__ = ("flags", "interp", "kind", "machine", "needed", "rpath", "runpath", "soname")

    def __init__(self, machine: tuple[int, int, int], kind: int, flags: int) -> None:
        self.machine = machine  # (e_machine, class, byte order): what "compatible" compares
        self.kind = kind  # e_type
        self.flags = flags  # e_flags (the ARM float ABI)
        self.interp: str | None = None
        self.needed: list[str] = []
        self.soname: str | None = None
        self.rpath: str | None = None
        self.runpath: str | None = None


def parse_elf(fd: int, head: bytes) -> Elf | None:
    """The ELF object open on ``fd`` (``head``: its first bytes), or None when it is not one.

    Every read is bounded and any inconsistency ends the parse: a hostile file gets None
    (or an object without dependencies), never an exception or a long loop.
    """
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    elf_class, data = head[4], head[5]
    header, phdr, dyn = _layout(elf_class, data)
    if len(head) < header.size:
        return None
    kind, machine, _, _, phoff, _, flags, _, phentsize, phnum = header.unpack_from(head)
    if phentsize != phdr.size or not 0 < phnum * phentsize <= _MAX_PHDRS:
        return None  # the kernel refuses such an executable too (and PN_XNUM with it)
    elf = Elf((machine, elf_class, data), kind, flags)
    try:
        table = os.pread(fd, phnum * phentsize, phoff)
    except (OSError, OverflowError):
        return None
    if len(table) != phnum * phentsize:
        return None
    loads, interp, dynamic = [], None, None
    for entry in phdr.iter_unpack(table):
        if elf_class == 2:
            p_type, _, offset, vaddr, _, filesz, _, _ = entry
        else:
            p_type, offset, vaddr, _, filesz, _, _, _ = entry
        if p_type == _PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == _PT_INTERP and interp is None:
            interp = (offset, filesz)
        elif p_type == _PT_DYNAMIC and dynamic is None:
            dynamic = (offset, filesz)
    try:
        if interp is not None:
            elf.interp = _interp(fd, *interp)
        if dynamic is not None:
            _read_dynamic(fd, elf, dyn, loads, dynamic)
    except (OSError, OverflowError, struct.error):
        pass  # what was read is kept; a loader given such a file fails anyway
    return elf


def _interp(fd: int, offset: int, size: int) -> str | None:
    # The kernel's own checks: at most PATH_MAX, NUL-terminated.
    if not 2 <= size <= _MAX_STRING:
        return None
    text = os.pread(fd, size, offset)
    if len(text) != size or text[-1] != 0:
        return None
    name = text[: text.index(b"\0")]
    return os.fsdecode(name) if name else None


def _read_dynamic(
    fd: int,
    elf: Elf,
    dyn: struct.Struct,
    loads: list[tuple[int, int, int]],
    where: tuple[int, int],
) -> None:
    offset, size = where
    size = min(size, _MAX_DYNAMIC) // dyn.size * dyn.size
    table = os.pread(fd, size, offset)
    table = table[: len(table) // dyn.size * dyn.size]
    needed, strtab, strsz, soname, rpath, runpath = [], None, None, None, None, None
    for tag, value in dyn.iter_unpack(table):
        if tag == _DT_NULL:
            break
        if tag == _DT_NEEDED:
            if len(needed) < _MAX_NEEDED:
                needed.append(value)
        elif tag == _DT_STRTAB:
            strtab = value
        elif tag == _DT_STRSZ:
            strsz = value
        elif tag == _DT_SONAME:
            soname = value
        elif tag == _DT_RPATH:
            rpath = value
        elif tag == _DT_RUNPATH:
            runpath = value
    if strtab is None:
        return
    # DT_STRTAB is an address in memory: find the file offset of the segment holding it.
    base = next((off + strtab - va for va, off, sz in loads if va <= strtab < va + sz), None)
    if base is None:
        return
    strings = _Strings(fd, base, strsz)
    elf.needed = [name for name in map(strings.get, needed) if name]
    elf.soname = strings.get(soname)
    elf.rpath = strings.get(rpath)
    elf.runpath = strings.get(runpath)


class _Strings:
    """Strings of a string table, read whole when small, one by one (bounded) when not."""

    __slots__ = ("base", "fd", "size", "table")

    def __init__(self, fd: int, base: int, size: int | None) -> None:
        self.fd, self.base, self.size = fd, base, size
        self.table = os.pread(fd, size, base) if size is not None and size <= _MAX_STRTAB else None

    def get(self, offset: int | None) -> str | None:
        if offset is None or (self.size is not None and offset >= self.size):
            return None
        if self.table is not None:
            end = self.table.find(b"\0", offset, offset + _MAX_STRING)
            text = self.table[offset:end] if end >= 0 else b""
        else:
            limit = _MAX_STRING if self.size is None else min(_MAX_STRING, self.size - offset)
            chunk = os.pread(self.fd, limit, self.base + offset)
            end = chunk.find(b"\0")
            text = chunk[:end] if end >= 0 else b""
        return os.fsdecode(text) if text else None


def open_regular(path: str) -> tuple[os.stat_result, int] | None:
    """``path``'s stat and a read-only fd when it is a regular file, else None.

    Stat first: opening a FIFO would block and opening a device may do something. O_NONBLOCK
    covers a file swapped for a FIFO in between, and the fd's own fstat decides.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return st, fd


def runnable_elf(fd: int, head: bytes) -> bool:
    """Whether the open file is an ELF executable of this machine's kind."""
    if not head.startswith(b"\x7fELF"):
        return False
    try:
        elf = parse_elf(fd, head)
    except (OSError, ValueError):
        return False
    native = _parse_native()
    return elf is not None and elf.kind in (ET_DYN, ET_EXEC) and elf.machine == native


@functools.cache
def _parse_native() -> tuple[int, int, int] | None:
    """The (machine, class, byte order) of this Python's own executable: the native kind."""
    fd = open_regular(os.path.realpath(sys.executable))
    if fd is None:
        return None
    try:
        elf = parse_elf(fd[1], os.pread(fd[1], SCRIPT_HEAD, 0))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd[1])
    return elf.machine if elf is not None else None
