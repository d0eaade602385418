"""Seccomp: a :class:`SyscallFilter`'s rules checked, then compiled to classic BPF.

The program judges ``struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6];}``:

1. another architecture (i386's ``int 0x80`` on x86_64, say) kills the process, and so does
   an x86_64 number with the x32 bit; number -1 (a tracer skipping a call) is let through;
2. with ``notify``, one ``sendmsg`` is let through: the one whose socket argument is the fd
   patched in per spawn (:func:`with_notify_fd`), by which the stage hands the listener to
   the parent after installing the filter;
3. the rules, as a binary search over ranges of syscall numbers, each ending in a return (or
   an argument check, for ``clone``'s namespace flags): a deny wins over an allow; in
   allow-list mode what is not allowed gets ENOSYS, in deny-list mode it runs.

Denied calls return ``SECCOMP_RET_ERRNO`` or ``SECCOMP_RET_KILL_PROCESS`` directly, or, with
``notify``, all become ``SECCOMP_RET_USER_NOTIF`` so that the parent counts them and answers
from :attr:`Filter.verdicts` — except clone3's ENOSYS, glibc's cue to fall back to clone,
which is not a refusal and is answered in the kernel. Compiled once per (filter, notify).

Entries are ``NAME`` or ``@GROUP`` (see :mod:`hardexec.confine.groups`), deny entries with an
optional ``:ACTION``. Among the deny rules, those named one by one win over those of groups,
and a later one over an earlier one; ``default=True``'s ``@default-deny`` comes first of all.
``execve`` and ``exit_group`` are never denied: naming them is an error, and groups naming
them deny the rest.

A :class:`WatchFilter` (``hardexec learn``) observes instead: its program notifies on every
syscall (after the same architecture checks and sendmsg exemption), and the parent records
each one and answers ``SECCOMP_USER_NOTIF_FLAG_CONTINUE`` (Linux 5.5), so the call runs — or,
for a call the watch filter's own rules refuse, answers as a plain filter of those rules
would (see :meth:`Filter.judge`). One program, not two stacked filters: the kernel would
pick a stacked filter's ERRNO over the watch's USER_NOTIF, so refused calls would go unseen.
"""

from __future__ import annotations

import errno
import functools
import struct
import sys

from .._record import field as record_field
from .._record import frozen
from ..errors import PolicyError, shown
from . import groups, syscalls
from .config import SyscallFilter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "Filter",
    "Verdict",
    "WatchFilter",
    "check_rules",
    "compile_filter",
    "compile_watch",
    "permits",
    "with_notify_fd",
]

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000
BPF_MAXINSNS = 4096

# Classic BPF opcodes (linux/bpf_common.h): class | size | mode, class | op | source.
_LD_W_ABS = 0x00 | 0x00 | 0x20
_JA = 0x05 | 0x00
_JEQ_K = 0x05 | 0x10 | 0x00
_JGE_K = 0x05 | 0x30 | 0x00
_JSET_K = 0x05 | 0x40 | 0x00
_RET_K = 0x06 | 0x00
_INSN = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
_MAX_JUMP = 255  # jt and jf are 8 bits

_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARGS = 16
# The low 32 bits of a 64-bit argument: args[] is in native byte order.
_LOW = 0 if sys.byteorder == "little" else 4
_X32_SYSCALL_BIT = 0x40000000
_SKIPPED = 0xFFFFFFFF  # nr -1: a tracer cancelled the call; the kernel runs nothing for it
_FD_PLACEHOLDER = 0xFFFFFFFF  # never a valid fd: an unpatched program exempts no sendmsg

# Why these can never be denied (the message names the reason).
UNDENIABLE = {
    "execve": "the stage execs the program after installing the filter",
    "exit_group": "a process must be able to exit",
}


@frozen
class Verdict:
    """What a denied syscall gets: ``errno`` (0 when killed), or the process killed."""

    errno: int
    kill: bool = False


