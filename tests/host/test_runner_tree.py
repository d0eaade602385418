"""The Runner ends whole trees: output held open past the drain bound, leftovers of a program
that exited, timeouts, cancellation of the awaiting task and Runner.cancel.

Every pid checked here is one the test's own program reported; a process is dead when /proc
no longer has it or shows it a zombie (killed orphans wait for init to reap them). Processes a
test expects to escape (a setsid'd one without a cgroup) are killed by pid in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import pytest

from hardexec import CgroupLimits, Policy, cgroups
from hardexec.runner import Runner, TaskSpec
from helpers import (
    children,
    kill_if_alive,
    open_fds,
    parse_status,
    process_gone,
    wait_until,
)

CGROUP = Policy(cgroups=CgroupLimits())
NO_CGROUP = Policy()
POLICIES = pytest.mark.parametrize("policy", [CGROUP, NO_CGROUP], ids=["cgroup", "no-cgroup"])


def state(pid: int) -> str:
    """The process's state letter, or "gone"."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


# --- a three-generation tree -----------------------------------------------------------------
# program.sh starts child.sh, which starts grandchild.sh (setsid'd: a session and process group
# of its own); child and grandchild ignore SIGTERM. Each writes its pid to a file (the
# grandchild its session too); the program prints "ready" once both have, then sleeps.

GRANDCHILD = """\
trap '' TERM
set -- $(cat /proc/$$/stat)
echo "$$ $6" > grandchild.pid
exec sleep 30 {redirect}
"""
CHILD = """\
{launch} sh grandchild.sh &
echo "$$" > child.pid
trap '' TERM
exec sleep 30
"""
PROGRAM = """\
sh child.sh &
while [ ! -s child.pid ] || [ ! -s grandchild.pid ]; do sleep 0.01; done
echo ready
exec sleep 30
"""


def write_tree(folder, *, setsid: bool, grandchild_holds_output: bool = True) -> None:
    redirect = "" if grandchild_holds_output else ">/dev/null 2>&1"
    (folder / "grandchild.sh").write_text(GRANDCHILD.format(redirect=redirect))
    (folder / "child.sh").write_text(CHILD.format(launch="setsid" if setsid else ""))
    (folder / "program.sh").write_text(PROGRAM)


def tree_pids(folder, program: int | None) -> dict[str, int]:
    """The tree's pids (those written so far), and the grandchild's session under "session"."""
    pids = {"program": program or 0, "child": 0, "grandchild": 0, "session": 0}
    with contextlib.suppress(OSError, ValueError):
        pids["child"] = int((folder / "child.pid").read_text())
    with contextlib.suppress(OSError, ValueError):
        grandchild, session = (folder / "grandchild.pid").read_text().split()
        pids["grandchild"], pids["session"] = int(grandchild), int(session)
    return pids


def ready_sink():
    """A sync sink recording line texts, and an event set when a line "ready" arrives."""
    lines: list[str] = []
    ready = asyncio.Event()
    starts: list[int] = []

    def sink(event) -> None:
        if event.kind == "start":
            starts.append(event.pid)
        elif event.kind == "line":
            lines.append(event.text)
            if event.text == "ready":
                ready.set()

    return sink, lines, ready, starts


# --- output held open; leftovers -------------------------------------------------------------


@POLICIES
def test_output_held_open_is_bounded_by_drain_timeout_and_its_holder_dies(policy):
    spec = TaskSpec.command(["sh", "-c", "sleep 30 & echo $!; exit 0"], drain_timeout=1)
    started = time.monotonic()
    result = asyncio.run(Runner(policy=policy).run(spec))
    elapsed = time.monotonic() - started
    sleeper = int(result.stdout)
    try:
        assert process_gone(sleeper), f"the sleeper {sleeper} outlived run(): {state(sleeper)}"
        assert elapsed < 15, f"run() took {elapsed:.1f} s: it waited for the sleeper"
        assert result.exit_code == 0 and result.ok and not result.timed_out
        assert any("output stayed open 1 s" in w for w in result.warnings), result.warnings
    finally:
        kill_if_alive([sleeper])


@POLICIES
def test_a_leftover_is_killed_even_when_output_closes_in_time(policy):
    script = "sleep 30 >/dev/null 2>&1 </dev/null & echo $!"
    spec = TaskSpec.command(["sh", "-c", script], drain_timeout=30)
    started = time.monotonic()
    result = asyncio.run(Runner(policy=policy).run(spec))
    elapsed = time.monotonic() - started
    sleeper = int(result.stdout)
    try:
        assert process_gone(sleeper), f"the sleeper {sleeper} outlived run(): {state(sleeper)}"
        assert elapsed < 15  # no drain wait: the output closed when sh exited
        assert result.ok
        assert not any("output stayed open" in w for w in result.warnings)
        if policy.cgroups is not None:  # the group can tell that something was left
            assert "processes the program left running were killed" in result.warnings
    finally:
        kill_if_alive([sleeper])


