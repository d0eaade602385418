"""Seccomp: syscall tables, groups, rule checks, and the compiled BPF run by a small interpreter."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest

from hardexec.confine import groups, seccomp, syscalls
from hardexec.confine.config import SyscallFilter
from hardexec.confine.seccomp import Verdict, compile_filter, with_notify_fd
from hardexec.errors import PolicyError

# The kernel's values, written out here rather than taken from the module under test.
ALLOW = 0x7FFF0000
KILL_PROCESS = 0x80000000
USER_NOTIF = 0x7FC00000
AUDIT = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
AUDIT_I386 = 0x40000003
ARCH = syscalls.native_arch()


def errno_ret(code: int) -> int:
    return 0x00050000 | code


def _table_or_reason() -> str | None:
    try:
        syscalls.table()
    except PolicyError as err:
        return str(err)
    return None


NO_TABLE = _table_or_reason()
needs_table = pytest.mark.skipif(NO_TABLE is not None, reason=f"no syscall table: {NO_TABLE}")
x86_64_only = pytest.mark.skipif(
    ARCH != "x86_64", reason="x86_64 only: its numbers (read=0, ptrace=101) and its x32 ABI"
)
ALL_GROUPS = tuple(g for g in groups.GROUPS if g not in groups.DENY_ONLY)


def nr(name: str) -> int:
    return syscalls.table()[name]


@pytest.fixture
def fresh_compile():
    """Compile without the cache (for tests that change the table or the architecture)."""
    seccomp._compile.cache_clear()
    yield
    seccomp._compile.cache_clear()


# ---- a classic BPF interpreter, as much of it as seccomp filters use -----------------------

LD_W_ABS, JA, JEQ, JGT, JGE, JSET, RET = 0x20, 0x05, 0x15, 0x25, 0x35, 0x45, 0x06
SECCOMP_DATA_SIZE = 64


def instructions(code: bytes) -> list[tuple[int, int, int, int]]:
    assert len(code) % 8 == 0
    return [struct.unpack_from("=HBBI", code, i) for i in range(0, len(code), 8)]


def check_program(code: bytes) -> None:
    """What the kernel's checker refuses: bad opcodes, loads, jumps, no final return."""
    insns = instructions(code)
    assert 0 < len(insns) <= 4096
    for pc, (op, jt, jf, k) in enumerate(insns):
        assert op in (LD_W_ABS, JA, JEQ, JGT, JGE, JSET, RET), f"{pc}: opcode {op:#x}"
        if op == LD_W_ABS:
            assert k % 4 == 0 and k < SECCOMP_DATA_SIZE, f"{pc}: load at {k}"
        elif op == JA:
            assert pc + 1 + k < len(insns), f"{pc}: ja past the end"
        elif op != RET:
            assert pc + 1 + max(jt, jf) < len(insns), f"{pc}: jump past the end"
    assert insns[-1][0] == RET


def run(code: bytes, number: int, args: tuple[int, ...] = (), arch: int | None = None) -> int:
    """The filter's return value for one syscall."""
    args = (*args, *(0,) * (6 - len(args)))
    audit = AUDIT[ARCH] if arch is None else arch
    data = struct.pack("=IIQ6Q", number & 0xFFFFFFFF, audit, 0, *args)
    insns = instructions(code)
    pc = acc = 0
    for _ in range(len(insns)):  # every jump goes forward: a program ends within its length
        op, jt, jf, k = insns[pc]
        if op == RET:
            return k
        if op == LD_W_ABS:
            (acc,) = struct.unpack_from("=I", data, k)
            pc += 1
        elif op == JA:
            pc += 1 + k
        else:
            taken = {JEQ: acc == k, JGT: acc > k, JGE: acc >= k, JSET: bool(acc & k)}[op]
            pc += 1 + (jt if taken else jf)
    raise AssertionError("the program ran past its end")


def verdict_of(f: SyscallFilter, name: str, *, notify: bool = False, args=()) -> int:
    filt = compile_filter(f, notify=notify)
    code = with_notify_fd(filt, 3) if notify else filt.code
    return run(code, nr(name), args)