@frozen
class Filter:
    """A compiled seccomp program, with what the parent needs to answer its notifications.

    Attributes:
        code: ``struct sock_filter[]`` (u16 code, u8 jt, u8 jf, u32 k), native byte order.
        fd_offset: the byte offset in ``code`` of the 32-bit ``k`` that
            :func:`with_notify_fd` patches with the notify socket's fd; None without notify.
        verdicts: syscall number -> the answer to a notification of it (a denied call).
        default: the answer for a number not in ``verdicts`` (allow-list mode: ENOSYS);
            None in deny-list mode, where no other number is notified.
        names: syscall number -> name, every syscall of the native table, for the report.
        watch: every syscall is notified (a :class:`WatchFilter`): the parent answers each with
            :meth:`judge`, CONTINUE when it finds no refusal.
        allowed: with ``watch``, the numbers an allow-list lets run (None: no allow-list).
        arg_rules: with ``watch``, number -> (((argument, flags), ...), verdict): the call is
            refused when any argument has any of its flags (clone's CLONE_NEW*).
    """

    code: bytes
    fd_offset: int | None
    verdicts: dict[int, Verdict]
    default: Verdict | None
    names: dict[int, str]
    watch: bool = False
    allowed: frozenset[int] | None = None
    arg_rules: dict[int, tuple[tuple[tuple[int, int], ...], Verdict]] = record_field(
        default_factory=dict
    )

    def judge(self, nr: int, args: Sequence[int]) -> Verdict | None:
        """What a watch filter's rules give syscall ``nr`` with ``args``: None when it may run.

        The same decision the BPF program of those rules makes (arguments compared on their
        low 32 bits, as the program loads them).
        """
        rule = self.arg_rules.get(nr)
        if rule is not None:
            checks, verdict = rule
            return verdict if any(args[arg] & flags for arg, flags in checks) else None
        verdict = self.verdicts.get(nr)
        if verdict is not None:
            return verdict
        if self.allowed is not None and nr not in self.allowed:
            return self.default
        return None

    @property
    def length(self) -> int:
        """The number of BPF instructions."""
        return len(self.code) // _INSN.size

    def __repr__(self) -> str:  # the code and the whole table would drown a Confined's repr
        mode = "watch" if self.watch else "notify" if self.fd_offset is not None else "direct"
        return (
            f"Filter({self.length} instructions, {mode}, {len(self.verdicts)} denied, "
            f"default={self.default!r})"
        )


_EPERM = Verdict(errno.EPERM)
_ENOSYS = Verdict(errno.ENOSYS)


class WatchFilter(SyscallFilter):
    """A filter that observes: every syscall is recorded by the parent, then runs.

    Used by ``hardexec learn``. Its fields are :class:`SyscallFilter`'s and mean the same: the
    rules of a base policy to learn within (the calls they refuse are refused and counted as
    denied, not recorded as needed); all empty (the default), nothing is refused. Needs seccomp
    user notification with ``SECCOMP_USER_NOTIF_FLAG_CONTINUE`` (Linux 5.5), and a parent that
    stays to answer: each syscall waits for it, so a watched program runs slower.
    ``clone3`` is answered ENOSYS in the kernel, as every learned allow-list will answer it
    (glibc then uses ``clone``, which is recorded, flags and all).
    """

    def __post_init__(self) -> None:
        if self.allow is None and not self.deny and self.default is False:
            # Nothing refused: only the types are checked (SyscallFilter refuses an empty one).
            if not isinstance(self.deny, tuple):
                object.__setattr__(self, "deny", tuple(self.deny))
            return
        super().__post_init__()


def _verdict(action: str) -> Verdict | None:
    """``kill`` or an errno name (any case) as a Verdict; None when it is neither."""
    if action.lower() == "kill":
        return Verdict(0, kill=True)
    name = action.upper()
    value = getattr(errno, name, None) if name.startswith("E") else None
    if isinstance(value, int) and 0 < value < 4096:  # the kernel caps errno at MAX_ERRNO
        return Verdict(value)
    return None