# --- timeouts --------------------------------------------------------------------------------


def test_a_timeout_kills_three_generations_with_a_cgroup(tmp_path):
    write_tree(tmp_path, setsid=True)
    sink, _, _, starts = ready_sink()
    runner = Runner(policy=CGROUP, sink=sink)
    spec = TaskSpec.command(["sh", "program.sh"], cwd=tmp_path, timeout=4, kill_after=1)
    started = time.monotonic()
    result = asyncio.run(runner.run(spec))
    elapsed = time.monotonic() - started
    pids = tree_pids(tmp_path, result.pid)
    try:
        assert result.stdout == "ready\n", result.stderr
        assert starts == [result.pid]
        assert pids["session"] == pids["grandchild"]  # it did leave the program's session
        assert result.timed_out and result.outcome == "timeout" and not result.ok
        assert result.signal == signal.SIGTERM and result.exit_code is None
        for role in ("program", "child", "grandchild"):
            assert process_gone(pids[role]), f"{role} {pids[role]}: {state(pids[role])}"
        assert elapsed < 25  # the 30 s sleeps did not run out
        assert runner.metrics.count("hardexec", "timeout") == 1
    finally:
        kill_if_alive([pids["program"], pids["child"], pids["grandchild"]])


def test_a_timeout_without_a_cgroup_kills_the_process_group(tmp_path):
    """Without a cgroup the runner reaches the program's process group: the program and its
    child die; a setsid'd grandchild has left the group (and escapes: killed here)."""
    write_tree(tmp_path, setsid=True, grandchild_holds_output=False)
    spec = TaskSpec.command(["sh", "program.sh"], cwd=tmp_path, timeout=4, kill_after=1)
    started = time.monotonic()
    result = asyncio.run(Runner(policy=NO_CGROUP).run(spec))
    elapsed = time.monotonic() - started
    pids = tree_pids(tmp_path, result.pid)
    try:
        assert result.stdout == "ready\n", result.stderr
        assert result.timed_out and result.outcome == "timeout"
        assert result.signal == signal.SIGTERM
        assert pids["session"] == pids["grandchild"]
        for role in ("program", "child"):
            assert process_gone(pids[role]), f"{role} {pids[role]}: {state(pids[role])}"
        assert elapsed < 25
    finally:
        kill_if_alive([pids["program"], pids["child"], pids["grandchild"]])


def test_output_held_by_an_escaped_process_is_closed_when_run_returns(tmp_path):
    write_tree(tmp_path, setsid=True, grandchild_holds_output=True)
    spec = TaskSpec.command(
        ["sh", "program.sh"], cwd=tmp_path, timeout=4, kill_after=1, drain_timeout=1
    )
    fds_before = open_fds()
    result = asyncio.run(Runner(policy=NO_CGROUP).run(spec))
    fds_after = open_fds()
    pids = tree_pids(tmp_path, result.pid)
    try:
        assert result.stdout == "ready\n" and result.timed_out
        assert process_gone(pids["program"]) and process_gone(pids["child"])
        assert not process_gone(pids["grandchild"])  # it escaped, and it holds the output open
        assert fds_after - fds_before == set(), "the runner left the task's pipes open"
        assert any("output stayed open" in w for w in result.warnings), result.warnings
    finally:
        kill_if_alive([pids["program"], pids["child"], pids["grandchild"]])


def test_a_timeout_without_a_cgroup_kills_every_process_group_member(tmp_path):
    write_tree(tmp_path, setsid=False)
    spec = TaskSpec.command(["sh", "program.sh"], cwd=tmp_path, timeout=4, kill_after=1)
    result = asyncio.run(Runner(policy=NO_CGROUP).run(spec))
    pids = tree_pids(tmp_path, result.pid)
    try:
        assert result.stdout == "ready\n" and result.timed_out
        assert pids["session"] != pids["grandchild"]
        for role in ("program", "child", "grandchild"):
            assert process_gone(pids[role]), f"{role} {pids[role]}: {state(pids[role])}"
    finally:
        kill_if_alive([pids["program"], pids["child"], pids["grandchild"]])


# --- cancelling the awaiting task ------------------------------------------------------------


