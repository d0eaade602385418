"""hardexec learn's logic: the watch filter's program and judgement, what a Learned becomes as
a policy file, the file's header, and writing it."""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys

import pytest

from hardexec import Policy
from hardexec.cli import learn as cli_learn
from hardexec.confine import Confinement, SyscallFilter, groups, syscalls
from hardexec.confine import compile as confine_compile
from hardexec.confine.notify import address_kind
from hardexec.confine.seccomp import (
    SECCOMP_RET_USER_NOTIF,
    WatchFilter,
    compile_filter,
    compile_watch,
    with_notify_fd,
)
from hardexec.errors import PolicyError, StageError
from hardexec.learn import MEMORY_MARGIN, PIDS_MARGIN, Learned
from hardexec.policy import CgroupLimits
from hardexec.policyfile import PolicyFile, RunSettings, dumps, loads

NR = syscalls.table()
_INSN = struct.Struct("=HBBI")


def learned(**fields) -> Learned:
    values = {"argv": ("tool", "--selftest"), "base": PolicyFile(), "syscalls": ()}
    values.update(fields)
    return Learned(**values)


# --- the watch filter --------------------------------------------------------------------------


def test_an_empty_watch_filter_is_valid_and_refuses_nothing():
    filt = compile_watch(WatchFilter())
    assert filt.watch
    for name in ("ptrace", "unshare", "socket", "reboot"):
        assert filt.judge(NR[name], [0] * 6) is None


def test_the_watch_program_ends_in_a_notification_and_tells_clone3_enosys():
    code = compile_watch(WatchFilter()).code
    insns = [_INSN.unpack_from(code, i) for i in range(0, len(code), _INSN.size)]
    assert insns[-1] == (0x06, 0, 0, SECCOMP_RET_USER_NOTIF)
    # clone3: compared, then answered ENOSYS in the kernel (glibc falls back on clone).
    at = insns.index((0x15, 0, 1, NR["clone3"]))
    assert insns[at + 1] == (0x06, 0, 0, 0x00050000 | errno.ENOSYS)


def test_the_watch_program_exempts_the_stages_sendmsg_by_fd():
    filt = compile_watch(WatchFilter())
    patched = with_notify_fd(filt, 7)
    assert struct.unpack_from("=I", patched, filt.fd_offset) == (7,)


def test_a_watch_filter_with_bad_rules_is_refused_like_a_syscall_filter():
    with pytest.raises(PolicyError, match=r"syscalls.deny\[0\]: unknown syscall 'ptrac'"):
        WatchFilter(deny=("ptrac",))


def test_a_watch_filter_is_not_equal_to_the_syscall_filter_of_its_rules():
    # Caches keyed on filters must never answer one with the other's program.
    assert WatchFilter(default=True) != SyscallFilter(default=True)
    assert compile_watch(WatchFilter(default=True)).watch
    assert not compile_filter(SyscallFilter(default=True), notify=True).watch


def test_within_the_default_list_its_refusals_are_judged_as_it_judges_them():
    filt = compile_watch(WatchFilter(default=True))
    assert filt.judge(NR["ptrace"], [0] * 6).errno == errno.EPERM
    assert filt.judge(NR["unshare"], [0] * 6).errno == errno.EPERM
    assert filt.judge(NR["openat"], [0] * 6) is None
    newuser = [groups.CLONE_NEWUSER | 17, 0, 0, 0, 0, 0]
    assert filt.judge(NR["clone"], newuser).errno == errno.EPERM
    assert filt.judge(NR["clone"], [17, 0, 0, 0, 0, 0]) is None  # a plain fork runs


def test_within_an_allow_list_what_it_lacks_gets_enosys_and_a_deny_its_action():
    filt = compile_watch(WatchFilter(allow=("@basic-io",), deny=("write:EACCES",)))
    assert filt.judge(NR["read"], [0] * 6) is None
    assert filt.judge(NR["mmap"], [0] * 6) is None  # @default
    assert filt.judge(NR["socket"], [2, 1, 0, 0, 0, 0]).errno == errno.ENOSYS
    assert filt.judge(NR["write"], [1, 0, 0, 0, 0, 0]).errno == errno.EACCES


def test_watching_without_a_listener_is_refused_even_best_effort():
    policy = Policy(confinement=Confinement(syscalls=WatchFilter(), best_effort=True))
    with pytest.raises(StageError, match="watching syscalls: nothing stays to answer"):
        confine_compile.confine(policy, "/bin/true", listen=False)


