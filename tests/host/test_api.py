"""The spawn API mirrors subprocess and asyncio, with the policy applied."""

import asyncio
import os
import signal
import subprocess
import threading

import pytest

import hardexec
import hardexec.spawn_core
from hardexec import Policy, SecurityConfig, StageError
from helpers import open_fds, parse_status

POLICY = Policy(
    security=SecurityConfig(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], no_new_privs=True)
)
STRICT_MISSING = Policy(
    security=SecurityConfig(drop_all_caps=True, keep_caps=["SYS_RESOURCE"], fail_on_cap_error=True)
)


def cap_eff(text: str) -> str:
    return parse_status(text)["CapEff"]


def test_run_mirrors_subprocess_run(stage):
    result = hardexec.run(
        ["sh", "-c", "cat; grep CapEff /proc/self/status; exit 3"],
        policy=POLICY,
        input="hello\n",
        capture_output=True,
        text=True,
    )
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.args == ["sh", "-c", "cat; grep CapEff /proc/self/status; exit 3"]
    assert result.returncode == 3
    assert result.stdout.splitlines() == ["hello", "CapEff:\t0000000000000400"]
    with pytest.raises(subprocess.CalledProcessError) as err:
        hardexec.run(["false"], policy=POLICY, check=True)
    assert err.value.cmd == ["false"] and err.value.returncode == 1


def test_run_timeout_kills_and_reaps(stage):
    with pytest.raises(subprocess.TimeoutExpired):
        hardexec.run(["sleep", "30"], policy=POLICY, timeout=0.5)


