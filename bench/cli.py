"""Start-up cost of the ``hardexec`` command, side by side with ``python -c pass`` and setpriv.

Run: ``.venv/bin/python bench/cli.py`` (``--rounds N``; ``--hardexec CMD`` to measure another
command, e.g. ``--hardexec "python3 -m hardexec"``). Variants, interleaved round by round so
drift in machine load hits all of them alike:

* ``python -c pass``: the floor, the interpreter alone (the one running this script, which is
  the one the installed ``hardexec`` script starts with);
* ``hardexec run --no-new-privs -- /bin/true``: nothing to supervise, so hardexec parses,
  builds the policy and execs the stage, which execs the program;
* ``hardexec run --usage --no-new-privs -- /bin/true``: the resident supervisor (for reference);
* ``setpriv --no-new-privs /bin/true``: the C tool it stands in for.

Each figure is the median over rounds of the wall time from spawn to reaping, and of the peak
resident memory (``ru_maxrss`` of the child: the largest of every program its pid ran). The
target is hardexec in exec mode at most twice ``python -c pass``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

TRUE = "/bin/true"
TARGET = 2.0


def default_hardexec() -> str:
    """The installed console script next to this interpreter (the project's .venv/bin)."""
    script = Path(sys.executable).with_name("hardexec")
    if script.exists():
        return str(script)
    found = shutil.which("hardexec")
    if found is None:
        sys.exit("bench/cli.py: no hardexec command found; give one with --hardexec CMD")
    return found


def measure(argv: list[str]) -> tuple[float, int]:
    """Wall seconds from spawn to reaping, and the child's peak RSS in KiB."""
    with open(os.devnull, "wb") as null:
        actions = [(os.POSIX_SPAWN_DUP2, null.fileno(), 1), (os.POSIX_SPAWN_DUP2, null.fileno(), 2)]
        start = time.perf_counter()
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
        _, status, rusage = os.wait4(pid, 0)
        elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench/cli.py: {shlex.join(argv)} failed with status {status}")
    return elapsed, rusage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="measured rounds (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured rounds first")
    parser.add_argument(
        "--hardexec", metavar="CMD", help="the hardexec command (default: the installed script)"
    )
    args = parser.parse_args()
    hardexec = shlex.split(args.hardexec) if args.hardexec else [default_hardexec()]
    variants = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "hardexec run --no-new-privs -- /bin/true": [
            *hardexec, "run", "--no-new-privs", "--", TRUE,
        ],
        "hardexec run --usage --no-new-privs -- /bin/true": [
            *hardexec, "run", "--usage", "--no-new-privs", "--", TRUE,
        ],
        "setpriv --no-new-privs /bin/true": ["setpriv", "--no-new-privs", TRUE],
    }  # fmt: skip
    if shutil.which("setpriv") is None:
        del variants["setpriv --no-new-privs /bin/true"]
    times: dict[str, list[float]] = {name: [] for name in variants}
    rss: dict[str, list[int]] = {name: [] for name in variants}
    for round_ in range(args.warmup + args.rounds):
        for name, argv in variants.items():
            elapsed, peak = measure(argv)
            if round_ >= args.warmup:
                times[name].append(elapsed)
                rss[name].append(peak)

    floor = statistics.median(times["python -c pass"])
    print(f"hardexec: {shlex.join(hardexec)}")
    print(f"python:   {sys.executable}")
    print(f"{args.rounds} rounds, medians: wall time, peak RSS; ratio to python -c pass")
    for name in variants:
        wall = statistics.median(times[name])
        peak = statistics.median(rss[name]) / 1024
        print(f"  {name:<50} {wall * 1000:7.2f} ms {peak:6.1f} MiB {wall / floor:6.2f}x")
    ratio = statistics.median(times["hardexec run --no-new-privs -- /bin/true"]) / floor
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"target: exec mode <= {TARGET:.0f}x python -c pass: {verdict} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
