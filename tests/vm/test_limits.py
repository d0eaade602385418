"""cgroup v2 limits, enforced by a kernel that offers the memory, pids and cpu controllers.

Runs inside the VM (see conftest.py); on the host each test reports its outcome in the VM.
"""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import hardexec
from hardexec import CgroupError, CgroupLimits, CpuMax, Policy
from hardexec import cgroups as cg
from helpers import wait_until

PYTHON = "/usr/bin/python3"
HARDEXEC = [sys.executable, "-m", "hardexec", "run"]
MIB = 1 << 20


def run_python(code: str, policy: Policy, **kwargs) -> hardexec.CompletedProcess:
    return hardexec.run(
        [PYTHON, "-I", "-c", code], policy=policy, capture_output=True, text=True, **kwargs
    )


def test_memory_max_oom_kills_and_says_so(stage):
    policy = Policy(cgroups=CgroupLimits(memory=64 * MIB))
    result = run_python("b = bytearray(512 << 20)\nprint('survived')", policy)
    assert result.returncode == -signal.SIGKILL and result.stdout == ""
    usage = result.usage
    assert usage.source == "cgroup" and usage.oom_killed is True
    assert 48 * MIB <= usage.memory_peak <= 64 * MIB, usage.memory_peak


def test_within_memory_max_nothing_is_killed(stage):
    policy = Policy(cgroups=CgroupLimits(memory=64 * MIB))
    result = run_python("b = bytearray(16 << 20)\nprint('fine')", policy)
    assert result.stdout == "fine\n" and result.usage.oom_killed is False
    assert 16 * MIB <= result.usage.memory_peak < 64 * MIB


FORK_LOOP = """
import errno, os, time
children = []
try:
    while True:
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
except OSError as e:
    print(errno.errorcode[e.errno], len(children))
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""


def test_pids_max_stops_a_fork_loop_with_eagain(stage):
    result = run_python(FORK_LOOP, Policy(cgroups=CgroupLimits(pids=16)), timeout=120)
    name, count = result.stdout.split()
    assert name == "EAGAIN"
    assert int(count) == 15  # 16 tasks: the loop's parent and 15 children
    assert result.usage.pids_peak == 16


def test_cpu_max_holds_a_busy_loop_to_its_quota(stage):
    # The loop measures its own CPU time over 3 s of wall time; start-up is left out, since
    # under software emulation it costs more CPU than the loop is allowed.
    busy = (
        "import time\n"
        "wall, cpu = time.monotonic(), time.process_time()\n"
        "while time.monotonic() < wall + 3: pass\n"
        "print(time.process_time() - cpu)\n"
    )
    policy = Policy(cgroups=CgroupLimits(cpu=CpuMax.from_fraction(0.2)))
    result = run_python(busy, policy, timeout=300)
    loop_cpu = float(result.stdout)
    assert loop_cpu <= 0.3 * 3, f"{loop_cpu:.2f} s of CPU in 3 s of wall time"
    assert result.usage.cpu_throttled > 0


def test_limits_apply_to_grandchildren(stage, tmp_path):
    # a grandchild allocating beyond memory.max is OOM-killed; its parent (the program) is not
    script = f"{PYTHON} -I -c 'b = bytearray(512 << 20)'; echo grandchild=$?"
    result = hardexec.run(
        ["sh", "-c", script],
        policy=Policy(cgroups=CgroupLimits(memory=64 * MIB)),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stdout == "grandchild=137\n"
    assert result.usage.oom_killed is True
    # a grandchild's fork loop meets the group's pids.max
    loop = tmp_path / "fork_loop.py"
    loop.write_text(FORK_LOOP)
    nested = hardexec.run(
        ["sh", "-c", f"{PYTHON} -I {loop}; true"],  # `; true`: sh stays, python is its child
        policy=Policy(cgroups=CgroupLimits(pids=16)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    name, count = nested.stdout.split()
    assert name == "EAGAIN" and int(count) == 14  # sh and python take two of the 16


def test_the_cli_names_an_oom_kill():
    result = subprocess.run(
        [*HARDEXEC, "--memory", "64M", "--", PYTHON, "-c", "b = bytearray(10**9)"],
        capture_output=True,
        text=True,
    )
    # hardexec ends by the program's signal, so its own parent sees the same wait status
    assert result.returncode == -signal.SIGKILL
    assert result.stderr == "hardexec: killed by the OOM killer (memory.max=64M)\n"


def test_the_readme_memory_example_shows_the_oom_kill():
    """examples/memory_limit.sh, as the README quotes it: in a shell, exit status 137."""
    example = Path(__file__).resolve().parents[2] / "examples" / "memory_limit.sh"
    # the installed command, next to this interpreter, as the README's users have it on PATH
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    result = subprocess.run(["sh", str(example)], capture_output=True, text=True, env=env)
    assert result.stdout == "exit status 137\n"
    # then the shell's own note on a job killed by SIGKILL ("Killed"), as without hardexec
    lines = result.stderr.splitlines()
    assert lines[0] == "hardexec: killed by the OOM killer (memory.max=64M)"
    assert lines[1:] == ["Killed"]


@pytest.fixture
def busy_parent(in_vm_only):
    """A group that holds a process itself, under the root."""
    if not in_vm_only:
        yield None
        return
    path = cg.v2_mount() / f"hxtest-busy-{os.getpid()}"
    path.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (path / "cgroup.procs").write_text(str(sleeper.pid))
        yield path
    finally:
        sleeper.kill()
        sleeper.wait()
        wait_until(lambda: "populated 0" in (path / "cgroup.events").read_text())
        path.rmdir()


def test_no_internal_processes_rule_is_explained(stage, busy_parent, tmp_path):
    marker = tmp_path / "ran"
    policy = Policy(
        cgroups=CgroupLimits(memory=64 * MIB, fail_on_error=True), cgroup_parent=busy_parent
    )
    with pytest.raises(CgroupError) as err:
        hardexec.run(["touch", str(marker)], policy=policy)
    assert err.value.errno == errno.EBUSY
    assert "no-internal-processes rule" in str(err.value)
    assert str(busy_parent) in str(err.value)
    assert not marker.exists()
    assert [p for p in Path(busy_parent).iterdir() if p.is_dir()] == []
