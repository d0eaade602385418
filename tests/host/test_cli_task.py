"""The command's task options: --timeout/--kill-after, --env*, --cwd, --max-output,
--json-result. Checked on what the program received and what the user sees."""

import json
import os
import subprocess
import sys
import time

import pytest

from helpers import kill_if_alive, process_gone, run_text, wait_until

HARDEXEC = [sys.executable, "-m", "hardexec"]
EXIT_TIMEOUT = 124


def hx(*args, **kwargs):
    return run_text([*HARDEXEC, *args], **kwargs)


def _three_generations(tmp_path):
    """sh (the program) → sh → a setsid'd sleeper that ignores SIGTERM. Each appends its pid to
    ``pids``; the sleeper's stdout is not the program's, so only the tree kill (not closed
    output) can end it. Returns (the program's argv, the pid file)."""
    pids = tmp_path / "pids"
    grand = tmp_path / "grand.sh"
    grand.write_text(f"trap '' TERM; echo $$ >> {pids}; exec sleep 60\n")
    child = tmp_path / "child.sh"
    child.write_text(
        f"echo $$ >> {pids}; setsid sh {grand} </dev/null >/dev/null 2>&1 & sleep 60\n"
    )
    top = tmp_path / "top.sh"
    top.write_text(f"echo $$ >> {pids}; sh {child} & wait\n")
    return ["sh", str(top)], pids


def _pids(path, count):
    assert wait_until(lambda: path.exists() and len(path.read_text().split()) >= count, 10)
    return [int(pid) for pid in path.read_text().split()]


def test_timeout_kills_three_generations_with_a_cgroup_and_exits_124(tmp_path):
    argv, pidfile = _three_generations(tmp_path)
    started = time.monotonic()
    result = hx("run", "--cgroup", "--timeout", "1s", "--kill-after", "500ms", "--", *argv)
    pids = _pids(pidfile, 3)
    try:
        assert result.returncode == EXIT_TIMEOUT, result.stderr
        assert time.monotonic() - started < 30  # the sleepers' 60 s were cut short
        assert "hardexec: timed out after 1 s" in result.stderr
        assert all(process_gone(pid) for pid in pids), [p for p in pids if not process_gone(p)]
    finally:
        kill_if_alive(pids)


def test_timeout_without_a_cgroup_ends_the_process_group_only(tmp_path):
    """What holds without a cgroup: the process group dies; a setsid'd descendant escapes."""
    argv, pidfile = _three_generations(tmp_path)
    result = hx("run", "--timeout", "1s", "--", *argv)
    pids = _pids(pidfile, 3)
    try:
        assert result.returncode == EXIT_TIMEOUT, result.stderr
        assert process_gone(pids[0]) and process_gone(pids[1])
        # the setsid'd sleeper left the group: only a cgroup reaches it
        assert not process_gone(pids[2])
    finally:
        kill_if_alive(pids)


def test_kill_after_gives_the_grace_then_sigkill(tmp_path):
    script = "trap 'echo got TERM; exec sleep 60' TERM; echo ready; sleep 60 & wait"
    started = time.monotonic()
    result = hx("run", "--timeout", "300ms", "--kill-after", "1s", "--", "sh", "-c", script)
    took = time.monotonic() - started
    assert result.returncode == EXIT_TIMEOUT
    assert result.stdout == "ready\ngot TERM\n"  # it was told first, then killed
    assert "then SIGKILL" in result.stderr
    assert 1.0 <= took < 30


COUNT_TERMS = """
import signal, time
n = 0
def count(*_):
    global n
    n += 1
signal.signal(signal.SIGTERM, count)
print("ready", flush=True)
while n == 0:
    time.sleep(0.01)
time.sleep(1)  # any second SIGTERM would arrive meanwhile
print("TERM", n, flush=True)
"""


@pytest.mark.parametrize("group", [[], ["--cgroup"]], ids=["process-group", "cgroup"])
def test_a_timeout_sends_each_process_one_sigterm(group):
    """A second SIGTERM is "stop now" to many programs: a polite end must not send two."""
    result = hx("run", *group, "--timeout", "3s", "--", sys.executable, "-I", "-c", COUNT_TERMS)
    assert result.returncode == EXIT_TIMEOUT, result.stderr
    assert result.stdout == "ready\nTERM 1\n"


