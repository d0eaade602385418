"""cgroup v2 on this host: placement, joining, usage, tree kill and clean-up.

This host's v2 hierarchy offers no memory/pids/cpu controller (they are on cgroup v1), but mkdir,
cgroup.procs, cgroup.kill, cgroup.events and cpu.stat work: everything but the limits is tested
here; the limits are tested in the VM tier.
"""

import errno
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import hardexec
import hardexec.spawn_core
from hardexec import (
    CgroupError,
    CgroupLimits,
    Policy,
    PolicyError,
    RlimitConfig,
    SecurityConfig,
    StageError,
    StageWarning,
)
from hardexec import cgroups as cg
from helpers import hardexec_groups, wait_until

PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="session")
def test_parent():
    """A group of the test run's own to make programs' groups in (name not hardexec-*)."""
    path = cg.v2_mount() / f"hxtest-{os.getpid()}"
    path.mkdir()
    yield path
    for child in subgroups(path):  # only if a test failed to clean up
        (child / "cgroup.kill").write_text("1")
        wait_until(lambda c=child: "populated 0" in (c / "cgroup.events").read_text())
        child.rmdir()
    path.rmdir()


def subgroups(path: Path) -> list[Path]:
    return [child for child in path.iterdir() if child.is_dir()]


def own_group_of(text: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith("0::")]
    return line[3:]


def test_the_program_and_its_children_live_in_a_group_of_their_own(stage, test_parent):
    policy = Policy(cgroups=CgroupLimits(), cgroup_parent=test_parent)
    script = "cat /proc/self/cgroup; sh -c 'cat /proc/self/cgroup'"
    with hardexec.Popen(
        ["sh", "-c", script], policy=policy, stdout=subprocess.PIPE, text=True
    ) as p:
        group = p.cgroup
        assert group is not None and group.path.parent == test_parent
        assert group.path.is_dir()
        out = p.stdout.read()
    program, child = [line[3:] for line in out.splitlines() if line.startswith("0::")]
    expected = "/" + str(group.path.relative_to(cg.v2_mount()))
    assert program == child == expected
    assert p.usage is not None and p.usage.source == "cgroup"
    assert not group.path.exists()  # removed as soon as the program was reaped


def test_default_parent_is_the_group_we_live_in(stage):
    with open("/proc/self/cgroup") as f:
        ours = own_group_of(f.read())
    result = hardexec.run(
        ["cat", "/proc/self/cgroup"],
        policy=Policy(cgroups=CgroupLimits()),
        capture_output=True,
        text=True,
    )
    theirs = own_group_of(result.stdout)
    assert Path(theirs).parent == Path(ours)
    assert Path(theirs).name.startswith(f"hardexec-{os.getpid()}-")


def test_usage_comes_from_the_group(stage, test_parent):
    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    policy = Policy(cgroups=CgroupLimits(), cgroup_parent=test_parent)
    result = hardexec.run([PYTHON, "-I", "-c", busy], policy=policy)
    usage = result.usage
    assert usage.source == "cgroup"
    assert usage.cpu_user + usage.cpu_system >= 0.25
    # this host's group has no memory or pids controller: unknown, not zero
    assert usage.memory_peak is None and usage.pids_peak is None and usage.oom_killed is None


def test_usage_without_a_group_comes_from_rusage(stage):
    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    result = hardexec.run(
        [PYTHON, "-I", "-c", busy], policy=Policy(rlimits=RlimitConfig(stack=8 << 20))
    )
    assert result.usage.source == "rusage"
    assert result.usage.cpu_user + result.usage.cpu_system >= 0.25
    plain = hardexec.run([PYTHON, "-I", "-c", busy])  # no policy: rusage too
    assert plain.usage.source == "rusage"
    assert plain.usage.cpu_user + plain.usage.cpu_system >= 0.25