# ---- tables ----------------------------------------------------------------------------------


@x86_64_only
def test_generate_reads_the_real_headers():
    if shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler here")
    numbers = syscalls.generate()
    assert (numbers["read"], numbers["write"], numbers["ptrace"]) == (0, 1, 101)
    assert all(0 <= n < 0x40000000 for n in numbers.values())  # no x32 numbers
    # The table adds the calls numbered alike everywhere that these headers may predate.
    assert numbers == {name: nr for name, nr in syscalls.table().items() if name in numbers}
    assert syscalls.table()["fchmodat2"] == 452


def test_generate_resolves_macro_references_and_names_the_target(tmp_path):
    cc = tmp_path / "fake-cc"
    cc.write_text(
        "#!/bin/sh\ncat >/dev/null\ncat <<'EOF'\n"
        "#define __aarch64__ 1\n"
        "#define __NR3264_fcntl 25\n"
        "#define __NR_fcntl __NR3264_fcntl\n"
        "#define __NR_SYSCALL_BASE 0x900000\n"
        "#define __NR_foo (__NR_SYSCALL_BASE + 3)\n"
        "#define __NR_read 63\n"
        "#define __NR_Upper 7\n"
        "#define __NR_syscalls 463\n"
        "#define __NR_odd sizeof(long)\n"
        "#define __NR_undefined __NR3264_nothing\n"
        "#define __NR_x32_thing (0x40000000 + 1)\n"
        "#define __NR_fn(x) x\n"
        "EOF\n"
    )
    cc.chmod(0o755)
    assert syscalls.generate(str(cc)) == {"fcntl": 25, "foo": 0x900003, "read": 63}
    assert syscalls.build_table(str(cc))["arch"] == "aarch64"


