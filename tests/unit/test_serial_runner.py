"""Tasks and results as plain data: lossless round trips through JSON, the plain form's shape,
and strict reading with key paths in errors."""

import json
import re

import pytest

from hardexec import PolicyError, Result, TaskSpec
from hardexec._record import MISSING, fields, replace
from hardexec.runner.result import Truncation
from hardexec.serial import (
    RESULT_VERSION,
    TASK_VERSION,
    result_from_dict,
    result_to_dict,
    task_from_dict,
    task_to_dict,
)
from hardexec.usage import Usage

COMMAND = TaskSpec.command(
    # A lone surrogate is how os.fsdecode carries a byte that is not UTF-8.
    ["/usr/bin/printf", "%s\\n", "caf\u00e9", "\udcff"],
    env={"ZED": "last?", "ALPHA": "", "LANG": "C.UTF-8"},
    cwd="/tmp",
    env_policy=("HOME", "PATH"),
    input=b"\xff\x00\xfe\r\n not UTF-8",
    timeout=600.25,
    kill_after=0.0,
    drain_timeout=1.5,
    retries=3,
    backoff=0.125,
    fail_on_non_zero=True,
    name="printer",
    max_script_bytes=4096,
)
SCRIPT = TaskSpec.script(
    ["python3", "-I"],
    "import sys\nprint('h\u00e9', sys.argv[1:])\n",
    args=["-v", ""],
    env={"A": "1"},
    cwd="/",
    env_policy="clear",
    input="text \u00e9",
    timeout=1,
    kill_after=2,
    drain_timeout=0,
    retries=1,
    backoff=0,
    fail_on_non_zero=True,
    name="py",
    max_script_bytes=100,
)

CGROUP = Result(
    name="make",
    pid=4242,
    exit_code=None,
    signal=9,
    duration=12.5,
    timed_out=True,
    cancelled=True,
    oom_killed=True,
    usage=Usage(
        source="cgroup",
        cpu_user=1.25,
        cpu_system=0.5,
        cpu_throttled=0.75,
        memory_peak=256 << 20,
        pids_peak=17,
        oom_killed=True,
    ),
    stdout="first\nlast \u00e9\n",
    stderr="warning: \udcff\n",
    truncated=Truncation(
        stdout_bytes=1 << 40, stdout_lines=2, stderr_bytes=3, stderr_lines=4, lines_cut=5
    ),
    warnings=("no cgroup: rusage only", "a leftover process was killed"),
    attempts=3,
    denied_syscalls={"ptrace": 2, "mount": 1, "syscall 435": 7},
)
RUSAGE = Result(
    name="ls",
    pid=7,
    exit_code=2,
    signal=None,
    duration=0.001,
    timed_out=True,
    cancelled=True,
    oom_killed=False,
    usage=Usage(source="rusage", cpu_user=0.002, cpu_system=0.0, oom_killed=False),
    stdout="x",
    stderr="y",
    truncated=Truncation(lines_cut=1),
    warnings=("one",),
    attempts=2,
    denied_syscalls={"unshare": 1 << 70},
)


def _through_json(data):
    return json.loads(json.dumps(data))


def _default(item):
    if item.default_factory is not MISSING:  # a fresh one each time: compared, it is equal
        return item.default_factory()
    return item.default


def _at_default(record):
    return {
        item.name
        for item in fields(record)
        if item.init and getattr(record, item.name) == _default(item)
    }


def test_the_fixtures_leave_no_field_at_its_default():
    # What the round trips below prove is only as wide as the fields they set.
    assert _at_default(COMMAND) == {"body", "script_args"}  # what only script mode has
    assert _at_default(SCRIPT) == set()
    # A result has an exit status or a signal, never both: each fixture gives one.
    assert _at_default(CGROUP) == {"exit_code"}
    assert _at_default(RUSAGE) == {"signal"}
    assert _at_default(CGROUP.usage) == set()
    assert _at_default(RUSAGE.usage) == {"cpu_throttled", "memory_peak", "pids_peak"}
    assert _at_default(CGROUP.truncated) == set()


