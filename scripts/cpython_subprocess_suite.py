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
import json
import os
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
import json, sys, unittest

outcomes = {}


class Recording(unittest.TextTestResult):
    def addSuccess(self, test):
        super().addSuccess(test)
        outcomes[test.id()] = "ok"

    def addFailure(self, test, err):
        super().addFailure(test, err)
        outcomes[test.id()] = "FAIL"

    def addError(self, test, err):
        super().addError(test, err)
        outcomes[test.id()] = "ERROR"

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        outcomes[test.id()] = "skipped"

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        outcomes[test.id()] = "expected failure"

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        outcomes[test.id()] = "unexpected success"


suite = unittest.defaultTestLoader.loadTestsFromName(sys.argv[1])
unittest.TextTestRunner(stream=sys.stderr, resultclass=Recording).run(suite)
with open(sys.argv[2], "w") as out:
    json.dump(outcomes, out)
"""


def outcomes(module: str, patched: bool, timeout: float) -> dict[str, str]:
    code = (PATCH if patched else "") + RUN
    with tempfile.TemporaryDirectory() as where:
        result = os.path.join(where, "outcomes.json")
        subprocess.run(
            [sys.executable, "-c", code, module, result],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            timeout=timeout, check=False,
        )  # fmt: skip
        try:
            with open(result) as f:
                return json.load(f)
        except FileNotFoundError:  # the run itself died: every test counts as missing
            return {}


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