def check_rules(f: SyscallFilter) -> None:
    """Check the names, groups and actions of ``f``'s rules (called by SyscallFilter itself).

    A name some other architecture or kernel has is accepted (it is skipped where missing, see
    :data:`~hardexec.confine.syscalls.KNOWN_ELSEWHERE`); a typo is not.

    Raises:
        PolicyError: naming the entry: ``syscalls.deny[2]: unknown syscall 'ptrac' (did you
            mean ptrace?)``.
    """
    for field in ("allow", "deny"):
        entries = getattr(f, field)
        for index, entry in enumerate(entries or ()):
            _check_entry(f"syscalls.{field}[{index}]", entry, field == "deny")


def _check_entry(where: str, entry: str, deny: bool) -> None:
    name, colon, action = entry.partition(":")
    if not name:
        raise PolicyError(f"{where}: no syscall or group name in {shown(entry)}")
    if colon:
        if not deny:
            raise PolicyError(
                f"{where}: {shown(entry)}: an action is for deny entries only (an allowed "
                "syscall just runs)"
            )
        if _verdict(action) is None:
            raise PolicyError(
                f"{where}: unknown action {shown(action)} in {shown(entry)} (an errno name such "
                "as EPERM, or kill)"
            )
    if name.startswith("@"):
        if name not in groups.GROUPS:
            close = _close(name, groups.GROUPS)
            hint = f"did you mean {close}?" if close else "groups: " + ", ".join(groups.GROUPS)
            raise PolicyError(f"{where}: unknown group {shown(name)} ({hint})")
        if deny and name == "@default":
            raise PolicyError(
                f"{where}: @default cannot be denied: it is what every process needs to run "
                "at all (memory, exit, signals' return)"
            )
        if not deny and name in groups.DENY_ONLY:
            raise PolicyError(
                f"{where}: {name} is a deny-list, not for allow (use default=True, or deny)"
            )
        return
    known, missing = _known()
    if name not in known:
        if f"@{name}" in groups.GROUPS:
            hint = f" (did you mean @{name}?)"
        else:
            close = name.lower() if name.lower() in known else _close(name, known)
            hint = f" (did you mean {close}?)" if close else ""
        raise PolicyError(f"{where}: unknown syscall {shown(name)}{hint}{missing}")
    if deny and name in UNDENIABLE:
        raise PolicyError(f"{where}: {name} cannot be denied: {UNDENIABLE[name]}")


def _close(name: str, choices: Iterable[str]) -> str | None:
    import difflib  # only a mistake needs it

    found = difflib.get_close_matches(name, sorted(choices), n=1)
    return found[0] if found else None


@functools.cache
def _known() -> tuple[frozenset[str], str]:
    """The names a rule may use, and a note for the message when this host has no table."""
    try:
        return frozenset(syscalls.table()) | syscalls.KNOWN_ELSEWHERE, ""
    except PolicyError as err:
        # Still catch typos where no table can be had (the error is raised again when the
        # filter is compiled): every group member is a real name.
        names = {n.partition(":")[0] for g in groups.GROUPS for n in groups.expand(g)[0]}
        known = frozenset(names) | syscalls.KNOWN_ELSEWHERE
        return known, f"; names are checked without a table: {err}"


def compile_filter(f: SyscallFilter, *, notify: bool) -> Filter:
    """The BPF program for ``f`` on the native architecture (cached per filter and mode).

    Args:
        f: the rules (already checked when ``f`` was made).
        notify: every denied call becomes a notification for the parent, answered from the
            returned filter's ``verdicts``/``default``; the program also exempts the stage's
            one sendmsg of the listener fd (patch the socket's fd in with
            :func:`with_notify_fd`).

    Raises:
        PolicyError: no syscall table for this architecture, or the program would be too long.
    """
    return _compile(f, bool(notify))


def compile_watch(f: WatchFilter) -> Filter:
    """The BPF program that notifies on every syscall, for ``f`` (cached per filter).

    Its ``verdicts``, ``default``, ``allowed`` and ``arg_rules`` hold ``f``'s own rules, for
    :meth:`Filter.judge`; the sendmsg exemption is patched in with :func:`with_notify_fd`.

    Raises:
        PolicyError: no syscall table for this architecture.
    """
    return _compile_watch(f)


