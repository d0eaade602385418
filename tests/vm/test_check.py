"""``hardexec check`` on the VM's kernel (Debian's 6.1): a full cgroup v2 and an older Landlock,
both said as the kernel has them. Runs inside the VM (see conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from hardexec.confine import landlock

CHECK = [sys.executable, "-m", "hardexec", "check"]


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHECK, *args], capture_output=True, text=True, timeout=300)


def test_check_json_says_what_this_kernel_offers():
    result = check("--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["version"] == 1
    assert doc["landlock"]["abi"] == landlock.abi()
    assert doc["landlock"]["tcp"] is (landlock.abi() >= 4)
    with open(f"{doc['cgroup']['parent']}/cgroup.controllers") as f:
        offered = f.read().split()
    assert doc["cgroup"]["usable"], doc["cgroup"]
    for name in ("memory", "pids", "cpu"):
        assert doc["cgroup"]["controllers"][name]["usable"] == (name in offered)
    assert {"memory", "pids", "cpu"} <= set(offered)  # what the VM tier is for


def test_need_follows_the_kernel():
    assert check("--need", "cgroup-memory,cgroup-pids,cgroup-cpu").returncode == 0
    tcp = check("--need", "landlock-tcp")
    assert tcp.returncode == (0 if landlock.abi() >= 4 else 1), tcp.stderr
