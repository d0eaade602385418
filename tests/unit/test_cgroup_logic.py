"""cgroup naming, discovery and usage parsing, on fake /proc files (no cgroup is touched)."""

import errno
import re

import pytest

from hardexec import CgroupError, Usage
from hardexec import cgroups as cg
from hardexec.report import parse_report


def test_group_names_follow_solti_exec_and_never_repeat():
    first, second = cg.group_name(), cg.group_name()
    assert re.fullmatch(r"hardexec-\d+-[0-9a-f]+-[0-9a-f]+", first)
    assert first != second
    assert int(second.split("-")[2], 16) == int(first.split("-")[2], 16) + 1


@pytest.mark.parametrize(
    ("runner", "slot"), [("../../etc", "x"), ("a/b", "c d"), (".hidden", "1"), ("ü", "\n")]
)
def test_group_names_are_sanitised(runner, slot):
    name = cg.group_name(runner, slot)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name), name
    assert "/" not in name and not name.startswith(".") and len(name) <= 255


def test_v2_mount_reads_mountinfo(tmp_path, monkeypatch):
    info = tmp_path / "mountinfo"
    info.write_text(
        "25 1 0:22 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "26 1 0:23 /sub /mnt/bind rw - cgroup2 cgroup2 rw\n"
        "27 1 0:23 / /run/my\\040cgroup rw shared:9 - cgroup2 cgroup2 rw\n"
    )
    monkeypatch.setattr(cg, "_MOUNTINFO", str(info))
    assert str(cg.v2_mount()) == "/run/my cgroup"  # the root mount, unescaped; not the bind
    info.write_text("25 1 0:22 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    with pytest.raises(CgroupError) as err:
        cg.v2_mount()
    assert err.value.errno == errno.ENOENT and "no cgroup v2 hierarchy is mounted" in str(err.value)


def test_default_parent_is_the_callers_own_group(tmp_path, monkeypatch):
    info, own = tmp_path / "mountinfo", tmp_path / "cgroup"
    info.write_text("27 1 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    own.write_text("1:name=systemd:/x\n0::/user.slice/job.scope\n")
    monkeypatch.setattr(cg, "_MOUNTINFO", str(info))
    monkeypatch.setattr(cg, "_SELF_CGROUP", str(own))
    assert str(cg.default_parent()) == "/sys/fs/cgroup/user.slice/job.scope"
    own.write_text("1:name=systemd:/x\n")
    with pytest.raises(CgroupError, match="no 0:: line"):
        cg.default_parent()
    own.write_text("0::/gone (deleted)\n")
    with pytest.raises(CgroupError, match="has been removed"):
        cg.default_parent()


def test_usage_from_cgroup_files():
    usage = Usage.from_cgroup_files(
        {
            "cpu.stat": "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n"
            "nr_periods 30\nnr_throttled 20\nthrottled_usec 2500000\n",
            "memory.peak": "67108864\n",
            "memory.events": "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
            "pids.peak": "7\n",
        }
    )
    assert usage == Usage("cgroup", 1.0, 0.5, 2.5, 64 << 20, 7, True)


def test_usage_from_a_group_without_controllers():
    usage = Usage.from_cgroup_files(
        {"cpu.stat": "usage_usec 10\nuser_usec 6\nsystem_usec 4\n", "memory.peak": None}
    )
    assert usage == Usage("cgroup", 6e-6, 4e-6, None, None, None, None)


def test_rlimit_failures_name_the_resource():
    report = parse_report(b"F setrlimit 1 7\n", "prog")
    assert str(report.error) == (
        "setrlimit failed: [Errno 1] Operation not permitted (RLIMIT_NOFILE)"
    )
    warning = parse_report(b"W cgroup_join 9 -\n", "prog").warnings[0]
    assert (warning.step, warning.errno) == ("cgroup_join", errno.EBADF)


def _sends(monkeypatch, cgroup, pgid_of_leader):
    import signal

    from hardexec import spawn_core

    sent = []
    monkeypatch.setattr(spawn_core.os, "kill", lambda pid, sig: sent.append(("pid", pid, sig)))
    monkeypatch.setattr(spawn_core.os, "killpg", lambda pg, sig: sent.append(("pg", pg, sig)))
    monkeypatch.setattr(spawn_core.os, "getpgid", lambda pid: pgid_of_leader)
    spawn_core.signal_tree(cgroup, 4242, signal.SIGTERM)
    return [s for s in sent if s[2] == signal.SIGTERM]


class _Group:
    def __init__(self, pids):
        self._pids = pids

    def pids(self):
        return list(self._pids)

    def kill(self):
        raise AssertionError("a polite signal never kills the group")


def test_a_polite_signal_reaches_each_process_once(monkeypatch):
    """Sent to the cgroup's members, the process group and the pid alike, a SIGTERM arrived
    up to three times: a second one, after the first one's handler ran, is "stop now"."""
    # A cgroup: its members, each once; the leader is one of them.
    assert _sends(monkeypatch, _Group([4242, 4243]), 4242) == [
        ("pid", 4242, 15),
        ("pid", 4243, 15),
    ]
    # No cgroup, the leader leads its process group: the group only.
    assert _sends(monkeypatch, None, 4242) == [("pg", 4242, 15)]
    # It moved to another process group: the group it left, and the leader by pid.
    assert _sends(monkeypatch, None, 1) == [("pg", 4242, 15), ("pid", 4242, 15)]
    # A leader outside its cgroup's list (gone from it): by pid too.
    assert _sends(monkeypatch, _Group([4243]), 4242) == [("pid", 4243, 15), ("pid", 4242, 15)]


def test_empty_groups_of_a_gone_hardexec_are_swept_once_a_minute_old(tmp_path):
    """A hardexec killed with kill -9 never removed its group; the next one does, if it is
    empty, its maker's pid is gone, and it is old enough not to be one being set up."""
    import os
    import time

    from hardexec import cgroups

    gone = 2**22 + 7  # above pid_max's limit: no process has it
    old = f"{int((time.time() - 120) * 1e6):x}"
    young = f"{int(time.time() * 1e6):x}"
    names = {
        f"hardexec-{gone}-0-{old}": False,  # swept
        f"hardexec-{gone}-1-{young}": True,  # too young
        f"hardexec-{os.getppid()}-0-{old}": True,  # its maker runs
        f"hardexec-{gone}-2-{old}-x": True,  # not a name hardexec makes
        "other": True,
    }
    for name in names:
        (tmp_path / name).mkdir()
    busy = tmp_path / f"hardexec-{gone}-3-{old}"
    busy.mkdir()
    (busy / "cgroup.procs").write_text("1\n")  # not empty: not ours to end
    cgroups._sweep_once(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {n for n, kept in names.items() if kept} | {
        busy.name
    }
    (tmp_path / f"hardexec-{gone}-0-{old}").mkdir()
    cgroups._sweep_once(tmp_path)  # once per parent and process
    assert (tmp_path / f"hardexec-{gone}-0-{old}").exists()