@pytest.mark.parametrize(
    "spec",
    [COMMAND, SCRIPT, TaskSpec.command(["true"])],
    ids=["command", "script", "defaults"],
)
def test_a_task_round_trips_through_json(spec):
    again = TaskSpec.from_dict(_through_json(spec.to_dict()))
    assert again == spec
    for item in fields(TaskSpec):  # == says it; this says which field, if one differs
        assert getattr(again, item.name) == getattr(spec, item.name), item.name
    assert again.to_dict() == spec.to_dict()


@pytest.mark.parametrize(
    "result",
    [CGROUP, RUSAGE, Result(name="x")],
    ids=["cgroup", "rusage", "defaults"],
)
def test_a_result_round_trips_through_json(result):
    again = Result.from_dict(_through_json(result.to_dict()))
    assert again == result
    assert again.usage == result.usage
    assert again.truncated == result.truncated
    assert again.to_dict() == result.to_dict()


def test_the_task_plain_form():
    data = COMMAND.to_dict()
    assert data == {
        "version": TASK_VERSION,
        "argv": ["/usr/bin/printf", "%s\\n", "caf\u00e9", "\udcff"],
        "body": None,
        "script_args": [],
        "cwd": "/tmp",
        "env": {"ZED": "last?", "ALPHA": "", "LANG": "C.UTF-8"},
        "env_policy": ["HOME", "PATH"],
        "input_base64": "/wD+DQogbm90IFVURi04",
        "timeout": 600.25,
        "kill_after": 0.0,
        "drain_timeout": 1.5,
        "retries": 3,
        "backoff": 0.125,
        "fail_on_non_zero": True,
        "name": "printer",
        "max_script_bytes": 4096,
    }
    assert list(data["env"]) == ["ZED", "ALPHA", "LANG"]
    assert TASK_VERSION == 1
    script = SCRIPT.to_dict()
    assert (script["body"], script["script_args"]) == (SCRIPT.body, ["-v", ""])
    assert script["env_policy"] == "clear"
    assert TaskSpec.command(["true"]).to_dict()["input_base64"] is None


def test_the_env_keeps_its_order_through_json():
    again = TaskSpec.from_dict(_through_json(COMMAND.to_dict()))
    assert [name for name, _ in again.env] == ["ZED", "ALPHA", "LANG"]


def test_the_result_plain_form():
    assert RUSAGE.to_dict() == {
        "version": RESULT_VERSION,
        "name": "ls",
        "pid": 7,
        "exit_code": 2,
        "signal": None,
        "duration": 0.001,
        "timed_out": True,
        "cancelled": True,
        "oom_killed": False,
        "usage": {
            "source": "rusage",
            "cpu_user": 0.002,
            "cpu_system": 0.0,
            "cpu_throttled": None,
            "memory_peak": None,
            "pids_peak": None,
            "oom_killed": False,
        },
        "stdout": "x",
        "stderr": "y",
        "truncated": {
            "stdout_bytes": 0,
            "stdout_lines": 0,
            "stderr_bytes": 0,
            "stderr_lines": 0,
            "lines_cut": 1,
        },
        "warnings": ["one"],
        "attempts": 2,
        "denied_syscalls": {"unshare": 1 << 70},
    }
    assert RESULT_VERSION == 1
    assert Result(name="x").to_dict()["usage"] is None
    assert Result(name="x").to_dict()["denied_syscalls"] == {}


def test_keys_left_out_take_the_defaults():
    assert TaskSpec.from_dict({"version": 1, "argv": ["ls"]}) == TaskSpec(argv=("ls",))
    assert Result.from_dict({"version": 1, "name": "x"}) == Result(name="x")
    data = {"version": 1, "name": "x", "usage": {"source": "rusage"}, "truncated": {}}
    assert Result.from_dict(data) == Result(name="x", usage=Usage(source="rusage"))


def test_a_float_field_takes_a_whole_number_and_keeps_a_float():
    data = {"version": 1, "name": "x", "duration": 2, "usage": {"source": "cgroup", "cpu_user": 3}}
    result = Result.from_dict(data)
    assert (result.duration, type(result.duration)) == (2.0, float)
    assert (result.usage.cpu_user, type(result.usage.cpu_user)) == (3.0, float)


