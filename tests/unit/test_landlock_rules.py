"""Landlock policy side: rights per access word and ABI, what is unenforced, the stage's blob."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from hardexec._record import FrozenInstanceError
from hardexec.confine.config import Confinement
from hardexec.confine.landlock import (
    ACCESS_RIGHTS,
    FS_ALL,
    FS_EXECUTE,
    FS_FILE_ONLY,
    FS_IOCTL_DEV,
    FS_READ_DIR,
    FS_READ_FILE,
    FS_REFER,
    FS_TRUNCATE,
    FS_WRITE_FILE,
    NET_BIND_TCP,
    NET_CONNECT_TCP,
    abi,
    compile_rules,
    fs_rights,
    net_rights,
)
from hardexec.errors import PolicyError


@pytest.fixture
def tree(tmp_path):
    """A directory and a file in it, for rules that stat what they name."""
    directory = tmp_path / "data"
    directory.mkdir()
    file = directory / "file.txt"
    file.write_text("x")
    return str(directory), str(file)


def test_access_words_allow_what_their_names_say():
    assert ACCESS_RIGHTS["ro"] == FS_READ_FILE | FS_READ_DIR == 0b1100
    assert ACCESS_RIGHTS["rx"] == FS_READ_FILE | FS_READ_DIR | FS_EXECUTE == 0b1101
    assert ACCESS_RIGHTS["rw"] == FS_ALL & ~FS_EXECUTE & ~(1 << 6) & ~(1 << 11) == 0xF7BE
    assert ACCESS_RIGHTS["rwx"] == FS_ALL == 0xFFFF
    assert FS_ALL == (1 << 16) - 1 and FS_IOCTL_DEV == 1 << 15
    assert FS_FILE_ONLY == FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
    assert (NET_BIND_TCP, NET_CONNECT_TCP) == (1, 2)


@pytest.mark.parametrize(
    ("version", "fs", "net"),
    [
        (0, 0, 0),
        (1, 0x1FFF, 0),
        (2, 0x3FFF, 0),
        (3, 0x7FFF, 0),
        (4, 0x7FFF, 3),
        (5, 0xFFFF, 3),
        (6, 0xFFFF, 3),
        (7, 0xFFFF, 3),
        (9, 0xFFFF, 3),  # a newer kernel: at least what hardexec knows
    ],
)
def test_rights_each_abi_supports(version, fs, net):
    assert fs_rights(version) == fs
    assert net_rights(version) == net


@pytest.mark.parametrize(
    ("version", "unenforced"),
    [
        (0, ("Landlock (the kernel has none)",)),
        (1, ("truncate", "ioctl on devices", "TCP bind", "TCP connect")),
        (2, ("truncate", "ioctl on devices", "TCP bind", "TCP connect")),
        (3, ("ioctl on devices", "TCP bind", "TCP connect")),
        (4, ("ioctl on devices",)),
        (5, ()),
        (7, ()),
    ],
)
def test_unenforced_per_abi(tree, version, unenforced):
    directory, _ = tree
    rules = compile_rules(Confinement(fs=[(directory, "rw")], tcp_bind=[80]), abi=version)
    assert rules.abi == version
    assert rules.unenforced == unenforced
    assert rules.handled_fs == fs_rights(version)
    assert rules.handled_net == net_rights(version)
    if version == 0:
        # Nothing can be applied: no rule is left for the stage, and it must not get any.
        assert (rules.rules, rules.ports) == ((), ())
        assert rules.is_empty()


def test_refer_missing_on_abi_1_is_not_reported():
    """On ABI 1 the kernel refuses every reparenting: stricter than a rule, not weaker."""
    rules = compile_rules(Confinement(fs=[("/", "rwx")]), abi=1)
    assert not rules.handled_fs & FS_REFER
    assert rules.unenforced == ("truncate", "ioctl on devices")
    assert rules.rules == (("/", 0x1FFF),)


def test_only_the_kinds_asked_for_are_reported():
    fs_only = compile_rules(Confinement(fs=[("/", "ro")]), abi=3)
    assert fs_only.unenforced == ("ioctl on devices",)
    assert fs_only.handled_net == 0
    tcp_only = compile_rules(Confinement(tcp_connect=[443]), abi=3)
    assert tcp_only.unenforced == ("TCP bind", "TCP connect")
    assert tcp_only.handled_fs == 0 and tcp_only.handled_net == 0
    assert tcp_only.is_empty()  # nothing left this kernel can restrict
    assert compile_rules(Confinement(tcp_connect=[443]), abi=5).unenforced == ()


def test_one_port_list_handles_both_kinds():
    """``Confinement`` documents it: either list makes the other's absence mean "none"."""
    rules = compile_rules(Confinement(tcp_bind=[8080]), abi=7)
    assert rules.handled_fs == 0
    assert rules.handled_net == NET_BIND_TCP | NET_CONNECT_TCP
    assert rules.ports == ((8080, NET_BIND_TCP),)
    assert not rules.is_empty()