def test_generate_failures_are_oserrors(tmp_path):
    with pytest.raises(OSError, match="no-such-cc"):
        syscalls.generate(str(tmp_path / "no-such-cc"))
    failing = tmp_path / "failing-cc"
    failing.write_text("#!/bin/sh\necho 'fatal error: asm/unistd.h: No such file' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(OSError, match="asm/unistd.h: No such file"):
        syscalls.generate(str(failing))


def test_parse_header_reads_plain_defines():
    text = (
        "#ifndef X\n#define __NR_read 0\n#define __NR_SYSCALL_BASE 0\n"
        "#define __NR_write\t1\n#define __NR_syscalls 3\n"
    )
    assert syscalls.parse_header(text) == {"read": 0, "write": 1}


def test_the_packaged_table_is_used_only_for_its_architecture(tmp_path):
    probes = syscalls._PROBES["x86_64"]
    path = tmp_path / syscalls.PACKAGED
    path.write_text(json.dumps({"arch": "x86_64", "syscalls": {**probes, "ptrace": 101}}))
    assert syscalls._from_packaged("x86_64", str(path)) == {**probes, "ptrace": 101}
    assert syscalls._from_packaged("aarch64", str(path)) is None
    path.write_text(json.dumps({"arch": "x86_64", "syscalls": {"read": 63}}))  # not x86_64's
    assert syscalls._from_packaged("x86_64", str(path)) is None
    path.write_text("{damaged")
    assert syscalls._from_packaged("x86_64", str(path)) is None
    assert syscalls._from_packaged("x86_64", str(tmp_path / "absent.json")) is None


def test_the_module_loads_alone_as_setup_py_loads_it():
    """setup.py runs syscalls.py outside the package, before hardexec is installed."""
    spec = importlib.util.spec_from_file_location("standalone_syscalls", syscalls.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("no C compiler here")
    try:
        document = module.build_table()
    except OSError as err:
        pytest.skip(f"no kernel headers here: {err}")
    assert document["arch"] == ARCH
    for name, number in syscalls._PROBES.get(ARCH, {}).items():
        assert document["syscalls"][name] == number


def test_arch_audit_values():
    assert syscalls.AUDIT_ARCH_X86_64 == 0xC000003E
    assert syscalls.AUDIT_ARCH_AARCH64 == 0xC00000B7
    if ARCH in AUDIT:
        assert syscalls.arch_audit() == AUDIT[ARCH]


def test_another_architecture_is_a_clear_error_when_compiled(monkeypatch, fresh_compile):
    f = SyscallFilter(default=True)  # the rules are still checked (by names, not numbers)
    monkeypatch.setattr(syscalls, "native_arch", lambda: "riscv64")
    with pytest.raises(PolicyError, match="no syscall table for riscv64.*x86_64 and aarch64"):
        compile_filter(f, notify=False)
    with pytest.raises(PolicyError, match="riscv64"):
        syscalls.arch_audit()


def test_without_a_table_names_are_still_checked(monkeypatch):
    monkeypatch.setattr(syscalls, "native_arch", lambda: "riscv64")
    seccomp._known.cache_clear()
    try:
        assert SyscallFilter(deny=("open", "ptrace", "bpf")).deny == ("open", "ptrace", "bpf")
        with pytest.raises(PolicyError, match=r"'ptrac' \(did you mean ptrace\?\); .*riscv64"):
            SyscallFilter(deny=("ptrac",))
    finally:
        seccomp._known.cache_clear()


# ---- groups ----------------------------------------------------------------------------------


@needs_table
def test_every_name_in_every_group_is_known():
    known = set(syscalls.table()) | syscalls.KNOWN_ELSEWHERE
    for group in groups.GROUPS:
        names, rules = groups.expand(group)
        unknown = {n.partition(":")[0] for n in names} - known
        assert not unknown, f"{group}: {sorted(unknown)}"
        assert {rule.syscall for rule in rules} <= known


def test_groups_name_only_groups_that_exist_and_each_is_documented():
    for group, entries in groups.GROUPS.items():
        assert group.startswith("@")
        for entry in entries:
            assert not entry.startswith("@") or entry in groups.GROUPS, (group, entry)
        assert f"``{group}``:" in groups.__doc__, f"{group} is not described in the module doc"
    assert groups.GROUPS.keys() >= groups.DENY_ONLY
    assert groups.GROUPS.keys() >= groups.ARG_RULES.keys()


def test_expansion_is_recursive_and_keeps_pinned_actions():
    names, rules = groups.expand("@privileged")
    assert {"mount", "reboot", "init_module", "swapon", "iopl", "acct"} <= set(names)
    names, rules = groups.expand("@default-deny")
    assert {"ptrace", "unshare", "setns", "mount", "bpf", "userfaultfd"} <= set(names)
    assert "clone3:ENOSYS" in names and "clone" not in names
    assert [(r.syscall, r.arg) for r in rules] == [("clone", 0)]
    assert rules[0].flags == 0x7E020080  # every CLONE_NEW* flag
    assert len(names) == len(set(names))


def test_default_deny_leaves_what_programs_need():
    denied = {n.partition(":")[0] for n in groups.expand("@default-deny")[0]}
    assert not denied & set(groups.GROUPS["@default"])
    for needed in ("read", "openat", "clone", "socket", "execve", "exit_group", "personality"):
        assert needed not in denied


# ---- rule checks -------------------------------------------------------------------------


def test_a_typo_is_an_error_with_a_suggestion():
    with pytest.raises(
        PolicyError,
        match=r"^syscalls\.deny\[2\]: unknown syscall 'ptrac' \(did you mean ptrace\?\)",
    ):
        SyscallFilter(deny=("bpf", "mount", "ptrac"))
    with pytest.raises(PolicyError, match=r"syscalls\.allow\[0\]: unknown syscall 'zzqx'$"):
        SyscallFilter(allow=("zzqx",))
    with pytest.raises(PolicyError, match=r"unknown syscall 'network' \(did you mean @network\?\)"):
        SyscallFilter(allow=("network",))


def test_an_unknown_group_is_an_error():
    with pytest.raises(
        PolicyError, match=r"syscalls\.deny\[0\]: unknown group '@netwrk' \(did you"
    ):
        SyscallFilter(deny=("@netwrk",))
    with pytest.raises(PolicyError, match=r"unknown group '@foo' \(groups: @default, @basic-io"):
        SyscallFilter(allow=("@foo",))


def test_a_bad_action_is_an_error():
    with pytest.raises(
        PolicyError,
        match=r"^syscalls\.deny\[0\]: unknown action 'EFOO' in 'ptrace:EFOO' \(an errno name "
        r"such as EPERM, or kill\)$",
    ):
        SyscallFilter(deny=("ptrace:EFOO",))
    with pytest.raises(PolicyError, match=r"unknown action '' in 'ptrace:'"):
        SyscallFilter(deny=("ptrace:",))
    with pytest.raises(PolicyError, match=r"no syscall or group name in ':EPERM'"):
        SyscallFilter(deny=(":EPERM",))


def test_actions_are_for_deny_entries_only():
    with pytest.raises(PolicyError, match=r"syscalls\.allow\[1\]: 'read:EPERM': an action is for"):
        SyscallFilter(allow=("write", "read:EPERM"))
    with pytest.raises(PolicyError, match=r"syscalls\.allow\[0\]: @default-deny is a deny-list"):
        SyscallFilter(allow=("@default-deny",))


def test_execve_and_exit_group_cannot_be_denied():
    with pytest.raises(
        PolicyError,
        match=r"syscalls\.deny\[1\]: execve cannot be denied: the stage execs the program after",
    ):
        SyscallFilter(deny=("ptrace", "execve:kill"))
    with pytest.raises(PolicyError, match="exit_group cannot be denied: a process must be able"):
        SyscallFilter(deny=("exit_group",))


def test_actions_names_from_other_architectures_and_groups_are_accepted():
    f = SyscallFilter(
        allow=("@basic-io", "open", "vm86", "futex_wake"),
        deny=("ptrace:kill", "bpf:EACCES", "@mount:enosys", "kcmp:KILL"),
    )
    assert f.deny[0] == "ptrace:kill"


# ---- compiled programs ----------------------------------------------------------------------

DEFAULT = SyscallFilter(default=True)


@needs_table
@pytest.mark.parametrize("notify", [False, True])
def test_programs_pass_the_kernels_structural_checks(notify):
    for f in (
        DEFAULT,
        SyscallFilter(allow=ALL_GROUPS, default=True),
        SyscallFilter(allow=(), deny=("ptrace:kill",)),
    ):
        check_program(compile_filter(f, notify=notify).code)


@needs_table
@pytest.mark.parametrize("notify", [False, True])
def test_another_architecture_is_killed(notify):
    code = compile_filter(DEFAULT, notify=notify).code
    assert run(code, nr("read"), arch=AUDIT_I386) == KILL_PROCESS
    other = AUDIT["aarch64" if ARCH == "x86_64" else "x86_64"]
    assert run(code, nr("read"), arch=other) == KILL_PROCESS


@needs_table
@x86_64_only
@pytest.mark.parametrize("notify", [False, True])
def test_x32_numbers_are_killed_and_a_skipped_call_passes(notify):
    code = compile_filter(SyscallFilter(allow=()), notify=notify).code
    assert run(code, 0x40000000 | nr("read")) == KILL_PROCESS
    assert run(code, 0x40000000 | 512) == KILL_PROCESS  # x32's own rt_sigaction
    assert run(code, -1) == ALLOW  # a tracer cancelled the call: the kernel runs nothing


@needs_table
def test_default_deny_list_without_notify():
    assert verdict_of(DEFAULT, "ptrace") == errno_ret(errno.EPERM)
    assert verdict_of(DEFAULT, "unshare") == errno_ret(errno.EPERM)
    assert verdict_of(DEFAULT, "setns") == errno_ret(errno.EPERM)
    assert verdict_of(DEFAULT, "mount") == errno_ret(errno.EPERM)
    assert verdict_of(DEFAULT, "bpf") == errno_ret(errno.EPERM)
    assert verdict_of(DEFAULT, "clone3") == errno_ret(errno.ENOSYS)
    for allowed in ("read", "write", "openat", "execve", "socket", "personality", "mmap"):
        assert verdict_of(DEFAULT, allowed) == ALLOW, allowed
    # Beyond the table (a newer kernel's calls): unknown to the default list, so ENOSYS.
    assert run(compile_filter(DEFAULT, notify=False).code, 4000) == errno_ret(errno.ENOSYS)


@needs_table
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (0x10000000 | 0x11, errno_ret(errno.EPERM)),  # CLONE_NEWUSER | SIGCHLD
        (0x40000000, errno_ret(errno.EPERM)),  # CLONE_NEWNET
        (0x00000080, errno_ret(errno.EPERM)),  # CLONE_NEWTIME
        (0x00020000, errno_ret(errno.EPERM)),  # CLONE_NEWNS
        (0x01200011, ALLOW),  # fork(): CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
        (0x003D0F00, ALLOW),  # pthread_create's flags
        ((1 << 32) | 0x11, ALLOW),  # only the low 32 bits hold flags
    ],
)
def test_clone_with_a_new_namespace_is_denied(flags, expected):
    assert verdict_of(DEFAULT, "clone", args=(flags,)) == expected


