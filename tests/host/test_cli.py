"""The hardexec command: options, exit statuses, one-line messages."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers import hardexec_groups, parse_status, run_text

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


@pytest.mark.parametrize("mode", [[], ["--cgroup"]], ids=["exec", "supervised"])
def test_killed_by_signal_n_hardexec_dies_of_n_too(stage, mode):
    result = hx("run", "--no-new-privs", *mode, "--", "sh", "-c", "kill -KILL $$")
    assert result.returncode == -signal.SIGKILL  # a shell shows 128+9, as for the program
    assert result.stderr == ""


def test_called_from_python_main_returns_128_plus_n(stage):
    from hardexec.cli import main

    assert main(["run", "--no-new-privs", "--usage", "--", "sh", "-c", "kill -TERM $$"]) == 143


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
        (["--bogus"], "unrecognized arguments: --bogus; try 'hardexec run --help'"),
        (["--drop-all-caps", "--keep-cap", "net_raw,"], "--keep-cap: 'net_raw,' has an empty item"),
        (
            ["--drop-all-caps", "--keep-cap", "41"],
            "--keep-cap: capability 41 does not exist on this kernel (its last is 40, "
            "CHECKPOINT_RESTORE, per /proc/sys/kernel/cap_last_cap)",
        ),
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
        assert proc.wait(timeout=10) == -signal.SIGTERM
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


def test_rlimit_options_reach_the_program(stage):
    result = hx(
        "run", "--nofile", "64", "--fsize", "1M", "--no-core", "--as", "2G", "--stack", "4M",
        "--cpu-seconds", "100", "--nproc", "4000", "--", "cat", "/proc/self/limits",
    )  # fmt: skip
    rows = {line[:26].strip(): line[26:].split()[:2] for line in result.stdout.splitlines()[1:]}
    assert rows["Max open files"] == ["64", "64"]
    assert rows["Max file size"] == [str(1 << 20)] * 2
    assert rows["Max core file size"] == ["0", "0"]
    assert rows["Max address space"] == [str(2 << 30)] * 2
    assert rows["Max stack size"] == [str(4 << 20)] * 2
    assert rows["Max cpu time"] == ["100", "100"]
    assert rows["Max processes"] == ["4000", "4000"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nofile", "0"], "hardexec: --nofile cannot be zero"),
        (["--nofile", "-3"], "hardexec: --nofile: '-3' is not a whole number"),
        (["--fsize", "0"], "hardexec: --fsize cannot be zero"),
        (["--memory", "0"], "hardexec: --memory cannot be zero"),
        (["--pids", "0"], "hardexec: --pids cannot be zero"),
        (["--memory", "12X"], "hardexec: --memory: '12X' is not a size"),
        (["--stack", "1.5M"], "hardexec: --stack: '1.5M' is not a size"),
        (["--cpus", "abc"], "hardexec: --cpus: 'abc' is not a number of CPUs"),
        (["--cpu-max", "0/100000"], "cannot be zero (process would get no CPU)"),
        (["--cpu-max", "50000/0"], "hardexec: --cpu-max period cannot be zero"),
        (["--cpu-max", "50000/2000000"], "2000000 µs is outside 1000..1000000"),
        (["--cpus", "1", "--cpu-max", "max"], "--cpus and --cpu-max say the same thing"),
        (["--cgroup", "--cgroup-parent", "/nonexistent-x"], "'/nonexistent-x' does not exist"),
        (["--cgroup", "--cgroup-parent", "/tmp"], "'/tmp' is not a cgroup v2 group"),
        (["--cgroup-parent", "/tmp"], "--cgroup-parent: no cgroup is asked for"),
        (["--best-effort"], "--best-effort: no cgroup (--memory"),
        (["--keep-leftovers"], "--keep-leftovers: hardexec does not supervise this run"),
    ],
)
def test_bad_limits_exit_125_before_anything_runs(args, message, tmp_path):
    marker = tmp_path / "ran"
    proc = subprocess.Popen(
        [*HARDEXEC, "run", *args, "--", "touch", str(marker)], stderr=subprocess.PIPE, text=True
    )
    _, stderr = proc.communicate()
    assert proc.returncode == 125
    assert stderr.count("\n") == 1 and message in stderr, stderr
    assert not marker.exists()
    assert not [g for g in hardexec_groups() if f"/hardexec-{proc.pid}-" in g]


def test_a_ceiling_that_cannot_be_applied_refuses_the_run(stage, tmp_path):
    """This host's cgroup v2 hierarchy has no memory controller: --memory cannot hold."""
    marker = tmp_path / "ran"
    refused = hx("run", "--memory", "64M", "--", "touch", str(marker))
    assert refused.returncode == 125 and not marker.exists()
    assert refused.stderr.startswith("hardexec: --memory 64M cannot be applied: [Errno 95]")
    assert "memory controller is not available" in refused.stderr
    assert refused.stderr.endswith(
        "; give a --cgroup-parent delegated to you, or --best-effort to run without it\n"
    )
    assert refused.stderr.count("\n") == 1


def test_best_effort_runs_without_the_ceilings_and_says_so(stage):
    lenient = hx("run", "--memory", "64M", "--pids", "9", "--best-effort", "--", "echo", "ran")
    assert lenient.returncode == 0 and lenient.stdout == "ran\n"
    assert lenient.stderr.startswith(
        "hardexec: warning: the program runs WITHOUT --memory 64M --pids 9: "
    )
    assert "controllers are not available" in lenient.stderr
    assert lenient.stderr.count("\n") == 1


def test_usage_is_reported_on_request(stage):
    busy = "import time\nend = time.process_time() + 0.2\nwhile time.process_time() < end: pass"
    result = hx("run", "--cgroup", "--usage", "--", "/usr/bin/python3", "-I", "-c", busy)
    assert result.returncode == 0
    assert re.fullmatch(
        r"hardexec: usage: cpu \d+\.\d{3}s user \d+\.\d{3}s system \(from cgroup\)\n",
        result.stderr,
    ), result.stderr


def test_bare_hardexec_prints_usage():
    result = hx()
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: hardexec [-h] [--version] COMMAND ...")
    assert "run       run a command under a policy" in result.stderr


def test_unknown_top_level_option_says_try_help():
    result = hx("--bogus")
    assert result.returncode == 125
    assert result.stderr == "hardexec: unrecognized arguments: --bogus; try 'hardexec --help'\n"


def test_keep_cap_takes_a_comma_list(stage):
    result = hx(
        "run", "--drop-all-caps", "--keep-cap", "net_bind_service,NET_RAW", "--keep-cap", "12",
        "--", "cat", "/proc/self/status",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert parse_status(result.stdout)["CapEff"] == "0000000000003400"