def test_no_landlock_rule_gives_none():
    assert compile_rules(Confinement(), abi=7) is None
    assert compile_rules(Confinement(umask=0o077), deps=[("/bin/cat", "rx")], abi=7) is None


def test_blob_bytes_exactly(tree):
    directory, file = tree
    c = Confinement(
        fs=[(directory, "rw"), (file, "ro")], tcp_bind=[8080], tcp_connect=[443, 8080, 443]
    )
    rules = compile_rules(c, abi=7)
    expected = (
        b"fs=ffff\0net=3\0scope=3\0"
        + b"path=f7be:" + os.fsencode(directory) + b"\0"
        + b"path=4:" + os.fsencode(file) + b"\0"
        + b"port=2:443\0port=3:8080\0"
    )  # fmt: skip
    assert rules.blob() == expected


def test_scopes_come_with_any_rule_from_abi_6():
    assert compile_rules(Confinement(fs=[("/", "ro")]), abi=6).scoped == 3
    assert compile_rules(Confinement(tcp_bind=[80]), abi=7).scoped == 3
    assert compile_rules(Confinement(fs=[("/", "ro")]), abi=5).scoped == 0
    assert b"scope=" not in compile_rules(Confinement(fs=[("/", "ro")]), abi=5).blob()


def test_blob_without_net_and_without_paths():
    assert compile_rules(Confinement(fs=[("/", "rx")]), abi=3).blob() == b"fs=7fff\0path=d:/\0"
    assert compile_rules(Confinement(tcp_connect=[0]), abi=4).blob() == b"fs=0\0net=3\0port=2:0\0"


def test_blob_paths_are_raw_bytes(tmp_path):
    odd = tmp_path / "donn\u00e9es"
    odd.mkdir()
    undecodable = os.fsencode(str(tmp_path)) + b"/\xff"
    rules = compile_rules(Confinement(fs=[(str(odd), "ro"), (undecodable, "ro")]), abi=7)
    blob = rules.blob()
    assert b"path=c:" + os.fsencode(str(odd)) + b"\0" in blob
    assert b"path=c:" + undecodable + b"\0" in blob  # missing: unmasked, the stage reports it


def test_rules_on_files_keep_only_file_rights(tree):
    directory, file = tree
    rules = compile_rules(Confinement(fs=[(file, "rwx"), (directory, "rwx")]), abi=7)
    assert rules.rules == ((file, FS_FILE_ONLY), (directory, FS_ALL))
    assert rules.rules[0][1] == 0xC007
    # And masked to what the ABI handles: no TRUNCATE on 2, no IOCTL_DEV before 5.
    assert compile_rules(Confinement(fs=[(file, "rw")]), abi=2).rules == ((file, 0x6),)
    assert compile_rules(Confinement(fs=[(file, "rw")]), abi=3).rules == ((file, 0x4006),)
    assert compile_rules(Confinement(fs=[(file, "ro")]), abi=1).rules == ((file, FS_READ_FILE),)


