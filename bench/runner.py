#!/usr/bin/env python3
"""The task Runner against plain asyncio: task throughput, output throughput, memory.

Run as root: ``.venv/bin/python bench/runner.py`` (``--quick`` for a smaller run, the smoke
test's). Three figures, measured in one run, each printed beside its target:

* throughput: 2000 ``/bin/true`` tasks through
  ``Runner(policy=drop_all_caps + no_new_privs, concurrency=32).map(...)``, against a plain
  ``asyncio.create_subprocess_exec("/bin/true")`` loop bounded by ``asyncio.Semaphore(32)``
  that waits for each (no policy, no pipes). Tasks per second; target hardexec/plain >= 0.6.
* output throughput: one task printing 200 MB of 80-byte lines through the Runner (stdout
  and stderr piped, split into lines, kept within ``OutputLimits(max_bytes=1 MiB)``; lines
  reach the ``hardexec.runner`` logger only if logging is configured to show them, which
  here it is not, as by default), against ``create_subprocess_exec(stdout=PIPE)`` and
  ``while line := await proc.stdout.readline(): count += 1``. Both run the same generator:
  this interpreter (``-I -S``) writing a pre-built block of 1024 lines with big writes, so its
  own cost is small and the same on both sides. MB/s (10^6 bytes, spawn to reaping); target
  hardexec/plain >= 0.8.
* memory: one task printing 1 GB through the Runner at ``OutputLimits(max_bytes=1 MiB)``:
  this process's peak RSS growth, from VmRSS before to VmHWM after, the high-water mark reset
  first by writing 5 to ``/proc/self/clear_refs`` (checked to work at start; where it does not,
  a thread samples VmRSS every 10 ms instead). It runs first, after the warm-up, with glibc's
  free heap trimmed, so memory that earlier runs freed (and malloc kept) cannot hide growth.
  Target < 20 MB.

The two throughput comparisons alternate hardexec and plain round by round (which goes first
swaps every round) so drift in machine load hits both alike; each figure is the median over
rounds, and the rounds themselves are printed. Every run is checked (exit 0, every line
counted or accounted for as kept or dropped), so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import os
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable

from hardexec import Policy, SecurityConfig
from hardexec.runner import OutputLimits, Runner, TaskSpec
from hardexec.stage import NATIVE_STAGE, stage_command

TRUE = "/bin/true"
POLICY = Policy(security=SecurityConfig(drop_all_caps=True, no_new_privs=True))
CONCURRENCY = 32
MAX_BYTES = 1 << 20
MB = 10**6
LINE_BYTES = 80
TARGET_TASKS = 0.6  # hardexec / plain, tasks/s, at least
TARGET_OUTPUT = 0.8  # hardexec / plain, MB/s, at least
TARGET_GROWTH = 20.0  # MB of peak RSS growth, less than

# The generator: argv[1] bytes of 80-byte lines, in writes of 1024 lines (80 KiB).
GENERATOR = """\
import sys
line = (b"0123456789abcdef" * 5)[:79] + b"\\n"
block, out = line * 1024, sys.stdout.buffer
blocks, rest = divmod(int(sys.argv[1]) // len(line), 1024)
for _ in range(blocks):
    out.write(block)
out.write(line * rest)
out.flush()
"""


def generator(total: int) -> list[str]:
    """The argv printing ``total`` bytes (a multiple of 80) of lines."""
    return [sys.executable, "-I", "-S", "-c", GENERATOR, str(total)]


# --- throughput ------------------------------------------------------------------------------


async def plain_true(tasks: int) -> float:
    """Tasks/s of a Semaphore-bounded ``create_subprocess_exec`` loop, each waited for."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one() -> int:
        async with slots:
            proc = await asyncio.create_subprocess_exec(TRUE)
            return await proc.wait()

    start = time.perf_counter()
    codes = await asyncio.gather(*(one() for _ in range(tasks)))
    elapsed = time.perf_counter() - start
    if any(codes):
        sys.exit(f"bench/runner.py: plain /bin/true failed: {sorted(set(codes))}")
    return tasks / elapsed


async def runner_true(runner: Runner, tasks: int) -> float:
    """Tasks/s of ``runner.map`` over ``tasks`` hardened ``/bin/true`` tasks."""
    specs = [TaskSpec.command([TRUE])] * tasks
    start = time.perf_counter()
    results = await runner.map(specs)
    elapsed = time.perf_counter() - start
    failed = [r for r in results if isinstance(r, BaseException) or not r.ok]
    if failed:
        sys.exit(f"bench/runner.py: {len(failed)} hardened /bin/true failed: {failed[0]!r}")
    return tasks / elapsed


# --- output ----------------------------------------------------------------------------------


async def plain_output(total: int) -> float:
    """MB/s of a plain ``readline`` loop over the generator's stdout."""
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*generator(total), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    count = 0
    while await proc.stdout.readline():
        count += 1
    code = await proc.wait()
    elapsed = time.perf_counter() - start
    if code != 0 or count != total // LINE_BYTES:
        sys.exit(f"bench/runner.py: plain generator: status {code}, {count} lines")
    return total / MB / elapsed


async def runner_output(runner: Runner, total: int) -> float:
    """MB/s of one Runner task running the generator (its output capped in memory)."""
    start = time.perf_counter()
    result = await runner.run(TaskSpec.command(generator(total)))
    elapsed = time.perf_counter() - start
    check_output(result, total)
    return total / MB / elapsed


def check_output(result: object, total: int) -> None:
    """Every byte and line of stdout kept or counted as dropped, within the cap."""
    kept = result.stdout  # type: ignore[attr-defined]
    cut = result.truncated  # type: ignore[attr-defined]
    lines = kept.count("\n") + cut.stdout_lines
    if not (
        result.ok  # type: ignore[attr-defined]
        and len(kept) + cut.stdout_bytes == total
        and lines == total // LINE_BYTES
        and len(kept) <= MAX_BYTES
    ):
        sys.exit(
            f"bench/runner.py: runner generator: {result!r} "
            f"(kept {len(kept)} bytes, dropped {cut.stdout_bytes}, {lines} lines)"
        )


# --- memory ----------------------------------------------------------------------------------


def vm_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB."""
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
    return found


def reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def hwm_resets() -> bool:
    """Whether writing 5 to clear_refs resets VmHWM here: touch 64 MiB, free it, reset."""
    try:
        block = bytearray(64 << 20)
        block[:: os.sysconf("SC_PAGE_SIZE")] = b"\x01" * len(range(0, len(block), 4096))
        del block
        high = vm_status()["VmHWM"]
        reset_hwm()
        return vm_status()["VmHWM"] < high - (32 << 10)
    except OSError:
        return False


class RssSampler:
    """The largest VmRSS seen by a thread reading it every 10 ms (where VmHWM cannot reset)."""

    def __init__(self) -> None:
        self.peak = vm_status()["VmRSS"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, vm_status()["VmRSS"])

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, vm_status()["VmRSS"])


def release_free_memory() -> None:
    """Garbage collected, and glibc's free heap returned to the system (the baseline is tight:
    memory freed by earlier runs and kept by malloc would hide growth)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(None).malloc_trim(0)