def test_a_program_that_ends_in_time_keeps_its_status(tmp_path):
    result = hx("run", "--timeout", "30s", "--", "sh", "-c", "exit 3")
    assert result.returncode == 3
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "soon"], "hardexec: --timeout: 'soon' is not a duration"),
        (["--timeout", "0"], "hardexec: --timeout: 0.0 is not a positive number of seconds"),
        (["--timeout", "1e3"], "hardexec: --timeout: '1e3' is not a duration"),
        (["--timeout", "nan"], "hardexec: --timeout: 'nan' is not a duration"),
        (["--kill-after", "1s"], "hardexec: --kill-after: needs --timeout"),
        (["--cwd", "/no/such/dir"], "hardexec: --cwd: '/no/such/dir' does not exist"),
        (["--cwd", "/etc/passwd"], "hardexec: --cwd: '/etc/passwd' is not a directory"),
        (["--env", "NOVALUE"], "hardexec: --env: an item without '=' (expected NAME=VALUE)"),
        (["--env", "=x"], "hardexec: --env['']: empty variable name"),
        (["--env-keep", "A=B"], "hardexec: --env-keep: variable name 'A=B' contains '='"),
        (["--max-output", "0"], "hardexec: --max-output: 0 would drop all output"),
        (["--max-output", "lots"], "hardexec: --max-output: 'lots' is not a size"),
        (
            ["--json-result", "/no/such/dir/r.json"],
            "hardexec: --json-result: '/no/such/dir/r.json': No such file or directory",
        ),
        (
            ["--timeout", "1s", "--keep-leftovers"],
            "hardexec: --keep-leftovers cannot be combined with --timeout or --max-output",
        ),
    ],
)
def test_bad_task_options_are_one_line_and_125(args, message, tmp_path):
    marker = tmp_path / "ran"
    result = hx("run", *args, "--", "touch", str(marker))
    assert result.returncode == 125
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not marker.exists()  # nothing was run


@pytest.mark.parametrize("supervised", [False, True], ids=["exec", "supervised"])
def test_env_options_give_exactly_what_was_asked(supervised):
    extra = ["--timeout", "30s"] if supervised else []
    env = {"HOME": "/home/x", "SECRET": "s3cret", "PATH": "/bin"}
    result = hx(
        "run",
        *extra,
        "--env-clear",
        "--env-keep",
        "HOME",
        "--env",
        "FOO=bar=baz",
        "--",
        "/usr/bin/env",
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        "FOO=bar=baz",
        "HOME=/home/x",
        "PATH=/usr/local/bin:/usr/bin:/bin",
    ]


def test_env_alone_adds_to_the_inherited_environment():
    result = hx("run", "--env", "FOO=1", "--", "/usr/bin/env", env={"PATH": "/bin", "A": "2"})
    assert sorted(result.stdout.splitlines()) == ["A=2", "FOO=1", "PATH=/bin"]


@pytest.mark.parametrize("supervised", [False, True], ids=["exec", "supervised"])
def test_cwd_is_where_the_program_runs(tmp_path, supervised):
    extra = ["--json-result", str(tmp_path / "r.json")] if supervised else []
    result = hx("run", *extra, "--cwd", str(tmp_path), "--", "/bin/pwd")
    assert result.stdout == f"{tmp_path}\n"


def test_max_output_passes_bytes_through_exactly_and_counts_the_rest(tmp_path):
    # Invalid UTF-8, a CR, no final newline: the command copies bytes, it does not read lines.
    data = b"\xff\xfeline one\r\nline two without newline" * 3
    source = tmp_path / "data"
    source.write_bytes(data)
    result = subprocess.run(
        [*HARDEXEC, "run", "--max-output", "40", "--", "cat", str(source)],
        capture_output=True,
    )
    assert result.returncode == 0
    assert result.stdout == data[:40]
    assert result.stderr.decode() == (
        f"hardexec: stdout: {len(data) - 40} bytes over --max-output 40 were dropped\n"
    )