def test_the_input_is_read_as_base64():
    spec = TaskSpec.from_dict({"version": 1, "argv": ["cat"], "input_base64": "AP8="})
    assert spec.input == b"\x00\xff"
    spec = TaskSpec.from_dict({"version": 1, "argv": ["cat"], "input_base64": ""})
    assert spec.input == b""
    spec = TaskSpec.from_dict({"version": 1, "argv": ["cat"], "input_base64": None})
    assert spec.input is None


TASK_KEYS = (
    "argv, body, script_args, cwd, env, env_policy, input_base64, timeout, kill_after, "
    "drain_timeout, retries, backoff, fail_on_non_zero, name, max_script_bytes"
)


def _task(**values):
    return {"version": 1, "argv": ["ls"], **values}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "task: expected an object, got []"),
        ("{}", "task: expected an object, got '{}'"),
        ({"argv": ["ls"]}, "task.version: missing (this hardexec writes 1)"),
        ({"version": 2}, "task.version: 2 is not a version this hardexec reads (1)"),
        ({"version": True}, "task.version: True is not a version this hardexec reads (1)"),
        ({"version": "1"}, "task.version: '1' is not a version this hardexec reads (1)"),
        ({"version": 1}, "task.argv: missing"),
        (_task(input=b"x"), f"task.input: unknown key (known here: {TASK_KEYS})"),
        (_task(shell=True), f"task.shell: unknown key (known here: {TASK_KEYS})"),
        (_task(argv="ls -l"), "task.argv: expected a list, got str"),
        (_task(argv={"ls": 1}), "task.argv: expected a list, got dict"),
        (_task(argv=None), "task.argv: expected a list, got NoneType"),
        (_task(argv=[]), "task.argv: empty (name a program to run)"),
        (_task(argv=[""]), "task.argv[0]: empty program name"),
        (_task(argv=["ls", 5]), "task.argv[1]: expected text, got int"),
        (_task(argv=["ls", "a\0b"]), "task.argv[1]: contains a NUL byte at offset 1"),
        (_task(body=5), "task.body: expected text, got int"),
        (_task(body=""), "task.body: empty script"),
        (
            _task(body="abcd", max_script_bytes=3),
            "task.body: the script is 4 bytes, over the limit of 3 (task.max_script_bytes)",
        ),
        (_task(script_args=["-v"]), "task.script_args: given without a script"),
        (_task(body="x", script_args="-v"), "task.script_args: expected a list, got str"),
        (_task(body="x", script_args=[None]), "task.script_args[0]: expected text, got NoneType"),
        (_task(cwd=5), "task.cwd: expected text, got 5"),
        (_task(cwd=""), "task.cwd: empty path"),
        (
            _task(env=[["A", "b"]]),
            "task.env: expected an object of names to values, got list",
        ),
        (_task(env=None), "task.env: expected an object of names to values, got NoneType"),
        (_task(env={"A": 5}), "task.env['A']: expected text, got int"),
        (_task(env={"A": "x\0"}), "task.env['A']: contains a NUL byte at offset 1"),
        (_task(env={"": "x"}), "task.env['']: empty variable name"),
        (_task(env={"A=B": "x"}), "task.env['A=B']: variable name 'A=B' contains '='"),
        (
            _task(env_policy="keep"),
            "task.env_policy: 'keep' is not 'inherit', 'clear' or a list of names",
        ),
        (
            _task(env_policy={"HOME": True}),
            "task.env_policy: expected 'inherit', 'clear' or a list of names, got {'HOME': True}",
        ),
        (
            _task(env_policy=None),
            "task.env_policy: expected 'inherit', 'clear' or a list of names, got None",
        ),
        (_task(env_policy=["HOME", 1]), "task.env_policy[1]: expected text, got 1"),
        (_task(env_policy=["HOME", ""]), "task.env_policy[1]: empty variable name"),
        (
            _task(input_base64=5),
            "task.input_base64: expected base64 text or null, got int",
        ),
        (
            _task(input_base64=[0, 255]),
            "task.input_base64: expected base64 text or null, got list",
        ),
        (_task(timeout=0), "task.timeout: 0 is not a positive number of seconds"),
        (_task(timeout=-1.5), "task.timeout: -1.5 is not a positive number of seconds"),
        (_task(timeout="10"), "task.timeout: expected a number of seconds, got '10'"),
        (_task(timeout=True), "task.timeout: expected a number of seconds, got True"),
        (_task(timeout=1e10), "task.timeout: 10000000000.0 s is more than 1000000000 s"),
        (_task(kill_after=None), "task.kill_after: expected a number of seconds, got None"),
        (_task(drain_timeout=-1), "task.drain_timeout: -1 is not a positive number of seconds"),
        (_task(retries=1.5), "task.retries: expected a whole number, got 1.5"),
        (_task(retries=True), "task.retries: expected a whole number, got True"),
        (_task(retries=-1), "task.retries: -1 is not in 0..1000"),
        (_task(backoff=[]), "task.backoff: expected a number of seconds, got []"),
        (
            _task(fail_on_non_zero=1),
            "task.fail_on_non_zero: expected True or False, got 1",
        ),
        (_task(name=""), "task.name: empty (leave it out for the program's name)"),
        (_task(name=7), "task.name: expected text, got 7"),
        (_task(max_script_bytes=0), "task.max_script_bytes: 0 is not positive"),
        (_task(max_script_bytes="1"), "task.max_script_bytes: expected a whole number, got '1'"),
    ],
)
def test_reading_a_task_is_strict_and_names_the_key_path(data, message):
    with pytest.raises(PolicyError) as err:
        TaskSpec.from_dict(data)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a", "Invalid base64-encoded string"),
        ("aGk", "Incorrect padding"),
        ("aGk*", "Only base64 data is allowed"),  # validate: not skipped
        ("aG k=", "Only base64 data is allowed"),
        ("\u00e9\u00e9\u00e9\u00e9", "string argument should contain only ASCII characters"),
    ],
)
def test_input_that_is_not_base64_is_named(text, reason):
    with pytest.raises(
        PolicyError, match=re.escape(f"task.input_base64: not base64 text ({reason}")
    ):
        TaskSpec.from_dict(_task(input_base64=text))


