"""``hardexec run`` with nothing to supervise replaces itself with the exec stage (item 15).

Same pid as hardexec, no Python left resident, the stage's own messages and exit statuses.
With a cgroup or ``--usage`` hardexec stays, as the program's parent.
"""

import os
import subprocess
import sys

import pytest

from helpers import run_text

HARDEXEC = [sys.executable, "-m", "hardexec"]
MODES = {"exec": ["--no-new-privs"], "supervised": ["--no-new-privs", "--usage"]}


def ids_of(*args, **kwargs):
    """hardexec's pid, and the program's `$$ $PPID`."""
    proc = subprocess.Popen(
        [*HARDEXEC, "run", *args, "--", "sh", "-c", "echo $$ $PPID"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    pid, ppid = map(int, out.split())
    return proc.pid, pid, ppid


def test_with_nothing_to_supervise_the_program_takes_hardexecs_place(stage):
    hardexec, program, parent = ids_of("--no-new-privs")
    assert program == hardexec
    assert parent == os.getpid()  # nothing stood between the caller and the program


def test_an_empty_policy_still_execs():
    hardexec, program, _ = ids_of()
    assert program == hardexec


@pytest.mark.parametrize("option", ["--usage", "--cgroup"])
def test_with_supervision_hardexec_stays_as_the_parent(stage, option):
    hardexec, program, parent = ids_of("--no-new-privs", option)
    assert program != hardexec and parent == hardexec


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["no-such-program-x"], 127, "hardexec: no-such-program-x: No such file or directory\n"),
        (["/etc/passwd"], 126, "hardexec: /etc/passwd: Permission denied\n"),
    ],
)
def test_stage_messages_and_statuses(stage, mode, argv, status, message):
    result = run_text([*HARDEXEC, "run", *MODES[mode], "--", *argv])
    assert (result.returncode, result.stderr) == (status, message)


@pytest.mark.parametrize("mode", MODES)
def test_a_stage_abort_is_125_naming_the_step(stage, mode):
    args = ["--drop-all-caps", "--keep-cap", "SYS_RESOURCE", "--strict"]
    result = run_text([*HARDEXEC, "run", *args, *MODES[mode][1:], "--", "true"])
    assert result.returncode == 125
    assert result.stderr.startswith("hardexec: keep_caps failed: [Errno 1] Operation not permitted")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("mode", MODES)
def test_the_program_gets_hardexecs_environment_and_inherited_fds(stage, mode, tmp_path):
    data = tmp_path / "data"
    data.write_text("through an inherited fd\n")
    with open(data) as f:
        fd = f.fileno()
        result = run_text(
            [
                *HARDEXEC,
                "run",
                *MODES[mode],
                "--",
                "sh",
                "-c",
                'echo "$HX_PROBE"; cat /proc/self/fd/$0',
                str(fd),
            ],
            env=dict(os.environ, HX_PROBE="from the caller"),
            pass_fds=(fd,),
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from the caller\nthrough an inherited fd\n"