SPAWN_DAEMON = (
    # a grandchild in its own session that ignores SIGTERM, then the program waits forever
    "setsid sh -c 'trap \"\" TERM; echo $$ > {pidfile}; exec sleep 300' & "
    "while [ ! -s {pidfile} ]; do sleep 0.01; done; echo ready; exec sleep 300"
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kill_tree_reaps_a_setsid_grandchild_that_ignores_sigterm(stage, test_parent, tmp_path):
    pidfile = tmp_path / "daemon.pid"
    policy = Policy(cgroups=CgroupLimits(), cgroup_parent=test_parent)
    script = SPAWN_DAEMON.format(pidfile=pidfile)
    with hardexec.Popen(["sh", "-c", script], policy=policy, stdout=subprocess.PIPE) as p:
        assert p.stdout.readline() == b"ready\n"
        daemon = int(pidfile.read_text())
        group = p.cgroup
        os.kill(daemon, 15)
        time.sleep(0.1)
        assert alive(daemon)  # it really ignores SIGTERM, and setsid took it out of our pgrp
        p.kill_tree()
        assert p.wait(timeout=10) == -9
    assert wait_until(lambda: not alive(daemon)), "the setsid'd grandchild survived"
    assert wait_until(lambda: not group.path.exists()), "the group was not removed"


def test_a_group_outliving_its_program_is_removed_once_it_empties(stage, test_parent, tmp_path):
    pidfile = tmp_path / "daemon.pid"
    policy = Policy(cgroups=CgroupLimits(), cgroup_parent=test_parent)
    script = SPAWN_DAEMON.format(pidfile=pidfile).replace('exec sleep 300"', "")
    script = script.rsplit("; exec sleep 300", 1)[0]  # the program exits; its daemon stays
    with hardexec.Popen(["sh", "-c", script], policy=policy, stdout=subprocess.PIPE) as p:
        p.stdout.readline()
    group_path = p.cgroup.path
    daemon = int(pidfile.read_text())
    assert alive(daemon) and p.cgroup.populated()  # still busy: kept, handed to the janitor
    assert str(group_path) in map(str, cg.pending_removal())
    os.kill(daemon, 9)  # what the caller's own clean-up would do
    assert wait_until(lambda: not group_path.exists()), "not removed once it emptied"


def test_run_timeout_kills_the_whole_tree(stage, test_parent, tmp_path):
    pidfile = tmp_path / "daemon.pid"
    policy = Policy(cgroups=CgroupLimits(), cgroup_parent=test_parent)
    with pytest.raises(subprocess.TimeoutExpired):
        hardexec.run(["sh", "-c", SPAWN_DAEMON.format(pidfile=pidfile)], policy=policy, timeout=2)
    assert wait_until(lambda: not alive(int(pidfile.read_text())))


def test_without_a_group_kill_tree_kills_the_process_group(stage, tmp_path):
    policy = Policy(security=SecurityConfig(no_new_privs=True))
    script = "sleep 300 & echo $!; exec sleep 300"
    with hardexec.Popen(
        ["sh", "-c", script], policy=policy, process_group=0, stdout=subprocess.PIPE
    ) as p:
        background = int(p.stdout.readline())
        p.kill_tree()
        assert p.wait(timeout=10) == -9
    assert wait_until(lambda: not alive(background))


def test_an_exception_in_the_caller_still_removes_the_group(stage, test_parent):
    policy = Policy(cgroups=CgroupLimits(), cgroup_parent=test_parent)
    with pytest.raises(RuntimeError), hardexec.Popen(["sleep", "0.2"], policy=policy) as p:
        group = p.cgroup
        raise RuntimeError("the caller failed")
    assert p.returncode == 0 and not group.path.exists()


def test_a_stage_abort_removes_the_group(stage, test_parent):
    before = subgroups(test_parent)
    policy = Policy(
        security=SecurityConfig(
            drop_all_caps=True, keep_caps=["SYS_RESOURCE"], fail_on_cap_error=True
        ),
        cgroups=CgroupLimits(),
        cgroup_parent=test_parent,
    )
    with pytest.raises(StageError):
        hardexec.run(["true"], policy=policy)
    assert subgroups(test_parent) == before


def test_missing_controllers_warn_and_run_without_a_group(stage, test_parent):
    policy = Policy(cgroups=CgroupLimits(memory=64 << 20), cgroup_parent=test_parent)
    with pytest.warns(StageWarning) as record:
        result = hardexec.run(["cat", "/proc/self/cgroup"], policy=policy, capture_output=True)
    [warning] = [w.message for w in record]
    assert warning.step == "cgroup" and warning.errno == errno.EOPNOTSUPP
    assert "memory controller is not available" in str(warning)
    with open("/proc/self/cgroup", "rb") as f:
        assert result.stdout == f.read()  # it ran where we are, without a group
    assert result.usage.source == "rusage"


def test_missing_controllers_refuse_the_spawn_when_required(stage, test_parent, tmp_path):
    marker = tmp_path / "ran"
    policy = Policy(cgroups=CgroupLimits(pids=16, fail_on_error=True), cgroup_parent=test_parent)
    with pytest.raises(CgroupError) as err:
        hardexec.run(["touch", str(marker)], policy=policy)
    assert err.value.errno == errno.EOPNOTSUPP
    assert "pids controller is not available in" in str(err.value)
    assert not marker.exists() and subgroups(test_parent) == []


def test_a_parent_not_delegated_to_us_is_explained(stage, test_parent):
    locked = test_parent / "locked"
    locked.mkdir()
    try:
        os.chmod(locked, 0o555)
        code = (
            "import sys\n"
            "from hardexec import CgroupLimits\n"
            "from hardexec.cgroups import Cgroup\n"
            "try:\n"
            f"    Cgroup.create(CgroupLimits(), {str(locked)!r})\n"
            "except OSError as e:\n"
            "    print(e.errno, e)\n"
        )
        # root without CAP_DAC_OVERRIDE is like any user the group was not delegated to
        policy = Policy(security=SecurityConfig(drop_all_caps=True))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        result = hardexec.run(
            [sys.executable, "-c", code], policy=policy, env=env, capture_output=True, text=True
        )
        number, message = result.stdout.split(" ", 1)
        assert int(number) == errno.EACCES, result.stderr
        assert "not delegated" in message and str(locked) in message
    finally:
        locked.rmdir()


def test_nothing_made_by_this_module_is_left(test_parent, groups_at_start):
    assert subgroups(test_parent) == []
    assert not hardexec_groups() - groups_at_start  # not what earlier runs left on this machine


def test_cgroups_are_ignored_with_a_warning_off_linux(monkeypatch):
    monkeypatch.setattr(hardexec.spawn_core.sys, "platform", "freebsd")
    monkeypatch.setattr(hardexec.spawn_core, "_platform_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = hardexec.run(["true"], policy=Policy(cgroups=CgroupLimits(pids=4)))
    assert result.returncode == 0 and "only enforced on Linux" in str(caught[0].message)


def test_kill_without_cgroup_kill_freezes_and_kills_pid_by_pid(test_parent, monkeypatch, tmp_path):
    """Kernels before 5.14 have no cgroup.kill: the fallback must still reach a daemon."""
    real_write = cg._write

    def no_cgroup_kill(path, value):
        if path.name == "cgroup.kill":
            raise FileNotFoundError(errno.ENOENT, "No such file", str(path))
        real_write(path, value)

    monkeypatch.setattr(cg, "_write", no_cgroup_kill)
    pidfile = tmp_path / "daemon.pid"
    policy = Policy(cgroups=CgroupLimits(), cgroup_parent=test_parent)
    script = SPAWN_DAEMON.format(pidfile=pidfile)
    with hardexec.Popen(["sh", "-c", script], policy=policy, stdout=subprocess.PIPE) as p:
        p.stdout.readline()
        daemon = int(pidfile.read_text())
        p.kill_tree()
        assert p.wait(timeout=10) == -9
    assert wait_until(lambda: not alive(daemon))


def test_wrap_makes_the_group_and_removes_it_on_close(stage, test_parent):
    policy = Policy(cgroups=CgroupLimits(), cgroup_parent=test_parent)
    with hardexec.wrap(["cat", "/proc/self/cgroup"], policy) as wrapped:
        group = wrapped.cgroup
        proc = subprocess.Popen(wrapped.argv, pass_fds=wrapped.pass_fds, stdout=subprocess.PIPE)
        wrapped.spawned()
        wrapped.check()
        out = proc.communicate()[0].decode()
        assert own_group_of(out) == "/" + str(group.path.relative_to(cg.v2_mount()))
        assert wrapped.cgroup.usage().source == "cgroup"
    assert not group.path.exists()


def test_async_processes_get_a_group_usage_and_tree_kill(stage, test_parent, tmp_path):
    import asyncio

    policy = Policy(cgroups=CgroupLimits(), cgroup_parent=test_parent)
    pidfile = tmp_path / "daemon.pid"

    async def main():
        proc = await hardexec.create_subprocess_exec(
            "cat", "/proc/self/cgroup", policy=policy, stdout=asyncio.subprocess.PIPE
        )
        group = proc.cgroup
        out, _ = await proc.communicate()
        assert own_group_of(out.decode()) == "/" + str(group.path.relative_to(cg.v2_mount()))
        assert proc.usage is not None and proc.usage.source == "cgroup"
        assert not group.path.exists()

        tree = await hardexec.create_subprocess_exec(
            "sh", "-c", SPAWN_DAEMON.format(pidfile=pidfile), policy=policy,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert await tree.stdout.readline() == b"ready\n"
        daemon = int(pidfile.read_text())
        tree.kill_tree()
        assert await tree.wait() == -9
        return daemon

    daemon = asyncio.run(main())
    assert wait_until(lambda: not alive(daemon))


@pytest.fixture
def stage_loses_cgroup_fd(monkeypatch):
    """Start the stage with its cgroup.procs fd closed, so its join fails with EBADF."""
    real = hardexec.spawn_core.stage_command()
    closer = (
        "import os, sys\n"
        "args = sys.argv[1:]\n"
        "os.close(int([a for a in args if a.startswith('--cgroup-fd=')][0].split('=')[1]))\n"
        "os.execv(args[0], args)\n"
    )
    monkeypatch.setattr(
        hardexec.spawn_core, "stage_command", lambda: (sys.executable, "-I", "-c", closer, *real)
    )


def test_a_failed_join_warns_runs_outside_and_removes_the_group(
    stage, test_parent, stage_loses_cgroup_fd
):
    policy = Policy(cgroups=CgroupLimits(), cgroup_parent=test_parent)
    with pytest.warns(StageWarning) as record:
        p = hardexec.Popen(["cat", "/proc/self/cgroup"], policy=policy, stdout=subprocess.PIPE)
    with p:
        out = p.stdout.read()
    assert [(w.message.step, w.message.errno) for w in record] == [("cgroup_join", errno.EBADF)]
    with open("/proc/self/cgroup", "rb") as f:
        assert out == f.read()  # it ran where we are
    assert p.cgroup is None and p.usage.source == "rusage"
    assert subgroups(test_parent) == []


def test_a_failed_join_aborts_when_the_group_is_required(stage, test_parent, stage_loses_cgroup_fd):
    policy = Policy(cgroups=CgroupLimits(fail_on_error=True), cgroup_parent=test_parent)
    with pytest.raises(StageError) as err:
        hardexec.run(["true"], policy=policy)
    assert (err.value.step, err.value.errno) == ("cgroup_join", errno.EBADF)
    assert subgroups(test_parent) == []


def test_a_policy_with_a_cgroup_parent_round_trips(test_parent):
    policy = Policy(cgroups=CgroupLimits(pids=8), cgroup_parent=test_parent)
    data = json.loads(json.dumps(policy.to_dict()))
    assert data["cgroup_parent"] == str(test_parent)
    assert Policy.from_dict(data) == policy
    data["cgroup_parent"] = str(test_parent / "missing")
    with pytest.raises(PolicyError, match=r"^policy\.cgroup_parent: .* does not exist$"):
        Policy.from_dict(data)


def test_groups_a_program_nested_deep_or_with_long_names_are_removed(test_parent):
    """The program chooses the depth and the names: neither recursion nor PATH_MAX may stop
    the removal (1200 levels; 20 levels of 250-character names, 5000 characters in all)."""
    top = test_parent / "hardexec-nested-test"
    top.mkdir()
    for name, depth in (("a", 1200), ("b" * 250, 20)):
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        os.close(fd)
    cg.remove_tree(top)
    assert not top.exists()