RESULT_KEYS = (
    "name, pid, exit_code, signal, duration, timed_out, cancelled, oom_killed, usage, stdout, "
    "stderr, truncated, warnings, attempts, denied_syscalls"
)
USAGE_KEYS = "source, cpu_user, cpu_system, cpu_throttled, memory_peak, pids_peak, oom_killed"
TRUNCATION_KEYS = "stdout_bytes, stdout_lines, stderr_bytes, stderr_lines, lines_cut"


def _result(**values):
    return {"version": 1, "name": "x", **values}


def _usage(**values):
    return _result(usage={"source": "cgroup", **values})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "result: expected an object, got []"),
        (None, "result: expected an object, got None"),
        ({"name": "x"}, "result.version: missing (this hardexec writes 1)"),
        ({"version": 0}, "result.version: 0 is not a version this hardexec reads (1)"),
        ({"version": 1.5}, "result.version: 1.5 is not a version this hardexec reads (1)"),
        ({"version": True}, "result.version: True is not a version this hardexec reads (1)"),
        ({"version": 1}, "result.name: missing"),
        (_result(ok=True), f"result.ok: unknown key (known here: {RESULT_KEYS})"),
        (_result(name=5), "result.name: expected text, got 5"),
        (_result(name=None), "result.name: expected text, got None"),
        (_result(pid=True), "result.pid: expected a whole number or null, got True"),
        (_result(pid=1.0), "result.pid: expected a whole number or null, got 1.0"),
        (_result(exit_code="0"), "result.exit_code: expected a whole number or null, got '0'"),
        (_result(signal=[9]), "result.signal: expected a whole number or null, got [9]"),
        (_result(duration=None), "result.duration: expected a number, got None"),
        (_result(duration=False), "result.duration: expected a number, got False"),
        (_result(duration="1.5"), "result.duration: expected a number, got '1.5'"),
        (_result(timed_out=0), "result.timed_out: expected True or False, got 0"),
        (_result(cancelled=None), "result.cancelled: expected True or False, got None"),
        (_result(oom_killed="no"), "result.oom_killed: expected True, False or null, got 'no'"),
        (_result(usage=5), "result.usage: expected an object or null, got 5"),
        (_result(usage=[]), "result.usage: expected an object or null, got []"),
        (_result(usage={}), "result.usage.source: missing"),
        (
            _result(usage={"source": "proc"}),
            "result.usage.source: expected 'cgroup' or 'rusage', got 'proc'",
        ),
        (
            _result(usage={"source": None}),
            "result.usage.source: expected 'cgroup' or 'rusage', got None",
        ),
        (
            _result(usage={"source": ["cgroup"]}),
            "result.usage.source: expected 'cgroup' or 'rusage', got ['cgroup']",
        ),
        (_usage(rss=1), f"result.usage.rss: unknown key (known here: {USAGE_KEYS})"),
        (_usage(cpu_user="1"), "result.usage.cpu_user: expected a number or null, got '1'"),
        (_usage(cpu_system=True), "result.usage.cpu_system: expected a number or null, got True"),
        (
            _usage(cpu_throttled={}),
            "result.usage.cpu_throttled: expected a number or null, got {}",
        ),
        (
            _usage(memory_peak=1.5),
            "result.usage.memory_peak: expected a whole number or null, got 1.5",
        ),
        (
            _usage(pids_peak=False),
            "result.usage.pids_peak: expected a whole number or null, got False",
        ),
        (
            _usage(oom_killed=1),
            "result.usage.oom_killed: expected True, False or null, got 1",
        ),
        (_result(stdout=None), "result.stdout: expected text, got None"),
        (_result(stderr=["a"]), "result.stderr: expected text, got ['a']"),
        (_result(truncated=None), "result.truncated: expected an object, got None"),
        (_result(truncated=[0, 0]), "result.truncated: expected an object, got [0, 0]"),
        (
            _result(truncated={"stdout_bytes": "1"}),
            "result.truncated.stdout_bytes: expected a whole number, got '1'",
        ),
        (
            _result(truncated={"stderr_lines": True}),
            "result.truncated.stderr_lines: expected a whole number, got True",
        ),
        (
            _result(truncated={"lines_cut": 1.0}),
            "result.truncated.lines_cut: expected a whole number, got 1.0",
        ),
        (
            _result(truncated={"bytes": 1}),
            f"result.truncated.bytes: unknown key (known here: {TRUNCATION_KEYS})",
        ),
        (_result(warnings="careful"), "result.warnings: expected a list, got 'careful'"),
        (_result(warnings=None), "result.warnings: expected a list, got None"),
        (_result(warnings=["a", 5]), "result.warnings[1]: expected text, got 5"),
        (_result(attempts=1.0), "result.attempts: expected a whole number, got 1.0"),
        (_result(attempts=None), "result.attempts: expected a whole number, got None"),
        (
            _result(denied_syscalls=None),
            "result.denied_syscalls: expected an object of syscall names to counts, got None",
        ),
        (
            _result(denied_syscalls=[["ptrace", 1]]),
            "result.denied_syscalls: expected an object of syscall names to counts, "
            "got [['ptrace', 1]]",
        ),
        (
            _result(denied_syscalls={"ptrace": 0}),
            "result.denied_syscalls.ptrace: expected a whole number, at least 1, got 0",
        ),
        (
            _result(denied_syscalls={"mount": 1, "ptrace": -2}),
            "result.denied_syscalls.ptrace: expected a whole number, at least 1, got -2",
        ),
        (
            _result(denied_syscalls={"ptrace": 1.0}),
            "result.denied_syscalls.ptrace: expected a whole number, at least 1, got 1.0",
        ),
        (
            _result(denied_syscalls={"ptrace": True}),
            "result.denied_syscalls.ptrace: expected a whole number, at least 1, got True",
        ),
        (
            _result(denied_syscalls={"ptrace": "3"}),
            "result.denied_syscalls.ptrace: expected a whole number, at least 1, got '3'",
        ),
        (
            _result(denied_syscalls={"ptrace": None}),
            "result.denied_syscalls.ptrace: expected a whole number, at least 1, got None",
        ),
        (
            _result(denied_syscalls={"syscall 435": 0}),
            "result.denied_syscalls['syscall 435']: expected a whole number, at least 1, got 0",
        ),
        # Not from JSON, whose keys are text: from a dict built in Python.
        (
            _result(denied_syscalls={101: 1}),
            "result.denied_syscalls: expected syscall names as keys, got 101",
        ),
        (
            _result(denied_syscalls={"": 1}),
            "result.denied_syscalls: expected syscall names as keys, got ''",
        ),
    ],
)
def test_reading_a_result_is_strict_and_names_the_key_path(data, message):
    with pytest.raises(PolicyError) as err:
        Result.from_dict(data)
    assert str(err.value) == message