def test_max_output_never_blocks_a_flood(tmp_path):
    # 64 MiB through a 1 KiB cap: the rest is read and dropped, so the program ends.
    result = subprocess.run(
        [*HARDEXEC, "run", "--max-output", "1K", "--", "head", "-c", "64M", "/dev/zero"],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert result.stdout == b"\0" * 1024
    assert f"{64 * 2**20 - 1024} bytes over --max-output 1K".encode() in result.stderr


def test_without_a_cap_output_is_the_programs_own_stream(tmp_path):
    # Supervised (a timeout), but no cap: the program writes to hardexec's stdout itself.
    out = tmp_path / "out"
    with open(out, "wb") as f:
        result = subprocess.run(
            [*HARDEXEC, "run", "--timeout", "30s", "--", "readlink", "/proc/self/fd/1"],
            stdout=f,
        )
    assert result.returncode == 0
    assert out.read_text() == f"{out}\n"


def test_json_result_is_the_runners_result(tmp_path):
    path = tmp_path / "result.json"
    result = hx("run", "--cgroup", "--json-result", str(path), "--", "sh", "-c", "echo hi; exit 7")
    assert result.returncode == 7
    assert result.stdout == "hi\n"
    from hardexec import Result

    data = json.loads(path.read_text())
    parsed = Result.from_dict(data)
    assert parsed.exit_code == 7 and parsed.signal is None and not parsed.timed_out
    assert parsed.name == "sh" and parsed.attempts == 1
    assert parsed.usage is not None and parsed.usage.source == "cgroup"
    assert parsed.stdout == "" and not parsed.truncated  # passed through, not kept
    assert parsed.duration > 0


def test_json_result_of_a_timeout_and_a_cap(tmp_path):
    path = tmp_path / "result.json"
    result = hx(
        "run",
        "--timeout",
        "500ms",
        "--max-output",
        "3",
        "--json-result",
        str(path),
        "--",
        "sh",
        "-c",
        "echo hello; echo oops >&2; sleep 60",
    )
    assert result.returncode == EXIT_TIMEOUT
    assert result.stdout == "hel"
    from hardexec import Result

    parsed = Result.from_dict(json.loads(path.read_text()))
    assert parsed.timed_out and parsed.signal == 15 and parsed.exit_code is None
    assert parsed.truncated.stdout_bytes == 3 and parsed.truncated.stderr_bytes == 2
    assert "stdout: 3 bytes over --max-output 3 were dropped" in parsed.warnings


def test_json_result_of_a_program_that_never_started(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("an earlier run's result\n")
    result = hx("run", "--json-result", str(path), "--", "no-such-program-here")
    assert result.returncode == 127
    assert result.stderr == "hardexec: no-such-program-here: No such file or directory\n"
    from hardexec import Result

    parsed = Result.from_dict(json.loads(path.read_text()))  # this run's, not the earlier one
    assert parsed.pid is None and parsed.exit_code is None and parsed.signal is None
    assert parsed.warnings == ("no-such-program-here: No such file or directory",)
    assert parsed.outcome == "failure"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left


def test_json_result_replaces_a_planted_symlink_not_its_target(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("root's own file\n")
    link = tmp_path / "result.json"
    link.symlink_to(victim)
    assert hx("run", "--json-result", str(link), "--", "true").returncode == 0
    assert victim.read_text() == "root's own file\n"
    assert not link.is_symlink()
    assert json.loads(link.read_text())["exit_code"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json", "victim"]


def test_help_lists_every_task_option():
    text = hx("run", "--help").stdout
    for option in (
        "--timeout",
        "--kill-after",
        "--env-clear",
        "--env-keep",
        "--env ",
        "--cwd",
        "--max-output",
        "--json-result",
    ):
        assert option in text, option


def test_max_output_to_a_reader_that_leaves_ends_the_program_as_a_closed_pipe_would():
    # `yes` through hardexec into `head -c1`: when head exits, yes gets SIGPIPE, as without
    # hardexec (whose status is then the program's: killed by SIGPIPE, 128+13 in a shell).
    shell = f'{" ".join(HARDEXEC)} run --max-output 1M -- yes | head -c1; echo " $PIPESTATUS"'
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    assert result.stdout == "y 141\n", result.stderr


def test_max_output_never_stops_the_timeout_when_the_reader_stalls(tmp_path):
    # Our reader stops reading for 10 s; the timeout (1 s + 1 s of grace) must still fire.
    marker = tmp_path / "ended"
    shell = (
        f"( {' '.join(HARDEXEC)} run --max-output 1M --timeout 1 --kill-after 1 -- "
        f"sh -c 'yes | head -c 10000000; sleep 100'; date +%s.%N > {marker} ) | "
        "( sleep 10; cat > /dev/null )"
    )
    started = time.time()
    subprocess.run(["bash", "-c", shell], timeout=60)
    assert float(marker.read_text()) - started < 8  # well before the reader woke up


def test_a_program_that_stops_itself_under_a_pty_is_still_timed_out():
    # hardexec leads the pty's session (nobody above it to continue it): it must not stop
    # itself with the program, or its clock would stop too.
    import pty

    argv = [*HARDEXEC, "run", "--timeout", "1s", "--kill-after", "1s", "--", "sh", "-c"]
    argv.append("kill -STOP $$")
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    try:
        reaped = []
        assert wait_until(lambda: reaped.append(os.waitpid(pid, os.WNOHANG)) or reaped[-1][0], 20)
        pid = 0
        assert os.waitstatus_to_exitcode(reaped[-1][1]) == EXIT_TIMEOUT
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)


def test_max_output_waits_for_a_reader_that_is_slow_after_the_program_ended(tmp_path):
    # The reader pauses 3 s after the first 50 kB; the program has long ended by then. All of
    # its output still arrives, as it would without hardexec.
    reader = "import sys, time; d = sys.stdin.buffer.read(50000); time.sleep(3); "
    reader += "print(len(d) + len(sys.stdin.buffer.read()))"
    shell = f"{' '.join(HARDEXEC)} run --max-output 1G -- seq 1 30000 | python3 -c '{reader}'"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
    expected = len(subprocess.run(["seq", "1", "30000"], capture_output=True).stdout)
    assert result.stdout == f"{expected}\n", result.stderr
    assert result.stderr == ""


def test_max_output_to_a_terminal_that_stops_reading_still_times_out():
    import pty
    import tty

    master, slave = pty.openpty()
    tty.setraw(slave)  # nobody reads the master: the terminal fills up
    started = time.monotonic()
    argv = [*HARDEXEC, "run", "--max-output", "1G", "--timeout", "1", "--kill-after", "1"]
    proc = subprocess.Popen(
        [*argv, "--", "yes"],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    os.close(slave)
    try:
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == EXIT_TIMEOUT
        assert time.monotonic() - started < 20
        assert "bytes were not taken by hardexec's reader in time" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