async def memory_growth(
    runner: Runner, total: int, use_hwm: bool
) -> tuple[float, float, float, float]:
    """While one task prints ``total`` bytes: this process's RSS before and at its peak, their
    difference (MB), and the task's MB/s."""
    release_free_memory()
    if use_hwm:
        reset_hwm()
        before = vm_status()["VmRSS"]
        speed = await runner_output(runner, total)
        peak = vm_status()["VmHWM"]
    else:
        before = vm_status()["VmRSS"]
        with RssSampler() as sampler:
            speed = await runner_output(runner, total)
        peak = sampler.peak
    before_mb, peak_mb = before * 1024 / MB, peak * 1024 / MB
    return before_mb, peak_mb, peak_mb - before_mb, speed


# --- the run ---------------------------------------------------------------------------------


async def alternate(
    rounds: int, variants: dict[str, Callable[[], Awaitable[float]]]
) -> dict[str, list[float]]:
    """Every variant once per round, the order swapped every round."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for _ in range(rounds):
        for name in order:
            samples[name].append(await variants[name]())
        order.reverse()
    return samples


def stage_text() -> str:
    chosen = os.environ.get("HARDEXEC_STAGE", "auto") or "auto"
    command = stage_command()
    kind = "native" if command[0] == NATIVE_STAGE else "python twin"
    return f"{kind} ({command[-1]}; HARDEXEC_STAGE={chosen})"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


async def bench(args: argparse.Namespace) -> None:
    use_hwm = hwm_resets()
    tasks_runner = Runner(policy=POLICY, concurrency=CONCURRENCY)
    output_runner = Runner(policy=POLICY, output=OutputLimits(max_bytes=MAX_BYTES), concurrency=1)
    output_bytes = args.output_mb * MB // LINE_BYTES * LINE_BYTES
    memory_bytes = args.memory_mb * MB // LINE_BYTES * LINE_BYTES

    # Warm up: binaries paged in, lazy imports done, both sides once.
    await plain_true(CONCURRENCY)
    await runner_true(tasks_runner, CONCURRENCY)
    await plain_output(MB // LINE_BYTES * LINE_BYTES)
    await runner_output(output_runner, MB // LINE_BYTES * LINE_BYTES)

    # First, before the heavier runs leave their freed memory in the heap.
    rss, peak, growth, memory_speed = await memory_growth(output_runner, memory_bytes, use_hwm)
    tasks = await alternate(
        args.rounds,
        {
            "hardexec": lambda: runner_true(tasks_runner, args.tasks),
            "plain": lambda: plain_true(args.tasks),
        },
    )
    output = await alternate(
        args.rounds,
        {
            "hardexec": lambda: runner_output(output_runner, output_bytes),
            "plain": lambda: plain_output(output_bytes),
        },
    )

    def row(label: str, values: list[float], unit: str) -> None:
        shown = " ".join(f"{v:.0f}" if v >= 100 else f"{v:.1f}" for v in values)
        print(f"  {label:<26}{statistics.median(values):>10.1f} {unit:<8} rounds: {shown}")

    print()
    print(f"throughput: {args.tasks} /bin/true tasks at concurrency {CONCURRENCY}")
    row("plain asyncio + Semaphore", tasks["plain"], "tasks/s")
    row("hardexec Runner.map", tasks["hardexec"], "tasks/s")
    print(f"output: one task, {args.output_mb} MB of {LINE_BYTES}-byte lines")
    row("plain readline loop", output["plain"], "MB/s")
    row("hardexec Runner.run", output["hardexec"], "MB/s")
    how = "VmHWM reset by clear_refs" if use_hwm else "VmRSS sampled every 10 ms"
    print(f"memory: one task, {args.memory_mb} MB of output, max_bytes={MAX_BYTES >> 20} MiB")
    print(f"  {'peak RSS growth':<26}{growth:>10.1f} MB       {rss:.1f} -> {peak:.1f} MB ({how})")
    print(f"  {'(its output speed)':<26}{memory_speed:>10.1f} MB/s")

    task_ratio = statistics.median(tasks["hardexec"]) / statistics.median(tasks["plain"])
    output_ratio = statistics.median(output["hardexec"]) / statistics.median(output["plain"])
    print()
    rows = [
        ("hardexec / plain, tasks/s", f"{task_ratio:.2f}", f">= {TARGET_TASKS}",
         task_ratio >= TARGET_TASKS),
        ("hardexec / plain, output MB/s", f"{output_ratio:.2f}", f">= {TARGET_OUTPUT}",
         output_ratio >= TARGET_OUTPUT),
        (f"peak RSS growth, {args.memory_mb} MB output", f"{growth:.1f} MB",
         f"< {TARGET_GROWTH:.0f} MB", growth < TARGET_GROWTH),
    ]  # fmt: skip
    for label, value, target, ok in rows:
        print(f"{label:<38}{value:>10}   target {target:<9}{verdict(ok)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="200 tasks, 20 MB, 100 MB (smoke test)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (default 3)")
    parser.add_argument("--tasks", type=int, help="/bin/true tasks per round (default 2000)")
    parser.add_argument("--output-mb", type=int, help="MB printed per output round (200)")
    parser.add_argument("--memory-mb", type=int, help="MB printed in the memory run (1000)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/runner.py: run as root (capability drops need it)", file=sys.stderr)
        return 2
    small, full = (200, 20, 100), (2000, 200, 1000)
    defaults = small if args.quick else full
    args.tasks = args.tasks or defaults[0]
    args.output_mb = args.output_mb or defaults[1]
    args.memory_mb = args.memory_mb or defaults[2]
    if min(args.rounds, args.tasks, args.output_mb, args.memory_mb) < 1:
        parser.error("--rounds, --tasks, --output-mb and --memory-mb must be positive")

    machine = os.uname()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, ", end="")
    print(f"{machine.sysname} {machine.release} {machine.machine}, load {load}")
    print(f"exec stage: {stage_text()}")
    print(f"rounds {args.rounds} of each, interleaved; figures are medians")
    asyncio.run(bench(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