def test_a_whole_number_too_large_for_a_float_is_no_duration():
    # JSON has no limit on a number's size; float() of this one would overflow.
    data = json.loads('{"version": 1, "name": "x", "duration": 1' + "0" * 400 + "}")
    with pytest.raises(
        PolicyError, match=re.escape("result.duration: expected a number, got 1000")
    ):
        Result.from_dict(data)


def test_the_module_functions_are_what_the_methods_call():
    assert task_to_dict(SCRIPT) == SCRIPT.to_dict()
    assert task_from_dict(SCRIPT.to_dict()) == SCRIPT
    assert result_to_dict(CGROUP) == CGROUP.to_dict()
    assert result_from_dict(CGROUP.to_dict()) == CGROUP


def test_writing_something_else_is_a_type_error():
    with pytest.raises(TypeError, match=re.escape("expected a hardexec.TaskSpec, got Result")):
        task_to_dict(CGROUP)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape("expected a hardexec.Result, got dict")):
        result_to_dict(CGROUP.to_dict())  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [1.0, True, "1"])
def test_a_version_must_be_the_whole_number(version):
    with pytest.raises(PolicyError) as err:
        TaskSpec.from_dict({"version": version, "argv": ["true"]})
    assert str(err.value).startswith("task.version: ")


def test_a_result_from_before_denied_syscalls_reads_as_none_denied():
    data = RUSAGE.to_dict()
    del data["denied_syscalls"]
    assert Result.from_dict(_through_json(data)) == replace(RUSAGE, denied_syscalls={})


