"""The Runner on this machine: output lines and caps, script mode, environment, stdin, retries,
metrics, map, stream, sinks, logging and capabilities. (Ending trees: test_runner_tree.py.)

Each test runs its own event loop with asyncio.run; every one is leak-checked (fds, memfds
included, children, cgroups, temp files) by tests/host/conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import time

import pytest

import hardexec
import hardexec.runner.attempt
from hardexec import CgroupLimits, Policy, PolicyError, SecurityConfig, TaskFailed
from hardexec.runner import (
    Event,
    LogConfig,
    Metrics,
    OutputLimits,
    PrometheusMetrics,
    Result,
    Runner,
    TaskSpec,
)
from hardexec.runner.spec import DEFAULT_PATH
from helpers import children, open_fds, parse_status, process_gone

MEMFD = "/memfd:hardexec-script (deleted)"
DROP_ALL = Policy(security=SecurityConfig(drop_all_caps=True, no_new_privs=True))


def run(spec: TaskSpec, **runner_args) -> Result:
    return asyncio.run(Runner(**runner_args).run(spec))


def sh(script: str, *args: str, **fields) -> TaskSpec:
    return TaskSpec.command(["sh", "-c", script, "sh", *args], **fields)


def state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def script_memfds() -> set[str]:
    """The test process's fds on a script body's memfd."""
    return {fd for fd in open_fds() if fd.endswith(MEMFD)}


# --- lines, end to end -------------------------------------------------------------------------


def test_an_over_long_line_is_cut_and_the_next_one_survives():
    result = run(sh("printf 'AAAAAAAAAAAA\\nKEEPME\\n'"), log=LogConfig(max_line_bytes=8))
    assert result.stdout == "AAAAAAAA... (truncated 4 bytes)\nKEEPME\n"
    assert result.truncated.lines_cut == 1
    assert result.truncated.stdout_bytes == 0  # a cut line is no dropped output


def test_a_last_line_exactly_at_the_cap_is_kept_unmarked():
    result = run(sh("printf 'xy\\nAAAAAAAA'"), log=LogConfig(max_line_bytes=8))
    assert result.stdout == "xy\nAAAAAAAA"  # and no newline is added to the last line
    assert not result.truncated


def test_text_is_decoded_and_line_ends_are_normalised():
    result = run(sh("printf 'a\\377b\\r\\none\\r\\n\\303\\n'; printf 'err\\r\\nlast' >&2"))
    assert result.stdout == "a\ufffdb\none\n\ufffd\n"
    assert "\r" not in result.stdout
    assert result.stderr == "err\nlast"


def test_a_megabyte_line_is_cut_to_the_default_4096_characters():
    result = run(sh("head -c 1048576 /dev/zero | tr '\\0' A; echo; echo after"))
    cut = (1 << 20) - 4096
    assert result.stdout == "A" * 4096 + f"... (truncated {cut} bytes)\nafter\n"
    assert result.truncated.lines_cut == 1


def test_the_character_cap_counts_characters():
    result = run(sh("printf 'éééééé\\n€uro\\n'"), log=LogConfig(max_line_length=3))
    assert result.stdout == "ééé... (truncated 3 chars)\n€ur... (truncated 1 chars)\n"
    assert result.truncated.lines_cut == 2


# --- output caps -------------------------------------------------------------------------------

NUMBERS = [f"{i}\n" for i in range(1, 10001)]


def fitting(lines, budget):
    kept, used = [], 0
    for line in lines:
        if used + len(line) > budget:
            break
        kept.append(line)
        used += len(line)
    return kept


@pytest.mark.parametrize("keep", ["head", "tail", "both"])
def test_output_caps_keep_whole_lines_from_the_chosen_end(keep):
    result = run(
        TaskSpec.command(["seq", "1", "10000"]), output=OutputLimits(max_bytes=1000, keep=keep)
    )
    if keep == "head":
        kept = fitting(NUMBERS, 1000)
    elif keep == "tail":
        kept = fitting(NUMBERS[::-1], 1000)[::-1]
    else:
        head = fitting(NUMBERS, 500)
        kept = head + fitting(NUMBERS[len(head) :][::-1], 500)[::-1]
    assert result.stdout == "".join(kept)
    numbers = [int(line) for line in result.stdout.splitlines()]  # whole numbers only
    if keep in ("head", "both"):
        assert numbers[0] == 1
    if keep in ("tail", "both"):
        assert numbers[-1] == 10000
    # worked out by hand: 1-9 take 18 bytes, 10-99 270, then 4 bytes a line up to 9999
    expected = {
        "head": list(range(1, 278)),  # 288 + 178 * 4 = 1000
        "tail": list(range(9802, 10001)),  # 198 * 5 + 6 = 996 (one more would be 1001)
        "both": [*range(1, 153), *range(9902, 10001)],  # 500 exactly, then 98 * 5 + 6
    }
    assert numbers == expected[keep]
    truncated = result.truncated
    assert truncated.stdout_bytes == sum(map(len, NUMBERS)) - len(result.stdout)
    assert truncated.stdout_lines == 10000 - len(kept)
    assert (truncated.stderr_bytes, truncated.stderr_lines, truncated.lines_cut) == (0, 0, 0)
    assert result.ok


def test_each_stream_has_its_own_cap():
    result = run(sh("seq 1 100; seq 1 3 >&2"), output=OutputLimits(max_bytes=20, keep="head"))
    # 1..9 take 18 bytes; "10\n" would make 21
    assert result.stdout == "1\n2\n3\n4\n5\n6\n7\n8\n9\n" and result.stderr == "1\n2\n3\n"
    assert result.truncated.stdout_lines == 91 and result.truncated.stderr_lines == 0


# --- script mode -------------------------------------------------------------------------------

MARK = "body-marker-5e1f"
ARGS = ["a b", "c'd", "--x=1"]
SCRIPTS = {
    "bash": f"""\