def test_watching_before_linux_5_5_is_refused(monkeypatch):
    monkeypatch.setattr(confine_compile, "_kernel", lambda: (5, 4))
    policy = Policy(confinement=Confinement(syscalls=WatchFilter(), umask=0o22))
    with pytest.raises(StageError, match="CONTINUE needs Linux 5.5"):
        confine_compile.confine(policy, "/bin/true")


@pytest.mark.parametrize(
    ("release", "version"),
    [("6.1.0-13-amd64", (6, 1)), ("5.10.0", (5, 10)), ("5.4-rc1", (5, 4)), ("weird", (0, 0))],
)
def test_the_kernel_version_is_read_from_the_release(monkeypatch, release, version):
    uname = os.uname()
    fake = os.uname_result((uname.sysname, uname.nodename, release, uname.version, "x"))
    monkeypatch.setattr(confine_compile.os, "uname", lambda: fake)
    assert confine_compile._kernel() == version


# --- what is learned ---------------------------------------------------------------------------


def test_the_allow_list_is_what_ran_sorted_without_default_with_sendmsg():
    got = learned(syscalls=(("write", 3), ("mmap", 40), ("openat", 2), ("syscall 999", 1)))
    assert got.allowed() == ("openat", "sendmsg", "write")  # mmap: in @default


def test_a_clone_making_a_namespace_allows_the_namespace_group():
    assert "@namespace" in learned(syscalls=(("clone", 1),), new_namespaces=1).allowed()
    assert "@namespace" not in learned(syscalls=(("clone", 1),)).allowed()


def test_no_socket_but_unix_ones_gets_the_net_namespace():
    doc = learned(syscalls=(("socketpair", 1),), families=(("AF_UNIX", 1),)).policy_file()
    assert doc.policy.confinement.namespaces == ("net",)
    assert not learned(families=(("AF_UNIX", 1),)).network