@functools.lru_cache(maxsize=16)
def _compile_watch(f: WatchFilter) -> Filter:
    numbers = syscalls.table()
    code, fd_index = _prologue(syscalls.arch_audit(), numbers["sendmsg"])
    verdicts: dict[int, Verdict] = {}
    arg_rules: dict[int, tuple[tuple[tuple[int, int], ...], Verdict]] = {}
    allowed: set[int] | None = None
    if f.allow is not None or f.deny or f.default:
        deny, rules = _denials(f, numbers)
        allowed = _allowed(f, numbers, deny)
        verdicts = dict(deny)
        for nr, (checks, verdict) in rules.items():
            if nr not in deny and (allowed is None or nr in allowed):
                arg_rules[nr] = (tuple(checks), verdict)
        if f.default and allowed is None:  # as _compile: beyond the table, ENOSYS
            code += [
                (_JGE_K, 0, 1, max(numbers.values()) + 1),
                (_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),
            ]
    for name in _FALLBACKS:
        nr = numbers.get(name)
        if nr is not None:
            code += [(_JEQ_K, 0, 1, nr), (_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS)]
    code.append((_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF))
    assert fd_index is not None
    return Filter(
        code=b"".join(_INSN.pack(*insn) for insn in code),
        fd_offset=fd_index * _INSN.size + 4,
        verdicts=verdicts,
        default=None if allowed is None else _ENOSYS,
        names={nr: name for name, nr in sorted(numbers.items(), key=lambda item: item[1])},
        watch=True,
        allowed=None if allowed is None else frozenset(allowed),
        arg_rules=arg_rules,
    )


def permits(f: SyscallFilter, name: str) -> bool:
    """Whether ``f`` lets the syscall ``name`` run (whatever its arguments)."""
    numbers = syscalls.table()
    nr = numbers.get(name)
    if nr is None:
        return True  # not a call of this machine: nothing to refuse
    deny, _ = _denials(f, numbers)
    if nr in deny:
        return False
    if f.allow is None:
        return True
    return any(name in _names(entry) for entry in (*f.allow, "@default"))


def with_notify_fd(filt: Filter, fd: int) -> bytes:
    """``filt.code`` with the notify socket's fd patched into the sendmsg exemption.

    Raises:
        ValueError: ``filt`` was compiled without notify, or ``fd`` is not a file descriptor.
    """
    if filt.fd_offset is None:
        raise ValueError("with_notify_fd: the filter was compiled without notify")
    if isinstance(fd, bool) or not isinstance(fd, int) or not 0 <= fd <= 0x7FFFFFFF:
        raise ValueError(f"with_notify_fd: {shown(fd)} is not a file descriptor")
    code = bytearray(filt.code)
    struct.pack_into("=I", code, filt.fd_offset, fd)
    return bytes(code)


# ---- compiling ----------------------------------------------------------------------------

# A branch target: ("ret", k), or ("arg", ((offset, flags), ...), k if any flag is set, k else).
_Target = tuple


_FALLBACKS = ("clone3",)
_NAMESPACE_ENTRIES = frozenset({"@namespace", "unshare", "setns"})