@needs_table
def test_default_deny_list_with_notify():
    filt = compile_filter(DEFAULT, notify=True)
    code = with_notify_fd(filt, 3)
    for denied in ("ptrace", "unshare", "mount"):
        assert run(code, nr(denied)) == USER_NOTIF, denied
    # clone3's ENOSYS is glibc's cue to fall back to clone: answered in the kernel, not counted.
    assert run(code, nr("clone3")) == errno_ret(errno.ENOSYS)
    assert run(code, nr("clone"), (0x10000000,)) == USER_NOTIF
    assert run(code, nr("clone"), (0x11,)) == ALLOW
    assert run(code, nr("read")) == ALLOW
    assert filt.verdicts[nr("ptrace")] == Verdict(errno.EPERM)
    assert filt.verdicts[nr("clone3")] == Verdict(errno.ENOSYS)
    assert filt.verdicts[nr("clone")] == Verdict(errno.EPERM)
    assert nr("read") not in filt.verdicts and filt.default is None
    assert filt.names[nr("ptrace")] == "ptrace"


@needs_table
def test_allow_list():
    f = SyscallFilter(allow=("@basic-io", "openat", "@network"))
    for name in ("read", "write", "close", "openat", "socket", "connect"):
        assert verdict_of(f, name) == ALLOW, name
    for name in ("ptrace", "unlinkat", "mount", "kill"):
        assert verdict_of(f, name) == errno_ret(errno.ENOSYS), name
    assert run(compile_filter(f, notify=False).code, 4000) == errno_ret(errno.ENOSYS)
    filt = compile_filter(f, notify=True)
    assert run(with_notify_fd(filt, 3), nr("unlinkat")) == USER_NOTIF
    assert filt.default == Verdict(errno.ENOSYS)