@pytest.mark.parametrize("family", ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"])
def test_any_other_family_keeps_the_hosts_network(family):
    got = learned(families=(("AF_UNIX", 1), (family, 1)))
    assert got.network
    assert got.policy_file().policy.confinement.namespaces == ()


def test_the_base_is_kept_and_its_filters_deny_rules_too():
    base_policy = Policy(
        confinement=Confinement(
            syscalls=SyscallFilter(default=True, deny=("kill:EACCES",)), namespaces=("ipc",)
        )
    )
    run = RunSettings(env_policy="clear", timeout=30.0)
    got = learned(base=PolicyFile(policy=base_policy, run=run), syscalls=(("read", 1),))
    doc = got.policy_file()
    filt = doc.policy.confinement.syscalls
    assert (filt.allow, filt.deny, filt.default) == (("read", "sendmsg"), ("kill:EACCES",), True)
    assert doc.policy.confinement.namespaces == ("net", "ipc")
    assert doc.run == run


def test_ceilings_come_from_measured_peaks_with_the_margin():
    peak = 100 << 20
    doc = learned(memory_peak=peak, pids_peak=4).policy_file()
    factor, least = MEMORY_MARGIN
    assert doc.policy.cgroups.memory == max(int(peak * factor), peak + least)
    assert doc.policy.cgroups.memory % (1 << 20) == 0
    assert doc.policy.cgroups.pids == max(int(4 * PIDS_MARGIN[0]), 4 + PIDS_MARGIN[1])


def test_nothing_measured_adds_no_cgroup_and_a_ceiling_of_the_base_stays():
    assert learned().policy_file().policy.cgroups is None
    base = PolicyFile(policy=Policy(cgroups=CgroupLimits(memory=1 << 30)))
    doc = learned(base=base, memory_peak=10 << 20, pids_peak=3).policy_file()
    assert doc.policy.cgroups.memory == 1 << 30  # the base's own choice
    assert doc.policy.cgroups.pids == 19  # measured, and the base had none


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_the_file_round_trips_through_loads(fmt):
    got = learned(syscalls=(("write", 1), ("socket", 1)), families=(("AF_INET", 1),), returncode=3)
    assert loads(got.dumps(fmt), fmt=fmt) == got.policy_file()


def test_the_toml_header_says_how_it_was_learned_and_an_argument_cannot_break_out():
    evil = "x\n[security]\ndrop_all_caps = false"
    got = learned(
        argv=("tool", evil),
        syscalls=(("write", 2), ("read", 1)),
        families=(("AF_UNIX", 1),),
        returncode=-9,
        kernel="Linux 6.1.0 x86_64",
        when="2026-01-02T03:04:05Z",
        notes=("Peak memory and pids were not measured.",),
    )
    text = got.dumps("toml")
    header = text[: text.index("\nversion")]
    flat = " ".join(line[2:] for line in header.splitlines())
    assert all(line.startswith("#") for line in header.strip().splitlines()), header
    assert "2026-01-02T03:04:05Z, Linux 6.1.0 x86_64" in header
    assert "killed by signal 9; 2 distinct syscalls ran (3 calls)" in flat
    assert "network: no" in flat
    assert "x\\n[security]" in header
    assert "Peak memory and pids were not measured." in flat
    assert loads(text) == got.policy_file()  # the argument stayed inside its comment


def test_json_has_no_header_but_the_same_document():
    got = learned(syscalls=(("write", 1),))
    assert got.dumps("json") == dumps(got.policy_file(), "json")


# --- writing the file --------------------------------------------------------------------------


def write(path, text):
    directory = cli_learn.open_output_directory(str(path))
    try:
        cli_learn.write_atomically(directory, str(path), text)
    finally:
        os.close(directory)


def test_writing_replaces_a_symlink_rather_than_following_it(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    link = tmp_path / "tool.toml"
    link.symlink_to(target)
    write(link, "version = 1\n")
    assert not link.is_symlink()
    assert link.read_text() == "version = 1\n"
    assert target.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "tool.toml"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    (tmp_path / "tool.toml").mkdir()  # rename over a directory fails
    (tmp_path / "tool.toml" / "inside").write_text("")
    with pytest.raises(OSError):
        write(tmp_path / "tool.toml", "version = 1\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tool.toml"]


def test_the_file_gets_the_mode_of_a_new_file(tmp_path):
    old = os.umask(0o027)
    try:
        write(tmp_path / "tool.toml", "version = 1\n")
    finally:
        os.umask(old)
    assert (tmp_path / "tool.toml").stat().st_mode & 0o777 == 0o640


# --- addresses ---------------------------------------------------------------------------------


def sockaddr(family: int, rest: bytes) -> bytes:
    return family.to_bytes(2, sys.byteorder) + rest


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (sockaddr(socket.AF_UNIX, b"\0hidden"), "unix-abstract"),
        (sockaddr(socket.AF_UNIX, b""), "unix-abstract"),  # bind's autobind
        (sockaddr(socket.AF_UNIX, b"/run/x.sock\0"), "unix-path"),
        (sockaddr(socket.AF_INET, b"\0\x50" + bytes([127, 0, 0, 1]) + bytes(8)), "inet-loopback"),
        (sockaddr(socket.AF_INET, b"\0\x50" + bytes([10, 0, 0, 1]) + bytes(8)), "inet"),
        (sockaddr(socket.AF_INET6, bytes(6) + bytes(15) + b"\1" + bytes(4)), "inet6-loopback"),
        (
            sockaddr(socket.AF_INET6, bytes(6) + bytes(10) + b"\xff\xff\x7f\0\0\1" + bytes(4)),
            "inet6-loopback",
        ),
        (sockaddr(socket.AF_INET6, bytes(6) + b"\x20\x01" + bytes(14) + bytes(4)), "inet6"),
        (sockaddr(socket.AF_INET, b"\0"), "unknown"),
        (sockaddr(socket.AF_NETLINK, bytes(10)), f"family {socket.AF_NETLINK}"),
        (b"\1", "unknown"),
    ],
)
def test_address_kinds(data, kind):
    assert address_kind(data) == kind


@pytest.mark.parametrize(
    ("kind", "network"), [("unix-abstract", True), ("unreadable", True), ("unix-path", False)]
)
def test_an_abstract_or_unread_unix_address_keeps_the_hosts_network(kind, network):
    got = learned(families=(("AF_UNIX", 1),), addresses=((kind, 1),))
    assert got.network is network
    assert ("net" in got.policy_file().policy.confinement.namespaces) is not network


def test_sendmsg_is_not_added_when_the_base_filter_refuses_it():
    base = PolicyFile(
        policy=Policy(confinement=Confinement(syscalls=SyscallFilter(allow=("@basic-io",))))
    )
    assert learned(base=base, syscalls=(("read", 1),)).allowed() == ("read",)
    base = PolicyFile(policy=Policy(confinement=Confinement(syscalls=SyscallFilter(default=True))))
    assert learned(base=base, syscalls=(("read", 1),)).allowed() == ("read", "sendmsg")
