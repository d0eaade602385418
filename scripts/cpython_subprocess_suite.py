"""CPython's own subprocess tests, run through hardexec with a policy, against plain subprocess.

    .venv/bin/python scripts/cpython_subprocess_suite.py [--module test.test_subprocess ...]

Runs each test module twice in fresh interpreters: once as CPython ships it, once with
``subprocess.Popen`` replaced by a ``hardexec.Popen`` that applies a policy (no_new_privs, and
every capability dropped but those the launcher holds, so programs behave the same) to every
child the tests spawn, asyncio's included (its transports spawn through ``subprocess.Popen``).
Prints the tests that pass plain and fail through hardexec, and the counts. Tests that patch
subprocess's own internals (``_posixsubprocess``, ``_fork_exec``, ``_USE_VFORK``) are expected
to differ: hardexec spawns a different argv by design.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

MODULES = ("test.test_subprocess", "test.test_asyncio.test_subprocess")

# Installed in the child interpreter before the tests import subprocess.
PATCH = """
import subprocess, sys, unittest
import hardexec
from hardexec import Policy, SecurityConfig

with open("/proc/self/status") as f:
    held = [line.split()[1] for line in f if line.startswith("CapPrm:")][0]
policy = Policy(security=SecurityConfig(
    drop_all_caps=True, keep_caps=list(hardexec.CapSet.from_hex(held)), no_new_privs=True))


class Popen(hardexec.Popen):  # the name repr() shows, as subprocess.Popen
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("policy", policy)
        super().__init__(*args, **kwargs)


subprocess.Popen = Popen
"""

RUN = """
import sys, unittest
module = sys.argv[1]
suite = unittest.defaultTestLoader.loadTestsFromName(module)
result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
"""


def outcomes(module: str, patched: bool, timeout: float) -> dict[str, str]:
    code = (PATCH if patched else "") + RUN
    with tempfile.TemporaryFile("w+") as log:
        subprocess.run(
            [sys.executable, "-c", code, module],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, timeout=timeout, check=False,
        )  # fmt: skip
        log.seek(0)
        text = log.read()
    found = {}
    for line in text.splitlines():
        match = re.match(r"^(test\w+) \(([\w.]+)\).*\.\.\. (\w[\w ]*)$", line)
        if match:
            found[f"{match.group(2)}.{match.group(1)}"] = match.group(3).split()[0]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", help="test module (default: both)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per run")
    ns = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the policy drops capabilities the tests' launcher holds")
    worse_total = 0
    for module in ns.module or MODULES:
        plain = outcomes(module, False, ns.timeout)
        hardened = outcomes(module, True, ns.timeout)
        passed = {name for name, outcome in plain.items() if outcome == "ok"}
        worse = sorted(name for name in passed if hardened.get(name) != "ok")
        better = sorted(
            name for name, outcome in hardened.items() if outcome == "ok" and name not in passed
        )
        print(
            f"{module}: {len(plain)} tests; plain {len(passed)} ok; through hardexec "
            f"{sum(o == 'ok' for o in hardened.values())} ok; "
            f"{len(worse)} pass plain but not through hardexec"
        )
        for name in worse:
            print(f"  {hardened.get(name, 'missing')}: {name}")
        for name in better:
            print(f"  (passes only through hardexec: {name})")
        worse_total += len(worse)
    return 1 if worse_total else 0


if __name__ == "__main__":
    sys.exit(main())
