"""Identity from a launcher that holds supplementary groups, so that clearing them is observable.

A launcher run by root here holds no supplementary groups: a stage that skipped ``setgroups``
for an empty list would pass every other test. Each test here starts a small Python launcher
under ``setpriv --groups 1,2,3`` (or with thousands of groups of its own), which runs hardexec
with a policy; the program reports its ``/proc/self/status``, and the tests read it.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hardexec
from helpers import parse_status

# The launcher (its request on stdin: thousands of groups are too long for one argument): sets
# its own groups when asked (setpriv takes them as one argument, which the
# kernel caps at 128 KiB: too short for thousands), then runs `cat /proc/self/status` through
# hardexec with the given SecurityConfig, and prints its own status and the program's as JSON.
LAUNCHER = r"""
import json, os, sys
import hardexec
request = json.load(sys.stdin)
if request["launcher_groups"] is not None:
    os.setgroups(request["launcher_groups"])
with open("/proc/self/status") as f:
    mine = f.read()
policy = hardexec.Policy(security=hardexec.SecurityConfig(**request["security"]))
done = hardexec.run(["cat", "/proc/self/status"], policy=policy, capture_output=True, text=True)
json.dump({"launcher": mine, "returncode": done.returncode, "program": done.stdout,
           "stderr": done.stderr}, sys.stdout)
"""

LAUNCHER_GROUPS = [1, 2, 3]
MANY = 19_000


def _launch(security: dict, *, setpriv_groups=LAUNCHER_GROUPS, launcher_groups=None) -> dict:
    """Run the launcher (under setpriv when ``setpriv_groups``); its JSON report."""
    # The launcher imports the very hardexec these tests import (the source tree or .venv).
    env = dict(os.environ)
    here = str(Path(hardexec.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    request = json.dumps({"security": security, "launcher_groups": launcher_groups})
    argv = [sys.executable, "-c", LAUNCHER]
    if setpriv_groups is not None:
        argv = ["setpriv", "--groups", ",".join(map(str, setpriv_groups)), "--", *argv]
    done = subprocess.run(argv, input=request, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, f"launcher failed ({done.returncode}): {done.stderr}"
    report = json.loads(done.stdout)
    assert report["returncode"] == 0, f"program failed: {report['stderr']}"
    report["launcher"] = parse_status(report["launcher"])
    report["program"] = parse_status(report["program"])
    return report


def _groups(status: dict[str, str]) -> list[int]:
    return sorted(int(g) for g in status["Groups"].split())


def _ids(status: dict[str, str], field: str) -> list[int]:
    """Real, effective, saved and filesystem ids of a ``Uid:``/``Gid:`` line."""
    return [int(i) for i in status[field].split()]


pytestmark = pytest.mark.skipif(
    shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed"
)


def test_the_launcher_really_holds_its_groups(stage):
    """The premise of every test here: the launcher starts with groups 1, 2, 3."""
    report = _launch({})
    assert _groups(report["launcher"]) == LAUNCHER_GROUPS
    assert _groups(report["program"]) == LAUNCHER_GROUPS  # no policy: inherited as is


def test_user_takes_the_users_groups_from_the_group_database(stage):
    nobody = pwd.getpwnam("nobody")
    expected = sorted(set(os.getgrouplist("nobody", nobody.pw_gid)))
    program = _launch({"user": "nobody"})["program"]
    assert _groups(program) == expected
    assert not set(_groups(program)) & set(LAUNCHER_GROUPS)
    assert _ids(program, "Uid") == [nobody.pw_uid] * 4
    assert _ids(program, "Gid") == [nobody.pw_gid] * 4


def test_an_empty_list_clears_the_launchers_groups(stage):
    program = _launch({"supplementary_groups": []})["program"]
    assert _groups(program) == []
    assert _ids(program, "Uid") == [0] * 4


def test_a_group_alone_clears_the_launchers_groups(stage):
    nogroup = grp.getgrnam("nogroup").gr_gid
    program = _launch({"group": "nogroup"})["program"]
    assert _groups(program) == []
    assert _ids(program, "Gid") == [nogroup] * 4
    assert _ids(program, "Uid") == [0] * 4


def test_a_list_replaces_the_launchers_groups_exactly(stage):
    program = _launch({"supplementary_groups": [5, 6]})["program"]
    assert _groups(program) == [5, 6]


def test_nineteen_thousand_groups_reach_the_program(stage):
    """Thousands of groups asked by a launcher that itself holds thousands of others."""
    asked = list(range(100_000, 100_000 + MANY))
    held = list(range(200_000, 200_000 + MANY))
    report = _launch({"supplementary_groups": asked}, setpriv_groups=None, launcher_groups=held)
    assert _groups(report["launcher"]) == held
    assert _groups(report["program"]) == asked
