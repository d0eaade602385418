"""A task that floods output cannot make the runner hold more than its caps: measured.

The figure is this process's peak resident memory (VmHWM), reset just before the task by
writing 5 to /proc/self/clear_refs. Memory, unlike time, does not depend on how busy the
machine is, so a bound here is a fair test.
"""

import asyncio
import gc
import sys

import pytest

from hardexec import OutputLimits, Runner, TaskSpec

GIB = 1 << 30
LINE = b"x" * 79 + b"\n"
BLOCK_LINES = (1 << 20) // len(LINE)  # about 1 MiB a write
BLOCKS = GIB // (BLOCK_LINES * len(LINE))
TOTAL = BLOCKS * BLOCK_LINES * len(LINE)  # just under 1 GiB of 80-byte lines
FLOOD = (  # by a Python that imports nothing of ours
    "import sys\n"
    f"block = {LINE!r} * {BLOCK_LINES}\n"
    "out = sys.stdout.buffer\n"
    f"for _ in range({BLOCKS}):\n"
    "    out.write(block)\n"
)


def _peak_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def test_a_gigabyte_of_output_at_a_one_megabyte_cap_keeps_memory_flat():
    runner = Runner(output=OutputLimits(max_bytes=1 << 20, keep="both"))
    spec = TaskSpec.command([sys.executable, "-I", "-S", "-c", FLOOD], timeout=300)
    asyncio.run(runner.run(TaskSpec.command(["true"])))  # the loop's own first-use costs
    gc.collect()
    if not _reset_peak():
        pytest.skip("this kernel cannot reset VmHWM (/proc/self/clear_refs), so no peak to read")
    before = _peak_kib()
    result = asyncio.run(runner.run(spec))
    growth_mib = (_peak_kib() - before) / 1024
    assert result.exit_code == 0, result.stderr
    kept = len(result.stdout.encode())
    assert kept <= 1 << 20
    assert kept + result.truncated.stdout_bytes == TOTAL  # every byte kept or counted
    assert result.truncated.stdout_lines == (TOTAL - kept) // len(LINE)
    # Bounded by the caps (1 MiB kept, a few 256 KiB chunks in flight), not by the 1 GiB.
    assert growth_mib < 20, f"peak RSS grew by {growth_mib:.1f} MiB"