def test_popen_mirrors_subprocess_popen(stage, tmp_path):
    with hardexec.Popen(
        ["sh", "-c", "pwd; echo $HX_VAR; grep CapEff /proc/self/status"],
        policy=POLICY,
        cwd=tmp_path,
        env={"HX_VAR": "from-env", "PATH": os.environ["PATH"]},
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        out = proc.stdout.read()
    assert proc.returncode == 0
    assert out.splitlines() == [str(tmp_path), "from-env", "CapEff:\t0000000000000400"]
    assert proc.policy is POLICY and proc.stage_warnings == ()


def test_shell_and_executable_follow_subprocess_rules(stage):
    result = hardexec.run("echo $0 $1", shell=True, policy=POLICY, capture_output=True, text=True)
    assert result.stdout == "/bin/sh\n"
    renamed = hardexec.run(
        ["my-name", "-c", 'echo "$0"'],
        executable="/bin/sh",
        policy=POLICY,
        capture_output=True,
        text=True,
    )
    assert renamed.stdout == "my-name\n"


def test_pass_fds_reach_the_program_and_the_report_pipe_does_not(stage):
    read_end, write_end = os.pipe()
    try:
        probe = f"ls /proc/self/fd; echo via-fd > /proc/self/fd/{write_end}"
        result = hardexec.run(
            ["sh", "-c", probe], policy=POLICY, pass_fds=[write_end], capture_output=True, text=True
        )
        passed, write_end = write_end, -1
        os.close(passed)
        assert os.read(read_end, 100) == b"via-fd\n"
        fds = sorted(int(fd) for fd in result.stdout.split())
        # stdio, the fd we passed, and the one ls opened on /proc/self/fd: no report pipe
        assert fds[:3] == [0, 1, 2] and passed in fds
        assert len(fds) == 5, fds
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_close_fds_false_still_inherits_inheritable_fds(stage):
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    try:
        hardexec.run(
            ["sh", "-c", f"echo inherited > /proc/self/fd/{write_end}"],
            policy=POLICY,
            close_fds=False,
        )
        os.close(write_end)
        write_end = -1
        assert os.read(read_end, 100) == b"inherited\n"
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_empty_policy_spawns_directly_with_no_stage(monkeypatch):
    def no_stage():
        raise AssertionError("the stage must not be used for an empty policy")

    monkeypatch.setattr(hardexec.spawn_core, "stage_command", no_stage)
    assert hardexec.run(["true"], policy=Policy()).returncode == 0
    assert hardexec.run(["true"]).returncode == 0
    wrapped = hardexec.wrap(["id", "-u"], Policy(security=SecurityConfig(fail_on_cap_error=True)))
    assert wrapped.argv == ["id", "-u"] and wrapped.pass_fds == ()


def test_create_subprocess_exec_mirrors_asyncio(stage):
    async def main():
        proc = await hardexec.create_subprocess_exec(
            "cat", "/proc/self/status", policy=POLICY, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return proc.returncode, out.decode()

    code, out = asyncio.run(main())
    assert code == 0 and cap_eff(out) == "0000000000000400"


def test_create_subprocess_exec_raises_like_popen(stage):
    async def strict():
        await hardexec.create_subprocess_exec(
            "sleep",
            "30",
            policy=STRICT_MISSING,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )

    with pytest.raises(StageError) as err:
        asyncio.run(strict())
    assert err.value.step == "keep_caps"

    async def missing():
        await hardexec.create_subprocess_exec("no-such-program-x", policy=POLICY)

    with pytest.raises(FileNotFoundError):
        asyncio.run(missing())


@pytest.fixture
def slow_stage(monkeypatch):
    """A stage that sleeps before it starts, holding the report pipe open meanwhile."""
    real = hardexec.spawn_core.stage_command()
    slow = ("/bin/sh", "-c", 'sleep 30; exec "$0" "$@"', *real)
    monkeypatch.setattr(hardexec.spawn_core, "stage_command", lambda: slow)


def test_create_subprocess_exec_cancelled_while_the_stage_runs_leaves_nothing(stage, slow_stage):
    async def main():
        task = asyncio.ensure_future(hardexec.create_subprocess_exec("true", policy=POLICY))
        await asyncio.sleep(0.3)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    # the leak check asserts the stage was killed and reaped, and the pipe closed


def test_popen_interrupted_while_the_stage_runs_leaves_nothing(stage, slow_stage):
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            hardexec.Popen(["true"], policy=POLICY, stdout=subprocess.PIPE)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_wrap_works_with_another_spawner(stage):
    with hardexec.wrap(["cat", "/proc/self/status"], POLICY) as wrapped:
        proc = subprocess.Popen(wrapped.argv, pass_fds=wrapped.pass_fds, stdout=subprocess.PIPE)
        wrapped.spawned()
        report = wrapped.check()
        out = proc.communicate()[0].decode()
    assert report.error is None and cap_eff(out) == "0000000000000400"


def test_wrap_without_report_pipe_speaks_like_env(stage):
    with hardexec.wrap(["no-such-program-x"], POLICY, report=False) as wrapped:
        assert len(wrapped.pass_fds) == 1 and wrapped.report_fd == -1  # the environment's memfd
        assert wrapped.env == {}
        result = subprocess.run(
            wrapped.argv, pass_fds=wrapped.pass_fds, env=wrapped.env, capture_output=True, text=True
        )
    assert result.returncode == 127
    assert result.stderr == "hardexec: no-such-program-x: No such file or directory\n"
    with hardexec.wrap(["true"], STRICT_MISSING, report=False) as strict:
        result = subprocess.run(
            strict.argv, pass_fds=strict.pass_fds, env=strict.env, capture_output=True, text=True
        )
    assert result.returncode == 125 and "keep_caps failed: [Errno 1]" in result.stderr


def test_32_threads_spawning_at_once_all_get_the_policy(stage):
    before = open_fds()
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(32)

    def spawn():
        try:
            barrier.wait()
            out = hardexec.run(
                ["cat", "/proc/self/status"], policy=POLICY, capture_output=True, text=True
            ).stdout
            results.append(cap_eff(out))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=spawn) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == ["0000000000000400"] * 32
    assert open_fds() == before


def test_python_stage_ignores_the_programs_python_environment(monkeypatch, tmp_path):
    """The twin runs with -I: a PYTHONPATH meant for the program cannot hijack the stage."""
    (tmp_path / "ctypes.py").write_text("raise SystemExit('hijacked')\n")
    monkeypatch.setenv("HARDEXEC_STAGE", "python")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONSTARTUP": str(tmp_path / "x.py")}
    result = hardexec.run(["true"], policy=POLICY, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ""