@POLICIES
def test_cancelling_the_task_returns_with_the_tree_dead(policy, tmp_path):
    # with a cgroup even a setsid'd grandchild is reached; without one, the process group is
    write_tree(tmp_path, setsid=policy.cgroups is not None)
    sink, _, ready, starts = ready_sink()
    runner = Runner(policy=policy, sink=sink)
    spec = TaskSpec.command(["sh", "program.sh"], cwd=tmp_path, kill_after=1)
    seen: dict[str, int] = {}

    async def main():
        task = asyncio.ensure_future(runner.run(spec))
        await asyncio.wait_for(ready.wait(), 20)
        seen.update(tree_pids(tmp_path, starts[0]))
        assert all(not process_gone(seen[role]) for role in ("program", "child", "grandchild"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the awaited cancellation has returned: nothing of the tree may be left
        return {role: state(seen[role]) for role in ("program", "child", "grandchild")}

    try:
        states = asyncio.run(main())
        assert all(s in ("gone", "Z", "X") for s in states.values()), states
        assert state(seen["program"]) == "gone"  # reaped, not left a zombie of ours
        assert runner.metrics.count("hardexec", "cancelled") == 1
    finally:
        kill_if_alive([seen.get("program"), seen.get("child"), seen.get("grandchild")])


TERM_LOGGER = "trap 'echo term' TERM; echo ready; while :; do sleep 0.1; done"


@POLICIES
def test_a_cancel_gives_a_term_ignoring_task_its_grace_then_kills_it(policy):
    sink, lines, ready, starts = ready_sink()
    runner = Runner(policy=policy, sink=sink)
    spec = TaskSpec.command(["sh", "-c", TERM_LOGGER], kill_after=1)

    async def main():
        task = asyncio.ensure_future(runner.run(spec))
        await asyncio.wait_for(ready.wait(), 20)
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - cancelled_at, state(starts[0])

    took, program = asyncio.run(main())
    assert program == "gone"
    assert "term" in lines  # SIGTERM came first, and the program outlived it
    assert 0.8 <= took < 20, f"the cancel took {took:.2f} s for a grace of 1 s"


@POLICIES
def test_a_second_cancel_cuts_the_grace_short(policy):
    sink, lines, ready, starts = ready_sink()
    runner = Runner(policy=policy, sink=sink)
    spec = TaskSpec.command(["sh", "-c", TERM_LOGGER], kill_after=60)

    async def main():
        task = asyncio.ensure_future(runner.run(spec))
        await asyncio.wait_for(ready.wait(), 20)
        cancelled_at = time.monotonic()
        task.cancel()
        while "term" not in lines:  # the program has its SIGTERM: the 60 s grace is running
            assert not task.done()
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - cancelled_at, state(starts[0])

    took, program = asyncio.run(main())
    assert program == "gone"
    assert took < 30, f"the second cancel did not cut the 60 s grace ({took:.1f} s)"


def killed(pid: int) -> bool:
    """Dead, or SIGKILL pending (it will never run again; on a busy machine the kernel may
    take a moment to finish its exit)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = parse_status(f.read())
    except FileNotFoundError:
        return True
    pending = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
    return status["State"][0] in "ZX" or bool(pending & (1 << (signal.SIGKILL - 1)))


@POLICIES
def test_a_cancel_at_any_point_leaves_nothing(policy, tmp_path):
    """Cancelled after 0, 1, 2, ... turns of the loop (before the spawn, while the stage
    reports, while it runs) and last right at the start event (the program spawned, its
    pipes not yet connected): every time, once the cancel returns, the program is reaped,
    what it started is killed, and no fd (pipe, pidfd, script memfd) is left."""
    starts: list[int] = []
    tasks: list[asyncio.Future] = []
    at_start = {"cancel": False}

    def sink(event):
        if event.kind == "start":
            starts.append(event.pid)
            if at_start["cancel"]:
                tasks[-1].cancel()

    runner = Runner(policy=policy, sink=sink)
    background = tmp_path / "background"
    spec = TaskSpec.script("sh", "sleep 30 & echo $! >> background; exec sleep 30", cwd=tmp_path)

    def background_pids() -> list[int]:
        return [int(pid) for pid in background.read_text().split()] if background.exists() else []

    async def main():
        outcomes = []
        for turns in [*range(30), 50, 100, 200, "start"]:
            fds = open_fds()
            at_start["cancel"] = turns == "start"
            tasks.append(asyncio.ensure_future(runner.run(spec)))
            if turns == "start":
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(tasks[-1]), 20)
            else:
                for _ in range(turns):
                    await asyncio.sleep(0)
                tasks[-1].cancel()
            try:
                await tasks[-1]
                outcomes.append("finished")
            except asyncio.CancelledError:
                outcomes.append("cancelled")
            assert children() == [], turns
            assert all(state(pid) == "gone" for pid in starts), turns
            assert all(killed(pid) for pid in background_pids()), turns
            # A cancel while the stage reports leaves the killed group's removal to the
            # janitor (it watches cgroup.events until the group empties): wait for it.
            assert wait_until(lambda: not cgroups.pending_removal(), timeout=10), turns
            assert open_fds() - fds == set(), turns
        return outcomes

    try:
        assert asyncio.run(main()) == ["cancelled"] * 34
    finally:
        kill_if_alive(background_pids())
    assert starts  # the last cancel, at least, came once the program ran
    # every task is counted once, as cancelled (one cancelled before it first ran may not be)
    assert 33 <= runner.metrics.count("hardexec", "cancelled") <= 34


# --- Runner.cancel -----------------------------------------------------------------------------


@POLICIES
def test_runner_cancel_ends_the_named_task_only(policy, tmp_path):
    sink, lines, _, _ = ready_sink()
    runner = Runner(policy=policy, sink=sink)
    victim = TaskSpec.command(
        ["sh", "-c", "sleep 30 & echo $!; echo ready; exec sleep 30"], name="victim"
    )
    go = tmp_path / "go"
    bystander = TaskSpec.command(
        ["sh", "-c", f"echo waiting; while [ ! -e {go} ]; do sleep 0.01; done; echo done"],
        name="bystander",
        timeout=30,
    )

    async def main():
        tasks = [asyncio.ensure_future(runner.run(s)) for s in (victim, bystander)]
        while not ({"ready", "waiting"} <= set(lines)):
            await asyncio.sleep(0.01)
        assert runner.cancel("nobody") == 0
        told = runner.cancel("victim")
        go.touch()
        return told, await asyncio.gather(*tasks)

    told, (cancelled, other) = asyncio.run(main())
    background = int(cancelled.stdout.split()[0])
    try:
        assert told == 1
        assert cancelled.cancelled and cancelled.outcome == "cancelled" and not cancelled.ok
        assert not cancelled.timed_out and cancelled.signal == signal.SIGTERM
        assert cancelled.stdout == f"{background}\nready\n"
        assert "cancelled" in cancelled.describe()
        assert process_gone(cancelled.pid) and process_gone(background)
        assert other.ok and not other.cancelled and other.stdout == "waiting\ndone\n"
        assert runner.metrics.count("hardexec", "cancelled") == 1
        assert runner.metrics.count("hardexec", "success") == 1
    finally:
        kill_if_alive([background])


def test_runner_cancel_reaches_tasks_waiting_for_a_slot(tmp_path):
    sink, lines, _, starts = ready_sink()
    runner = Runner(sink=sink, concurrency=2)
    ran = tmp_path / "ran"
    specs = [
        TaskSpec.command(["sh", "-c", f"echo ready; echo x >> {ran}; exec sleep 30"])
        for _ in range(6)
    ]

    async def main():
        pending = asyncio.ensure_future(runner.map(specs))
        while lines.count("ready") < 2:
            await asyncio.sleep(0.01)
        return runner.cancel(), await pending

    told, results = asyncio.run(main())
    assert told == 6  # the two running and the four waiting for a slot
    assert [r.outcome for r in results] == ["cancelled"] * 6
    assert len(starts) == 2 and ran.read_text() == "x\nx\n"  # the waiting ones never ran
    assert sorted(r.attempts for r in results) == [0, 0, 0, 0, 1, 1]
    assert sorted(r.pid for r in results if r.attempts == 1) == sorted(starts)
    assert all(process_gone(pid) for pid in starts)


def test_runner_cancel_ends_a_task_between_attempts(tmp_path):
    sink, lines, _, starts = ready_sink()
    runner = Runner(sink=sink)
    spec = TaskSpec.command(
        ["sh", "-c", "echo ready; exit 1"],
        name="flaky",
        retries=5,
        backoff=30,
        fail_on_non_zero=True,
    )

    async def main():
        task = asyncio.ensure_future(runner.run(spec))
        while "ready" not in lines or not process_gone(starts[0]):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # in its 30 s backoff now
        started = time.monotonic()
        told = runner.cancel("flaky")
        result = await task  # cancelled: returned, not raised as TaskFailed
        return told, result, time.monotonic() - started

    told, result, took = asyncio.run(main())
    assert told == 1 and took < 20  # the 30 s backoff was cut short
    assert len(starts) == 1  # no further attempt was made
    assert result.cancelled and result.outcome == "cancelled"
    assert result.attempts == 1 and result.exit_code == 1 and result.stdout == "ready\n"
    assert runner.metrics.count("hardexec", "cancelled") == 1


def test_runner_cancel_without_a_name_ends_every_running_task():
    sink, lines, _, _ = ready_sink()
    runner = Runner(sink=sink, concurrency=4)
    specs = [TaskSpec.command(["sh", "-c", "echo ready; exec sleep 30"]) for _ in range(3)]

    async def main():
        pending = asyncio.ensure_future(runner.map(specs))
        while lines.count("ready") < 3:
            await asyncio.sleep(0.01)
        return runner.cancel(), await pending

    told, results = asyncio.run(main())
    assert told == 3
    assert [r.outcome for r in results] == ["cancelled"] * 3
    assert all(process_gone(r.pid) for r in results)
