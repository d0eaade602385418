"""The runner's edges that reviews found: slots, cancels that must not be swallowed, sinks that
misbehave, consumers that lag. Each checks what the caller observes."""

import asyncio
import contextlib
import logging
import time

import pytest

from hardexec import Runner, TaskFailed, TaskSpec
from helpers import process_gone


def test_a_failing_task_in_map_gives_every_slot_back():
    runner = Runner(concurrency=1)
    specs = [TaskSpec.command(["false"], fail_on_non_zero=True)]
    specs += [TaskSpec.command(["true"]) for _ in range(3)]

    async def main():
        with pytest.raises(TaskFailed):
            await runner.map(specs)
        # The runner still runs tasks: the slot the cancelled waiters took came back.
        return await asyncio.wait_for(runner.run(TaskSpec.command(["true"])), 20)

    assert asyncio.run(main()).ok


def test_a_cancel_that_lands_as_run_finishes_is_not_swallowed():
    # The sink cancels the caller's own task on the exit event: run() must raise, not return.
    holder = {}

    async def sink(event):
        if event.kind == "exit":
            holder["task"].cancel()

    runner = Runner(sink=sink)

    async def main():
        holder["task"] = asyncio.ensure_future(runner.run(TaskSpec.command(["true"])))
        with pytest.raises(asyncio.CancelledError):
            await holder["task"]

    asyncio.run(main())


def test_an_async_sink_raising_cancelled_error_is_its_own_bug():
    seen = []

    async def sink(event):
        seen.append(event.kind)
        if event.kind == "line":
            raise asyncio.CancelledError

    runner = Runner(sink=sink)
    spec = TaskSpec.command(["sh", "-c", "echo a; echo b"], timeout=30)
    result = asyncio.run(asyncio.wait_for(runner.run(spec), 20))
    assert result.ok and result.stdout == "a\nb\n"
    assert seen == ["start", "line", "line", "exit"]


def test_a_cancelled_run_does_not_wait_for_a_stuck_sink():
    async def sink(event):
        if event.kind == "line":
            await asyncio.sleep(3600)

    runner = Runner(sink=sink)

    async def main():
        task = asyncio.ensure_future(runner.run(TaskSpec.command(["sh", "-c", "echo x; sleep 30"])))
        await asyncio.sleep(0.5)
        task.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)
        return time.monotonic() - started

    assert asyncio.run(main()) < 15


def test_a_slow_consumer_loses_nothing_even_past_the_timeout():
    # The program ends in time (its last lines wait in the pipe); then the consumer is slow,
    # past the task's timeout and its drain bound. Every line arrives, nothing is counted as
    # lost, no false warning.
    async def main():
        runner = Runner()
        lines = 0
        spec = TaskSpec.command(["seq", "1", "200000"], timeout=2.5, drain_timeout=0.5)
        async for event in runner.stream(spec):
            if event.kind == "line":
                lines += 1
                if lines == 199_000:  # the program is done by now: its tail fits a pipe
                    await asyncio.sleep(3)
            elif event.kind == "exit":
                return lines, event.result

    lines, result = asyncio.run(main())
    assert lines == 200000
    assert result.ok and not result.timed_out and not result.truncated
    assert result.warnings == ()


def test_leaving_a_stream_early_ends_the_tree_at_once_though_its_pipes_are_paused():
    async def main():
        runner = Runner()
        spec = TaskSpec.command(["yes"], kill_after=10)
        pid = None
        async with contextlib.aclosing(runner.stream(spec)) as events:
            async for event in events:
                if event.kind == "start":
                    pid = event.pid
                elif event.kind == "line" and event.number == 10:
                    await asyncio.sleep(0.3)  # the pipes pause meanwhile
                    break
        started = time.monotonic()
        return pid, started

    pid, left = asyncio.run(main())
    assert process_gone(pid)
    assert time.monotonic() - left < 5  # not the 10 s grace: yes died of the SIGTERM


def test_a_raising_log_filter_loses_no_line():
    class Boom(logging.Filter):
        def filter(self, record):
            if "boom" in record.getMessage():
                raise RuntimeError("a filter's bug")
            return True

    log = logging.getLogger("hardexec.runner")
    log.setLevel(logging.INFO)
    boom = Boom()
    log.addFilter(boom)
    seen = []
    try:
        runner = Runner(sink=lambda event: seen.append(event.text) if event.kind == "line" else 0)
        spec = TaskSpec.command(["sh", "-c", "echo a; echo boom; echo c"])
        result = asyncio.run(runner.run(spec))
    finally:
        log.removeFilter(boom)
        log.setLevel(logging.NOTSET)
    assert seen == ["a", "boom", "c"]
    assert result.stdout == "a\nboom\nc\n"


def test_a_sink_that_returns_a_coroutine_without_being_one_is_said(caplog):
    async def store(event):
        pass

    runner = Runner(sink=lambda event: store(event))  # noqa: PLW0108  (a lambda: not async)
    with caplog.at_level(logging.ERROR, logger="hardexec.runner"):
        result = asyncio.run(runner.run(TaskSpec.command(["true"])))
    assert result.ok
    assert "make it 'async def'" in caplog.text