@functools.lru_cache(maxsize=64)
def _compile(f: SyscallFilter, notify: bool) -> Filter:
    numbers = syscalls.table()
    audit = syscalls.arch_audit()
    deny, arg_rules = _denials(f, numbers)
    allowed = _allowed(f, numbers, deny)

    def ret(verdict: Verdict) -> _Target:
        if notify:
            return ("ret", SECCOMP_RET_USER_NOTIF)
        if verdict.kill:
            return ("ret", SECCOMP_RET_KILL_PROCESS)
        return ("ret", SECCOMP_RET_ERRNO | verdict.errno)

    allow = ("ret", SECCOMP_RET_ALLOW)
    default = allow if allowed is None else ret(_ENOSYS)
    targets: dict[int, _Target] = {nr: ret(v) for nr, v in deny.items()}
    targets.update(dict.fromkeys(allowed or (), allow))
    # clone3's ENOSYS is not a refusal but glibc's cue to fall back to clone (whose flags the
    # filter can check): answered in the kernel, not counted, and no round trip per thread.
    for name in _FALLBACKS:
        nr = numbers.get(name)
        if nr is not None and nr in deny and deny[nr] == _ENOSYS:
            targets[nr] = ("ret", SECCOMP_RET_ERRNO | errno.ENOSYS)
    verdicts = dict(deny)
    for nr, (checks, verdict) in arg_rules.items():
        if nr in deny or (allowed is not None and nr not in allowed):
            continue  # the whole call is denied already
        offsets = tuple((_OFF_ARGS + 8 * arg + _LOW, flags) for arg, flags in checks)
        targets[nr] = ("arg", offsets, ret(verdict)[1], SECCOMP_RET_ALLOW)
        verdicts[nr] = verdict

    code, fd_index = _prologue(audit, numbers["sendmsg"] if notify else None)
    if f.default and allowed is None:
        # The default list is a deny-list written for the calls known here; a newer kernel's
        # calls beyond the table are unknown, so they get ENOSYS (in the kernel, uncounted), as
        # an allow-list gives them.
        code += [
            (_JGE_K, 0, 1, max(numbers.values()) + 1),
            (_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),
        ]
    code += _search(_ranges(targets, default))
    if len(code) > BPF_MAXINSNS:
        raise PolicyError(
            f"syscalls: the filter needs {len(code)} instructions, more than the kernel's "
            f"{BPF_MAXINSNS}"
        )
    return Filter(
        code=b"".join(_INSN.pack(*insn) for insn in code),
        fd_offset=None if fd_index is None else fd_index * _INSN.size + 4,  # k after u16, 2*u8
        verdicts=verdicts,
        default=None if allowed is None else _ENOSYS,
        names={nr: name for name, nr in sorted(numbers.items(), key=lambda item: item[1])},
    )


def _allowed(
    f: SyscallFilter, numbers: dict[str, int], deny: dict[int, Verdict]
) -> set[int] | None:
    """The numbers an allow-list lets run (None: deny-list mode): its entries and @default,
    less what is denied."""
    if f.allow is None:
        return None
    allowed = set()
    for entry in (*f.allow, "@default"):
        for name in _names(entry):
            if name in numbers:
                allowed.add(numbers[name])
    return allowed - deny.keys()


def _names(entry: str) -> tuple[str, ...]:
    """The syscall names an allow entry stands for (pinned actions dropped)."""
    if entry.startswith("@"):
        return tuple(n.partition(":")[0] for n in groups.expand(entry)[0])
    return (entry,)


def _denials(
    f: SyscallFilter, numbers: dict[str, int]
) -> tuple[dict[int, Verdict], dict[int, tuple[list[tuple[int, int]], Verdict]]]:
    """(nr -> verdict of denied calls, nr -> (argument checks, verdict) of argument rules)."""
    deny: dict[int, Verdict] = {}
    arg_rules: dict[int, tuple[list[tuple[int, int]], Verdict]] = {}
    entries = [entry.partition(":")[::2] for entry in f.deny]
    ordered = [("@default-deny", "")] if f.default else []
    if f.allow is not None and not _NAMESPACE_ENTRIES & set(f.allow):
        # An allow-list refuses new namespaces unless it allows them (@namespace, or one of
        # its calls by name): clone and clone3 (in @process) could make them otherwise.
        ordered.insert(0, ("@namespace", ""))
    ordered += [e for e in entries if e[0].startswith("@")]
    ordered += [e for e in entries if not e[0].startswith("@")]
    for name, action in ordered:
        # An action was checked when the filter was made: None here means none given.
        verdict = (_verdict(action) if action else None) or _EPERM
        if not name.startswith("@"):
            if name in numbers:
                deny[numbers[name]] = verdict
            continue
        members, rules = groups.expand(name)
        for entry in members:
            member, _, pinned = entry.partition(":")
            if member in numbers and member not in UNDENIABLE:
                deny[numbers[member]] = (_verdict(pinned) if pinned else None) or verdict
        for rule in rules:
            if rule.syscall in numbers:
                nr = numbers[rule.syscall]
                checks = arg_rules[nr][0] if nr in arg_rules else []
                if (rule.arg, rule.flags) not in checks:
                    checks.append((rule.arg, rule.flags))
                arg_rules[nr] = (checks, verdict)  # notify answers one verdict per number
    return deny, arg_rules


