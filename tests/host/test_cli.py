"""The hardexec command: options, exit statuses, one-line messages."""

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import parse_status, run_text

HARDEXEC = [sys.executable, "-m", "hardexec"]


def hx(*args, **kwargs):
    return run_text([*HARDEXEC, *args], **kwargs)


def test_run_drops_to_the_kept_cap_with_no_new_privs(stage):
    result = hx(
        "run",
        "--drop-all-caps",
        "--keep-cap",
        "NET_BIND_SERVICE",
        "--no-new-privs",
        "--",
        "cat",
        "/proc/self/status",
    )
    assert result.returncode == 0, result.stderr
    status = parse_status(result.stdout)
    for line in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[line] == "0000000000000400"
    assert status["NoNewPrivs"] == "1"


def test_run_as_user_with_any_cap_spelling(stage):
    result = hx(
        "run",
        "--user",
        "nobody",
        "--group",
        "nogroup",
        "--drop-all-caps",
        "--keep-cap",
        "net_bind_service",
        "--keep-cap",
        "cap_net_admin",
        "--keep-cap",
        "13",
        "--",
        "cat",
        "/proc/self/status",
    )
    status = parse_status(result.stdout)
    assert status["Uid"].split() == ["65534"] * 4
    assert status["CapAmb"] == status["CapEff"] == "0000000000003400"


def test_groups_option(stage):
    def groups(value):
        result = hx("run", "--user", "nobody", "--groups", value, "--", "cat", "/proc/self/status")
        return parse_status(result.stdout)["Groups"].split()

    assert groups("7,nogroup") == ["7", "65534"]
    assert groups("") == []


def test_exit_status_is_the_programs_own(stage):
    assert hx("run", "--no-new-privs", "--", "sh", "-c", "exit 42").returncode == 42


def test_killed_by_signal_n_exits_128_plus_n(stage):
    result = hx("run", "--no-new-privs", "--", "sh", "-c", "kill -KILL $$")
    assert result.returncode == 128 + signal.SIGKILL


def test_not_found_127_and_not_executable_126(stage):
    missing = hx("run", "--no-new-privs", "--", "no-such-program-x")
    assert missing.returncode == 127
    assert missing.stderr == "hardexec: no-such-program-x: No such file or directory\n"
    noexec = hx("run", "--no-new-privs", "--", "/etc/passwd")
    assert noexec.returncode == 126
    assert noexec.stderr == "hardexec: /etc/passwd: Permission denied\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep-cap", "NET_ADMIN"], "--keep-cap NET_ADMIN: needs --drop-all-caps"),
        (
            ["--drop-all-caps", "--keep-cap", "NET_ADMN"],
            "--keep-cap: unknown capability 'NET_ADMN'; did you mean NET_ADMIN",
        ),
        (
            ["--drop-all-caps", "--keep-cap", "64"],
            "--keep-cap: capability number '64' is outside 0..63",
        ),
        (["--user", "no-such-user-x"], "--user: unknown user 'no-such-user-x'"),
        (["--group", "no-such-group-x"], "--group: unknown group 'no-such-group-x'"),
        (["--groups", "0,,1"], "--groups: '0,,1' has an empty item"),
        (["--groups", "nope-x"], "--groups: unknown group 'nope-x'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_exit_125_with_one_line_naming_the_option(args, message, tmp_path):
    marker = tmp_path / "ran"
    result = hx("run", *args, "--", "touch", str(marker))
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not marker.exists()


def test_no_command_is_125():
    result = hx("run", "--no-new-privs")
    assert result.returncode == 125 and "no command given" in result.stderr


def test_stage_abort_exits_125_naming_the_step_and_errno(stage):
    result = hx("run", "--drop-all-caps", "--keep-cap", "SYS_RESOURCE", "--strict", "--", "true")
    assert result.returncode == 125
    assert result.stderr.startswith("hardexec: keep_caps failed: [Errno 1] Operation not permitted")
    assert result.stderr.count("\n") == 1


def test_best_effort_failure_warns_on_one_line_and_runs(stage):
    result = hx("run", "--drop-all-caps", "--keep-cap", "SYS_RESOURCE", "--", "echo", "ran")
    assert result.returncode == 0 and result.stdout == "ran\n"
    assert result.stderr.startswith("hardexec: warning: keep_caps failed: [Errno 1]")
    assert result.stderr.count("\n") == 1


def test_sigterm_to_hardexec_reaches_the_program(stage):
    proc = subprocess.Popen(
        [*HARDEXEC, "run", "--no-new-privs", "--", "sh", "-c", "echo up; exec sleep 30"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "up\n"
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_caps_lists_every_capability_and_decodes_masks():
    listing = hx("caps")
    lines = listing.stdout.splitlines()
    assert len(lines) == 41 and lines[10].split()[:2] == ["10", "NET_BIND_SERVICE"]
    assert hx("caps", "--decode", "0000000000003000").stdout == "NET_ADMIN,NET_RAW\n"
    assert hx("caps", "--decode", "0").stdout == "(none)\n"
    bad = hx("caps", "--decode", "zz")
    assert (
        bad.returncode == 125
        and bad.stderr == "hardexec: --decode: 'zz' is not a 64-bit hex number\n"
    )


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "hardexec")
    result = run_text([script, "caps", "--decode", "400"])
    assert result.stdout == "NET_BIND_SERVICE\n"