@needs_table
def test_allow_list_always_allows_the_default_group():
    f = SyscallFilter(allow=())
    for name in groups.GROUPS["@default"]:
        if name in syscalls.table():
            assert verdict_of(f, name) == ALLOW, name
    assert verdict_of(f, "read") == errno_ret(errno.ENOSYS)


@needs_table
def test_an_explicit_deny_wins_with_its_action():
    f = SyscallFilter(allow=("@basic-io", "@debug"), deny=("ptrace:kill", "write:EACCES", "mmap"))
    assert verdict_of(f, "ptrace") == KILL_PROCESS
    assert verdict_of(f, "write") == errno_ret(errno.EACCES)
    assert verdict_of(f, "mmap") == errno_ret(errno.EPERM)  # even a @default member
    assert verdict_of(f, "kcmp") == ALLOW
    assert verdict_of(f, "ptrace", notify=True) == USER_NOTIF
    filt = compile_filter(f, notify=True)
    assert filt.verdicts[nr("ptrace")] == Verdict(0, kill=True)
    assert filt.verdicts[nr("write")] == Verdict(errno.EACCES)


@needs_table
def test_names_win_over_groups_whatever_the_order():
    for deny in (("@network", "socket:kill"), ("socket:kill", "@network")):
        f = SyscallFilter(deny=deny)
        assert verdict_of(f, "socket") == KILL_PROCESS
        assert verdict_of(f, "connect") == errno_ret(errno.EPERM)


