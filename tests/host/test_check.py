"""``hardexec check``: what this host can enforce, each answer checked against the kernel's own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hardexec.cli.check import FEATURES, usable
from hardexec.confine import landlock
from helpers import parse_status, run_text

CHECK = [sys.executable, "-m", "hardexec", "check"]
SCHEMA = {
    "version": int,
    "kernel": str,
    "arch": str,
    "cap_last_cap": int,
    "process": dict,
    "ambient": bool,
    "stage": dict,
    "landlock": dict,
    "seccomp": dict,
    "cgroup": dict,
    "namespaces": dict,
}


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return run_text([*CHECK, *args], timeout=120)


@pytest.fixture(scope="module")
def doc() -> dict:
    result = check("--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_json_has_the_stable_schema(doc):
    assert {key: type(value) for key, value in doc.items()} == SCHEMA
    assert doc["version"] == 1
    assert set(doc["landlock"]) == {
        *("usable", "abi", "filesystem", "truncate", "tcp", "ioctl_dev", "scopes", "why"),
    }
    assert set(doc["seccomp"]) == {"usable", "actions", "user_notif", "why"}
    assert set(doc["cgroup"]) == {"usable", "mount", "parent", "kill", "controllers", "why"}
    assert set(doc["cgroup"]["controllers"]) == {"memory", "pids", "cpu"}
    assert set(doc["namespaces"]) == {"user", "net", "pid", "ipc", "uts"}
    for entry in (*doc["namespaces"].values(), *doc["cgroup"]["controllers"].values()):
        assert set(entry) == {"usable", "why"} and (entry["why"] is None) == entry["usable"]


def test_answers_are_the_kernels(doc):
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert doc["cap_last_cap"] == int(f.read())
    with open("/proc/sys/kernel/seccomp/actions_avail") as f:
        assert doc["seccomp"]["actions"] == sorted(f.read().split())
    assert doc["landlock"]["abi"] == landlock.abi()
    assert doc["landlock"]["tcp"] == (landlock.abi() >= 4)
    with open("/proc/self/status") as f:
        mine = parse_status(f.read())
    assert doc["process"]["sets"]["CapEff"] == mine["CapEff"]  # the check is our child
    # As root here, every namespace kind is made for real; the cgroup one too.
    assert all(entry["usable"] for entry in doc["namespaces"].values()), doc["namespaces"]
    assert doc["cgroup"]["usable"] and doc["cgroup"]["kill"], doc["cgroup"]
    with open(f"{doc['cgroup']['parent']}/cgroup.controllers") as f:
        offered = f.read().split()
    for name, entry in doc["cgroup"]["controllers"].items():
        assert entry["usable"] == (name in offered)


def test_words_say_the_same(doc):
    result = check()
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines() if line[:1] != " ")
    assert lines["landlock"].startswith(f"ABI {doc['landlock']['abi']}")
    assert result.stdout.count("\nnamespace ") == 5


def test_need_exits_by_what_is_usable(doc):
    for feature in FEATURES:
        result = check("--need", feature)
        expected = 0 if usable(doc, feature) else 1
        assert result.returncode == expected, (feature, result.stderr)
        if expected:
            assert result.stderr == f"hardexec: check: not usable here: {feature}\n"


def test_a_bad_need_is_125_naming_it():
    result = check("--need", "landlock,bogus")
    assert result.returncode == 125
    assert result.stderr.startswith("hardexec: check --need: 'bogus' is not one of landlock")
    assert result.stdout == ""
