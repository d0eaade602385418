"""``hardexec caps current``: a running process's five sets, NoNewPrivs and seccomp mode, as the
process itself reads them in /proc/self/status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import hardexec
from hardexec import Confinement, Policy, SecurityConfig, SyscallFilter
from helpers import parse_status, run_text, wait_until

HARDEXEC = [sys.executable, "-m", "hardexec"]
SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def hx(*args: str) -> subprocess.CompletedProcess[str]:
    return run_text([*HARDEXEC, *args], timeout=60)


@pytest.fixture
def confined_sleeper(stage):
    """A program holding only NET_BIND_SERVICE, with no_new_privs and a seccomp filter; and
    what it reads of itself."""
    policy = Policy(
        security=SecurityConfig(
            drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], no_new_privs=True
        ),
        confinement=Confinement(syscalls=SyscallFilter(default=True)),
    )
    proc = hardexec.Popen(
        ["sh", "-c", "cat /proc/self/status; exec sleep 60"],
        policy=policy,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:  # its own view, up to the last line of the status file
            lines.append(line)
            if line.startswith("nonvoluntary_ctxt_switches"):  # the status file's last line
                break
        own = parse_status("".join(lines))
        yield proc.pid, own
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def sleeping(pid: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``hardexec caps current --pid PID ARGS`` once the program has become sleep."""
    assert wait_until(lambda: Path(f"/proc/{pid}/comm").read_text() == "sleep\n")
    return hx("caps", "current", "--pid", str(pid), *args)


def test_current_decodes_what_the_program_holds(confined_sleeper):
    pid, own = confined_sleeper
    result = sleeping(pid, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["version"] == 1 and doc["pid"] == pid and doc["name"] == "sleep"
    for name in SETS:
        assert doc["sets"][name] == {"hex": "0000000000000400", "caps": ["NET_BIND_SERVICE"]}
        assert doc["sets"][name]["hex"] == own[name]  # what the program read of itself
    assert doc["no_new_privs"] is True and own["NoNewPrivs"] == "1"
    assert doc["seccomp"] == "filter" and own["Seccomp"] == "2"


def test_current_in_words(confined_sleeper):
    pid, _ = confined_sleeper
    result = sleeping(pid)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"pid {pid} (sleep)",
        *(f"{name}  0000000000000400  NET_BIND_SERVICE" for name in SETS),
        "NoNewPrivs  1",
        "Seccomp     filter",
    ]


def test_current_without_a_pid_is_hardexecs_own():
    result = hx("caps", "current", "--json")
    doc = json.loads(result.stdout)
    with open("/proc/self/status") as f:
        mine = parse_status(f.read())
    # hardexec is this test's child, without file capabilities: the same sets as ours
    assert {name: doc["sets"][name]["hex"] for name in SETS} == {n: mine[n] for n in SETS}
    assert doc["no_new_privs"] is (mine["NoNewPrivs"] == "1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["current", "--pid", "abc"], "hardexec: caps current --pid: 'abc' is not a process id"),
        (["current", "--pid", "0"], "hardexec: caps current --pid: '0' is not a process id"),
        (["current", "--pid", "4194305"], "hardexec: caps current --pid: 4194305: no such process"),
        (["--pid", "1"], "hardexec: caps: --pid and --json go with 'current'"),
        (["current", "--decode", "00"], "hardexec: caps current: --decode is for a mask alone"),
    ],
)
def test_bad_uses_exit_125_in_one_line(args, message):
    result = hx("caps", *args)
    assert result.returncode == 125
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""