@needs_table
def test_a_group_action_leaves_pinned_actions_and_groups_spare_execve():
    f = SyscallFilter(deny=("@default-deny:EACCES",))
    assert verdict_of(f, "ptrace") == errno_ret(errno.EACCES)
    assert verdict_of(f, "clone3") == errno_ret(errno.ENOSYS)
    assert verdict_of(f, "clone", args=(0x20000000,)) == errno_ret(errno.EACCES)
    f = SyscallFilter(deny=("@process:kill",))
    assert verdict_of(f, "clone") == KILL_PROCESS
    assert verdict_of(f, "execve") == ALLOW
    assert verdict_of(f, "exit_group") == ALLOW
    assert verdict_of(f, "exit") == KILL_PROCESS


@needs_table
def test_the_clone_rule_yields_to_a_whole_clone_deny():
    f = SyscallFilter(deny=("clone:EACCES",), default=True)
    assert verdict_of(f, "clone", args=(0x11,)) == errno_ret(errno.EACCES)
    assert verdict_of(f, "clone", args=(0x10000000,)) == errno_ret(errno.EACCES)
    f = SyscallFilter(allow=("@basic-io",), default=True)  # clone not allowed: ENOSYS
    assert verdict_of(f, "clone", args=(0x10000000,)) == errno_ret(errno.ENOSYS)
    f = SyscallFilter(allow=("@process",), default=True)
    assert verdict_of(f, "clone", args=(0x10000000,)) == errno_ret(errno.EPERM)
    assert verdict_of(f, "clone", args=(0x11,)) == ALLOW


@needs_table
def test_sendmsg_is_exempt_only_for_the_patched_fd_and_only_with_notify():
    f = SyscallFilter(allow=("@basic-io",))
    filt = compile_filter(f, notify=True)
    code = with_notify_fd(filt, 5)
    assert struct.unpack_from("=I", code, filt.fd_offset) == (5,)
    sendmsg = nr("sendmsg")
    assert run(code, sendmsg, (5, 0x7FFF0000, 0x4000)) == ALLOW
    assert run(code, sendmsg, (6,)) == USER_NOTIF
    assert run(code, sendmsg, ((1 << 32) | 5,)) == USER_NOTIF
    assert run(code, nr("sendto"), (5,)) == USER_NOTIF
    assert run(code, nr("read"), (5,)) == ALLOW  # the rules still follow the exemption
    assert run(with_notify_fd(filt, 6), sendmsg, (5,)) == USER_NOTIF
    assert run(filt.code, sendmsg, (5,)) == USER_NOTIF  # unpatched: exempts no real fd
    plain = compile_filter(f, notify=False)
    assert plain.fd_offset is None
    assert run(plain.code, sendmsg, (5,)) == errno_ret(errno.ENOSYS)
    with pytest.raises(ValueError, match="without notify"):
        with_notify_fd(plain, 5)
    with pytest.raises(ValueError, match="not a file descriptor"):
        with_notify_fd(filt, -1)


@needs_table
def test_every_group_as_an_allow_list_is_a_short_program():
    for default in (False, True):
        f = SyscallFilter(allow=ALL_GROUPS, default=default)
        for notify in (False, True):
            assert compile_filter(f, notify=notify).length < 4096
    f = SyscallFilter(allow=ALL_GROUPS)
    assert verdict_of(f, "ptrace") == ALLOW
    assert verdict_of(f, "read") == ALLOW