def test_denied_syscalls_are_copied_both_ways():
    # The record is frozen; its mapping must not change through a plain form, nor later with it.
    written = CGROUP.to_dict()
    written["denied_syscalls"]["ptrace"] = 99
    assert CGROUP.denied_syscalls["ptrace"] == 2
    data = CGROUP.to_dict()
    read = Result.from_dict(data)
    data["denied_syscalls"]["ptrace"] = 99
    assert read.denied_syscalls["ptrace"] == 2


def test_denied_syscalls_keep_their_order_through_json():
    again = Result.from_dict(_through_json(CGROUP.to_dict()))
    assert list(again.denied_syscalls) == ["ptrace", "mount", "syscall 435"]


def test_denied_syscalls_from_any_mapping_are_written_as_an_object():
    from types import MappingProxyType

    result = Result(name="x", denied_syscalls=MappingProxyType({"ptrace": 1}))
    assert result.to_dict()["denied_syscalls"] == {"ptrace": 1}
    assert json.loads(json.dumps(result.to_dict()))["denied_syscalls"] == {"ptrace": 1}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_result_holds_no_nan_or_infinity(value):
    data = Result(name="x").to_dict()
    data["duration"] = value
    with pytest.raises(PolicyError) as err:
        Result.from_dict(data)
    assert str(err.value).startswith("result.duration: expected a number")


def test_huge_numbers_are_policy_errors_not_crashes():
    with pytest.raises(PolicyError, match=r"^task\.timeout: <an integer of \d+ bits>"):
        TaskSpec.from_dict({"version": 1, "argv": ["true"], "timeout": 10**5000})
