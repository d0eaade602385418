"""The fleet's tree guard on this machine's cgroup v2: a worker's directory, its keeper, and
what is ended (and what is not) when the process that ran a task is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardexec import cgroups
from hardexec.errors import PolicyError
from hardexec.treeguard import Guard, kill_groups_of, reap_once, sweep_dead_workers
from helpers import process_gone, wait_until

# A process that makes a group in DIR with a setsid'd sleeper in it, prints the sleeper's pid,
# then waits for a line on stdin and leaves with os._exit: no atexit, so nothing of its own
# cleans the group up (as after a kill -9).
MAKER = """
import os, sys
from hardexec import Popen, Policy, CgroupLimits
policy = Policy(cgroups=CgroupLimits(), cgroup_parent=sys.argv[1])
p = Popen(["setsid", "sleep", "300"], policy=policy)
print(p.pid, flush=True)
sys.stdin.readline()
os._exit(0)
"""


def start_maker(directory):
    maker = subprocess.Popen(
        [sys.executable, "-c", MAKER, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    sleeper = int(maker.stdout.readline())
    return maker, sleeper


def end_maker(maker):
    maker.stdin.close()
    maker.wait(10)
    maker.stdout.close()


def groups_of(directory, pid):
    return [p for p in directory.iterdir() if p.name.startswith(f"hardexec-{pid}-")]


@pytest.fixture
def guard():
    g = Guard()
    g.start()
    yield g
    g.stop()


def test_a_guard_makes_its_directory_and_keeper_and_removes_both(guard):
    path, keeper = guard.path, guard.keeper.pid
    assert path.parent == cgroups.default_parent()
    assert path.name.startswith(f"hardexec-worker-{os.getpid()}-")
    assert guard.keeper_alive()
    with open(f"/proc/{keeper}/cmdline", "rb") as f:
        assert b"hardexec.treeguard" in f.read()
    assert os.getsid(keeper) == keeper  # a session of its own: ^C to the worker spares it
    guard.stop()
    assert not path.exists() and process_gone(keeper)


def test_the_keeper_ends_the_tree_of_a_process_that_is_gone(guard):
    maker, sleeper = start_maker(guard.path)
    assert groups_of(guard.path, maker.pid)
    end_maker(maker)  # gone without removing its group: the sleeper lives on in it
    assert wait_until(lambda: process_gone(sleeper), timeout=10)
    assert wait_until(lambda: not groups_of(guard.path, maker.pid), timeout=10)


def test_a_living_makers_group_is_left_alone(guard):
    maker, sleeper = start_maker(guard.path)
    try:
        assert reap_once(guard.path, os.getpid()) == 0
        assert not process_gone(sleeper) and groups_of(guard.path, maker.pid)
        # Not the main process's child (another's process): its group is an orphan here.
        assert reap_once(guard.path, os.getppid()) == 1
        assert wait_until(lambda: process_gone(sleeper), timeout=10)
    finally:
        end_maker(maker)


def test_kill_groups_of_ends_only_that_makers_groups(guard):
    first, first_sleeper = start_maker(guard.path)
    second, second_sleeper = start_maker(guard.path)
    try:
        killed = kill_groups_of(guard.path, first.pid)
        assert [p.name for p in killed] == [p.name for p in groups_of(guard.path, first.pid)]
        assert wait_until(lambda: process_gone(first_sleeper), timeout=10)
        assert not process_gone(second_sleeper)
    finally:
        end_maker(first)
        end_maker(second)
    assert wait_until(lambda: process_gone(second_sleeper), timeout=10)


def test_what_a_dead_worker_left_is_swept_when_a_minute_old(tmp_path):
    base = cgroups.default_parent()
    gone = subprocess.Popen(["true"])
    gone.wait()
    old = f"{(time.time_ns() // 1000) - 120_000_000:x}"
    young = f"{time.time_ns() // 1000:x}"
    old_dir = base / f"hardexec-worker-{gone.pid}-{old}"
    young_dir = base / f"hardexec-worker-{gone.pid}-{young}"
    alive_dir = base / f"hardexec-worker-{os.getpid()}-{old}"
    made = [old_dir, young_dir, alive_dir]
    maker = None
    try:
        for d in made:
            d.mkdir()
        maker, sleeper = start_maker(old_dir)
        end_maker(maker)
        sweep_dead_workers(base)
        assert wait_until(lambda: process_gone(sleeper), timeout=10)
        assert not old_dir.exists()
        assert young_dir.exists() and alive_dir.exists()
    finally:
        for d in made:
            kill_groups_of(d, None)
            for g in d.glob("hardexec-*") if d.exists() else ():
                wait_until(lambda g=g: not (g / "cgroup.procs").read_text(), timeout=10)
                g.rmdir()
            if d.exists():
                d.rmdir()


def test_a_guard_under_a_directory_that_is_no_cgroup_is_refused_leaving_nothing(tmp_path):
    with pytest.raises(PolicyError, match="is not a cgroup v2 group"):
        Guard(tmp_path).start()
    assert list(tmp_path.iterdir()) == []


def test_the_keeper_lives_in_the_directorys_own_leaf(guard):
    from hardexec.treeguard import KEEPER_GROUP

    procs = (guard.path / KEEPER_GROUP / "cgroup.procs").read_text().split()
    assert procs == [str(guard.keeper.pid)]


def test_a_reused_pid_does_not_keep_a_dead_tasks_tree(guard):
    maker, sleeper = start_maker(guard.path)
    try:
        (group,) = groups_of(guard.path, maker.pid)
        # The same maker pid, but a group made a minute before that process started: what a
        # pool process forked after the first one died, with its pid, would look like.
        old = f"{(time.time_ns() // 1000) - 60_000_000:x}"
        older = guard.path / f"hardexec-{maker.pid}-0-{old}"
        older.mkdir()
        stray = subprocess.Popen(["sleep", "300"])
        (older / "cgroup.procs").write_text(str(stray.pid))
        assert reap_once(guard.path, os.getpid()) == 1
        assert stray.wait(10) == -9 and not older.exists()
        assert group.exists() and not process_gone(sleeper)  # the living one's is kept
    finally:
        end_maker(maker)


def test_a_stopped_makers_tree_is_killed_after_the_grace(guard):
    import signal

    from hardexec.treeguard import STOPPED_GRACE

    maker, sleeper = start_maker(guard.path)
    try:
        os.kill(maker.pid, signal.SIGSTOP)
        stat = Path(f"/proc/{maker.pid}/stat")
        assert wait_until(lambda: stat.read_text().rsplit(") ", 1)[1][0] == "T")
        stopped: dict[int, float] = {}
        reap_once(guard.path, os.getpid(), stopped)
        assert not process_gone(sleeper)  # just stopped: within the grace
        stopped[maker.pid] -= STOPPED_GRACE  # as if the grace had passed
        reap_once(guard.path, os.getpid(), stopped)
        assert wait_until(lambda: process_gone(sleeper), timeout=10)
        assert groups_of(guard.path, maker.pid)  # left for its maker, which may go on
    finally:
        os.kill(maker.pid, signal.SIGCONT)
        end_maker(maker)


def test_a_directory_whose_keeper_lives_is_never_swept(tmp_path):
    from hardexec.treeguard import KEEPER_GROUP

    base = cgroups.default_parent()
    gone = subprocess.Popen(["true"])
    gone.wait()
    old = f"{(time.time_ns() // 1000) - 120_000_000:x}"
    # A worker of another pid namespace: its pid means nothing here, its keeper lives.
    other = base / f"hardexec-worker-{gone.pid}-{old}"
    (other / KEEPER_GROUP).mkdir(parents=True)
    keeper = subprocess.Popen(["sleep", "300"])
    try:
        (other / KEEPER_GROUP / "cgroup.procs").write_text(str(keeper.pid))
        sweep_dead_workers(base)
        assert other.exists() and keeper.poll() is None
    finally:
        keeper.kill()
        keeper.wait()
        wait_until(lambda: not (other / KEEPER_GROUP / "cgroup.procs").read_text(), timeout=10)
        (other / KEEPER_GROUP).rmdir()
        other.rmdir()