@needs_table
@pytest.mark.parametrize("notify", [False, True])
def test_a_scattered_allow_list_is_right_for_every_number(notify):
    """Every other syscall allowed: the most ranges, and long jumps through ja."""
    numbers = syscalls.table()
    every_other = tuple(sorted(numbers, key=numbers.get)[::2])
    f = SyscallFilter(allow=every_other, deny=("ptrace:kill", "bpf:EACCES"), default=True)
    filt = compile_filter(f, notify=notify)
    check_program(filt.code)
    assert filt.length < 4096
    assert any(op == JA for op, *_ in instructions(filt.code)), "no long jump exercised"
    code = with_notify_fd(filt, 3) if notify else filt.code
    allowed = {numbers[n] for n in (*every_other, *groups.GROUPS["@default"]) if n in numbers}
    denied = {numbers[n.partition(":")[0]] for n in groups.expand("@default-deny")[0]
              if n.partition(":")[0] in numbers}  # fmt: skip
    special = {numbers["ptrace"]: KILL_PROCESS, numbers["bpf"]: errno_ret(errno.EACCES)}
    for number in range(max(numbers.values()) + 20):
        if number in special:
            expected = special[number]
        elif number in denied:
            expected = errno_ret(errno.ENOSYS if number == numbers["clone3"] else errno.EPERM)
        elif number in allowed:
            expected = ALLOW
        else:
            expected = errno_ret(errno.ENOSYS)
        fallback = number == numbers["clone3"] and number in denied  # ENOSYS in the kernel
        if notify and expected != ALLOW and not fallback:
            expected = USER_NOTIF
        assert run(code, number) == expected, (number, filt.names.get(number))


@needs_table
def test_a_filter_shows_itself_briefly():
    text = repr(compile_filter(DEFAULT, notify=True))
    assert text.startswith("Filter(") and "instructions, notify" in text and len(text) < 120


@needs_table
def test_compiled_once_per_filter_and_mode():
    a = compile_filter(SyscallFilter(deny=("ptrace",)), notify=True)
    assert compile_filter(SyscallFilter(deny=("ptrace",)), notify=True) is a
    assert compile_filter(SyscallFilter(deny=("ptrace",)), notify=False) is not a


def test_aarch64_layout(monkeypatch, fresh_compile):
    """aarch64: its audit arch, and no x32 check (bit 30 is just a large number there)."""
    fake = {"read": 63, "exit_group": 94, "unshare": 97, "ptrace": 117, "sendmsg": 211,
            "clone": 220, "execve": 221, "clone3": 435}  # fmt: skip
    monkeypatch.setattr(syscalls, "native_arch", lambda: "aarch64")
    monkeypatch.setattr(syscalls, "table", lambda: fake)
    filt = compile_filter(DEFAULT, notify=True)
    code = with_notify_fd(filt, 4)
    check_program(code)
    aarch64 = AUDIT["aarch64"]
    assert run(code, 63, arch=aarch64) == ALLOW
    assert run(code, 117, arch=aarch64) == USER_NOTIF
    # Bit 30 is no x32 there: just a number above the table's, ENOSYS under the default list.
    assert run(code, 0x40000000, arch=aarch64) == errno_ret(errno.ENOSYS)
    assert run(code, 211, (4,), arch=aarch64) == ALLOW
    assert run(code, 63, arch=AUDIT["x86_64"]) == KILL_PROCESS
    assert run(code, 220, (0x10000000,), arch=aarch64) == USER_NOTIF
    assert filt.names == {nr: name for name, nr in fake.items()}


# ---- the kernel's view ----------------------------------------------------------------------

_INSTALL = r"""
import ctypes, json, os, sys
code, nr_seccomp, calls = bytes.fromhex(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
buf = ctypes.create_string_buffer(code, len(code))
prog = Prog(len(code) // 8, ctypes.addressof(buf))
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
results = [None] * len(calls)
if libc.syscall(ctypes.c_long(nr_seccomp), ctypes.c_long(1), ctypes.c_long(0),
                ctypes.byref(prog)) != 0:
    os.write(1, b"install failed: %d" % ctypes.get_errno())
    os._exit(3)
for i, (number, args) in enumerate(calls):
    r = libc.syscall(*(ctypes.c_long(v) for v in (number, *args)))
    results[i] = 0 if r >= 0 else ctypes.get_errno()
os.write(1, json.dumps(results).encode())
os._exit(0)
"""