def _prologue(
    audit: int, sendmsg: int | None
) -> tuple[list[tuple[int, int, int, int]], int | None]:
    """Architecture and ABI checks, then (with notify) the sendmsg exemption; ends with the
    syscall number loaded. Returns the code and the index of the fd placeholder."""
    code = [
        (_LD_W_ABS, 0, 0, _OFF_ARCH),
        (_JEQ_K, 1, 0, audit),
        (_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, _OFF_NR),
    ]
    if audit == syscalls.AUDIT_ARCH_X86_64:
        # x32 shares the x86_64 audit arch; its numbers have bit 30 set (so does -1).
        code += [
            (_JGE_K, 0, 3, _X32_SYSCALL_BIT),
            (_JEQ_K, 0, 1, _SKIPPED),
            (_RET_K, 0, 0, SECCOMP_RET_ALLOW),
            (_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        ]
    else:
        code += [(_JEQ_K, 0, 1, _SKIPPED), (_RET_K, 0, 0, SECCOMP_RET_ALLOW)]
    fd_index = None
    if sendmsg is not None:
        fd_index = len(code) + 2
        code += [
            (_JEQ_K, 0, 6, sendmsg),  # not sendmsg: on to the rules, number still loaded
            (_LD_W_ABS, 0, 0, _OFF_ARGS + _LOW),
            (_JEQ_K, 0, 3, _FD_PLACEHOLDER),
            (_LD_W_ABS, 0, 0, _OFF_ARGS + 4 - _LOW),  # the high half: an fd is 0..2^31-1
            (_JEQ_K, 0, 1, 0),
            (_RET_K, 0, 0, SECCOMP_RET_ALLOW),
            (_LD_W_ABS, 0, 0, _OFF_NR),  # some other sendmsg: the rules judge it
        ]
    return code, fd_index


def _ranges(targets: dict[int, _Target], default: _Target) -> list[tuple[int, _Target]]:
    """The number line cut into ranges of one target: [(first nr, target), ...] from 0."""
    points: list[tuple[int, _Target]] = [(0, default)]
    for nr in sorted(targets):
        points.append((nr, targets[nr]))
        if nr + 1 not in targets:
            points.append((nr + 1, default))
    ranges: list[tuple[int, _Target]] = []
    for start, target in points:
        if ranges and ranges[-1][0] == start:
            ranges[-1] = (start, target)  # the number itself overrides the gap before it
        elif not ranges or ranges[-1][1] != target:
            ranges.append((start, target))
    return ranges


def _search(ranges: list[tuple[int, _Target]]) -> list[tuple[int, int, int, int]]:
    """A binary search over ``ranges`` on the loaded number; every leaf returns.

    A node is ``jge first-of-upper-half``, the lower half right after it and the upper half
    after that, so only the jump over the lower half can be long: past 255 instructions it
    goes through a ``ja``, whose offset is 32 bits.
    """
    if len(ranges) == 1:
        return _leaf(ranges[0][1])
    middle = len(ranges) // 2
    lower = _search(ranges[:middle])
    upper = _search(ranges[middle:])
    split = ranges[middle][0]
    if len(lower) <= _MAX_JUMP:
        return [(_JGE_K, len(lower), 0, split), *lower, *upper]
    return [(_JGE_K, 0, 1, split), (_JA, 0, 0, len(lower)), *lower, *upper]


def _leaf(target: _Target) -> list[tuple[int, int, int, int]]:
    if target[0] == "ret":
        return [(_RET_K, 0, 0, target[1])]
    _, checks, denied, otherwise = target
    code = []
    for offset, flags in checks:
        code += [(_LD_W_ABS, 0, 0, offset), (_JSET_K, 0, 1, flags), (_RET_K, 0, 0, denied)]
    return [*code, (_RET_K, 0, 0, otherwise)]