def test_symlink_to_a_directory_is_a_directory_rule(tree, tmp_path):
    directory, _ = tree
    link = tmp_path / "link"
    link.symlink_to(directory)
    rules = compile_rules(Confinement(fs=[(str(link), "ro")]), abi=7)
    assert rules.rules == ((str(link), FS_READ_FILE | FS_READ_DIR),)


def test_duplicate_paths_are_merged_in_first_order(tree):
    directory, file = tree
    c = Confinement(fs=[(directory, "ro"), (file, "ro"), (directory, "rx"), (directory, "rw")])
    rules = compile_rules(c, deps=[(file, "rx"), ("/nonexistent/lib.so", "ro")], abi=7)
    assert [path for path, _ in rules.rules] == [directory, file, "/nonexistent/lib.so"]
    assert rules.rules[0][1] == FS_ALL & ~(1 << 6) & ~(1 << 11)  # rx | rw: no device nodes
    assert rules.rules[1][1] == FS_READ_FILE | FS_EXECUTE
    assert rules.access == ("rw+rx", "rx", "ro")
    assert rules.found == (False, False, True)  # the file was named by the user first


def test_dependencies_are_ignored_without_a_path_rule():
    rules = compile_rules(Confinement(tcp_bind=[22]), deps=[("/bin/cat", "rx")], abi=7)
    assert rules.rules == ()


def test_bad_dependencies_are_policy_errors():
    c = Confinement(fs=[("/", "ro")])
    with pytest.raises(PolicyError, match=r"dependencies\[1\].*'rwxs'"):
        compile_rules(c, deps=[("/bin/cat", "rx"), ("/bin/sh", "rwxs")], abi=7)
    with pytest.raises(PolicyError, match=r"dependencies\[0\]"):
        compile_rules(c, deps=[("/bin/\0cat", "rx")], abi=7)
    with pytest.raises(PolicyError, match=r"dependencies\[0\]: expected \(path, access\)"):
        compile_rules(c, deps=["/bin/cat"], abi=7)


def test_describe_rule_follows_blob_order(tree):
    directory, _ = tree
    c = Confinement(fs=[(directory, "ro")], tcp_bind=[8080, 22], tcp_connect=[22])
    rules = compile_rules(c, deps=[("/usr/bin/cat", "rx")], abi=7)
    assert [rules.describe_rule(i) for i in range(5)] == [
        f"path rule {directory} (ro)",
        "path rule /usr/bin/cat (rx, needed to start the program)",
        "TCP port 22 (bind, connect)",
        "TCP port 8080 (bind)",
        "Landlock rule #4 (not in the ruleset)",
    ]
    assert rules.describe_rule(-1) == "Landlock rule #-1 (not in the ruleset)"
    connect = compile_rules(Confinement(tcp_connect=[443]), abi=4)
    assert connect.describe_rule(0) == "TCP port 443 (connect)"


def test_ruleset_is_frozen():
    rules = compile_rules(Confinement(fs=[("/", "ro")]), abi=7)
    with pytest.raises(FrozenInstanceError):
        rules.handled_fs = 0  # type: ignore[misc]
    assert rules == compile_rules(Confinement(fs=[("/", "ro")]), abi=7)


def test_kernel_abi_is_cached_and_used_by_default():
    version = abi()
    assert isinstance(version, int) and version >= 0
    assert abi() == version
    rules = compile_rules(Confinement(fs=[("/", "ro")]))
    assert rules.abi == version and rules.handled_fs == fs_rights(version)


def _lsm_list() -> str:
    """The kernel's active LSMs; where securityfs is not mounted, root mounts it in a mount
    namespace of its own for the read (the host's mounts stay as they are)."""
    try:
        with open("/sys/kernel/security/lsm") as f:
            return f.read()
    except OSError:
        pass
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("securityfs is not mounted, and mounting it privately needs root and unshare")
    read = "mount -t securityfs securityfs /sys/kernel/security && cat /sys/kernel/security/lsm"
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", read],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_kernel_abi_agrees_with_the_lsm_list():
    active = "landlock" in _lsm_list().strip().split(",")
    assert (abi() > 0) == active