def _in_the_kernel(code: bytes, calls: list[tuple[int, tuple[int, ...]]]) -> list[int]:
    """Install ``code`` in a child (no_new_privs, no privilege needed); the errno of each call."""
    run_ = subprocess.run(
        [sys.executable, "-c", _INSTALL, code.hex(), str(nr("seccomp")), json.dumps(calls)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run_.returncode == 0, run_.stdout + run_.stderr
    return json.loads(run_.stdout)


def _kernel_filters() -> str | None:
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as f:
            actions = f.read().split()
    except OSError:
        return "this kernel has no seccomp filters"
    return None if {"kill_process", "user_notif"} <= set(actions) else "old seccomp actions"


@needs_table
@pytest.mark.skipif(_kernel_filters() is not None, reason=str(_kernel_filters()))
def test_the_kernel_accepts_and_applies_the_default_program():
    code = compile_filter(DEFAULT, notify=False).code
    calls = [
        (nr("ptrace"), (-1, 0, 0, 0)),  # the filter: EPERM (the kernel itself: EIO or ESRCH)
        (nr("unshare"), (0,)),  # EPERM (the kernel: success)
        (nr("clone3"), (0, 0)),  # ENOSYS (the kernel: EINVAL)
        (nr("clone"), (0x10000000 | 0x200, 0, 0, 0, 0)),  # NEWUSER|FS: EPERM (kernel: EINVAL)
        (nr("clone"), (0x800, 0, 0, 0, 0)),  # SIGHAND without VM: the kernel's EINVAL
        (nr("getpid"), ()),
    ]
    assert _in_the_kernel(code, calls) == [
        errno.EPERM, errno.EPERM, errno.ENOSYS, errno.EPERM, errno.EINVAL, 0,
    ]  # fmt: skip


@needs_table
@pytest.mark.skipif(_kernel_filters() is not None, reason=str(_kernel_filters()))
def test_the_kernel_accepts_a_notify_program_and_its_sendmsg_exemption():
    # Installed without a listener, a notification is ENOSYS: enough to see what is exempt.
    f = SyscallFilter(allow=("@basic-io", "@signal", "@memory"), deny=("ptrace:kill",))
    code = with_notify_fd(compile_filter(f, notify=True), 1000)
    calls = [
        (nr("sendmsg"), (1000, 0, 0)),  # exempt: the kernel's EBADF (no fd 1000)
        (nr("sendmsg"), (1001, 0, 0)),  # notified: ENOSYS
        (nr("ptrace"), (-1, 0, 0, 0)),  # notified (the parent would kill): ENOSYS
        (nr("getpid"), ()),  # @default
    ]
    assert _in_the_kernel(code, calls) == [errno.EBADF, errno.ENOSYS, errno.ENOSYS, 0]


@needs_table
def test_an_allow_list_naming_a_namespace_call_allows_namespaces():
    plain = SyscallFilter(allow=("@basic-io", "@process"))
    assert verdict_of(plain, "unshare") == errno_ret(errno.EPERM)  # refused, as @namespace is
    named = SyscallFilter(allow=("@basic-io", "@process", "unshare"))
    assert verdict_of(named, "unshare") == ALLOW
    assert run(compile_filter(named, notify=False).code, nr("clone"), (0x10000000,)) == ALLOW


def test_default_cannot_be_denied_and_case_mistakes_are_named():
    with pytest.raises(PolicyError, match=r"@default cannot be denied"):
        SyscallFilter(deny=("@default",))
    with pytest.raises(PolicyError, match=r"did you mean ptrace\?"):
        SyscallFilter(deny=("PTRACE",))
