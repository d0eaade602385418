"""Hardened tasks through real Celery workers and a real Redis server: what each task's program
received, what the submitter gets back, and that no tree outlives the process running it.

The workers' ceiling (conftest.CEILING): all capabilities dropped but CHOWN and
NET_BIND_SERVICE, no_new_privs, 512 open files, the environment cleared but FLEET=yes,
4096 bytes of output per stream, 120 s at most.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from fleet_helpers import HARDEXEC, gone, kill_all, pids_in, ppid, start_worker
from hardexec import Policy, RlimitConfig, SecurityConfig
from hardexec.caps import CapSet
from hardexec.confine import Confinement, SyscallFilter
from hardexec.errors import CeilingError, PolicyError
from hardexec.runner import TaskSpec
from helpers import hardexec_temp_files, wait_until

PROBE = (
    'echo "token=$1"; grep -E "^(CapEff|NoNewPrivs|Uid):" /proc/self/status; '
    'echo "nofile=$(ulimit -n)"; echo "fleet=${FLEET:-unset} home=${HOME:-unset}"'
)


def probe(token: str, **fields) -> TaskSpec:
    return TaskSpec.command(["sh", "-c", PROBE, "probe", token], **fields)


def lines(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        if ":" in line and "=" not in line:
            key, _, value = line.partition(":")
            found[key] = value.split()[0]
        else:
            for word in line.split():
                key, _, value = word.partition("=")
                found[key] = value
    return found


def mask(*names: str) -> str:
    return CapSet.of(*names).to_hex()


def keep(*caps: str, **more) -> Policy:
    return Policy(security=SecurityConfig(drop_all_caps=True, keep_caps=caps, **more))


# --- 200 tasks of mixed policies, over both workers ---------------------------------------------

KINDS = {
    # name: (policy, what the program must have received)
    "ceiling": (
        None,
        {"CapEff": mask("CHOWN", "NET_BIND_SERVICE"), "NoNewPrivs": "1", "Uid": "65534"},
    ),
    "chown-only": (keep("CHOWN"), {"CapEff": mask("CHOWN"), "nofile": "512"}),
    "nobody": (keep(user="nobody"), {"CapEff": mask(), "Uid": "65534"}),
    "fewer-files": (Policy(rlimits=RlimitConfig(max_open_files=64)), {"nofile": "64"}),
}


def _expected_kind(i: int) -> str:
    return ("ceiling", "chown-only", "nobody", "fewer-files", "exit", "script", "big", "above")[
        i % 8
    ]


def test_200_mixed_tasks_each_get_exactly_their_policy(workers, broker, shared):
    from hardexec.celery import submit

    marker = shared / "ran-above-ceiling"
    sent = []
    for i in range(200):
        kind = _expected_kind(i)
        token = f"t{i}"
        if kind in KINDS:
            spec, policy = probe(token), KINDS[kind][0]
        elif kind == "exit":
            spec, policy = (
                TaskSpec.command(["sh", "-c", f"echo {token} >&2; exit {i % 7 + 1}"]),
                None,
            )
        elif kind == "script":
            spec, policy = (
                TaskSpec.script("python", f"import os; print('{token}', os.getuid())"),
                None,
            )  # the ceiling's user
        elif kind == "big":
            spec = TaskSpec.command(["sh", "-c", f"echo {token}; seq 1 20000"])
            policy = None
        else:
            spec = TaskSpec.command(["touch", str(marker)])
            policy = Policy(
                security=SecurityConfig(drop_all_caps=True, keep_caps=["SYS_ADMIN"]),
                rlimits=RlimitConfig(max_open_files=4096),
            )
        sent.append((i, kind, token, submit(spec, policy, broker=broker)))

    for i, kind, token, handle in sent:
        if kind == "above":
            with pytest.raises(CeilingError) as refused:
                handle.get(timeout=120)
            text = str(refused.value)
            assert "SYS_ADMIN" in text and "security.keep_caps" in text, text
            assert "rlimits.max_open_files" in text and "4096" in text, text
            continue
        result = handle.get(timeout=120)
        if kind in KINDS:
            got = lines(result.stdout)
            assert got["token"] == token, result.stdout
            for key, value in KINDS[kind][1].items():
                assert got[key] == value, (kind, key, result.stdout)
            # The ceiling's environment: cleared, its own FLEET set; the worker's HOME is not.
            assert got["fleet"] == "yes" and got["home"] == "unset", result.stdout
            assert result.exit_code == 0 and result.usage is not None
            assert result.usage.source == "cgroup"  # every task's tree is in a worker group
        elif kind == "exit":
            assert result.exit_code == i % 7 + 1 and result.stderr == f"{token}\n"
        elif kind == "script":
            assert result.stdout == f"{token} 65534\n" and result.ok
        elif kind == "big":
            # The ceiling's max_output (4096 bytes a stream) holds on the worker.
            assert len(result.stdout.encode()) <= 4096
            assert result.stdout.startswith(f"{token}\n1\n")
            assert result.truncated.stdout_bytes > 0 and result.ok
    assert not marker.exists(), "a task above the ceiling ran"
    # Both workers took tasks (each logs the id of every task it receives).
    for worker in workers:
        log = worker.log.read_text()
        assert any(f"[{handle.id}] received" in log for *_, handle in sent), worker.name


def test_a_task_above_the_ceiling_is_refused_with_each_reason_and_never_runs(
    workers, broker, shared
):
    from hardexec.celery import submit

    marker = shared / "ran"
    policy = Policy(
        security=SecurityConfig(drop_all_caps=True, keep_caps=["NET_ADMIN", "CHOWN"]),
        rlimits=RlimitConfig(max_open_files=100_000),
    )
    spec = TaskSpec.command(["touch", str(marker)], env_policy=("HOME",), timeout=500)
    with pytest.raises(CeilingError) as refused:
        submit(spec, policy, broker=broker).get(timeout=60)
    text = str(refused.value)
    for part in ("NET_ADMIN", "max_open_files", "100000", "HOME", "timeout"):
        assert part in text, text
    assert "CHOWN" not in text.split("NET_ADMIN", 1)[0]  # what is within is not named
    assert not marker.exists()


def test_a_message_that_is_not_a_task_is_refused(workers, app):
    from hardexec.celery import TASK_NAME

    bad = app.send_task(TASK_NAME, args=[{"version": 1, "argv": []}, None])
    with pytest.raises(PolicyError, match="task.argv"):
        bad.get(timeout=60)
    worse = app.send_task(TASK_NAME, args=[{"version": 1, "argv": ["true"], "shell": True}, None])
    with pytest.raises(PolicyError, match="shell"):
        worse.get(timeout=60)


def test_a_denied_syscall_is_counted_in_the_result(workers, broker):
    from hardexec.celery import submit

    policy = Policy(confinement=Confinement(syscalls=SyscallFilter(deny=("fchmodat", "fchmodat2"))))
    result = submit(TaskSpec.command(["chmod", "700", "/tmp/."]), policy, broker=broker).get(60)
    assert result.exit_code != 0
    assert sum(result.denied_syscalls.values()) >= 1, result


# --- lifetimes -----------------------------------------------------------------------------------

FIRST_THEN_QUICK = (
    'if [ -s "$1" ]; then echo second; echo $$ >> "$1"; exit 0; fi; '
    'echo $$ >> "$1"; sleep 300 & echo $! >> "$1"; wait'
)


def test_a_killed_pool_process_takes_its_tree_and_the_task_runs_again_from_scratch(
    workers, broker, shared
):
    from hardexec.celery import submit

    record = shared / "pids"
    temp_before = hardexec_temp_files()
    handle = submit(
        TaskSpec.command(["sh", "-c", FIRST_THEN_QUICK, "t", str(record)]), broker=broker
    )
    first = pids_in(record, 2)
    try:
        pool = ppid(first[0])
        os.kill(pool, 9)  # the Celery pool process running the task
        result = handle.get(timeout=60)
        assert result.ok and result.stdout == "second\n"
        # The first attempt's program and the process it left are gone, a second ran.
        assert wait_until(lambda: gone(first), timeout=10), first
        runs = record.read_text().split()
        assert len(runs) == 3 and int(runs[2]) not in first
        # Nothing of the first attempt's group is left in either worker's directory.
        for worker in workers:
            directory = worker.directory()
            assert directory is not None
            assert wait_until(
                lambda d=directory: (
                    not any(p.name.startswith(f"hardexec-{pool}-") for p in d.iterdir())
                ),
                timeout=10,
            )
        assert b"ending its tree" in b"".join(w.log.read_bytes() for w in workers)
        assert hardexec_temp_files() == temp_before
    finally:
        kill_all(first)


def test_revoke_with_terminate_ends_the_whole_tree(workers, broker, shared):
    from celery.exceptions import TaskRevokedError

    from hardexec.celery import submit

    record = shared / "pids"
    script = (
        'echo $$ >> "$1"; sleep 300 & echo $! >> "$1"; setsid sleep 301 & echo $! >> "$1"; wait'
    )
    handle = submit(TaskSpec.command(["sh", "-c", script, "t", str(record)]), broker=broker)
    tree = pids_in(record, 3)
    try:
        handle.revoke(terminate=True)
        with pytest.raises(TaskRevokedError):
            handle.get(timeout=60)
        assert wait_until(lambda: gone(tree), timeout=10), tree
    finally:
        kill_all(tree)


def test_celerys_hard_time_limit_ends_the_whole_tree(workers, broker, shared):
    from celery.exceptions import TimeLimitExceeded

    from hardexec.celery import submit

    record = shared / "pids"
    script = 'echo $$ >> "$1"; sleep 300 & echo $! >> "$1"; wait'
    handle = submit(
        TaskSpec.command(["sh", "-c", script, "t", str(record)]), broker=broker, time_limit=2
    )
    tree = pids_in(record, 2)
    try:
        with pytest.raises(TimeLimitExceeded):
            handle.get(timeout=60)
        assert wait_until(lambda: gone(tree), timeout=10), tree
    finally:
        kill_all(tree)


def test_celerys_soft_time_limit_ends_the_tree_the_runners_way(workers, app, shared):
    from celery.exceptions import SoftTimeLimitExceeded

    from hardexec.celery import TASK_NAME
    from hardexec.serial import task_to_dict

    record = shared / "pids"
    told = shared / "told"
    # The program is told (SIGTERM) before it is killed: the runner's end, not a bare SIGKILL.
    script = f'trap "echo term > {told}; exit 3" TERM; echo $$ >> "$1"; sleep 300 & wait'
    spec = TaskSpec.command(["sh", "-c", script, "t", str(record)], kill_after=5)
    handle = app.send_task(TASK_NAME, args=[task_to_dict(spec), None], soft_time_limit=1)
    tree = pids_in(record, 1)
    try:
        with pytest.raises(SoftTimeLimitExceeded, match="cancelled"):
            handle.get(timeout=60)
        assert told.read_text() == "term\n"
        assert wait_until(lambda: gone(tree), timeout=10)
    finally:
        kill_all(tree)


def test_a_killed_worker_takes_every_tree_and_its_task_runs_again_elsewhere(
    broker, ceiling_file, fleet_dir, shared
):
    import time

    from hardexec.celery import submit

    visible = ["--visibility-timeout", "3"]  # Redis gives an unfinished task back after 3 s
    worker = start_worker(
        broker, ceiling_file, fleet_dir, "doomed", concurrency=2, queue="doomed", extra=visible
    )
    record = shared / "pids"
    script = (
        'if [ -s "$1" ]; then echo second; echo $$ >> "$1"; exit 0; fi; echo $$ >> "$1"; '
        'sleep 300 & echo $! >> "$1"; setsid sleep 301 & echo $! >> "$1"; wait'
    )
    tree: list[int] = []
    rescuer = None
    try:
        directory, keeper = worker.directory(), worker.keeper()
        assert directory is not None and keeper is not None
        spec = TaskSpec.command(["sh", "-c", script, "t", str(record)])
        handle = submit(spec, broker=broker, queue="doomed")
        tree = pids_in(record, 3)
        worker.process.kill()  # kill -9 of the whole worker (its main process)
        killed = time.monotonic()
        worker.process.wait(10)
        assert wait_until(lambda: gone(tree), timeout=10), tree
        assert wait_until(lambda: not directory.exists(), timeout=10)
        assert wait_until(lambda: gone([keeper]), timeout=10)
        # Another worker on the queue, once the visibility timeout has passed, gets the task
        # back and runs it from scratch.
        time.sleep(max(0.0, 3.5 - (time.monotonic() - killed)))
        rescuer = start_worker(
            broker, ceiling_file, fleet_dir, "rescuer", concurrency=1, queue="doomed", extra=visible
        )
        result = handle.get(timeout=60)
        assert result.ok and result.stdout == "second\n"
        runs = record.read_text().split()
        assert len(runs) == 4 and int(runs[3]) not in tree
    finally:
        kill_all(tree)
        worker.stop()
        if rescuer is not None:
            rescuer.stop()


def test_a_worker_whose_keeper_is_gone_refuses_tasks_and_stops(
    broker, ceiling_file, fleet_dir, shared
):
    from fleet_helpers import check_gone
    from hardexec.celery import submit
    from hardexec.errors import CgroupError

    marker = shared / "ran"
    for how in (signal.SIGKILL, signal.SIGSTOP):  # gone, or stopped: it would reap nothing
        worker = start_worker(broker, ceiling_file, fleet_dir, "keeperless", queue="kl")
        try:
            keeper = worker.keeper()
            assert keeper is not None
            os.kill(keeper, how)
            with pytest.raises(CgroupError, match="keeper"):
                submit(TaskSpec.command(["touch", str(marker)]), broker=broker, queue="kl").get(60)
            assert not marker.exists()
            # It stops taking tasks it would only refuse: a warm shutdown, on its own.
            assert worker.process.wait(60) == 0
            assert b"this worker stops" in worker.logged()
        finally:
            worker.stop()
        check_gone(worker)


# --- the command line ----------------------------------------------------------------------


def hx(*args, **kwargs):
    return subprocess.run([*HARDEXEC, *args], capture_output=True, text=True, **kwargs)


def test_submit_prints_the_output_and_exits_as_the_program_did(workers, broker, tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('version = 1\n[security]\ndrop_all_caps = true\nkeep_caps = ["CHOWN"]\n')
    script = "grep CapEff /proc/self/status; echo oops >&2; exit 3"
    done = hx("submit", "--broker", broker, "--policy", str(job), "--", "sh", "-c", script)
    assert done.returncode == 3, done.stderr
    assert done.stdout == f"CapEff:\t{mask('CHOWN')}\n"
    assert done.stderr == "oops\n"
    as_json = hx("submit", "--broker", broker, "--json", "--", "sh", "-c", "echo hi")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["stdout"] == "hi\n"


def test_submit_of_a_task_above_the_ceiling_exits_125_saying_why(workers, broker, shared):
    marker = shared / "ran"
    done = hx(
        "submit",
        "--broker",
        broker,
        "--drop-all-caps",
        "--keep-cap",
        "SYS_PTRACE",
        "--",
        "touch",
        str(marker),
    )
    assert done.returncode == 125
    assert "security.keep_caps: SYS_PTRACE" in done.stderr, done.stderr
    assert done.stdout == "" and not marker.exists()


def test_a_worker_without_a_ceiling_refuses_to_start():
    done = hx("worker", "--broker", "redis+socket:///nonexistent/redis.sock")
    assert done.returncode == 125
    assert "no ceiling: give --ceiling FILE and/or --profile NAME" in done.stderr


def test_a_worker_with_a_bad_ceiling_names_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\n[security]\ndrop_all_caps = true\nkeep_caps = ["NET_BIND"]\n')
    done = hx("worker", "--broker", "redis+socket:///nonexistent/redis.sock", "--ceiling", str(bad))
    assert done.returncode == 125
    assert "security.keep_caps[0]: unknown capability 'NET_BIND'" in done.stderr, done.stderr


def test_a_streamed_task_sends_its_lines_as_they_come_within_the_cap(workers, broker, shared):
    from hardexec.celery import submit

    go = shared / "go"
    # The second line waits for the test to have seen the first: it was sent while running.
    script = f"echo first; echo warn >&2; while [ ! -e {go} ]; do sleep 0.05; done; seq 1 3000"
    seen: list[tuple[str, str]] = []

    def on_line(stream: str, text: str) -> None:
        seen.append((stream, text))
        if text == "first":
            go.touch()

    handle = submit(TaskSpec.command(["sh", "-c", script], timeout=60), broker=broker, stream=True)
    result = handle.get(timeout=60, on_line=on_line)
    assert result.ok
    assert seen[:2] == [("stdout", "first"), ("stderr", "warn")] or seen[:2] == [
        ("stderr", "warn"),
        ("stdout", "first"),
    ]
    streamed = "".join(text + "\n" for stream, text in seen if stream == "stdout")
    # Cut at the ceiling's 4096 bytes a stream, as the result is, and said so.
    assert len(streamed.encode()) <= 4096 + 100
    assert streamed.startswith("first\n1\n2\n")
    assert seen[-1] == ("stdout", "[hardexec: streaming of stdout stops at the output cap]")


def test_submit_stream_prints_lines_live_and_exits_as_the_program_did(workers, broker):
    done = hx(
        "submit", "--broker", broker, "--stream", "--", "sh", "-c", "echo a; echo b >&2; exit 4"
    )
    assert done.returncode == 4, done.stderr
    assert done.stdout == "a\n" and done.stderr == "b\n"


# --- what the reviews found ----------------------------------------------------------------------


def test_a_root_ceiling_is_refused_unless_root_tasks_are_allowed():
    done = hx("worker", "--broker", "redis+socket:///nonexistent/redis.sock", "--profile", "strict")
    assert done.returncode == 125
    assert "security.user is not set, so tasks would run as uid 0" in done.stderr
    assert (
        "give --user NAME (or security.user in the --ceiling file), or --allow-root-tasks"
        in done.stderr
    )


def test_a_ceiling_that_says_nothing_of_the_environment_clears_it(broker, fleet_dir, tmp_path):
    from hardexec.celery import submit

    quiet = tmp_path / "quiet.toml"
    quiet.write_text('version = 1\n[security]\nuser = "nobody"\n')
    quiet.chmod(0o644)
    worker = start_worker(
        broker, quiet, fleet_dir, "quiet", concurrency=1, queue="quiet", env={"SECRET": "pw"}
    )
    try:
        spec = TaskSpec.command(["sh", "-c", 'echo "secret=${SECRET:-unset} path=$PATH"'])
        result = submit(spec, broker=broker, queue="quiet").get(timeout=60)
        assert result.stdout == "secret=unset path=/usr/local/bin:/usr/bin:/bin\n"
    finally:
        worker.stop()


def test_a_task_may_not_outlast_the_ceiling_by_holding_its_output(workers, broker):
    from hardexec.celery import submit

    spec = TaskSpec.command(["sh", "-c", "sleep 50 & echo started"], drain_timeout=100)
    with pytest.raises(CeilingError, match="task.drain_timeout: 100 s? ?is above the ceiling's"):
        submit(spec, broker=broker).get(timeout=60)


def test_a_program_that_cannot_start_is_named_with_its_reason(workers, broker):
    from hardexec.celery import submit
    from hardexec.errors import SpawnFailed

    with pytest.raises(SpawnFailed) as failed:
        submit(TaskSpec.command(["/nonexistent/grade"]), broker=broker).get(timeout=60)
    assert "'/nonexistent/grade' could not be started" in str(failed.value)
    assert "/nonexistent/grade" in str(failed.value).split("started:", 1)[1]
    done = hx("submit", "--broker", broker, "--", "/nonexistent/grade")
    assert done.returncode == 127
    assert "'/nonexistent/grade' could not be started" in done.stderr


def test_fail_on_non_zero_raises_task_failed_with_the_result(workers, broker):
    from hardexec.celery import submit
    from hardexec.errors import TaskFailed

    spec = TaskSpec.command(["sh", "-c", "echo why; exit 5"], fail_on_non_zero=True)
    with pytest.raises(TaskFailed) as failed:
        submit(spec, broker=broker).get(timeout=60)
    assert failed.value.result.exit_code == 5 and failed.value.result.stdout == "why\n"
    assert "exited with status 5" in str(failed.value)


def test_submit_prints_the_usage_and_refuses_what_only_a_local_run_means(workers, broker):
    done = hx("submit", "--broker", broker, "--usage", "--", "sh", "-c", "pwd")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "/\n"  # a task that names no cwd starts in /, not the worker's
    assert "hardexec: usage: cpu " in done.stderr
    kept = hx("submit", "--broker", broker, "--keep-leftovers", "--cgroup", "--", "true")
    assert kept.returncode == 125
    assert "--keep-leftovers: a worker ends every task's tree when the task ends" in kept.stderr


def test_an_interrupted_submit_revokes_its_task_and_its_tree_ends(workers, broker, shared):
    record = shared / "pids"
    script = 'echo $$ >> "$1"; sleep 300 & echo $! >> "$1"; wait'
    submitting = subprocess.Popen(
        [*HARDEXEC, "submit", "--broker", broker, "--", "sh", "-c", script, "t", str(record)],
        stderr=subprocess.PIPE,
        text=True,
    )
    tree = pids_in(record, 2)
    try:
        submitting.send_signal(signal.SIGTERM)
        _, err = submitting.communicate(timeout=60)
        assert submitting.returncode == 130
        assert err.startswith("hardexec: submit: interrupted: task ") and "revoked" in err
        assert wait_until(lambda: gone(tree), timeout=10), tree
    finally:
        kill_all(tree)


def test_a_wait_that_runs_out_revokes_the_task(broker, app):
    # No worker reads this queue: the task waits, the wait ends, the task is revoked.
    done = hx("submit", "--broker", broker, "--queue", "nobody-reads", "--wait", "1", "--", "true")
    assert done.returncode == 124
    assert "did not end within --wait 1 s: revoked" in done.stderr
    task_id = done.stderr.split("task ", 1)[1].split()[0]
    assert app.AsyncResult(task_id).state == "REVOKED"


def test_a_broker_url_celery_does_not_know_is_refused_in_a_line():
    for command in (
        ["submit", "--broker", "http://x", "--", "true"],
        ["worker", "--broker", "http://x", "--profile", "strict", "--user", "nobody"],
    ):
        done = hx(*command)
        assert done.returncode == 125
        assert (
            done.stderr
            == "hardexec: --broker: 'http' is not a broker Celery knows (redis, rediss)\n"
        )