# {MARK}
printf 'cmdline:'; tr '\\0' ' ' < /proc/$$/cmdline; echo
echo "script:$0"
echo "fd:$(readlink /proc/$$/fd/${{0#/dev/fd/}})"
for a in "$@"; do echo "arg:$a"; done
""",
    "python": f"""\
import os, sys  # {MARK}
print("cmdline:" + open("/proc/self/cmdline").read().replace("\\0", " "))
print("script:" + sys.argv[0])
print("fd:" + os.readlink("/proc/self/fd/" + sys.argv[0].removeprefix("/dev/fd/")))
for a in sys.argv[1:]:
    print("arg:" + a)
""",
    "node": f"""\
// {MARK}
const fs = require("fs");
const cmdline = fs.readFileSync("/proc/self/cmdline", "latin1").split("\\0").join(" ");
console.log("cmdline:" + cmdline);
const script = process.argv[1];
console.log("script:" + script);
console.log("fd:" + fs.readlinkSync("/proc/self/fd/" + script.slice("/dev/fd/".length)));
for (const a of process.argv.slice(2)) console.log("arg:" + a);
""",
}


@pytest.mark.parametrize("interpreter", ["bash", "python", "node"])
def test_script_mode_runs_the_body_from_a_memfd(interpreter):
    if interpreter == "node" and shutil.which("node") is None:
        pytest.skip("node is not installed on this machine")
    result = run(TaskSpec.script(interpreter, SCRIPTS[interpreter], args=ARGS))
    assert result.ok, result.stderr
    fields: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key, []).append(value)
    [script] = fields["script"]
    assert re.fullmatch(r"/dev/fd/\d+", script)
    assert fields["fd"] == [MEMFD]  # the script's path names a sealed memfd, not a file
    assert fields["arg"] == ARGS
    [cmdline] = fields["cmdline"]
    assert script in cmdline.split() and MARK not in cmdline  # the body is not in argv
    assert not script_memfds()


def test_a_script_of_one_and_a_half_mebibytes_runs():
    body = "# " + "x" * (3 << 19) + '\necho big-ok "$#"\n'  # far over an argv string's limit
    result = run(TaskSpec.script("bash", body, args=["one"]))
    assert result.stdout == "big-ok 1\n" and result.ok, result.stderr
    assert not script_memfds()


def test_script_bodies_over_the_limit_or_empty_are_refused_before_running():
    with pytest.raises(PolicyError) as err:
        TaskSpec.script("bash", "echo hi\n" + "#" * 100, max_script_bytes=64)
    assert str(err.value).startswith("task.body:") and "task.max_script_bytes" in str(err.value)
    with pytest.raises(PolicyError) as err:
        TaskSpec.script("bash", "#" * ((2 << 20) + 1))
    assert "over the limit of 2097152" in str(err.value)
    with pytest.raises(PolicyError, match=r"^task\.body: empty script$"):
        TaskSpec.script("python", "")


SLEEPING_SCRIPT = 'echo "fd:$(readlink /proc/$$/fd/${0#/dev/fd/})"; exec sleep 30'


def test_the_script_body_is_gone_after_a_timeout():
    result = run(TaskSpec.script("bash", SLEEPING_SCRIPT, timeout=1, kill_after=1))
    assert result.timed_out and result.stdout == f"fd:{MEMFD}\n"
    assert process_gone(result.pid) and not script_memfds()


def test_the_script_body_is_gone_after_a_cancel():
    ready = asyncio.Event()
    starts: list[int] = []

    def sink(event):
        if event.kind == "start":
            starts.append(event.pid)
        elif event.kind == "line" and event.text == f"fd:{MEMFD}":
            ready.set()

    async def main():
        task = asyncio.ensure_future(
            Runner(sink=sink).run(TaskSpec.script("bash", SLEEPING_SCRIPT))
        )
        await asyncio.wait_for(ready.wait(), 20)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert state(starts[0]) == "gone" and not script_memfds()


# --- environment, cwd --------------------------------------------------------------------------


def env_of(result: Result) -> dict[str, str]:
    assert result.ok, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_clear_gives_only_the_default_path_and_the_tasks_env(monkeypatch):
    monkeypatch.setenv("HXTEST_OUTER", "must-not-pass")
    spec = TaskSpec.command(["/usr/bin/env"], env_policy="clear", env={"A": "1", "B": "two"})
    assert env_of(run(spec)) == {"PATH": DEFAULT_PATH, "A": "1", "B": "two"}
    assert DEFAULT_PATH == "/usr/local/bin:/usr/bin:/bin"
    own_path = TaskSpec.command(["/usr/bin/env"], env_policy="clear", env={"PATH": "/bin"})
    assert env_of(run(own_path)) == {"PATH": "/bin"}


def test_an_allowlist_passes_only_the_named_variables(monkeypatch):
    monkeypatch.setenv("HXTEST_KEEP", "kept")
    monkeypatch.setenv("HXTEST_DROP", "dropped")
    monkeypatch.delenv("HXTEST_ABSENT", raising=False)
    spec = TaskSpec.command(["/usr/bin/env"], env_policy=("HXTEST_KEEP", "HXTEST_ABSENT"))
    assert env_of(run(spec)) == {"HXTEST_KEEP": "kept", "PATH": DEFAULT_PATH}


def test_inherit_passes_the_runners_environment(monkeypatch):
    monkeypatch.setenv("HXTEST_INHERITED", "yes")
    env = env_of(run(TaskSpec.command(["/usr/bin/env"], env={"HXTEST_OWN": "1"})))
    assert env["HXTEST_INHERITED"] == "yes" and env["HXTEST_OWN"] == "1"
    assert env["PATH"] == os.environ["PATH"]


def test_the_runners_env_overrides_the_tasks():
    spec = TaskSpec.command(
        ["/usr/bin/env"], env_policy="clear", env={"SHARED": "task", "TASK_ONLY": "t"}
    )
    env = env_of(run(spec, env={"SHARED": "runner", "RUNNER_ONLY": "r"}))
    assert env == {
        "PATH": DEFAULT_PATH,
        "SHARED": "runner",
        "TASK_ONLY": "t",
        "RUNNER_ONLY": "r",
    }


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"": "x"}, "runner.env['']: empty variable name"),
        ({"A=B": "x"}, "runner.env['A=B']: variable name 'A=B' contains '='"),
        ({"A\0B": "x"}, "runner.env['A\\x00B']:"),
        ({"A": "x\0"}, "runner.env['A']:"),
    ],
)
def test_bad_runner_env_is_refused_naming_the_field(env, field):
    with pytest.raises(PolicyError) as err:
        Runner(env=env)
    assert str(err.value).startswith(field)


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"": "x"}, "task.env['']: empty variable name"),
        ({"A=B": "x"}, "task.env['A=B']:"),
        ({"A\0B": "x"}, "task.env['A\\x00B']:"),
        ({"A": "x\0"}, "task.env['A']:"),
    ],
)
def test_bad_task_env_is_refused_naming_the_field(env, field):
    with pytest.raises(PolicyError) as err:
        TaskSpec.command(["/usr/bin/env"], env=env)
    assert str(err.value).startswith(field)


@pytest.mark.parametrize("what", ["missing", "a file"])
def test_a_bad_cwd_is_refused_before_anything_is_spawned(what, tmp_path, monkeypatch):
    spawned = []
    real_popen = hardexec.runner.attempt.Popen

    def spy(*args, **kwargs):
        spawned.append(args)
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(hardexec.runner.attempt, "Popen", spy)
    cwd = tmp_path / "nowhere"
    if what == "a file":
        cwd.write_text("")
    events: list[Event] = []
    runner = Runner(sink=events.append)
    spec = TaskSpec.command(["touch", "ran"], cwd=cwd, retries=2)
    with pytest.raises(PolicyError) as err:
        asyncio.run(runner.run(spec))
    reason = "does not exist" if what == "missing" else "is not a directory"
    assert str(err.value) == f"task.cwd: {str(cwd)!r} {reason}"
    assert spawned == [] and events == [] and children() == []
    assert runner.metrics.count("hardexec", "spawn_failed") == 1  # not retried
    assert not (tmp_path / "ran").exists()


def test_cwd_is_where_the_task_runs(tmp_path):
    assert run(TaskSpec.command(["pwd"], cwd=tmp_path)).stdout == f"{tmp_path}\n"


# --- stdin -------------------------------------------------------------------------------------


def test_stdin_is_dev_null_without_input():
    result = run(TaskSpec.command(["readlink", "/proc/self/fd/0"]))
    assert result.stdout == "/dev/null\n"
    assert run(TaskSpec.command(["cat"])).stdout == ""  # reads EOF at once


def test_input_bytes_reach_the_program():
    data = b"first line\nsecond \xc3\xa9 line\nno newline"
    result = run(TaskSpec.command(["cat"], input=data))
    assert result.stdout == data.decode() and result.ok


def test_input_a_program_does_not_read_is_no_error():
    result = run(TaskSpec.command(["true"], input=b"x" * (1 << 20)))
    assert result.ok and result.exit_code == 0


# --- retries -----------------------------------------------------------------------------------

COUNTING = 'n=$(cat count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > count; echo "try $n"'


def test_a_task_that_fails_twice_then_succeeds_takes_three_attempts(tmp_path):
    runner = Runner()
    spec = sh(
        COUNTING + '; [ "$n" -ge 3 ]', cwd=tmp_path, retries=2, backoff=0.01, fail_on_non_zero=True
    )
    result = asyncio.run(runner.run(spec))
    assert result.ok and result.attempts == 3
    assert result.stdout == "try 3\n"  # the last attempt's output
    assert (tmp_path / "count").read_text() == "3\n"
    # metrics count tasks, not attempts: one task, one success
    assert runner.metrics.count("hardexec", "success") == 1
    assert runner.metrics.count("hardexec", "failure") == 0


def test_a_task_that_always_fails_raises_task_failed_with_its_result(tmp_path):
    events: list[Event] = []
    runner = Runner(sink=events.append)
    spec = sh(COUNTING + "; exit 7", cwd=tmp_path, retries=2, backoff=0.01, fail_on_non_zero=True)
    with pytest.raises(TaskFailed) as err:
        asyncio.run(runner.run(spec))
    result = err.value.result
    assert isinstance(result, Result)
    assert result.attempts == 3 and result.exit_code == 7 and result.stdout == "try 3\n"
    assert (tmp_path / "count").read_text() == "3\n"
    assert "exited with status 7" in str(err.value) and "3 attempts" in str(err.value)
    assert runner.metrics.count("hardexec", "failure") == 1  # one task
    assert [e.attempt for e in events if e.kind == "start"] == [1, 2, 3]
    assert events[-1].kind == "exit" and events[-1].result == result  # the sink hears the end


def test_without_fail_on_non_zero_a_failure_is_returned_not_retried(tmp_path):
    result = run(sh(COUNTING + "; exit 3", cwd=tmp_path, retries=2, backoff=0.01))
    assert result.exit_code == 3 and result.attempts == 1 and not result.ok
    assert (tmp_path / "count").read_text() == "1\n"


def test_a_missing_program_fails_at_once_without_retries():
    runner = Runner()
    spec = TaskSpec.command(["/nonexistent/hxtest-program"], retries=3, backoff=10)
    started = time.monotonic()
    with pytest.raises(FileNotFoundError):
        asyncio.run(runner.run(spec))
    assert time.monotonic() - started < 5  # a retry would have slept 10 s first
    assert runner.metrics.count("hardexec", "spawn_failed") == 1


# --- metrics -----------------------------------------------------------------------------------


def mixed_outcomes(runner: Runner) -> None:
    """One success, two failures, one timeout, two cancels (Runner.cancel and a task cancel),
    one spawn failure."""
    ready = asyncio.Event()

    async def main():
        await runner.run(TaskSpec.command(["true"]))
        await runner.run(TaskSpec.command(["false"]))
        await runner.run(sh("exit 4"))
        timed = await runner.run(TaskSpec.command(["sleep", "30"], timeout=0.5))
        assert timed.outcome == "timeout"
        named = asyncio.ensure_future(runner.run(sh("echo up; exec sleep 30", name="named")))
        while runner.cancel("named") == 0:
            await asyncio.sleep(0.01)
        assert (await named).outcome == "cancelled"
        task = asyncio.ensure_future(runner.run(sh("echo up; exec sleep 30", kill_after=1)))
        ready.clear()
        await asyncio.wait_for(ready.wait(), 20)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(FileNotFoundError):
            await runner.run(TaskSpec.command(["/nonexistent/hxtest-program"]))

    def on_line(event):
        if event.kind == "line" and event.text == "up":
            ready.set()

    runner.sink = on_line
    asyncio.run(main())


EXPECTED_COUNTS = {"success": 1, "failure": 2, "timeout": 1, "cancelled": 2, "spawn_failed": 1}


def test_metrics_count_every_outcome():
    runner = Runner(name="mix")
    mixed_outcomes(runner)
    metrics = runner.metrics
    assert isinstance(metrics, Metrics)
    for outcome, count in EXPECTED_COUNTS.items():
        assert metrics.count("mix", outcome) == count, outcome
        buckets = metrics.histogram("mix", outcome)
        assert buckets[-1] == count and buckets == sorted(buckets)  # cumulative, +Inf last
    assert metrics.count("other-runner", "success") == 0
    shot = metrics.snapshot()
    assert {outcome: data["count"] for outcome, data in shot["mix"].items()} == EXPECTED_COUNTS
    assert shot["mix"]["timeout"]["sum"] >= 0.5  # it ran until its timeout


def test_prometheus_metrics_export_the_same_counts():
    prometheus_client = pytest.importorskip(
        "prometheus_client", reason="prometheus_client is not installed (the test extra adds it)"
    )
    registry = prometheus_client.CollectorRegistry()
    runner = Runner(name="prom", metrics=PrometheusMetrics(registry=registry))
    mixed_outcomes(runner)
    for outcome, count in EXPECTED_COUNTS.items():
        labels = {"runner": "prom", "outcome": outcome}
        assert registry.get_sample_value("hardexec_tasks_total", labels) == count, outcome
        assert registry.get_sample_value("hardexec_task_duration_seconds_count", labels) == count
        inf = {**labels, "le": "+Inf"}
        assert registry.get_sample_value("hardexec_task_duration_seconds_bucket", inf) == count


# --- map ---------------------------------------------------------------------------------------


def peak_tracker():
    """A sync sink counting tasks between their start and exit events, and the peak."""
    running = {"now": 0, "peak": 0}

    def sink(event):
        if event.kind == "start":
            running["now"] += 1
            running["peak"] = max(running["peak"], running["now"])
        elif event.kind == "exit":
            running["now"] -= 1

    return sink, running


def test_map_runs_a_thousand_tasks_in_order_without_privileges():
    sink, running = peak_tracker()
    runner = Runner(policy=DROP_ALL, concurrency=32, sink=sink)
    specs = [TaskSpec.command(["/bin/echo", str(i)]) for i in range(1000)]
    results = asyncio.run(runner.map(specs))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(1000)]
    assert all(r.ok and r.warnings == () for r in results)
    assert len({r.pid for r in results}) == 1000
    assert 1 < running["peak"] <= 32 and running["now"] == 0
    assert runner.metrics.count("hardexec", "success") == 1000


def test_map_with_cgroups():
    sink, running = peak_tracker()
    runner = Runner(policy=Policy(cgroups=CgroupLimits()), concurrency=16, sink=sink)
    specs = [TaskSpec.command(["/bin/echo", str(i)]) for i in range(200)]
    results = asyncio.run(runner.map(specs))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(200)]
    assert all(r.ok and r.usage.source == "cgroup" for r in results)
    assert 1 < running["peak"] <= 16


def test_map_raises_the_first_error_after_ending_the_others():
    starts: dict[str, int] = {}

    def sink(event):
        if event.kind == "start":
            starts[event.task] = event.pid

    runner = Runner(concurrency=4, sink=sink)
    specs = [
        TaskSpec.command(["sleep", "30"], kill_after=1, name="sleeper"),
        sh("sleep 0.2; exit 5", fail_on_non_zero=True),
    ]
    started = time.monotonic()
    with pytest.raises(TaskFailed) as err:
        asyncio.run(runner.map(specs))
    assert err.value.result.exit_code == 5
    assert time.monotonic() - started < 20  # the sleeper was ended, not waited for
    assert state(starts["sleeper"]) == "gone"
    assert runner.metrics.count("hardexec", "cancelled") == 1


def test_map_can_return_the_errors_in_place():
    specs = [
        TaskSpec.command(["true"]),
        TaskSpec.command(["false"], fail_on_non_zero=True),
        TaskSpec.command(["/nonexistent/hxtest-program"]),
        TaskSpec.command(["/bin/echo", "last"]),
    ]
    results = asyncio.run(Runner().map(specs, return_exceptions=True))
    assert isinstance(results[0], Result) and results[0].ok
    assert isinstance(results[1], TaskFailed) and results[1].result.exit_code == 1
    assert isinstance(results[2], FileNotFoundError)
    assert isinstance(results[3], Result) and results[3].stdout == "last\n"


# --- stream ------------------------------------------------------------------------------------


def test_stream_yields_start_lines_and_exit_in_order():
    async def main():
        return [e async for e in Runner().stream(sh("echo one; echo two >&2; echo three; exit 3"))]

    events = asyncio.run(main())
    assert [e.kind for e in events] == ["start", "line", "line", "line", "exit"]
    start, *lines, end = events
    assert start.pid == end.result.pid and process_gone(start.pid)
    out = [(e.stream, e.number, e.text) for e in lines if e.stream == "stdout"]
    err = [(e.stream, e.number, e.text) for e in lines if e.stream == "stderr"]
    assert out == [("stdout", 1, "one"), ("stdout", 2, "three")]
    assert err == [("stderr", 1, "two")]
    assert end.result.exit_code == 3 and end.result.stdout == "one\nthree\n"
    assert {e.task for e in events} == {"sh"} and {e.attempt for e in events} == {1}


def test_leaving_the_stream_early_ends_the_tree():
    script = "sleep 30 & echo $!; echo second; exec sleep 30"
    seen: list[Event] = []

    async def main():
        runner = Runner()
        async with contextlib.aclosing(runner.stream(sh(script))) as events:
            async for event in events:
                seen.append(event)
                if event.kind == "line":
                    break
        return {pid: state(pid) for pid in (seen[0].pid, int(seen[1].text))}

    states = asyncio.run(main())
    program, background = seen[0].pid, int(seen[1].text)
    try:
        assert states[program] == "gone"
        assert states[background] in ("gone", "Z", "X")
    finally:
        if not process_gone(background):
            os.kill(background, signal.SIGKILL)


def test_stream_raises_the_tasks_error():
    async def main():
        async for _ in Runner().stream(TaskSpec.command(["/nonexistent/hxtest-program"])):
            pass

    with pytest.raises(FileNotFoundError):
        asyncio.run(main())


# --- sinks -------------------------------------------------------------------------------------

MANY_LINES = "seq 1 20000; seq 1 50 >&2"


def check_every_line(events: list[Event]) -> None:
    lines = [e for e in events if e.kind == "line"]
    out = [int(e.text) for e in lines if e.stream == "stdout"]
    err = [int(e.text) for e in lines if e.stream == "stderr"]
    assert out == list(range(1, 20001)) and err == list(range(1, 51))
    assert [e.number for e in lines if e.stream == "stdout"] == out
    assert events[0].kind == "start" and events[-1].kind == "exit"


def test_a_sync_sink_receives_every_line():
    events: list[Event] = []
    result = run(sh(MANY_LINES), sink=events.append)
    check_every_line(events)
    assert events[-1].result == result


def test_an_async_sink_receives_every_line():
    events: list[Event] = []

    async def sink(event):
        events.append(event)
        await asyncio.sleep(0)

    result = run(sh(MANY_LINES), sink=sink)
    check_every_line(events)
    assert events[-1].result == result


def test_an_async_callable_object_is_awaited():
    class Sink:
        def __init__(self):
            self.events = []

        async def __call__(self, event):
            await asyncio.sleep(0)
            self.events.append(event)

    sink = Sink()
    run(sh("echo a; echo b"), sink=sink)
    assert [e.text for e in sink.events if e.kind == "line"] == ["a", "b"]


# 1500 lines of 100 bytes: more than the event queue's high-water mark plus a pipe's buffer
SLOW_OUTPUT = 'for i in range(1, 1501): print(str(i).rjust(99, "0"))'


def test_a_slow_async_sink_loses_no_lines():
    texts: list[str] = []

    async def sink(event):
        if event.kind == "line":
            if not texts:
                await asyncio.sleep(2.5)  # a sink that lags (a slow network, say)
            texts.append(event.text)

    spec = TaskSpec.command(["/usr/bin/python3", "-c", SLOW_OUTPUT], drain_timeout=1)
    result = run(spec, sink=sink)
    assert [int(t) for t in texts] == list(range(1, 1501))
    assert len(result.stdout.splitlines()) == 1500
    assert result.warnings == ()


def test_a_slow_stream_consumer_loses_no_lines():
    async def main():
        texts = []
        spec = TaskSpec.command(["/usr/bin/python3", "-c", SLOW_OUTPUT], drain_timeout=1)
        async for event in Runner().stream(spec):
            if event.kind == "line":
                if not texts:
                    await asyncio.sleep(2.5)
                texts.append(event.text)
            elif event.kind == "exit":
                return texts, event.result
        return texts, None

    texts, result = asyncio.run(main())
    assert [int(t) for t in texts] == list(range(1, 1501))
    assert result is not None and result.warnings == ()


def test_a_sink_that_raises_does_not_change_the_outcome(caplog):
    def sink(event):
        raise RuntimeError("sink bug")

    with caplog.at_level(logging.ERROR, logger="hardexec.runner"):
        result = run(sh("echo a; sleep 30 >/dev/null 2>&1 & echo $!"), sink=sink)
    background = int(result.stdout.split()[1])
    assert result.ok and process_gone(background)
    assert any("sink raised" in r.getMessage() for r in caplog.records)


# --- logging -----------------------------------------------------------------------------------


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record):
        self.records.append(record)

    def texts(self) -> list[str]:
        return [self.format(r) for r in self.records]


@pytest.fixture
def runner_log():
    logger = logging.getLogger("hardexec.runner")
    handler = Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_lines_are_logged_with_their_task_stream_and_number(runner_log):
    spec = sh("echo hello; echo oops >&2; echo bye", "--token=s3cret", name="job")
    run(spec)
    lines = [r for r in runner_log.records if hasattr(r, "stream")]
    got = [(r.task, r.stream, r.line_number, r.getMessage()) for r in lines]
    assert sorted(got) == [
        ("job", "stderr", 1, "oops"),
        ("job", "stdout", 1, "hello"),
        ("job", "stdout", 2, "bye"),
    ]
    assert all(r.levelno == logging.INFO and r.name == "hardexec.runner" for r in lines)


def test_argument_values_never_reach_the_log(runner_log, tmp_path):
    secret = "--token=s3cret"
    run(sh("echo hello", secret))  # sh -c <script> sh --token=s3cret: 4 arguments
    with pytest.raises(TaskFailed):
        run(sh("exit 1", secret, retries=1, backoff=0.01, fail_on_non_zero=True))
    run(TaskSpec.script("bash", "# s3cret in the body too\necho body-ran", args=[secret]))
    texts = runner_log.texts()
    assert texts
    for record, text in zip(runner_log.records, texts, strict=True):
        assert "s3cret" not in text and "echo hello" not in text, text
        assert "s3cret" not in repr(record.args)
    assert any("started sh with 4 arguments" in t for t in texts), texts
    assert any("started bash with 2 arguments" in t for t in texts), texts
    assert any("'sh' exited with status 1" in t for t in texts)


def test_log_copies_of_lines_escape_control_characters(runner_log):
    text = "red \x1b[31mtext \x07 \u0085 \u2028 \u202e evil \u2066 \t tab"
    script = f"printf '%s\\n' '{text}'"
    result = run(TaskSpec.command(["sh", "-c", script]))
    assert result.stdout == text + "\n"  # the result keeps what was written
    [line] = [r for r in runner_log.records if hasattr(r, "stream")]
    assert line.getMessage() == (
        "red \\x1b[31mtext \\x07 \\x85 \\u2028 \\u202e evil \\u2066 \t tab"
    )


def test_log_lines_can_be_turned_off(runner_log):
    events: list[Event] = []
    result = run(sh("echo quiet"), log=LogConfig(log_lines=False), sink=events.append)
    assert result.stdout == "quiet\n"
    assert [e.text for e in events if e.kind == "line"] == ["quiet"]
    assert not [r for r in runner_log.records if hasattr(r, "stream")]
    assert any("started sh" in t for t in runner_log.texts())


# --- capabilities ------------------------------------------------------------------------------


def test_a_runner_that_drops_all_caps_runs_tasks_without_any(stage):
    result = run(TaskSpec.command(["cat", "/proc/self/status"]), policy=DROP_ALL)
    status = parse_status(result.stdout)
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert result.ok and result.warnings == ()
    default = parse_status(run(TaskSpec.command(["cat", "/proc/self/status"])).stdout)
    assert int(default["CapEff"], 16) != 0  # root's tasks keep them without the policy
